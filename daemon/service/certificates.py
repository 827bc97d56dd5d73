"""The card's certificate: facts, validity window against the clock, chain to trust anchors.

RSA and P-256 certificates go through `cryptography`; SM2 ones (which `cryptography` parses but
cannot use) through eport.common.sm2_cert. Chain checking is one level, as E-port cards are
issued directly by the card centre's CA: the anchor whose subject is the certificate's issuer
must have signed it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eport.common import sm2
from eport.common.sm2_cert import certificate_public_point, verify_certificate_signature
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.messages import expiry_message

logger = logging.getLogger(__name__)


class KeyKind(StrEnum):
    RSA_1024 = "rsa1024"
    RSA_2048 = "rsa2048"
    EC_P256 = "p256"
    SM2 = "sm2"


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


@dataclass(frozen=True)
class CertCheck:
    state: CertState
    days_left: int
    chain: ChainState
    chain_detail: str
    message_zh: str
    message_en: str


def load_certificate(data: bytes) -> CardCertificate:
    """DER or PEM; EportError(INVALID_ARGUMENT) when it is not a usable certificate."""
    try:
        parsed = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                  else x509.load_der_x509_certificate(data))
    except ValueError:
        raise EportError(Reason.INVALID_ARGUMENT, "not an X.509 certificate") from None
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
        raise EportError(Reason.UNSUPPORTED_CARD, "certificate key is not RSA, P-256 or SM2") \
            from None


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
            except EportError:
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


def check_certificate(certificate: CardCertificate, anchors: list[CardCertificate], *,
                      now: datetime | None = None, warning_days: int = 30,
                      chain: tuple[ChainState, str] | None = None) -> CertCheck:
    moment = now or datetime.now(UTC)
    # Whole days left, counting a started day as left: 29.5 days shows as 30, as the E-port
    # client does, and 0 means "expires today".
    seconds_left = (certificate.not_after - moment).total_seconds()
    days_left = int(seconds_left // 86400) + (1 if seconds_left % 86400 else 0) \
        if seconds_left >= 0 else -int((-seconds_left) // 86400) - 1
    if moment < certificate.not_before:
        state = CertState.NOT_YET_VALID
        zh, en = "证书尚未生效", "The certificate is not yet valid"
    elif moment > certificate.not_after:
        state = CertState.EXPIRED
        zh, en = expiry_message(-1)
    elif days_left <= warning_days:
        state = CertState.EXPIRING
        zh, en = expiry_message(days_left)
    else:
        state = CertState.VALID
        zh, en = "证书有效", "The certificate is valid"
    chain_state, detail = chain if chain is not None else chain_of(certificate, anchors)
    return CertCheck(state, days_left, chain_state, detail, zh, en)


def refuse_unusable(check: CertCheck) -> None:
    """Signing with an expired or not-yet-valid certificate is refused with that reason."""
    if check.state is CertState.EXPIRED:
        raise EportError(Reason.CERT_EXPIRED)
    if check.state is CertState.NOT_YET_VALID:
        raise EportError(Reason.CERT_NOT_YET_VALID)
