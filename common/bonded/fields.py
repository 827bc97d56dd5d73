"""The fields of an eport-bonded/1 document (bonded manual §2.2.1.2 header, §2.2.1.3 body) and the
check of one filled-in value.

The value checks (`Text`, `Pattern`, `DateText`, `Count`, the customs `Code` for the country and
unit tables) are the customs model's; `Quantity` (18 characters) and `BondedCode` (our tables)
are added here. A field knows whether it is required, optional, required with an e-book
management mode, or system-filled (the client leaves it empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from eport.common.bonded.tables import has_code as bonded_has_code
from eport.common.bonded.tables import table_info as bonded_table_info
from eport.common.customs.fields import (
    Check,
    Code,
    Count,
    DateText,
    Finding,
    Pattern,
    Text,
    shown,
)
from eport.common.customs.tables import has_code as customs_has_code
from eport.common.customs.tables import numeric_country
from eport.common.profile import is_valid_credit_code
from eport.common.text import Bilingual

HEADER_SECTION = "bonded manual §2.2.1.2"


@dataclass(frozen=True)
class InvestmentCountry(Check):
    """投资国别 (bonded manual §2.2.1.2: "4 位, 企业按照国别代码表"): a code of the customs country
    table, ISO alpha-3 (CHN) or its numeric form of the older 国别代码表 (142), kept as entered:
    the manual's 4-character field holds either."""

    def expects(self) -> tuple[str, str]:
        return ("国别代码表中的代码, 如 CHN 或 142 (中国), HKG 或 110 (中国香港)",
                "a code of the customs country table, alpha-3 or numeric, e.g. CHN or 142 "
                "(China), USA or 502")

    def find(self, value: str) -> Finding | None:
        if customs_has_code("country", value) or numeric_country(value):
            return None
        if value.isdigit():
            return Finding(
                "code",
                Bilingual(f"代码 '{shown(value)}' 不在国别代码表中, 请填写国别代码, 如 142 "
                          "(中国), 110 (中国香港), 502 (美国), 或 CHN",
                          f"'{shown(value)}' is not a numeric code of the customs country table; "
                          "use e.g. 142 (China), 110 (Hong Kong), 502 (USA), or CHN"))
        return Code("country").find(value)
BODY_SECTION = "bonded manual §2.2.1.3"
CHECKS_SECTION = "bonded manual §2.4"
QUANTITY_LENGTH = 18

# How a field is required: always, never, only when the management mode uses an e-book, or
# never filled by the client (the system fills it).
REQUIRED = "required"
OPTIONAL = "optional"
EBOOK = "ebook"
SYSTEM = "system"


@dataclass(frozen=True)
class BondedCode(Check):
    """A code of one of this package's tables (管理模式, 企业性质)."""

    table: str

    def expects(self) -> tuple[str, str]:
        info = bonded_table_info(self.table)
        return (f"{info.title_zh}中的代码, 如 {info.example_zh}",
                f"a code of the {self.table} table, e.g. {info.example_code} ({info.example_en})")

    def find(self, value: str) -> Finding | None:
        if bonded_has_code(self.table, value):
            return None
        info = bonded_table_info(self.table)
        listed = ", ".join(f"{k} {v}" for k, v in info.codes.items())
        by_label = [k for k, v in info.codes.items() if v == value]
        zh = f"'{shown(value)}' 不在{info.title_zh}中; 可填 {listed}"
        en = f"'{shown(value)}' is not a code of the {self.table} table; use one of " \
             f"{', '.join(info.codes)}"
        if by_label:
            zh += f"; '{shown(value)}' 请填代码 {by_label[0]}"
            en += f"; for '{shown(value)}' write the code {by_label[0]}"
        return Finding("code", Bilingual(zh, en))


_QUANTITY = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Quantity(Check):
    """A non-negative decimal string of at most 18 characters (the point included)."""

    max_len: int = QUANTITY_LENGTH
    expect_zh: ClassVar[str] = f"非负数字, 写成文本, 最多 {QUANTITY_LENGTH} 个字符, 如 \"1250.5\""
    expect_en: ClassVar[str] = (f"a non-negative decimal string of up to {QUANTITY_LENGTH} "
                                'characters, e.g. "1250.5"')

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if not (value.isascii() and _QUANTITY.fullmatch(value)):
            return Finding(
                "format",
                Bilingual(f"应为非负数字, 如 1250.5, 现为 '{shown(value)}' "
                          "(不要千位分隔符、单位和正负号)",
                          "must be a non-negative decimal number such as 1250.5, not "
                          f"'{shown(value)}' (no thousands separators, units or signs)"))
        if len(value) > self.max_len:
            return Finding(
                "length",
                Bilingual(f"超长: {len(value)} 个字符, 最多 {self.max_len} 个",
                          f"too long: {len(value)} characters, at most {self.max_len}"))
        return None


@dataclass(frozen=True)
class CustomsCode(Check):
    """核查企业代码: the 10-character customs code; an 18-character credit code gets a hint."""

    expect_zh: ClassVar[str] = "10 位海关编码 (数字或大写字母), 如 1105030002"
    expect_en: ClassVar[str] = "a 10-character customs code (digits or capital letters)"

    def expects(self) -> tuple[str, str]:
        return self.expect_zh, self.expect_en

    def find(self, value: str) -> Finding | None:
        if re.fullmatch(r"[0-9A-Z]{10}", value):
            return None
        if is_valid_credit_code(value):
            return Finding(
                "format",
                Bilingual("这是 18 位统一社会信用代码; 此处应填 10 位海关编码",
                          "this is an 18-character unified social credit code; the 10-character "
                          "customs code belongs here"))
        return Finding(
            "format" if len(value) <= 10 else "length",
            Bilingual(f"应为{self.expect_zh}, 现为 '{shown(value)}'",
                      f"must be {self.expect_en}, not '{shown(value)}'"))


