"""The eport-customs/1 document model: validation (every rule, with its QP FAQ section),
templates, copies, the printed-form helpers and the clock check."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eport.common.customs.canonical import canonical_json
from eport.common.customs.document import (
    DIRECTIONS,
    DOCUMENT_TYPES,
    FORMAT,
    DocumentError,
    Problem,
    clock_warning,
    container_layout,
    copy_document,
    copy_item,
    new_document,
    transport_display,
    validate,
)
from eport.common.customs.fields import container_check_digit
from eport.common.customs.tables import TABLE_NAMES, label, table, table_info
from eport.common.profile import is_valid_credit_code
from eport.common.text import Bilingual
from tests.support.customs_documents import (
    container_number,
    valid_declaration,
    valid_filing_list,
)

TODAY = date(2026, 12, 1)


def declare(document: Any) -> list[Problem]:
    return validate(document, declaring=True)


def save(document: Any) -> list[Problem]:
    return validate(document, declaring=False)


def by_path(problems: list[Problem]) -> dict[str, Problem]:
    return {p.path: p for p in problems}


def only(problems: list[Problem], path: str) -> Problem:
    """The one problem of `problems`, which must be at `path`."""
    assert [p.path for p in problems] == [path], [p.message.en for p in problems]
    return problems[0]


# -- samples and templates ----------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_samples_are_valid_for_declaring(direction: str) -> None:
    assert declare(valid_declaration(direction, items=5, containers=9)) == []
    assert declare(valid_filing_list(direction, items=2, containers=1)) == []


def test_samples_are_realistic_shenzhen_documents() -> None:
    document = valid_declaration()
    header = document["header"]
    assert label("customs", header["declaration_customs"]) == "皇岗海关"
    assert header["trade_mode"] == "0110"
    assert is_valid_credit_code(header["domestic_party"]["credit_code"])
    assert is_valid_credit_code(header["owner"]["credit_code"])
    assert valid_declaration("export")["header"]["declaration_customs"] == "5300"
    assert valid_filing_list()["document_type"] == "filing-list"
    # the samples are signable as they are: canonical JSON refuses floats
    canonical_json(valid_declaration(items=3, containers=2))


def test_sample_overrides_replace_header_fields_and_catch_typos() -> None:
    assert valid_declaration(remarks="唛头: N/M")["header"]["remarks"] == "唛头: N/M"
    with pytest.raises(KeyError):
        valid_declaration(remark="x")


@pytest.mark.parametrize("document_type", DOCUMENT_TYPES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_new_document_has_every_key_and_saves(document_type: str, direction: str) -> None:
    document = new_document(document_type, direction, today=TODAY)
    assert document["format"] == FORMAT
    assert re.fullmatch(r"[0-9a-f]{32}", document["client_reference"])
    assert document["header"]["domestic_party"] == {"credit_code": "", "customs_code": "",
                                                    "name": ""}
    assert document["items"][0]["item_number"] == 1
    assert set(document["items"][0]) >= {"hs_code", "unit_price", "duty_mode"}
    assert validate(document, declaring=False, today=TODAY) == []
    assert any(p.code == "required" for p in validate(document, declaring=True, today=TODAY))


def test_new_document_import_date_defaults_to_today() -> None:
    """QP FAQ §十三(十三): the import date is the computer's date unless changed."""
    assert new_document(direction="import", today=TODAY)["header"]["ie_date"] == "20261201"
    assert new_document(direction="export", today=TODAY)["header"]["ie_date"] == ""
    assert new_document()["header"]["ie_date"] == date.today().strftime("%Y%m%d")


def test_new_document_gets_a_fresh_client_reference_and_refuses_bad_kinds() -> None:
    assert new_document()["client_reference"] != new_document()["client_reference"]
    with pytest.raises(ValueError):
        new_document("invoice")
    with pytest.raises(ValueError):
        new_document(direction="transit")


# -- all problems at once, save versus declare, junk ----------------------------------------


def test_validation_names_every_bad_field_at_once() -> None:
    document = valid_declaration(containers=1)
    document["header"]["transport_mode"] = "Q"                      # code
    document["header"]["gross_weight"] = "12,5"                     # format
    document["items"][0]["name"] = "货" * 101                       # length
    document["containers"][0]["size"] = "M"                         # code
    document["header"]["domestic_party"]["credit_code"] = "91440300MA5F2K8Q10"  # check char
    problems = declare(document)
    assert {p.path for p in problems} == {
        "header.transport_mode", "header.gross_weight", "items[0].name", "containers[0].size",
        "header.domestic_party.credit_code"}
    assert by_path(problems)["items[0].name"].code == "length"


