"""The eport-customs/1 document: a customs declaration (报关单) or filing list (备案清单).

The format is docs/customs-document.md. `validate` names every problem at once and never
raises, whatever it is given; `new_document`, `copy_document` and `copy_item` make documents;
`transport_display` and `container_layout` say how the printed form shows them (QP FAQ
§十三(八)); `clock_warning` is the QP FAQ §十三(十三) check of the local clock.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from eport.common.customs.fields import (
    ATTACHED,
    CONTAINER,
    HEADER,
    ITEM,
    ITEM_KEYS,
    LIST_LABELS,
    Collector,
    Context,
    Field,
    Group,
    Problem,
    Where,
    check_value,
    json_type,
    shown,
)
from eport.common.customs.rules import check as check_rules
from eport.common.customs.rules import group_complete
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

__all__ = [
    "DIRECTIONS", "DOCUMENT_TYPES", "FORMAT", "MAX_ITEMS", "DocumentError", "Problem",
    "clock_warning", "container_layout", "copy_document", "copy_item", "new_attached_document",
    "new_container", "new_document", "new_item", "transport_display", "validate"]

FORMAT = "eport-customs/1"
DOCUMENT_TYPES = ("declaration", "filing-list")
DIRECTIONS = ("import", "export")
MAX_ITEMS = 50
TOP_KEYS = ("format", "client_reference", "document_type", "direction", "header", "items",
            "containers", "attached_documents")
_CLIENT_REFERENCE = re.compile(r"[0-9a-f]{32}")
# The QP FAQ's clock advice (§十三(十三)): a date before the project's time is surely wrong, and
# more than five minutes off the data centre would also upset signed-request time checks.
CLOCK_EARLIEST_YEAR = 2024
CLOCK_TOLERANCE_SECONDS = 300


class DocumentError(EportFailure, ValueError):
    """A document that cannot be used as asked; `.problems` says why, all at once."""

    code = "DOCUMENT_INVALID"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(p.message.en for p in self.problems) or "invalid document")


def _empty(fields: Sequence[Field | Group]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for f in fields:
        result[f.key] = {g.key: "" for g in f.fields} if isinstance(f, Group) else ""
    return result


def new_item(item_number: int) -> dict[str, Any]:
    return {"item_number": item_number, **_empty(ITEM)}


def new_container() -> dict[str, Any]:
    return _empty(CONTAINER)


def new_attached_document() -> dict[str, Any]:
    return _empty(ATTACHED)


def new_document(document_type: str = "declaration", direction: str = "import", *,
                 today: date | None = None) -> dict[str, Any]:
    """An empty document with every key present ("" when unfilled) and one empty item.

    The import date defaults to today, as in the QP client (QP FAQ §十三(十三)); the export
    date is filled by customs at release, so it stays empty."""
    if document_type not in DOCUMENT_TYPES:
        raise ValueError(f"document_type must be one of {DOCUMENT_TYPES}, not {document_type!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    header = _empty(HEADER)
    if direction == "import":
        header["ie_date"] = (today or date.today()).strftime("%Y%m%d")
    return {"format": FORMAT, "client_reference": uuid.uuid4().hex,
            "document_type": document_type, "direction": direction, "header": header,
            "items": [new_item(1)], "containers": [], "attached_documents": []}


def normalise(document: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with every missing key of the header, its objects and list entries added as
    "" (an importer may leave out what is empty). Keys that are there are kept as they are,
    unknown ones too, so that validate still reports them."""
    result = copy.deepcopy(dict(document))
    header = result.get("header")
    if isinstance(header, dict):
        for f in HEADER:
            if isinstance(f, Group):
                group = header.setdefault(f.key, {})
                if isinstance(group, dict):
                    for g in f.fields:
                        group.setdefault(g.key, "")
            else:
                header.setdefault(f.key, "")
    for key, fields in (("items", ITEM), ("containers", CONTAINER),
                        ("attached_documents", ATTACHED)):
        entries = result.setdefault(key, [])
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict):
                    for f in fields:
                        entry.setdefault(f.key, "")
    return result


