"""The vpcd wire protocol: how a simulated card reaches pcscd's vpcd driver.

TCP; the driver listens on 35963 + slot and the card connects. Every message both ways is a
2-byte big-endian length and that many bytes; vpcd speaks first. A 1-byte message is control:
00 power off, 01 power on, 02 reset (no reply), 04 get ATR (reply: the ATR). Longer messages
are C-APDUs, answered with the R-APDU. Closing the socket is card removal.

Latency: with default socket options a round trip costs ~50 ms (delayed ACK against small
writes); TCP_NODELAY once and TCP_QUICKACK before every receive bring it under a millisecond.
"""

from __future__ import annotations

import socket
from typing import Protocol

VPCD_BASE_PORT = 35963
CONTROL_POWER_OFF = 0x00
CONTROL_POWER_ON = 0x01
CONTROL_RESET = 0x02
CONTROL_GET_ATR = 0x04


class VirtualCard(Protocol):
    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def execute(self, apdu: bytes) -> bytes: ...

    def close(self) -> None: ...


class VpcdProtocolError(Exception):
    """The peer sent something that is not a vpcd frame."""


def port_for_slot(slot: int, base_port: int = VPCD_BASE_PORT) -> int:
    return base_port + slot


class LatencyTuning:
    """On by default; the benchmark turns it off once to show what it buys."""

    enabled = True


def tune_socket(sock: socket.socket) -> None:
    if LatencyTuning.enabled:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quickack(sock: socket.socket) -> None:
    # Linux clears QUICKACK after a while; set it before each receive (DESIGN.md §4).
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None and LatencyTuning.enabled:
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None if the peer closed before the first byte."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        _quickack(sock)
        count = sock.recv_into(view[received:])
        if count == 0:
            if received == 0:
                return None
            raise VpcdProtocolError("connection closed in the middle of a frame")
        received += count
    return bytes(buffer)


def read_frame(sock: socket.socket) -> bytes | None:
    """One message from vpcd, or None when the connection is closed."""
    header = _recv_exact(sock, 2)
    if header is None:
        return None
    length = int.from_bytes(header, "big")
    if length == 0:
        raise VpcdProtocolError("empty frame")
    body = _recv_exact(sock, length)
    if body is None:
        raise VpcdProtocolError("connection closed after a frame header")
    return body


def write_frame(sock: socket.socket, payload: bytes) -> None:
    if not 0 < len(payload) <= 0xFFFF:
        raise VpcdProtocolError(f"cannot frame {len(payload)} bytes")
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
