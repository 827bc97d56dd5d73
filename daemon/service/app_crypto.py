"""Private-key operations: signing and decryption under the PIN rules (the request's PIN,
the open session, or the stored PIN for unattended use).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eport.cardlib.certificates import CardCertificate, ChainState
from eport.cardlib.errors import SecurityStatusError
from eport.cardlib.signing_algorithms import spec
from eport.daemon.service import pin_policy
from eport.daemon.service.app_core import (
    CALLER_UID,
    CallerActive,
    CardSelector,
    T,
)
from eport.daemon.service.app_pin import PinOperations
from eport.daemon.service.card_state import (
    CardSnapshot,
    ReaderSlot,
)
from eport.daemon.service.card_worker import CardAccess
from eport.daemon.service.certificates import refuse_unusable
from eport.daemon.service.decryption import (
    Decryption,
    envelope_certificate_of,
    plan_decryption,
)
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.signing import (
    SignAlgorithm,
    Signature,
    SignInput,
    choose_algorithm,
    digest_of,
    shape_signature,
    verify_signature,
)

logger = logging.getLogger(__name__)


class KeyOperations(PinOperations):
    # ---- certificates and signing ----

    def _run_authorised(self, slot: ReaderSlot, snapshot: CardSnapshot,
                        operation: Callable[[CardAccess], T], *, pin: str,
                        allow_last_attempt: bool, refuse_stored_pin: bool,
                        caller_active: CallerActive) -> tuple[T, bool]:
        """Run a private-key `operation` under the PIN rules of signing and decryption: the
        request's PIN (with the last-try guard) if given, else the open session, else the PIN
        stored for unattended use unless `refuse_stored_pin`. Answers the operation's result
        and whether this call opened the session (none was open before it)."""
        secret = (pin_policy.secret_bytes(pin, what="PIN", eport_card=snapshot.is_eport)
                  if pin else None)
        uid = CALLER_UID.get()

        def job(access: CardAccess) -> tuple[T, bool]:
            self._same_insertion(snapshot, access)
            with self._lock:
                session = self._session_for(slot.name, snapshot.insertion)
                ended = slot.session_end_reason
            foreign = self._foreign_session(session, uid)
            if foreign:
                session = None  # not this caller's: it cannot sign with it
            opened = session is None
            if secret is not None:
                session = self._verify_on_card(slot, snapshot, access, secret,
                                               allow_last_attempt=allow_last_attempt, uid=uid)
            if session is None and not refuse_stored_pin:
                session = self._unattended_verify(slot, snapshot, access)
            if session is None:
                if foreign:
                    raise EportError(Reason.NOT_AUTHENTICATED,
                                     "the PIN session on this card belongs to another user; "
                                     "give your own PIN", reader=slot.name,
                                     card_id=snapshot.card_id)
                if ended == "idle":
                    raise EportError(Reason.SESSION_EXPIRED, reader=slot.name,
                                     card_id=snapshot.card_id)
                raise EportError(Reason.NOT_AUTHENTICATED, reader=slot.name,
                                 card_id=snapshot.card_id)
            try:
                result = operation(access)
            except SecurityStatusError:
                # Something reset the card's security status behind our back.
                with self._lock:
                    self._close_session(slot, "card lost its verified state")
                raise EportError(Reason.NOT_AUTHENTICATED, "the card is no longer verified",
                                 reader=slot.name, card_id=snapshot.card_id) from None
            session.last_used = time.monotonic()
            return result, opened

        try:
            return self._run(slot, job, caller_active)
        finally:
            if secret is not None:
                pin_policy.wipe(secret)

    def sign(self, selector: CardSelector, request: SignInput,
             algorithm: SignAlgorithm | None, *, pin: str = "", allow_last_attempt: bool = False,
             refuse_stored_pin: bool = False, caller_active: CallerActive = lambda: True
             ) -> tuple[Signature, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        check = self.check(snapshot.certificate)
        refuse_unusable(check)
        if check.chain is ChainState.UNTRUSTED:
            raise EportError(Reason.CERT_UNTRUSTED, check.chain_detail, reader=slot.name,
                             card_id=snapshot.card_id)
        chosen = choose_algorithm(snapshot.key_kind, algorithm, snapshot.sign_algorithms)
        digest = digest_of(chosen, snapshot.certificate, request)
        mechanism = spec(chosen).mechanism
        raw, _opened = self._run_authorised(
            slot, snapshot,
            lambda access: access.token.sign_digest(mechanism, digest),
            pin=pin, allow_last_attempt=allow_last_attempt,
            refuse_stored_pin=refuse_stored_pin, caller_active=caller_active)
        signature = shape_signature(chosen, raw)
        # A faulty card must never yield a bad signature.
        if not verify_signature(chosen, snapshot.certificate, digest, signature.der_or_pkcs1):
            raise EportError(Reason.CARD_ERROR, "the card returned a signature that does not "
                             "verify with its certificate", reader=slot.name,
                             card_id=snapshot.card_id)
        return signature, snapshot

    # ---- the envelope key ----

    def envelope_certificate(self, selector: CardSelector,
                             caller_active: CallerActive = lambda: True
                             ) -> tuple[CardCertificate, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        return envelope_certificate_of(snapshot, slot.name), snapshot

    def decrypt(self, selector: CardSelector, ciphertext: bytes, *, pin: str = "",
                allow_last_attempt: bool = False, refuse_stored_pin: bool = False,
                caller_active: CallerActive = lambda: True
                ) -> tuple[Decryption, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        # Everything that can be refused without the card is, so a ciphertext that is not
        # this key's costs neither a PIN try nor a card operation.
        plan = plan_decryption(snapshot, ciphertext, slot.name)

        def on_card(access: CardAccess) -> tuple[bytes | None, bytes]:
            # A token that decrypts whole ciphertexts (PKCS#11, a remote client) answers the
            # plaintext; a PIV card does the private step and the host the rest.
            whole = access.token.decrypt(ciphertext)
            return (whole, b"") if whole is not None else (None, plan.card_step(access))

        (whole, raw), opened = self._run_authorised(
            slot, snapshot, on_card, pin=pin, allow_last_attempt=allow_last_attempt,
            refuse_stored_pin=refuse_stored_pin, caller_active=caller_active)
        if whole is not None:
            return Decryption(whole, plan.parsed.form, plan.certificate.serial_hex), snapshot
        try:
            return plan.finish(raw), snapshot
        except EportError:
            if opened:
                # A ciphertext that does not decrypt leaves the session as it was: end the one
                # that this call's PIN opened.
                self._end_session(slot, snapshot, "decryption failed")
            raise


    def _end_session(self, slot: ReaderSlot, snapshot: CardSnapshot, reason: str) -> None:
        """Log the card out and close its session, even if the caller has gone: this undoes
        what the caller's own request did. A failure here is logged, never raised over the
        error being answered."""
        def job(access: CardAccess) -> None:
            if access.insertion != snapshot.insertion:
                return  # another card now: it has no session of ours
            with self._lock:
                self._close_session(slot, reason)
            access.token.logout()

        try:
            self._run(slot, job, lambda: True)
        except Exception as exc:  # the card was pulled, pcscd went away: no session is left
            logger.warning("ending the session failed: %s", exc, extra={"reader": slot.name})