def validate(document: Mapping[str, Any], *, declaring: bool,
             today: date | None = None) -> list[Problem]:
    """Every problem of `document`: those of single values in document order, then those of
    the rules between values.

    declaring=False (暂存, save) checks the structure and the format, length and code of every
    filled-in value, and the rules between values that are both filled in. declaring=True
    (申报) also requires every required field and applies the rules that need a complete
    document. A missing key counts as an unfilled one; an unknown key is a "format" problem."""
    out = Collector()
    if not isinstance(document, Mapping):
        out.add("", "format", f"报关单应为 JSON 对象, 现为 {json_type(document, zh=True)}",
                f"a document must be a JSON object, not {json_type(document)}")
        return out.problems
    _unknown_keys(out, document, TOP_KEYS, Where(""), "报关单")
    document_type = _top_choice(out, document, "document_type", "单据类型", DOCUMENT_TYPES)
    direction = _top_choice(out, document, "direction", "进出口标志", DIRECTIONS)
    if document.get("format") != FORMAT:
        out.add("format", "format", f"格式标识(format) 应为 \"{FORMAT}\"",
                f"format: must be \"{FORMAT}\", not {document.get('format')!r}")
    reference = document.get("client_reference")
    if not (isinstance(reference, str) and _CLIENT_REFERENCE.fullmatch(reference)):
        out.add("client_reference", "format" if reference else "required",
                "客户端编号(client_reference) 应为 32 位小写十六进制 (新建或导入时自动生成)",
                "client_reference: must be 32 lowercase hex digits (set by new or import)")
    raw_header = document.get("header", {})
    header: Mapping[str, Any] = raw_header if isinstance(raw_header, Mapping) else {}
    if not isinstance(raw_header, Mapping):
        out.add("header", "format",
                f"表头(header) 应为对象, 现为 {json_type(raw_header, zh=True)}",
                f"header: must be an object, not {json_type(raw_header)}")
    ctx = Context(document_type, direction, header)
    _walk(out, header, HEADER, Where("header"), ctx, declaring, "表头")
    lists = {key: _walk_list(out, document, key, fields, ctx, declaring)
             for key, fields in (("items", ITEM), ("containers", CONTAINER),
                                 ("attached_documents", ATTACHED))}
    check_rules(out, ctx, lists["items"], lists["containers"], declaring=declaring,
                today=today or date.today(), attached=lists["attached_documents"])
    return out.problems


def _top_choice(out: Collector, document: Mapping[str, Any], key: str, zh: str,
                choices: tuple[str, ...]) -> str:
    value = document.get(key)
    if isinstance(value, str) and value in choices:
        return value
    out.add(key, "code" if value else "required", f"{zh}({key}) 应为 {' 或 '.join(choices)}",
            f"{key}: must be one of {', '.join(choices)}, not {value!r}")
    return ""


def _unknown_keys(out: Collector, raw: Mapping[Any, Any], known: Sequence[str], where: Where,
                  zh: str) -> None:
    for key in raw:
        if key not in known:
            name = shown(str(key))
            out.add(where.child(name), "format",
                    f"{where.zh_prefix}{zh} 中没有 '{name}' 这一项 (拼写错误?)",
                    f"{where.display(name)}: unknown key (a typo?)")


def _walk(out: Collector, raw: Mapping[str, Any], fields: Sequence[Field | Group], where: Where,
          ctx: Context, declaring: bool, zh: str) -> None:
    _unknown_keys(out, raw, [f.key for f in fields], where, zh)
    for f in fields:
        value = raw.get(f.key, "")
        if isinstance(f, Group):
            _walk_group(out, f, value, where, ctx, declaring)
            continue
        text = check_value(out, where, f, value)
        if declaring and text == "" and isinstance(value, str) and f.required(ctx):
            out.missing(where, f)


def _walk_group(out: Collector, group: Group, value: Any, where: Where, ctx: Context,
                declaring: bool) -> None:
    inner = Where(where.child(group.key), where.zh_prefix, f"{group.key}.", f"{group.zh} ")
    if value == "":
        value = {}  # an empty group may be written as "" too
    if not isinstance(value, Mapping):
        out.add(where.child(group.key), "format",
                f"{where.zh_prefix}{group.zh}({group.key}) 应为对象, "
                f"现为 {json_type(value, zh=True)}",
                f"{where.display(group.key)}: must be an object, not {json_type(value)}")
        return
    _walk(out, value, group.fields, inner, ctx, declaring=False, zh=group.zh)
    if declaring:
        group_complete(out, group, value, inner, required=group.required(ctx))


def _walk_list(out: Collector, document: Mapping[str, Any], key: str, fields: Sequence[Field],
               ctx: Context, declaring: bool) -> list[Mapping[str, Any]]:
    """Check each entry of a list; return the entries that are objects (for the rules)."""
    raw = document.get(key, [])
    noun, counter = LIST_LABELS[key]
    if not isinstance(raw, list):
        out.add(key, "format", f"{noun}({key}) 应为列表, 现为 {json_type(raw, zh=True)}",
                f"{key}: must be a list, not {json_type(raw)}")
        return []
    entries: list[Mapping[str, Any]] = []
    known = ITEM_KEYS if key == "items" else tuple(f.key for f in fields)
    for index, entry in enumerate(raw):
        where = Where(f"{key}[{index}]", f"{noun}第{index + 1}{counter}: ")
        if not isinstance(entry, Mapping):
            out.add(where.path, "format",
                    f"{where.zh_prefix}应为对象, 现为 {json_type(entry, zh=True)}",
                    f"{where.path}: must be an object, not {json_type(entry)}")
            continue
        _unknown_keys(out, entry, known, where, noun)
        if key == "items":
            _item_number(out, entry, index, where)
        for f in fields:
            value = entry.get(f.key, "")
            text = check_value(out, where, f, value)
            if declaring and text == "" and isinstance(value, str) and f.required(ctx):
                out.missing(where, f)
        entries.append(entry)
    return entries


