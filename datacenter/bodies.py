"""Reading request bodies (the "body" of the envelope, per datacenter.proto's comments).

Every body is checked for unknown keys and value types before anything else happens, so a
malformed request is a BAD_REQUEST that changes nothing. Messages name keys, never values.
"""

from __future__ import annotations

import logging
from collections.abc import Set
from typing import Any

from eport.common.customs import numbers
from eport.datacenter.clock import parse_date
from eport.datacenter.errors import bad_request

logger = logging.getLogger(__name__)


def check_keys(body: dict[str, Any], required: Set[str], optional: Set[str] = frozenset()
               ) -> None:
    missing = required - body.keys()
    unknown = body.keys() - required - optional
    if missing:
        raise bad_request(f"body lacks {', '.join(sorted(missing))}")
    if unknown:
        raise bad_request(f"body has unknown keys {', '.join(sorted(unknown))}")


def number_of(body: dict[str, Any], key: str = "number") -> tuple[str, str]:
    """(column, number) for a Z, unified or entry number."""
    value = body.get(key)
    kind = numbers.number_kind(value) if isinstance(value, str) else None
    if kind is None:
        raise bad_request(f"{key} must be a Z temporary number, a unified number or an "
                          "entry number")
    return f"{kind}_number", str(value)


def typed_number(body: dict[str, Any], key: str, kind: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or numbers.number_kind(value) != kind:
        raise bad_request(f"{key} is not a {kind} number")
    return value


def date_of(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_date(value).isoformat()
    except ValueError:
        raise bad_request(f"{key} must be a date YYYY-MM-DD") from None


def integer_of(body: dict[str, Any], key: str, *, default: int, minimum: int,
               maximum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise bad_request(f"{key} must be an integer from {minimum} to {maximum}")
    return value
