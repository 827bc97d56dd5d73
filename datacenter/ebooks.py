"""E-book records (电子账册备案资料): the record items bonded verification items are checked
against.

In the real E-port they live in the e-book subsystem (加工贸易账册); the reference data centre
imports them from JSON (`eport-datacenter ebook import`). With a management mode that uses an
e-book, an item's code, name and unit come from its record item and may not differ (bonded manual
§2.2.1.3). An e-book belongs to one enterprise: a lookup made for an enterprise finds only its
own e-books, so the e-book numbers of others are "not found" and cannot be probed.

Import file: {"ebook_number", "enterprise_code", "items": [{"record_item_number", "hs_code",
"name", "specification"?, "unit"}]}, or a list of those. Importing an e-book again replaces
its items (an amended e-book); it cannot move to another enterprise.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eport.common.bonded.document import EBookItem, EBookLookup
from eport.common.failure import EportFailure
from eport.datacenter.clock import now, to_micros
from eport.datacenter.storage import Connection

logger = logging.getLogger(__name__)

_EBOOK_NUMBER = re.compile(r"[0-9A-Z]{1,12}")
_CUSTOMS_CODE = re.compile(r"[0-9A-Z]{10}")
_ITEM_NUMBER = re.compile(r"[0-9A-Za-z]{1,9}")
_HS_CODE = re.compile(r"[0-9]{1,10}")
_UNIT = re.compile(r"[0-9]{3}")
_MAX_ITEMS = 100_000


class EBookFileError(EportFailure, ValueError):
    """An import file that is not e-book records; the message names the entry and the key."""

    code = "EBOOK_FILE"


@dataclass(frozen=True)
class EBook:
    ebook_number: str
    enterprise_code: str
    items: tuple[EBookItem, ...]


@dataclass(frozen=True)
class EBookSummary:
    ebook_number: str
    enterprise_code: str
    item_count: int


def _text(entry: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None,
          max_len: int = 0, *, optional: bool = False) -> str:
    value = entry.get(key, "" if optional else None)
    if not isinstance(value, str) or (not value and not optional):
        raise EBookFileError(f"{where}: {key} must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise EBookFileError(f"{where}: {key} {value[:40]!r} does not have the right form "
                             f"({pattern.pattern})")
    if max_len and len(value) > max_len:
        raise EBookFileError(f"{where}: {key} is longer than {max_len} characters")
    return value


def _item(raw: Any, ebook_number: str, where: str) -> EBookItem:
    if not isinstance(raw, dict):
        raise EBookFileError(f"{where}: an item must be an object")
    unknown = raw.keys() - {"record_item_number", "hs_code", "name", "specification", "unit"}
    if unknown:
        raise EBookFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    # The limits are the bonded item fields' (bonded manual §2.2.1.3).
    return EBookItem(ebook_number=ebook_number,
                     record_item_number=_text(raw, "record_item_number", where, _ITEM_NUMBER),
                     hs_code=_text(raw, "hs_code", where, _HS_CODE),
                     name=_text(raw, "name", where, None, 50),
                     specification=_text(raw, "specification", where, None, 50, optional=True),
                     unit=_text(raw, "unit", where, _UNIT))


def parse_ebooks(data: Any) -> list[EBook]:
    """The e-books of a parsed import file; EBookFileError naming the first thing wrong."""
    entries = data if isinstance(data, list) else [data]
    books: list[EBook] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"e-book {index + 1}"
        if not isinstance(entry, dict):
            raise EBookFileError(f"{where}: must be an object")
        unknown = entry.keys() - {"ebook_number", "enterprise_code", "items"}
        if unknown:
            raise EBookFileError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        number = _text(entry, "ebook_number", where, _EBOOK_NUMBER)
        where = f"e-book {number}"
        if number in seen:
            raise EBookFileError(f"{where}: listed twice")
        seen.add(number)
        enterprise = _text(entry, "enterprise_code", where, _CUSTOMS_CODE)
        raw_items = entry.get("items")
        if not isinstance(raw_items, list) or len(raw_items) > _MAX_ITEMS:
            raise EBookFileError(f"{where}: items must be a list of at most {_MAX_ITEMS}")
        items = tuple(_item(raw, number, f"{where} item {position + 1}")
                      for position, raw in enumerate(raw_items))
        numbers = [item.record_item_number for item in items]
        if len(set(numbers)) != len(numbers):
            raise EBookFileError(f"{where}: a record_item_number is listed twice")
        books.append(EBook(number, enterprise, items))
    return books


def read_ebook_file(path: Path) -> list[EBook]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise EBookFileError(f"{path}: not a readable JSON file: {error}") from None
    return parse_ebooks(data)


def import_ebooks(connection: Connection, books: list[EBook], at: int | None = None
                  ) -> None:
    """Store the e-books in the caller's transaction; the items of each replace its old ones."""
    at = to_micros(now()) if at is None else at
    for book in books:
        owner = connection.execute("SELECT enterprise_code FROM ebooks WHERE ebook_number = ?",
                                   (book.ebook_number,)).fetchone()
        if owner is not None and owner[0] != book.enterprise_code:
            raise EBookFileError(f"e-book {book.ebook_number} belongs to enterprise {owner[0]}, "
                                 f"not {book.enterprise_code}; an e-book cannot change hands")
        connection.execute(
            "INSERT INTO ebooks (ebook_number, enterprise_code, imported_at) VALUES (?, ?, ?) "
            "ON CONFLICT (ebook_number) DO UPDATE SET imported_at = excluded.imported_at",
            (book.ebook_number, book.enterprise_code, at))
        connection.execute("DELETE FROM ebook_items WHERE ebook_number = ?",
                           (book.ebook_number,))
        connection.executemany(
            "INSERT INTO ebook_items (ebook_number, record_item_number, hs_code, name, "
            "specification, unit) VALUES (?, ?, ?, ?, ?, ?)",
            [(book.ebook_number, item.record_item_number, item.hs_code, item.name,
              item.specification, item.unit) for item in book.items])
        logger.info("imported e-book %s of %s (%d items)", book.ebook_number,
                    book.enterprise_code, len(book.items))


