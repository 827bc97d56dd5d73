"""What the recipes need from a signing certificate: its key type and a signature check.

E-port cards come in two kinds: older ones sign SHA1withRSA (PKCS#1 v1.5), cards since 2022
sign SM2 with SM3 (user id 1234567812345678, signature r || s). The certificate says which:
an RSA key, or an EC key on the SM2 curve. `cryptography` parses SM2 certificates but cannot
use their keys, so the SM2 point is taken out with eport.common.sm2_cert.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from eport.clients.gateway.recipes.errors import CardProblem, RecipeError
from eport.common import sm2
from eport.common.sm2_cert import certificate_public_point
from eport.common.text import Bilingual

KeyType = Literal["rsa", "sm2"]

_PEM_BODY = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class CertificateKey:
    """The public key of a signing certificate, ready to check signatures."""

    der: bytes
    key_type: KeyType
    rsa_key: rsa.RSAPublicKey | None
    sm2_point: sm2.Point | None
    serial_hex: str  # lowercase, no leading zeros: E-port certificate numbers are the serial

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when `signature` (as the E-port client returns it) signs `data`."""
        if self.rsa_key is not None:
            try:
                self.rsa_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
            except InvalidSignature:
                return False
            return True
        assert self.sm2_point is not None
        try:
            r, s = sm2.decode_raw_signature(signature)
        except sm2.SM2Error:
            return False
        return sm2.verify_message(self.sm2_point, data, r, s)


def certificate_key(der: bytes) -> CertificateKey:
    """Parse a DER certificate; RecipeError if it is none, CardProblem if its key is neither RSA
    nor SM2 (a P-256 card, say: the E-port client has no signature form for it)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise RecipeError(
            Bilingual(f"证书无法解析: {exc}", f"the certificate cannot be parsed: {exc}"),
            Bilingual("请提供 DER 或 PEM 格式的 X.509 证书",
                      "give an X.509 certificate in DER or PEM form")) from None
    serial_hex = format(certificate.serial_number, "x")
    try:
        point = certificate_public_point(der)
    except sm2.SM2Error:
        point = None
    if point is not None:
        return CertificateKey(der, "sm2", None, point, serial_hex)
    try:
        public_key = certificate.public_key()
    except (ValueError, TypeError) as exc:  # an algorithm `cryptography` does not support
        raise _unsupported(str(exc)) from None
    if isinstance(public_key, rsa.RSAPublicKey):
        return CertificateKey(der, "rsa", public_key, None, serial_hex)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        raise _unsupported(f"EC {public_key.curve.name}")
    raise _unsupported(type(public_key).__name__)


def _unsupported(what: str) -> CardProblem:
    return CardProblem(
        Bilingual(f"不支持的证书密钥类型 ({what}): 电子口岸签名只用 RSA 或 SM2",
                  f"unsupported certificate key type ({what}): E-port signatures are RSA or SM2 "
                  "only"),
        Bilingual("请使用电子口岸 RSA 卡或 SM2 卡", "use an E-port card with an RSA or SM2 key"))


def key_type_of_certificate(der: bytes) -> KeyType:
    return certificate_key(der).key_type


def sm2_raw_signature(signature: bytes) -> bytes:
    """r || s (64 bytes) from r || s or from DER.

    The E-port client returns r || s; DER is accepted too because some SM2 middleware answers
    with it, and the XML and 179 forms both want r || s.
    """
    if len(signature) == 64:
        return signature
    try:
        r, s = sm2.decode_der_signature(signature)
    except sm2.SM2Error:
        return signature  # left for the signature check to reject with a clear message
    return sm2.encode_raw_signature(r, s)


def read_certificate(data: bytes) -> bytes:
    """DER from a certificate file: PEM, DER, or the bare base64 the E-port client hands out."""
    match = _PEM_BODY.search(data)
    if match:
        data = match.group(1)
    elif data[:1] == b"\x30":  # a DER SEQUENCE
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RecipeError(
            Bilingual("证书文件既不是 PEM 也不是 DER",
                      "the certificate file is neither PEM nor DER"),
            Bilingual("请提供 PEM 或 DER 格式的证书文件",
                      "give a certificate file in PEM or DER form")) from None
