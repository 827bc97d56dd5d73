"""PC/SC transport over pcsc-lite, through pyscard's low-level `scard` module.

This module is the only one in the project that imports pyscard. pcsc-lite return codes become
`PcscError` (a cardlib TokenUnavailable) with the code's name as its reason, mapped to the
project's error taxonomy the way Web eID maps them (NO_SERVICE / SERVICE_STOPPED: the service
is not running; REMOVED_CARD: card removed; SHARING_VIOLATION: another program holds the card).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from smartcard import scard

from eport.cardlib.errors import TokenUnavailable, Unavailable

logger = logging.getLogger(__name__)
TRAFFIC = 5  # below DEBUG: APDU traces only when asked for


class PcscError(TokenUnavailable):
    """A PC/SC call failed; `native_code` is the pcsc-lite return code and `reason` our name
    for it (one of cardlib.errors.Unavailable)."""

    def __init__(self, operation: str, code: int) -> None:
        unsigned = code & 0xFFFFFFFF
        reason = _REASONS.get(unsigned, Unavailable.CARD_ERROR)
        super().__init__(reason, f"{operation}: {scard.SCardGetErrorMessage(code)} "
                         f"(0x{unsigned:08X}, {reason})", code=unsigned)


_REASONS: dict[int, Unavailable] = {
    scard.SCARD_E_NO_SERVICE & 0xFFFFFFFF: Unavailable.SERVICE_NOT_RUNNING,
    scard.SCARD_E_SERVICE_STOPPED & 0xFFFFFFFF: Unavailable.SERVICE_NOT_RUNNING,
    scard.SCARD_E_NO_READERS_AVAILABLE & 0xFFFFFFFF: Unavailable.NO_READER,
    scard.SCARD_E_UNKNOWN_READER & 0xFFFFFFFF: Unavailable.NO_READER,
    scard.SCARD_E_READER_UNAVAILABLE & 0xFFFFFFFF: Unavailable.NO_READER,
    scard.SCARD_E_NO_SMARTCARD & 0xFFFFFFFF: Unavailable.NO_CARD,
    scard.SCARD_W_REMOVED_CARD & 0xFFFFFFFF: Unavailable.CARD_REMOVED,
    scard.SCARD_W_RESET_CARD & 0xFFFFFFFF: Unavailable.CARD_RESET,
    scard.SCARD_W_UNRESPONSIVE_CARD & 0xFFFFFFFF: Unavailable.CARD_TIMEOUT,
    scard.SCARD_W_UNPOWERED_CARD & 0xFFFFFFFF: Unavailable.CARD_REMOVED,
    scard.SCARD_E_TIMEOUT & 0xFFFFFFFF: Unavailable.CARD_TIMEOUT,
    scard.SCARD_E_SHARING_VIOLATION & 0xFFFFFFFF: Unavailable.SHARING_VIOLATION,
    scard.SCARD_E_NOT_TRANSACTED & 0xFFFFFFFF: Unavailable.CARD_ERROR,
    scard.SCARD_W_UNSUPPORTED_CARD & 0xFFFFFFFF: Unavailable.UNSUPPORTED_CARD,
    scard.SCARD_E_PROTO_MISMATCH & 0xFFFFFFFF: Unavailable.UNSUPPORTED_CARD,
    scard.SCARD_E_CANCELLED & 0xFFFFFFFF: Unavailable.CANCELLED,
    scard.SCARD_E_INVALID_HANDLE & 0xFFFFFFFF: Unavailable.INVALID_HANDLE,
    scard.SCARD_F_COMM_ERROR & 0xFFFFFFFF: Unavailable.CARD_ERROR,
}


# Reader-state bits and names the reader monitor needs (values of pcsc-lite's winscard.h).
PNP_NOTIFICATION = "\\\\?PnP?\\Notification"
STATE_UNAWARE = scard.SCARD_STATE_UNAWARE
STATE_CHANGED = scard.SCARD_STATE_CHANGED
STATE_UNKNOWN = scard.SCARD_STATE_UNKNOWN
STATE_PRESENT = scard.SCARD_STATE_PRESENT
STATE_EXCLUSIVE = scard.SCARD_STATE_EXCLUSIVE
STATE_MUTE = scard.SCARD_STATE_MUTE
INFINITE = 0xFFFFFFFF


@dataclass(frozen=True)
class ReaderStatus:
    """One reader's answer from SCardGetStatusChange; `event_state` keeps pcsc-lite's card
    event counter in its upper 16 bits, so a quick remove-and-insert is still seen."""

    name: str
    event_state: int
    atr: bytes


def card_removed_error(operation: str) -> PcscError:
    return PcscError(operation, scard.SCARD_W_REMOVED_CARD)


def _check(operation: str, result: int) -> None:
    if result != scard.SCARD_S_SUCCESS:
        raise PcscError(operation, result)


class PcscContext:
    """One SCardEstablishContext; close it when done."""

    def __init__(self) -> None:
        result, self.handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check("SCardEstablishContext", result)

    def list_readers(self) -> list[str]:
        result, names = scard.SCardListReaders(self.handle, [])
        if result in (scard.SCARD_E_NO_READERS_AVAILABLE, scard.SCARD_E_READER_UNAVAILABLE):
            return []
        _check("SCardListReaders", result)
        return list(names)

    def card_present(self, reader: str) -> bool:
        result, states = scard.SCardGetStatusChange(
            self.handle, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        _check("SCardGetStatusChange", result)
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)

    def wait_for_presence(self, reader: str, present: bool, timeout: float) -> float:
        """Block in SCardGetStatusChange until the card is (or is not) in `reader`.

        Returns the seconds waited; raises PcscError(SCARD_E_TIMEOUT) after `timeout`.
        """
        started = time.monotonic()
        result, states = scard.SCardGetStatusChange(
            self.handle, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        _check("SCardGetStatusChange", result)
        state = states[0][1]
        while bool(state & scard.SCARD_STATE_PRESENT) != present:
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise PcscError("waiting for the card", scard.SCARD_E_TIMEOUT)
            result, states = scard.SCardGetStatusChange(
                self.handle, int(remaining * 1000), [(reader, state & ~scard.SCARD_STATE_CHANGED)]
            )
            _check("SCardGetStatusChange", result)
            state = states[0][1]
        return time.monotonic() - started

    def get_status_change(
        self, readers: list[tuple[str, int]], timeout_ms: int = INFINITE
    ) -> list[ReaderStatus]:
        """Block until a reader's state differs from the one given (or the timeout, or
        cancel()); the GIL is released meanwhile. Raises PcscError (TIMEOUT, CANCELLED,
        SERVICE_NOT_RUNNING ...)."""
        result, states = scard.SCardGetStatusChange(self.handle, timeout_ms, readers)
        _check("SCardGetStatusChange", result)
        return [ReaderStatus(name, state, bytes(atr)) for name, state, atr in states]

    def cancel(self) -> None:
        """Wake a get_status_change() blocked in another thread (thread-safe in pcsc-lite)."""
        scard.SCardCancel(self.handle)

    def connect(self, reader: str, *, exclusive: bool = False) -> PcscConnection:
        share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
        result, card, protocol = scard.SCardConnect(
            self.handle, reader, share, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        _check(f"SCardConnect({reader})", result)
        return PcscConnection(reader, card, protocol)

    def close(self) -> None:
        scard.SCardReleaseContext(self.handle)

    def __enter__(self) -> PcscContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class PcscConnection:
    reader: str
    _card: int
    _protocol: int
    # True while the replies are those of a decryption with the envelope key (9D), GET
    # RESPONSE continuations included: they carry the plaintext (RSA) or d·C1 (SM2).
    _secret_replies: bool = False

    @property
    def atr(self) -> bytes:
        result, _reader, _state, _protocol, atr = scard.SCardStatus(self._card)
        _check("SCardStatus", result)
        return bytes(atr)

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        # VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER carry secrets: trace the
        # header only.
        if apdu[1:2] == b"\x87":  # GENERAL AUTHENTICATE
            self._secret_replies = apdu[3:4] == b"\x9d"
        elif apdu[1:2] != b"\xc0":  # anything but GET RESPONSE ends the exchange
            self._secret_replies = False
        if logger.isEnabledFor(TRAFFIC):
            shown = apdu[:5].hex() + " <redacted>" if apdu[1:2] in (b"\x20", b"\x24", b"\x2c") \
                else apdu.hex()
            logger.log(TRAFFIC, "SEND %s", shown)
        result, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        _check("SCardTransmit", result)
        if len(response) < 2:
            raise PcscError("SCardTransmit: reply without a status word", scard.SCARD_F_COMM_ERROR)
        data = bytes(response[:-2])
        sw = (response[-2] << 8) | response[-1]
        if logger.isEnabledFor(TRAFFIC):
            shown = f"<redacted {len(data)} bytes>" if self._secret_replies and data \
                else data.hex()
            logger.log(TRAFFIC, "RECV %s %04X", shown, sw)
        return data, sw

    def begin_transaction(self) -> None:
        """Keep other PC/SC programs off the card until end_transaction(): one daemon job's
        APDUs (VERIFY then GENERAL AUTHENTICATE, say) are never interleaved with theirs."""
        _check("SCardBeginTransaction", scard.SCardBeginTransaction(self._card))

    def end_transaction(self) -> None:
        scard.SCardEndTransaction(self._card, scard.SCARD_LEAVE_CARD)

    def reconnect(self, *, reset: bool) -> None:
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        result, self._protocol = scard.SCardReconnect(
            self._card, scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1, disposition)
        _check("SCardReconnect", result)

    def close(self, *, reset: bool = False) -> None:
        scard.SCardDisconnect(
            self._card, scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        )
