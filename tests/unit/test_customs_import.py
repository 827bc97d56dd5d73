"""Importing documents from files: eport-customs-csv/1 (as Excel writes it) and JSON. Every
bad file names its problems with line numbers and returns nothing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from eport.common.customs.document import DocumentError, validate
from eport.common.customs.importing import (
    CSV_FORMAT,
    MAX_FILE_BYTES,
    DocumentFileError,
    dump_document_csv,
    load_document_csv,
    load_document_file,
    load_document_json,
)
from tests.support.customs_documents import valid_declaration, valid_filing_list

TODAY = date(2026, 12, 1)


def problems_of(data: bytes | str, **kwargs: Any) -> list[str]:
    """The English messages of the file's problems (it must have some)."""
    with pytest.raises(DocumentFileError) as caught:
        load_document_csv(data, **kwargs)
    assert isinstance(caught.value, DocumentError)
    return [p.message.en for p in caught.value.problems]


def minimal_csv(*rows: str) -> str:
    """A short valid file (saving-valid, not complete) plus `rows`."""
    return "\r\n".join([CSV_FORMAT, "meta,direction,import", "header,trade_mode,0110",
                        "items,hs_code,name,quantity,unit",
                        ",8471300000,笔记本电脑,11,001", *rows]) + "\r\n"


# -- round trip and the format ---------------------------------------------------------------


@pytest.mark.parametrize("direction", ["import", "export"])
def test_csv_round_trip(direction: str) -> None:
    document = valid_declaration(direction, items=4, containers=3)
    document["attached_documents"] = [{"code": "A", "number": "442100126123456000"}]
    document["header"]["remarks"] = '唛头 N/M, "SZ" 箱号见附页'  # comma and quotes
    text = dump_document_csv(document)
    assert text.startswith(CSV_FORMAT + "\r\n")
    assert load_document_csv(text) == document
    assert load_document_csv(text.encode("utf-8-sig")) == document
    assert validate(load_document_csv(text), declaring=True) == []


def test_csv_round_trip_of_a_filing_list() -> None:
    document = valid_filing_list("export", items=2)
    assert load_document_csv(dump_document_csv(document)) == document


def test_gb18030_and_utf8_without_bom() -> None:
    text = dump_document_csv(valid_declaration())
    assert load_document_csv(text.encode("gb18030")) == load_document_csv(text.encode("utf-8"))


def test_minimal_file_gets_the_template_and_numbered_items() -> None:
    """Missing keys are empty, items are numbered in order, the import date is today
    (QP FAQ §十三(十三)) and a client reference is made."""
    document = load_document_csv(minimal_csv(",8517130000,智能手机,12,001"), today=TODAY)
    assert document["document_type"] == "declaration"
    assert document["header"]["ie_date"] == "20261201"
    assert document["header"]["owner"] == {"credit_code": "", "customs_code": "", "name": ""}
    assert [i["item_number"] for i in document["items"]] == [1, 2]
    assert document["items"][1]["unit_price"] == ""
    assert len(document["client_reference"]) == 32
    assert document["containers"] == [] and document["attached_documents"] == []


def test_excel_padding_comments_blank_lines_and_spaces_are_fine() -> None:
    text = "\r\n".join([
        f"{CSV_FORMAT},,,,", "# 深圳报关行 导出 ,,,", ",,,,", "meta,direction,export,,",
        "header, trade_mode , 0110 ,,", "items,hs_code,name,quantity,unit",
        ",8471300000,笔记本电脑,11,001", ",,,,", "containers,number,size,,",
        ",MSCU1234566,L,,"])
    document = load_document_csv(text)
    assert document["header"]["trade_mode"] == "0110"
    assert document["containers"] == [{"number": "MSCU1234566", "size": "L", "tare_weight": ""}]


def test_header_ie_date_given_empty_stays_empty() -> None:
    document = load_document_csv(minimal_csv("header,ie_date,"), today=TODAY)
    assert document["header"]["ie_date"] == ""


# -- CSV errors ------------------------------------------------------------------------------


def test_first_line_must_name_the_format() -> None:
    assert problems_of("header,trade_mode,0110\r\n") == [
        f"line 1: the first line must be {CSV_FORMAT}, not 'header,trade_mode,0110'"]
    assert problems_of("") == [
        f"line 1: the file is empty; the first line must be {CSV_FORMAT}"]


def test_unknown_header_key_is_named_with_its_line_and_a_suggestion() -> None:
    with pytest.raises(DocumentFileError) as caught:
        load_document_csv(minimal_csv("header,transprt_mode,2"))
    problem = caught.value.problems[0]
    assert problem.path == "header.transprt_mode"
    assert problem.message.en == ("line 6: unknown header key 'transprt_mode'; "
                                  "did you mean transport_mode?")
    assert problem.message.zh.startswith("第 6 行: ")


