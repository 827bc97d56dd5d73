"""The fields of an eport-customs/1 document and the check of one filled-in value.

A field knows its key, its Chinese and English label, its format (a `Check`) and when it is
required. Checks look at one value alone; rules between fields are in `rules`. Messages are
built here so that every problem reads the same way: where (商品第3项), the Chinese label with
the key, what is wrong, and what is expected.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from eport.common.customs.tables import has_code, table_info
from eport.common.profile import CREDIT_ALPHABET, is_valid_credit_code
from eport.common.text import Bilingual

PROBLEM_CODES = ("required", "format", "length", "code", "rule")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document. `path` is "header.transport_mode", "items[2].hs_code",
    "containers[0].size", or "" for the whole document; `code` is one of PROBLEM_CODES."""

    path: str
    code: str
    message: Bilingual
    section: str = ""

    def as_json(self) -> dict[str, str]:
        # The file and wire format keeps the two flat keys (docs/customs-document.md).
        return {"path": self.path, "code": self.code, "message_zh": self.message.zh,
                "message_en": self.message.en, "section": self.section}


@dataclass(frozen=True)
class Context:
    """What "required" may depend on: the kind of document and the (raw) header."""

    document_type: str
    direction: str
    header: Mapping[str, Any]

    def text(self, key: str) -> str:
        value = self.header.get(key, "")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Finding:
    """What a check found wrong, before it is put in words with the field's name."""

    code: str
    text: Bilingual


class Check(ABC):
    """The format of one value."""

    @abstractmethod
    def expects(self) -> tuple[str, str]:
        """What a value should look like (zh, en), for "required" messages."""

    @abstractmethod
    def find(self, value: str) -> Finding | None:
        """What is wrong with a filled-in value, None when nothing is."""


def shown(value: str, limit: int = 40) -> str:
    """A user's value as quoted in a message: unprintable characters replaced, long ones cut,
    so that junk cannot flood or garble the message."""
    clean = "".join(c if c.isprintable() else "\ufffd" for c in value[:limit + 1])
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


@dataclass(frozen=True)
class Text(Check):
    max_len: int

    def expects(self) -> tuple[str, str]:
        return (f"最多 {self.max_len} 个字符的文本",
                f"text of up to {self.max_len} characters")

    def find(self, value: str) -> Finding | None:
        if len(value) > self.max_len:
            return Finding(
                "length",
                Bilingual(f"超长: {len(value)} 个字符, 最多 {self.max_len} 个",
                          f"too long: {len(value)} characters, at most {self.max_len}"))
        if _has_control(value):
            return Finding(
                "format",
                Bilingual("含有换行等控制字符, 请删去",
                          "contains a control character such as a line break; remove it"))
        if value != value.strip():
            # Leading/trailing blanks are invisible on the printed form and break lookups.
            return Finding(
                "format",
                Bilingual("首尾有空格, 请删去", "has leading or trailing spaces"))
        return None


@dataclass(frozen=True)
class Code(Check):
    table: str

    def expects(self) -> tuple[str, str]:
        info = table_info(self.table)
        return (f"{info.title_zh}中的代码, 如 {info.example_zh}",
                f"a code of the {self.table} table, e.g. {info.example_code} ({info.example_en})")

    def find(self, value: str) -> Finding | None:
        if has_code(self.table, value):
            return None
        info = table_info(self.table)
        zh = (f"代码 '{shown(value)}' 不在{info.title_zh}中, 请填写{info.title_zh}中的代码, "
              f"如 {info.example_zh}")
        en = (f"'{shown(value)}' is not a code of the {self.table} table; use e.g. "
              f"{info.example_code} ({info.example_en})")
        width = len(info.example_code)
        if value.isdigit() and len(value) < width and has_code(self.table, value.zfill(width)):
            # Excel turns "0110" into 110 unless the column is formatted as text.
            padded = value.zfill(width)
            zh += f"; 是否应为 {padded}? (Excel 会删去前导零, 请把该列设为文本)"
            en += f"; did you mean {padded}? (Excel drops leading zeros; format the column as text)"
        return Finding("code", Bilingual(zh, en))


