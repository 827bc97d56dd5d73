"""The eport-bonded/1 document: a bonded verification form (保税核查表, bonded manual §2.2).

The format is docs/bonded-document.md. `save_problems` and `declare_problems` are the checks
of bonded manual §2.4 at 暂存 and at 申报; they never raise, whatever they are given (only a
`lookup` that raises can make them raise). `normalise` fills what the system fills (序号,
总库存数量), `fill_from_ebook` what an e-book record fixes, `stock_warnings` names overridden
totals.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from eport.common.bonded.fields import (
    BODY_SECTION,
    EBOOK,
    EBOOK_FIXED,
    HEADER,
    HEADER_FIELDS,
    HEADER_SECTION,
    ITEM,
    ITEM_FIELDS,
    ITEM_KEYS,
    OPTIONAL_PARTS,
    QUANTITY,
    REQUIRED,
    REQUIRED_PARTS,
    SYSTEM,
    BondedField,
)
from eport.common.bonded.tables import table_info
from eport.common.customs.fields import Problem, json_type, shown
from eport.common.text import Bilingual

__all__ = [
    "FORMAT", "MAX_ITEMS", "EBookItem", "EBookLookup", "Problem", "declare_problems",
    "fill_from_ebook", "new_bonded_document", "new_bonded_item", "normalise", "save_problems",
    "stock_warnings", "subsystem_for", "total_stock", "uses_ebook"]

FORMAT = "eport-bonded/1"
TOP_KEYS = ("format", "client_reference", "header", "items")
# A verification lists every bonded material of a ledger: thousands of lines are normal. Far
# more is a wrong export, refused instead of being checked line by line.
MAX_ITEMS = 20_000
_CLIENT_REFERENCE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class EBookItem:
    """One record item (备案序号) of an e-book or handbook record database."""

    ebook_number: str
    record_item_number: str
    hs_code: str
    name: str
    specification: str
    unit: str


# (ebook_number, record_item_number) -> the record item, or None when there is none.
EBookLookup = Callable[[str, str], EBookItem | None]


def new_bonded_item(item_number: int) -> dict[str, Any]:
    return {"item_number": item_number, **{f.key: "" for f in ITEM}}


def new_bonded_document(*, today: date | None = None) -> dict[str, Any]:
    """An empty document: every key present ("" when unfilled), one empty body item and a fresh
    client_reference. 申报日期 is filled by the system at 申报 and 盘库日期 is the enterprise's
    own date (bonded manual §2.2.1.2), so both stay empty; `today` is accepted for symmetry with
    the customs model's new_document and not used."""
    del today
    return {"format": FORMAT, "client_reference": uuid.uuid4().hex,
            "header": {f.key: "" for f in HEADER}, "items": [new_bonded_item(1)]}


def _mode_code(management_mode: str) -> str:
    """The code of a management mode given by code or by its Chinese label, "" if unknown."""
    info = table_info("management_mode")
    if not isinstance(management_mode, str):
        return ""
    if management_mode in info.codes:
        return management_mode
    for code, label in info.codes.items():
        if label == management_mode:
            return code
    return ""


def uses_ebook(management_mode: str) -> bool:
    """True for 电子账册 and 纸质手册电子化 (by code or label): the e-book number is required
    and item code, name and unit come from the record (bonded manual §2.2.1.2, §2.2.1.3)."""
    code = _mode_code(management_mode)
    return bool(code) and code in table_info("management_mode").uses_ebook


def subsystem_for(management_mode: str) -> str:
    """The delegable subsystem of e-book manual §4 a document of this mode belongs to: "ebook"
    (加工贸易账册) for 电子账册, "handbook" (加工贸易手册) for the handbook modes and 其他.
    ValueError for a mode that is not in the table."""
    code = _mode_code(management_mode)
    info = table_info("management_mode")
    if not code or code not in info.subsystem:
        raise ValueError(f"unknown management mode {shown(str(management_mode))!r}; known: "
                         f"{', '.join(f'{k} {v}' for k, v in info.codes.items())}")
    return info.subsystem[code]


# -- the checks -----------------------------------------------------------------------------


