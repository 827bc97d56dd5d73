"""Reading the cus-sec_ methods' arguments: base64, digests, certificates. Pure functions that
raise the 51500 argument error with the argument's name, so a bad argument never reaches eportd
or the card."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from eport.cardlib.signing_algorithms import spec
from eport.clients.gateway.daemon_access import KeyKind, signing_algorithm
from eport.clients.gateway.errors import GatewayError, bad_arguments
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
# X.509 certificates of E-port cards are about 1 to 2 KB; a "certificate" many times that is not
# one, and is refused before any parsing.
MAX_CERTIFICATE_BYTES = 64 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_base64(text: str, name: str) -> bytes:
    """Standard base64; line breaks and spaces (as in PEM bodies) are ignored."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_arguments(Bilingual(f"参数 {name} 不是合法的 base64",
                                      f"argument {name} is not base64")) from None


def digest_arg(text: str, key: KeyKind) -> bytes:
    """A digest given as hex or base64; its length must be what the card's algorithm hashes to."""
    algorithm = signing_algorithm(key)
    expected = 32 if algorithm is None else spec(algorithm).digest_length
    stripped = text.strip()
    if len(stripped) == 2 * expected and _HEX.match(stripped):
        digest = bytes.fromhex(stripped)
    else:
        digest = decode_base64(stripped, "inData")
    if len(digest) != expected:
        raise bad_arguments(Bilingual(f"摘要长度应为 {expected} 字节 (十六进制或 base64), 实际 "
                                      f"{len(digest)} 字节",
                                      f"the digest must be {expected} bytes (hex or base64) for "
                                      f"this card, got {len(digest)}"))
    return digest


def _not_a_certificate(name: str) -> GatewayError:
    return bad_arguments(Bilingual(f"{name} 不是可用的 X.509 证书 (应为 base64 编码的 DER, 可带 "
                                   "PEM 头)",
                                   f"{name} is not a usable X.509 certificate (base64 DER, with "
                                   "or without the PEM header)"))


def certificate_arg(text: str, name: str) -> bytes:
    """A certificate as the page library passes one: base64 of the DER, with or without the PEM
    header and line breaks. Returns the DER, checked to parse as a certificate."""
    if len(text) > 2 * MAX_CERTIFICATE_BYTES:
        raise _not_a_certificate(name)
    raw = text.strip().encode("ascii", "replace")
    if asn1_pem.detect(raw):
        try:
            _, _, der = asn1_pem.unarmor(raw)
        except ValueError:
            raise _not_a_certificate(name) from None
        der = bytes(der)
    else:
        der = decode_base64(text, name)
    if not der or len(der) > MAX_CERTIFICATE_BYTES:
        raise _not_a_certificate(name)
    try:
        # asn1crypto parses lazily: reading the key and the validity makes it parse them.
        tbs = asn1_x509.Certificate.load(der, strict=True)["tbs_certificate"]
        _ = tbs["subject_public_key_info"].native, tbs["validity"].native
    except (ValueError, TypeError, KeyError):
        raise _not_a_certificate(name) from None
    return der


def key_of_certificate(der: bytes, name: str = "certDataPEM") -> KeyKind:
    try:
        public_key = asn1_x509.Certificate.load(der).public_key
        algorithm = public_key.algorithm
        if algorithm == "rsa":
            return pb.RSA_1024 if public_key.bit_size <= 1024 else pb.RSA_2048
        if algorithm == "ec":
            curve = public_key["algorithm"]["parameters"].chosen.native
            return pb.EC_P256 if curve in ("secp256r1", "1.2.840.10045.3.1.7") else pb.SM2
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    raise _not_a_certificate(name)


@dataclass(frozen=True)
class Validity:
    not_before: datetime
    not_after: datetime


def certificate_validity(der: bytes, name: str = "cert") -> Validity:
    try:
        validity = asn1_x509.Certificate.load(der)["tbs_certificate"]["validity"]
        not_before = validity["not_before"].native
        not_after = validity["not_after"].native
    except (ValueError, TypeError, KeyError):
        raise _not_a_certificate(name) from None
    if not isinstance(not_before, datetime) or not isinstance(not_after, datetime):
        raise _not_a_certificate(name)
    return Validity(not_before, not_after)
