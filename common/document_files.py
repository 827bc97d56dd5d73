"""What the customs and the bonded importers (eport.common.customs.importing,
eport.common.bonded.importing) read in the same way: the file itself, JSON with duplicate keys
refused, CSV text in the encodings Excel writes, the CSV rows, and problems placed on their
CSV line. Each importer keeps its own format (row kinds, columns, limits, document wording)
and its own error class: the helpers here raise what the importer's `fail(path, zh, en)`
makes, so the importer's errors and messages stay exactly its own.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

from eport.common.customs.fields import Problem, shown
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

# Makes the importer's error for one whole-file problem: fail(path, message_zh, message_en).
Fail = Callable[[str, str, str], Exception]
# progress(done_lines, total_lines) while a long CSV file is read.
Progress = Callable[[int, int], None]


def read_document_file(path: Path, *, max_bytes: int, document_zh: str, fail: Fail) -> bytes:
    """The bytes of `path`, refused when larger than `max_bytes` (`document_zh` names the
    document in the Chinese message: "一个文件只放一份<document_zh>")."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise fail("", f"文件太大 ({size} 字节, 最多 {max_bytes}), 一个文件只放一份"
                       f"{document_zh}", f"the file is too big ({size} bytes, at most "
                       f"{max_bytes}); one document per file")
        return path.read_bytes()
    except OSError as error:
        raise fail("", f"无法读取文件 {path}: {error.strerror or error}",
                   f"cannot read {path}: {error.strerror or error}") from None


def is_json(path: Path, data: bytes) -> bool:
    """Whether a file is read as JSON: it ends in .json or starts with "{"."""
    return path.suffix.lower() == ".json" or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


# -- problems and their lines ---------------------------------------------------------------


def line_of(path: str, lines: Mapping[str, int]) -> int:
    """The CSV line a document path comes from, 0 when none (JSON, or a whole-file problem)."""
    while path and path not in lines:  # "items[2].hs_code" -> "items[2]" -> "items"
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get(path, 0)


def at_line(problem: Problem, line: int) -> Problem:
    """The problem with the CSV line it comes from in front of its messages."""
    if not line:
        return problem
    return Problem(problem.path, problem.code,
                   Bilingual(f"第 {line} 行: {problem.message.zh}",
                             f"line {line}: {problem.message.en}"), problem.section)


def in_line_order(checked: Iterable[Problem], lines: Mapping[str, int] | None,
                  earlier: Sequence[tuple[int, Problem]]) -> list[Problem]:
    """Every problem, those found while reading the file (`earlier`, with their line) and the
    document check's (`checked`, placed on the line their path comes from), in line order."""
    found = list(earlier)
    for problem in checked:
        line = line_of(problem.path, lines or {})
        found.append((line, at_line(problem, line)))
    found.sort(key=lambda pair: pair[0])  # stable: the check's order within a line
    return [problem for _, problem in found]


def capped(problems: Sequence[Problem], most: int, zh: str, en: str) -> list[Problem]:
    """At most `most` problems, then one (messages `zh`, `en`) saying the rest are left out,
    so that a wrong file cannot flood the screen."""
    if len(problems) <= most:
        return list(problems)
    return [*problems[:most], Problem("", "format", Bilingual(zh, en))]


# -- JSON -----------------------------------------------------------------------------------


class _Duplicate(EportFailure, ValueError):
    code = "DUPLICATE_KEY"

    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def load_json(data: bytes, fail: Fail, *, quote_key: Callable[[str], str]) -> Any:
    """The JSON value in `data` (UTF-8, a BOM allowed). A key given twice is refused (the
    message quotes it as `quote_key` says) instead of the last one silently winning; numbers
    are kept as they are (floats as Decimal) so that the document check can name them."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise fail(f"line {line}", f"第 {line} 行: JSON 文件须为 UTF-8 编码",
                   f"line {line}: a JSON file must be UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=Decimal)
    except _Duplicate as error:
        key = quote_key(str(error))
        raise fail("", f"JSON 中 '{key}' 出现了两次", f"the key '{key}' appears twice") from None
    except json.JSONDecodeError as error:
        raise fail(f"line {error.lineno}", f"第 {error.lineno} 行: 不是有效的 JSON ({error.msg})",
                   f"line {error.lineno}: not valid JSON ({error.msg})") from None
    except RecursionError:
        raise fail("", "JSON 嵌套过深", "the JSON is nested too deeply") from None


def nesting_depth(value: Any) -> int:
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


# -- CSV ------------------------------------------------------------------------------------


def decode_csv(data: bytes, fail: Fail) -> str:
    """UTF-8 with or without the BOM Excel writes, else GB18030 (Excel's "CSV" on a Chinese
    Windows); UTF-16 (Excel's "Unicode text") is refused with a hint."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fail("line 1", "第 1 行: 文件是 UTF-16 编码 (Excel 的\"Unicode 文本\"), 请另存为 "
                   "\"CSV UTF-8 (逗号分隔)\"", "line 1: the file is UTF-16 (Excel's \"Unicode "
                   "text\"); save it as \"CSV UTF-8 (comma delimited)\"")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as utf8_error:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            line = data[:utf8_error.start].count(b"\n") + 1
            raise fail(f"line {line}",
                       f"第 {line} 行: 文件既不是 UTF-8 也不是 GB18030 编码, 请另存为 "
                       "\"CSV UTF-8 (逗号分隔)\"", f"line {line}: the file is neither UTF-8 nor "
                       "GB18030; save it as \"CSV UTF-8 (comma delimited)\"") from None


