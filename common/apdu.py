"""Command APDUs (ISO 7816-4 short and extended forms) and status words."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from eport.common.failure import EportFailure


class SW(IntEnum):
    """Status words the E-port card profile uses."""

    OK = 0x9000
    BYTES_REMAINING = 0x6100  # 61xx: xx more bytes for GET RESPONSE (00 = 256 or more)
    WARNING_TRIES_LEFT = 0x63C0  # 63Cx: verification failed, x tries left
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    CHAINING_NOT_SUPPORTED = 0x6884
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    INCORRECT_DATA = 0x6A80
    FILE_NOT_FOUND = 0x6A82
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


def sw_bytes(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def tries_left_sw(tries: int) -> int:
    """63Cx for 1..15 tries left; a blocked reference answers 6983 instead."""
    return SW.AUTH_METHOD_BLOCKED if tries <= 0 else SW.WARNING_TRIES_LEFT | min(tries, 0xF)


class ApduFormatError(EportFailure, ValueError):
    """The bytes are not a well-formed command APDU; `sw` is the status word to answer."""

    code = "APDU_FORMAT"

    def __init__(self, message: str, sw: int = SW.WRONG_LENGTH) -> None:
        super().__init__(message)
        self.sw = sw


@dataclass(frozen=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    # None: no Le field (case 1 or 3). Otherwise the number of bytes the host accepts;
    # Le=00 (short) means 256 and Le=0000 (extended) means 65536.
    le: int | None = None
    extended: bool = False

    @property
    def chained(self) -> bool:
        """b5 of CLA: more command data follows in the next APDU (ISO 7816-4 chaining)."""
        return bool(self.cla & 0x10)

    @property
    def header(self) -> tuple[int, int, int]:
        return self.ins, self.p1, self.p2

    def to_bytes(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.extended:
            if self.data:
                out += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                le = 0 if self.le == 65536 else self.le
                out += (b"" if self.data else b"\x00") + le.to_bytes(2, "big")
            return out
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([0 if self.le == 256 else self.le])
        return out

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Parse the four ISO cases in short or extended form; raise ApduFormatError."""
        if len(raw) < 4:
            raise ApduFormatError(f"a command APDU has at least 4 bytes, got {len(raw)}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        if not body:  # case 1
            return cls(cla, ins, p1, p2)
        if len(body) == 1:  # case 2 short
            return cls(cla, ins, p1, p2, le=body[0] or 256)
        if body[0] != 0:  # short case 3 or 4
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, data=body[1:])
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, data=body[1 : 1 + lc], le=body[-1] or 256)
            raise ApduFormatError(f"Lc={lc} does not match the {len(body) - 1} bytes that follow")
        # body[0] == 0 and more bytes follow: extended form
        if len(body) == 3:  # case 2 extended
            le = int.from_bytes(body[1:3], "big") or 65536
            return cls(cla, ins, p1, p2, le=le, extended=True)
        if len(body) < 3:
            raise ApduFormatError("truncated extended length field")
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of zero")
        rest = body[3:]
        if len(rest) == lc:
            return cls(cla, ins, p1, p2, data=rest, extended=True)
        if len(rest) == lc + 2:
            le = int.from_bytes(rest[-2:], "big") or 65536
            return cls(cla, ins, p1, p2, data=rest[:lc], le=le, extended=True)
        raise ApduFormatError(f"extended Lc={lc} does not match the {len(rest)} bytes that follow")