def test_code_message_names_the_field_and_an_example() -> None:
    problem = only(save(valid_declaration(transport_mode="Q")), "header.transport_mode")
    assert problem.code == "code"
    assert problem.message.zh.startswith("运输方式(transport_mode) 代码 'Q' 不在")
    assert "2 水路运输" in problem.message.zh
    assert problem.message.en == (
        "transport_mode: 'Q' is not a code of the transport_mode table; use e.g. 2 (waterway)")
    assert problem.as_json() == {"path": "header.transport_mode", "code": "code",
                                 "message_zh": problem.message.zh,
                                 "message_en": problem.message.en, "section": ""}


def test_code_message_hints_at_excel_dropping_leading_zeros() -> None:
    problem = only(save(valid_declaration(trade_mode="110")), "header.trade_mode")
    assert "0110" in problem.message.zh and "Excel" in problem.message.en


def test_saving_checks_format_but_not_completeness() -> None:
    document = valid_declaration()
    document["header"]["trade_country"] = ""
    document["items"][0]["hs_code"] = ""
    assert save(document) == []
    assert {p.path: p.code for p in declare(document)} == {
        "header.trade_country": "required", "items[0].hs_code": "required"}
    document["items"][0]["hs_code"] = "84713000"
    assert only(save(document), "items[0].hs_code").code == "length"


def test_required_message_says_what_is_expected() -> None:
    problem = only(declare(valid_declaration(package_type="")), "header.package_type")
    assert problem.code == "required"
    assert "包装种类(package_type)" in problem.message.zh and "22" in problem.message.zh
    assert problem.message.en.startswith("package_type: required for declaring")


JUNK: list[Any] = [
    None, [], "document", 7, 1.5, True, {1: 2}, {"header": []}, {"header": "x"},
    {"items": {}}, {"items": [1, None, "x", [], {"item_number": True}]},
    {"containers": "MSCU1234566"}, {"attached_documents": [{"code": ["A"]}]},
    {"header": {"domestic_party": "x", "freight": [1], "owner": None, "overseas_party": 3}},
    {"header": {"transport_mode": 2, "gross_weight": 1.5, "ie_date": None, "remarks": {}}},
    {"format": FORMAT, "header": {"related_entry_number": "5"*18, "trade_mode": ["0255"]}},
    {"header": {"transport_name": "集中报关(电子)", "remarks": 12}},
    {"items": [{"quantity": "9" * 5000, "unit_price": "1e5", "total_price": "NaN"}]},
    {"items": [{"item_number": n} for n in range(1, 80)]},
    {"header": {"x" * 10000: "y"}, "extra": {"deep": [[[]]]}},
]


@pytest.mark.parametrize("junk", JUNK, ids=range(len(JUNK)))
@pytest.mark.parametrize("declaring", [False, True])
def test_junk_never_raises(junk: Any, declaring: bool) -> None:
    problems = validate(junk, declaring=declaring)
    assert problems and all(isinstance(p, Problem) for p in problems)
    assert all(p.code in ("required", "format", "length", "code", "rule") for p in problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["header", "items", "containers", "name", "quantity",
                                       "transport_mode", "domestic_party", "item_number", "x"]),
                      inner, max_size=5),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["format", "header", "items", "containers",
                                        "attached_documents", "direction", "zzz"]),
                       json_values, max_size=6))
def test_random_json_never_raises(junk: dict[str, Any]) -> None:
    for declaring in (False, True):
        assert isinstance(validate(junk, declaring=declaring), list)


def test_wrong_types_become_format_problems_with_hints() -> None:
    document = valid_declaration()
    document["header"]["gross_weight"] = 1250.5
    document["header"]["remarks"] = None
    document["items"][0]["item_number"] = "1"
    problems = by_path(save(document))
    assert "write numbers as strings" in problems["header.gross_weight"].message.en
    assert 'leave an empty field as ""' in problems["header.remarks"].message.en
    assert problems["items[0].item_number"].code == "rule"


@pytest.mark.parametrize("where", ["top", "header", "party", "item", "container", "charge"])
def test_unknown_keys_are_format_problems(where: str) -> None:
    document = valid_declaration()
    target, path = {
        "top": (document, "itmes"),
        "header": (document["header"], "header.transprot_mode"),
        "party": (document["header"]["owner"], "header.owner.nmae"),
        "item": (document["items"][0], "items[0].hscode"),
        "container": (document["containers"][0], "containers[0].weight"),
        "charge": (document["header"]["freight"], "header.freight.rate"),
    }[where]
    target[path.rsplit(".", 1)[-1]] = ""
    problem = only(save(document), path)
    assert problem.code == "format" and "unknown key" in problem.message.en


