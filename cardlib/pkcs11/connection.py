"""A PKCS#11 token as a cardlib Token: one session on one slot, for the insertion it was opened
at. Calls go through the module's lock (module.py); a reinitialised module (another
generation) means every handle here is dead: TokenUnavailable(INVALID_HANDLE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import PyKCS11
from cryptography import x509
from PyKCS11 import LowLevel

from eport.cardlib.errors import (
    CardError,
    ReferenceNotFoundError,
    SecurityStatusError,
    TokenUnavailable,
    Unavailable,
)
from eport.cardlib.pkcs11.mechanisms import (
    CKM_ECDSA,
    CKM_RSA_PKCS,
    digest_to_sign,
    raw_to_der_signature,
    sm2_signature_to_der,
)
from eport.cardlib.pkcs11.module import Pkcs11Module, TokenSlot
from eport.cardlib.pkcs11.objects import KeyPairObjects, choose_envelope, choose_signing
from eport.cardlib.pkcs11.results import to_token_error
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.token import (
    CertificateRole,
    Credential,
    CredentialStatus,
    no_transaction,
)
from eport.common.profile import EportProfile

T = TypeVar("T")
Session = Any  # PyKCS11.Session: untyped

USER_STATES = frozenset({LowLevel.CKS_RO_USER_FUNCTIONS, LowLevel.CKS_RW_USER_FUNCTIONS})
# (count low, final try, locked) token flags for each credential
FLAGS = {
    Credential.PIN: (LowLevel.CKF_USER_PIN_COUNT_LOW, LowLevel.CKF_USER_PIN_FINAL_TRY,
                     LowLevel.CKF_USER_PIN_LOCKED),
    Credential.PUK: (LowLevel.CKF_SO_PIN_COUNT_LOW, LowLevel.CKF_SO_PIN_FINAL_TRY,
                     LowLevel.CKF_SO_PIN_LOCKED),
}


def status_from_flags(flags: int, credential: Credential, *, verified: bool) -> CredentialStatus:
    """PKCS#11 has no counter, only flags: tries_left is 0 when locked, 1 on the final try, and
    -1 (unknown: "more than one") otherwise, COUNT_LOW or not."""
    _low, final, locked = FLAGS[credential]
    if flags & locked:
        return CredentialStatus(verified=False, tries_left=0, blocked=True)
    if flags & final:
        return CredentialStatus(verified=verified, tries_left=1, blocked=False, final_try=True)
    return CredentialStatus(verified=verified, tries_left=-1, blocked=False)


def _usage_from_certificate(der: bytes) -> tuple[bool, bool] | None:
    """(can sign, can decrypt) from the certificate's keyUsage, when it has one."""
    try:
        usage = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.KeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    sign = usage.digital_signature or usage.content_commitment
    decrypt = usage.key_encipherment or usage.data_encipherment or usage.key_agreement
    return sign, decrypt



def _subject_serial_number(certificate: bytes | None) -> str | None:
    if not certificate:
        return None
    try:
        subject = x509.load_der_x509_certificate(certificate).subject
    except ValueError:
        return None
    values = subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    value = values[0].value if values else None
    return value if isinstance(value, str) and value.isalnum() else None

