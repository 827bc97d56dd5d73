"""The real E-port certificate profile (docs/sources.md) parsed from certificates built here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from eport.cardlib.eport_certificate_profile import (
    OID_ENTERPRISE_NAME,
    OID_ORGANISATION_CODE,
    OID_PERSONAL_ID_NUMBER,
    ProfileDecodeError,
    decode_gbk_string,
    encode_gbk_ia5,
    is_real_eport_profile,
    parse_eport_certificate_profile,
)

ENTERPRISE = "北京某某进出口有限公司"
HOLDER = "张三"


def _issuer(real: bool) -> x509.Name:
    if not real:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    bmp = _ASN1Type.BMPString
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "cn"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "中国电子口岸", bmp),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "证书管理中心", bmp),
            x509.NameAttribute(NameOID.COMMON_NAME, "中国电子业务证书管理中心", bmp),
        ]
    )


def _certificate(
    extensions: dict[x509.ObjectIdentifier, bytes], real_issuer: bool = True
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOLDER, _ASN1Type.BMPString)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(_issuer(real_issuer))
        .public_key(key.public_key())
        .serial_number(0x1A2B3C4D)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )
    for oid, der in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, der), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_real_profile_decodes_holder_and_gbk_enterprise() -> None:
    cert = _certificate(
        {
            OID_ENTERPRISE_NAME: encode_gbk_ia5(ENTERPRISE),
            OID_PERSONAL_ID_NUMBER: encode_gbk_ia5("110101199001011234"),
            OID_ORGANISATION_CODE: encode_gbk_ia5("12345678X"),
            x509.ObjectIdentifier("1.3.6.1.4.1.5315.100.5.3"): encode_gbk_ia5("01"),
        }
    )
    profile = parse_eport_certificate_profile(cert)
    assert profile is not None
    assert profile.holder_name == HOLDER
    assert profile.enterprise_name is not None and profile.enterprise_name.text == ENTERPRISE
    assert profile.personal_id_number is not None
    assert profile.personal_id_number.text == "110101199001011234"
    assert profile.organisation_code is not None and profile.organisation_code.text == "12345678X"
    assert profile.other_extensions["1.3.6.1.4.1.5315.100.5.3"].text == "01"
    assert profile.certificate_number == "1a2b3c4d"
    # Not in the profile: unknown, never guessed.
    assert profile.customs_code is None and profile.credit_code is None
    assert profile.card_kind is None and profile.card_form is None


def test_absent_extensions_are_unknown() -> None:
    profile = parse_eport_certificate_profile(_certificate({}))
    assert profile is not None
    assert profile.holder_name == HOLDER
    assert profile.enterprise_name is None
    assert profile.organisation_code is None


def test_extension_alone_marks_the_profile() -> None:
    cert = _certificate({OID_ENTERPRISE_NAME: encode_gbk_ia5(ENTERPRISE)}, real_issuer=False)
    assert is_real_eport_profile(cert)


def test_other_certificates_are_not_the_real_profile() -> None:
    cert = _certificate({}, real_issuer=False)
    assert not is_real_eport_profile(cert)
    assert parse_eport_certificate_profile(cert) is None


def test_garbled_gbk_is_marked_undecodable_not_a_crash() -> None:
    garbled = bytes([0x16, 0x03, 0x81, 0xFF, 0xFF])
    profile = parse_eport_certificate_profile(_certificate({OID_ENTERPRISE_NAME: garbled}))
    assert profile is not None
    assert profile.enterprise_name is not None
    assert profile.enterprise_name.undecodable
    assert profile.enterprise_name.text is None
    assert profile.enterprise_name.raw == garbled


@pytest.mark.parametrize(
    "der",
    [b"", b"\x16", b"\x04\x02ab", b"\x16\x05ab", b"\x16\x85\x00\x00\x00\x00\x00"],
)
def test_bad_der_raises_a_clear_error(der: bytes) -> None:
    with pytest.raises(ProfileDecodeError, match="E-port"):
        decode_gbk_string(der)


def test_long_value_round_trips() -> None:
    text = "公司" * 100
    assert decode_gbk_string(encode_gbk_ia5(text)) == text
