"""The real E-port certificate profile (docs/sources.md): what a card certificate alone tells us.

A real E-port card has no PIV E-port data object; what the host can know about it comes from
its certificate. The issuer is the card centre (O=中国电子口岸, OU=证书管理中心), the holder is
the subject CN (a BMPString), and private extensions under 1.3.6.1.4.1.5315.100 are IA5Strings
whose bytes are GBK (not ASCII, so strict IA5 decoders reject them: we read the DER ourselves).

Only what the E-port certificate profile says an OID holds gets a named field. Customs code,
credit code, card kind and form are not in the profile, so they stay None ("unknown"): we
never guess them.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from eport.common.failure import EportFailure

EPORT_ARC = "1.3.6.1.4.1.5315.100"
OID_ENTERPRISE_NAME = x509.ObjectIdentifier(EPORT_ARC + ".5.1")
OID_PERSONAL_ID_NUMBER = x509.ObjectIdentifier(EPORT_ARC + ".5.8")
OID_UNKNOWN_5_9 = x509.ObjectIdentifier(EPORT_ARC + ".5.9")
OID_ORGANISATION_CODE = x509.ObjectIdentifier(EPORT_ARC + ".5.11")

ISSUER_ORGANISATION = "中国电子口岸"
ISSUER_UNIT = "证书管理中心"

# DER tags accepted for the private extensions: IA5String is what real cards use; UTF8String and
# PrintableString are tolerated so a re-issued test certificate is not rejected for the tag alone.
_STRING_TAGS = {0x16: "IA5String", 0x0C: "UTF8String", 0x13: "PrintableString"}


class ProfileDecodeError(EportFailure, ValueError):
    """An E-port extension whose value is not a DER string or not valid GBK."""

    code = "PROFILE_UNDECODABLE"


@dataclass(frozen=True)
class ProfileField:
    """One decoded extension: `text` when it decoded, otherwise `undecodable` with the raw bytes."""

    text: str | None
    raw: bytes
    undecodable: bool = False


@dataclass(frozen=True)
class EportCertificateProfile:
    """What the certificate says about the card; None means "unknown" (not in the profile)."""

    certificate_number: str
    holder_name: str | None
    enterprise_name: ProfileField | None
    personal_id_number: ProfileField | None
    organisation_code: ProfileField | None
    other_extensions: dict[str, ProfileField]
    # Not carried by the real profile: always unknown here.
    customs_code: None = None
    credit_code: None = None
    card_kind: None = None
    card_form: None = None


def is_real_eport_profile(certificate: x509.Certificate) -> bool:
    """True when the issuer is the card centre or any extension sits under the E-port arc."""
    issuer = certificate.issuer
    organisations = {str(a.value) for a in issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    units = {str(a.value) for a in issuer.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
    if ISSUER_ORGANISATION in organisations and ISSUER_UNIT in units:
        return True
    return any(_under_arc(ext.oid) for ext in certificate.extensions)


def parse_eport_certificate_profile(
    certificate: x509.Certificate,
) -> EportCertificateProfile | None:
    """The profile fields of `certificate`, or None when it is not in the real E-port profile.

    A garbled extension never raises: its field is marked undecodable with the raw bytes kept.
    """
    if not is_real_eport_profile(certificate):
        return None
    fields: dict[str, ProfileField] = {}
    for ext in certificate.extensions:
        if _under_arc(ext.oid) and isinstance(ext.value, x509.UnrecognizedExtension):
            fields[ext.oid.dotted_string] = _field_from_der(ext.value.value)
    holder = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    named = {
        OID_ENTERPRISE_NAME.dotted_string,
        OID_PERSONAL_ID_NUMBER.dotted_string,
        OID_ORGANISATION_CODE.dotted_string,
    }
    return EportCertificateProfile(
        certificate_number=format(certificate.serial_number, "x"),
        holder_name=str(holder[0].value) if holder else None,
        enterprise_name=fields.get(OID_ENTERPRISE_NAME.dotted_string),
        personal_id_number=fields.get(OID_PERSONAL_ID_NUMBER.dotted_string),
        organisation_code=fields.get(OID_ORGANISATION_CODE.dotted_string),
        other_extensions={oid: f for oid, f in fields.items() if oid not in named},
    )


def decode_gbk_string(der: bytes) -> str:
    """The text of one DER string (IA5String with GBK bytes on real cards).

    Raises ProfileDecodeError for a value that is not a DER string or not GBK.
    """
    if len(der) < 2 or der[0] not in _STRING_TAGS:
        raise ProfileDecodeError(
            "E-port extension is not a DER string / E-port 扩展不是 DER 字符串"
        )
    content = _der_content(der)
    try:
        return content.decode("gbk")
    except UnicodeDecodeError as exc:
        raise ProfileDecodeError(
            f"E-port extension is not valid GBK at byte {exc.start}"
            " / E-port 扩展不是有效的 GBK 编码"
        ) from None


def encode_gbk_ia5(text: str) -> bytes:
    """DER IA5String carrying `text` as GBK bytes, as real cards do (simulator and tests)."""
    content = text.encode("gbk")
    return bytes([0x16]) + _der_length(len(content)) + content


def _field_from_der(der: bytes) -> ProfileField:
    try:
        return ProfileField(text=decode_gbk_string(der), raw=der)
    except ProfileDecodeError:
        return ProfileField(text=None, raw=der, undecodable=True)


def _under_arc(oid: x509.ObjectIdentifier) -> bool:
    return oid.dotted_string.startswith(EPORT_ARC + ".")


def _der_content(der: bytes) -> bytes:
    first = der[1]
    if first < 0x80:
        length, start = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            raise ProfileDecodeError("E-port extension has a bad DER length / E-port 扩展长度错误")
        length, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    if start + length != len(der):
        raise ProfileDecodeError("E-port extension has a bad DER length / E-port 扩展长度错误")
    return der[start:]


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body
