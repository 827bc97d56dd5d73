"""The E-port profile: what an E-port card holds besides its key, and how it is encoded.

The same facts live in two places so that both the daemon and ordinary X.509 tools see them:
the PIV data object 5FFF10 (a TLV list, below) and a certificate extension (a UTF8String of
JSON under EPORT_EXTENSION_OID).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

from eport.common.failure import EportFailure
from eport.common.tlv import TlvError, parse_tlv, tlv

# An OID under the UUID arc 2.25 (ITU-T X.667): ours without registering a private arc.
EPORT_EXTENSION_OID = "2.25.266027056450079065916049083661083750188"


class CardKind(StrEnum):
    LEGAL_PERSON = "legal-person"
    OPERATOR = "operator"
    DECLARANT = "declarant"

    @property
    def label_zh(self) -> str:
        labels = {"legal-person": "法人卡", "operator": "操作员卡", "declarant": "报关员卡"}
        return labels[self.value]


class CardForm(StrEnum):
    IC = "ic"
    IKEY = "ikey"

    @property
    def label(self) -> str:
        return {"ic": "E-port IC card", "ikey": "E-port IKEY"}[self.value]


class ProfileError(EportFailure, ValueError):
    """E-port card data that breaks a format rule; the message names the field."""

    code = "PROFILE_INVALID"


_CUSTOMS_CODE = re.compile(r"[0-9A-Z]{10}")
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CARD_ID = re.compile(r"[0-9A-Za-z]{1,16}")
_CERT_NUMBER = re.compile(r"[0-9a-f]{8,32}")


def credit_code_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code (GB 32100-2015)."""
    pairs = zip(first17, _CREDIT_WEIGHTS, strict=True)
    total = sum(CREDIT_ALPHABET.index(c) * weight for c, weight in pairs)
    return CREDIT_ALPHABET[(31 - total % 31) % 31]


def is_valid_credit_code(code: str) -> bool:
    if len(code) != 18 or any(c not in CREDIT_ALPHABET for c in code):
        return False
    return credit_code_check_char(code[:17]) == code[17]


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


# Data-object tags (context-specific, primitive), in the order they are written.
_TAGS = {
    "card_id": 0x80,
    "holder_name": 0x81,
    "enterprise_name": 0x82,
    "customs_code": 0x83,
    "credit_code": 0x84,
    "cert_number": 0x85,
    "kind": 0x86,
    "form": 0x87,
    "not_before": 0x88,
    "not_after": 0x89,
    "algorithm": 0x8A,
}


@dataclass(frozen=True)
class EportProfile:
    card_id: str
    holder_name: str
    enterprise_name: str
    customs_code: str
    credit_code: str
    cert_number: str
    kind: CardKind
    form: CardForm
    not_before: datetime
    not_after: datetime
    algorithm: str  # "rsa1024", "rsa2048", "p256" or "sm2"

    def validate(self) -> None:
        if not _CARD_ID.fullmatch(self.card_id):
            raise ProfileError("card id: 1 to 16 letters or digits / 卡号应为1至16位字母或数字")
        if not self.holder_name.strip():
            raise ProfileError("holder name is empty / 持卡人姓名不能为空")
        if not self.enterprise_name.strip():
            raise ProfileError("enterprise name is empty / 企业名称不能为空")
        if not _CUSTOMS_CODE.fullmatch(self.customs_code):
            raise ProfileError(
                "customs code: 10 digits or capital letters / 海关编码应为10位数字或大写字母"
            )
        if not is_valid_credit_code(self.credit_code):
            raise ProfileError(
                "social credit code: 18 characters with a valid check character (GB 32100) "
                "/ 统一社会信用代码应为18位且校验位正确"
            )
        if not _CERT_NUMBER.fullmatch(self.cert_number):
            raise ProfileError("certificate number: lowercase hex / 证书号应为小写十六进制")
        if self.not_after <= self.not_before:
            raise ProfileError("validity ends before it starts / 有效期结束早于开始")

    def to_json_dict(self) -> dict[str, str]:
        raw = asdict(self)
        raw["kind"] = self.kind.value
        raw["form"] = self.form.value
        raw["not_before"] = _format_time(self.not_before)
        raw["not_after"] = _format_time(self.not_after)
        return raw

    @classmethod
    def from_json_dict(cls, raw: dict[str, str]) -> EportProfile:
        try:
            return cls(
                card_id=raw["card_id"],
                holder_name=raw["holder_name"],
                enterprise_name=raw["enterprise_name"],
                customs_code=raw["customs_code"],
                credit_code=raw["credit_code"],
                cert_number=raw["cert_number"],
                kind=CardKind(raw["kind"]),
                form=CardForm(raw["form"]),
                not_before=_parse_time(raw["not_before"]),
                not_after=_parse_time(raw["not_after"]),
                algorithm=raw["algorithm"],
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ProfileError(f"E-port profile is incomplete or malformed: {exc}") from None

    def encode_data_object(self) -> bytes:
        """The value of the PIV data object 5FFF10 (before the 53 wrapper)."""
        fields = self.to_json_dict()
        return b"".join(tlv(tag, fields[name].encode("utf-8")) for name, tag in _TAGS.items())

    @classmethod
    def decode_data_object(cls, data: bytes) -> EportProfile:
        try:
            items = parse_tlv(data)
            raw = {name: items[tag].decode("utf-8") for name, tag in _TAGS.items()}
        except (TlvError, KeyError, UnicodeDecodeError) as exc:
            raise ProfileError(f"E-port data object is malformed: {exc}") from None
        return cls.from_json_dict(raw)

    def extension_json(self) -> str:
        return json.dumps(self.to_json_dict(), ensure_ascii=False, sort_keys=True)
