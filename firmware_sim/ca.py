"""The test certificate authority that signs simulated cards' certificates.

It has two keys: RSA-2048 (signs the certificates of RSA and P-256 cards, with SHA-256, via
`cryptography`) and SM2 (signs SM2 cards' certificates with SM2-with-SM3; `cryptography` cannot,
so eport.firmware_sim.sm2_x509 builds those with asn1crypto and our SM2 code). Every name says
TEST: nothing it signs can be mistaken for a real E-port certificate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from eport.cardlib.eport_certificate_profile import (
    EPORT_ARC,
    OID_ENTERPRISE_NAME,
    encode_gbk_ia5,
)
from eport.common import sm2
from eport.common.failure import EportFailure
from eport.common.profile import EPORT_EXTENSION_OID, EportProfile
from eport.firmware_sim import sm2_x509

CA_NAME_RSA = "E-port TEST CA (RSA) - NOT FOR PRODUCTION"
CA_NAME_SM2 = "E-port TEST CA (SM2) - NOT FOR PRODUCTION"
_CA_VALIDITY = timedelta(days=20 * 365)

_RSA_KEY_FILE = "ca-rsa.key"
_RSA_CERT_FILE = "ca-rsa.pem"
_SM2_KEY_FILE = "ca-sm2.key"
_SM2_CERT_FILE = "ca-sm2.pem"
TRUST_BUNDLE_FILE = "trust-anchors.pem"


class CaError(EportFailure):
    """The CA directory is missing, incomplete or unreadable; the message has a remedy."""

    code = "CA_ERROR"


def default_ca_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "eport-sim" / "ca"


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eport-middleware TEST"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # a certificate authority, not a pytest test class

    directory: Path
    rsa_key: rsa.RSAPrivateKey
    rsa_certificate: x509.Certificate
    sm2_key: int
    sm2_certificate: bytes  # DER

    @property
    def trust_bundle(self) -> Path:
        return self.directory / TRUST_BUNDLE_FILE

    def certificate_for(self, algorithm: str) -> bytes:
        """DER of the CA certificate that signs cards of this algorithm."""
        if algorithm == "sm2":
            return self.sm2_certificate
        return self.rsa_certificate.public_bytes(serialization.Encoding.DER)

    def issue(
        self, profile: EportProfile, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        | tuple[int, int], *, envelope_serial: int | None = None, real_profile: bool = False
    ) -> bytes:
        """Sign the card's certificate; return its DER.

        With `envelope_serial` it is the envelope (encryption) certificate of slot 9D instead:
        same subject and E-port extension, its own serial, and an encryption keyUsage.
        """
        subject = real_card_subject(profile) if real_profile else card_subject(profile)
        serial = int(profile.cert_number, 16) if envelope_serial is None else envelope_serial
        usage = _SIGNING_USAGE if envelope_serial is None else (
            _SM2_ENVELOPE_USAGE if isinstance(public_key, tuple) else _RSA_ENVELOPE_USAGE)
        extension_value = core.UTF8String(profile.extension_json()).dump()
        private = (real_profile_extensions(profile) if real_profile
                   else [(EPORT_EXTENSION_OID, extension_value)])
        if isinstance(public_key, tuple):
            return sm2_x509.build_certificate(
                subject=subject,
                issuer=_ca_name(CA_NAME_SM2),
                subject_public_point=public_key,
                issuer_private_key=self.sm2_key,
                issuer_public_point=sm2.public_point(self.sm2_key),
                serial_number=serial,
                not_before=profile.not_before,
                not_after=profile.not_after,
                is_ca=False,
                extensions=[(oid, False, value) for oid, value in private],
                key_usage=usage,
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.rsa_certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(profile.not_before)
            .not_valid_after(profile.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.rsa_key.public_key()),
                critical=False,
            )
        )
        for oid, value in private:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
            )
        return builder.sign(self.rsa_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_usage(*, signing: bool = False, encryption: bool = False,
               agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=encryption,
        data_encipherment=encryption,
        key_agreement=agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


_SIGNING_USAGE = _key_usage(signing=True)
# An RSA envelope key wraps session keys and short data directly (PKCS#1 v1.5).
_RSA_ENVELOPE_USAGE = _key_usage(encryption=True)
# SM2 encryption also carries keys and data directly, so it has the same two bits; and the
# card's part of it is a key agreement step, d·C1 (an ECDH-style multiplication, what PIV's
# key management slot does with EC keys), which keyAgreement names. The SM2 key exchange of
# GM/T 0003.3 would use the same key.
_SM2_ENVELOPE_USAGE = _key_usage(encryption=True, agreement=True)


_POST_OFFICE_BOX = x509.ObjectIdentifier("2.5.4.18")  # not in NameOID


def real_card_subject(profile: EportProfile) -> x509.Name:
    """The subject of the E-port certificate profile: the holder as a BMPString CN,
    postOfficeBox=1."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, profile.holder_name, _ASN1Type.BMPString),
            x509.NameAttribute(_POST_OFFICE_BOX, "1"),
        ]
    )