def _item_number(out: Collector, entry: Mapping[str, Any], index: int, where: Where) -> None:
    number = entry.get("item_number")
    # bool is an int in Python but not a number in JSON.
    if type(number) is not int or number != index + 1:
        out.add(where.child("item_number"), "rule",
                f"{where.zh_prefix}项号(item_number) 应为 {index + 1} (项号从 1 起连续编号), "
                f"现为 {number!r}",
                f"{where.path}.item_number: must be {index + 1} (items are numbered 1, 2, 3 "
                f"in order), not {number!r}")


def copy_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy to be saved as a new document: it gets its own client_reference."""
    result = copy.deepcopy(dict(document))
    result["client_reference"] = uuid.uuid4().hex
    return result


def copy_item(document: Mapping[str, Any], item_number: int) -> dict[str, Any]:
    """The document (same client_reference: it is the same document, edited) with item
    `item_number` duplicated at the end and all items renumbered 1, 2, 3 … (QP FAQ §十三(六))."""
    items = document.get("items")
    if not isinstance(items, list):
        raise DocumentError([Problem("items", "format", Bilingual("商品(items) 应为列表",
                                                                "items: must be a list"))])
    found = [i for i, item in enumerate(items)
             if type(item_number) is int and isinstance(item, Mapping)
             and type(item.get("item_number")) is int and item["item_number"] == item_number]
    if not found:
        raise DocumentError([Problem("items", "rule", Bilingual(
            f"没有第 {item_number} 项商品, 无法复制",
            f"items: there is no item {item_number} to copy"))])
    if len(items) >= MAX_ITEMS:
        raise DocumentError([Problem("items", "rule", Bilingual(
            f"商品已有 {len(items)} 项, 最多 {MAX_ITEMS} 项, 无法再复制",
            f"items: already {len(items)} items, at most {MAX_ITEMS}"))])
    result = copy.deepcopy(dict(document))
    new_items: list[Any] = result["items"]
    new_items.append(copy.deepcopy(new_items[found[0]]))
    for number, item in enumerate(new_items, start=1):
        if isinstance(item, dict):
            item["item_number"] = number
    return result


def transport_display(header: Mapping[str, Any]) -> str:
    """运输工具名称 as printed: the name, then "/VOYAGE" when a voyage number is filled in.

    QP keeps the two apart for waterway transport but prints them as one "NAME/VOYAGE"
    (QP FAQ §十三(八)1); other modes print the same way if a voyage number was entered."""
    name = header.get("transport_name", "")
    voyage = header.get("voyage_number", "")
    name = name if isinstance(name, str) else ""
    voyage = voyage if isinstance(voyage, str) else ""
    return f"{name}/{voyage}" if voyage else name


def container_layout(containers: Sequence[Mapping[str, Any]]
                     ) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]],
                                list[Mapping[str, Any]]]:
    """Where the printed form shows the containers (QP FAQ §十三(八)2(4)):
    (the first, in the 集装箱号 box; the 2nd to 8th, at most 7, in the remarks; the
    attachment page list). The form always shows the first eight the same way; when there are
    more than 8 the 集装箱附加页 is printed too, listing ALL containers (so it is complete on
    its own), otherwise the third element is empty. No containers: (None, [], [])."""
    entries = list(containers)
    if not entries:
        return None, [], []
    attachment = entries if len(entries) > 8 else []
    return entries[0], entries[1:8], attachment


def clock_warning(now: datetime, reference: datetime | None) -> tuple[str, str] | None:
    """(zh, en) when the local clock looks wrong, else None (QP FAQ §十三(十三)): a year
    before 2024, or more than 300 seconds from `reference`, the data centre's clock.
    Naive datetimes are taken as UTC."""
    local = now if now.tzinfo else now.replace(tzinfo=UTC)
    if local.year < CLOCK_EARLIEST_YEAR:
        shown = local.strftime("%Y-%m-%d")
        return (f"本机日期为 {shown}, 看来不对; 进口日期按本机日期填写, 请先校正系统日期和时间",
                f"this computer's date is {shown}, which looks wrong; the import date is taken "
                "from it, so set the system date and time first")
    if reference is None:
        return None
    remote = reference if reference.tzinfo else reference.replace(tzinfo=UTC)
    offset = (local - remote).total_seconds()
    if abs(offset) <= CLOCK_TOLERANCE_SECONDS:
        return None
    minutes = round(abs(offset) / 60)
    zh_dir, en_dir = ("快", "ahead of") if offset > 0 else ("慢", "behind")
    return (f"本机时钟比数据中心{zh_dir}约 {minutes} 分钟, 请校正系统日期和时间 (开启自动对时)",
            f"this computer's clock is about {minutes} minutes {en_dir} the data centre's; "
            "set the system date and time (turn on automatic time)")
