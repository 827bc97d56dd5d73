"""The vpcd wire protocol: how a simulated card reaches pcscd's vpcd driver.

TCP; the driver listens on 35963 + slot and the card connects. Every message both ways is a
2-byte big-endian length and that many bytes; vpcd speaks first. A 1-byte message is control:
00 power off, 01 power on, 02 reset (no reply), 04 get ATR (reply: the ATR). Longer messages
are C-APDUs, answered with the R-APDU. Closing the socket is card removal.

vpcd forwards whatever a PC/SC program transmits, so a 1-byte APDU arrives as a 1-byte message
too. Any byte other than the four control codes is such an APDU and is answered 6700 (wrong
length: a command has at least a 4-byte header); were it left unanswered, vpcd would wait for
ever and the reader would be dead for every program. A 1-byte APDU that happens to equal a
control code cannot be told apart on the wire and is taken as that control.

Things the driver does that shape this module (vsmartcard's vpcd, as packaged in Debian 12):
- pcscd asks "is the card present?" every 400 ms by sending GET ATR, and only accepts our
  connection during such a poll, so insertion and removal are seen 0-400 ms late;
- it waits for an R-APDU without a timeout, so a card that never answers blocks that reader
  (presence polls included) until the connection closes;
- it treats an empty reply as an error and drops the card, so we never send one.

Latency: with default socket options a round trip costs ~50 ms (delayed ACK against small
writes); TCP_NODELAY once and TCP_QUICKACK before every receive bring it under a millisecond.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from eport.common.failure import EportFailure

logger = logging.getLogger(__name__)

VPCD_BASE_PORT = 35963
CONTROL_POWER_OFF = 0x00
CONTROL_POWER_ON = 0x01
CONTROL_RESET = 0x02
CONTROL_GET_ATR = 0x04
CONTROL_CODES = frozenset({CONTROL_POWER_OFF, CONTROL_POWER_ON, CONTROL_RESET, CONTROL_GET_ATR})
MAX_FRAME = 0xFFFF  # the length prefix is two bytes
# Sent instead of an answer that cannot be framed (empty, or over 65535 bytes): "no precise
# diagnosis" keeps the reader usable, where dropping the connection would look like removal.
SW_NO_PRECISE_DIAGNOSIS = b"\x6f\x00"
SW_WRONG_LENGTH = b"\x67\x00"  # the answer to a 1-byte APDU


class VirtualCard(Protocol):
    """What a simulated card offers the link; `execute` never raises for bad input."""

    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...  # clears volatile state (PIN verified etc.)

    def reset(self) -> None: ...

    def execute(self, apdu: bytes) -> bytes: ...


@runtime_checkable
class ClosableCard(Protocol):
    """A card that holds a resource (the real one locks its image file) to release."""

    def close(self) -> None: ...


# Decides the answer to one C-APDU: the R-APDU to send, or None to drop the connection without
# answering (a card pulled out mid-command). The runner puts its fault injection here.
ApduHandler = Callable[[VirtualCard, bytes], bytes | None]


class VpcdProtocolError(EportFailure):
    """The peer sent something that is not a vpcd frame."""

    code = "VPCD_PROTOCOL"


class LatencyTuning:
    """On by default; the benchmark turns it off once to show what it buys."""

    enabled = True


def port_for_slot(slot: int, base_port: int = VPCD_BASE_PORT) -> int:
    return base_port + slot


SLOTS_PER_READER_ENTRY = 2  # Debian builds the driver with two slots per reader entry


def reader_name(slot: int) -> str:
    """pcscd's name for a vpcd slot. The packaged entry (/etc/reader.conf.d/vpcd) serves slots
    0 and 1: "Virtual PCD 00 00" and "Virtual PCD 00 01". More slots need more entries, each
    serving the next two ports with its own copy of the driver (the driver keeps its sockets in
    a global table indexed by slot, so two entries sharing one library would clash); pcscd
    numbers readers of the same name per library, so each entry gets its own name,
    "Virtual PCD NN", and pcscd calls its slots "Virtual PCD NN 00 00" and "... 00 01"."""
    entry, index = divmod(slot, SLOTS_PER_READER_ENTRY)
    if entry == 0:
        return f"Virtual PCD 00 {index:02d}"
    return f"Virtual PCD {entry:02d} 00 {index:02d}"


def tune_socket(sock: socket.socket) -> None:
    # Our replies are small writes answering small reads: Nagle would hold each reply until
    # the peer's delayed ACK (~40 ms) arrives.
    if LatencyTuning.enabled:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quickack(sock: socket.socket) -> None:
    # Linux drops out of quick-ACK mode on its own after a few segments, so one setsockopt at
    # connect time is not enough: re-arm it before every receive.
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None and LatencyTuning.enabled:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None if the peer closed before the first byte."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:  # TCP may deliver a frame in any number of pieces
        _quickack(sock)
        count = sock.recv_into(view[received:])
        if count == 0:
            if received == 0:
                return None
            raise VpcdProtocolError(
                f"connection closed in the middle of a frame ({received} of {size} bytes)")
        received += count
    return bytes(buffer)


def read_frame(sock: socket.socket) -> bytes | None:
    """One message from vpcd, or None when the connection is closed between messages."""
    header = _recv_exact(sock, 2)
    if header is None:
        return None
    length = int.from_bytes(header, "big")
    if length == 0:
        raise VpcdProtocolError("empty frame (length 0)")
    body = _recv_exact(sock, length)
    if body is None:
        raise VpcdProtocolError(f"connection closed after a frame header announcing {length} "
                                "bytes")
    return body


def write_frame(sock: socket.socket, payload: bytes) -> None:
    if not 0 < len(payload) <= MAX_FRAME:
        raise VpcdProtocolError(f"cannot frame {len(payload)} bytes (1 to {MAX_FRAME})")
    # One sendall of header and body: two writes would be two segments (TCP_NODELAY).
    sock.sendall(len(payload).to_bytes(2, "big") + payload)


def answer_control(card: VirtualCard, code: int) -> bytes | None:
    """Apply a control message; return the reply (only GET ATR has one)."""
    if code == CONTROL_POWER_OFF:
        card.power_off()
    elif code == CONTROL_POWER_ON:
        card.power_on()
    elif code == CONTROL_RESET:
        card.reset()
    elif code == CONTROL_GET_ATR:
        return card.atr
    else:
        raise VpcdProtocolError(f"unknown control byte {code:02X}")
    return None


def execute_apdu(card: VirtualCard, apdu: bytes) -> bytes:
    """The card's answer, always one that can be framed."""
    try:
        response = card.execute(apdu)
    except Exception:
        # The card contract says execute never raises; if a bug makes it, the host should get
        # an error status rather than see the card vanish (and the slot thread must survive).
        logger.exception("the card raised on APDU %s; answering 6F00", apdu[:5].hex())
        return SW_NO_PRECISE_DIAGNOSIS
    if not 2 <= len(response) <= MAX_FRAME:
        logger.error("the card answered %d bytes, which vpcd cannot carry; answering 6F00",
                     len(response))
        return SW_NO_PRECISE_DIAGNOSIS
    return response


