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
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from eport.common.bonded.document import MAX_ITEMS, import_problems, new_bonded_document, normalise
from eport.common.bonded.fields import HEADER_KEYS, ITEM_KEYS
from eport.common.customs.document import DocumentError
from eport.common.customs.fields import Problem, shown

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
Progress = Callable[[int, int], None]


class BondedFileError(DocumentError):
    """A file that does not hold a usable bonded verification document; `.problems` name every
    problem, CSV ones with their line number in the message."""


def _fail(path: str, zh: str, en: str) -> BondedFileError:
    return BondedFileError([Problem(path, "format", zh, en)])


def load_bonded_file(path: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """The document in `path`: JSON when it ends in .json or starts with "{", else CSV.
    progress(done_lines, total_lines) is called while a CSV file is read (every 500 lines and
    at the end)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _fail("", f"文件太大 ({size} 字节, 最多 {MAX_FILE_BYTES}), 一个文件只放一份"
                        "保税核查表", f"the file is too big ({size} bytes, at most "
                        f"{MAX_FILE_BYTES}); one document per file")
        data = path.read_bytes()
    except OSError as error:
        raise _fail("", f"无法读取文件 {path}: {error.strerror or error}",
                    f"cannot read {path}: {error.strerror or error}") from None
    if path.suffix.lower() == ".json" or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return load_bonded_json(data)
    return load_bonded_csv(data, progress=progress)


def _capped(problems: Sequence[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return list(problems)
    return [*problems[:MAX_PROBLEMS],
            Problem("", "format", f"错误太多 ({len(problems)} 个), 其余从略",
                    f"too many problems ({len(problems)}); the rest are left out")]


def _line_of(path: str, lines: Mapping[str, int]) -> int:
    """The CSV line a document path comes from, 0 when none (JSON, or a whole-file problem)."""
    while path and path not in lines:  # "items[2].hs_code" -> "items[2]" -> "items"
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get(path, 0)


def _at_line(problem: Problem, line: int) -> Problem:
    if not line:
        return problem
    return Problem(problem.path, problem.code, f"第 {line} 行: {problem.message_zh}",
                   f"line {line}: {problem.message_en}", problem.section)


def _checked(document: dict[str, Any], lines: Mapping[str, int] | None = None,
             earlier: Sequence[tuple[int, Problem]] = ()) -> dict[str, Any]:
    """The normalised document when it has no problem; else every problem in line order."""
    result = normalise(document)
    found = list(earlier)
    for problem in import_problems(result):
        line = _line_of(problem.path, lines or {})
        found.append((line, _at_line(problem, line)))
    if found:
        found.sort(key=lambda pair: pair[0])  # stable: the check's order within a line
        raise BondedFileError(_capped([problem for _, problem in found]))
    return result


# -- JSON -----------------------------------------------------------------------------------


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


def load_bonded_json(data: bytes) -> dict[str, Any]:
    """One document object (UTF-8, a BOM allowed). Numbers are read (floats exactly, as
    Decimal) only to be named: quantities must be strings. A missing client_reference is made."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise _fail(f"line {line}", f"第 {line} 行: JSON 文件须为 UTF-8 编码",
                    f"line {line}: a JSON file must be UTF-8") from None
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=Decimal)
    except _Duplicate as error:
        raise _fail("", f"JSON 中 '{shown(str(error))}' 出现了两次",
                    f"the key '{shown(str(error))}' appears twice") from None
    except json.JSONDecodeError as error:
        raise _fail(f"line {error.lineno}", f"第 {error.lineno} 行: 不是有效的 JSON ({error.msg})",
                    f"line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise _fail("", "JSON 嵌套过深", "the JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise _fail("", "JSON 文件应为一份保税核查表对象 {...}",
                    "a JSON file must hold one document object {...}")
    if _depth(raw) > MAX_JSON_DEPTH:
        raise _fail("", f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层, 不是保税核查表",
                    f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; not a document")
    if "client_reference" not in raw:
        raw["client_reference"] = uuid.uuid4().hex
    return _checked(raw)


# -- CSV ------------------------------------------------------------------------------------


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
    items: list[dict[str, Any]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    in_table: bool = False
    broken_table: bool = False

    def error(self, line: int, zh: str, en: str, path: str = "") -> None:
        self.problems.append((line, Problem(path or f"line {line}", "format",
                                            f"第 {line} 行: {zh}", f"line {line}: {en}")))

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

    def key_value(self, line: int, kind: str, cells: list[str]) -> None:
        if len(cells) < 2 or not cells[1]:
            self.error(line, f"{kind} 行的第二列应为字段名",
                       f"a {kind} row needs a key in column 2")
            return
        key, value = cells[1], cells[2] if len(cells) > 2 else ""
        if len(cells) > 3:
            self.error(line, f"{kind} 行只有三列 ({kind},字段名,值), 多出了 '{shown(cells[3])}' "
                       "(值中有逗号时请加引号)", f"a {kind} row has three columns ({kind},key,"
                       f"value); found '{shown(cells[3])}' after the value (quote a value with "
                       "a comma)")
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


def _physical_lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


def load_bonded_csv(data: bytes | str, *, progress: Progress | None = None) -> dict[str, Any]:
    """One document from eport-bonded-csv/1 text (bytes are decoded as `_decode` says)."""
    text = data if isinstance(data, str) else _decode(data)
    total = _physical_lines(text)
    if total > MAX_LINES:
        raise _fail("", f"文件有 {total} 行, 最多 {MAX_LINES} 行 (表体最多 {MAX_ITEMS} 项)",
                    f"the file has {total} lines, at most {MAX_LINES} (up to {MAX_ITEMS} body "
                    "items)")
    reader = _Reader()
    if not _read_rows(reader, text, total, progress):
        raise BondedFileError(_capped([problem for _, problem in reader.problems]))
    document = new_bonded_document()
    if reader.meta.get("client_reference"):
        document["client_reference"] = reader.meta["client_reference"]
    document["header"].update(reader.header)
    document["items"] = reader.items[:MAX_ITEMS]
    # What could be read is checked too, so that one round of corrections fixes everything.
    return _checked(document, reader.lines, reader.problems)


def _read_rows(reader: _Reader, text: str, total: int, progress: Progress | None) -> bool:
    """Feed the rows to `reader`; False when the file cannot be read as a whole (no format
    line, broken quoting, too many problems)."""
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    seen_format = False
    start = 1
    reported = 0
    while True:
        try:
            cells = next(rows)
        except StopIteration:
            break
        except csv.Error as error:
            reader.error(start, f"CSV 格式错误 ({error}); 引号是否成对?",
                         f"malformed CSV ({error}); are the quotes balanced?")
            return False
        line, start = start, rows.line_num + 1
        if progress is not None and rows.line_num - reported >= PROGRESS_EVERY:
            reported = rows.line_num
            progress(min(reported, total), total)
        cells = [c.strip() for c in cells]
        while cells and not cells[-1]:
            cells.pop()  # Excel pads rows with empty cells up to the widest row
        if not cells or cells[0].startswith("#"):
            continue
        if not seen_format:
            seen_format = True
            if cells != [CSV_FORMAT]:
                what = shown(",".join(cells))
                reader.error(line, f"第一行应为 {CSV_FORMAT}, 现为 '{what}'",
                             f"the first line must be {CSV_FORMAT}, not '{what}'")
                return False
            continue
        reader.row(line, cells)
        if len(reader.problems) > MAX_PROBLEMS:
            return False
    if progress is not None:
        progress(total, total)
    if not seen_format:
        reader.error(1, f"文件为空; 第一行应为 {CSV_FORMAT}",
                     f"the file is empty; the first line must be {CSV_FORMAT}")
        return False
    return True


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