def physical_lines(text: str) -> int:
    """How many lines `text` has (a last line without its newline counts)."""
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


class CsvRows:
    """The rows of CSV text that hold something, as (line, cells): cells stripped, the empty
    cells Excel pads rows with dropped, blank and "#" comment rows skipped. `line` is where the
    row starts (a quoted value may span lines). A csv.Error (broken quoting) leaves iteration;
    `start` is then the line of the broken row and `line_num` the line the parser reached."""

    def __init__(self, text: str, *, progress: Progress | None = None, total: int = 0,
                 every: int = 500) -> None:
        self._rows = csv.reader(io.StringIO(text, newline=""), strict=True)
        self._progress, self._total, self._every = progress, total, every
        self.start = 1

    @property
    def line_num(self) -> int:
        return self._rows.line_num

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        reported = 0
        for cells in self._rows:
            line, self.start = self.start, self._rows.line_num + 1
            # Counted on every row, blank ones too, so that progress moves evenly.
            if self._progress is not None and self._rows.line_num - reported >= self._every:
                reported = self._rows.line_num
                self._progress(min(reported, self._total), self._total)
            cells = [c.strip() for c in cells]
            while cells and not cells[-1]:
                cells.pop()  # Excel pads rows with empty cells up to the widest row
            if cells and not cells[0].startswith("#"):
                yield line, cells
        if self._progress is not None:
            self._progress(self._total, self._total)


@dataclass
class RowReader:
    """Builds a document from its CSV rows, collecting every problem with its line. The
    importer's subclass names its keys and reads its own tables; meta and header rows
    ("meta,key,value", "header,key,value") are read alike in both formats."""

    meta_keys: ClassVar[Sequence[str]] = ()
    header_keys: ClassVar[Sequence[str]] = ()

    problems: list[tuple[int, Problem]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, line: int, zh: str, en: str, path: str = "") -> None:
        self.problems.append((line, Problem(path or f"line {line}", "format",
                                            Bilingual(f"第 {line} 行: {zh}",
                                                      f"line {line}: {en}"))))

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
        known = self.meta_keys if kind == "meta" else self.header_keys
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

    def row(self, line: int, cells: list[str]) -> None:
        """Read one row after the format line (the importer's row kinds)."""
        raise NotImplementedError

    def read_rows(self, rows: CsvRows, csv_format: str, *, most_problems: int,
                  quote_first: Callable[[str], str],
                  broken_row_at: Literal["start", "parsed"]) -> bool:
        """Feed the rows to `row`; False when the file cannot be read as a whole (no format
        line `csv_format`, broken quoting, more than `most_problems` problems), so checking
        what was read makes no sense. `quote_first` quotes a wrong first line in its message;
        broken quoting is reported on the line its row starts or the line the parser reached
        (each importer keeps the line its messages have always named)."""
        seen_format = False
        try:
            for line, cells in rows:
                if not seen_format:
                    seen_format = True
                    if cells != [csv_format]:
                        what = quote_first(",".join(cells))
                        self.error(line, f"第一行应为 {csv_format}, 现为 '{what}'",
                                   f"the first line must be {csv_format}, not '{what}'")
                        return False
                    continue
                self.row(line, cells)
                if len(self.problems) > most_problems:
                    return False
        except csv.Error as error:
            self.error(rows.start if broken_row_at == "start" else rows.line_num,
                       f"CSV 格式错误 ({error}); 引号是否成对?",
                       f"malformed CSV ({error}); are the quotes balanced?")
            return False
        if not seen_format:
            self.error(1, f"文件为空; 第一行应为 {csv_format}",
                       f"the file is empty; the first line must be {csv_format}")
            return False
        return True