def test_header_that_is_not_an_object() -> None:
    document = valid_declaration()
    document["header"] = ["5300"]
    assert "header" in {p.path for p in save(document)}


def test_document_kind_and_format_are_checked() -> None:
    document = valid_declaration()
    document.update(format="eport-customs/0", document_type="invoice", direction="")
    document["client_reference"] = "ABC"
    assert {p.path: p.code for p in save(document)} == {
        "format": "format", "document_type": "code", "direction": "required",
        "client_reference": "format"}


# -- field formats -----------------------------------------------------------------------


def test_party_codes() -> None:
    """Credit codes carry a GB 32100 check character; customs codes are 10 of [0-9A-Z]."""
    document = valid_declaration()
    party = document["header"]["domestic_party"]
    party["credit_code"] = party["credit_code"][:-1] + ("0" if party["credit_code"][-1] != "0"
                                                        else "1")
    party["customs_code"] = "4403a30123"
    document["header"]["owner"]["credit_code"] = "91440300"
    document["header"]["owner"]["customs_code"] = "4403I3O1S3"  # letters are fine here
    problems = by_path(save(document))
    assert set(problems) == {"header.domestic_party.credit_code",
                             "header.domestic_party.customs_code", "header.owner.credit_code"}
    assert "check character" in problems["header.domestic_party.credit_code"].message.en
    assert problems["header.owner.credit_code"].code == "length"
    assert problems["header.domestic_party.credit_code"].message.zh.startswith(
        "境内收发货人 统一社会信用代码(domestic_party.credit_code)")


def test_a_party_needs_a_name_and_one_of_its_codes() -> None:
    document = valid_declaration()
    document["header"]["owner"] = {"credit_code": "", "customs_code": "4403940512", "name": ""}
    document["header"]["domestic_party"]["credit_code"] = ""
    document["header"]["domestic_party"]["customs_code"] = ""
    assert {p.path for p in declare(document)} == {"header.owner.name",
                                                   "header.domestic_party.credit_code"}
    assert save(document) == []


def test_declaring_agent_is_optional_but_checked_when_filled() -> None:
    document = valid_declaration()
    document["header"]["declaring_agent"]["name"] = "深圳市报关行"
    assert [p.path for p in declare(document)] == ["header.declaring_agent.credit_code"]


@pytest.mark.parametrize(("value", "code"), [
    ("12.5", None), ("0", None), ("0.00001", None), ("12,5", "format"), ("-1", "format"),
    ("1.000001", "format"), ("1e3", "format"), (" 12", "format"), ("１２", "format"),
    ("123456789012345", "length"), ("00000000000001.5", None)])
def test_decimals_are_strings_with_bounded_decimals(value: str, code: str | None) -> None:
    problems = save(valid_declaration(gross_weight=value, net_weight="0"))
    assert [p.code for p in problems] == ([code] if code else [])


@pytest.mark.parametrize(("value", "ok"), [
    ("20261201", True), ("20240229", True), ("20250229", False), ("2026121", False),
    ("2026-12-01", False), ("20261301", False)])
def test_dates_are_real_yyyymmdd_dates(value: str, ok: bool) -> None:
    problems = validate(valid_declaration(ie_date=value), declaring=False,
                        today=date(2030, 1, 1))
    assert (problems == []) is ok


def test_text_fields_refuse_control_characters_and_outer_spaces() -> None:
    assert only(save(valid_declaration(remarks="a\nb")), "header.remarks").code == "format"
    assert only(save(valid_declaration(remarks=" a")), "header.remarks").code == "format"
    assert only(save(valid_declaration(remarks="x" * 256)), "header.remarks").code == "length"
    assert save(valid_declaration(remarks="x" * 255)) == []


def test_packages_is_a_whole_number() -> None:
    assert only(save(valid_declaration(packages="1.5")), "header.packages").code == "format"


def test_record_numbers() -> None:
    assert save(valid_declaration(record_number="C53017450010")) == []
    assert only(save(valid_declaration(record_number="c5301")), "header.record_number")
    assert only(save(valid_declaration(record_number="C530174500101")),
                "header.record_number").code == "length"


def test_codes_of_every_item_field_are_checked() -> None:
    document = valid_declaration(items=2)
    document["items"][1].update(unit="999", currency="RMB", origin_country="CN", duty_mode="0")
    assert {p.path for p in save(document)} == {
        "items[1].unit", "items[1].currency", "items[1].origin_country", "items[1].duty_mode"}


def test_item_messages_say_which_item() -> None:
    document = valid_declaration(items=3)
    document["items"][2]["hs_code"] = "84713000AB"
    problem = only(save(document), "items[2].hs_code")
    assert problem.message.zh.startswith("商品第3项: 商品编号(hs_code)")
    assert problem.message.en.startswith("items[2].hs_code: must be 10 digits")