@dataclass
class _Found:
    """What a walk over a document found, kept apart as bonded manual §2.4 treats them apart."""

    structure: list[Problem] = field(default_factory=list)  # always all
    formats: list[Problem] = field(default_factory=list)    # screen order
    empties: list[Problem] = field(default_factory=list)    # screen order
    rules: list[Problem] = field(default_factory=list)      # always all
    body_early: list[Problem] = field(default_factory=list)  # body before a complete header


@dataclass(frozen=True)
class _Where:
    path: str       # "header" or "items[2]"
    zh_prefix: str  # "" or "表体第3项 "

    def child(self, key: str) -> str:
        return f"{self.path}.{key}"

    def display(self, key: str) -> str:
        return self.child(key).removeprefix("header.")


_HEADER_WHERE = _Where("header", "")


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    return value if isinstance(value, str) else ""


def _format_problem(where: _Where, f: BondedField, code: str, zh: str, en: str) -> Problem:
    return Problem(where.child(f.key), code,
                   Bilingual(f"{where.zh_prefix}{f.zh} 字段格式不正确，请修改（{zh}）",
                             f"{where.display(f.key)}: the format is wrong, please correct it "
                             f"({en})"),
                   f"{f.section}, §2.4")


def _empty_problem(where: _Where, f: BondedField, why_zh: str = "", why_en: str = "") -> Problem:
    expect_zh, expect_en = f.check.expects()
    return Problem(where.child(f.key), "required",
                   Bilingual(f"{where.zh_prefix}{f.zh} 不能为空{why_zh}",
                             f"{where.display(f.key)}: must not be empty{why_en}; expected "
                             f"{expect_en} ({expect_zh})"), f"{f.section}, §2.4")


def _check_value(found: _Found, where: _Where, f: BondedField, value: Any) -> str:
    """Record a badly formatted or non-string value; return the value when it is a string
    that is empty or well-formed, else "" (so that callers only use well-formed values)."""
    if isinstance(value, str):
        if value:
            finding = f.check.find(value)
            if finding is not None:
                found.formats.append(_format_problem(where, f, finding.code,
                                                     finding.text.zh, finding.text.en))
                return ""
        return value
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    hint_zh = ", 数字请加引号写成文本如 \"12.5\"" if number else ""
    hint_en = ' (write numbers as strings, e.g. "12.5")' if number else ""
    if value is None:
        hint_zh, hint_en = ", 空项请写 \"\"", ' (leave an empty field as "")'
    found.formats.append(_format_problem(
        where, f, "format", f"应为文本, 现为 {json_type(value, zh=True)}{hint_zh}",
        f"must be a string, not {json_type(value)}{hint_en}"))
    return ""


def _unknown_keys(found: _Found, raw: Mapping[Any, Any], known: Sequence[str], path: str,
                  zh: str, section: str) -> None:
    for key in raw:
        if key not in known:
            name = shown(str(key))
            where = f"{path}.{name}" if path else name
            found.structure.append(Problem(
                where, "format", Bilingual(f"{zh}中没有 '{name}' 这一项 (拼写错误?)",
                                           f"{where.removeprefix('header.')}: unknown key "
                                           "(a typo?)"), section))


def _has_content(item: Mapping[str, Any]) -> bool:
    return any(value != "" for key, value in item.items() if key != "item_number")


