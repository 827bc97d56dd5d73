"""X.509 v3 certificates signed with SM2-with-SM3 (GM/T 0015), for the simulated SM2 cards.

`cryptography` can neither sign with SM2 nor build a certificate around a signature made
elsewhere, so the structure is assembled with asn1crypto and signed with eport.common.sm2. The
signature covers e = SM3(Z || TBSCertificate), Z taken from the issuer's public key and the
default user ID 1234567812345678 (GM/T 0009 §10), which is what Chinese CAs and cards use.

Checking with OpenSSL 3.0 (3.0.22 here) needs the ID spelled out. OpenSSL 3.0 hashes an EMPTY
ID into Z unless one is set, so plain `openssl verify -CAfile ca.pem leaf.pem` fails with
"error 7 ... certificate signature failure". What works::

    openssl verify -vfyopt distid:1234567812345678 -CAfile ca.pem leaf.pem
    openssl x509 -in leaf.pem -noout -text -nameopt utf8

`-vfyopt` is applied only to the certificate named on the command line (apps/verify.c sets it
on that one X509 object), never to those read from -CAfile or -untrusted. So a leaf directly
under the CA verifies, but an intermediate passed with -untrusted, or the root's own signature
under -check_ss_sig, is still checked with the empty ID and fails (openssl/openssl#23471,
#32744). The root's self-signature can be checked by pulling its parts out::

    openssl asn1parse -in ca.pem             # note the TBS SEQUENCE at offset 4 and the
                                             # offset of the final BIT STRING
    openssl asn1parse -in ca.pem -strparse <BIT STRING offset> -noout -out sig.der
    # tbs.der = bytes [4, 4 + header + length) of the DER certificate
    openssl x509 -in ca.pem -pubkey -noout > ca-pub.pem
    openssl dgst -sm3 -verify ca-pub.pem -sigopt distid:1234567812345678 -signature sig.der tbs.der

The same `-sigopt distid:1234567812345678` is needed whenever `openssl dgst -sm3` signs or
verifies an SM2 signature made over SM3(Z || M) with the default ID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from eport.common import sm2
from eport.common.sm2_cert import certificate_public_point, verify_certificate_signature

SM2_WITH_SM3_OID = sm2.SM2_WITH_SM3_OID

_BASIC_CONSTRAINTS_OID = "2.5.29.19"
_KEY_USAGE_OID = "2.5.29.15"
_SUBJECT_KEY_ID_OID = "2.5.29.14"
_AUTHORITY_KEY_ID_OID = "2.5.29.35"
_STANDARD_OIDS = frozenset(
    {_BASIC_CONSTRAINTS_OID, _KEY_USAGE_OID, _SUBJECT_KEY_ID_OID, _AUTHORITY_KEY_ID_OID}
)


def key_identifier(point: tuple[int, int]) -> bytes:
    """SHA-1 of the encoded point: RFC 5280 §4.2.1.2 method 1, as OpenSSL computes it too."""
    return hashlib.sha1(sm2.encode_point(point)).digest()


def _der_sequence(content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([0x30, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([0x30, 0x80 | size]) + length.to_bytes(size, "big") + content


def _extension(oid: str, critical: bool, value: bytes) -> object:
    # Hand-assembled so the caller's extnValue bytes go in untouched: asn1crypto would
    # otherwise want a parsed object for the extensions it knows.
    content = asn1_core.ObjectIdentifier(oid).dump()
    if critical:  # DER leaves out a BOOLEAN equal to its DEFAULT FALSE
        content += asn1_core.Boolean(True).dump()
    content += asn1_core.OctetString(value).dump()
    return asn1_x509.Extension.load(_der_sequence(content))


def _time(moment: datetime) -> object:
    # Naive datetimes are taken as UTC, like cryptography's CertificateBuilder does.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC).replace(microsecond=0)
    # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
    if 1950 <= moment.year < 2050:
        return asn1_x509.Time({"utc_time": moment})
    return asn1_x509.Time({"general_time": moment})


def _standard_extensions(
    is_ca: bool,
    subject_point: tuple[int, int],
    issuer_point: tuple[int, int],
    key_usage: x509.KeyUsage | None,
) -> list[object]:
    key_usage = key_usage or x509.KeyUsage(
        digital_signature=not is_ca,
        content_commitment=not is_ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )
    authority_key_id = x509.AuthorityKeyIdentifier(key_identifier(issuer_point), None, None)
    return [
        _extension(
            _BASIC_CONSTRAINTS_OID,
            True,
            x509.BasicConstraints(ca=is_ca, path_length=None).public_bytes(),
        ),
        _extension(_KEY_USAGE_OID, True, key_usage.public_bytes()),
        _extension(
            _SUBJECT_KEY_ID_OID,
            False,
            x509.SubjectKeyIdentifier(key_identifier(subject_point)).public_bytes(),
        ),
        _extension(_AUTHORITY_KEY_ID_OID, False, authority_key_id.public_bytes()),
    ]


def build_certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    subject_public_point: tuple[int, int],
    issuer_private_key: int,
    issuer_public_point: tuple[int, int],
    serial_number: int,
    not_before: datetime,
    not_after: datetime,
    is_ca: bool,
    extensions: Sequence[tuple[str, bool, bytes]] = (),
    key_usage: x509.KeyUsage | None = None,
) -> bytes:
    """Build and sign a v3 certificate; return its DER.

    `extensions` are (dotted OID, critical, DER extnValue content) appended after
    basicConstraints, keyUsage, subjectKeyIdentifier and authorityKeyIdentifier, which are
    always present and so may not be passed again. keyUsage is keyCertSign + cRLSign for a CA
    and digitalSignature + nonRepudiation otherwise, unless `key_usage` is given.
    """
    if sm2.public_point(issuer_private_key) != issuer_public_point:
        raise ValueError("issuer_private_key does not belong to issuer_public_point")
    if not 0 < serial_number < 1 << 159:
        raise ValueError("RFC 5280 serial numbers are positive and at most 20 octets")
    if not_after <= not_before:
        raise ValueError("not_after must be later than not_before")
    seen = set(_STANDARD_OIDS)
    for oid, _critical, _value in extensions:
        if oid in seen:
            raise ValueError(f"extension {oid} appears twice")
        seen.add(oid)

    algorithm = {"algorithm": SM2_WITH_SM3_OID}  # GM/T 0015: no parameters, not even NULL
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": serial_number,
            "signature": algorithm,
            # Loading cryptography's own encoding keeps UTF8String (Chinese) values as they are.
            "issuer": asn1_x509.Name.load(issuer.public_bytes()),
            "validity": {"not_before": _time(not_before), "not_after": _time(not_after)},
            "subject": asn1_x509.Name.load(subject.public_bytes()),
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(
                sm2.public_key_der(subject_public_point)
            ),
            "extensions": [
                *_standard_extensions(
                    is_ca, subject_public_point, issuer_public_point, key_usage
                ),
                *(_extension(oid, critical, value) for oid, critical, value in extensions),
            ],
        }
    )
    tbs_der: bytes = tbs.dump()
    digest = sm2.message_digest(issuer_public_point, tbs_der)
    r, s = sm2.sign_digest(issuer_private_key, digest)
    certificate = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": algorithm,
            "signature_value": sm2.encode_der_signature(r, s),
        }
    )
    der: bytes = certificate.dump()
    return der


__all__ = ["build_certificate", "certificate_public_point", "key_identifier",
           "verify_certificate_signature"]