# -- general rules -------------------------------------------------------------------------


def test_items_are_numbered_in_order() -> None:
    document = valid_declaration(items=3)
    document["items"][1]["item_number"] = 3
    document["items"][2]["item_number"] = 2
    assert {p.path for p in save(document)} == {"items[1].item_number", "items[2].item_number"}


def test_one_to_fifty_items() -> None:
    assert declare(valid_declaration(items=50)) == []
    problem = only(save(valid_declaration(items=51)), "items")
    assert problem.code == "rule" and "50" in problem.message.en
    document = valid_declaration()
    document["items"] = []
    assert save(document) == []
    assert only(declare(document), "items").code == "required"


def test_net_weight_may_not_exceed_gross_weight() -> None:
    problem = only(save(valid_declaration(gross_weight="100", net_weight="100.5")),
                   "header.net_weight")
    assert problem.code == "rule"
    assert save(valid_declaration(gross_weight="100", net_weight="100.00")) == []


def test_total_price_is_quantity_times_unit_price() -> None:
    document = valid_declaration()
    item = document["items"][0]
    item.update(quantity="3", unit_price="3.3333", total_price="10.00")  # rounded unit price
    assert save(document) == []
    item["total_price"] = "10.50"
    problem = only(save(document), "items[0].total_price")
    assert problem.code == "rule" and "10.00" in problem.message.en
    item.update(quantity="1000", unit_price="0.0123", total_price="12.30")
    assert save(document) == []


def test_second_quantity_and_unit_go_together() -> None:
    document = valid_declaration()
    document["items"][0]["second_quantity"] = "2.5"
    assert save(document) == []
    assert only(declare(document), "items[0].second_unit").code == "required"
    document["items"][0].update(second_quantity="", second_unit="035")
    assert only(declare(document), "items[0].second_quantity").code == "required"
    document["items"][0]["second_quantity"] = "2.5"
    assert declare(document) == []


def test_contract_number_required_for_general_and_processing_trade() -> None:
    assert only(declare(valid_declaration(contract_number="")), "header.contract_number")
    assert declare(valid_filing_list(contract_number="")) == []  # 5034
    assert only(declare(valid_declaration(contract_number="", trade_mode="0615")),
                "header.contract_number")


def test_filing_lists_need_no_levy_kind_or_legal_quantity() -> None:
    document = valid_filing_list(levy_kind="")
    document["items"][0].update(legal_quantity="", legal_unit="")
    assert declare(document) == []
    document["document_type"] = "declaration"
    assert {p.path for p in declare(document)} == {
        "header.levy_kind", "items[0].legal_quantity", "items[0].legal_unit"}


def test_goods_place_required_on_import_only() -> None:
    assert only(declare(valid_declaration(goods_place="")), "header.goods_place")
    assert declare(valid_declaration("export", goods_place="")) == []


def test_charges_are_complete_once_started() -> None:
    document = valid_declaration()
    document["header"]["freight"] = {"mark": "3", "amount": "", "currency": ""}
    assert save(document) == []
    assert {p.path for p in declare(document)} == {"header.freight.amount",
                                                   "header.freight.currency"}
    document["header"]["freight"] = {"mark": "1", "amount": "0.5", "currency": ""}
    assert declare(document) == []  # a rate has no currency
    document["header"]["insurance"] = {"mark": "4", "amount": "x", "currency": "RMB"}
    assert {p.path: p.code for p in save(document)} == {
        "header.insurance.mark": "code", "header.insurance.amount": "format",
        "header.insurance.currency": "code"}


def test_overseas_party_name_required_and_no_is_accepted() -> None:
    document = valid_declaration()
    document["header"]["overseas_party"]["name"] = ""
    assert '"NO"' in only(declare(document), "header.overseas_party.name").message.en
    document["header"]["overseas_party"]["name"] = "NO"
    assert declare(document) == []


def test_attached_documents() -> None:
    document = valid_declaration()
    document["attached_documents"] = [{"code": "A", "number": "442100126123456000"},
                                      {"code": "K", "number": ""}]
    assert {p.path: p.code for p in declare(document)} == {
        "attached_documents[1].code": "code", "attached_documents[1].number": "required"}


# -- QP FAQ §十三 ---------------------------------------------------------------------------