@dataclass(frozen=True)
class Choice(Check):
    """A small fixed list that is not a published table (e.g. the freight mark)."""

    choices: Mapping[str, str]
    expect_zh: str
    expect_en: str

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if value in self.choices:
            return None
        listed = ", ".join(f"{k} {v}" for k, v in self.choices.items())
        return Finding(
            "code",
            Bilingual(f"'{shown(value)}' 不是可选值; 可填 {listed}",
                      f"'{shown(value)}' is not one of {', '.join(self.choices)}"))


@dataclass(frozen=True)
class Digits(Check):
    count: int

    def expects(self) -> tuple[str, str]:
        return (f"{self.count} 位数字",
                f"{self.count} digits")

    def find(self, value: str) -> Finding | None:
        if not (value.isascii() and value.isdigit()):
            return Finding(
                "format",
                Bilingual(f"应为 {self.count} 位数字, 现为 '{shown(value)}'",
                          f"must be {self.count} digits, not '{shown(value)}'"))
        if len(value) != self.count:
            return Finding(
                "length",
                Bilingual(f"应为 {self.count} 位数字, 现为 {len(value)} 位",
                          f"must be {self.count} digits, not {len(value)}"))
        return None


@dataclass(frozen=True)
class Count(Check):
    """A whole number written as a string ("12"), as 件数 and 备案序号 are."""

    max_digits: int
    expect_zh: ClassVar[str] = "不带小数的非负整数, 如 12"
    expect_en: ClassVar[str] = 'a whole number as a string, e.g. "12"'

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if not (value.isascii() and value.isdigit()):
            return Finding(
                "format",
                Bilingual(f"应为不带小数的非负整数, 如 12, 现为 '{shown(value)}'",
                          f"must be a whole number such as \"12\", not '{shown(value)}'"))
        if len(value) > self.max_digits:
            return Finding(
                "length",
                Bilingual(f"最多 {self.max_digits} 位数字", f"at most {self.max_digits} digits"))
        return None


_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


@dataclass(frozen=True)
class DecimalText(Check):
    """A non-negative decimal string: at most `digits` before the point and `places` after."""

    digits: int
    places: int

    def expects(self) -> tuple[str, str]:
        return (f"数字 (最多 {self.places} 位小数, 写成文本如 \"12.50\")",
                f'a decimal string with up to {self.places} decimals, e.g. "12.50"')

    def find(self, value: str) -> Finding | None:
        match = _DECIMAL.fullmatch(value) if value.isascii() else None
        if match is None:
            return Finding(
                "format",
                Bilingual(f"应为数字, 如 12.50, 现为 '{shown(value)}' (不要千位分隔符和单位)",
                          f"must be a decimal number such as 12.50, not '{shown(value)}' (no "
                          "thousands separators or units)"))
        whole, fraction = match.group(1), match.group(2) or ""
        if len(fraction) > self.places:
            return Finding(
                "format",
                Bilingual(f"小数最多 {self.places} 位, 现为 {len(fraction)} 位",
                          f"at most {self.places} decimals, not {len(fraction)}"))
        if len(whole.lstrip("0")) > self.digits:
            return Finding(
                "length",
                Bilingual(f"整数部分最多 {self.digits} 位",
                          f"at most {self.digits} digits before the decimal point"))
        return None


def parse_decimal(value: Any, check: DecimalText) -> Decimal | None:
    """The value as a Decimal when it is a well-formed decimal string, else None."""
    if not isinstance(value, str) or value == "" or check.find(value) is not None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern already guarantees a number
        return None


def parse_date(value: str) -> date | None:
    if len(value) != 8 or not (value.isascii() and value.isdigit()):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


@dataclass(frozen=True)
class DateText(Check):
    expect_zh: ClassVar[str] = "YYYYMMDD 格式的日期, 如 20261201"
    expect_en: ClassVar[str] = "a date as YYYYMMDD, e.g. 20261201"

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if parse_date(value) is None:
            return Finding(
                "format",
                Bilingual(f"应为 YYYYMMDD 格式的真实日期, 如 20261201, 现为 '{shown(value)}'",
                          f"must be a real date as YYYYMMDD, e.g. 20261201, not '{shown(value)}'"))
        return None


