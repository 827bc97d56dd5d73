"""PIN operations: status, verify, change, unblock, logout and the PIN kept for unattended
signing, each behind the guard (pin_policy) and on the insertion it was meant for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from eport.cardlib.errors import InvalidPinError, ReferenceBlockedError
from eport.cardlib.token import Credential, CredentialStatus
from eport.daemon.service import pin_policy
from eport.daemon.service.app_core import (
    CALLER_UID,
    CallerActive,
    CardSelector,
    PinState,
)
from eport.daemon.service.app_presence import PresenceHandling
from eport.daemon.service.card_state import (
    CardSnapshot,
    ReaderSlot,
    Session,
)
from eport.daemon.service.card_worker import CardAccess
from eport.daemon.service.errors import EportError, Reason

logger = logging.getLogger(__name__)


class PinOperations(PresenceHandling):
    # ---- PIN ----

    @staticmethod
    def _statuses(access: CardAccess) -> tuple[CredentialStatus, CredentialStatus]:
        """The PIN's and the PUK's tries left, read without spending one."""
        return (access.token.credential_status(Credential.PIN),
                access.token.credential_status(Credential.PUK))

    @staticmethod
    def _same_insertion(snapshot: CardSnapshot, access: CardAccess) -> None:
        if access.insertion != snapshot.insertion:
            # The card was swapped between the request and its turn: never send a PIN meant
            # for one card to another.
            raise EportError(Reason.CARD_REMOVED, "the card was replaced", reader=access.reader)

    @contextlib.contextmanager
    def _card_refusal(self, slot: ReaderSlot, snapshot: CardSnapshot, *, puk: bool = False
                      ) -> Iterator[None]:
        """A PIN or PUK the card refused, as our error. A refused PIN also ends the session:
        the card has dropped its verified state."""
        try:
            yield
        except InvalidPinError as exc:
            if not puk:
                with self._lock:
                    self._close_session(slot, "wrong PIN")
            raise EportError(Reason.PUK_INCORRECT if puk else Reason.PIN_INCORRECT,
                             # -1: the token does not say (PKCS#11 flags only)
                             tries_left=exc.tries_left if exc.tries_left >= 0 else None,
                             reader=slot.name,
                             card_id=snapshot.card_id) from None
        except ReferenceBlockedError:
            if not puk:
                with self._lock:
                    self._close_session(slot, "PIN blocked")
            raise EportError(Reason.PUK_BLOCKED if puk else Reason.PIN_BLOCKED, tries_left=0,
                             reader=slot.name, card_id=snapshot.card_id) from None

    def _verify_on_card(self, slot: ReaderSlot, snapshot: CardSnapshot, access: CardAccess,
                        pin: bytearray, *, allow_last_attempt: bool, uid: int | None = None
                        ) -> Session:
        pin_policy.guard(access.token.credential_status(Credential.PIN),
                         allow_last_attempt=allow_last_attempt)
        with self._card_refusal(slot, snapshot):
            access.token.verify_pin(pin)
        with self._lock:
            return self._open_session(slot, snapshot.card_id, uid)

    def _pin_job(self, slot: ReaderSlot, snapshot: CardSnapshot,
                 on_card: Callable[[CardAccess], None], secrets: tuple[bytearray, ...],
                 caller_active: CallerActive, *, forget_stored_pin: bool = False) -> PinState:
        """Run `on_card` on this insertion, wipe the secrets whatever happens, and answer with
        the PIN and PUK state read afterwards. `forget_stored_pin`: the PIN was changed, so
        a PIN kept for unattended signing is now wrong (deleted off the card's thread)."""

        def job(access: CardAccess) -> tuple[CredentialStatus, CredentialStatus]:
            self._same_insertion(snapshot, access)
            on_card(access)
            return self._statuses(access)

        try:
            pin, puk = self._run(slot, job, caller_active)
        finally:
            for secret in secrets:
                pin_policy.wipe(secret)
        if forget_stored_pin and self.unattended.allowed:
            self.unattended.delete(snapshot.card_id)
        with self._lock:
            session = self._session_for(slot.name, snapshot.insertion)
        return PinState(snapshot.card_id, pin, puk, session, self.session_expiry(session),
                        self.unattended.enabled(snapshot.card_id))

    def pin_status(self, selector: CardSelector, caller_active: CallerActive = lambda: True
                   ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        return self._pin_job(slot, snapshot, lambda _access: None, (), caller_active)

    def verify_pin(self, selector: CardSelector, pin: str, *, allow_last_attempt: bool,
                   caller_active: CallerActive = lambda: True) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        secret = pin_policy.secret_bytes(pin, what="PIN", eport_card=snapshot.is_eport)
        uid = CALLER_UID.get()

        def on_card(access: CardAccess) -> None:
            self._verify_on_card(slot, snapshot, access, secret,
                                 allow_last_attempt=allow_last_attempt, uid=uid)

        return self._pin_job(slot, snapshot, on_card, (secret,), caller_active)

    def change_pin(self, selector: CardSelector, old_pin: str, new_pin: str, *,
                   allow_last_attempt: bool, caller_active: CallerActive = lambda: True
                   ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        old = pin_policy.secret_bytes(old_pin, what="current PIN", eport_card=snapshot.is_eport)
        new = pin_policy.secret_bytes(new_pin, what="new PIN", eport_card=snapshot.is_eport)

        def on_card(access: CardAccess) -> None:
            pin_policy.guard(access.token.credential_status(Credential.PIN),
                             allow_last_attempt=allow_last_attempt)
            with self._card_refusal(slot, snapshot):
                access.token.change_pin(old, new)

        return self._pin_job(slot, snapshot, on_card, (old, new), caller_active,
                             forget_stored_pin=True)

    def unblock_pin(self, selector: CardSelector, puk: str, new_pin: str, *,
                    allow_last_attempt: bool, caller_active: CallerActive = lambda: True
                    ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        puk_secret = pin_policy.secret_bytes(puk, what="PUK", eport_card=snapshot.is_eport)
        new = pin_policy.secret_bytes(new_pin, what="new PIN", eport_card=snapshot.is_eport)

        def on_card(access: CardAccess) -> None:
            pin_policy.guard(access.token.credential_status(Credential.PUK),
                             allow_last_attempt=allow_last_attempt, puk=True)
            with self._card_refusal(slot, snapshot, puk=True):
                access.token.unblock_pin(puk_secret, new)
            with self._lock:
                self._close_session(slot, "PIN reset")

        return self._pin_job(slot, snapshot, on_card, (puk_secret, new), caller_active,
                             forget_stored_pin=True)

    def logout(self, selector: CardSelector, caller_active: CallerActive = lambda: True
               ) -> bool:
        slot, snapshot = self.card(selector, caller_active)

        def job(access: CardAccess) -> bool:
            self._same_insertion(snapshot, access)
            access.token.logout()
            with self._lock:
                return self._close_session(slot, "logout")

        return self._run(slot, job, caller_active)

    # ---- unattended signing ----

    def enable_unattended(self, selector: CardSelector, pin: str,
                          caller_active: CallerActive = lambda: True) -> str:
        if not self.unattended.allowed:
            raise EportError(Reason.UNATTENDED_DISABLED,
                             "eportd was started without --allow-unattended")
        self.verify_pin(selector, pin, allow_last_attempt=False, caller_active=caller_active)
        _, snapshot = self.card(selector, caller_active)
        self.unattended.store(snapshot.card_id, pin)
        return snapshot.card_id

    def disable_unattended(self, selector: CardSelector) -> str:
        _, snapshot = self.card(selector)
        self.unattended.delete(snapshot.card_id)
        return snapshot.card_id

    def _unattended_verify(self, slot: ReaderSlot, snapshot: CardSnapshot,
                           access: CardAccess) -> Session | None:
        stored = self.unattended.load(snapshot.card_id)
        if stored is None:
            return None
        secret = bytearray(stored.encode("ascii"))
        try:
            # Never the last try with a stored PIN: a person must decide that.
            return self._verify_on_card(slot, snapshot, access, secret, allow_last_attempt=False)
        except EportError as exc:
            if exc.reason is Reason.PIN_INCORRECT:
                self.unattended.delete(snapshot.card_id)
            raise
        finally:
            pin_policy.wipe(secret)