def test_road_transport_name_at_the_border_qp_faq_13_7() -> None:
    """QP FAQ §十三(七): 国内行驶车牌号 + 空格 + "/提前报关"."""
    assert declare(valid_declaration(transport_name="粤Z1234港 /提前报关")) == []
    wrongs = ("粤Z1234港/提前报关", "粤Z1234港", "粤Z1234港 / 提前报关", "粤Z1234港  /提前报关")
    for wrong in wrongs:
        problem = only(save(valid_declaration(transport_name=wrong)), "header.transport_name")
        assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(七)")
        assert "粤Z1234港 /提前报关" in problem.message.zh
    problem = only(declare(valid_declaration(transport_name="")), "header.transport_name")
    assert (problem.code, problem.section) == ("required", "QP FAQ §十三(七)")


def test_road_rule_only_when_declared_at_the_border_qp_faq_13_7() -> None:
    """QP FAQ §十三(七) applies where 申报地海关 = 进出境关别 only."""
    assert declare(valid_declaration(declaration_customs="5300", transport_name="粤Z1234港")) == []
    assert declare(valid_declaration(declaration_customs="5300", transport_name="")) == []


def waterway(**overrides: Any) -> dict[str, Any]:
    return valid_declaration("export", **overrides)


def test_waterway_name_and_voyage_apart_qp_faq_13_8() -> None:
    """QP FAQ §十三(八)1: ship and voyage entered apart, printed as NAME/VOYAGE."""
    document = waterway()
    assert document["header"]["transport_mode"] == "2"
    assert declare(document) == []
    problem = only(save(waterway(transport_name="COSCO HOPE/012E", voyage_number="")),
                   "header.transport_name")
    assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(八)1")
    assert "voyage_number" in problem.message.en
    problem = only(declare(waterway(voyage_number="")), "header.voyage_number")
    assert (problem.code, problem.section) == ("required", "QP FAQ §十三(八)1")
    assert only(declare(waterway(transport_name="")), "header.transport_name").code == "required"


def test_transport_display_qp_faq_13_8() -> None:
    """QP FAQ §十三(八)1: the printed form joins name and voyage."""
    assert transport_display(waterway()["header"]) == "COSCO HOPE/012E"
    assert transport_display(valid_declaration()["header"]) == "粤Z1234港 /提前报关"
    assert transport_display({"transport_mode": "5", "transport_name": "CA1234",
                              "voyage_number": "20261201"}) == "CA1234/20261201"
    assert transport_display({}) == ""
    assert transport_display({"transport_name": 5, "voyage_number": None}) == ""


def test_container_size_and_number_qp_faq_13_8_2() -> None:
    """QP FAQ §十三(八)2(2): size S (20 ft) or L (40 ft and above); ISO 6346 numbers."""
    document = valid_declaration(containers=4)
    document["containers"][0]["size"] = "M"
    document["containers"][1]["number"] = document["containers"][1]["number"][:-1] + "0" \
        if not document["containers"][1]["number"].endswith("0") else \
        document["containers"][1]["number"][:-1] + "1"
    document["containers"][2]["number"] = "MSCX1234566"
    document["containers"][3]["tare_weight"] = ""  # 十三(八)2(3): may be left empty
    problems = by_path(save(document))
    assert set(problems) == {"containers[0].size", "containers[1].number",
                             "containers[2].number"}
    assert problems["containers[0].size"].section == "QP FAQ §十三(八)2(2)"
    assert "check digit" in problems["containers[1].number"].message.en
    assert table("container_size") == {"S": "20英尺", "L": "40英尺及以上"}


def test_iso_6346_check_digit() -> None:
    assert container_check_digit("CSQU305438") == "3"  # the standard's worked example
    assert container_number("MSCU", 123456) == "MSCU1234566"


def test_a_container_is_entered_once_qp_faq_13_8_2() -> None:
    document = valid_declaration(containers=2)
    document["containers"].append(dict(document["containers"][0]))
    assert only(save(document), "containers[2].number").code == "rule"


def test_container_layout_qp_faq_13_8_2_4() -> None:
    """QP FAQ §十三(八)2(4): one in the box, up to 7 in the remarks, more than 8: the
    attachment page (which then lists all of them)."""
    containers = valid_declaration(containers=9)["containers"]
    assert container_layout([]) == (None, [], [])
    assert container_layout(containers[:1]) == (containers[0], [], [])
    assert container_layout(containers[:8]) == (containers[0], containers[1:8], [])
    assert container_layout(containers) == (containers[0], containers[1:8], containers)


DEEP_MODES = ["0255", "0654", "0258", "0657"]
IMPORT_ENTRY = "530120261000123456"  # 5301 / 2026 / 1 / 000123456


