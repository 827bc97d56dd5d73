"""The trust directory: which CAs the data centre trusts, and what a path to them must satisfy.

`--trust-anchor` names PEM bundles, DER files or directories of them. Every certificate read
must be a CA (basicConstraints CA:TRUE and, when keyUsage is present, keyCertSign): one that is
not stops the server at load time with a message naming the file. Letting it through would
make its holder a CA (a card certificate dropped into the directory could issue certificates
for any enterprise and role), and ignoring it quietly would hide a mistake the operator made on
purpose, at the one moment the operator is watching. A CA that is expired or not yet valid is
loaded with a warning instead: validity changes with time (an anchor can expire while the
server runs, and a CA roll-over keeps the old certificate beside the new one for a while), so
requests chained to it are refused one by one with ISSUER_NOT_VALID while the other CAs' cards
keep working.

A configured CA issued by another configured CA is an intermediate: its trust comes from that
issuer, whose constraints (path length, validity, revocation) then apply to it. The others are
anchors in their own right. A card certificate must be issued directly by a configured CA; the
path above it is found among the configured ones.

Files named *.crl (PEM or DER, in a trust directory or given directly) are revocation lists,
read by eport.datacenter.revocation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from eport.cardlib.certificates import (
    CardCertificate,
    CertificateError,
    KeyKind,
    is_issued_by,
    load_certificate,
)
from eport.common.failure import ConfigFailure
from eport.common.text import Bilingual

logger = logging.getLogger(__name__)

CRL_SUFFIX = ".crl"
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
# Deeper hierarchies than this are not E-port's (its cards are issued by the card CA itself);
# the bound also ends any loop of cross-certified CAs.
MAX_PATH_DEPTH = 8

# Signature algorithms too weak for a certificate path: MD2/MD5 never; SHA-1 only on the path
# of an RSA-1024 card (the old card generation was issued with SHA-1, newer ones are not).
_MD_OIDS = frozenset({"1.2.840.113549.1.1.2", "1.2.840.113549.1.1.4"})
_SHA1_RSA = "1.2.840.113549.1.1.5"
_SHA1_ECDSA = "1.2.840.10045.4.1"
_SHA1_OIDS = frozenset({_SHA1_RSA, _SHA1_ECDSA, "1.2.840.10040.4.3", "1.3.14.3.2.29"})


class TrustConfigError(ConfigFailure):
    """The trust directory cannot be used as it is; the message names the file."""

    code = "TRUST_CONFIG"


@dataclass(eq=False)
class TrustedCA:
    """One CA certificate of the trust directory."""

    certificate: CardCertificate
    source: Path
    # Why it cannot issue certificates ("" when it can); only set for CAs built by hand (the
    # loader refuses such files), kept so a request chained to one is refused with its reason.
    not_a_ca: str = ""
    parent: TrustedCA | None = None

    @property
    def path_length(self) -> int | None:
        constraints = _basic_constraints(self.certificate.parsed)
        return constraints.path_length if constraints is not None else None

    @property
    def subject(self) -> str:
        return self.certificate.subject

    def valid_at(self, moment: datetime) -> bool:
        return self.certificate.not_before <= moment <= self.certificate.not_after

    def may_sign_crls(self) -> bool:
        usage = _key_usage(self.certificate.parsed)
        return usage is None or usage.crl_sign


@dataclass
class TrustConfig:
    cas: list[TrustedCA]
    crl_sources: list[Path] = field(default_factory=list)

    def anchors(self) -> list[CardCertificate]:
        return [ca.certificate for ca in self.cas]


def _basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(certificate: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def why_not_a_ca(certificate: x509.Certificate) -> str:
    """"" for a CA certificate (CA:TRUE and, when keyUsage is present, keyCertSign, RFC 5280
    §4.2.1.3 and §4.2.1.9); otherwise what it lacks, in English."""
    try:
        constraints = _basic_constraints(certificate)
        usage = _key_usage(certificate)
    except ValueError:
        return "its extensions cannot be parsed"
    if constraints is None:
        return "it has no basicConstraints extension (an end-entity certificate)"
    if not constraints.ca:
        return "its basicConstraints say CA:FALSE (an end-entity certificate)"
    if usage is not None and not usage.key_cert_sign:
        return "its keyUsage does not allow keyCertSign"
    return ""


def issued_by(certificate: CardCertificate, issuer: CardCertificate) -> bool:
    """True when `issuer`'s subject is the certificate's issuer and its key signed it. Beyond
    eportd's check: an issuer with neither an SM2, RSA nor EC key is refused, and SHA-1
    signatures are checked here (the path check then decides whether SHA-1 is acceptable)."""
    if issuer.key_kind is KeyKind.SM2:
        return is_issued_by(certificate, issuer)
    key = issuer.public_key
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    parsed = certificate.parsed
    if signature_strength(parsed) != "sha1":
        return is_issued_by(certificate, issuer)
    if parsed.issuer != issuer.parsed.subject:
        return False
    # `cryptography` no longer checks SHA-1 certificate signatures itself; old RSA-1024 cards
    # have them.
    oid = parsed.signature_algorithm_oid.dotted_string
    try:
        if isinstance(key, rsa.RSAPublicKey) and oid == _SHA1_RSA:
            key.verify(parsed.signature, parsed.tbs_certificate_bytes, padding.PKCS1v15(),
                       hashes.SHA1())
        elif isinstance(key, ec.EllipticCurvePublicKey) and oid == _SHA1_ECDSA:
            key.verify(parsed.signature, parsed.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def signature_strength(certificate: x509.Certificate) -> str:
    """"md" (never acceptable), "sha1" (only on an RSA-1024 card's path) or "ok"."""
    oid = certificate.signature_algorithm_oid.dotted_string
    if oid in _MD_OIDS:
        return "md"
    if oid in _SHA1_OIDS:
        return "sha1"
    return "ok"


def is_self_issued(certificate: CardCertificate) -> bool:
    return certificate.parsed.issuer == certificate.parsed.subject


def link_parents(cas: list[TrustedCA]) -> None:
    """Set each CA's parent: the other configured CA that issued it, when there is one (a
    self-issued certificate has none: it is a root)."""
    for ca in cas:
        ca.parent = None
        if is_self_issued(ca.certificate):
            continue
        ca.parent = next((other for other in cas if other is not ca
                          and issued_by(ca.certificate, other.certificate)), None)


def trust_from_certificates(certificates: Iterable[CardCertificate],
                            source: Path = Path("(given)")) -> TrustConfig:
    """A TrustConfig of certificates given in code (tests, older callers). Certificates that
    are not CAs are kept with the reason, so requests they issued get ISSUER_NOT_CA."""
    cas = [TrustedCA(certificate, source, why_not_a_ca(certificate.parsed))
           for certificate in certificates]
    link_parents(cas)
    return TrustConfig(cas)


def _certificate_blocks(data: bytes) -> list[bytes]:
    if _PEM_CERTIFICATE in data:
        return [_PEM_CERTIFICATE + part for part in data.split(_PEM_CERTIFICATE)[1:]]
    return [data]


def _files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(certificate files, CRL files) of the given files and directories."""
    certificates: list[Path] = []
    crls: list[Path] = []
    for path in paths:
        listed = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in listed:
            (crls if file.suffix.lower() == CRL_SUFFIX else certificates).append(file)
    return certificates, crls


def crl_files(paths: Iterable[Path]) -> list[Path]:
    """The *.crl files the trust paths name now (a directory is listed again each time)."""
    return _files(paths)[1]


def _not_a_ca_anchor(file: Path, subject: str, reason: str) -> TrustConfigError:
    return TrustConfigError(
        Bilingual(f"{file}: 信任目录中的证书 {subject!r} 不是CA证书 ({reason}), 不能作为信任锚",
                  f"{file}: the certificate {subject!r} is not a CA certificate ({reason}), so "
                  "it cannot be a trust anchor"),
        Bilingual("把它移出信任目录; 只有卡 CA 的证书 (CA:TRUE, keyCertSign) 应放在那里。",
                  "remove it from the trust directory; only the card CA's certificates "
                  "(CA:TRUE, keyCertSign) belong there."))


def load_trust(paths: Iterable[Path], *, now: datetime) -> TrustConfig:
    """The CAs of the trust paths. TrustConfigError for a certificate that is not a CA or a
    file that cannot be read; a warning for a CA outside its validity."""
    certificate_files, crl_sources = _files(list(paths))
    cas: list[TrustedCA] = []
    for file in certificate_files:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise TrustConfigError(
                Bilingual(f"信任锚证书文件 {file} 无法读取: {error.strerror}",
                          f"cannot read the trust anchor file {file}: {error.strerror}"),
                Bilingual("检查路径及其权限。", "check the path and its permissions.")) from None
        for block in _certificate_blocks(data):
            try:
                certificate = load_certificate(block)
            except CertificateError:
                logger.warning("skipping %s: not a certificate", file)
                continue
            reason = why_not_a_ca(certificate.parsed)
            if reason:
                raise _not_a_ca_anchor(file, certificate.subject, reason)
            if not (certificate.not_before <= now <= certificate.not_after):
                expired = now > certificate.not_after
                logger.warning(
                    "信任锚%s / %s: the trust anchor %r %s %s; cards it issued are refused "
                    "(ISSUER_NOT_VALID). Remedy: replace it with the CA's current certificate.",
                    "已过期" if expired else "尚未生效", file, certificate.subject,
                    "expired on" if expired else "is not valid before",
                    (certificate.not_after if expired else certificate.not_before).isoformat())
            cas.append(TrustedCA(certificate, file))
    link_parents(cas)
    return TrustConfig(cas, crl_sources)
