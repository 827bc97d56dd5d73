"""SM2 public-key encryption (GM/T 0003.4-2012, GB/T 32918.4) and its two ciphertext forms.

Encryption: C1 = k·G, (x2, y2) = k·P_B, t = KDF(x2 || y2, len(M)), C2 = M xor t and
C3 = SM3(x2 || M || y2). Decryption needs only one private-key step, (x2, y2) = d_B·C1, which
is what a card computes; `finish_decryption` does the rest on the host (KDF, C2, the C3 check),
so that the card never has to hold the message.

Two encodings of (C1, C3, C2) are read here:
- the GM/T 0009 ASN.1 form that OpenSSL 3 writes for `openssl pkeyutl -encrypt`:
  SEQUENCE { XCoordinate INTEGER, YCoordinate INTEGER, HASH OCTET STRING (32),
  CipherText OCTET STRING };
- the raw concatenation C1 || C3 || C2 of GM/T 0003.4-2012 with C1 as 04 || x || y, which many
  Chinese toolkits exchange.
The older C1 || C2 || C3 order of the 2010 draft is not accepted: it cannot be told apart from
C1 || C3 || C2 by its bytes, and guessing would turn a damaged ciphertext into a wrong message.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from eport.common import sm2

# The strict DER encoder and reader are shared with the signature and key code of sm2.
from eport.common.sm2 import _der, _der_integer, _DerReader

_COORD_BYTES = 32
_HASH_BYTES = 32
_POINT_BYTES = 1 + 2 * _COORD_BYTES
_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_SEQUENCE = 0x30

# A bound on what is encrypted or decrypted in one piece: envelopes carry keys and short
# secrets, and the pure-Python KDF costs about a millisecond per kilobyte.
MAX_PLAINTEXT_BYTES = 1 << 20


class SM2DecryptionError(sm2.SM2Error):
    """The ciphertext is well formed but does not decrypt: C3 does not match (another key, or
    damaged), or the key stream is all zero."""


@dataclass(frozen=True)
class SM2Ciphertext:
    c1: sm2.Point  # k·G, checked to be on the curve
    c3: bytes  # SM3(x2 || M || y2)
    c2: bytes  # M xor KDF(x2 || y2)


def kdf(z: bytes, length: int) -> bytes:
    """The GM/T 0003.4 §5.4.3 key derivation: SM3(Z || ct) for ct = 1, 2, ... (32-bit)."""
    blocks = []
    for counter in range(1, (length + _HASH_BYTES - 1) // _HASH_BYTES + 1):
        blocks.append(sm2.sm3(z + counter.to_bytes(4, "big")))
    return b"".join(blocks)[:length]


def _check_plaintext_length(length: int) -> None:
    if length == 0:
        raise sm2.SM2Error("SM2 cannot encrypt an empty message (its key stream has no bytes)")
    if length > MAX_PLAINTEXT_BYTES:
        raise sm2.SM2Error(
            f"the message is {length} bytes; at most {MAX_PLAINTEXT_BYTES} are encrypted "
            "in one piece"
        )


def _coordinates(point: sm2.Point) -> tuple[bytes, bytes]:
    return point[0].to_bytes(_COORD_BYTES, "big"), point[1].to_bytes(_COORD_BYTES, "big")


def encrypt(public_key: sm2.Point, plaintext: bytes) -> SM2Ciphertext:
    """Encrypt to an SM2 public key with a fresh random k (GM/T 0003.4 §6.1, steps A1-A8)."""
    _check_plaintext_length(len(plaintext))
    if not sm2.is_on_curve(public_key):
        raise sm2.SM2Error("the public key is not on the SM2 curve")
    while True:
        k = 1 + secrets.randbelow(sm2.N - 1)
        c1 = sm2.scalar_mult(k, sm2.G)
        shared = sm2.scalar_mult(k, public_key)
        # The cofactor is 1, so S = h·P_B is P_B itself (on the curve, not infinity): step A3
        # reduces to the check above. k·P_B is never infinity for 1 <= k < n.
        assert c1 is not None and shared is not None
        x2, y2 = _coordinates(shared)
        stream = kdf(x2 + y2, len(plaintext))
        if any(stream):  # step A5: an all-zero key stream means drawing k again
            break
    c2 = bytes(m ^ t for m, t in zip(plaintext, stream, strict=True))
    return SM2Ciphertext(c1=c1, c3=sm2.sm3(x2 + plaintext + y2), c2=c2)


def shared_point(private_key: int, ciphertext: SM2Ciphertext) -> sm2.Point:
    """d_B·C1: the step of decryption that needs the private key (what the card computes)."""
    point = sm2.scalar_mult(private_key, ciphertext.c1)
    assert point is not None  # C1 is on the curve and the group has prime order n > d_B
    return point


def finish_decryption(ciphertext: SM2Ciphertext, shared: sm2.Point) -> bytes:
    """Steps B4-B7 of GM/T 0003.4 §7.1 given (x2, y2) = d_B·C1 from the card."""
    if not sm2.is_on_curve(shared):
        raise sm2.SM2Error("the card's d·C1 is not on the SM2 curve")
    x2, y2 = _coordinates(shared)
    stream = kdf(x2 + y2, len(ciphertext.c2))
    if not any(stream):
        raise SM2DecryptionError("the SM2 key stream is all zero")
    plaintext = bytes(c ^ t for c, t in zip(ciphertext.c2, stream, strict=True))
    if not hmac.compare_digest(sm2.sm3(x2 + plaintext + y2), ciphertext.c3):
        raise SM2DecryptionError("the SM2 ciphertext does not decrypt with this key (C3 differs)")
    return plaintext


def decrypt(private_key: int, ciphertext: SM2Ciphertext) -> bytes:
    """The whole decryption with a private key in memory (the simulator's and tests' side)."""
    return finish_decryption(ciphertext, shared_point(private_key, ciphertext))


# --- encodings ----------------------------------------------------------------------------------


def _checked(c1: sm2.Point, c3: bytes, c2: bytes) -> SM2Ciphertext:
    if len(c3) != _HASH_BYTES:
        raise sm2.SM2Error(f"the SM2 hash C3 is 32 bytes, not {len(c3)}")
    _check_plaintext_length(len(c2))
    if not sm2.is_on_curve(c1):
        raise sm2.SM2Error("the SM2 ciphertext's point C1 is not on the curve")
    return SM2Ciphertext(c1=c1, c3=c3, c2=c2)


def encode_asn1(ciphertext: SM2Ciphertext) -> bytes:
    """The GM/T 0009 SM2Cipher SEQUENCE, byte for byte as OpenSSL 3 writes it."""
    x, y = ciphertext.c1
    return _der(
        _TAG_SEQUENCE,
        _der_integer(x)
        + _der_integer(y)
        + _der(_TAG_OCTET_STRING, ciphertext.c3)
        + _der(_TAG_OCTET_STRING, ciphertext.c2),
    )


def decode_asn1(data: bytes) -> SM2Ciphertext:
    outer = _DerReader(data)
    inner = _DerReader(outer.read(_TAG_SEQUENCE))
    outer.finish()
    x = inner.read_integer()
    y = inner.read_integer()
    c3 = inner.read(_TAG_OCTET_STRING)
    c2 = inner.read(_TAG_OCTET_STRING)
    inner.finish()
    if x < 0 or y < 0:
        raise sm2.SM2Error("the SM2 ciphertext's coordinates are negative")
    return _checked((x, y), c3, c2)


def encode_c1c3c2(ciphertext: SM2Ciphertext) -> bytes:
    """04 || x1 || y1 || C3 || C2 (GM/T 0003.4-2012 order)."""
    return sm2.encode_point(ciphertext.c1) + ciphertext.c3 + ciphertext.c2


def decode_c1c3c2(data: bytes) -> SM2Ciphertext:
    if len(data) <= _POINT_BYTES + _HASH_BYTES or data[0] != 0x04:
        raise sm2.SM2Error(
            "a raw SM2 ciphertext is 04 || x || y || C3 (32 bytes) || C2 (at least 1 byte)"
        )
    x = int.from_bytes(data[1 : 1 + _COORD_BYTES], "big")
    y = int.from_bytes(data[1 + _COORD_BYTES : _POINT_BYTES], "big")
    c3 = data[_POINT_BYTES : _POINT_BYTES + _HASH_BYTES]
    return _checked((x, y), c3, data[_POINT_BYTES + _HASH_BYTES :])


def looks_like_asn1(data: bytes) -> bool:
    """A DER SEQUENCE starts with 30; a raw ciphertext always starts with 04 (C1's prefix)."""
    return data[:1] == b"\x30"
