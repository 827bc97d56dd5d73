"""Checking SM2-with-SM3 X.509 certificates (GM/T 0015): shared by the simulator and the daemon.

`cryptography` parses such certificates but cannot use their SM2 keys, so the signed part and
the public key are taken out with asn1crypto and checked with eport.common.sm2 (Z computed
from the issuer's key with the default user ID 1234567812345678, GM/T 0009 §10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import x509 as asn1_x509

from eport.common import sm2

SM2_WITH_SM3_OID = sm2.SM2_WITH_SM3_OID


@dataclass(frozen=True)
class _ParsedCertificate:
    tbs_der: bytes
    outer_algorithm_ok: bool
    inner_algorithm_ok: bool
    signature: bytes
    spki_der: bytes


def _signature_algorithm_ok(field: Any) -> bool:
    # GM/T 0015 leaves the parameters out; an explicit NULL is tolerated as other CAs emit it.
    return bool(
        field["algorithm"].dotted == SM2_WITH_SM3_OID and field["parameters"].native is None
    )


def _parse(cert_der: bytes) -> _ParsedCertificate:
    try:
        certificate = asn1_x509.Certificate.load(cert_der, strict=True)
        tbs = certificate["tbs_certificate"]
        return _ParsedCertificate(
            # dump() of an unmodified parsed value returns the bytes as received.
            tbs_der=tbs.dump(),
            outer_algorithm_ok=_signature_algorithm_ok(certificate["signature_algorithm"]),
            inner_algorithm_ok=_signature_algorithm_ok(tbs["signature"]),
            signature=certificate["signature_value"].native,
            spki_der=tbs["subject_public_key_info"].dump(),
        )
    except (ValueError, TypeError, KeyError) as exc:
        # asn1crypto parses lazily, so malformed DER surfaces while the fields are read.
        raise sm2.SM2Error(f"not a DER X.509 certificate: {exc}") from None


def verify_certificate_signature(cert_der: bytes, issuer_public_point: tuple[int, int]) -> bool:
    """True when the certificate is SM2-with-SM3 signed by the holder of issuer_public_point.

    Only the signature is checked, not validity dates, extensions or the issuer's name.
    Raises SM2Error when cert_der is not a certificate at all.
    """
    parsed = _parse(cert_der)
    # The outer algorithm field is not signed; RFC 5280 §4.1.1.2 requires it to match the
    # signed one, so a certificate whose two fields disagree is refused outright.
    if not (parsed.outer_algorithm_ok and parsed.inner_algorithm_ok):
        return False
    try:
        r, s = sm2.decode_der_signature(parsed.signature)
    except sm2.SM2Error:
        return False
    digest = sm2.message_digest(issuer_public_point, parsed.tbs_der)
    return sm2.verify_digest(issuer_public_point, digest, r, s)


def certificate_public_point(cert_der: bytes) -> tuple[int, int]:
    """The SM2 public key in the certificate; SM2Error if it is not an SM2 key."""
    return sm2.load_public_key_der(_parse(cert_der).spki_der)