def _examine(document: Any, lookup: EBookLookup | None, *, declaring: bool) -> _Found:
    found = _Found()
    if not isinstance(document, Mapping):
        found.structure.append(Problem(
            "", "format", Bilingual(
                f"保税核查表应为 JSON 对象, 现为 {json_type(document, zh=True)}",
                f"a document must be a JSON object, not {json_type(document)}"), HEADER_SECTION))
        return found
    _unknown_keys(found, document, TOP_KEYS, "", "保税核查表", HEADER_SECTION)
    if document.get("format") != FORMAT:
        found.structure.append(Problem(
            "format", "format", Bilingual(
                f"格式标识(format) 应为 \"{FORMAT}\"",
                f"format: must be \"{FORMAT}\", not {shown(repr(document.get('format')))}"),
            HEADER_SECTION))
    reference = document.get("client_reference")
    if not (isinstance(reference, str) and _CLIENT_REFERENCE.fullmatch(reference)):
        found.structure.append(Problem(
            "client_reference", "format" if reference else "required", Bilingual(
                "客户端编号(client_reference) 应为 32 位小写十六进制 (新建或导入时自动生成)",
                "client_reference: must be 32 lowercase hex digits (set by new or import)"),
            HEADER_SECTION))
    raw_header = document.get("header", {})
    header: Mapping[str, Any] = raw_header if isinstance(raw_header, Mapping) else {}
    if not isinstance(raw_header, Mapping):
        found.structure.append(Problem(
            "header", "format", Bilingual(
                f"表头(header) 应为对象, 现为 {json_type(raw_header, zh=True)}",
                f"header: must be an object, not {json_type(raw_header)}"), HEADER_SECTION))
    _unknown_keys(found, header, [f.key for f in HEADER], "header", "表头", HEADER_SECTION)
    mode = _text(header, "management_mode")
    ebook_mode = uses_ebook(mode) and HEADER_FIELDS["management_mode"].check.find(mode) is None
    header_values: dict[str, str] = {}
    header_empty: list[str] = []
    for f in HEADER:
        value = header.get(f.key, "")
        if f.required == SYSTEM:
            if value != "":
                found.rules.append(Problem(
                    _HEADER_WHERE.child(f.key), "rule", Bilingual(
                        f"{f.zh} 由系统在申报成功时返填, 请留空",
                        f"{f.key}: filled by the system when the declaration succeeds; leave "
                        "it empty"), f.section))
            continue
        text = _check_value(found, _HEADER_WHERE, f, value)
        header_values[f.key] = text
        needed = f.required == REQUIRED or (f.required == EBOOK and ebook_mode)
        if needed and value == "":
            why = ("（管理模式为电子账册或纸质手册电子化时必填）",
                   " when the management mode is an e-book or an electronic handbook")
            found.empties.append(_empty_problem(_HEADER_WHERE, f, *(
                why if f.required == EBOOK else ("", ""))))
            header_empty.append(f.zh)
    items = _examine_items(found, document, declaring=declaring)
    if header_empty and any(_has_content(item) for _, item in items):
        found.body_early.append(Problem(
            "items", "rule", Bilingual(
                f"表头未录入完成 ({', '.join(header_empty)} 不能为空), 不允许录入表体",
                "items: the header is not complete (required fields empty: "
                f"{', '.join(f.key for f in HEADER if f.zh in header_empty)}); the body may be "
                "entered only after the header"), HEADER_SECTION))
    if ebook_mode and lookup is not None and header_values.get("ebook_number"):
        _ebook_checks(found, items, header_values["ebook_number"], lookup)
    return found


def _examine_items(found: _Found, document: Mapping[str, Any], *, declaring: bool
                   ) -> list[tuple[int, Mapping[str, Any]]]:
    """Check each body item; return (index, item) of those that are objects."""
    raw = document.get("items", [])
    if not isinstance(raw, list):
        found.structure.append(Problem(
            "items", "format", Bilingual(f"表体(items) 应为列表, 现为 {json_type(raw, zh=True)}",
                                         f"items: must be a list, not {json_type(raw)}"),
            BODY_SECTION))
        return []
    if len(raw) > MAX_ITEMS:
        found.structure.append(Problem(
            "items", "rule", Bilingual(f"表体有 {len(raw)} 项, 最多 {MAX_ITEMS} 项",
                                       f"items: {len(raw)} items, at most {MAX_ITEMS}"),
            BODY_SECTION))
        return []
    if declaring and not raw:
        found.empties.append(Problem(
            "items", "required", Bilingual(
                "表体 不能为空",
                "items: must not be empty; a verification lists at least one item"),
            f"{BODY_SECTION}, §2.4"))
    items: list[tuple[int, Mapping[str, Any]]] = []
    for index, entry in enumerate(raw):
        where = _Where(f"items[{index}]", f"表体第{index + 1}项 ")
        if not isinstance(entry, Mapping):
            found.structure.append(Problem(
                where.path, "format", Bilingual(
                    f"{where.zh_prefix}应为对象, 现为 {json_type(entry, zh=True)}",
                    f"{where.path}: must be an object, not {json_type(entry)}"), BODY_SECTION))
            continue
        _unknown_keys(found, entry, ITEM_KEYS, where.path, where.zh_prefix.strip(), BODY_SECTION)
        number = entry.get("item_number")
        if type(number) is not int or number != index + 1:
            found.rules.append(Problem(
                where.child("item_number"), "rule", Bilingual(
                    f"{where.zh_prefix}序号 由系统自动反填, 应为 {index + 1}, 现为 "
                    f"{shown(repr(number))}",
                    f"{where.path}.item_number: filled by the system; must be {index + 1}, not "
                    f"{shown(repr(number))}"), BODY_SECTION))
        # An item with nothing in it is the screen's fresh empty row: at 暂存 it is not
        # reported as empty fields; at 申报 it is.
        blank = not _has_content(entry)
        for f in ITEM:
            value = entry.get(f.key, "")
            _check_value(found, where, f, value)
            if f.required == REQUIRED and value == "" and (declaring or not blank):
                found.empties.append(_empty_problem(where, f))
        items.append((index, entry))
    return items