class VpcdLink:
    """One connection to pcscd's vpcd driver, serving one card until the peer closes it.

    `serve` runs in one thread; `shutdown` may be called from any other thread to end it
    (that is how a card is removed).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(None)  # vpcd may stay silent for as long as no program uses the card
        tune_socket(sock)
        self._sock = sock
        self._closed = threading.Event()
        self.frames_received = 0

    @classmethod
    def connect(cls, host: str = "127.0.0.1", port: int = VPCD_BASE_PORT, *,
                timeout: float = 2.0) -> VpcdLink:
        """Connect to the driver; raises OSError when nothing listens (pcscd not running)."""
        return cls(socket.create_connection((host, port), timeout=timeout))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def serve(self, card: VirtualCard, handle_apdu: ApduHandler = execute_apdu) -> None:
        """Answer vpcd until it closes the connection, `handle_apdu` returns None or
        `shutdown` is called. Raises VpcdProtocolError on a malformed frame and OSError on a
        broken connection; the caller decides whether to reconnect."""
        while True:
            try:
                frame = read_frame(self._sock)
            except OSError:
                if self.closed:
                    return  # our own shutdown interrupted the receive
                raise
            if frame is None or self.closed:
                return
            self.frames_received += 1
            if len(frame) == 1 and frame[0] in CONTROL_CODES:
                self._control(card, frame[0])
                continue
            if len(frame) == 1:
                # A 1-byte APDU from some PC/SC program (see the module docstring).
                self.send(SW_WRONG_LENGTH)
                continue
            response = handle_apdu(card, frame)
            if response is None or self.closed:
                return
            self.send(response)

    def _control(self, card: VirtualCard, code: int) -> None:
        try:
            reply = answer_control(card, code)
        except VpcdProtocolError:
            # No reply: a reply vpcd does not expect would be taken as the next answer.
            logger.warning("vpcd sent unknown control byte %02X; ignored", code)
            return
        if reply is not None:
            self.send(reply)

    def send(self, payload: bytes) -> None:
        write_frame(self._sock, payload)

    def shutdown(self) -> None:
        """End the connection now (card removal); wakes a `serve` blocked in a receive."""
        self._closed.set()
        with contextlib.suppress(OSError):  # the peer may have closed it already
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        self._sock.close()

    def __enter__(self) -> VpcdLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
