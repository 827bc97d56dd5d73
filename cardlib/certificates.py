"""Card certificates as the host reads them: key kind, facts, and the one-level issued-by check.

Shared by the daemon, the data centre and the simulator (none imports another's internals).
RSA and P-256 certificates go through `cryptography`; SM2 ones (which `cryptography` parses but
cannot use) through eport.common.sm2_cert. E-port cards are issued directly by the card
centre's CA, so a chain is one level: the anchor whose subject is the certificate's issuer must
have signed it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eport.cardlib.key_kind import KeyKind as KeyKind  # re-exported: its old home
from eport.common import sm2
from eport.common.failure import EportFailure
from eport.common.sm2_cert import certificate_public_point, verify_certificate_signature

logger = logging.getLogger(__name__)


class CertificateError(EportFailure, ValueError):
    """Not a usable certificate. `reason`: INVALID_ARGUMENT (not X.509 at all) or
    UNSUPPORTED_CARD (a key that is not RSA, P-256 or SM2); the daemon maps it to its taxonomy."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = reason


class CertState(StrEnum):
    VALID = "VALID"
    EXPIRING = "EXPIRING"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"


class ChainState(StrEnum):
    TRUSTED = "TRUSTED"
    UNTRUSTED = "UNTRUSTED"
    NO_ANCHORS = "NO_ANCHORS"


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | tuple[int, int]


@dataclass(frozen=True)
class CardCertificate:
    der: bytes
    parsed: x509.Certificate
    key_kind: KeyKind
    public_key: PublicKey

    @property
    def serial_hex(self) -> str:
        return format(self.parsed.serial_number, "x")

    @property
    def not_before(self) -> datetime:
        return self.parsed.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.parsed.not_valid_after_utc

    @property
    def pem(self) -> str:
        return self.parsed.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def subject(self) -> str:
        return self.parsed.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        return self.parsed.issuer.rfc4514_string()


def load_certificate(data: bytes) -> CardCertificate:
    """DER or PEM; CertificateError when it is not a usable certificate."""
    try:
        parsed = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                  else x509.load_der_x509_certificate(data))
    except ValueError:
        raise CertificateError("INVALID_ARGUMENT", "not an X.509 certificate") from None
    der = parsed.public_bytes(serialization.Encoding.DER)
    try:
        key = parsed.public_key()
    except (UnsupportedAlgorithm, ValueError):
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        kind = KeyKind.RSA_1024 if key.key_size <= 1024 else KeyKind.RSA_2048
        return CardCertificate(der, parsed, kind, key)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return CardCertificate(der, parsed, KeyKind.EC_P256, key)
    try:
        return CardCertificate(der, parsed, KeyKind.SM2, certificate_public_point(der))
    except sm2.SM2Error:
        raise CertificateError("UNSUPPORTED_CARD",
                               "certificate key is not RSA, P-256 or SM2") from None


def load_trust_anchors(paths: tuple[Path, ...]) -> list[CardCertificate]:
    """Certificates from files (PEM bundles or DER) and directories of them."""
    anchors: list[CardCertificate] = []
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir()
                     else [path])
    for file in files:
        data = file.read_bytes()
        blocks = [b"-----BEGIN CERTIFICATE-----" + part
                  for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]] \
            if b"-----BEGIN CERTIFICATE-----" in data else [data]
        for block in blocks:
            try:
                anchors.append(load_certificate(block))
            except CertificateError:
                logger.warning("skipping %s: not a certificate", file)
    return anchors


def is_issued_by(certificate: CardCertificate, issuer: CardCertificate) -> bool:
    """True when `issuer`'s subject is the certificate's issuer and its key signed it (an SM2
    key checked by eport.common; any other as `cryptography` checks, which refuses SHA-1)."""
    if certificate.parsed.issuer != issuer.parsed.subject:
        return False
    if issuer.key_kind is KeyKind.SM2:
        assert isinstance(issuer.public_key, tuple)
        try:
            return verify_certificate_signature(certificate.der, issuer.public_key)
        except sm2.SM2Error:
            return False
    try:
        certificate.parsed.verify_directly_issued_by(issuer.parsed)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def chain_of(certificate: CardCertificate, anchors: list[CardCertificate]
             ) -> tuple[ChainState, str]:
    """Which anchor issued the certificate; the caller may cache this per certificate (an
    SM2 check is a pure-Python verification of a few milliseconds)."""
    if not anchors:
        return ChainState.NO_ANCHORS, "no trust anchors configured"
    issuer = next((a for a in anchors if is_issued_by(certificate, a)), None)
    if issuer is not None:
        return ChainState.TRUSTED, issuer.subject
    return ChainState.UNTRUSTED, (f"issuer {certificate.issuer!r} is not a configured trust "
                                  "anchor, or its signature does not match")