def _ebook_checks(found: _Found, items: Sequence[tuple[int, Mapping[str, Any]]],
                  ebook_number: str, lookup: EBookLookup) -> None:
    number_field = ITEM_FIELDS["record_item_number"]
    for index, item in items:
        where = _Where(f"items[{index}]", f"表体第{index + 1}项 ")
        record_number = _text(item, "record_item_number")
        if not record_number or number_field.check.find(record_number) is not None:
            continue
        record = lookup(ebook_number, record_number)
        if record is None:
            found.rules.append(Problem(
                where.child("record_item_number"), "rule", Bilingual(
                    f"{where.zh_prefix}备案序号 {shown(record_number)} 在账册 {ebook_number} "
                    "中没有备案",
                    f"{where.path}.record_item_number: {shown(record_number)} is not a record "
                    f"item of e-book {ebook_number}"), BODY_SECTION))
            continue
        for key in EBOOK_FIXED:
            f = ITEM_FIELDS[key]
            value = item.get(key, "")
            expected = getattr(record, key)
            if isinstance(value, str) and value and value != expected:
                found.rules.append(Problem(
                    where.child(key), "rule", Bilingual(
                        f"{where.zh_prefix}{f.zh} 应与账册备案一致: 备案为 '{shown(expected)}', "
                        f"现为 '{shown(value)}' (由备案序号调出, 不能修改)",
                        f"{where.path}.{key}: must equal the e-book record's '{shown(expected)}', "
                        f"not '{shown(value)}' (taken from the record item; cannot be changed)"),
                    BODY_SECTION))


def save_problems(document: Mapping[str, Any], *, lookup: EBookLookup | None = None
                  ) -> list[Problem]:
    """The checks at 暂存 (bonded manual §2.4): structure problems, then the FIRST badly formatted
    field ("xx 字段格式不正确，请修改") and the FIRST empty required one ("xxx 不能为空") in
    screen order (header, then body), then the rules: body before a complete header, a
    system-filled field given, 序号, and with an e-book mode the record checks (skipped when
    lookup is None). An empty list: the document may be saved."""
    found = _examine(document, lookup, declaring=False)
    return [*found.structure, *found.formats[:1], *found.empties[:1], *found.body_early,
            *found.rules]


def declare_problems(document: Mapping[str, Any], *, lookup: EBookLookup | None = None
                     ) -> list[Problem]:
    """The checks at 申报 (bonded manual §2.4): EVERY empty required field at once, and every
    format problem and rule problem. An empty list: the document may be declared."""
    found = _examine(document, lookup, declaring=True)
    return [*found.structure, *found.formats, *found.empties, *found.body_early,
            *found.rules]


def import_problems(document: Mapping[str, Any]) -> list[Problem]:
    """Every problem that makes a file unusable: structure, each format problem and the rules,
    but not the empty fields and not "body before the header": an imported document may be
    unfinished; 暂存 and 申报 check those."""
    found = _examine(document, None, declaring=False)
    return [*found.structure, *found.formats, *found.rules]


# -- stock totals, system-filled values, e-book filling -------------------------------------


def _quantity(value: Any) -> Decimal | None:
    if not isinstance(value, str) or value == "" or QUANTITY.find(value) is not None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern already guarantees a number
        return None


