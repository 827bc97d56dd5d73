"""Reading a bonded verification document from a file: JSON (one document) or CSV
(eport-bonded-csv/1, docs/bonded-document.md "CSV"). All or nothing: a file with any problem
raises BondedFileError naming every problem (CSV ones with their line number, "line N: …" /
"第 N 行: …") and returns nothing. What is returned is normalised (序号 numbered, 总库存数量
computed where empty) and has no format problem; 暂存 and 申报 check the rest.
"""

from __future__ import annotations

import csv
import difflib
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eport.common.bonded.document import MAX_ITEMS, import_problems, new_bonded_document, normalise
from eport.common.bonded.fields import HEADER_KEYS, ITEM_KEYS
from eport.common.customs.document import DocumentError
from eport.common.customs.fields import Problem, shown
from eport.common.document_files import (
    CsvRows,
    Progress,
    RowReader,
    capped,
    decode_csv,
    in_line_order,
    is_json,
    load_json,
    nesting_depth,
    physical_lines,
    read_document_file,
)
from eport.common.text import Bilingual

__all__ = ["CSV_FORMAT", "MAX_FILE_BYTES", "MAX_LINES", "BondedFileError", "dump_bonded_csv",
           "load_bonded_csv", "load_bonded_file", "load_bonded_json"]

CSV_FORMAT = "eport-bonded-csv/1"
# 10,000 body lines are a normal ledger; twice that plus the header rows is the limit. A
# longer file is a wrong export, refused at once instead of producing 20,000 errors.
MAX_LINES = MAX_ITEMS + 200
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_PROBLEMS = 200
MAX_JSON_DEPTH = 6
META_KEYS = ("client_reference",)
PROGRESS_EVERY = 500


class BondedFileError(DocumentError):
    """A file that does not hold a usable bonded verification document; `.problems` name every
    problem, CSV ones with their line number in the message."""


def _fail(path: str, zh: str, en: str) -> BondedFileError:
    return BondedFileError([Problem(path, "format", Bilingual(zh, en))])


