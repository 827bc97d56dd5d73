"""Certificates and CRLs a CA would or would not issue, for the data centre's trust tests.

Built with `cryptography` (RSA and P-256) and, for SM2, with the simulator's SM2 certificate
builder and an SM2-signed CRL assembled here with asn1crypto. A card certificate is re-issued
for a provisioned test card's own key (`reissued`), so the card still signs its requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import algos as asn1_algos
from asn1crypto import core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from eport.common import sm2
from eport.common.profile import EPORT_EXTENSION_OID
from eport.firmware_sim import sm2_x509
from tests.support.datacenter_stack import SigningCard

DAY = timedelta(days=1)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def usage(*, signing: bool = False, cert_sign: bool = False, crl_sign: bool = False,
          encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=signing,
                         key_encipherment=encipher, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eport-middleware TEST"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    """A CA (or a would-be one) of these tests: its key and certificate."""

    key: PrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, file_name: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name
        path.write_bytes(self.pem)
        return path


def authority(common_name: str, *, issuer: Authority | None = None, ca: bool | None = True,
              key_usage: x509.KeyUsage | None = None, path_length: int | None = None,
              not_before: datetime | None = None, not_after: datetime | None = None) -> Authority:
    """A CA certificate (self-signed unless `issuer`); ca=None leaves basicConstraints out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = not_before or now() - DAY
    builder = (x509.CertificateBuilder().subject_name(name(common_name))
               .issuer_name(issuer.certificate.subject if issuer else name(common_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(not_after or start + 3650 * DAY))
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
            critical=True)
    builder = builder.add_extension(
        key_usage or usage(cert_sign=True, crl_sign=True), critical=True)
    signer = issuer.key if issuer else key
    return Authority(key, builder.sign(signer, hashes.SHA256()))


def reissued(card: SigningCard, issuer: Authority, *, basic_ca: bool | None = False,
             key_usage: x509.KeyUsage | None = None,
             extended_usage: list[x509.ObjectIdentifier] | None = None,
             digest: hashes.HashAlgorithm | None = None, renewed: bool = False
             ) -> SigningCard:
    """The card with a new certificate for its own key and E-port profile, issued by
    `issuer` with the given extensions (default: what a card CA issues). `renewed`: a new
    certificate number (serial and profile), as a renewal at the card centre gives."""
    original = x509.load_der_x509_certificate(card.image.certificate)
    key = serialization.load_der_private_key(card.image.private_key, None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    profile = card.image.profile
    if renewed:
        profile = replace(profile, cert_number=format(x509.random_serial_number() >> 32, "x"))
    eport = x509.UnrecognizedExtension(x509.ObjectIdentifier(EPORT_EXTENSION_OID),
                                       core.UTF8String(profile.extension_json()).dump())
    builder = (x509.CertificateBuilder().subject_name(original.subject)
               .issuer_name(issuer.certificate.subject).public_key(key.public_key())
               .serial_number(int(profile.cert_number, 16))
               .not_valid_before(original.not_valid_before_utc)
               .not_valid_after(original.not_valid_after_utc)
               .add_extension(key_usage or usage(signing=True), critical=True)
               .add_extension(eport, critical=False))
    if basic_ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=basic_ca, path_length=None),
                                        critical=True)
    if extended_usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended_usage), critical=False)
    certificate = builder.sign(issuer.key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)
    if isinstance(digest, hashes.SHA1):
        certificate = resigned_with_sha1(certificate, issuer.key)
    return SigningCard(replace(card.image, certificate=certificate, profile=profile))


def resigned_with_sha1(der: bytes, key: PrivateKey) -> bytes:
    """The certificate signed again with SHA-1 (sha1WithRSAEncryption or ecdsa-with-SHA1), as
    old CAs did; `cryptography` no longer builds such certificates itself."""
    parsed = asn1_x509.Certificate.load(der)
    tbs = parsed["tbs_certificate"]
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = {"algorithm": "sha1_rsa"}
        tbs["signature"] = asn1_algos.SignedDigestAlgorithm(algorithm)
        signature = key.sign(tbs.dump(force=True), padding.PKCS1v15(), hashes.SHA1())
    else:
        algorithm = {"algorithm": "sha1_ecdsa"}
        tbs["signature"] = asn1_algos.SignedDigestAlgorithm(algorithm)
        signature = key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA1()))
    return bytes(asn1_x509.Certificate({
        "tbs_certificate": tbs, "signature_algorithm": algorithm,
        "signature_value": signature}).dump())


def crl(issuer: Authority, serials: list[int], *, this_update: datetime | None = None,
        next_update: datetime | None = None, signer: PrivateKey | None = None) -> bytes:
    """A DER CRL of `issuer` revoking `serials` (signed by `signer` to forge one)."""
    start = this_update or now() - DAY
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.certificate.subject)
               .last_update(start).next_update(next_update or start + 8 * DAY))
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(start).build())
    signed = builder.sign(signer or issuer.key, hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.DER)


def sm2_crl(ca_key: int, ca_certificate_der: bytes, serials: list[int], *,
            this_update: datetime | None = None, next_update: datetime | None = None) -> bytes:
    """A DER CRL signed with SM2-with-SM3 by the SM2 CA (GM/T 0015, as its certificates)."""
    start = this_update or now() - DAY
    issuer = asn1_x509.Certificate.load(ca_certificate_der)["tbs_certificate"]["subject"]
    algorithm = {"algorithm": sm2.SM2_WITH_SM3_OID}
    tbs = asn1_crl.TbsCertList({
        "version": "v2", "signature": algorithm, "issuer": issuer,
        "this_update": asn1_x509.Time({"utc_time": start}),
        "next_update": asn1_x509.Time({"utc_time": next_update or start + 8 * DAY}),
        "revoked_certificates": [
            {"user_certificate": serial,
             "revocation_date": asn1_x509.Time({"utc_time": start})} for serial in serials],
    })
    point = sm2.public_point(ca_key)
    r, s = sm2.sign_digest(ca_key, sm2.message_digest(point, tbs.dump()))
    return bytes(asn1_crl.CertificateList({
        "tbs_cert_list": tbs, "signature_algorithm": algorithm,
        "signature": sm2.encode_der_signature(r, s)}).dump())


def sm2_card_reissued(card: SigningCard, ca_key: int, ca_subject: x509.Name, *,
                      is_ca: bool = False) -> SigningCard:
    """An SM2 card's certificate issued again by the SM2 key `ca_key` (CA:TRUE with is_ca)."""
    original = x509.load_der_x509_certificate(card.image.certificate)
    eport = original.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(EPORT_EXTENSION_OID)).value
    assert isinstance(eport, x509.UnrecognizedExtension)
    d = int.from_bytes(card.image.private_key, "big")
    der = sm2_x509.build_certificate(
        subject=original.subject, issuer=ca_subject, subject_public_point=sm2.public_point(d),
        issuer_private_key=ca_key, issuer_public_point=sm2.public_point(ca_key),
        serial_number=original.serial_number, not_before=original.not_valid_before_utc,
        not_after=original.not_valid_after_utc, is_ca=is_ca,
        extensions=[(EPORT_EXTENSION_OID, False, eport.value)])
    return SigningCard(replace(card.image, certificate=der))
