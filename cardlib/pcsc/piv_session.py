"""The PIV card driver with the E-port profile: what the daemon asks of a card.

Status words become domain errors here (eport.cardlib.errors); layers above never see a
raw status word unless its meaning is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from eport.cardlib.errors import (
    CardError,
    InvalidPinError,
    NotPivCardError,
    ReferenceBlockedError,
    SecurityStatusError,
)
from eport.cardlib.pcsc.apdu_processing import ApduProcessor
from eport.cardlib.pcsc.connection import SmartCardConnection
from eport.common.apdu import SW, CommandApdu
from eport.common.piv import (
    CERT_OBJECT_FOR_SLOT,
    PIN_BLOCK_SIZE,
    PIN_PAD,
    PIV_AID,
    TAG_AUTH_CHALLENGE,
    TAG_AUTH_EXPONENTIATION,
    TAG_AUTH_RESPONSE,
    TAG_CERTIFICATE,
    TAG_CHUID_GUID,
    TAG_DATA,
    TAG_DYNAMIC_AUTH,
    TAG_OBJECT_ID,
    DataObject,
    Ins,
    KeyRef,
    Slot,
)
from eport.common.profile import EportProfile
from eport.common.tlv import TlvError, iter_tlv, parse_tlv, tlv, unwrap


@dataclass(frozen=True)
class SelectInfo:
    label: str
    algorithms: tuple[int, ...]


@dataclass(frozen=True)
class ReferenceStatus:
    verified: bool
    tries_left: int  # 0 when blocked
    blocked: bool


def _secret_block(secret: bytes | bytearray) -> bytearray:
    if not 1 <= len(secret) <= PIN_BLOCK_SIZE:
        raise ValueError("PIN length out of range")  # never include the value
    return bytearray(secret) + bytearray([PIN_PAD]) * (PIN_BLOCK_SIZE - len(secret))


def _wipe(buffer: bytearray) -> None:
    for i in range(len(buffer)):
        buffer[i] = 0


class PivSession:
    def __init__(self, connection: SmartCardConnection) -> None:
        self._processor = ApduProcessor(connection)

    def _send(self, command: CommandApdu) -> tuple[bytes, int]:
        return self._processor.transmit(command)

    def select(self) -> SelectInfo:
        data, sw = self._send(CommandApdu(0, Ins.SELECT, 0x04, 0x00, PIV_AID, le=256))
        if sw != SW.OK:
            raise NotPivCardError(sw, "SELECT PIV")
        label, algorithms = "", []
        try:
            template = unwrap(data, 0x61) if data else b""
            for tag, value in iter_tlv(template):
                if tag == 0x50:
                    label = value.decode("utf-8", "replace")
                elif tag == 0xAC:
                    algorithms = [v[0] for t, v in iter_tlv(value) if t == 0x80 and v]
        except TlvError:
            pass  # the application is there; its property template is optional detail
        return SelectInfo(label, tuple(algorithms))

    def get_object(self, object_id: int) -> bytes:
        """The object's content (inside tag 53; the discovery object whole)."""
        id_bytes = object_id.to_bytes(1 if object_id <= 0xFF else 3, "big")
        data, sw = self._send(
            CommandApdu(0, Ins.GET_DATA, 0x3F, 0xFF, tlv(TAG_OBJECT_ID, id_bytes), le=256)
        )
        if sw != SW.OK:
            raise CardError(sw, f"GET DATA {object_id:X}")
        if object_id == DataObject.DISCOVERY:
            return data
        try:
            return unwrap(data, TAG_DATA)
        except TlvError:
            raise CardError(SW.OK, f"GET DATA {object_id:X}: malformed object") from None

    def read_certificate(self, slot: Slot = Slot.SIGNATURE) -> bytes:
        content = self.get_object(CERT_OBJECT_FOR_SLOT[slot])
        try:
            return parse_tlv(content)[TAG_CERTIFICATE]
        except (TlvError, KeyError):
            raise CardError(SW.OK, "certificate object malformed") from None

    def read_profile(self) -> EportProfile:
        return EportProfile.decode_data_object(self.get_object(DataObject.EPORT_PROFILE))

    def read_card_id(self) -> str:
        guid = parse_tlv(self.get_object(DataObject.CHUID))[TAG_CHUID_GUID]
        return guid.rstrip(b"\x00").decode("ascii", "replace")

    def reference_status(self, reference: KeyRef = KeyRef.PIN) -> ReferenceStatus:
        """Tries left without spending one (VERIFY with no data)."""
        _, sw = self._send(CommandApdu(0, Ins.VERIFY, 0x00, reference))
        if sw == SW.OK:
            return ReferenceStatus(verified=True, tries_left=-1, blocked=False)
        if sw == SW.AUTH_METHOD_BLOCKED:
            return ReferenceStatus(verified=False, tries_left=0, blocked=True)
        if sw & 0xFFF0 == SW.WARNING_TRIES_LEFT:
            return ReferenceStatus(verified=False, tries_left=sw & 0x0F, blocked=False)
        raise CardError(sw, "VERIFY (status)")

    def verify_pin(self, pin: bytes | bytearray) -> None:
        block = _secret_block(pin)
        try:
            _, sw = self._send(CommandApdu(0, Ins.VERIFY, 0x00, KeyRef.PIN, bytes(block)))
        finally:
            _wipe(block)
        self._check_reference_sw(sw, "VERIFY PIN")

    def change_reference(self, reference: KeyRef, old: bytes | bytearray,
                         new: bytes | bytearray) -> None:
        data = _secret_block(old) + _secret_block(new)
        try:
            _, sw = self._send(CommandApdu(0, Ins.CHANGE_REFERENCE_DATA, 0x00, reference,
                                           bytes(data)))
        finally:
            _wipe(data)
        self._check_reference_sw(sw, f"CHANGE REFERENCE DATA {reference.name}")

    def unblock_pin(self, puk: bytes | bytearray, new_pin: bytes | bytearray) -> None:
        data = _secret_block(puk) + _secret_block(new_pin)
        try:
            _, sw = self._send(CommandApdu(0, Ins.RESET_RETRY_COUNTER, 0x00, KeyRef.PIN,
                                           bytes(data)))
        finally:
            _wipe(data)
        self._check_reference_sw(sw, "RESET RETRY COUNTER")

    def logout(self) -> None:
        _, sw = self._send(CommandApdu(0, Ins.VERIFY, 0xFF, KeyRef.PIN))
        if sw != SW.OK:
            raise CardError(sw, "VERIFY reset")

    def sign(self, algorithm: int, challenge: bytes, slot: Slot = Slot.SIGNATURE) -> bytes:
        """GENERAL AUTHENTICATE: the raw card operation (RSA block, or DER r,s for EC/SM2)."""
        return self._general_authenticate(algorithm, slot, TAG_AUTH_CHALLENGE, challenge)

    def decrypt_step(self, algorithm: int, ciphertext_part: bytes, *, sm2: bool) -> bytes:
        """GENERAL AUTHENTICATE with the envelope key (9D): the private step of decryption.

        RSA: the ciphertext block as the witness (81), answered with c^d mod n, padding and all.
        SM2: the point C1 in tag 85 (as PIV key agreement), answered with d·C1 (04 || x || y).
        """
        tag = TAG_AUTH_EXPONENTIATION if sm2 else TAG_AUTH_CHALLENGE
        return self._general_authenticate(algorithm, Slot.KEY_MANAGEMENT, tag, ciphertext_part)

    def _general_authenticate(self, algorithm: int, slot: Slot, input_tag: int,
                              value: bytes) -> bytes:
        template = tlv(TAG_DYNAMIC_AUTH, tlv(TAG_AUTH_RESPONSE, b"") + tlv(input_tag, value))
        data, sw = self._send(
            CommandApdu(0, Ins.GENERAL_AUTHENTICATE, algorithm, slot, template, le=256)
        )
        if sw == SW.SECURITY_STATUS_NOT_SATISFIED:
            raise SecurityStatusError("GENERAL AUTHENTICATE")
        if sw != SW.OK:
            raise CardError(sw, "GENERAL AUTHENTICATE")
        try:
            return parse_tlv(unwrap(data, TAG_DYNAMIC_AUTH))[TAG_AUTH_RESPONSE]
        except (TlvError, KeyError):
            raise CardError(sw, "GENERAL AUTHENTICATE: malformed reply") from None

    @staticmethod
    def _check_reference_sw(sw: int, operation: str) -> None:
        if sw == SW.OK:
            return
        if sw == SW.AUTH_METHOD_BLOCKED:
            raise ReferenceBlockedError(operation)
        if sw & 0xFFF0 == SW.WARNING_TRIES_LEFT:
            tries = sw & 0x0F
            if tries == 0:
                raise ReferenceBlockedError(operation)
            raise InvalidPinError(sw, operation, tries)
        raise CardError(sw, operation)