def list_ebooks(connection: Connection) -> list[EBookSummary]:
    rows = connection.execute(
        "SELECT e.ebook_number, e.enterprise_code, COUNT(i.record_item_number) FROM ebooks e "
        "LEFT JOIN ebook_items i ON i.ebook_number = e.ebook_number "
        "GROUP BY e.ebook_number ORDER BY e.ebook_number").fetchall()
    return [EBookSummary(str(row[0]), str(row[1]), int(row[2])) for row in rows]


def ebook_owner(connection: Connection, ebook_number: str) -> str | None:
    row = connection.execute("SELECT enterprise_code FROM ebooks WHERE ebook_number = ?",
                             (ebook_number,)).fetchone()
    return None if row is None else str(row[0])


def find_item(connection: Connection, ebook_number: str, record_item_number: str
              ) -> EBookItem | None:
    row = connection.execute(
        "SELECT hs_code, name, specification, unit FROM ebook_items "
        "WHERE ebook_number = ? AND record_item_number = ?",
        (ebook_number, record_item_number)).fetchone()
    if row is None:
        return None
    return EBookItem(ebook_number=ebook_number, record_item_number=record_item_number,
                     hs_code=str(row[0]), name=str(row[1]), specification=str(row[2]),
                     unit=str(row[3]))


def lookup_for(connection: Connection, enterprise_code: str) -> EBookLookup:
    """The document checks' e-book lookup over `enterprise_code`'s own e-books, reading the
    caller's transaction (so the records checked are those of the same instant)."""

    def lookup(ebook_number: str, record_item_number: str) -> EBookItem | None:
        if ebook_owner(connection, ebook_number) != enterprise_code:
            return None
        return find_item(connection, ebook_number, record_item_number)

    return lookup