@pytest.mark.parametrize("mode", DEEP_MODES)
def test_deep_processing_export_qp_faq_13_9(mode: str) -> None:
    """QP FAQ §十三(九)1: on export, the import transfer entry number and record number."""
    good = waterway(trade_mode=mode, levy_kind="503", related_entry_number=IMPORT_ENTRY,
                    related_record_number="C53017450010")
    assert declare(good) == []
    problems = declare(waterway(trade_mode=mode, levy_kind="503"))
    assert {(p.path, p.code, p.section) for p in problems} == {
        ("header.related_entry_number", "required", "QP FAQ §十三(九)"),
        ("header.related_record_number", "required", "QP FAQ §十三(九)")}
    wrong = waterway(trade_mode=mode, levy_kind="503", related_record_number="C53017450010",
                     related_entry_number="530120260000123456")  # digit 9: an export number
    assert only(declare(wrong), "header.related_entry_number").code == "rule"


@pytest.mark.parametrize(("number", "why"), [
    ("999920261000123456", "customs district"), ("530118991000123456", "year"),
    ("530120262000123456", "digit 9"), ("53012026100012345", "18 digits"),
    ("5301202610001234AB", "18 digits")])
def test_related_entry_number_structure_qp_faq_13_9(number: str, why: str) -> None:
    """QP FAQ §十三(九): 4-digit district + 4-digit year + "1" + 9 digits."""
    problem = only(save(valid_declaration(related_entry_number=number)),
                   "header.related_entry_number")
    assert why in problem.message.en and problem.section == "QP FAQ §十三(九)"


@pytest.mark.parametrize("mode", DEEP_MODES)
def test_deep_processing_import_qp_faq_13_9(mode: str) -> None:
    """QP FAQ §十三(九)2: on import no transport name, no related entry number, but the
    export transfer record number."""
    base: dict[str, Any] = {"trade_mode": mode, "levy_kind": "503", "transport_mode": "9",
            "transport_name": ""}
    assert declare(valid_declaration(**base, related_record_number="C53017450011")) == []
    problems = declare(valid_declaration(**{**base, "transport_name": "粤Z1234港 /提前报关",
                                            "related_entry_number": IMPORT_ENTRY}))
    assert {(p.path, p.code) for p in problems} == {
        ("header.transport_name", "rule"), ("header.related_entry_number", "rule"),
        ("header.related_record_number", "required")}
    assert all(p.section == "QP FAQ §十三(九)" for p in problems)


def test_deep_processing_import_by_road_needs_no_road_name_qp_faq_13_9() -> None:
    """QP FAQ §十三(九)2 wins over 十三(七): the transport name stays empty."""
    document = valid_declaration(trade_mode="0654", levy_kind="503", transport_name="",
                                 related_record_number="C53017450011")
    assert declare(document) == []


def centralised(**overrides: Any) -> dict[str, Any]:
    return valid_declaration(**{"transport_name": "集中报关(电子)",
                                "remarks": "261101-261130集报", **overrides})


def test_centralised_declaration_qp_faq_13_10() -> None:
    """QP FAQ §十三(十)2: "集中报关(电子)" with half-width brackets and a period remark."""
    assert declare(centralised()) == []
    assert declare(centralised(remarks="261101-261130集报 其余备注")) == []


@pytest.mark.parametrize("name", ["集中报关（电子）", "集中报关(电子）", "集中报关（电子)"])
def test_full_width_brackets_refused_with_a_hint_qp_faq_13_10(name: str) -> None:
    problem = only(save(centralised(transport_name=name)), "header.transport_name")
    assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(十)2")
    assert "集中报关(电子)" in problem.message.zh and "half-width" in problem.message.en


@pytest.mark.parametrize(("remarks", "why"), [
    ("071101至071130集报", "YYMMDD-YYMMDD"), ("261131-261201集报", "YYMMDD-YYMMDD"),
    ("261201-261101集报", "starts after"), ("集报261101-261130", "YYMMDD-YYMMDD")])
def test_centralised_remarks_qp_faq_13_10(remarks: str, why: str) -> None:
    problem = only(save(centralised(remarks=remarks)), "header.remarks")
    assert why in problem.message.en and problem.section == "QP FAQ §十三(十)2"


def test_centralised_remarks_required_when_declaring_qp_faq_13_10() -> None:
    document = centralised(remarks="")
    assert save(document) == []
    assert only(declare(document), "header.remarks").code == "required"


def test_batch_exit_centralised_declaration_accepted_qp_faq_13_10() -> None:
    """QP FAQ §十三(十)1: 分批出区集中申报 uses "集中申报", also by road at the border."""
    assert declare(valid_declaration(transport_name="集中申报")) == []


@pytest.mark.parametrize("document", [
    valid_declaration("export", transport_name="集中申报"),
    valid_filing_list("import", transport_name="集中申报"),
    valid_filing_list("export", transport_name="集中申报")], ids=["export", "filing-list",
                                                               "export-filing-list"])