def load_bonded_file(path: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """The document in `path`: JSON when it ends in .json or starts with "{", else CSV.
    progress(done_lines, total_lines) is called while a CSV file is read (every 500 lines and
    at the end)."""
    data = read_document_file(path, max_bytes=MAX_FILE_BYTES, document_zh="保税核查表",
                              fail=_fail)
    if is_json(path, data):
        return load_bonded_json(data)
    return load_bonded_csv(data, progress=progress)


def _capped(problems: Sequence[Problem]) -> list[Problem]:
    return capped(problems, MAX_PROBLEMS, f"错误太多 ({len(problems)} 个), 其余从略",
                  f"too many problems ({len(problems)}); the rest are left out")


def _checked(document: dict[str, Any], lines: Mapping[str, int] | None = None,
             earlier: Sequence[tuple[int, Problem]] = ()) -> dict[str, Any]:
    """The normalised document when it has no problem; else every problem in line order."""
    result = normalise(document)
    found = in_line_order(import_problems(result), lines, earlier)
    if found:
        raise BondedFileError(_capped(found))
    return result


# -- JSON -----------------------------------------------------------------------------------


def load_bonded_json(data: bytes) -> dict[str, Any]:
    """One document object (UTF-8, a BOM allowed). Numbers are read (floats exactly, as
    Decimal) only to be named: quantities must be strings. A missing client_reference is made."""
    raw = load_json(data, _fail, quote_key=shown)
    if not isinstance(raw, dict):
        raise _fail("", "JSON 文件应为一份保税核查表对象 {...}",
                    "a JSON file must hold one document object {...}")
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise _fail("", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层, 不是保税核查表",
                    f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; not a document")
    if "client_reference" not in raw:
        raw["client_reference"] = uuid.uuid4().hex
    return _checked(raw)


# -- CSV ------------------------------------------------------------------------------------


@dataclass
class _Reader(RowReader):
    """Builds the document row by row, collecting every problem with its line."""

    meta_keys = META_KEYS
    header_keys = HEADER_KEYS

    items: list[dict[str, Any]] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    in_table: bool = False
    broken_table: bool = False

    def row(self, line: int, cells: list[str]) -> None:
        kind = cells[0]
        if kind in ("meta", "header"):
            self.in_table = False
            self.key_value(line, kind, cells)
        elif kind == "items":
            self.start_table(line, cells[1:])
        elif kind == "":
            self.table_row(line, cells[1:])
        else:
            what = shown(kind)
            self.error(line, f"第一列 '{what}' 不认识; 应为 meta, header, items, "
                       "或留空 (表体数据行)",
                       f"unknown row kind '{what}' in the first column; use meta, header, "
                       "items, or leave it empty for a body row")

    def start_table(self, line: int, columns: list[str]) -> None:
        if "items" in self.lines:
            self.error(line, f"表体 items 出现了两次 (第 {self.lines['items']} 行已有)",
                       f"the items table appears twice (first on line {self.lines['items']})",
                       "items")
            self.in_table, self.broken_table = True, True
            return
        self.lines["items"] = line
        bad = [c for c in columns if c not in ITEM_KEYS]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        self.in_table, self.broken_table = True, bool(not columns or bad or repeated)
        if bad:
            listed = ", ".join(map(shown, bad))
            near = [m for c in bad for m in difflib.get_close_matches(c, ITEM_KEYS, n=1)]
            hint_zh, hint_en = (f"; 是否应为 {', '.join(near)}?",
                                f"; did you mean {', '.join(near)}?") if near else ("", "")
            self.error(line, f"表体的列 {listed} 不认识{hint_zh}; 可用的列: {', '.join(ITEM_KEYS)}",
                       f"unknown items column(s) {listed}{hint_en}; the columns are "
                       f"{', '.join(ITEM_KEYS)}", "items")
        elif repeated:
            self.error(line, f"表体的列 {', '.join(repeated)} 重复",
                       f"items column(s) {', '.join(repeated)} repeated", "items")
        elif not columns:
            self.error(line, "items 行后面应列出列名", "the items row must list its columns",
                       "items")
        else:
            self.columns = tuple(columns)

    def table_row(self, line: int, values: list[str]) -> None:
        if self.broken_table:
            return  # rows of a table whose columns are wrong are not reported again
        if not self.in_table:
            self.error(line, "第一列为空的数据行应放在 items 列名行之后",
                       "a row with an empty first column must follow the items column row")
            return
        if len(self.items) >= MAX_ITEMS:
            if len(self.items) == MAX_ITEMS:
                self.error(line, f"表体最多 {MAX_ITEMS} 项", f"at most {MAX_ITEMS} body items",
                           "items")
                self.items.append({})  # counted once; dropped before assembling
            return
        path = f"items[{len(self.items)}]"
        if len(values) > len(self.columns):
            extra = shown(values[len(self.columns)])
            self.error(line, f"比列名多出了值 '{extra}' (共 {len(self.columns)} 列; 值中有逗号时"
                       "请加引号)", f"more values than columns: '{extra}' ({len(self.columns)} "
                       "columns; quote a value with a comma)", path)
        entry: dict[str, Any] = dict.fromkeys(ITEM_KEYS, "")
        entry.update(zip(self.columns, values, strict=False))
        entry["item_number"] = len(self.items) + 1  # 序号 is system-filled: renumbered
        self.items.append(entry)
        self.lines[path] = line


def load_bonded_csv(data: bytes | str, *, progress: Progress | None = None) -> dict[str, Any]:
    """One document from eport-bonded-csv/1 text (bytes are decoded as `decode_csv` says)."""
    text = data if isinstance(data, str) else decode_csv(data, _fail)
    total = physical_lines(text)
    if total > MAX_LINES:
        raise _fail("", f"文件有 {total} 行, 最多 {MAX_LINES} 行 (表体最多 {MAX_ITEMS} 项)",
                    f"the file has {total} lines, at most {MAX_LINES} (up to {MAX_ITEMS} body "
                    "items)")
    reader = _Reader()
    rows = CsvRows(text, progress=progress, total=total, every=PROGRESS_EVERY)
    if not reader.read_rows(rows, CSV_FORMAT, most_problems=MAX_PROBLEMS, quote_first=shown,
                            broken_row_at="start"):
        raise BondedFileError(_capped([problem for _, problem in reader.problems]))
    document = new_bonded_document()
    if reader.meta.get("client_reference"):
        document["client_reference"] = reader.meta["client_reference"]
    document["header"].update(reader.header)
    document["items"] = reader.items[:MAX_ITEMS]
    # What could be read is checked too, so that one round of corrections fixes everything.
    return _checked(document, reader.lines, reader.problems)


def dump_bonded_csv(document: Mapping[str, Any]) -> str:
    """The document as eport-bonded-csv/1 (CRLF lines, as Excel writes them; write it as
    "utf-8-sig" so that Excel opens it as UTF-8). Every header key, every item column;
    load_bonded_csv reads it back as normalise(document)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([CSV_FORMAT])
    writer.writerow(["meta", "client_reference", str(document.get("client_reference", ""))])
    header = document.get("header", {})
    header = header if isinstance(header, Mapping) else {}
    for key in HEADER_KEYS:
        writer.writerow(["header", key, str(header.get(key, ""))])
    writer.writerow(["items", *ITEM_KEYS])
    items = document.get("items", [])
    for entry in items if isinstance(items, list) else []:
        if isinstance(entry, Mapping):
            writer.writerow(["", *(str(entry.get(c, "")) for c in ITEM_KEYS)])
    return out.getvalue()
