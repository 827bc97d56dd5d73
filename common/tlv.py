"""BER-TLV as PIV uses it: one- to three-byte tags, definite lengths up to 0xFFFF."""

from __future__ import annotations

from collections.abc import Iterator

from eport.common.failure import EportFailure


class TlvError(EportFailure, ValueError):
    """The bytes are not well-formed BER-TLV."""

    code = "TLV_FORMAT"


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    if length <= 0xFF:
        return bytes([0x81, length])
    if length <= 0xFFFF:
        return bytes([0x82]) + length.to_bytes(2, "big")
    raise TlvError(f"length {length} is too large for a card object")


def encode_tag(tag: int) -> bytes:
    if tag <= 0xFF:
        return bytes([tag])
    if tag <= 0xFFFF:
        return tag.to_bytes(2, "big")
    return tag.to_bytes(3, "big")


def tlv(tag: int, value: bytes) -> bytes:
    """Encode one TLV."""
    return encode_tag(tag) + encode_length(len(value)) + value


def _read_tag(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise TlvError("truncated tag")
    first = data[offset]
    offset += 1
    tag = first
    if first & 0x1F == 0x1F:  # multi-byte tag: continue while b8 of each byte is set
        while True:
            if offset >= len(data):
                raise TlvError("truncated multi-byte tag")
            byte = data[offset]
            offset += 1
            tag = (tag << 8) | byte
            if not byte & 0x80:
                break
            if tag > 0xFFFFFF:
                raise TlvError("tag longer than three bytes")
    return tag, offset


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise TlvError("truncated length")
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    count = first & 0x7F
    if count == 0 or count > 3:
        raise TlvError(f"unsupported length form 0x{first:02X}")
    if offset + count > len(data):
        raise TlvError("truncated length")
    return int.from_bytes(data[offset : offset + count], "big"), offset + count


def iter_tlv(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (tag, value) for each TLV in `data`; raise TlvError on any malformation."""
    offset = 0
    while offset < len(data):
        tag, offset = _read_tag(data, offset)
        length, offset = _read_length(data, offset)
        end = offset + length
        if end > len(data):
            raise TlvError(f"value of tag 0x{tag:X} runs past the end of the data")
        yield tag, data[offset:end]
        offset = end


def parse_tlv(data: bytes) -> dict[int, bytes]:
    """Parse a flat TLV list into a dict; a repeated tag is an error."""
    result: dict[int, bytes] = {}
    for tag, value in iter_tlv(data):
        if tag in result:
            raise TlvError(f"tag 0x{tag:X} appears twice")
        result[tag] = value
    return result


def unwrap(data: bytes, expected_tag: int) -> bytes:
    """Return the value of the single TLV `expected_tag` that makes up all of `data`."""
    items = list(iter_tlv(data))
    if len(items) != 1 or items[0][0] != expected_tag:
        raise TlvError(f"expected exactly one TLV with tag 0x{expected_tag:X}")
    return items[0][1]