@pytest.mark.parametrize(("rows", "expected"), [
    (["header,trade_mode,0110"], "line 6: trade_mode appears twice (first on line 3)"),
    (["header,remarks,a,b"], "line 6: a header row has three columns"),
    (["header"], "line 6: a header row needs a key in column 2"),
    (["meta,currency,USD"], "line 6: unknown meta key 'currency'"),
    (["goods,1,2"], "line 6: unknown row kind 'goods'"),
    (["items,hs_code"], "line 6: the items table appears twice (first on line 4)"),
    (["containers,number,colour", ",MSCU1234566,red"], "line 6: unknown containers column(s) "
     "colour"),
    (["containers,number,number"], "line 6: containers column(s) number repeated"),
    (["containers"], "line 6: the containers row must list its columns"),
    ([",8517130000,智能手机,12,001,extra"], "line 6: more values than columns: 'extra'"),
])
def test_csv_structure_errors(rows: list[str], expected: str) -> None:
    messages = problems_of(minimal_csv(*rows))
    assert any(m.startswith(expected) for m in messages), messages


def test_a_data_row_needs_a_table() -> None:
    text = f"{CSV_FORMAT}\r\nmeta,direction,import\r\n,8471300000,笔记本电脑\r\n"
    assert problems_of(text)[0].startswith("line 3: a row with an empty first column must "
                                           "follow")


def test_non_numeric_quantity_and_over_long_name_name_their_lines() -> None:
    messages = problems_of(minimal_csv(",8517130000," + "货" * 101 + ",1 2,001",
                                       ",8542319000,集成电路,abc,007"))
    assert messages == [
        "line 6: items[1].name: too long: 101 characters, at most 100",
        "line 6: items[1].quantity: must be a decimal number such as 12.50, not '1 2' "
        "(no thousands separators or units)",
        "line 7: items[2].quantity: must be a decimal number such as 12.50, not 'abc' "
        "(no thousands separators or units)"]


def test_item_number_column_must_be_numbers() -> None:
    text = "\r\n".join([CSV_FORMAT, "meta,direction,import", "items,item_number,hs_code",
                        ",1,8471300000", ",two,8517130000", ",3,8542319000"])
    assert problems_of(text) == ["line 5: item_number 'two' must be 1, 2, 3 …"]
    text = text.replace(",two,", ",5,")
    assert problems_of(text) == [
        "line 5: items[1].item_number: must be 2 (items are numbered 1, 2, 3 in order), not 5"]


def test_all_problems_at_once_in_line_order() -> None:
    """Reading and validation problems together, so one round of corrections fixes all."""
    messages = problems_of(minimal_csv("header,transport_mode,Q", "header,remark,x",
                                       "containers,number,size", ",MSCU1234567,X"))
    assert [m.split(":")[0] for m in messages] == ["line 6", "line 7", "line 9", "line 9"]
    assert "transport_mode" in messages[0] and "remark" in messages[1]


def test_leading_zeros_dropped_by_excel_get_a_hint() -> None:
    messages = problems_of(minimal_csv("header,package_type,6"))
    assert any("did you mean 06?" in m for m in messages)


def test_direction_is_required_and_checked() -> None:
    text = f"{CSV_FORMAT}\r\nmeta,document_type,declaration\r\n"
    assert problems_of(text) == ["direction: must be one of import, export, not ''"]
    assert problems_of(text + "meta,direction,transit\r\n")[0].startswith(
        "line 3: direction: must be one of import, export")


def test_too_many_lines_is_one_clear_error() -> None:
    text = minimal_csv(*[",8517130000,智能手机,12,001"] * 10_000)
    assert problems_of(text) == [
        "the file has 10005 lines, at most 2000; one document (up to 50 items) per file"]


def test_51_items_is_a_rule_problem_on_the_items_line() -> None:
    messages = problems_of(minimal_csv(*[",8517130000,智能手机,12,001"] * 50))
    assert messages == ["line 4: items: 51 items, at most 50; split the declaration"]


def test_problems_are_capped() -> None:
    messages = problems_of(minimal_csv(*[f"header,bad{n},x" for n in range(300)]))
    assert len(messages) == 101 and messages[-1].startswith("too many problems")


