"""The eport-bonded/1 document: field rules of bonded manual §2.2.1.2 (header) and §2.2.1.3 (body),
the checks at 暂存 and 申报 of §2.4, the e-book record rules, and the stock totals."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eport.common.bonded import tables
from eport.common.bonded.document import (
    FORMAT,
    EBookItem,
    declare_problems,
    fill_from_ebook,
    new_bonded_document,
    normalise,
    save_problems,
    stock_warnings,
    subsystem_for,
    total_stock,
    uses_ebook,
)
from eport.common.bonded.fields import HEADER, ITEM, OPTIONAL, REQUIRED
from eport.common.customs.fields import Problem
from eport.common.profile import credit_code_check_char
from eport.common.text import Bilingual
from tests.support.bonded_documents import (
    EBOOK_NUMBER,
    ebook_bonded,
    sample_ebook_items,
    sample_lookup,
    valid_bonded,
)

FORMAT_ZH = "字段格式不正确，请修改"
FORMAT_EN = "the format is wrong, please correct it"
HEADER_ZH = {f.key: f.zh for f in HEADER}
ITEM_ZH = {f.key: f.zh for f in ITEM}


def at(problems: list[Problem], path: str) -> list[Problem]:
    return [p for p in problems if p.path == path]


def only(problems: list[Problem], path: str) -> Problem:
    found = at(problems, path)
    assert len(found) == 1, problems
    return found[0]


def with_header(**values: Any) -> dict[str, Any]:
    document = valid_bonded()
    document["header"].update(values)
    return document


def with_item(index: int = 0, **values: Any) -> dict[str, Any]:
    document = valid_bonded()
    document["items"][index].update(values)
    return document


# -- new documents and the samples ----------------------------------------------------------


def test_new_document_has_every_key_one_empty_item_and_a_fresh_reference() -> None:
    first, second = new_bonded_document(), new_bonded_document()
    assert first["format"] == FORMAT == "eport-bonded/1"
    assert set(first) == {"format", "client_reference", "header", "items"}
    assert set(first["header"]) == {f.key for f in HEADER}
    assert all(value == "" for value in first["header"].values())
    assert len(first["items"]) == 1
    assert first["items"][0] == {"item_number": 1, **{f.key: "" for f in ITEM}}
    assert len(first["client_reference"]) == 32 and int(first["client_reference"], 16) >= 0
    assert first["client_reference"] != second["client_reference"]
    json.dumps(first)  # plain JSON, no floats or dates


@pytest.mark.parametrize("mode", ["1", "2", "3", "9"])
def test_the_samples_pass_both_checks(mode: str) -> None:
    document = valid_bonded(items=4, management_mode=mode)
    lookup = sample_lookup()
    assert save_problems(document, lookup=lookup) == []
    assert declare_problems(document, lookup=lookup) == []
    assert stock_warnings(document) == []


def test_the_ebook_sample_matches_its_record_items() -> None:
    document = ebook_bonded("E20260000001", items=3)
    lookup = sample_lookup("E20260000001", 3)
    assert declare_problems(document, lookup=lookup) == []
    records = sample_ebook_items("E20260000001", 3)
    for item, record in zip(document["items"], records, strict=True):
        assert {k: item[k] for k in record} == record


def test_the_sample_helper_refuses_an_unknown_header_key() -> None:
    with pytest.raises(KeyError):
        valid_bonded(interal_number="x")


# -- header field rules, bonded manual §2.2.1.2 ---------------------------------------------------

HEADER_BAD = [
    # key, bad value, problem code
    ("internal_number", "0809-1601", "format"),       # letters or digits only
    ("internal_number", "1" * 21, "length"),          # 20 at most
    ("enterprise_code", "110503000", "format"),       # 10 characters
    ("enterprise_code", "11050300021", "length"),
    ("enterprise_code", "110503000a", "format"),
    ("enterprise_name", "名" * 31, "length"),          # 30 at most
    ("enterprise_name", " 测试企业", "format"),
    ("stocktaking_date", "2026-09-16", "format"),
    ("stocktaking_date", "20260231", "format"),       # not a real date
    ("management_mode", "5", "code"),
    ("management_mode", "加贸手册", "code"),            # the label, not the code
    ("ebook_number", "B010412345678", "length"),      # 12 at most
    ("ebook_number", "b01041234567", "format"),
    ("legal_representative", "x" * 17, "length"),
    ("registered_name", "x" * 201, "length"),
    ("registered_address", "x" * 101, "length"),
    ("investor", "x" * 201, "length"),
    ("phone", "1" * 33, "length"),
    ("contact_phone", "1" * 21, "length"),
    ("enterprise_nature", "个体", "code"),
    ("enterprise_nature", "12345678", "code"),
    ("contact", "x" * 17, "length"),
    ("registered_capital", "1" * 22, "length"),
    ("plant_source", "x" * 256, "length"),
    ("investment_country", "ZZZ", "code"),
    ("investment_country", "中国", "code"),
    ("staff_count", "120人", "format"),
    ("staff_count", "1" * 11, "length"),
    ("equipment_source", "x" * 256, "length"),
    ("business_scope", "x" * 2001, "length"),
    ("remarks", "x" * 256, "length"),
    ("remarks", "第一行\n第二行", "format"),
]


@pytest.mark.parametrize(("key", "value", "code"), HEADER_BAD)
def test_bonded_manual_2_2_1_2_header_field_format(key: str, value: str, code: str) -> None:
    for check in (save_problems, declare_problems):
        problem = only(check(with_header(**{key: value})), f"header.{key}")
        assert problem.code == code
        assert problem.message.zh.startswith(f"{HEADER_ZH[key]} {FORMAT_ZH}")
        assert problem.message.en.startswith(f"{key}: {FORMAT_EN} (")
        assert problem.section == "bonded manual §2.2.1.2, §2.4"


HEADER_LONGEST = {
    "internal_number": "A" * 20, "enterprise_name": "名" * 30, "ebook_number": "B" * 12,
    "legal_representative": "x" * 16, "registered_name": "x" * 200,
    "registered_address": "x" * 100, "investor": "x" * 200, "phone": "1" * 32,
    "contact_phone": "1" * 20, "contact": "x" * 16, "registered_capital": "1" * 21,
    "plant_source": "x" * 255, "staff_count": "1" * 10, "equipment_source": "x" * 255,
    "business_scope": "经" * 2000, "remarks": "x" * 255}


def test_bonded_manual_2_2_1_2_the_longest_values_are_accepted() -> None:
    document = with_header(**HEADER_LONGEST)
    assert declare_problems(document) == []


def test_bonded_manual_2_2_1_2_codes_of_the_tables_are_accepted() -> None:
    for mode in tables.table("management_mode"):
        assert declare_problems(valid_bonded(management_mode=mode),
                                lookup=sample_lookup()) == []
    for nature in tables.table("enterprise_nature"):
        assert declare_problems(with_header(enterprise_nature=nature)) == []
    for country in ("CHN", "HKG", "USA", "JPN"):
        assert declare_problems(with_header(investment_country=country)) == []


def test_bonded_manual_2_2_1_2_investment_country_takes_the_numeric_country_codes() -> None:
    """Bonded manual §2.2.1.2 投资国别: "4 位. 企业按照国别代码表": the numeric codes of the customs
    country table (142 中国, 110 中国香港, 502 美国 …) beside ISO alpha-3, kept as entered."""
    from eport.common.customs.tables import numeric_country, table
    assert (numeric_country("142"), numeric_country("110"), numeric_country("502")) == (
        "CHN", "HKG", "USA")
    assert {numeric_country(code) for code in ("116", "133", "304", "344", "601")} == {
        "JPN", "KOR", "DEU", "RUS", "AUS"}
    for country in ("142", "110", "121", "143", "502", "CHN"):
        document = with_header(investment_country=country)
        assert save_problems(document) == [] and declare_problems(document) == []
        assert normalise(document)["header"]["investment_country"] == country  # as entered
    # Every alpha-3 code of the table has its numeric code, and no two share one.
    from importlib import resources
    raw = json.loads(resources.files("eport.common.customs").joinpath(
        "tables", "country.json").read_text(encoding="utf-8"))
    assert sorted(raw["numeric"].values()) == sorted(table("country"))
    assert all(len(code) == 3 and code.isdigit() for code in raw["numeric"])
    for bad in ("999", "0142", "14", "1420"):
        problem = only(save_problems(with_header(investment_country=bad)),
                       "header.investment_country")
        assert problem.code in ("code", "length"), bad
        assert "142" in problem.message.zh and "142" in problem.message.en


def test_bonded_manual_2_2_1_2_a_label_instead_of_a_code_gets_the_code_as_hint() -> None:
    problem = only(save_problems(with_header(enterprise_nature="个体")),
                   "header.enterprise_nature")
    assert "请填代码 7" in problem.message.zh and "write the code 7" in problem.message.en
    problem = only(save_problems(with_header(management_mode="加贸手册")),
                   "header.management_mode")
    assert "3" in problem.message.en


def test_bonded_manual_2_2_1_2_a_credit_code_in_the_customs_code_field_is_named() -> None:
    code = "91110105MA01ABCD1" + credit_code_check_char("91110105MA01ABCD1")
    problem = only(save_problems(with_header(enterprise_code=code)), "header.enterprise_code")
    assert "unified social credit code" in problem.message.en
    assert "10 位海关编码" in problem.message.zh
    # an 18-character value that is not a credit code gets the plain message
    problem = only(save_problems(with_header(enterprise_code="1" * 18)),
                   "header.enterprise_code")
    assert problem.code == "length" and "credit code" not in problem.message.en


HEADER_REQUIRED = [f.key for f in HEADER if f.required == REQUIRED]


def test_bonded_manual_2_2_1_2_the_required_header_fields() -> None:
    assert HEADER_REQUIRED == ["internal_number", "enterprise_code", "enterprise_name",
                               "stocktaking_date", "management_mode", "enterprise_nature"]


@pytest.mark.parametrize("key", HEADER_REQUIRED)
def test_bonded_manual_2_4_an_empty_required_header_field(key: str) -> None:
    document = with_header(**{key: ""})
    document["items"] = []
    for check in (save_problems, declare_problems):
        problem = only(check(document), f"header.{key}")
        assert problem.code == "required"
        assert problem.message.zh == f"{HEADER_ZH[key]} 不能为空"
        assert problem.message.en.startswith(f"{key}: must not be empty; expected ")
        assert problem.section == "bonded manual §2.2.1.2, §2.4"


def test_bonded_manual_2_4_a_missing_key_is_an_empty_field() -> None:
    document = valid_bonded()
    del document["header"]["stocktaking_date"]
    document["items"] = []
    assert only(declare_problems(document), "header.stocktaking_date").code == "required"


@pytest.mark.parametrize("key", [f.key for f in HEADER if f.required == OPTIONAL])
def test_bonded_manual_2_2_1_2_optional_header_fields_may_be_empty(key: str) -> None:
    assert declare_problems(with_header(**{key: ""})) == []


def test_bonded_manual_2_2_1_2_the_declaration_date_is_filled_by_the_system() -> None:
    for check in (save_problems, declare_problems):
        problem = only(check(with_header(declaration_date="20260917")),
                       "header.declaration_date")
        assert problem.code == "rule"
        assert "申报日期 由系统在申报成功时返填" in problem.message.zh
        assert problem.section == "bonded manual §2.2.1.2"


def test_bonded_manual_2_2_1_2_messages_name_fields_as_the_manual_does() -> None:
    document = with_header(internal_number="", stocktaking_date="2026-09-16")
    messages = [p.message.zh for p in save_problems(document)]
    assert "企业内部编号 不能为空" in messages
    assert any(m.startswith("盘库日期 字段格式不正确，请修改") for m in messages)


# -- body field rules, bonded manual §2.2.1.3 -----------------------------------------------------

QUANTITY_KEYS = [f.key for f in ITEM if f.key.endswith("_qty")]
ITEM_BAD = [
    ("record_item_number", "1234567890", "length"),  # 9 at most
    ("record_item_number", "1-2", "format"),
    ("hs_code", "12345678901", "length"),            # 10 at most
    ("hs_code", "3926.9090", "format"),
    ("name", "名" * 51, "length"),                    # 50 at most
    ("specification", "x" * 51, "length"),
    ("unit", "KG", "code"),
    ("unit", "千克", "code"),
    *[(key, bad, code) for key in QUANTITY_KEYS for bad, code in (
        ("abc", "format"), ("-1", "format"), ("1,000", "format"), ("1e3", "format"),
        ("12.", "format"), ("1" * 19, "length"))],
]


@pytest.mark.parametrize(("key", "value", "code"), ITEM_BAD)
def test_bonded_manual_2_2_1_3_body_field_format(key: str, value: str, code: str) -> None:
    document = with_item(1, **{key: value})
    for check in (save_problems, declare_problems):
        problem = only(check(document), f"items[1].{key}")
        assert problem.code == code
        assert problem.message.zh.startswith(f"表体第2项 {ITEM_ZH[key]} {FORMAT_ZH}")
        assert problem.message.en.startswith(f"items[1].{key}: {FORMAT_EN} (")
        assert problem.section == "bonded manual §2.2.1.3, §2.4"


def test_bonded_manual_2_2_1_3_the_longest_body_values_are_accepted() -> None:
    zero = {key: "" for key in QUANTITY_KEYS} | {"online_qty": "0",
                                                  "transferred_in_undeclared_qty": "0"}
    document = with_item(0, record_item_number="123456789", hs_code="3926909090",
                         name="名" * 50, specification="规" * 50,
                         **{**zero, "stock_qty": "1" * 18})
    assert declare_problems(normalise(document)) == []
    document = with_item(0, **{**zero, "stock_qty": "12345678901234.567"})
    assert declare_problems(normalise(document)) == []


def test_bonded_manual_2_2_1_3_a_computed_total_longer_than_18_characters_is_reported() -> None:
    document = normalise(with_item(0, stock_qty="9" * 18, online_qty="1", total_stock_qty=""))
    assert only(declare_problems(document), "items[0].total_stock_qty").code == "length"


def test_bonded_manual_2_2_1_3_a_json_number_is_named_write_numbers_as_strings() -> None:
    problem = only(save_problems(with_item(0, stock_qty=12)), "items[0].stock_qty")
    assert problem.code == "format" and "write numbers as strings" in problem.message.en
    problem = only(save_problems(with_item(0, stock_qty=None)), "items[0].stock_qty")
    assert 'leave an empty field as ""' in problem.message.en


ITEM_REQUIRED = [f.key for f in ITEM if f.required == REQUIRED]


def test_bonded_manual_2_2_1_3_the_required_body_fields() -> None:
    assert ITEM_REQUIRED == ["record_item_number", "hs_code", "name", "unit", "stock_qty",
                             "online_qty", "transferred_in_undeclared_qty", "total_stock_qty"]


@pytest.mark.parametrize("key", ITEM_REQUIRED)
def test_bonded_manual_2_4_an_empty_required_body_field(key: str) -> None:
    for check in (save_problems, declare_problems):
        problem = only(check(with_item(1, **{key: ""})), f"items[1].{key}")
        assert problem.code == "required"
        assert problem.message.zh == f"表体第2项 {ITEM_ZH[key]} 不能为空"
        assert problem.section == "bonded manual §2.2.1.3, §2.4"


@pytest.mark.parametrize("key", [f.key for f in ITEM if f.required == OPTIONAL])
def test_bonded_manual_2_2_1_3_optional_body_fields_may_be_empty(key: str) -> None:
    document = normalise(with_item(0, **{key: "", "total_stock_qty": ""}))
    assert declare_problems(document) == []


def test_bonded_manual_2_2_1_3_item_numbers_are_filled_by_the_system() -> None:
    document = with_item(1, item_number=5)
    problem = only(save_problems(document), "items[1].item_number")
    assert problem.code == "rule" and "序号 由系统自动反填, 应为 2" in problem.message.zh
    assert problem.section == "bonded manual §2.2.1.3"
    assert save_problems(normalise(document)) == []


# -- §2.4: the order and number of problems at 暂存 and 申报 ----------------------------------


def test_bonded_manual_2_4_save_gives_the_first_bad_field_and_the_first_empty_one() -> None:
    document = with_header(internal_number="", enterprise_name="", remarks="x" * 256,
                           stocktaking_date="2026-09-16", investment_country="ZZZ")
    document["items"] = []
    problems = save_problems(document)
    assert [(p.path, p.code) for p in problems] == [
        ("header.stocktaking_date", "format"),   # the first badly formatted, in screen order
        ("header.internal_number", "required"),  # the first empty, in screen order
    ]


def test_bonded_manual_2_4_save_reports_the_header_before_the_body() -> None:
    document = with_header(remarks="x" * 256)
    document["items"][0]["hs_code"] = "39.26"
    document["items"][1]["name"] = ""
    problems = save_problems(document)
    assert [p.path for p in problems] == ["header.remarks", "items[1].name"]
    document["header"]["remarks"] = ""
    problems = save_problems(document)
    assert [p.path for p in problems] == ["items[0].hs_code", "items[1].name"]


def test_bonded_manual_2_4_save_reports_the_first_of_the_body_in_screen_order() -> None:
    document = valid_bonded(items=3)
    document["items"][2]["stock_qty"] = "x"
    document["items"][1]["in_transit_qty"] = "y"
    document["items"][1]["online_qty"] = "z"
    document["items"][2]["unit"] = ""
    document["items"][1]["total_stock_qty"] = ""
    problems = save_problems(document)
    assert [p.path for p in problems] == ["items[1].online_qty", "items[1].total_stock_qty"]


def test_bonded_manual_2_4_declare_lists_every_empty_field_at_once() -> None:
    document = new_bonded_document()
    problems = declare_problems(document)
    empties = [p.path for p in problems if p.code == "required"]
    assert empties == [f"header.{k}" for k in HEADER_REQUIRED] + [
        f"items[0].{k}" for k in ITEM_REQUIRED]
    assert all(p.message.zh.endswith("不能为空") for p in problems if p.code == "required")
    assert save_problems(document) == [
        Problem("header.internal_number", "required",
                Bilingual("企业内部编号 不能为空", problems[0].message.en),
                "bonded manual §2.2.1.2, §2.4")]


def test_bonded_manual_2_4_declare_lists_every_format_problem_too() -> None:
    document = with_header(remarks="x" * 256, stocktaking_date="2026")
    document["items"][1]["stock_qty"] = "many"
    paths = [p.path for p in declare_problems(document)]
    assert paths == ["header.stocktaking_date", "header.remarks", "items[1].stock_qty"]


def test_bonded_manual_2_4_declare_needs_a_body() -> None:
    document = valid_bonded()
    document["items"] = []
    assert save_problems(document) == []  # the header may be saved alone
    problem = only(declare_problems(document), "items")
    assert problem.code == "required" and problem.message.zh == "表体 不能为空"


def test_bonded_manual_2_4_the_fresh_empty_body_row_is_not_reported_at_save() -> None:
    document = new_bonded_document()
    document["header"] = valid_bonded()["header"]
    assert save_problems(document) == []
    assert {p.path for p in declare_problems(document)} == {
        f"items[0].{k}" for k in ITEM_REQUIRED}


def test_bonded_manual_2_2_1_2_the_body_only_after_the_header_is_complete() -> None:
    document = valid_bonded()
    document["header"]["enterprise_nature"] = ""
    for check in (save_problems, declare_problems):
        problem = only(check(document), "items")
        assert problem.code == "rule" and problem.section == "bonded manual §2.2.1.2"
        assert "表头未录入完成" in problem.message.zh and "企业性质" in problem.message.zh
        assert "enterprise_nature" in problem.message.en
    # without body content there is nothing entered too early
    document["items"] = [new_bonded_document()["items"][0]]
    assert at(save_problems(document), "items") == []


# -- management modes and the e-book, bonded manual §2.2.1.2 and §2.2.1.3 ------------------------


def test_bonded_manual_2_2_1_2_modes_that_use_an_e_book() -> None:
    assert [m for m in tables.table("management_mode") if uses_ebook(m)] == ["1", "2"]
    assert uses_ebook("电子账册") and uses_ebook("纸质手册电子化")
    assert not uses_ebook("加贸手册") and not uses_ebook("") and not uses_ebook("X")


def test_ebook_manual_4_the_subsystem_of_each_mode() -> None:
    assert {m: subsystem_for(m) for m in tables.table("management_mode")} == {
        "1": "ebook", "2": "handbook", "3": "handbook", "9": "handbook"}
    assert subsystem_for("电子账册") == "ebook"
    with pytest.raises(ValueError, match="unknown management mode"):
        subsystem_for("7")


def test_the_tables_say_their_codes_are_our_own() -> None:
    for name in tables.TABLE_NAMES:
        info = tables.table_info(name)
        assert info.own_coding and info.subset
        assert info.example_code in info.codes
    assert tables.label("enterprise_nature", "7") == "个体"  # the screenshot's value
    assert tables.label("management_mode", "3") == "加贸手册"
    with pytest.raises(KeyError):
        tables.table_info("../customs/tables/unit")


@pytest.mark.parametrize("mode", ["1", "2"])
def test_bonded_manual_2_2_1_2_the_e_book_number_is_required_with_an_e_book_mode(mode: str) -> None:
    document = valid_bonded(management_mode=mode, ebook_number="")
    document["items"] = []
    for check in (save_problems, declare_problems):
        problem = only(check(document), "header.ebook_number")
        assert problem.code == "required"
        assert problem.message.zh.startswith("账册编号 不能为空")
    assert declare_problems(valid_bonded(management_mode="3", ebook_number="")) == []


@pytest.mark.parametrize(("key", "value"), [("hs_code", "3901109000"), ("name", "聚丙烯颗粒"),
                                            ("unit", "036")])
def test_bonded_manual_2_2_1_3_code_name_and_unit_must_equal_the_record(
        key: str, value: str) -> None:
    document = ebook_bonded(items=2)
    document["items"][1][key] = value
    lookup = sample_lookup(count=2)
    for check in (save_problems, declare_problems):
        problem = only(check(document, lookup=lookup), f"items[1].{key}")
        assert problem.code == "rule" and problem.section == "bonded manual §2.2.1.3"
        assert f"表体第2项 {ITEM_ZH[key]} 应与账册备案一致" in problem.message.zh
        assert "cannot be changed" in problem.message.en
    assert save_problems(document) == []  # without a lookup the record checks are skipped
    assert save_problems(valid_bonded(management_mode="3"), lookup=lookup) == []


def test_bonded_manual_2_2_1_3_the_specification_may_differ_from_the_record() -> None:
    document = ebook_bonded(items=2)
    document["items"][0]["specification"] = "企业自己的规格"
    assert declare_problems(document, lookup=sample_lookup(count=2)) == []


def test_bonded_manual_2_2_1_3_an_unknown_record_item() -> None:
    document = ebook_bonded(items=2)
    document["items"][1]["record_item_number"] = "99"
    problem = only(save_problems(document, lookup=sample_lookup(count=2)),
                   "items[1].record_item_number")
    assert problem.code == "rule"
    assert f"备案序号 99 在账册 {EBOOK_NUMBER} 中没有备案" in problem.message.zh
    other_book = ebook_bonded("E99", items=1)
    assert at(save_problems(other_book, lookup=sample_lookup()), "items[0].record_item_number")


def test_bonded_manual_2_2_1_3_fill_from_ebook() -> None:
    document = ebook_bonded(items=3)
    for item in document["items"]:
        item.update(hs_code="", name="", unit="")
    document["items"][0]["specification"] = "改过的规格"
    document["items"][1]["specification"] = ""
    document["items"][2]["record_item_number"] = "77"
    before = copy.deepcopy(document)
    filled = fill_from_ebook(document, sample_lookup(count=3))
    assert document == before  # a copy
    records = sample_ebook_items(EBOOK_NUMBER, 2)
    assert filled["items"][0]["hs_code"] == records[0]["hs_code"]
    assert filled["items"][0]["specification"] == "改过的规格"  # may differ: kept
    assert {k: filled["items"][1][k] for k in records[1]} == records[1]
    assert filled["items"][2]["hs_code"] == ""  # unknown record item: unchanged
    plain = valid_bonded(management_mode="3")
    assert fill_from_ebook(plain, sample_lookup()) == plain


def test_the_lookup_is_called_with_the_ebook_number_and_the_record_item_number() -> None:
    calls: list[tuple[str, str]] = []

    def lookup(ebook_number: str, record_item_number: str) -> EBookItem | None:
        calls.append((ebook_number, record_item_number))
        return None

    save_problems(ebook_bonded("E123", items=2), lookup=lookup)
    assert calls == [("E123", "1"), ("E123", "2")]


# -- 总库存数量, bonded manual §2.2.1.3 ------------------------------------------------------------


def test_bonded_manual_2_2_1_3_total_stock_is_the_sum_of_every_part() -> None:
    item = {"stock_qty": "100.5", "online_qty": "20", "transferred_in_undeclared_qty": "3",
            "finished_converted_qty": "0.25", "outsourced_converted_qty": "4",
            "defective_converted_qty": "1", "in_transit_qty": "0.125"}
    assert total_stock(item) == "128.875"
    assert total_stock({**item, "finished_converted_qty": "", "in_transit_qty": ""}) == "128.5"
    assert total_stock({"stock_qty": "0.1", "online_qty": "0.2",
                        "transferred_in_undeclared_qty": "0"}) == "0.3"  # exact, no float


@pytest.mark.parametrize("change", [{"stock_qty": ""}, {"online_qty": "x"},
                                    {"in_transit_qty": "-1"}, {"stock_qty": 5}])
def test_bonded_manual_2_2_1_3_no_total_while_a_part_is_missing_or_bad(change: dict[str, Any]
                                                                   ) -> None:
    item = {"stock_qty": "1", "online_qty": "2", "transferred_in_undeclared_qty": "3", **change}
    assert total_stock(item) == ""


def test_bonded_manual_2_2_1_3_normalise_computes_an_empty_total_and_keeps_a_given_one() -> None:
    document = valid_bonded(items=2)
    document["items"][0]["total_stock_qty"] = ""
    document["items"][1]["total_stock_qty"] = "999"
    before = copy.deepcopy(document)
    result = normalise(document)
    assert document == before
    assert result["items"][0]["total_stock_qty"] == total_stock(document["items"][0])
    assert result["items"][1]["total_stock_qty"] == "999"


def test_normalise_fills_missing_keys_and_renumbers() -> None:
    document = {"format": FORMAT, "client_reference": "0" * 32,
                "items": [{"stock_qty": "1", "online_qty": "1",
                           "transferred_in_undeclared_qty": "1"}, {}, {"item_number": 9}]}
    result = normalise(document)
    assert set(result["header"]) == {f.key for f in HEADER}
    assert [item["item_number"] for item in result["items"]] == [1, 2, 3]
    assert result["items"][0]["total_stock_qty"] == "3"
    assert result["items"][1]["total_stock_qty"] == ""
    with pytest.raises(TypeError):
        normalise([])  # type: ignore[arg-type]


def test_bonded_manual_2_2_1_3_an_overridden_total_that_differs_is_a_warning() -> None:
    document = valid_bonded(items=2)
    computed = document["items"][1]["total_stock_qty"]
    document["items"][1]["total_stock_qty"] = "1"
    assert declare_problems(document) == []  # may be overridden
    [warning] = stock_warnings(document)
    assert warning.path == "items[1].total_stock_qty" and warning.code == "rule"
    assert warning.section == "bonded manual §2.2.1.3"
    assert computed in warning.message.zh and "不一致" in warning.message.zh
    document["items"][1]["total_stock_qty"] = str(Decimal(computed).normalize())
    assert stock_warnings(document) == []  # the same number written differently


# -- junk never raises ---------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)


def _places(junk: Any) -> list[Any]:
    header_key = valid_bonded()["header"]
    item_with = valid_bonded()
    item_with["items"][0]["stock_qty"] = junk
    header_with = valid_bonded()
    header_with["header"]["management_mode"] = junk
    ebook_with = ebook_bonded()
    ebook_with["items"][0]["record_item_number"] = junk
    return [junk, {"header": junk}, {"items": junk}, {"format": FORMAT, "items": [junk]},
            {"header": {**header_key, "remarks": junk}}, item_with, header_with, ebook_with]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(JSON_VALUES)
def test_junk_never_raises(junk: Any) -> None:
    for document in _places(junk):
        for problems in (save_problems(document, lookup=sample_lookup()),
                         declare_problems(document, lookup=sample_lookup()),
                         stock_warnings(document)):
            assert all(isinstance(p, Problem) for p in problems)
            assert all(p.section.startswith("bonded manual §") for p in problems)
        if isinstance(document, dict):
            normalise(document)
            fill_from_ebook(document, sample_lookup())
            items = document.get("items")
            for item in items if isinstance(items, list) else []:
                total_stock(item)
    assert declare_problems(junk) != []  # junk is never a whole document


def test_unknown_keys_and_wrong_types_are_named() -> None:
    document = valid_bonded()
    document["extra"] = 1
    document["header"]["remark"] = ""
    document["items"][0]["colour"] = "red"
    paths = {p.path for p in save_problems(document)}
    assert {"extra", "header.remark", "items[0].colour"} <= paths
    assert only(save_problems({**valid_bonded(), "header": []}), "header").code == "format"
    assert only(save_problems({**valid_bonded(), "items": {}}), "items").code == "format"
    assert only(save_problems({**valid_bonded(), "format": "eport-customs/1"}),
                "format").code == "format"
    assert only(save_problems({**valid_bonded(), "client_reference": "x"}),
                "client_reference").code == "format"
    problems = save_problems({**valid_bonded(), "items": [1, "x"]})
    assert [p.path for p in problems] == ["items[0]", "items[1]"]
