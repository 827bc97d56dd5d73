"""The card operating system: `execute(apdu) -> response` over an instruction table.

Handlers raise `SwError`; `execute` turns it into a status word. Nothing a host sends can make
`execute` raise: a malformed APDU gets a status word and leaves the card's state unchanged.

E-port profile choices (see eport.common.piv, SP 800-73-4 and E-port cards in the field):
- the PIV application is selected at power-on (it is the card's only application), and SELECT
  of any other AID answers 6A82;
- the signing key is in slot 9C; after one VERIFY it signs until power-off, reset, a failed
  VERIFY or VERIFY with P1=FF (E-port clients sign many documents after one PIN entry);
- RSA and SM2 cards carry an envelope (encryption) key in slot 9D under the same PIN rule;
  GENERAL AUTHENTICATE with it does decryption's private step only (eport.firmware_sim.
  envelope_key), and a card without one answers 6A88 for 9D;
- VERIFY with an empty data field against the PUK (P2=81) reports the PUK's tries left without
  spending one, so support tools can read the PUK state;
- every change to the PIN, PUK or their counters is persisted before the reply: VERIFY spends
  the try on disk first, then compares, then restores the counter on success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from eport.common.apdu import SW, ApduFormatError, CommandApdu, sw_bytes, tries_left_sw
from eport.common.failure import EportFailure
from eport.common.piv import (
    CLA_CHAINING,
    PIN_BLOCK_SIZE,
    PIV_AID,
    TAG_AUTH_CHALLENGE,
    TAG_AUTH_RESPONSE,
    TAG_DYNAMIC_AUTH,
    TAG_OBJECT_ID,
    Ins,
    KeyRef,
    Slot,
)
from eport.common.tlv import TlvError, parse_tlv, tlv, unwrap
from eport.firmware_sim.atr import atr_for_form
from eport.firmware_sim.envelope_key import EnvelopeCardKey, load_envelope_key
from eport.firmware_sim.image import CardImage, CardImageStore
from eport.firmware_sim.objects import build_objects, select_reply
from eport.firmware_sim.reference_data import ReferenceData, is_well_formed_block
from eport.firmware_sim.signing import SignInputError, load_card_key

logger = logging.getLogger(__name__)

# Chained command data beyond this is refused: the largest legitimate input is an RSA-2048
# block in a 7C template (about 270 bytes).
MAX_CHAINED_DATA = 4096
_MIN_AID_PREFIX = 5  # the RID


class SwError(EportFailure):
    code = "STATUS_WORD"

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW {sw:04X}")
        self.sw = sw


Handler = Callable[[CommandApdu], bytes]


class CardOS:
    """One E-port card: its image (persistent memory) and its volatile state."""

    def __init__(self, image: CardImage, *, store: CardImageStore | None = None) -> None:
        self._image = image
        self._store = store
        self._key = load_card_key(image.algorithm, image.private_key)
        self._envelope_key: EnvelopeCardKey | None = None
        if image.envelope_private_key is not None:
            self._envelope_key = load_envelope_key(image.algorithm, image.envelope_private_key)
        self._objects = build_objects(image)
        self._select_reply = select_reply(image)
        self.atr = atr_for_form(image.profile.form)
        self._pin_verified = False
        self._pending_response = b""
        self._chain: tuple[tuple[int, int, int], bytearray] | None = None
        self._handlers: dict[int, Handler] = {
            Ins.SELECT: self._select,
            Ins.GET_DATA: self._get_data,
            Ins.VERIFY: self._verify,
            Ins.CHANGE_REFERENCE_DATA: self._change_reference_data,
            Ins.RESET_RETRY_COUNTER: self._reset_retry_counter,
            Ins.GENERAL_AUTHENTICATE: self._general_authenticate,
        }

    # -- state ---------------------------------------------------------------------------

    @property
    def image(self) -> CardImage:
        return self._image

    @property
    def pin_verified(self) -> bool:
        return self._pin_verified

    def power_on(self) -> None:
        self._clear_volatile_state()

    def power_off(self) -> None:
        self._clear_volatile_state()

    def reset(self) -> None:
        self._clear_volatile_state()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _clear_volatile_state(self) -> None:
        self._pin_verified = False
        self._pending_response = b""
        self._chain = None

    def _commit(self, image: CardImage) -> None:
        """Make `image` the card's persistent state, on disk first when the card has a file."""
        if self._store is not None:
            try:
                self._store.commit(image)
            except OSError:
                logger.exception("writing the card image failed; the card state is unchanged")
                raise SwError(SW.MEMORY_FAILURE) from None
        self._image = image

    # -- dispatch ------------------------------------------------------------------------

    def execute(self, apdu: bytes) -> bytes:
        try:
            data, sw = self._execute(apdu)
        except SwError as err:
            data, sw = b"", err.sw
        except Exception:  # a bug must not take the card off the bus
            logger.exception("internal error while executing an APDU")
            data, sw = b"", SW.NO_PRECISE_DIAGNOSIS
        return data + sw_bytes(sw)

    def _execute(self, apdu: bytes) -> tuple[bytes, int]:
        try:
            command = CommandApdu.parse(apdu)
        except ApduFormatError as err:
            return b"", err.sw
        if command.cla & ~CLA_CHAINING:
            return b"", SW.CLA_NOT_SUPPORTED
        if command.ins == Ins.GET_RESPONSE:
            return self._get_response(command)
        self._pending_response = b""

        assembled = self._assemble_chain(command)
        if assembled is None:
            return b"", SW.OK  # more chained data expected
        handler = self._handlers.get(assembled.ins)
        if handler is None:
            return b"", SW.INS_NOT_SUPPORTED
        return self._limit_to_le(handler(assembled), assembled)

    def _assemble_chain(self, command: CommandApdu) -> CommandApdu | None:
        chain = self._chain
        if chain is not None and chain[0] != command.header:
            self._chain = None
            raise SwError(SW.LAST_COMMAND_OF_CHAIN_EXPECTED)
        if command.chained:
            buffered = chain[1] if chain is not None else bytearray()
            if len(buffered) + len(command.data) > MAX_CHAINED_DATA:
                self._chain = None
                raise SwError(SW.WRONG_LENGTH)
            buffered += command.data
            self._chain = (command.header, buffered)
            return None
        if chain is None:
            return command
        self._chain = None
        data = bytes(chain[1]) + command.data
        if len(data) > MAX_CHAINED_DATA:
            raise SwError(SW.WRONG_LENGTH)
        return CommandApdu(0, command.ins, command.p1, command.p2, data, command.le)

    def _limit_to_le(self, data: bytes, command: CommandApdu) -> tuple[bytes, int]:
        # Le is honoured exactly: OpenSC reads an object with Le=08 to learn its length.
        limit = command.le if command.le is not None else 256
        if len(data) <= limit:
            return data, SW.OK
        self._pending_response = data[limit:]
        return data[:limit], self._bytes_remaining_sw()

    def _bytes_remaining_sw(self) -> int:
        # 61xx: xx bytes remain; 6100 means 256 or more.
        remaining = len(self._pending_response)
        return SW.BYTES_REMAINING | (remaining if remaining < 256 else 0)

    def _get_response(self, command: CommandApdu) -> tuple[bytes, int]:
        if command.chained:
            return b"", SW.CHAINING_NOT_SUPPORTED
        if command.p1 or command.p2:
            return b"", SW.INCORRECT_P1P2
        if not self._pending_response:
            return b"", SW.CONDITIONS_NOT_SATISFIED
        limit = command.le if command.le is not None else 256
        chunk, self._pending_response = (
            self._pending_response[:limit],
            self._pending_response[limit:],
        )
        if self._pending_response:
            return chunk, self._bytes_remaining_sw()
        return chunk, SW.OK

    # -- instructions --------------------------------------------------------------------

    def _select(self, command: CommandApdu) -> bytes:
        if command.p1 != 0x04:
            # Selection by file id or path: this card has no such files.
            if command.p1 in (0x00, 0x01, 0x02, 0x08, 0x09):
                raise SwError(SW.FILE_NOT_FOUND)
            raise SwError(SW.INCORRECT_P1P2)
        if command.p2 not in (0x00, 0x0C):
            raise SwError(SW.INCORRECT_P1P2)
        aid = command.data
        if len(aid) < _MIN_AID_PREFIX or not PIV_AID.startswith(aid):
            raise SwError(SW.FILE_NOT_FOUND)
        return b"" if command.p2 == 0x0C else self._select_reply

    def _get_data(self, command: CommandApdu) -> bytes:
        if (command.p1, command.p2) != (0x3F, 0xFF):
            raise SwError(SW.INCORRECT_P1P2)
        try:
            object_id = unwrap(command.data, TAG_OBJECT_ID)
        except TlvError:
            raise SwError(SW.INCORRECT_DATA) from None
        if not 1 <= len(object_id) <= 3:
            raise SwError(SW.INCORRECT_DATA)
        found = self._objects.get(int.from_bytes(object_id, "big"))
        if found is None:
            raise SwError(SW.FILE_NOT_FOUND)
        return found

    def _verify(self, command: CommandApdu) -> bytes:
        if command.p1 == 0xFF:  # PIV: reset the security status of the reference
            if command.p2 != KeyRef.PIN or command.data:
                raise SwError(SW.INCORRECT_P1P2)
            self._pin_verified = False
            return b""
        if command.p1 != 0x00:
            raise SwError(SW.INCORRECT_P1P2)
        if command.p2 not in (KeyRef.PIN, KeyRef.PUK):
            raise SwError(SW.REFERENCE_NOT_FOUND)
        reference = self._image.pin if command.p2 == KeyRef.PIN else self._image.puk
        if not command.data:  # status query: spends nothing
            if reference.blocked:
                raise SwError(SW.AUTH_METHOD_BLOCKED)
            if command.p2 == KeyRef.PIN and self._pin_verified:
                return b""
            raise SwError(tries_left_sw(reference.tries_left))
        if command.p2 == KeyRef.PUK:
            raise SwError(SW.INCORRECT_P1P2)  # the PUK is only presented with RESET RETRY COUNTER
        if not is_well_formed_block(command.data):
            raise SwError(SW.INCORRECT_DATA)  # a malformed PIN never costs a try
        self._pin_verified = False
        restored = self._present(KeyRef.PIN, command.data)
        self._commit(self._image.with_pin(restored))
        self._pin_verified = True
        return b""

    def _change_reference_data(self, command: CommandApdu) -> bytes:
        if command.p1 != 0x00:
            raise SwError(SW.INCORRECT_P1P2)
        if command.p2 not in (KeyRef.PIN, KeyRef.PUK):
            raise SwError(SW.REFERENCE_NOT_FOUND)
        old_block, new_block = self._two_blocks(command.data)
        reference = KeyRef(command.p2)
        restored = self._present(reference, old_block)
        changed = restored.with_new_secret(new_block)
        if reference == KeyRef.PIN:
            self._commit(self._image.with_pin(changed))
        else:
            self._commit(self._image.with_puk(changed))
        return b""

    def _reset_retry_counter(self, command: CommandApdu) -> bytes:
        if command.p1 != 0x00:
            raise SwError(SW.INCORRECT_P1P2)
        if command.p2 != KeyRef.PIN:
            raise SwError(SW.REFERENCE_NOT_FOUND)
        puk_block, new_pin_block = self._two_blocks(command.data)
        restored_puk = self._present(KeyRef.PUK, puk_block)
        new_pin = self._image.pin.with_new_secret(new_pin_block)
        self._commit(self._image.with_puk(restored_puk).with_pin(new_pin))
        self._pin_verified = False
        return b""

    def _general_authenticate(self, command: CommandApdu) -> bytes:
        operation: Callable[[bytes], bytes]
        if command.p2 == Slot.SIGNATURE:
            algorithm, input_tag, operation = (
                self._key.algorithm, TAG_AUTH_CHALLENGE, self._key.sign)
        elif command.p2 == Slot.KEY_MANAGEMENT and self._envelope_key is not None:
            algorithm, input_tag, operation = (
                self._envelope_key.algorithm, self._envelope_key.input_tag,
                self._envelope_key.private_step)
        else:
            raise SwError(SW.REFERENCE_NOT_FOUND)
        if command.p1 != algorithm:
            raise SwError(SW.INCORRECT_P1P2)
        try:
            template = parse_tlv(unwrap(command.data, TAG_DYNAMIC_AUTH))
        except TlvError:
            raise SwError(SW.INCORRECT_DATA) from None
        # 82 empty asks for the response; the input is 81 (signing, RSA decryption) or 85
        # (SM2 decryption's C1). Nothing else is offered.
        if set(template) != {TAG_AUTH_RESPONSE, input_tag} or template[TAG_AUTH_RESPONSE]:
            raise SwError(SW.INCORRECT_DATA)
        if not self._pin_verified:
            raise SwError(SW.SECURITY_STATUS_NOT_SATISFIED)
        try:
            result = operation(template[input_tag])
        except SignInputError:
            raise SwError(SW.INCORRECT_DATA) from None
        return tlv(TAG_DYNAMIC_AUTH, tlv(TAG_AUTH_RESPONSE, result))

    # -- reference data ------------------------------------------------------------------

    @staticmethod
    def _two_blocks(data: bytes) -> tuple[bytes, bytes]:
        if len(data) != 2 * PIN_BLOCK_SIZE:
            raise SwError(SW.INCORRECT_DATA)
        first, second = data[:PIN_BLOCK_SIZE], data[PIN_BLOCK_SIZE:]
        if not (is_well_formed_block(first) and is_well_formed_block(second)):
            raise SwError(SW.INCORRECT_DATA)  # checked before any try is spent
        return first, second

    def _present(self, which: KeyRef, block: bytes) -> ReferenceData:
        """Spend a try on disk, then compare; return the reference with its tries restored.

        Raises 63Cx / 6983 on a mismatch. The try is persisted before the comparison, so a
        crash between the two can cost a try but never give one back.
        """
        reference = self._image.pin if which == KeyRef.PIN else self._image.puk
        if reference.blocked:
            raise SwError(SW.AUTH_METHOD_BLOCKED)
        spent = reference.spend_try()
        if which == KeyRef.PIN:
            self._commit(self._image.with_pin(spent))
        else:
            self._commit(self._image.with_puk(spent))
        if not spent.matches(block):
            raise SwError(tries_left_sw(spent.tries_left))
        return spent.restore_tries()


def load_card(path: Path) -> CardOS:
    """Open a card image for use: locked, and every change persisted to it."""
    store = CardImageStore.open(Path(path))
    try:
        return CardOS(store.image, store=store)
    except Exception:
        store.close()
        raise

