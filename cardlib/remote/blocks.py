"""Block transfer of long requests, as the page library sends them (docs/gateway.md, "Large
requests"): a 128-character header, then the block's text; lengths in UTF-16 code units."""

from __future__ import annotations

import uuid

BLOCK_ABOVE_UNITS = 120 * 1024   # the page library sends requests above 120 KB in blocks
BLOCK_UNITS = 64 * 1024


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_code(text: str) -> str:
    """CRC-16/MODBUS over the low byte of each UTF-16 code unit, low byte of the CRC first."""
    crc = 0xFFFF
    raw = text.encode("utf-16-le", "surrogatepass")
    for low in raw[0::2]:
        crc ^= low
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return f"{crc & 0xFF:02X}{crc >> 8:02X}"


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    units = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1  # never split a surrogate pair
        if units + width > BLOCK_UNITS:
            pieces.append("".join(current))
            current, units = [], 0
        current.append(char)
        units += width
    pieces.append("".join(current))
    return pieces


def block_frames(text: str) -> tuple[list[str], str]:
    """The frames that carry `text`, and the transfer's GUID."""
    guid = str(uuid.uuid4())
    pieces = _pieces(text)
    whole_check, whole_length = check_code(text), utf16_length(text)
    frames = []
    for number, piece in enumerate(pieces):
        header = (f"BLOCKTXT{whole_check}{check_code(piece)}{whole_length:016d}"
                  f"{utf16_length(piece):08d}{len(pieces):04d}{guid}{number:04d}")
        frames.append(header.ljust(128, "0") + piece)
    return frames, guid
