"""Rules between fields: the general 报关单填制规范 ones and those of QP FAQ §十三.

Each rule only looks at values that are filled in and well formed (a badly formatted value
has already been reported by its field check); a rule that asks for a value to be present
fires only when declaring (申报), since a saved draft (暂存) may be incomplete.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from eport.common.customs.fields import (
    CONTAINER,
    HEADER,
    ITEM,
    QUANTITY,
    TOTAL_PRICE,
    UNIT_PRICE,
    WEIGHT,
    Collector,
    Context,
    Field,
    Group,
    Where,
    parse_date,
    parse_decimal,
    shown,
)
from eport.common.customs.tables import has_code

MAX_ITEMS = 50
DEEP_PROCESSING = ("0255", "0654", "0258", "0657")  # 深加工结转 / 余料结转
ROAD, WATERWAY = "4", "2"
ROAD_SUFFIX = " /提前报关"
CENTRALISED = "集中报关(电子)"        # 集中申报 (清单月报), half-width brackets
BATCH_EXIT = "集中申报"              # 分批出区集中申报
_ROAD_NAME = re.compile(r"[^\s/]{2,20} /提前报关")
_CENTRALISED_REMARKS = re.compile(r"([0-9]{6})-([0-9]{6})集报")
S7, S8, S82, S9, S10, S13 = ("QP FAQ §十三(七)", "QP FAQ §十三(八)1", "QP FAQ §十三(八)2",
                             "QP FAQ §十三(九)", "QP FAQ §十三(十)2", "QP FAQ §十三(十三)")
S10_1, S10_ONE = "QP FAQ §十三(十)1", "QP FAQ §十三(十)"
# 通关单 (the inspection clearance forms): 监管证件代码 A (入境货物通关单, now 检验检疫) and B
# (出境货物通关单, now 电子底账).
CLEARANCE_FORMS = ("A", "B")
GENERAL = "报关单填制规范"

_HEADER_FIELDS = {f.key: f for f in HEADER if isinstance(f, Field)}
_ITEM_FIELDS = {f.key: f for f in ITEM}
_HEADER_WHERE = Where("header")


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    return value if isinstance(value, str) else ""


def _rule(out: Collector, where: Where, f: Field, zh: str, en: str, section: str) -> None:
    out.add(where.child(f.key), "rule", f"{where.zh_prefix}{f.zh}({f.key}) {zh}",
            f"{where.display(f.key)}: {en}", section)


def group_complete(out: Collector, group: Group, value: Mapping[str, Any], where: Where,
                   *, required: bool) -> None:
    """Declaring: what a party or a charge must hold once it is there (or required)."""
    fields = {f.key: f for f in group.fields}
    filled = {k for k in fields if _text(value, k)}
    if group.kind == "party" and (required or filled):
        if not filled & {"credit_code", "customs_code"}:
            out.missing(where, fields["credit_code"], GENERAL,
                        "统一社会信用代码和海关编码至少填一个",
                        "a credit code or a customs code is required")
        if "name" not in filled:
            out.missing(where, fields["name"], GENERAL)
    elif group.kind == "overseas" and required and "name" not in filled:
        out.missing(where, fields["name"], GENERAL, "申报时必填 (没有时填 NO)",
                    'required for declaring ("NO" when there is none)')
    elif group.kind == "charge" and filled:
        needed = ["mark", "amount"]
        if _text(value, "mark") in ("2", "3"):
            needed.append("currency")  # a rate (mark 1) has no currency
        for key in needed:
            if key not in filled:
                out.missing(where, fields[key], GENERAL, "填了运保杂费时必填",
                            "required once the charge is filled in")


def check(out: Collector, ctx: Context, items: Sequence[Mapping[str, Any]],
          containers: Sequence[Mapping[str, Any]], *, declaring: bool, today: date,
          attached: Sequence[Mapping[str, Any]] = ()) -> None:
    _items(out, items, declaring)
    _weights(out, ctx)
    _containers(out, containers)
    _related_entry_number(out, ctx, today)
    _deep_processing(out, ctx, declaring)
    _centralised(out, ctx, declaring)
    _centralised_kind(out, ctx, attached)
    _road(out, ctx, declaring)
    _waterway(out, ctx, declaring)
    _import_date(out, ctx, today)


def _items(out: Collector, items: Sequence[Mapping[str, Any]], declaring: bool) -> None:
    if len(items) > MAX_ITEMS:
        out.add("items", "rule", f"商品(items) 有 {len(items)} 项, 一份报关单最多 {MAX_ITEMS} 项, "
                "请拆分为多份", f"items: {len(items)} items, at most {MAX_ITEMS}; split the "
                "declaration", GENERAL)
    elif declaring and not items:
        out.add("items", "required", "商品(items) 至少要有 1 项",
                "items: at least one item is required", GENERAL)
    for index, item in enumerate(items):
        where = Where(f"items[{index}]", f"商品第{index + 1}项: ")
        quantity = parse_decimal(item.get("quantity"), QUANTITY)
        price = parse_decimal(item.get("unit_price"), UNIT_PRICE)
        total = parse_decimal(item.get("total_price"), TOTAL_PRICE)
        if quantity is not None and price is not None and total is not None:
            # The unit price has 4 decimals, often rounded from total / quantity: allow that
            # rounding (half of 0.0001 per unit) plus one fen.
            product = quantity * price
            tolerance = Decimal("0.01") + quantity * Decimal("0.00005")
            if abs(total - product) > tolerance:
                expected = product.quantize(Decimal("0.01"))
                _rule(out, where, _ITEM_FIELDS["total_price"],
                      f"应约等于 成交数量 × 单价 = {expected}, 现为 {total}",
                      f"must be about quantity × unit_price = {expected}, not {total}", GENERAL)
        if declaring:
            second = _text(item, "second_quantity"), _text(item, "second_unit")
            if bool(second[0]) != bool(second[1]):
                missing = "second_unit" if second[0] else "second_quantity"
                out.missing(where, _ITEM_FIELDS[missing], GENERAL,
                            "法定第二数量和单位须同时填写或同时不填",
                            "second_quantity and second_unit go together")


def _weights(out: Collector, ctx: Context) -> None:
    gross = parse_decimal(ctx.header.get("gross_weight"), WEIGHT)
    net = parse_decimal(ctx.header.get("net_weight"), WEIGHT)
    if gross is not None and net is not None and net > gross:
        _rule(out, _HEADER_WHERE, _HEADER_FIELDS["net_weight"],
              f"不能大于毛重 ({net} > {gross})", f"must not exceed gross_weight ({net} > {gross})",
              GENERAL)


def _containers(out: Collector, containers: Sequence[Mapping[str, Any]]) -> None:
    seen: dict[str, int] = {}
    number_field = CONTAINER[0]
    for index, container in enumerate(containers):
        number = _text(container, "number")
        if not number:
            continue
        if number in seen:
            where = Where(f"containers[{index}]", f"集装箱第{index + 1}个: ")
            _rule(out, where, number_field, f"与第 {seen[number] + 1} 个集装箱重复",
                  f"repeats containers[{seen[number]}]", S82)
        else:
            seen[number] = index


def _related_entry_number(out: Collector, ctx: Context, today: date) -> None:
    """An 18-digit entry number: 4-digit customs district, 4-digit year, 0 (export) or 1
    (import), 9-digit serial (QP FAQ §十三(九))."""
    number = ctx.text("related_entry_number")
    if len(number) != 18 or not (number.isascii() and number.isdigit()):
        return  # the field check reported it
    f = _HEADER_FIELDS["related_entry_number"]
    if not has_code("customs", number[:4]):
        _rule(out, _HEADER_WHERE, f,
              f"前 4 位 '{number[:4]}' 不是关区代码 (应为 4 位关区 + 4 位年份 + 1 位进出口标志 "
              "+ 9 位序号)", f"the first 4 digits '{number[:4]}' are not a customs "
              "district (expected district, year, 1 digit import/export flag, 9-digit serial)", S9)
    year = int(number[4:8])
    if not 1990 <= year <= today.year:
        _rule(out, _HEADER_WHERE, f, f"第 5-8 位年份 {year} 不对", f"year {year} (digits 5-8) is "
              "not plausible", S9)
    if number[8] not in "01":
        _rule(out, _HEADER_WHERE, f, "第 9 位应为 0 (出口) 或 1 (进口)",
              "digit 9 must be 0 (export) or 1 (import)", S9)


def _deep_processing(out: Collector, ctx: Context, declaring: bool) -> None:
    mode = ctx.text("trade_mode")
    if mode not in DEEP_PROCESSING:
        return
    related = _HEADER_FIELDS["related_entry_number"]
    record = _HEADER_FIELDS["related_record_number"]
    if ctx.direction == "export":
        number = ctx.text("related_entry_number")
        if len(number) == 18 and number.isdigit() and number[8] != "1":
            _rule(out, _HEADER_WHERE, related,
                  f"深加工/余料结转出口应填进口结转报关单号 (第 9 位为 1), 现为 {number}",
                  f"trade mode {mode} export: must be the import transfer "
                  "declaration's number (digit 9 is 1)", S9)
        if declaring:
            if not number:
                out.missing(_HEADER_WHERE, related, S9,
                            f"监管方式 {mode} 出口时必填进口结转报关单号",
                            f"trade mode {mode} export: the import transfer declaration's "
                            "number is required")
            if not ctx.text("related_record_number"):
                out.missing(_HEADER_WHERE, record, S9, f"监管方式 {mode} 出口时必填进口结转手册号",
                            f"trade mode {mode} export: the import transfer record number is "
                            "required")
    elif ctx.direction == "import":
        for key in ("transport_name", "related_entry_number"):
            if ctx.text(key):
                _rule(out, _HEADER_WHERE, _HEADER_FIELDS[key],
                      f"监管方式 {mode} (深加工/余料结转) 进口时不填, 请清空",
                      f"trade mode {mode} import: must be empty", S9)
        if declaring and not ctx.text("related_record_number"):
            out.missing(_HEADER_WHERE, record, S9, f"监管方式 {mode} 进口时必填出口结转手册号",
                        f"trade mode {mode} import: the export transfer record number is "
                        "required")


def _centralised(out: Collector, ctx: Context, declaring: bool) -> None:
    name = ctx.text("transport_name")
    name_field = _HEADER_FIELDS["transport_name"]
    if _half_width(name) == CENTRALISED and name != CENTRALISED:
        _rule(out, _HEADER_WHERE, name_field,
              f"括号应为半角: 请填 \"{CENTRALISED}\", 不是 \"{shown(name)}\"",
              f"the brackets must be half-width: write \"{CENTRALISED}\", "
              f"not \"{shown(name)}\"", S10)
        return
    if name != CENTRALISED:
        return
    remarks = ctx.text("remarks")
    remarks_field = _HEADER_FIELDS["remarks"]
    if not remarks:
        if declaring:
            out.missing(_HEADER_WHERE, remarks_field, S10,
                        "集中报关时必填集报时间区间, 如 071101-071130集报",
                        "a centralised declaration needs the period, e.g. 071101-071130集报")
        return
    match = _CENTRALISED_REMARKS.match(remarks)
    start = _yymmdd(match.group(1)) if match else None
    end = _yymmdd(match.group(2)) if match else None
    if start is None or end is None:
        _rule(out, _HEADER_WHERE, remarks_field,
              "集中报关时应以集报时间区间开头 (6位年月日-6位年月日集报), 如 071101-071130集报",
              "a centralised declaration's remarks start with the period as YYMMDD-YYMMDD集报, "
              "e.g. 071101-071130集报", S10)
    elif start > end:
        _rule(out, _HEADER_WHERE, remarks_field, "集报区间的开始日期晚于结束日期",
              "the period starts after it ends", S10)


def _centralised_kind(out: Collector, ctx: Context,
                      attached: Sequence[Mapping[str, Any]]) -> None:
    """十三(十)1: 分批出区集中申报 "须在一般进口报关单录入界面里进行录入", so "集中申报" is the
    transport name of import declarations only. 十三(十): "总署规定一份报关单只能对应一份通关单",
    so a centralised declaration (either name) that would carry several 通关单 is split."""
    name = ctx.text("transport_name")
    name_field = _HEADER_FIELDS["transport_name"]
    if name == BATCH_EXIT and ctx.direction and ctx.document_type and (
            ctx.direction != "import" or ctx.document_type != "declaration"):
        kind_zh = {"export": "出口", "import": "进口"}.get(ctx.direction, ctx.direction)
        kind_zh += {"filing-list": "备案清单", "declaration": "报关单"}.get(
            ctx.document_type, "")
        _rule(out, _HEADER_WHERE, name_field,
              f"\"{BATCH_EXIT}\" (分批出区集中申报) 只用于进口报关单 "
              f"(在一般进口报关单录入界面录入), 本单为{kind_zh}",
              f"\"{BATCH_EXIT}\" (batched exit from the zone, declared together) is for import "
              f"declarations only, this is an {ctx.direction} {ctx.document_type}", S10_1)
    if name not in (BATCH_EXIT, CENTRALISED):
        return
    forms = [index for index, entry in enumerate(attached)
             if _text(entry, "code") in CLEARANCE_FORMS]
    if len(forms) > 1:
        listed = ", ".join(f"随附单证第{index + 1}项" for index in forms)
        listed_en = ", ".join(f"attached_documents[{index}]" for index in forms)
        out.add("attached_documents", "rule",
                f"随附单证(attached_documents) 集中报关时一份报关单只能对应一份通关单 (代码 A/B), "
                f"现有 {len(forms)} 份 ({listed}); 请拆分报关单, 每份一个通关单",
                f"attached_documents: a centralised declaration may carry one clearance form "
                f"(通关单, codes A/B) only, not {len(forms)} ({listed_en}); split the "
                "declaration, one form each", S10_ONE)


def _half_width(text: str) -> str:
    return text.replace("（", "(").replace("）", ")")


def _yymmdd(text: str) -> date | None:
    return parse_date("20" + text)


def _road(out: Collector, ctx: Context, declaring: bool) -> None:
    customs, port = ctx.text("declaration_customs"), ctx.text("ie_port")
    if ctx.text("transport_mode") != ROAD or not customs or customs != port:
        return
    if ctx.text("trade_mode") in DEEP_PROCESSING and ctx.direction == "import":
        return  # 十三(九): the transport name stays empty
    name = ctx.text("transport_name")
    if _half_width(name) in (CENTRALISED, BATCH_EXIT):
        return  # 十三(十) names; wrong brackets are reported by _centralised
    f = _HEADER_FIELDS["transport_name"]
    if not name:
        if declaring:
            out.missing(_HEADER_WHERE, f, S7, "公路运输在进出境地报关时必填",
                        "road transport declared at the border needs it")
        return
    if _ROAD_NAME.fullmatch(name) is None:
        _rule(out, _HEADER_WHERE, f, f"公路运输在进出境地报关时应为 \"车牌号 + 空格 + /提前报关\", "
              f"如 \"粤Z1234港{ROAD_SUFFIX}\", 现为 \"{shown(name)}\"",
              f"road transport declared at the border: write \"plate number /提前报关\" (a space "
              f"before the slash), e.g. \"粤Z1234港{ROAD_SUFFIX}\"", S7)


def _waterway(out: Collector, ctx: Context, declaring: bool) -> None:
    if ctx.text("transport_mode") != WATERWAY:
        return
    name = ctx.text("transport_name")
    name_field = _HEADER_FIELDS["transport_name"]
    if "/" in name and name != CENTRALISED:
        _rule(out, _HEADER_WHERE, name_field, "水路运输时只填船名或船舶编号, 航次号请填在 航次号"
              "(voyage_number) 中, 不要用 \"/\" 合并", "waterway: the ship's name or number only; "
              "put the voyage in voyage_number, not after a \"/\"", S8)
    if not declaring:
        return
    deep_import = ctx.text("trade_mode") in DEEP_PROCESSING and ctx.direction == "import"
    if not name and not deep_import:
        out.missing(_HEADER_WHERE, name_field, S8, "水路运输时必填船名或船舶编号",
                    "waterway transport needs the ship's name or number")
    if not ctx.text("voyage_number") and not deep_import:
        out.missing(_HEADER_WHERE, _HEADER_FIELDS["voyage_number"], S8, "水路运输时必填航次号",
                    "waterway transport needs the voyage number")


def _import_date(out: Collector, ctx: Context, today: date) -> None:
    if ctx.direction != "import":
        return
    ie_date = parse_date(ctx.text("ie_date"))
    if ie_date is not None and ie_date > today:
        _rule(out, _HEADER_WHERE, _HEADER_FIELDS["ie_date"],
              f"晚于今天 ({today:%Y%m%d}); 请核对日期和本机系统时间",
              f"is after today ({today:%Y%m%d}); check the date and this computer's clock", S13)