@dataclass(frozen=True)
class Empty(Check):
    """A system-filled field: the client leaves it empty; any value is a problem (reported by
    the document check as a rule, not as a format problem)."""

    def expects(self) -> tuple[str, str]:
        return "留空 (系统返填)", "empty (filled by the system)"

    def find(self, value: str) -> Finding | None:
        return None


@dataclass(frozen=True)
class BondedField:
    key: str
    zh: str
    check: Check
    required: str = OPTIONAL
    section: str = HEADER_SECTION

    @property
    def max_len(self) -> int:
        """The longest value the field can hold, for the CSV reader's early length check."""
        limit = getattr(self.check, "max_len", None) or getattr(self.check, "max_digits", None)
        return int(limit) if limit else 0


_H = HEADER_SECTION
_B = BODY_SECTION

HEADER: tuple[BondedField, ...] = (
    BondedField("internal_number", "企业内部编号",
                Pattern(r"[0-9A-Za-z]{1,20}", 20, "最多 20 位字母或数字, 如 08091601",
                        "up to 20 letters or digits, e.g. 08091601"), REQUIRED),
    BondedField("enterprise_code", "核查企业代码", CustomsCode(), REQUIRED),
    BondedField("enterprise_name", "核查企业名称", Text(30), REQUIRED),
    BondedField("declaration_date", "申报日期", Empty(), SYSTEM),
    BondedField("stocktaking_date", "盘库日期", DateText(), REQUIRED),
    BondedField("management_mode", "管理模式", BondedCode("management_mode"), REQUIRED),
    BondedField("ebook_number", "账册编号",
                Pattern(r"[0-9A-Z]{1,12}", 12, "最多 12 位数字或大写字母, 如 B01041234567",
                        "up to 12 digits or capital letters, e.g. B01041234567"), EBOOK),
    BondedField("legal_representative", "法定代表人", Text(16)),
    BondedField("registered_name", "工商注册名称", Text(200)),
    BondedField("registered_address", "工商注册地址", Text(100)),
    BondedField("investor", "投资者", Text(200)),
    BondedField("phone", "企业电话", Text(32)),
    BondedField("contact_phone", "联系人电话", Text(20)),
    BondedField("enterprise_nature", "企业性质", BondedCode("enterprise_nature"), REQUIRED),
    BondedField("contact", "联系人", Text(16)),
    BondedField("registered_capital", "注册资本", Text(21)),
    BondedField("plant_source", "厂房来源", Text(255)),
    BondedField("investment_country", "投资国别", InvestmentCountry()),
    BondedField("staff_count", "现有人数", Count(10)),
    BondedField("equipment_source", "设备来源", Text(255)),
    BondedField("business_scope", "经营范围", Text(2000)),
    BondedField("remarks", "备注", Text(255)),
)

QUANTITY = Quantity()
# The parts of 总库存数量 (bonded manual §2.2.1.3), in screen order: the three required ones first.
REQUIRED_PARTS = ("stock_qty", "online_qty", "transferred_in_undeclared_qty")
OPTIONAL_PARTS = ("finished_converted_qty", "outsourced_converted_qty",
                  "defective_converted_qty", "in_transit_qty")
STOCK_PARTS = REQUIRED_PARTS + OPTIONAL_PARTS
# Fields the e-book record fixes for uses_ebook modes (specification may differ).
EBOOK_FIXED = ("hs_code", "name", "unit")

ITEM: tuple[BondedField, ...] = (
    # item_number (序号) is an integer filled by the system, checked by the document walker.
    BondedField("record_item_number", "备案序号",
                Pattern(r"[0-9A-Za-z]{1,9}", 9, "最多 9 位数字或字母, 如 15",
                        "up to 9 digits or letters, e.g. 15"), REQUIRED, _B),
    BondedField("hs_code", "商品编码",
                Pattern(r"[0-9]{1,10}", 10, "最多 10 位数字的商品编码, 如 3926909090",
                        "an HS code of up to 10 digits, e.g. 3926909090"), REQUIRED, _B),
    BondedField("name", "商品名称", Text(50), REQUIRED, _B),
    BondedField("specification", "规格型号", Text(50), OPTIONAL, _B),
    BondedField("unit", "计量单位", Code("unit"), REQUIRED, _B),
    BondedField("stock_qty", "料件库存数量", QUANTITY, REQUIRED, _B),
    BondedField("online_qty", "料件在线数量", QUANTITY, REQUIRED, _B),
    BondedField("transferred_in_undeclared_qty", "料件转进未申报数量", QUANTITY, REQUIRED, _B),
    BondedField("finished_converted_qty", "成品折料数量", QUANTITY, OPTIONAL, _B),
    BondedField("outsourced_converted_qty", "外发加工折料数量", QUANTITY, OPTIONAL, _B),
    BondedField("defective_converted_qty", "残次品等折料数量", QUANTITY, OPTIONAL, _B),
    BondedField("in_transit_qty", "原料在途数量", QUANTITY, OPTIONAL, _B),
    BondedField("total_stock_qty", "总库存数量", QUANTITY, REQUIRED, _B),
)
HEADER_KEYS: tuple[str, ...] = tuple(f.key for f in HEADER)
ITEM_KEYS: tuple[str, ...] = ("item_number", *(f.key for f in ITEM))
HEADER_FIELDS = {f.key: f for f in HEADER}
ITEM_FIELDS = {f.key: f for f in ITEM}
