"""Sample eport-customs/1 documents for tests: valid ones to start from and break on purpose.

`valid_declaration()` and `valid_filing_list()` pass `validate(..., declaring=True)` (with
today's date), carry realistic Shenzhen content, valid credit codes (GB 32100 check
character) and valid ISO 6346 container numbers. Keyword arguments replace header fields;
an unknown header key raises KeyError so that a typo in a test does not go unnoticed.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from eport.common.customs.document import new_document
from eport.common.customs.fields import container_check_digit
from eport.common.profile import credit_code_check_char


def credit_code(first17: str) -> str:
    """A unified social credit code with the right check character."""
    return first17 + credit_code_check_char(first17)


def container_number(owner: str, serial: int) -> str:
    """An ISO 6346 number: owner code and U ("MSCU"), six-digit serial, check digit."""
    first10 = f"{owner}{serial:06d}"
    return first10 + container_check_digit(first10)


DOMESTIC = {"credit_code": credit_code("91440300MA5F2K8Q1"), "customs_code": "4403130123",
            "name": "深圳市前海星河进出口有限公司"}
OWNER = {"credit_code": credit_code("91440300708461136"), "customs_code": "4403940512",
         "name": "深圳市华强电子科技有限公司"}
OVERSEAS = {"name": "HONG KONG STAR TRADING LIMITED", "aeo_code": ""}

# (hs_code, name, specification, unit, unit price)
GOODS = (
    ("8471300000", "笔记本电脑", "0|0|便携式|无品牌|X1|14英寸", "001", "3250.5000"),
    ("8517130000", "智能手机", "0|0|无线通讯|无品牌|M20|5G", "001", "1899.0000"),
    ("3926909090", "塑料垫片", "0|0|工业用|聚乙烯|无品牌|无型号", "035", "12.3500"),
    ("8542319000", "集成电路", "0|0|处理器|无品牌|SZ-7|BGA封装", "007", "4.2800"),
    ("6109100021", "棉制针织T恤衫", "0|0|针织|100%棉|男式|无品牌", "011", "25.6000"),
)
CONTAINER_OWNERS = ("MSCU", "COSU", "TGHU", "OOLU")


def _item(number: int, direction: str, currency: str) -> dict[str, Any]:
    hs_code, name, specification, unit, price = GOODS[(number - 1) % len(GOODS)]
    quantity = Decimal(10 + number)
    total = (quantity * Decimal(price)).quantize(Decimal("0.01"))
    origin, destination = ("JPN", "CHN") if direction == "import" else ("CHN", "HKG")
    return {
        "item_number": number, "record_item_number": "", "hs_code": hs_code, "name": name,
        "specification": specification, "quantity": str(quantity), "unit": unit,
        "legal_quantity": str(quantity), "legal_unit": unit,
        "second_quantity": "", "second_unit": "", "unit_price": price, "total_price": str(total),
        "currency": currency, "origin_country": origin, "destination_country": destination,
        "domestic_region": "44031", "duty_mode": "1"}


def _containers(count: int) -> list[dict[str, Any]]:
    return [{"number": container_number(CONTAINER_OWNERS[i % len(CONTAINER_OWNERS)],
                                        123450 + i),
             "size": "L" if i % 2 == 0 else "S", "tare_weight": "3800" if i % 2 == 0 else "2200"}
            for i in range(count)]


def _build(document_type: str, direction: str, items: int, containers: int,
           header: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    document = new_document(document_type, direction, today=date.today())
    for key, value in header.items():
        if key not in document["header"]:  # pragma: no cover - guards the samples themselves
            raise KeyError(key)
        document["header"][key] = value
    for key, value in overrides.items():
        if key not in document["header"]:
            raise KeyError(f"no header field {key!r}")
        document["header"][key] = value
    currency = "USD"
    document["items"] = [_item(n, direction, currency) for n in range(1, items + 1)]
    document["containers"] = _containers(containers)
    return document


def _common(direction: str) -> dict[str, Any]:
    header: dict[str, Any] = {
        "domestic_party": dict(DOMESTIC), "overseas_party": dict(OVERSEAS),
        "owner": dict(OWNER), "trade_country": "HKG", "departure_country": "HKG",
        "packages": "12", "package_type": "22", "gross_weight": "1250.5",
        "net_weight": "1100.25", "entry_type": "M", "contract_number": "XH20261201-01"}
    if direction == "import":
        header.update({
            "declaration_customs": "5301", "ie_port": "5301", "transport_mode": "4",
            "transport_name": "粤Z1234港 /提前报关", "bill_of_lading": "HG20261201001",
            "goods_place": "皇岗口岸海关监管场所", "transaction_mode": "1"})
    else:
        header.update({
            "declaration_customs": "5300", "ie_port": "5304", "transport_mode": "2",
            "transport_name": "COSCO HOPE", "voyage_number": "012E",
            "bill_of_lading": "COSU6281234560", "transaction_mode": "3",
            "departure_country": "HKG"})
    return header


def valid_declaration(direction: str = "import", *, items: int = 1, containers: int = 1,
                      **header_overrides: Any) -> dict[str, Any]:
    """A general-trade (0110) declaration at Shenzhen customs: import by road at 皇岗 (5301,
    declared at the border, so the 十三(七) transport name), export by sea at 蛇口 (5304)."""
    header = _common(direction)
    header.update({"trade_mode": "0110", "levy_kind": "101"})
    return _build("declaration", direction, items, containers, header, header_overrides)


def valid_filing_list(direction: str = "import", *, items: int = 1, containers: int = 0,
                      **header_overrides: Any) -> dict[str, Any]:
    """A 备案清单 for goods in and out of a bonded logistics area (区内物流货物, 5034)."""
    header = _common(direction)
    header.update({"trade_mode": "5034", "record_number": "T53166000001",
                   "contract_number": ""})
    return _build("filing-list", direction, items, containers, header, header_overrides)
