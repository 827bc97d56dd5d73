"""eport-canonical-json/1: the one byte string a card signs for a data-centre request.

JSON with object keys sorted, no insignificant whitespace, UTF-8 without escaping non-ASCII,
and only strings, integers, booleans, null, lists and objects: no floats, since two programs
may print the same float differently (amounts and quantities are decimal strings). For these
values the encoding equals RFC 8785 (JCS) as long as keys are ASCII, which is required here.
"""

from __future__ import annotations

import json
from typing import Any

from eport.common.failure import EportFailure

CANONICAL_FORMAT = "eport-canonical-json/1"


class CanonicalError(EportFailure, ValueError):
    """A value that has no canonical encoding, or bytes that are not canonically encoded."""

    code = "NOT_CANONICAL"


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        # Beyond 2^53 a JavaScript or Java reader would round it.
        if abs(value) > 2**53 - 1:
            raise CanonicalError(f"{path}: integer out of range; use a string")
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats have no canonical form; use a decimal string")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise CanonicalError(f"{path}: object keys must be ASCII strings")
            _check(item, f"{path}.{key}" if path else key)
        return
    raise CanonicalError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    try:
        _check(value, "")
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
    except RecursionError:
        raise CanonicalError("the value is nested too deeply") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. from "\ud800") is not Unicode text and has no UTF-8 form.
        raise CanonicalError("a string holds a lone surrogate, which is not text") from None


def parse_canonical(data: bytes) -> Any:
    """The value of `data`, which must be exactly its own canonical encoding (so that what was
    signed and what is processed cannot differ, e.g. through duplicate keys). Anything else is
    a CanonicalError, never another exception: integers too long (Python refuses int() of
    more than 4300 digits with a bare ValueError), NaN and Infinity, lone surrogates, nesting
    deeper than the parser's recursion allows."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates,
                           parse_float=_refuse_float, parse_int=_parse_int,
                           parse_constant=_refuse_constant)
    except CanonicalError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CanonicalError(f"not JSON: {error}") from None
    except RecursionError:
        raise CanonicalError("the value is nested too deeply") from None
    except ValueError as error:  # any other refusal of the parser
        raise CanonicalError(f"not JSON: {error}") from None
    if canonical_json(value) != data:
        raise CanonicalError("not in canonical form (sorted keys, no spaces, UTF-8)")
    return value


# |n| <= 2^53 - 1 has at most 16 digits: longer ones are refused before int() sees them.
_MAX_INTEGER_DIGITS = len(str(2**53 - 1))


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise CanonicalError("integer out of range; use a string")
    return int(text)


def _refuse_constant(text: str) -> Any:
    raise CanonicalError(f"{text} is not a JSON number")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise CanonicalError(f"duplicate key {key!r}")
        result[key] = item
    return result


def _refuse_float(text: str) -> Any:
    raise CanonicalError(f"number {text} is not an integer; use a decimal string")