class Pkcs11Token:
    def __init__(self, module: Pkcs11Module, slot: TokenSlot, sm2_mechanism: int | None,
                 sm2_decrypt_mechanism: int | None = None) -> None:
        self._module = module
        self._slot = slot
        self._sm2_mechanism = sm2_mechanism
        self._sm2_decrypt_mechanism = sm2_decrypt_mechanism
        self._generation = module.generation
        self._session: Session = self._run("open session", self._open_session, check=False)
        self._pairs: list[KeyPairObjects] | None = None
        self._card_number: str | None = None  # read once: a token's certificate is fixed

    # ---- plumbing ----

    def _open_session(self, lib: PyKCS11.PyKCS11Lib) -> Session:
        flags = LowLevel.CKF_SERIAL_SESSION | LowLevel.CKF_RW_SESSION
        try:
            return lib.openSession(self._slot.slot_id, flags)
        except PyKCS11.PyKCS11Error as exc:
            if exc.value != LowLevel.CKR_TOKEN_WRITE_PROTECTED:
                raise
            return lib.openSession(self._slot.slot_id, LowLevel.CKF_SERIAL_SESSION)

    def _run(self, operation: str, action: Callable[[PyKCS11.PyKCS11Lib], T], *,
             check: bool = True, tries_for: Credential | None = None) -> T:
        try:
            return self._module.call(operation, lambda lib: self._guarded(operation, lib, action,
                                                                          check))
        except PyKCS11.PyKCS11Error as exc:
            tries = -1
            if tries_for is not None and exc.value == LowLevel.CKR_PIN_INCORRECT:
                tries = self._tries_after_failure(tries_for)
            raise to_token_error(exc, operation, tries_left=tries) from None

    def _guarded(self, operation: str, lib: PyKCS11.PyKCS11Lib,
                 action: Callable[[PyKCS11.PyKCS11Lib], T], check: bool) -> T:
        if check and self._module.generation != self._generation:
            raise TokenUnavailable(Unavailable.INVALID_HANDLE,
                                   f"{operation}: the PKCS#11 module was reinitialised")
        return action(lib)

    def _tries_after_failure(self, credential: Credential) -> int:
        with contextlib.suppress(TokenUnavailable):
            flags = self._module.token_info(self._slot.slot_id, "read the tries").flags
            return status_from_flags(flags, credential, verified=False).tries_left
        return -1

    def _state(self) -> int:
        return int(self._run("session state", lambda _lib: self._session.getSessionInfo().state))

    def _present(self, operation: str) -> TokenSlot:
        """The token now; CARD_REMOVED when it went (or another token took its slot)."""
        if self._module.generation != self._generation:
            raise TokenUnavailable(Unavailable.INVALID_HANDLE,
                                   f"{operation}: the PKCS#11 module was reinitialised")
        now = self._module.token_info(self._slot.slot_id, operation)
        if now.serial != self._slot.serial or now.label != self._slot.label:
            raise TokenUnavailable(Unavailable.CARD_REMOVED, f"{operation}: another token is there")
        return now

    # ---- identity ----

    @property
    def atr(self) -> bytes:
        return b""

    def read_card_id(self) -> str:
        """The card number the signing certificate's subject carries (serialNumber, as the
        simulator's E-port profile writes it), else the token's serial. A PKCS#11 module
        names tokens its own way: OpenSC gives a PIV card a serial made of the last digits of
        its card number, so the same card would get two ids through two backends."""
        token = self._present("read the card id")
        if self._card_number is None:
            self._card_number = _subject_serial_number(self.read_certificate()) or ""
        return self._card_number or token.serial

    def read_profile(self) -> EportProfile | None:
        return None

    def read_certificate(self, role: CertificateRole = CertificateRole.SIGNING) -> bytes | None:
        chosen = self._chosen(role)
        return chosen.certificate if chosen is not None else None

    def _chosen(self, role: CertificateRole) -> KeyPairObjects | None:
        pairs = self._key_pairs()
        signing = choose_signing(pairs)
        return signing if role == CertificateRole.SIGNING else choose_envelope(pairs, signing)

    def _key_pairs(self) -> list[KeyPairObjects]:
        self._present("read the certificates")
        if self._pairs is None:
            self._pairs = self._run("read the certificates", self._find_pairs)
        return self._pairs

    def _find_pairs(self, _lib: PyKCS11.PyKCS11Lib) -> list[KeyPairObjects]:
        session = self._session
        pairs = []
        for cert in session.findObjects([(LowLevel.CKA_CLASS, LowLevel.CKO_CERTIFICATE)]):
            value, key_id, label = session.getAttributeValue(
                cert, [LowLevel.CKA_VALUE, LowLevel.CKA_ID, LowLevel.CKA_LABEL], allAsBinary=True)
            key_id, der = bytes(key_id or b""), bytes(value or b"")
            if not der:
                continue
            labels = [bytes(label or b"").decode("utf-8", "replace")]
            capabilities = self._capabilities(session, key_id, labels)
            if capabilities is None:
                sign, decrypt = _usage_from_certificate(der) or (True, True)
                capabilities = (sign, decrypt, -1)
            pairs.append(KeyPairObjects(key_id, der, tuple(labels), *capabilities))
        return pairs

    @staticmethod
    def _capabilities(session: Session, key_id: bytes, labels: list[str]
                      ) -> tuple[bool, bool, int] | None:
        """From the private key (visible before login on most hardware tokens) or else the
        public key with the same CKA_ID; None when neither is visible (SoftHSM2 hides private
        keys until login: then the certificate's keyUsage decides)."""
        for cls, sign_attr, decrypt_attr in (
                (LowLevel.CKO_PRIVATE_KEY, LowLevel.CKA_SIGN, LowLevel.CKA_DECRYPT),
                (LowLevel.CKO_PUBLIC_KEY, LowLevel.CKA_VERIFY, LowLevel.CKA_ENCRYPT)):
            keys = session.findObjects([(LowLevel.CKA_CLASS, cls), (LowLevel.CKA_ID, key_id)])
            if keys:
                sign, decrypt, key_type, label = session.getAttributeValue(
                    keys[0], [sign_attr, decrypt_attr, LowLevel.CKA_KEY_TYPE, LowLevel.CKA_LABEL])
                labels.append(str(label or ""))
                return bool(sign), bool(decrypt), int(key_type)
        return None

    # ---- credentials ----

    def credential_status(self, credential: Credential = Credential.PIN) -> CredentialStatus:
        flags = self._present("read the PIN status").flags
        state = self._state()
        verified = state in USER_STATES if credential == Credential.PIN \
            else state == LowLevel.CKS_RW_SO_FUNCTIONS
        return status_from_flags(flags, credential, verified=verified)

    def verify_pin(self, pin: bytearray) -> None:
        self._present("verify the PIN")

        def login(_lib: PyKCS11.PyKCS11Lib) -> None:
            # A verify always checks the PIN given: log out first so a wrong PIN cannot pass
            # for the one verified earlier (PIV resets its status on a failed VERIFY too).
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                if self._session.getSessionInfo().state in USER_STATES:
                    self._session.logout()
            self._module.logged_in.discard(self._slot.slot_id)
            self._session.login(bytes(pin), LowLevel.CKU_USER)
            self._module.logged_in.add(self._slot.slot_id)
        self._run("verify the PIN", login, tries_for=Credential.PIN)

    def change_pin(self, old: bytearray, new: bytearray) -> None:
        self._present("change the PIN")
        self._run("change the PIN",
                  lambda _lib: self._session.setPin(bytes(old), bytes(new)),
                  tries_for=Credential.PIN)

    def unblock_pin(self, puk: bytearray, new_pin: bytearray) -> None:
        """PUK = the SO PIN: C_Login(CKU_SO), C_InitPIN, C_Logout."""
        self._present("unblock the PIN")

        def unblock(_lib: PyKCS11.PyKCS11Lib) -> None:
            self._module.logged_in.discard(self._slot.slot_id)
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                self._session.logout()  # the SO cannot log in while the user is
            self._session.login(bytes(puk), LowLevel.CKU_SO)
            try:
                self._session.initPin(bytes(new_pin))
            finally:
                with contextlib.suppress(PyKCS11.PyKCS11Error):
                    self._session.logout()
        self._run("unblock the PIN", unblock, tries_for=Credential.PUK)

    def logout(self) -> None:
        """Idempotent: logging out a token nobody logged in to is not an error."""
        def logout(_lib: PyKCS11.PyKCS11Lib) -> None:
            self._module.logged_in.discard(self._slot.slot_id)
            try:
                self._session.logout()
            except PyKCS11.PyKCS11Error as exc:
                if exc.value != LowLevel.CKR_USER_NOT_LOGGED_IN:
                    raise
        self._run("log out", logout)

    # ---- private-key operations ----

    def _private_key(self, role: CertificateRole, operation: str) -> tuple[Any, int]:
        chosen = self._chosen(role)
        if chosen is None:
            raise ReferenceNotFoundError(None, operation, f"the token has no {role} certificate")

        def find(_lib: PyKCS11.PyKCS11Lib) -> tuple[Any, int] | None:
            keys = self._session.findObjects([(LowLevel.CKA_CLASS, LowLevel.CKO_PRIVATE_KEY),
                                              (LowLevel.CKA_ID, chosen.key_id)])
            if not keys:
                return None
            (key_type,) = self._session.getAttributeValue(keys[0], [LowLevel.CKA_KEY_TYPE])
            return keys[0], int(key_type)
        found = self._run(operation, find)
        if found is None:
            if self._state() not in USER_STATES:
                raise SecurityStatusError(operation, sw=None)
            raise ReferenceNotFoundError(None, operation,
                                         f"no private key beside the {role} certificate")
        return found

    def sign_digest(self, mechanism: SignMechanism, digest: bytes) -> bytes:
        operation = f"sign ({mechanism})"
        data = digest_to_sign(mechanism, digest)
        if mechanism == SignMechanism.SM2:
            if self._sm2_mechanism is None:
                raise CardError(None, operation,
                                "no SM2 mechanism id configured for this PKCS#11 module "
                                "(eportd --pkcs11-sm2-mechanism; see docs/backends.md)")
            mechanism_id = self._sm2_mechanism
        elif mechanism == SignMechanism.ECDSA_P256:
            mechanism_id = CKM_ECDSA
        else:
            mechanism_id = CKM_RSA_PKCS
        key, key_type = self._private_key(CertificateRole.SIGNING, operation)
        expected = {CKM_RSA_PKCS: LowLevel.CKK_RSA, CKM_ECDSA: LowLevel.CKK_EC}.get(mechanism_id)
        if expected is not None and key_type != expected:
            raise CardError(None, operation, "the signing key is not of that algorithm")
        raw = bytes(self._run(operation, lambda _lib: self._session.sign(
            key, data, PyKCS11.Mechanism(mechanism_id, None))))
        if mechanism == SignMechanism.ECDSA_P256:
            return raw_to_der_signature(raw)
        if mechanism == SignMechanism.SM2:
            return sm2_signature_to_der(raw)
        return raw

    def private_step(self, role: CertificateRole, data: bytes, *, sm2: bool) -> bytes:
        raise NotImplementedError("PKCS#11 tokens decrypt whole ciphertexts (decrypt)")

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        operation = "decrypt"
        key, key_type = self._private_key(CertificateRole.ENVELOPE, operation)
        if key_type == LowLevel.CKK_RSA:
            mechanism_id = CKM_RSA_PKCS
        elif self._sm2_decrypt_mechanism is not None:
            mechanism_id = self._sm2_decrypt_mechanism  # the vendor's SM2 decryption id
        else:
            raise CardError(None, operation, "the envelope key is not RSA and no SM2 decryption "
                            "mechanism id is configured (docs/backends.md)")
        return bytes(self._run(operation, lambda _lib: self._session.decrypt(
            key, ciphertext, PyKCS11.Mechanism(mechanism_id, None))))

    def close(self) -> None:
        if self._module.generation != self._generation:
            return  # the session died with the old generation
        self._module.logged_in.discard(self._slot.slot_id)
        with contextlib.suppress(TokenUnavailable, CardError, PyKCS11.PyKCS11Error):
            self._run("close the session", lambda _lib: self._session.closeSession())


class Pkcs11Connection:
    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        # The module lock serialises each call; PKCS#11 has no cross-program transaction.
        return no_transaction()

    def close(self) -> None:
        self.token.close()
