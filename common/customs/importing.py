"""Reading a document from a file a customs broker made: JSON (one document) or CSV
(eport-customs-csv/1, docs/customs-document.md "CSV import"). All or nothing: a file with any
problem raises DocumentFileError naming every problem, with CSV line numbers, and returns
nothing. An imported document passes validate(declaring=False); declaring checks the rest.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
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
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _fail("", f"文件太大 ({size} 字节, 最多 {MAX_FILE_BYTES}), "
                        "一个文件只放一份报关单",
                        f"the file is too big ({size} bytes, at most {MAX_FILE_BYTES}); one "
                        "document per file")
        data = path.read_bytes()
    except OSError as error:
        raise _fail("", f"无法读取文件 {path}: {error.strerror or error}",
                    f"cannot read {path}: {error.strerror or error}") from None
    if path.suffix.lower() == ".json" or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return load_document_json(data, today=today)
    return load_document_csv(data, today=today)


def _fail(path: str, zh: str, en: str) -> DocumentFileError:
    return DocumentFileError([Problem(path, "format", zh, en)])


def _check_document(document: dict[str, Any], today: date | None,
                    lines: Mapping[str, int] | None = None,
                    earlier: Sequence[tuple[int, Problem]] = ()) -> dict[str, Any]:
    """The document if it has no problem; else every problem (those found while reading the
    file, `earlier`, and validate's) in line order."""
    found = list(earlier)
    for problem in validate(document, declaring=False, today=today):
        line = _line_of(problem.path, lines or {})
        found.append((line, _at_line(problem, line)))
    if found:
        found.sort(key=lambda pair: pair[0])  # stable: validate's order within a line
        raise DocumentFileError(_capped([problem for _, problem in found]))
    return document


def _line_of(path: str, lines: Mapping[str, int]) -> int:
    """The CSV line a document path comes from, 0 when none (JSON, or a whole-file problem)."""
    while path and path not in lines:  # "items[2].hs_code" -> "items[2]" -> "items"
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get(path, 0)


def _at_line(problem: Problem, line: int) -> Problem:
    """The problem with the CSV line it comes from in front of its messages."""
    if not line:
        return problem
    return Problem(problem.path, problem.code, f"第 {line} 行: {problem.message_zh}",
                   f"line {line}: {problem.message_en}", problem.section)


# -- JSON ---------------------------------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value`, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, level = stack.pop()
        children = current.values() if isinstance(current, dict) else \
            current if isinstance(current, list) else ()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def load_document_json(data: bytes, *, today: date | None = None) -> dict[str, Any]:
    """One document object. Numbers are kept as they are (floats as Decimal) so that
    validation names them ("write numbers as strings") instead of the parser failing."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise _fail(f"line {line}", f"第 {line} 行: JSON 文件须为 UTF-8 编码",
                    f"line {line}: a JSON file must be UTF-8") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=Decimal)
    except _Duplicate as error:
        raise _fail("", f"JSON 中 '{error}' 出现了两次", f"the key '{error}' appears twice"
                    ) from None
    except json.JSONDecodeError as error:
        raise _fail(f"line {error.lineno}", f"第 {error.lineno} 行: 不是有效的 JSON ({error.msg})",
                    f"line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise _fail("", "JSON 嵌套过深", "the JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise _fail("", "JSON 文件应为一个报关单对象 {...} (一个文件一份)",
                    "a JSON file must hold one document object {...}")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise _fail("", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层, 不是报关单",
                    f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; not a document")
    document = normalise(raw)
    if "client_reference" not in raw:
        document["client_reference"] = uuid.uuid4().hex
    header = document.get("header")
    if (isinstance(header, dict) and raw.get("direction") == "import"
            and "ie_date" not in (raw.get("header") or {})):
        header["ie_date"] = (today or date.today()).strftime("%Y%m%d")  # seed 003 十三(十三)
    return _check_document(document, today)


# -- CSV ----------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """UTF-8 with or without the BOM Excel writes, else GB18030 (Excel's "CSV" on a Chinese
    Windows); UTF-16 (Excel's "Unicode text") is refused with a hint."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _fail("line 1", "第 1 行: 文件是 UTF-16 编码 (Excel 的\"Unicode 文本\"), 请另存为 "
                    "\"CSV UTF-8 (逗号分隔)\"", "line 1: the file is UTF-16 (Excel's \"Unicode "
                    "text\"); save it as \"CSV UTF-8 (comma delimited)\"")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            line = data[:utf8_error.start].count(b"\n") + 1
            raise _fail(f"line {line}",
                        f"第 {line} 行: 文件既不是 UTF-8 也不是 GB18030 编码, 请另存为 "
                        "\"CSV UTF-8 (逗号分隔)\"", f"line {line}: the file is neither UTF-8 nor "
                        "GB18030; save it as \"CSV UTF-8 (comma delimited)\"") from None


@dataclass
class _Reader:
    """Builds the document row by row, collecting every problem with its line."""

    problems: list[tuple[int, Problem]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    table: str = ""
    columns: tuple[str, ...] = ()

    def error(self, line: int, zh: str, en: str, path: str = "") -> None:
        self.problems.append((line, Problem(path or f"line {line}", "format",
                                            f"第 {line} 行: {zh}", f"line {line}: {en}")))

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

    def key_value(self, line: int, kind: str, cells: list[str]) -> None:
        if len(cells) < 2 or not cells[1]:
            self.error(line, f"{kind} 行的第二列应为字段名",
                       f"a {kind} row needs a key in column 2")
            return
        key, value = cells[1], cells[2] if len(cells) > 2 else ""
        if len(cells) > 3:
            self.error(line, f"{kind} 行只有三列 ({kind},字段名,值), 多出了 '{shown(cells[3])}' "
                       "(值中有逗号时请加引号)",
                       f"a {kind} row has three columns ({kind},key,value); "
                       f"found '{shown(cells[3])}' after the value (quote a value with a comma)")
            return
        known = META_KEYS if kind == "meta" else HEADER_KEYS
        store = self.meta if kind == "meta" else self.header
        path = key if kind == "meta" else f"header.{key}"
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint_zh, hint_en = (f"; 是否应为 {near[0]}?", f"; did you mean {near[0]}?") if near \
                else ("", "")
            what = shown(key)
            self.error(line, f"没有字段 '{what}'{hint_zh}", f"unknown {kind} key '{what}'{hint_en}",
                       path)
        elif key in store:
            self.error(line, f"字段 {key} 重复 (第 {self.lines[path]} 行已有)",
                       f"{key} appears twice (first on line {self.lines[path]})", path)
        else:
            store[key] = value
            self.lines[path] = line

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
    """One document from eport-customs-csv/1 text (bytes are decoded as `_decode` says)."""
    text = data if isinstance(data, str) else _decode(data)
    line_count = text.count("\n") + (0 if text.endswith("\n") else 1)
    if line_count > MAX_LINES:
        raise _fail("", f"文件有 {line_count} 行, 最多 {MAX_LINES} 行; "
                    "一个文件只放一份报关单 (最多 50 项商品)",
                    f"the file has {line_count} lines, at most {MAX_LINES}; one document "
                    "(up to 50 items) per file")
    reader = _Reader()
    if not _read_rows(reader, text):
        raise DocumentFileError(_capped([problem for _, problem in reader.problems]))
    # What could be read is validated too, so one round of corrections fixes everything.
    document = _assemble(reader, today)
    return _check_document(document, today, reader.lines, reader.problems)


def _read_rows(reader: _Reader, text: str) -> bool:
    """Feed the rows to `reader`; False when the file cannot be read as a whole (no format
    line, broken quoting, too many problems), so validating what was read makes no sense."""
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    seen_format = False
    start = 1
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            break
        except csv.Error as error:
            reader.error(rows.line_num, f"CSV 格式错误 ({error}); 引号是否成对?",
                         f"malformed CSV ({error}); are the quotes balanced?")
            return False
        line, start = start, rows.line_num + 1
        cells = [c.strip() for c in cells]
        while cells and not cells[-1]:
            cells.pop()  # Excel pads rows with empty cells up to the widest row
        if not cells or cells[0].startswith("#"):
            continue
        if not seen_format:
            seen_format = True
            if cells != [CSV_FORMAT]:
                shown = ",".join(cells)[:40]
                reader.error(line, f"第一行应为 {CSV_FORMAT}, 现为 '{shown}'",
                             f"the first line must be {CSV_FORMAT}, not '{shown}'")
                return False
            continue
        reader.row(line, cells)
        if len(reader.problems) > MAX_PROBLEMS:
            return False
    if not seen_format:
        reader.error(1, f"文件为空; 第一行应为 {CSV_FORMAT}",
                     f"the file is empty; the first line must be {CSV_FORMAT}")
        return False
    return True


def _capped(problems: Sequence[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return list(problems)
    return [*problems[:MAX_PROBLEMS],
            Problem("", "format", "错误太多, 其余从略", "too many problems; the rest are left out")]


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