def _parts_sum(item: Mapping[str, Any]) -> Decimal | None:
    total = Decimal(0)
    for key in REQUIRED_PARTS:
        part = _quantity(item.get(key, ""))
        if part is None:
            return None
        total += part
    for key in OPTIONAL_PARTS:
        value = item.get(key, "")
        if value == "":
            continue
        part = _quantity(value)
        if part is None:
            return None
        total += part
    return total


def total_stock(item: Mapping[str, Any]) -> str:
    """总库存数量 as the sum of every part (bonded manual §2.2.1.3): 料件库存 + 料件在线 + 料件转进
    未申报 + 成品折料 + 外发加工折料 + 残次品等折料 + 原料在途; empty optional parts count as
    0. "" when a required part is empty or any part is not a well-formed quantity (the total
    cannot be computed yet). Exact decimal arithmetic: "12.50" + "1" gives "13.50"."""
    if not isinstance(item, Mapping):
        return ""
    total = _parts_sum(item)
    return "" if total is None else format(total, "f")


def normalise(document: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with what the system fills filled: missing header and item keys as "",
    序号 renumbered 1, 2, 3 …, and an empty 总库存数量 computed with total_stock (a given one is
    kept: the enterprise may override it, bonded manual §2.2.1.3). Malformed parts are kept as they
    are for the checks to report; a non-object document is a TypeError."""
    if not isinstance(document, Mapping):
        raise TypeError(f"a document must be a mapping, not {type(document).__name__}")
    result = copy.deepcopy(dict(document))
    header = result.setdefault("header", {})
    if isinstance(header, dict):
        for f in HEADER:
            header.setdefault(f.key, "")
    items = result.setdefault("items", [])
    if isinstance(items, list):
        for number, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                continue
            item["item_number"] = number
            for f in ITEM:
                item.setdefault(f.key, "")
            if item["total_stock_qty"] == "":
                item["total_stock_qty"] = total_stock(item)
    return result


def stock_warnings(document: Mapping[str, Any]) -> list[Problem]:
    """Informational: each item whose 总库存数量 was given and differs from the sum of its
    parts (code "rule"). The total is kept: the manual lets the enterprise override it."""
    warnings: list[Problem] = []
    items = document.get("items") if isinstance(document, Mapping) else None
    if not isinstance(items, list):
        return warnings
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        given = _quantity(item.get("total_stock_qty", ""))
        parts = _parts_sum(item)
        if given is None or parts is None or given == parts:
            continue
        shown_given, shown_parts = shown(str(item["total_stock_qty"])), format(parts, "f")
        warnings.append(Problem(
            f"items[{index}].total_stock_qty", "rule", Bilingual(
                f"表体第{index + 1}项 总库存数量 {shown_given} 与各项数量之和 {shown_parts} 不一致 "
                "(按企业修改的数量保留, 请确认)",
                f"items[{index}].total_stock_qty: {shown_given} differs from the sum of the "
                f"parts, {shown_parts} (kept as overridden; please confirm)"), BODY_SECTION))
    return warnings


def fill_from_ebook(document: Mapping[str, Any], lookup: EBookLookup) -> dict[str, Any]:
    """A deep copy with each item's 商品编码, 商品名称 and 计量单位 (and 规格型号 when empty)
    taken from its e-book record, for the management modes that use one (bonded manual §2.2.1.3).
    Items whose record is not found, and documents of other modes, are copied unchanged."""
    result = copy.deepcopy(dict(document)) if isinstance(document, Mapping) else {}
    header = result.get("header")
    items = result.get("items")
    if not isinstance(header, Mapping) or not isinstance(items, list):
        return result
    ebook_number = _text(header, "ebook_number")
    if not ebook_number or not uses_ebook(_text(header, "management_mode")):
        return result
    for item in items:
        if not isinstance(item, dict):
            continue
        record_number = _text(item, "record_item_number")
        record = lookup(ebook_number, record_number) if record_number else None
        if record is None:
            continue
        for key in EBOOK_FIXED:
            item[key] = getattr(record, key)
        if item.get("specification", "") in ("", None):
            item["specification"] = record.specification
    return result