@dataclass(frozen=True)
class Pattern(Check):
    regex: str
    max_len: int
    expect_zh: str
    expect_en: str

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if len(value) > self.max_len:
            return Finding(
                "length",
                Bilingual(f"超长: {len(value)} 个字符, 最多 {self.max_len} 个",
                          f"too long: {len(value)} characters, at most {self.max_len}"))
        if re.fullmatch(self.regex, value) is None:
            return Finding(
                "format",
                Bilingual(f"'{shown(value)}' 格式不对, 应为{self.expect_zh}",
                          f"'{shown(value)}' is not {self.expect_en}"))
        return None


@dataclass(frozen=True)
class CreditCode(Check):
    expect_zh: ClassVar[str] = "18 位统一社会信用代码"
    expect_en: ClassVar[str] = "an 18-character unified social credit code"

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if len(value) != 18:
            return Finding(
                "length",
                Bilingual(f"应为 18 位, 现为 {len(value)} 位",
                          f"must be 18 characters, not {len(value)}"))
        bad = [c for c in value if c not in CREDIT_ALPHABET]
        if bad:
            return Finding(
                "format",
                Bilingual(f"含有不允许的字符 '{bad[0]}' (只用数字和除 I O S V Z 外的大写字母)",
                          f"has the character '{bad[0]}' (digits and capital letters except I, "
                          "O, S, V, Z only)"))
        if not is_valid_credit_code(value):
            return Finding(
                "format",
                Bilingual("校验码 (第 18 位) 不对, 请核对代码是否抄错",
                          "the check character (18th) is wrong; check for a typo"))
        return None


# ISO 6346 letter values: A=10 upwards, skipping 11, 22 and 33 (multiples of 11).
_ISO6346_VALUES = {letter: value for letter, value in zip(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    [v for v in range(10, 39) if v % 11], strict=True)}


def container_check_digit(first10: str) -> str:
    """The ISO 6346 check digit of owner code + category + 6-digit serial ("MSCU123456")."""
    total = 0
    for position, char in enumerate(first10):
        value = int(char) if char.isdigit() else _ISO6346_VALUES[char]
        total += value << position
    return str(total % 11 % 10)


@dataclass(frozen=True)
class ContainerNumber(Check):
    expect_zh: ClassVar[str] = ("ISO 6346 集装箱号: 4 个大写字母 (第 4 个为 U/J/Z) + 7 位数字, "
                                "如 MSCU1234566")
    expect_en: ClassVar[str] = ("an ISO 6346 number: 4 capital letters (4th U, J or Z) and 7 "
                                "digits")

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if re.fullmatch(r"[A-Z]{3}[UJZ][0-9]{7}", value) is None:
            return Finding(
                "format",
                Bilingual(f"'{shown(value)}' 不是集装箱号; 应为{self.expect_zh}",
                          f"'{shown(value)}' is not {self.expect_en}"))
        expected = container_check_digit(value[:10])
        if value[10] != expected:
            return Finding(
                "format",
                Bilingual(f"校验位不对: 应为 {expected}, 请核对箱号是否抄错",
                          f"wrong check digit: expected {expected}; check for a typo"))
        return None


Required = Callable[[Context], bool]


def always(_: Context) -> bool:
    return True


def never(_: Context) -> bool:
    return False


def on_import(ctx: Context) -> bool:
    return ctx.direction == "import"


def on_declaration(ctx: Context) -> bool:
    return ctx.document_type == "declaration"


def _needs_contract(ctx: Context) -> bool:
    mode = ctx.text("trade_mode")
    return mode == "0110" or mode[:2] in ("02", "06")


@dataclass(frozen=True)
class Field:
    key: str
    zh: str
    check: Check
    required: Required = never
    section: str = ""


@dataclass(frozen=True)
class Group:
    """An object-valued field (a party, a charge)."""

    key: str
    zh: str
    fields: tuple[Field, ...]
    required: Required = never
    kind: str = ""  # "party", "overseas", "charge": which completeness rule applies

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)