def test_batch_exit_is_for_import_declarations_only_qp_faq_13_10_1(
        document: dict[str, Any]) -> None:
    """QP FAQ §十三(十)1: "分批出区集中申报报关单须在一般进口报关单录入界面里进行录入"."""
    for check in (save, declare):
        problem = only(check(document), "header.transport_name")
        assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(十)1")
        assert "只用于进口报关单" in problem.message.zh
        assert "import declarations only" in problem.message.en


def clearance(code: str, number: str) -> dict[str, str]:
    return {"code": code, "number": number}


@pytest.mark.parametrize("name", ["集中报关(电子)", "集中申报"])
def test_one_clearance_form_per_centralised_declaration_qp_faq_13_10(name: str) -> None:
    """QP FAQ §十三(十): "总署规定一份报关单只能对应一份通关单 … 应当对报关单进行拆分"."""
    one = centralised(transport_name=name)
    one["attached_documents"] = [clearance("A", "442100126123456000"),
                                 clearance("Y", "NO1")]  # one 通关单 and another licence
    assert declare(one) == []
    two = centralised(transport_name=name)
    two["attached_documents"] = [clearance("A", "442100126123456000"),
                                 clearance("Y", "NO1"), clearance("B", "442100126123456001")]
    for check in (save, declare):
        problem = only(check(two), "attached_documents")
        assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(十)")
        assert "一份报关单只能对应一份通关单" in problem.message.zh and "拆分" in problem.message.zh
        assert "attached_documents[0], attached_documents[2]" in problem.message.en
    # Outside a centralised declaration the rule does not apply.
    plain = valid_declaration()
    plain["attached_documents"] = two["attached_documents"]
    assert declare(plain) == []


def test_import_date_not_after_today_qp_faq_13_13() -> None:
    """QP FAQ §十三(十三): the date comes from the local clock; a future one is refused."""
    tomorrow = (date.today() + timedelta(days=1)).strftime("%Y%m%d")
    problem = only(save(valid_declaration(ie_date=tomorrow)), "header.ie_date")
    assert (problem.code, problem.section) == ("rule", "QP FAQ §十三(十三)")
    assert declare(valid_declaration("export", ie_date=tomorrow)) == []
    problem = only(declare(valid_declaration(ie_date="")), "header.ie_date")
    assert (problem.code, problem.section) == ("required", "QP FAQ §十三(十三)")


NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("now", "reference", "warned"), [
    (NOW, NOW, False), (NOW, None, False), (NOW + timedelta(seconds=300), NOW, False),
    (NOW + timedelta(seconds=301), NOW, True), (NOW - timedelta(minutes=20), NOW, True),
    (datetime(2005, 1, 1, tzinfo=UTC), None, True), (datetime(2023, 12, 31, 23, 59), None, True),
    (datetime(2026, 12, 1, 10, 1), NOW, False)])
def test_clock_warning_qp_faq_13_13(now: datetime, reference: datetime | None,
                                      warned: bool) -> None:
    """QP FAQ §十三(十三): a year before 2024 or more than 300 s off the data centre."""
    warning = clock_warning(now, reference)
    assert (warning is not None) is warned
    if warning:
        zh, en = warning
        assert "系统日期" in zh and "date" in en


def test_clock_warning_says_ahead_or_behind() -> None:
    ahead = clock_warning(NOW + timedelta(minutes=10), NOW)
    behind = clock_warning(NOW - timedelta(minutes=10), NOW)
    assert ahead and "ahead" in ahead[1] and "10 minutes" in ahead[1]
    assert behind and "behind" in behind[1] and "慢" in behind[0]


# -- copies ----------------------------------------------------------------------------------


def test_copy_document_is_deep_with_a_new_reference() -> None:
    original = valid_declaration(items=2)
    duplicate = copy_document(original)
    assert duplicate["client_reference"] != original["client_reference"]
    duplicate["items"][0]["name"] = "改过"
    duplicate["header"]["owner"]["name"] = "改过"
    assert original["items"][0]["name"] == "笔记本电脑"
    assert original["header"]["owner"]["name"] != "改过"
    assert declare(duplicate) == []


def test_copy_item_duplicates_at_the_end_qp_faq_13_6() -> None:
    """QP FAQ §十三(六): copy an item to enter a similar one faster."""
    original = valid_declaration(items=3)
    result = copy_item(original, 2)
    assert [i["item_number"] for i in result["items"]] == [1, 2, 3, 4]
    assert {**result["items"][3], "item_number": 2} == original["items"][1]
    assert result["client_reference"] == original["client_reference"]
    assert len(original["items"]) == 3
    result["items"][3]["name"] = "另一种"
    assert result["items"][1]["name"] == original["items"][1]["name"]
    assert declare(result) == []