@pytest.mark.parametrize(("data", "expected"), [
    ("\ufeff".encode("utf-16-le") + "x".encode("utf-16-le"), "line 1: the file is UTF-16"),
    (f"{CSV_FORMAT}\r\nmeta,direction,import\r\n".encode() + b"\xff\xfe\xff",
     "line 3: the file is neither UTF-8 nor GB18030"),
    (f'{CSV_FORMAT}\r\nheader,remarks,"unfinished\r\n', "line 2: malformed CSV"),
    (f"{CSV_FORMAT}\r\nmeta,direction,import\r\nheader,remarks,a\x00b\r\n",
     "line 3: remarks: contains a control character"),
])
def test_encoding_and_quoting_errors(data: bytes | str, expected: str) -> None:
    messages = problems_of(data)
    assert messages[0].startswith(expected), messages


def test_line_numbers_count_physical_lines_with_quoted_line_breaks() -> None:
    text = minimal_csv('header,goods_place,"皇岗\r\n口岸"', "header,remark,x")
    messages = problems_of(text)
    assert messages[0].startswith("line 6: goods_place: contains a control character")
    assert messages[1].startswith("line 8: unknown header key 'remark'")


# -- JSON and files --------------------------------------------------------------------------


def test_json_document_loads_and_gets_missing_keys_and_reference() -> None:
    raw = {"format": "eport-customs/1", "document_type": "declaration", "direction": "import",
           "header": {"trade_mode": "0110"}, "items": [{"item_number": 1, "name": "笔记本电脑"}]}
    document = load_document_json(json.dumps(raw, ensure_ascii=False).encode(), today=TODAY)
    assert document["header"]["ie_date"] == "20261201"
    assert document["items"][0]["hs_code"] == ""
    assert len(document["client_reference"]) == 32
    full = valid_declaration()
    assert load_document_json(json.dumps(full).encode("utf-8-sig")) == full


@pytest.mark.parametrize(("text", "path", "expected"), [
    ('{"format": "eport-customs/1", "header": {"gross_weight": 12.5}}',
     "header.gross_weight", "write numbers as strings"),
    ('{"a": 1, "a": 2}', "", "the key 'a' appears twice"),
    ('[{"format": "eport-customs/1"}]', "", "one document object"),
    ('{\n"format": "eport-customs/1",\n"header": {,}\n}', "line 3", "line 3: not valid JSON"),
    ('{"format": "eport-customs/1", "itemz": []}', "itemz", "unknown key"),
    ('{"header": {"remarks": ' + "[" * 50 + "]" * 50 + "}}", "", "nested deeper than 8"),
    ('{"header": ' + "[" * 100_000 + "]" * 100_000 + "}", "", "nested too deeply"),
])
def test_json_errors(text: str, path: str, expected: str) -> None:
    with pytest.raises(DocumentFileError) as caught:
        load_document_json(text.encode())
    problems = caught.value.problems
    assert any(p.path == path and expected in p.message.en for p in problems), problems


def test_json_must_be_utf8() -> None:
    with pytest.raises(DocumentFileError, match="UTF-8"):
        load_document_json('{"header": {"remarks": "深圳"}}'.encode("gb18030"))


def test_load_document_file_by_suffix_and_content(tmp_path: Path) -> None:
    document = valid_declaration(containers=2)
    (tmp_path / "a.json").write_text(json.dumps(document), encoding="utf-8")
    (tmp_path / "b.csv").write_text(dump_document_csv(document), encoding="utf-8-sig")
    (tmp_path / "c.txt").write_text(json.dumps(document), encoding="utf-8")
    (tmp_path / "d").write_bytes(dump_document_csv(document).encode("gb18030"))
    for name in ("a.json", "b.csv", "c.txt", "d"):
        assert load_document_file(tmp_path / name) == document, name


def test_load_document_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentFileError, match="cannot read"):
        load_document_file(tmp_path / "missing.csv")
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(DocumentFileError, match="too big"):
        load_document_file(big)
    bad = tmp_path / "bad.csv"
    bad.write_text(minimal_csv("header,transport_mode,Q"), encoding="utf-8")
    with pytest.raises(DocumentFileError) as caught:
        load_document_file(bad)
    assert caught.value.problems[0].path == "header.transport_mode"
    assert "line 6" in str(caught.value)


def test_the_documented_csv_example_loads() -> None:
    """docs/customs-document.md's example (without its "…" line) is a valid file."""
    doc = Path(__file__).parents[2] / "docs" / "customs-document.md"
    text = doc.read_text(encoding="utf-8")
    block = text.split("```\neport-customs-csv/1\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line != "…"]
    document = load_document_csv("\n".join([CSV_FORMAT, *lines]))
    assert document["header"]["transport_name"] == "粤Z1234港 /提前报关"
    assert [i["item_number"] for i in document["items"]] == [1, 2]
    assert document["attached_documents"] == [{"code": "A", "number": "442100126123456000"}]