_UPPER_ALNUM_ZH = "大写字母和数字"
_PARTY = (
    Field("credit_code", "统一社会信用代码", CreditCode()),
    Field("customs_code", "海关编码", Pattern(r"[0-9A-Z]{10}", 10, "10 位数字或大写字母的海关编码",
                                               "10 digits or capital letters")),
    Field("name", "企业名称", Text(100)),
)
_OVERSEAS = (
    Field("name", "企业名称", Text(100)),
    Field("aeo_code", "AEO 编码", Pattern(r"[A-Z]{2}[0-9A-Z]{1,18}", 20,
                                          "国别代码 + 企业编码, 如 SG123456789012",
                                          "a country code and the company code, e.g. "
                                          "SG123456789012")),
)
_CHARGE = (
    Field("mark", "标记", Choice({"1": "率", "2": "单价", "3": "总价"}, "1 率, 2 单价 或 3 总价",
                                 "1 (rate), 2 (unit price) or 3 (total)")),
    Field("amount", "金额/费率", DecimalText(14, 4)),
    Field("currency", "币制", Code("currency")),
)
_RECORD = Pattern(r"[0-9A-Z]{1,12}", 12, f"最多 12 位{_UPPER_ALNUM_ZH}, 如 C53017450010",
                  "up to 12 digits or capital letters, e.g. C53017450010")

HEADER: tuple[Field | Group, ...] = (
    Field("declaration_customs", "申报地海关", Code("customs"), always),
    Field("ie_port", "进出境关别", Code("customs"), always),
    Field("record_number", "备案号", _RECORD),
    Field("contract_number", "合同协议号", Text(32), _needs_contract),
    Field("ie_date", "进出口日期", DateText(), on_import, "QP FAQ §十三(十三)"),
    Group("domestic_party", "境内收发货人", _PARTY, always, "party"),
    Group("overseas_party", "境外收发货人", _OVERSEAS, always, "overseas"),
    Group("owner", "消费使用单位/生产销售单位", _PARTY, always, "party"),
    Group("declaring_agent", "申报单位", _PARTY, never, "party"),
    Field("transport_mode", "运输方式", Code("transport_mode"), always),
    Field("transport_name", "运输工具名称", Text(32)),
    Field("voyage_number", "航次号", Text(32)),
    Field("bill_of_lading", "提运单号", Text(32)),
    Field("goods_place", "货物存放地点", Text(100), on_import),
    Field("trade_mode", "监管方式", Code("trade_mode"), always),
    Field("levy_kind", "征免性质", Code("levy_kind"), on_declaration),
    Field("licence_number", "许可证号", Text(20)),
    Field("trade_country", "贸易国(地区)", Code("country"), always),
    Field("departure_country", "启运国/运抵国", Code("country"), always),
    Field("transit_port", "经停港/指运港", Text(20)),
    Field("transaction_mode", "成交方式", Code("transaction_mode"), always),
    Group("freight", "运费", _CHARGE, kind="charge"),
    Group("insurance", "保费", _CHARGE, kind="charge"),
    Group("other_charges", "杂费", _CHARGE, kind="charge"),
    Field("packages", "件数", Count(9), always),
    Field("package_type", "包装种类", Code("package_type"), always),
    Field("gross_weight", "毛重(千克)", DecimalText(14, 5), always),
    Field("net_weight", "净重(千克)", DecimalText(14, 5), always),
    Field("entry_type", "报关单类型", Code("entry_type"), always),
    Field("related_entry_number", "关联报关单", Digits(18), section="QP FAQ §十三(九)"),
    Field("related_record_number", "关联备案", _RECORD, section="QP FAQ §十三(九)"),
    Field("remarks", "标记唛码及备注", Text(255)),
)

QUANTITY = DecimalText(14, 5)
UNIT_PRICE = DecimalText(14, 4)
TOTAL_PRICE = DecimalText(16, 2)
WEIGHT = DecimalText(14, 5)

ITEM: tuple[Field, ...] = (
    # item_number is an integer, checked by the document walker, not a text field.
    Field("record_item_number", "备案序号", Count(9)),
    Field("hs_code", "商品编号", Digits(10), always),
    Field("name", "商品名称", Text(100), always),
    Field("specification", "规格型号", Text(255), always),
    Field("quantity", "成交数量", QUANTITY, always),
    Field("unit", "成交计量单位", Code("unit"), always),
    Field("legal_quantity", "法定第一数量", QUANTITY, on_declaration),
    Field("legal_unit", "法定第一计量单位", Code("unit"), on_declaration),
    Field("second_quantity", "法定第二数量", QUANTITY),
    Field("second_unit", "法定第二计量单位", Code("unit")),
    Field("unit_price", "单价", UNIT_PRICE, always),
    Field("total_price", "总价", TOTAL_PRICE, always),
    Field("currency", "币制", Code("currency"), always),
    Field("origin_country", "原产国(地区)", Code("country"), always),
    Field("destination_country", "最终目的国(地区)", Code("country"), always),
    Field("domestic_region", "境内目的地/境内货源地", Digits(5), always),
    Field("duty_mode", "征免", Code("duty_mode"), always),
)
ITEM_KEYS = ("item_number", *(f.key for f in ITEM))