@pytest.mark.parametrize("case", ["missing", "zero", "full", "not a list", "bool"])
def test_copy_item_refusals(case: str) -> None:
    document: dict[str, Any] = valid_declaration(items=50 if case == "full" else 2)
    number: Any = {"missing": 3, "zero": 0, "full": 1, "not a list": 1, "bool": True}[case]
    if case == "not a list":
        document["items"] = {}
    with pytest.raises(DocumentError) as caught:
        copy_item(document, number)
    assert caught.value.problems and caught.value.problems[0].path == "items"


def test_document_error_names_its_problems() -> None:
    error = DocumentError([Problem("a", "format", Bilingual("甲", "a: bad")),
                           Problem("b", "rule", Bilingual("乙", "b: worse"))])
    assert str(error) == "a: bad; b: worse"
    assert isinstance(error, ValueError) and len(error.problems) == 2


# -- tables ----------------------------------------------------------------------------------


CODE_SHAPES: dict[str, str] = {
    "customs": r"[0-9]{4}", "transport_mode": r"[0-9A-Z]", "trade_mode": r"[0-9]{4}",
    "levy_kind": r"[0-9]{3}", "country": r"[A-Z]{3}", "currency": r"[A-Z]{3}",
    "unit": r"[0-9]{3}", "package_type": r"[0-9]{2}", "transaction_mode": r"[1-7]",
    "duty_mode": r"[1-9]", "entry_type": r"[0-9A-Z]", "document_code": r"[0-9A-Za-z]",
    "container_size": r"[SL]"}


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_tables_load_with_well_formed_codes(name: str) -> None:
    info = table_info(name)
    codes = table(name)
    assert info.name == name and info.source and info.title_zh
    assert info.example_code in codes
    assert codes and all(re.fullmatch(CODE_SHAPES[name], c) for c in codes)
    assert all(isinstance(v, str) and v for v in codes.values())


def test_table_files_have_only_the_documented_keys() -> None:
    from importlib import resources
    for name in TABLE_NAMES:
        text = resources.files("eport.common.customs").joinpath("tables", f"{name}.json")
        raw = json.loads(text.read_text(encoding="utf-8"))
        # The country table also holds the numeric codes of the older 国别代码表 (bonded manual
        # §2.2.1.2 投资国别 takes them).
        extra = {"numeric", "numeric_source"} if name == "country" else set()
        assert set(raw) == {"name", "title_zh", "source", "subset", "example", "codes"} | extra


def test_labels() -> None:
    assert label("customs", "5300") == "深圳海关"
    assert label("customs", "5301") == "皇岗海关"
    assert label("customs", "2248") == "外港海关"
    assert label("transport_mode", "2") == "水路运输"
    assert label("unit", "035") == "千克"
    assert label("unit", "070") == "吨"
    assert label("currency", "9999") == ""
    assert label("document_code", "A") != label("document_code", "a")


def test_table_copies_and_unknown_names() -> None:
    table("currency")["XXX"] = "changed"
    assert label("currency", "XXX") == ""
    for bad in ("nope", "../tables/customs"):
        with pytest.raises(KeyError):
            table(bad)


def test_every_qp_faq_rule_has_a_test() -> None:
    """Guard: the QP FAQ sections the rules cite each appear in a test name here."""
    import eport.common.customs.rules as rules_module
    source = Path(rules_module.__file__).read_text(encoding="utf-8")
    sections = set(re.findall(r'"QP FAQ §十三\(([^)]+)\)', source))
    names = " ".join(name for name in globals() if name.startswith("test_"))
    numbers = {"七": "7", "八": "8", "九": "9", "十": "10", "十三": "13"}
    for section in sections:
        assert f"qp_faq_13_{numbers[section]}" in names, section




def test_messages_quote_junk_values_shortly() -> None:
    """A huge or unprintable value cannot flood or garble a message."""
    document = valid_declaration(transport_mode="Q" * 5000, trade_mode="\x1b[31m")
    document["header"]["x" * 5000] = ""
    problems = save(document)
    assert len(problems) == 3
    assert all(len(p.message.en) < 300 and "\x1b" not in p.message.en for p in problems)


def test_the_shipped_example_passes_every_check() -> None:
    """`eport customs new --example` and eport-demo start from it: it must declare as is."""
    from eport.common.customs.examples import example_declaration

    first, second = example_declaration(), example_declaration()
    assert validate(first, declaring=True) == []
    assert first["client_reference"] != second["client_reference"]
