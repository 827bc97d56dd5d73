"""Sample eport-bonded/1 documents for tests: valid ones to start from and break on purpose.

`valid_bonded()` passes save_problems and declare_problems (with no lookup, and with
`sample_lookup` for e-book modes); its management mode defaults to 3 加贸手册, which uses no
e-book. `ebook_bonded(ebook_number, items)` is a 1 电子账册 document whose items are the record
items of `sample_ebook_items(ebook_number, items)`; `sample_lookup(ebook_number, count)` looks
them up. Keyword arguments replace header fields; an unknown header key raises KeyError so that
a typo in a test does not go unnoticed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eport.common.bonded.document import (
    EBookItem,
    EBookLookup,
    new_bonded_document,
    total_stock,
)

ENTERPRISE_CODE = "1105030002"
ENTERPRISE_NAME = "北京测试保税加工有限公司"
HANDBOOK_MODE = "3"  # 加贸手册: no e-book
EBOOK_MODE = "1"     # 电子账册
EBOOK_NUMBER = "E01041234567"

# (hs_code, name, specification, unit) of bonded materials; units are customs unit codes.
MATERIALS = (
    ("3901100090", "聚乙烯颗粒", "LDPE 2426H", "035"),
    ("8542319000", "集成电路", "SZ-7 BGA封装", "007"),
    ("7408190000", "铜线", "直径0.5mm", "035"),
    ("3926909090", "塑料垫片", "聚乙烯 10x10mm", "007"),
    ("8504409999", "电源适配器", "12V 2A", "001"),
)


def _header(management_mode: str, ebook_number: str) -> dict[str, str]:
    return {
        "internal_number": "08091601", "enterprise_code": ENTERPRISE_CODE,
        "enterprise_name": ENTERPRISE_NAME, "declaration_date": "",
        "stocktaking_date": "20260916", "management_mode": management_mode,
        "ebook_number": ebook_number, "legal_representative": "张晓楼",
        "registered_name": ENTERPRISE_NAME, "registered_address": "北京市朝阳区测试路1号",
        "investor": "北京测试投资有限公司", "phone": "010-12345678",
        "contact_phone": "13800138000", "enterprise_nature": "7", "contact": "李明",
        "registered_capital": "500万元", "plant_source": "自有", "investment_country": "CHN",
        "staff_count": "120", "equipment_source": "进口", "business_scope": "塑料制品加工",
        "remarks": ""}


def _quantities(number: int) -> dict[str, str]:
    parts = {"stock_qty": f"{1000 + number}.5", "online_qty": f"{20 + number}",
             "transferred_in_undeclared_qty": "0", "finished_converted_qty": "12.25",
             "outsourced_converted_qty": "", "defective_converted_qty": "0.25",
             "in_transit_qty": "3"}
    return {**parts, "total_stock_qty": total_stock(parts)}


def _item(number: int, record_item_number: str, material: tuple[str, str, str, str]
          ) -> dict[str, Any]:
    hs_code, name, specification, unit = material
    return {"item_number": number, "record_item_number": record_item_number,
            "hs_code": hs_code, "name": name, "specification": specification, "unit": unit,
            **_quantities(number)}


def _document(header: dict[str, str], items: list[dict[str, Any]],
              overrides: dict[str, Any]) -> dict[str, Any]:
    document = new_bonded_document()
    for key, value in overrides.items():
        if key not in header:
            raise KeyError(f"no header field {key!r}")
        header[key] = value
    document["header"] = header
    document["items"] = items
    return document


def valid_bonded(*, items: int = 2, management_mode: str = HANDBOOK_MODE,
                 **header_overrides: Any) -> dict[str, Any]:
    """A complete document of `items` body items. For an e-book mode the e-book number is
    EBOOK_NUMBER and the items are those of sample_ebook_items(EBOOK_NUMBER, items)."""
    ebook_number = EBOOK_NUMBER if management_mode in ("1", "2") else "B01041234567"
    body = [_item(n, str(n), MATERIALS[(n - 1) % len(MATERIALS)])
            for n in range(1, items + 1)]
    return _document(_header(management_mode, ebook_number), body, header_overrides)


def sample_ebook_items(ebook_number: str, count: int) -> list[dict[str, str]]:
    """The record items 1 … count of an e-book: {record_item_number, hs_code, name,
    specification, unit}, the materials in turn."""
    return [{"record_item_number": str(n), "hs_code": m[0], "name": m[1],
             "specification": m[2], "unit": m[3]}
            for n in range(1, count + 1)
            for m in [MATERIALS[(n - 1) % len(MATERIALS)]]]


def sample_lookup(ebook_number: str = EBOOK_NUMBER, count: int = 50) -> EBookLookup:
    """An EBookLookup knowing record items 1 … count of `ebook_number` (sample_ebook_items)."""
    records = {(ebook_number, r["record_item_number"]): EBookItem(ebook_number=ebook_number, **r)
               for r in sample_ebook_items(ebook_number, count)}

    def lookup(number: str, record_item_number: str) -> EBookItem | None:
        return records.get((number, record_item_number))

    return lookup


def ebook_bonded(ebook_number: str = EBOOK_NUMBER, items: int = 2,
                 **header_overrides: Any) -> dict[str, Any]:
    """A complete 电子账册 document whose body items are the record items 1 … items of
    sample_ebook_items(ebook_number, items), with the same code, name, unit and specification."""
    body = [{"item_number": n, **record, **_quantities(n)}
            for n, record in enumerate(sample_ebook_items(ebook_number, items), start=1)]
    return _document(_header(EBOOK_MODE, ebook_number), body, header_overrides)


def total_of(*parts: str) -> str:
    return format(sum((Decimal(p) for p in parts), Decimal(0)), "f")