CONTAINER: tuple[Field, ...] = (
    Field("number", "集装箱号", ContainerNumber(), always, "QP FAQ §十三(八)2"),
    Field("size", "集装箱规格", Code("container_size"), always, "QP FAQ §十三(八)2(2)"),
    Field("tare_weight", "集装箱自重(千克)", DecimalText(6, 2), section="QP FAQ §十三(八)2(3)"),
)

ATTACHED: tuple[Field, ...] = (
    Field("code", "随附单证代码", Code("document_code"), always),
    Field("number", "随附单证编号", Text(32), always),
)

LIST_LABELS = {"items": ("商品", "项"), "containers": ("集装箱", "个"),
               "attached_documents": ("随附单证", "个")}


@dataclass(frozen=True)
class Where:
    """How a path reads in a message: "商品第3项: " and "items[2].hs_code"."""

    path: str
    zh_prefix: str = ""
    key_prefix: str = ""  # "domestic_party." for a group's fields
    zh_group: str = ""    # "境内收发货人 " for a group's fields

    def child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def display(self, key: str) -> str:
        # English names drop the "header." prefix: "transport_mode: …", "items[2].hs_code: …".
        full = self.child(key)
        return full.removeprefix("header.")


@dataclass
class Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, code: str, zh: str, en: str, section: str = "") -> None:
        self.problems.append(Problem(path, code, Bilingual(zh, en), section))

    def finding(self, where: Where, f: Field, finding: Finding) -> None:
        name = f"{where.zh_prefix}{where.zh_group}{f.zh}({where.key_prefix}{f.key})"
        self.add(where.child(f.key), finding.code, f"{name} {finding.text.zh}",
                 f"{where.display(f.key)}: {finding.text.en}", f.section)

    def missing(self, where: Where, f: Field, section: str = "", why_zh: str = "",
                why_en: str = "") -> None:
        name = f"{where.zh_prefix}{where.zh_group}{f.zh}({where.key_prefix}{f.key})"
        why_zh = why_zh or "申报时必填"
        why_en = why_en or "required for declaring"
        expect_zh, expect_en = f.check.expects()
        self.add(where.child(f.key), "required",
                 f"{name} 未填写, {why_zh}; 请填写{expect_zh}",
                 f"{where.display(f.key)}: {why_en}; expected {expect_en}",
                 section or f.section)


def json_type(value: Any, *, zh: bool = False) -> str:
    """The JSON name of a Python value's type, for messages a broker understands."""
    if value is None:
        name = ("null", "null")
    elif isinstance(value, bool):
        name = ("true/false", "true/false")
    elif isinstance(value, int | float | Decimal):  # Decimal: a JSON float read exactly
        name = ("a number", "数值")
    elif isinstance(value, list | tuple):
        name = ("a list", "列表")
    elif isinstance(value, Mapping):
        name = ("an object", "对象")
    elif isinstance(value, str):
        name = ("a string", "文本")
    else:
        name = (type(value).__name__, type(value).__name__)
    return name[1] if zh else name[0]


def check_value(out: Collector, where: Where, f: Field, value: Any) -> str:
    """Report a non-string or badly formatted value; return the string ("" if none/bad type)."""
    if isinstance(value, str):
        if value:
            finding = f.check.find(value)
            if finding is not None:
                out.finding(where, f, finding)
        return value
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    hint_zh = ", 数字请加引号写成文本如 \"12.50\"" if number else ""
    hint_en = ' (write numbers as strings, e.g. "12.50")' if number else ""
    if value is None:
        hint_zh, hint_en = ", 空项请写 \"\"", ' (leave an empty field as "")'
    out.finding(where, f, Finding(
        "format",
        Bilingual(f"应为文本, 现为 {json_type(value, zh=True)}{hint_zh}",
                  f"must be a string, not {json_type(value)}{hint_en}")))
    return ""
