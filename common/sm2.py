"""SM2 digital signatures (GM/T 0003-2012, GB/T 32918) on the recommended curve, and SM3.

Pure Python because neither `cryptography` nor the standard library can sign with SM2. It is
written for the simulated card and for verifying what real cards return; it is not hardened
against timing side channels (Python integers never are), so it must not guard real keys.

Points are affine `(x, y)` tuples at the API; scalar multiplication works in Jacobian
coordinates so that one field inversion is paid per multiplication instead of one per step.
Signing uses a precomputed table of multiples of G and verification a 4-bit window for the
public key, which keeps a signature at a few milliseconds.

The key formats are the ones OpenSSL 3 writes for `openssl genpkey -algorithm SM2`: the
SubjectPublicKeyInfo and PKCS#8 structures of ordinary EC keys (id-ecPublicKey) whose named
curve is SM2 (1.2.156.10197.1.301). The small DER encoder and strict reader below exist so that
these fixed structures and the (r, s) signature do not depend on an untyped ASN.1 library.

OpenSSL 3.0's `openssl dgst -sm3` puts an EMPTY user ID into Z unless told otherwise, so it
agrees with `sign_message`/`verify_message` (default ID 1234567812345678) only when given
`-sigopt distid:1234567812345678`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from functools import cache

from cryptography.hazmat.primitives import hashes

from eport.common.failure import EportFailure


class SM2Error(EportFailure, ValueError):
    """Malformed SM2 input: a point off the curve, a bad encoding, an out-of-range value."""

    code = "SM2_ERROR"


# --- sm2p256v1 (GM/T 0003.5-2012) -------------------------------------------------------------

P = 0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFF_00000000_FFFFFFFF_FFFFFFFF
A = 0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFF_00000000_FFFFFFFF_FFFFFFFC
B = 0x28E9FA9E_9D9F5E34_4D5A9E4B_CF6509A7_F39789F5_15AB8F92_DDBCBD41_4D940E93
N = 0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_7203DF6B_21C6052B_53BBF409_39D54123
GX = 0x32C4AE2C_1F198119_5F990446_6A39C994_8FE30BBF_F2660BE1_715A4589_334C74C7
GY = 0xBC3736A2_F4F6779C_59BDCEE3_6B692153_D0A9877C_C62A4740_02DF32E5_2139F0A0
G: tuple[int, int] = (GX, GY)

CURVE_OID = "1.2.156.10197.1.301"
SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"

DEFAULT_USER_ID = b"1234567812345678"

_COORD_BYTES = 32
_WINDOW = 4
_WINDOWS = 256 // _WINDOW
_WINDOW_MASK = (1 << _WINDOW) - 1

Point = tuple[int, int]
_Jacobian = tuple[int, int, int]  # (X, Y, Z) stands for (X/Z², Y/Z³); Z == 0 is infinity
_INFINITY: _Jacobian = (1, 1, 0)


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


# --- curve arithmetic -------------------------------------------------------------------------


def is_on_curve(q: Point) -> bool:
    x, y = q
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _double(pt: _Jacobian) -> _Jacobian:
    x1, y1, z1 = pt
    if z1 == 0 or y1 == 0:
        return _INFINITY
    # a = -3 lets 3X² + aZ⁴ factor as 3(X - Z²)(X + Z²), saving two multiplications.
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add(p1: _Jacobian, p2: _Jacobian) -> _Jacobian:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    if h == 0:
        # The formulas divide by zero here: equal x means either the same point or P + (-P).
        return _double(p1) if r == 0 else _INFINITY
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    z3 = h * z1 * z2 % P
    return x3, y3, z3


def _add_affine(p1: _Jacobian, q: Point) -> _Jacobian:
    """p1 + q where q has Z = 1, which skips the Z₂ products of the general addition."""
    x1, y1, z1 = p1
    x2, y2 = q
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - x1) % P
    r = (s2 - y1) % P
    if h == 0:
        return _double(p1) if r == 0 else _INFINITY
    hh = h * h % P
    hhh = h * hh % P
    v = x1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - y1 * hhh) % P
    z3 = h * z1 % P
    return x3, y3, z3


def _to_affine(pt: _Jacobian) -> Point | None:
    x, y, z = pt
    if z == 0:
        return None
    z_inv = pow(z, -1, P)
    z_inv2 = z_inv * z_inv % P
    return x * z_inv2 % P, y * z_inv2 * z_inv % P


@cache
def _g_table() -> tuple[tuple[Point, ...], ...]:
    """table[i][j - 1] = j·16ⁱ·G, so k·G needs only one addition per 4-bit digit of k."""
    table: list[tuple[Point, ...]] = []
    base: _Jacobian = (GX, GY, 1)
    for _ in range(_WINDOWS):
        row: list[Point] = []
        acc = base
        for _j in range(_WINDOW_MASK):
            affine = _to_affine(acc)
            assert affine is not None  # multiples below n of a prime-order point never vanish
            row.append(affine)
            acc = _add(acc, base)
        table.append(tuple(row))
        base = acc  # 16·base, reached by the last addition of the row
    return tuple(table)


def _mul_g(k: int) -> _Jacobian:
    table = _g_table()
    acc = _INFINITY
    for i in range(_WINDOWS):
        digit = (k >> (_WINDOW * i)) & _WINDOW_MASK
        if digit:
            acc = _add_affine(acc, table[i][digit - 1])
    return acc


def _mul_point(k: int, q: Point) -> _Jacobian:
    base: _Jacobian = (q[0], q[1], 1)
    multiples = [_INFINITY, base]
    for _ in range(2, 1 << _WINDOW):
        multiples.append(_add(multiples[-1], base))
    acc = _INFINITY
    for shift in range(_WINDOW * (_WINDOWS - 1), -1, -_WINDOW):
        for _ in range(_WINDOW):
            acc = _double(acc)
        digit = (k >> shift) & _WINDOW_MASK
        if digit:
            acc = _add(acc, multiples[digit])
    return acc


def scalar_mult(k: int, q: Point) -> Point | None:
    """k·q for a point on the curve (None for the point at infinity)."""
    return _to_affine(_mul_point(k % N, q))


# --- keys ---------------------------------------------------------------------------------------


def generate_private_key() -> int:
    # d = n - 1 is excluded because signing divides by (1 + d) mod n.
    return 1 + secrets.randbelow(N - 2)


def _check_private_key(d: int) -> None:
    if not 1 <= d <= N - 2:
        raise SM2Error("an SM2 private key must be in [1, n - 2]")


def public_point(d: int) -> Point:
    _check_private_key(d)
    point = _to_affine(_mul_g(d))
    assert point is not None
    return point


def encode_point(q: Point) -> bytes:
    if not is_on_curve(q):
        raise SM2Error("the point is not on the SM2 curve")
    return b"\x04" + q[0].to_bytes(_COORD_BYTES, "big") + q[1].to_bytes(_COORD_BYTES, "big")


def decode_point(data: bytes) -> Point:
    """Parse an uncompressed (04) or compressed (02/03) point and check that it is on the curve.

    The curve's cofactor is 1, so being on the curve also puts the point in the group of order n.
    """
    if len(data) == 1 + 2 * _COORD_BYTES and data[0] == 0x04:
        x = int.from_bytes(data[1 : 1 + _COORD_BYTES], "big")
        y = int.from_bytes(data[1 + _COORD_BYTES :], "big")
    elif len(data) == 1 + _COORD_BYTES and data[0] in (0x02, 0x03):
        x = int.from_bytes(data[1:], "big")
        if x >= P:
            raise SM2Error("the point's x coordinate is not below p")
        # p ≡ 3 (mod 4), so a square root is a single exponentiation.
        rhs = (x * x * x + A * x + B) % P
        y = pow(rhs, (P + 1) // 4, P)
        if y * y % P != rhs:
            raise SM2Error("no point on the SM2 curve has this x coordinate")
        if (y & 1) != (data[0] & 1):
            y = P - y
    else:
        raise SM2Error(f"not an encoded SM2 point ({len(data)} bytes)")
    if not is_on_curve((x, y)):
        raise SM2Error("the point is not on the SM2 curve")
    return x, y


# --- signatures -------------------------------------------------------------------------------


def z_value(q: Point, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)."""
    if len(user_id) * 8 > 0xFFFF:
        raise SM2Error("the SM2 user ID must be shorter than 8192 bytes")
    if not is_on_curve(q):
        raise SM2Error("the public key is not on the SM2 curve")
    parts = [(len(user_id) * 8).to_bytes(2, "big"), user_id]
    parts += [v.to_bytes(_COORD_BYTES, "big") for v in (A, B, GX, GY, q[0], q[1])]
    return sm3(b"".join(parts))


