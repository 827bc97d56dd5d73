"""The PC/SC PIV backend: pcscd's readers as readers, a PIV card (the simulator, a PIV token)
as a Token.

`PivToken` works over any `SmartCardConnection` (the PC/SC transport, or the simulator's card OS
in-process in tests): it holds what is PIV-specific above the APDUs, such as building the
PKCS#1 v1.5 block that GENERAL AUTHENTICATE signs and choosing the algorithm byte from the key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from eport.cardlib.certificates import CertificateError, KeyKind, load_certificate
from eport.cardlib.errors import CardError, TokenUnavailable
from eport.cardlib.pcsc.connection import SmartCardConnection
from eport.cardlib.pcsc.monitor import ReaderMonitor
from eport.cardlib.pcsc.piv_session import PivSession, ReferenceStatus
from eport.cardlib.pcsc.transport import PcscConnection, PcscContext, PcscError
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.signing_algorithms import spec_of_mechanism
from eport.cardlib.token import (
    CertificateRole,
    Credential,
    CredentialStatus,
    PresenceListener,
    PresenceMonitor,
    Token,
)
from eport.common.apdu import SW
from eport.common.piv import Algorithm, KeyRef, Slot
from eport.common.profile import EportProfile

_SLOT = {CertificateRole.SIGNING: Slot.SIGNATURE, CertificateRole.ENVELOPE: Slot.KEY_MANAGEMENT}
_REFERENCE = {Credential.PIN: KeyRef.PIN, Credential.PUK: KeyRef.PUK}
PIV_ALGORITHM = {
    KeyKind.RSA_1024: Algorithm.RSA_1024,
    KeyKind.RSA_2048: Algorithm.RSA_2048,
    KeyKind.EC_P256: Algorithm.ECC_P256,
    KeyKind.SM2: Algorithm.SM2_SM3,
}


def pkcs1_block(mechanism: SignMechanism, key_kind: KeyKind, digest: bytes) -> bytes:
    """EMSA-PKCS1-v1_5: what a PIV card's raw RSA operation signs."""
    size = 128 if key_kind is KeyKind.RSA_1024 else 256
    info = spec_of_mechanism(mechanism).digest_info + digest
    return b"\x00\x01" + b"\xff" * (size - len(info) - 3) + b"\x00" + info


def credential_status(status: ReferenceStatus) -> CredentialStatus:
    return CredentialStatus(status.verified, status.tries_left, status.blocked)


class PivToken:
    """A PIV card with the E-port profile, for one insertion."""

    def __init__(self, connection: SmartCardConnection, atr: bytes = b"") -> None:
        self.session = PivSession(connection)
        self._atr = atr
        # Key kinds of the certificates read so far: the algorithm byte of GENERAL AUTHENTICATE
        # and the RSA block size follow from them.
        self._key_kinds: dict[CertificateRole, KeyKind] = {}

    @property
    def atr(self) -> bytes:
        return self._atr

    def select(self) -> None:
        """SELECT the PIV application; NotPivCardError when there is none."""
        self.session.select()

    def read_certificate(self, role: CertificateRole = CertificateRole.SIGNING) -> bytes | None:
        try:
            der = self.session.read_certificate(_SLOT[role])
        except CardError as exc:
            if exc.sw == SW.FILE_NOT_FOUND:
                return None
            raise
        with contextlib.suppress(CertificateError):
            self._key_kinds[role] = load_certificate(der).key_kind
        return der

    def read_profile(self) -> EportProfile | None:
        try:
            return self.session.read_profile()
        except CardError as exc:
            if exc.sw == SW.FILE_NOT_FOUND:
                return None
            raise

    def read_card_id(self) -> str:
        try:
            return self.session.read_card_id()
        except (CardError, KeyError):
            return ""

    def credential_status(self, credential: Credential = Credential.PIN) -> CredentialStatus:
        return credential_status(self.session.reference_status(_REFERENCE[credential]))

    def verify_pin(self, pin: bytearray) -> None:
        self.session.verify_pin(pin)

    def change_pin(self, old: bytearray, new: bytearray) -> None:
        self.session.change_reference(KeyRef.PIN, old, new)

    def unblock_pin(self, puk: bytearray, new_pin: bytearray) -> None:
        self.session.unblock_pin(puk, new_pin)

    def logout(self) -> None:
        self.session.logout()

    def _key_kind(self, role: CertificateRole) -> KeyKind:
        if role not in self._key_kinds:
            self.read_certificate(role)
        if role not in self._key_kinds:
            raise CardError(None, "GENERAL AUTHENTICATE",
                            f"no usable {role.value} certificate to choose the algorithm from")
        return self._key_kinds[role]

    def sign_digest(self, mechanism: SignMechanism, digest: bytes) -> bytes:
        kind = self._key_kind(CertificateRole.SIGNING)
        challenge = pkcs1_block(mechanism, kind, digest) \
            if spec_of_mechanism(mechanism).is_rsa else digest
        return self.session.sign(PIV_ALGORITHM[kind], challenge)

    def private_step(self, role: CertificateRole, data: bytes, *, sm2: bool) -> bytes:
        kind = self._key_kind(role)
        if role is not CertificateRole.ENVELOPE:
            raise CardError(None, "GENERAL AUTHENTICATE", "only the envelope key decrypts")
        return self.session.decrypt_step(PIV_ALGORITHM[kind], data, sm2=sm2)

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        return None  # the card does the private step; the host the rest


class PcscTokenConnection:
    """One PC/SC context and card handle, with the PIV application selected."""

    def __init__(self, context: PcscContext, connection: PcscConnection, token: PivToken) -> None:
        self._context = context
        self._connection = connection
        self.token: Token = token

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._connection.begin_transaction()
        try:
            yield
        finally:
            with contextlib.suppress(PcscError):
                self._connection.end_transaction()

    def close(self) -> None:
        # LEAVE, not reset: a reset would drop another program's verified state as well.
        with contextlib.suppress(PcscError):
            self._connection.close(reset=False)
        with contextlib.suppress(PcscError):
            self._context.close()


class PcscBackend:
    """pcscd's readers; every reader its monitor reports is this backend's."""

    name = "pcsc"

    def __init__(self, ignored: Callable[[str], bool] = lambda _name: False) -> None:
        self._ignored = ignored

    def owns(self, reader: str) -> bool:
        return not self._ignored(reader)

    def monitor(self, listener: PresenceListener) -> PresenceMonitor:
        return ReaderMonitor(listener, self._ignored)

    def connect(self, reader: str) -> PcscTokenConnection:
        context = PcscContext()
        try:
            connection = context.connect(reader)
        except TokenUnavailable:
            with contextlib.suppress(PcscError):
                context.close()
            raise
        try:
            token = PivToken(connection, connection.atr)
            connection.begin_transaction()
            try:
                token.select()
            finally:
                with contextlib.suppress(PcscError):
                    connection.end_transaction()
        except (TokenUnavailable, CardError):
            with contextlib.suppress(PcscError):
                connection.close()
            with contextlib.suppress(PcscError):
                context.close()
            raise
        return PcscTokenConnection(context, connection, token)

    def card_gone(self, reader: str, timeout: float) -> bool:
        """Event-driven: returns as soon as pcscd reports the card gone."""
        try:
            with PcscContext() as context:
                context.wait_for_presence(reader, present=False, timeout=timeout)
        except PcscError:
            return False  # still present (or PC/SC itself failed)
        return True
