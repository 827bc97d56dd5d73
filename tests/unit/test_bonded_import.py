"""Reading bonded verification documents from JSON and eport-bonded-csv/1 files: round trips,
every error with its line, encodings, the 10,000-line ledger with progress, and the limits.
All or nothing: a file with a problem returns nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eport.common.bonded import importing
from eport.common.bonded.document import declare_problems, normalise, save_problems
from eport.common.bonded.importing import (
    CSV_FORMAT,
    MAX_LINES,
    BondedFileError,
    dump_bonded_csv,
    load_bonded_csv,
    load_bonded_file,
    load_bonded_json,
)
from eport.common.customs.document import DocumentError
from tests.support.bonded_documents import valid_bonded

HEADER_ROWS = """eport-bonded-csv/1
header,internal_number,08091601
header,enterprise_code,1105030002
header,enterprise_name,北京测试保税加工有限公司
header,stocktaking_date,20260916
header,management_mode,3
header,ebook_number,B01041234567
header,enterprise_nature,7
"""
ITEMS_ROW = ("items,record_item_number,hs_code,name,specification,unit,stock_qty,online_qty,"
             "transferred_in_undeclared_qty\n")
ROW = ",{n},3901100090,聚乙烯颗粒,LDPE 2426H,035,100.5,2,0\n"


def csv_text(*rows: str, items: int = 2) -> str:
    return HEADER_ROWS + ITEMS_ROW + "".join(ROW.format(n=n) for n in range(1, items + 1)) + \
        "".join(rows)


def problems_of(data: bytes | str) -> list[str]:
    with pytest.raises(BondedFileError) as caught:
        load_bonded_csv(data)
    return [p.message.en for p in caught.value.problems]


def zh_problems_of(data: bytes | str) -> list[str]:
    with pytest.raises(BondedFileError) as caught:
        load_bonded_csv(data)
    return [p.message.zh for p in caught.value.problems]


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


# -- CSV: reading and round trips ------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    document = valid_bonded(items=5)
    path = write(tmp_path, "doc.csv", dump_bonded_csv(document).encode("utf-8-sig"))
    loaded = load_bonded_file(path)
    assert loaded == normalise(document)
    assert dump_bonded_csv(loaded) == dump_bonded_csv(document)


def test_csv_written_by_hand_is_read_and_normalised() -> None:
    document = load_bonded_csv(csv_text("# a comment\n", "\n", ",,,,,,,,,,\n"))
    assert document["header"]["internal_number"] == "08091601"
    assert document["header"]["remarks"] == ""
    assert [item["item_number"] for item in document["items"]] == [1, 2]
    assert document["items"][0]["total_stock_qty"] == "102.5"  # computed
    assert document["items"][0]["in_transit_qty"] == ""
    assert len(document["client_reference"]) == 32
    assert save_problems(document) == [] and declare_problems(document) == []


def test_csv_item_numbers_are_renumbered_and_a_given_total_is_kept() -> None:
    text = HEADER_ROWS + "items,item_number,record_item_number,hs_code,name,unit,stock_qty," \
        "online_qty,transferred_in_undeclared_qty,total_stock_qty\n" \
        ",7,1,3901100090,颗粒,035,1,2,3,99\n,7,2,3901100090,颗粒,035,1,2,3,\n"
    document = load_bonded_csv(text)
    assert [item["item_number"] for item in document["items"]] == [1, 2]
    assert [item["total_stock_qty"] for item in document["items"]] == ["99", "6"]


def test_csv_meta_client_reference_is_kept() -> None:
    reference = "ab" * 16
    document = load_bonded_csv(HEADER_ROWS.replace(
        "\n", f"\nmeta,client_reference,{reference}\n", 1))
    assert document["client_reference"] == reference
    assert document["items"] == []


def test_csv_bom_and_crlf() -> None:
    text = csv_text().replace("\n", "\r\n")
    assert load_bonded_csv(b"\xef\xbb\xbf" + text.encode("utf-8"))["items"][0]["name"] == \
        "聚乙烯颗粒"


def test_csv_gb18030_from_excel_on_a_chinese_windows(tmp_path: Path) -> None:
    path = write(tmp_path, "doc.csv", csv_text().encode("gb18030"))
    document = load_bonded_file(path)
    assert document["header"]["enterprise_name"] == "北京测试保税加工有限公司"
    assert document["items"][1]["name"] == "聚乙烯颗粒"


def test_csv_utf16_is_refused_with_a_hint() -> None:
    [message] = problems_of(csv_text().encode("utf-16"))
    assert message.startswith("line 1:") and "UTF-16" in message


def test_csv_bad_encoding_names_its_line() -> None:
    data = csv_text().encode("utf-8").replace("聚乙烯颗粒".encode(), b"\x81\x20\xff", 1)
    # line 10 is the first body row
    [message] = problems_of(data)
    assert message.startswith("line 10:") and "neither UTF-8 nor GB18030" in message


# -- CSV: errors, each with its line -------------------------------------------------------


def test_csv_unknown_header_key_with_a_hint() -> None:
    text = csv_text().replace("header,stocktaking_date", "header,stoktaking_date")
    [message] = problems_of(text)
    assert message == "line 5: unknown header key 'stoktaking_date'; did you mean " \
        "stocktaking_date?"
    [zh] = zh_problems_of(text)
    assert zh.startswith("第 5 行: 没有字段 'stoktaking_date'")


def test_csv_repeated_header_key() -> None:
    [message] = problems_of(csv_text().replace(
        "header,enterprise_nature,7", "header,enterprise_nature,7\nheader,management_mode,1"))
    assert message == "line 9: management_mode appears twice (first on line 6)"


def test_csv_wrong_columns() -> None:
    [message] = problems_of(csv_text().replace("stock_qty,online_qty", "stock,online_qty"))
    assert message.startswith("line 9: unknown items column(s) stock; did you mean stock_qty?")
    [message] = problems_of(csv_text().replace(",hs_code,name,", ",hs_code,hs_code,"))
    assert message == "line 9: items column(s) hs_code repeated"


def test_csv_more_values_than_columns() -> None:
    [message] = problems_of(csv_text(",3,3901100090,颗粒,规格,035,1,2,3,4\n"))
    assert message.startswith("line 12: more values than columns: '4'")


def test_csv_over_long_field_names_its_line() -> None:
    text = csv_text(f",3,3901100090,{'名' * 51},规格,035,1,2,3\n")
    [message] = problems_of(text)
    assert message.startswith("line 12: items[2].name: the format is wrong, please correct it "
                              "(too long: 51 characters, at most 50)")
    [message] = problems_of(csv_text().replace("北京测试保税加工有限公司", "北" * 31))
    assert message.startswith("line 4: enterprise_name: the format is wrong")


@pytest.mark.parametrize("bad", ["abc", "1,000", "-5", "12kg", "1e3"])
def test_csv_non_numeric_quantity_names_its_line(bad: str) -> None:
    [message] = problems_of(csv_text(f',3,3901100090,颗粒,规格,035,"{bad}",2,3\n'))
    assert message.startswith("line 12: items[2].stock_qty: the format is wrong")
    assert "decimal number" in message


def test_csv_every_problem_is_reported_in_line_order_and_nothing_is_returned() -> None:
    text = csv_text(",3,3901100090,颗粒,规格,KG,x,2,3\n", ",4,39.01,颗粒,规格,035,1,2,3,9\n",
                    "bogus,row\n").replace("header,stocktaking_date,20260916",
                                           "header,stocktaking_date,2026-09-16")
    messages = problems_of(text)
    lines = [int(m.split(":")[0].removeprefix("line ")) for m in messages]
    assert lines == sorted(lines)
    assert lines == [5, 12, 12, 13, 13, 14]


def test_csv_a_system_filled_value_is_refused_at_its_line() -> None:
    [message] = problems_of(csv_text().replace(
        "header,enterprise_nature,7", "header,enterprise_nature,7\nheader,declaration_date,"
        "20260917"))
    assert message.startswith("line 9: declaration_date: filled by the system")


def test_csv_first_line_and_empty_file() -> None:
    [message] = problems_of("eport-customs-csv/1\n")
    assert message == f"line 1: the first line must be {CSV_FORMAT}, not 'eport-customs-csv/1'"
    [message] = problems_of("")
    assert "the file is empty" in message


def test_csv_broken_quoting() -> None:
    [message] = problems_of(csv_text(',3,"3901100090,颗粒\n'))
    assert "malformed CSV" in message


def test_csv_data_row_before_the_items_row() -> None:
    [message] = problems_of(HEADER_ROWS + ",1,2,3\n")
    assert message.startswith("line 9: a row with an empty first column must follow")


def test_csv_items_table_twice() -> None:
    [message] = problems_of(csv_text(ITEMS_ROW))
    assert message == "line 12: the items table appears twice (first on line 9)"


def test_csv_many_problems_are_capped() -> None:
    rows = [",x,39.01,颗粒,规格,035,1,2,3\n" for _ in range(500)]
    with pytest.raises(BondedFileError) as caught:
        load_bonded_csv(csv_text(*rows))
    problems = caught.value.problems
    assert len(problems) == importing.MAX_PROBLEMS + 1
    assert "too many problems" in problems[-1].message.en


# -- a ledger of 10,000 lines -----------------------------------------------------------------


def test_csv_10000_body_lines_with_progress(tmp_path: Path) -> None:
    document = valid_bonded(items=10_000)
    path = write(tmp_path, "ledger.csv", dump_bonded_csv(document).encode("utf-8-sig"))
    calls: list[tuple[int, int]] = []
    loaded = load_bonded_file(path, progress=lambda done, total: calls.append((done, total)))
    assert len(loaded["items"]) == 10_000
    assert loaded["items"][-1]["item_number"] == 10_000
    total = calls[-1][1]
    assert calls[-1] == (total, total) and total > 10_000
    assert len(calls) >= 10
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert all(t == total for _, t in calls)


def test_csv_over_the_line_limit_is_one_problem() -> None:
    rows = [ROW.format(n=n) for n in range(MAX_LINES)]
    with pytest.raises(BondedFileError) as caught:
        load_bonded_csv(csv_text(*rows))
    [problem] = caught.value.problems
    assert f"at most {MAX_LINES}" in problem.message.en


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "MAX_FILE_BYTES", 100)
    with pytest.raises(BondedFileError, match="too big"):
        load_bonded_file(write(tmp_path, "doc.csv", csv_text()))


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(BondedFileError, match="cannot read"):
        load_bonded_file(tmp_path / "missing.csv")


# -- JSON -----------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    document = valid_bonded(items=3)
    path = write(tmp_path, "doc.json", json.dumps(document, ensure_ascii=False))
    assert load_bonded_file(path) == normalise(document)
    path = write(tmp_path, "doc.txt", b"\xef\xbb\xbf" + json.dumps(document).encode())
    assert load_bonded_file(path) == normalise(document)  # by content, with a BOM


def test_json_missing_keys_and_reference_are_filled() -> None:
    document = valid_bonded()
    del document["client_reference"]
    del document["header"]["remarks"]
    for item in document["items"]:
        del item["item_number"], item["total_stock_qty"]
    loaded = load_bonded_json(json.dumps(document).encode())
    assert len(loaded["client_reference"]) == 32
    assert loaded["header"]["remarks"] == ""
    assert loaded["items"][1]["item_number"] == 2
    assert loaded["items"][1]["total_stock_qty"] == valid_bonded()["items"][1]["total_stock_qty"]


def test_json_numbers_are_named_at_their_path() -> None:
    document: dict[str, Any] = valid_bonded()
    text = json.dumps(document).replace('"stock_qty": "1001.5"', '"stock_qty": 1001.5')
    with pytest.raises(BondedFileError) as caught:
        load_bonded_json(text.encode())
    [problem] = caught.value.problems
    assert problem.path == "items[0].stock_qty" and "write numbers as strings" in \
        problem.message.en


@pytest.mark.parametrize(("data", "expected"), [
    (b'{"a": 1, "a": 2}', "appears twice"),
    (b"[1, 2]", "one document object"),
    (b'{"format": \n "x",,}', "line 2: not valid JSON"),
    (b'{"header": "\xff"}', "must be UTF-8"),
    (b'{"a": [[[[[[[[1]]]]]]]]}', "nested deeper"),
])
def test_json_errors(data: bytes, expected: str) -> None:
    with pytest.raises(BondedFileError) as caught:
        load_bonded_json(data)
    assert expected in caught.value.problems[0].message.en


def test_json_every_problem_at_once() -> None:
    document = valid_bonded()
    document["header"]["stocktaking_date"] = "2026"
    document["header"]["remarks"] = "x" * 300
    document["items"][1]["hs_code"] = "x"
    with pytest.raises(BondedFileError) as caught:
        load_bonded_json(json.dumps(document).encode())
    assert [p.path for p in caught.value.problems] == [
        "header.stocktaking_date", "header.remarks", "items[1].hs_code"]


def test_the_error_is_a_document_error_with_problems() -> None:
    assert issubclass(BondedFileError, DocumentError)
    with pytest.raises(DocumentError) as caught:
        load_bonded_csv("nonsense")
    assert caught.value.problems and str(caught.value)


def test_an_unfinished_document_may_be_imported() -> None:
    document = load_bonded_csv(HEADER_ROWS.replace("header,enterprise_nature,7\n", "")
                               + ITEMS_ROW + ",1,,,,,,,\n")
    assert document["header"]["enterprise_nature"] == ""
    assert save_problems(document)  # 暂存 names what is missing
