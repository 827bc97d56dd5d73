"""Reading a document from a file a customs broker made: JSON (one document) or CSV
(eport-customs-csv/1, docs/customs-document.md "CSV import"). All or nothing: a file with any
problem raises DocumentFileError naming every problem, with CSV line numbers, and returns
nothing. An imported document passes validate(declaring=False); declaring checks the rest.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from eport.common.customs.document import (
    DocumentError,
    Problem,
    new_document,
    normalise,
    validate,
)
from eport.common.customs.fields import ATTACHED, CONTAINER, HEADER, ITEM_KEYS, Group, shown
from eport.common.document_files import (
    CsvRows,
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

CSV_FORMAT = "eport-customs-csv/1"
MAX_FILE_BYTES = 1024 * 1024
# 50 items, a few hundred containers and ~45 header lines fit easily; a longer file is a
# wrong export (a whole ledger), refused at once instead of producing 10,000 errors.
MAX_LINES = 2000
MAX_PROBLEMS = 100
# A document nests 3 levels (document, header, party); deeper JSON is junk that would only
# exhaust the stack when copied.
MAX_JSON_DEPTH = 8
META_KEYS = ("document_type", "direction", "client_reference")
TABLES: dict[str, tuple[str, ...]] = {
    "items": ITEM_KEYS,
    "containers": tuple(f.key for f in CONTAINER),
    "attached_documents": tuple(f.key for f in ATTACHED),
}
HEADER_KEYS: tuple[str, ...] = tuple(
    key for f in HEADER
    for key in ([f"{f.key}.{g.key}" for g in f.fields] if isinstance(f, Group) else [f.key]))


class DocumentFileError(DocumentError):
    """A file that does not hold a usable document; `.problems` name every problem, CSV ones
    with their line number in the message ("line 12: …", "第 12 行: …")."""


def load_document_file(path: Path, *, today: date | None = None) -> dict[str, Any]:
    """The document in `path`: JSON when it ends in .json or starts with "{", else CSV."""
    data = read_document_file(path, max_bytes=MAX_FILE_BYTES, document_zh="报关单", fail=_fail)
    if is_json(path, data):
        return load_document_json(data, today=today)
    return load_document_csv(data, today=today)


def _fail(path: str, zh: str, en: str) -> DocumentFileError:
    return DocumentFileError([Problem(path, "format", Bilingual(zh, en))])


def _check_document(document: dict[str, Any], today: date | None,
                    lines: Mapping[str, int] | None = None,
                    earlier: Sequence[tuple[int, Problem]] = ()) -> dict[str, Any]:
    """The document if it has no problem; else every problem (those found while reading the
    file, `earlier`, and validate's) in line order."""
    found = in_line_order(validate(document, declaring=False, today=today), lines, earlier)
    if found:
        raise DocumentFileError(_capped(found))
    return document


def _capped(problems: Sequence[Problem]) -> list[Problem]:
    return capped(problems, MAX_PROBLEMS, "错误太多, 其余从略",
                  "too many problems; the rest are left out")


# -- JSON ---------------------------------------------------------------------------------


def load_document_json(data: bytes, *, today: date | None = None) -> dict[str, Any]:
    """One document object. Numbers are kept as they are (floats as Decimal) so that
    validation names them ("write numbers as strings") instead of the parser failing."""
    raw = load_json(data, _fail, quote_key=str)  # the key as it is (bonded cuts it short)
    if not isinstance(raw, dict):
        raise _fail("", "JSON 文件应为一个报关单对象 {...} (一个文件一份)",
                    "a JSON file must hold one document object {...}")
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise _fail("", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层, 不是报关单",
                    f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; not a document")
    document = normalise(raw)
    if "client_reference" not in raw:
        document["client_reference"] = uuid.uuid4().hex
    header = document.get("header")
    if (isinstance(header, dict) and raw.get("direction") == "import"
            and "ie_date" not in (raw.get("header") or {})):
        header["ie_date"] = (today or date.today()).strftime("%Y%m%d")  # QP FAQ §十三(十三)
    return _check_document(document, today)


# -- CSV ----------------------------------------------------------------------------------


@dataclass
class _Reader(RowReader):
    """Builds the document row by row, collecting every problem with its line."""

    meta_keys = META_KEYS
    header_keys = HEADER_KEYS

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    table: str = ""
    columns: tuple[str, ...] = ()

    def row(self, line: int, cells: list[str]) -> None:
        kind = cells[0]
        if kind in ("meta", "header"):
            self.table = ""
            self.key_value(line, kind, cells)
        elif kind in TABLES:
            self.start_table(line, kind, cells[1:])
        elif kind == "":
            self.table_row(line, cells[1:])
        else:
            what = shown(kind)
            self.error(line, f"第一列 '{what}' 不认识; 应为 meta, header, items, containers, "
                       "attached_documents, 或留空 (表格数据行)", f"unknown row kind '{what}' in "
                       "the first column; use meta, header, items, containers, "
                       "attached_documents, or leave it empty for a table row")

    def start_table(self, line: int, name: str, columns: list[str]) -> None:
        self.table, self.columns = "", ()
        if name in self.tables:
            self.error(line, f"表格 {name} 出现了两次 (第 {self.lines[name]} 行已有)",
                       f"the {name} table appears twice (first on line {self.lines[name]})", name)
            return
        known = TABLES[name]
        bad = [c for c in columns if c not in known]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if not columns or bad or repeated:
            if bad:
                listed = ", ".join(map(shown, bad))
                self.error(line, f"{name} 表头中的列 {listed} 不认识; 可用的列: "
                           f"{', '.join(known)}", f"unknown {name} column(s) "
                           f"{listed}; the columns are {', '.join(known)}",
                           name)
            elif repeated:
                self.error(line, f"{name} 表头中的列 {', '.join(repeated)} 重复",
                           f"{name} column(s) {', '.join(repeated)} repeated", name)
            else:
                self.error(line, f"{name} 行后面应列出列名",
                           f"the {name} row must list its columns", name)
            self.tables[name] = []
            self.lines[name] = line
            self.table = "-"  # rows of a broken table are skipped, not reported again
            return
        self.tables[name] = []
        self.lines[name] = line
        self.table, self.columns = name, tuple(columns)

    def table_row(self, line: int, values: list[str]) -> None:
        if self.table == "-":
            return
        if not self.table:
            self.error(line, "第一列为空的数据行应放在 items/containers/attached_documents "
                       "表头行之后",
                       "a row with an empty first column must follow an items, containers or "
                       "attached_documents column row")
            return
        rows = self.tables[self.table]
        path = f"{self.table}[{len(rows)}]"
        if len(values) > len(self.columns):
            extra = shown(values[len(self.columns)])
            self.error(line, f"比表头多出了值 '{extra}' (值中有逗号时请加引号)",
                       f"more values than columns: '{extra}' (quote a value with a comma)", path)
        entry: dict[str, Any] = dict.fromkeys(TABLES[self.table], "")
        entry.update(zip(self.columns, values, strict=False))
        if self.table == "items":
            number = entry.get("item_number", "")
            if "item_number" not in self.columns:
                entry["item_number"] = len(rows) + 1
            elif isinstance(number, str) and number.isascii() and number.isdigit() \
                    and len(number) < 4:
                entry["item_number"] = int(number)
            else:
                what = shown(str(number))
                self.error(line, f"项号 '{what}' 应为 1, 2, 3 …",
                           f"item_number '{what}' must be 1, 2, 3 …", f"{path}.item_number")
                entry["item_number"] = len(rows) + 1  # reported once, not again by validate
        rows.append(entry)
        self.lines[path] = line


def load_document_csv(data: bytes | str, *, today: date | None = None) -> dict[str, Any]:
    """One document from eport-customs-csv/1 text (bytes are decoded as `decode_csv` says)."""
    text = data if isinstance(data, str) else decode_csv(data, _fail)
    line_count = physical_lines(text)
    if line_count > MAX_LINES:
        raise _fail("", f"文件有 {line_count} 行, 最多 {MAX_LINES} 行; "
                    "一个文件只放一份报关单 (最多 50 项商品)",
                    f"the file has {line_count} lines, at most {MAX_LINES}; one document "
                    "(up to 50 items) per file")
    reader = _Reader()
    # A wrong first line is quoted cut at 40 characters; broken quoting names the line the
    # parser reached.
    if not reader.read_rows(CsvRows(text), CSV_FORMAT, most_problems=MAX_PROBLEMS,
                            quote_first=lambda row: row[:40], broken_row_at="parsed"):
        raise DocumentFileError(_capped([problem for _, problem in reader.problems]))
    # What could be read is validated too, so one round of corrections fixes everything.
    document = _assemble(reader, today)
    return _check_document(document, today, reader.lines, reader.problems)


def _assemble(reader: _Reader, today: date | None) -> dict[str, Any]:
    """The document: new_document's template (so the import date defaults to today) with the
    file's values laid over it."""
    document_type = reader.meta.get("document_type") or "declaration"
    direction = reader.meta.get("direction", "")
    known = document_type in ("declaration", "filing-list") and direction in ("import", "export")
    document = new_document(document_type, direction, today=today) if known else \
        new_document(today=today)
    document["document_type"], document["direction"] = document_type, direction
    if not known and "ie_date" not in reader.header:
        document["header"]["ie_date"] = ""
    if reader.meta.get("client_reference"):
        document["client_reference"] = reader.meta["client_reference"]
    header = document["header"]
    for key, value in reader.header.items():
        group, _, sub = key.partition(".")
        if sub:
            header[group][sub] = value
        else:
            header[key] = value
    document["items"] = reader.tables.get("items", [])
    document["containers"] = reader.tables.get("containers", [])
    document["attached_documents"] = reader.tables.get("attached_documents", [])
    return document


def dump_document_csv(document: Mapping[str, Any]) -> str:
    """The document as eport-customs-csv/1 (CRLF lines, as Excel writes them); write it as
    "utf-8-sig" so that Excel opens it as UTF-8. load_document_csv reads it back unchanged."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([CSV_FORMAT])
    for key in META_KEYS:
        writer.writerow(["meta", key, str(document.get(key, ""))])
    header = document.get("header", {})
    for key in HEADER_KEYS:
        group, _, sub = key.partition(".")
        value = header.get(group, {}).get(sub, "") if sub else header.get(key, "")
        writer.writerow(["header", key, value])
    for name, columns in TABLES.items():
        entries = document.get(name, [])
        if name != "items" and not entries:
            continue
        writer.writerow([name, *columns])
        for entry in entries:
            writer.writerow(["", *(str(entry.get(c, "")) for c in columns)])
    return out.getvalue()