def real_profile_extensions(profile: EportProfile) -> list[tuple[str, bytes]]:
    """The private extensions of the E-port certificate profile: GBK bytes in IA5Strings. Only
    the enterprise name is known to the simulator; the constant ones copy the public sample."""
    return [
        (OID_ENTERPRISE_NAME.dotted_string, encode_gbk_ia5(profile.enterprise_name)),
        (EPORT_ARC + ".5.3", encode_gbk_ia5("01")),
        (EPORT_ARC + ".5.12", encode_gbk_ia5("00")),
        (EPORT_ARC + ".2.1", encode_gbk_ia5("10")),
        (EPORT_ARC + ".2.4", encode_gbk_ia5("14")),
    ]


def card_subject(profile: EportProfile) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, profile.enterprise_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, profile.kind.label_zh),
            x509.NameAttribute(NameOID.COMMON_NAME, profile.holder_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, profile.card_id),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def init_ca(directory: Path, *, force: bool = False) -> TestCA:
    """Create a new test CA in `directory` (refuses to replace one unless `force`)."""
    directory = Path(directory)
    if (directory / _RSA_KEY_FILE).exists() and not force:
        raise CaError(
            f"测试CA已存在 / a test CA already exists in {directory}. "
            "Remedy: use it as it is, or pass --force to replace it (cards it issued will no "
            "longer chain to the new one)."
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC) - timedelta(minutes=5)

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _ca_name(CA_NAME_RSA)
    rsa_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(rsa_key.public_key()), critical=False
        )
        .sign(rsa_key, hashes.SHA256())
    )
    sm2_key = sm2.generate_private_key()
    sm2_point = sm2.public_point(sm2_key)
    sm2_name = _ca_name(CA_NAME_SM2)
    sm2_cert = sm2_x509.build_certificate(
        subject=sm2_name,
        issuer=sm2_name,
        subject_public_point=sm2_point,
        issuer_private_key=sm2_key,
        issuer_public_point=sm2_point,
        serial_number=x509.random_serial_number(),
        not_before=now,
        not_after=now + _CA_VALIDITY,
        is_ca=True,
    )
    _write_private(
        directory / _RSA_KEY_FILE,
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(directory / _SM2_KEY_FILE, sm2.private_key_pem(sm2_key))
    rsa_pem = rsa_cert.public_bytes(serialization.Encoding.PEM)
    sm2_pem = _der_to_pem(sm2_cert)
    (directory / _RSA_CERT_FILE).write_bytes(rsa_pem)
    (directory / _SM2_CERT_FILE).write_bytes(sm2_pem)
    (directory / TRUST_BUNDLE_FILE).write_bytes(rsa_pem + sm2_pem)
    return load_ca(directory)


def load_ca(directory: Path) -> TestCA:
    directory = Path(directory)
    try:
        rsa_key = serialization.load_pem_private_key(
            (directory / _RSA_KEY_FILE).read_bytes(), password=None
        )
        rsa_cert = x509.load_pem_x509_certificate((directory / _RSA_CERT_FILE).read_bytes())
        sm2_key = sm2.load_private_key_pem((directory / _SM2_KEY_FILE).read_bytes())
        sm2_cert = x509.load_pem_x509_certificate(
            (directory / _SM2_CERT_FILE).read_bytes()
        ).public_bytes(serialization.Encoding.DER)
    except FileNotFoundError:
        raise CaError(
            f"找不到测试CA / no test CA in {directory}. Remedy: run `eport-sim ca init` first "
            "(or pass --ca DIR)."
        ) from None
    except (ValueError, TypeError, OSError) as exc:
        raise CaError(
            f"测试CA文件已损坏 / the test CA in {directory} is unreadable ({exc}). "
            "Remedy: run `eport-sim ca init --force` to make a new one."
        ) from None
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise CaError(f"the RSA CA key in {directory} is not an RSA key")
    return TestCA(directory, rsa_key, rsa_cert, sm2_key, sm2_cert)


def _der_to_pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
