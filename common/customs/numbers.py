"""The numbers a customs document carries through the data centre (QP FAQ §十一(六)).

- 暂存编号 (temporary number): "Z" + 4-digit year + 14-digit sequence, 19 characters, given by
  Save. Example: Z202600000000000042.
- 统一编号 (data-centre unified number): "I" (import) or "E" (export) + 4-digit year + 13-digit
  sequence, 18 characters, given when the document enters the data centre (Upload, or the upload
  inside Declare). Example: I20260000000000007.
- 报关单号 (entry number): 4-digit customs district (header.declaration_customs) + 4-digit year
  + "1" for import or "0" for export + 9-digit sequence per district and year, 18 digits, given
  at review (审结). The import transfer rule of QP FAQ §十三(九) writes import entries as
  district + year + "1" + 9 digits. Example: 531620261000000042.
- 预录入编号 (pre-entry number): the entry number's last 9 digits.

Years are China time (UTC+8). The client and the data centre share these validators.
"""

from __future__ import annotations

import re

TEMPORARY_PREFIX = "Z"
_TEMPORARY = re.compile(r"Z[0-9]{18}")
_UNIFIED = re.compile(r"[IE][0-9]{17}")
_ENTRY = re.compile(r"[0-9]{8}[01][0-9]{9}")
_PRE_ENTRY = re.compile(r"[0-9]{9}")
_DISTRICT = re.compile(r"[0-9]{4}")

TEMPORARY_SEQUENCE_DIGITS = 14
UNIFIED_SEQUENCE_DIGITS = 13
ENTRY_SEQUENCE_DIGITS = 9


def is_temporary_number(text: str) -> bool:
    return bool(_TEMPORARY.fullmatch(text))


def is_unified_number(text: str) -> bool:
    return bool(_UNIFIED.fullmatch(text))


def is_entry_number(text: str) -> bool:
    return bool(_ENTRY.fullmatch(text))


def is_pre_entry_number(text: str) -> bool:
    return bool(_PRE_ENTRY.fullmatch(text))


def _sequence(value: int, digits: int) -> str:
    if not 0 < value < 10**digits:
        raise ValueError(f"sequence {value} does not fit in {digits} digits")
    return f"{value:0{digits}d}"


def _year(year: int) -> str:
    if not 1000 <= year <= 9999:
        raise ValueError(f"year {year} is not 4 digits")
    return str(year)


def temporary_number(year: int, sequence: int) -> str:
    return TEMPORARY_PREFIX + _year(year) + _sequence(sequence, TEMPORARY_SEQUENCE_DIGITS)


def direction_letter(direction: str) -> str:
    """"I" for import, "E" for export: the unified number's first character."""
    letters = {"import": "I", "export": "E"}
    if direction not in letters:
        raise ValueError(f"direction {direction!r} is neither import nor export")
    return letters[direction]


def unified_number(direction: str, year: int, sequence: int) -> str:
    return direction_letter(direction) + _year(year) + _sequence(sequence,
                                                                 UNIFIED_SEQUENCE_DIGITS)


def entry_number(district: str, year: int, direction: str, sequence: int) -> str:
    if not _DISTRICT.fullmatch(district):
        raise ValueError(f"customs district {district!r} is not 4 digits")
    digit = {"import": "1", "export": "0"}.get(direction)
    if digit is None:
        raise ValueError(f"direction {direction!r} is neither import nor export")
    return district + _year(year) + digit + _sequence(sequence, ENTRY_SEQUENCE_DIGITS)


def pre_entry_number(entry: str) -> str:
    """预录入编号: the entry number's 9-digit sequence."""
    if not is_entry_number(entry):
        raise ValueError(f"{entry!r} is not an entry number")
    return entry[-ENTRY_SEQUENCE_DIGITS:]


def number_kind(text: str) -> str | None:
    """"temporary", "unified" or "entry" for a number of that format, else None."""
    if is_temporary_number(text):
        return "temporary"
    if is_unified_number(text):
        return "unified"
    if is_entry_number(text):
        return "entry"
    return None
