"""The two certificates behind the gateway's wss endpoint, and the checks that decide whether
an existing pair may be kept.

Keys are ECDSA P-256: every browser that runs the page library accepts them, a handshake costs
the gateway far less than with RSA-2048 (the signature per handshake is the server's main TLS
cost), and the keys are small. The CA certificate's nameConstraints extension is critical and
permits the DNS name wss.singlewindow.cn (and names below it) only; it also excludes every
IPv4 and IPv6 address, because a DNS-only permitted subtree would leave IP addresses
unconstrained (RFC 5280 4.2.1.10 constrains only the name forms it lists).
"""

from __future__ import annotations

import getpass
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GATEWAY_HOST_NAME = "wss.singlewindow.cn"
# Renew this long before the end, so a gateway started today still works next month.
RENEW_BEFORE = timedelta(days=30)
# Browsers refuse server certificates valid for more than 398 days; 397 leaves a margin.
SERVER_VALIDITY = timedelta(days=397)
CA_VALIDITY = timedelta(days=10 * 365)
# A clock a little behind another program's must not see a certificate that is not valid yet.
BACKDATE = timedelta(minutes=5)


@dataclass
class KeyAndCertificate:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def name_constraints() -> x509.NameConstraints:
    return x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(GATEWAY_HOST_NAME)],
        excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                           x509.IPAddress(ipaddress.ip_network("::/0"))])


def _owner_label() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@{socket.gethostname()}"


def make_ca(now: datetime, validity: timedelta = CA_VALIDITY) -> KeyAndCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random tag in the subject: two installs (two users, or a renewal) never share a
    # subject, which NSS needs to tell their certificates apart.
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eport-gateway (local, this computer)"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _owner_label()),
        x509.NameAttribute(NameOID.COMMON_NAME,
                           f"eport-gateway CA for {GATEWAY_HOST_NAME} {secrets.token_hex(4)}"),
    ])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now - BACKDATE + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(name_constraints(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256()))
    return KeyAndCertificate(key, certificate)


def make_server(ca: KeyAndCertificate, now: datetime,
                validity: timedelta = SERVER_VALIDITY) -> KeyAndCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    not_after = min(now - BACKDATE + validity, ca.certificate.not_valid_after_utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_HOST_NAME)]))
        .issuer_name(ca.certificate.subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(GATEWAY_HOST_NAME)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.certificate.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca.key, hashes.SHA256()))
    return KeyAndCertificate(key, certificate)


def load_pair(key_pem: bytes, certificate_pem: bytes) -> KeyAndCertificate | None:
    """The pair, or None when either does not parse, the key is not ours (P-256), or they do
    not belong together."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if key.public_key() != certificate.public_key():
        return None
    return KeyAndCertificate(key, certificate)


def _extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]
               ) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return certificate.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _lifetime_problem(certificate: x509.Certificate, now: datetime) -> str | None:
    if now < certificate.not_valid_before_utc:
        return "not yet valid"
    if now + RENEW_BEFORE >= certificate.not_valid_after_utc:
        return "expires within 30 days" if now < certificate.not_valid_after_utc else "expired"
    return None


def ca_problem(ca: KeyAndCertificate | None, now: datetime) -> str | None:
    """Why this CA must be made again, or None to keep it."""
    if ca is None:
        return "missing"
    constraints = _extension(ca.certificate, x509.NameConstraints)
    if constraints is None or not constraints.critical or constraints.value != name_constraints():
        return "lacks the critical name constraint"
    basic = _extension(ca.certificate, x509.BasicConstraints)
    if basic is None or not isinstance(basic.value, x509.BasicConstraints) or not basic.value.ca:
        return "not a CA certificate"
    return _lifetime_problem(ca.certificate, now)


def server_problem(server: KeyAndCertificate | None, ca: KeyAndCertificate,
                   now: datetime) -> str | None:
    """Why the server certificate must be made again, or None to keep it."""
    if server is None:
        return "missing"
    try:
        server.certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    names = _extension(server.certificate, x509.SubjectAlternativeName)
    if names is None or not isinstance(names.value, x509.SubjectAlternativeName) or (
            names.value.get_values_for_type(x509.DNSName) != [GATEWAY_HOST_NAME]):
        return f"not for {GATEWAY_HOST_NAME}"
    return _lifetime_problem(server.certificate, now)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()