def message_digest(q: Point, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """e = SM3(Z_A || M): what an SM2 card is given to sign."""
    return sm3(z_value(q, user_id) + message)


def _digest_int(e: bytes) -> int:
    if len(e) != 32:
        raise SM2Error(f"an SM2 digest is the 32-byte SM3 value, not {len(e)} bytes")
    return int.from_bytes(e, "big")


def _sign_with_nonce(d: int, e_int: int, k: int) -> tuple[int, int] | None:
    """One signing attempt; None when k yields a degenerate (r, s) and must be redrawn."""
    affine = _to_affine(_mul_g(k))
    assert affine is not None  # 1 <= k < n
    r = (e_int + affine[0]) % N
    if r == 0 or r + k == N:
        return None
    s = pow(1 + d, -1, N) * (k - r * d) % N
    if s == 0:
        return None
    return r, s


def sign_digest(d: int, e: bytes) -> tuple[int, int]:
    """Sign e = SM3(Z_A || M) with a fresh random k (GM/T 0003.2 §6.1, steps A3-A7)."""
    _check_private_key(d)
    e_int = _digest_int(e)
    while True:
        k = 1 + secrets.randbelow(N - 1)
        signature = _sign_with_nonce(d, e_int, k)
        if signature is not None:
            return signature


def verify_digest(q: Point, e: bytes, r: int, s: int) -> bool:
    """Check (r, s) over e = SM3(Z_A || M) (GM/T 0003.2 §7.1, steps B1-B7)."""
    e_int = _digest_int(e)
    if not (1 <= r < N and 1 <= s < N):
        return False
    if not is_on_curve(q):
        return False
    t = (r + s) % N
    if t == 0:
        return False
    total = _to_affine(_add(_mul_g(s), _mul_point(t, q)))
    if total is None:
        return False
    return (e_int + total[0]) % N == r


def sign_message(d: int, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> tuple[int, int]:
    return sign_digest(d, message_digest(public_point(d), message, user_id))


def verify_message(
    q: Point, message: bytes, r: int, s: int, user_id: bytes = DEFAULT_USER_ID
) -> bool:
    if not is_on_curve(q):
        return False
    return verify_digest(q, message_digest(q, message, user_id), r, s)


# --- DER ----------------------------------------------------------------------------------------

_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_SEQUENCE = 0x30
_TAG_CONTEXT_0 = 0xA0
_TAG_CONTEXT_1 = 0xA1


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        header = bytes([tag, length])
    else:
        size = (length.bit_length() + 7) // 8
        header = bytes([tag, 0x80 | size]) + length.to_bytes(size, "big")
    return header + content


def _der_integer(value: int) -> bytes:
    if value < 0:
        raise SM2Error("only non-negative integers are encoded here")
    # The extra byte keeps a set top bit from reading as a negative number.
    return _der(_TAG_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _der(_TAG_OID, bytes(out))


class _DerReader:
    """Walks DER strictly: definite, minimal lengths and nothing left over at the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def peek_tag(self) -> int | None:
        return None if self.at_end() else self._data[self._pos]

    def read(self, tag: int) -> bytes:
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            raise SM2Error("truncated DER")
        if data[pos] != tag:
            raise SM2Error(f"expected DER tag {tag:#04x}, found {data[pos]:#04x}")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            size = first & 0x7F
            if size == 0 or size > 4 or pos + size > len(data):
                raise SM2Error("bad DER length")
            length = int.from_bytes(data[pos : pos + size], "big")
            if length < 0x80 or data[pos] == 0:
                raise SM2Error("DER length is not minimally encoded")
            pos += size
        if pos + length > len(data):
            raise SM2Error("truncated DER")
        self._pos = pos + length
        return data[pos : pos + length]

    def read_integer(self) -> int:
        content = self.read(_TAG_INTEGER)
        if not content:
            raise SM2Error("empty DER INTEGER")
        if len(content) > 1 and (
            (content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
        ):
            raise SM2Error("DER INTEGER is not minimally encoded")
        return int.from_bytes(content, "big", signed=True)

    def read_oid(self) -> str:
        content = self.read(_TAG_OID)
        if not content or content[-1] & 0x80:
            raise SM2Error("bad DER OBJECT IDENTIFIER")
        arcs: list[int] = []
        value = 0
        arc_start = True
        for byte in content:
            if arc_start and byte == 0x80:
                raise SM2Error("DER OBJECT IDENTIFIER arc is not minimally encoded")
            value = (value << 7) | (byte & 0x7F)
            arc_start = not byte & 0x80
            if arc_start:
                arcs.append(value)
                value = 0
        first = arcs[0]
        head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
        return ".".join(str(arc) for arc in head + arcs[1:])

    def finish(self) -> None:
        if not self.at_end():
            raise SM2Error("trailing bytes after DER value")


def _check_signature_values(r: int, s: int) -> None:
    if not (1 <= r < N and 1 <= s < N):
        raise SM2Error("SM2 signature values must be in [1, n - 1]")


def encode_der_signature(r: int, s: int) -> bytes:
    """SM2Signature ::= SEQUENCE { r INTEGER, s INTEGER } (GM/T 0009)."""
    _check_signature_values(r, s)
    return _der(_TAG_SEQUENCE, _der_integer(r) + _der_integer(s))


def decode_der_signature(data: bytes) -> tuple[int, int]:
    """Parse a DER (r, s), rejecting BER leniencies, trailing bytes and values outside [1, n-1]."""
    outer = _DerReader(data)
    inner = _DerReader(outer.read(_TAG_SEQUENCE))
    outer.finish()
    r = inner.read_integer()
    s = inner.read_integer()
    inner.finish()
    _check_signature_values(r, s)
    return r, s


def encode_raw_signature(r: int, s: int) -> bytes:
    """r || s, 32 bytes each: the form many Chinese card APIs (GM/T 0016 SKF) exchange."""
    _check_signature_values(r, s)
    return r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")


def decode_raw_signature(data: bytes) -> tuple[int, int]:
    if len(data) != 2 * _COORD_BYTES:
        raise SM2Error(f"a raw SM2 signature is 64 bytes, not {len(data)}")
    r = int.from_bytes(data[:_COORD_BYTES], "big")
    s = int.from_bytes(data[_COORD_BYTES:], "big")
    _check_signature_values(r, s)
    return r, s


# --- key files ----------------------------------------------------------------------------------

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"".join(
        [
            f"-----BEGIN {label}-----\n".encode(),
            *(line + b"\n" for line in lines),
            f"-----END {label}-----\n".encode(),
        ]
    )


def _unpem(data: bytes, labels: tuple[str, ...]) -> tuple[str, bytes]:
    """The first PEM block with one of `labels`.

    Other blocks are skipped because `openssl ecparam -name SM2 -genkey` puts an
    "SM2 PARAMETERS" block before the key.
    """
    found: list[str] = []
    for match in _PEM_RE.finditer(data):
        label = match.group(1).decode("ascii")
        if label not in labels:
            found.append(label)
            continue
        body = match.group(2)
        if b":" in body:
            raise SM2Error(f"encrypted or annotated PEM ({label}) is not supported")
        try:
            return label, base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error as exc:
            raise SM2Error(f"bad base64 in PEM {label}: {exc}") from None
    wanted = " or ".join(labels)
    raise SM2Error(
        f"no {wanted} PEM block found" + (f" (found {', '.join(found)})" if found else "")
    )


def _algorithm_identifier() -> bytes:
    return _der(_TAG_SEQUENCE, _der_oid(EC_PUBLIC_KEY_OID) + _der_oid(CURVE_OID))


def public_key_der(q: Point) -> bytes:
    """SubjectPublicKeyInfo: id-ecPublicKey with the SM2 named curve, as OpenSSL writes it."""
    bit_string = _der(_TAG_BIT_STRING, b"\x00" + encode_point(q))
    return _der(_TAG_SEQUENCE, _algorithm_identifier() + bit_string)


def public_key_pem(q: Point) -> bytes:
    return _pem("PUBLIC KEY", public_key_der(q))


def _read_ec_algorithm(reader: _DerReader) -> None:
    algorithm = _DerReader(reader.read(_TAG_SEQUENCE))
    algorithm_oid = algorithm.read_oid()
    # Some Chinese toolkits label the key with the SM2 OID itself instead of id-ecPublicKey.
    if algorithm_oid == CURVE_OID and algorithm.at_end():
        return
    if algorithm_oid != EC_PUBLIC_KEY_OID:
        raise SM2Error(f"not an EC key (algorithm {algorithm_oid})")
    curve = algorithm.read_oid()
    if curve != CURVE_OID:
        raise SM2Error(f"not an SM2 key (curve {curve})")
    algorithm.finish()


def load_public_key_der(der: bytes) -> Point:
    outer = _DerReader(der)
    spki = _DerReader(outer.read(_TAG_SEQUENCE))
    outer.finish()
    _read_ec_algorithm(spki)
    bits = spki.read(_TAG_BIT_STRING)
    spki.finish()
    if not bits or bits[0] != 0:
        raise SM2Error("the public key BIT STRING has unused bits")
    return decode_point(bits[1:])


def load_public_key_pem(pem: bytes) -> Point:
    _label, der = _unpem(pem, ("PUBLIC KEY",))
    return load_public_key_der(der)


def private_key_der(d: int) -> bytes:
    """PKCS#8 PrivateKeyInfo wrapping a SEC 1 ECPrivateKey, like `openssl genpkey` writes."""
    _check_private_key(d)
    public_bits = _der(_TAG_BIT_STRING, b"\x00" + encode_point(public_point(d)))
    ec_private_key = _der(
        _TAG_SEQUENCE,
        _der_integer(1)
        + _der(_TAG_OCTET_STRING, d.to_bytes(_COORD_BYTES, "big"))
        + _der(_TAG_CONTEXT_1, public_bits),
    )
    return _der(
        _TAG_SEQUENCE,
        _der_integer(0) + _algorithm_identifier() + _der(_TAG_OCTET_STRING, ec_private_key),
    )


def private_key_pem(d: int) -> bytes:
    return _pem("PRIVATE KEY", private_key_der(d))


def _parse_ec_private_key(der: bytes, *, curve_required: bool) -> int:
    outer = _DerReader(der)
    key = _DerReader(outer.read(_TAG_SEQUENCE))
    outer.finish()
    if key.read_integer() != 1:
        raise SM2Error("unsupported ECPrivateKey version")
    d = int.from_bytes(key.read(_TAG_OCTET_STRING), "big")
    seen_curve = False
    if key.peek_tag() == _TAG_CONTEXT_0:
        params = _DerReader(key.read(_TAG_CONTEXT_0))
        curve = params.read_oid()
        params.finish()
        if curve != CURVE_OID:
            raise SM2Error(f"not an SM2 key (curve {curve})")
        seen_curve = True
    public: Point | None = None
    if key.peek_tag() == _TAG_CONTEXT_1:
        wrapper = _DerReader(key.read(_TAG_CONTEXT_1))
        bits = wrapper.read(_TAG_BIT_STRING)
        wrapper.finish()
        if not bits or bits[0] != 0:
            raise SM2Error("the public key BIT STRING has unused bits")
        public = decode_point(bits[1:])
    key.finish()
    if curve_required and not seen_curve:
        raise SM2Error("the EC PRIVATE KEY does not name its curve")
    _check_private_key(d)
    if public is not None and public != public_point(d):
        raise SM2Error("the stored public key does not match the private key")
    return d


def load_private_key_der(der: bytes) -> int:
    """Accept PKCS#8 PrivateKeyInfo (version 0 or 1) holding an SM2 ECPrivateKey."""
    outer = _DerReader(der)
    info = _DerReader(outer.read(_TAG_SEQUENCE))
    outer.finish()
    if info.read_integer() not in (0, 1):
        raise SM2Error("unsupported PKCS#8 version")
    _read_ec_algorithm(info)
    inner = info.read(_TAG_OCTET_STRING)
    # OneAsymmetricKey (version 1) may append attributes and a public key; the inner key
    # already carries the public point, so those are not needed.
    return _parse_ec_private_key(inner, curve_required=False)


def load_private_key_pem(pem: bytes) -> int:
    """Read an unencrypted "PRIVATE KEY" (PKCS#8) or "EC PRIVATE KEY" (SEC 1) PEM."""
    label, der = _unpem(pem, ("PRIVATE KEY", "EC PRIVATE KEY"))
    if label == "PRIVATE KEY":
        return load_private_key_der(der)
    return _parse_ec_private_key(der, curve_required=True)
