"""The E-port client's JSON envelope: greeting, request, reply. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from eport.clients.gateway.errors import GatewayError, bad_arguments
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

METHOD_PREFIX = "cus-sec_"
# `_id` is echoed as the client sent it; JSON numbers and strings are what clients use. Other
# values (objects, lists, booleans) are answered with `_id` null.
RequestId = int | float | str | None

GREETING = json.dumps({"_id": 0, "_method": "open", "_status": "00"})


@dataclass(frozen=True)
class Request:
    request_id: RequestId
    method: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadRequest(EportFailure):
    """A frame that is not a usable request, with whatever of its envelope could be read."""

    error: GatewayError
    request_id: RequestId = None
    method: str = ""

    # What the funnel shows, should one ever reach it: the gateway error's own.
    @property
    def code(self) -> str:  # type: ignore[override]
        return self.error.code

    @property
    def message(self) -> Bilingual:  # type: ignore[override]
        return self.error.message

    @property
    def remedy(self) -> Bilingual:  # type: ignore[override]
        return self.error.remedy


class _Unusable:
    """Stands in, while parsing, for a value that is not strict JSON (RFC 8259)."""

    def __init__(self, problem: Bilingual) -> None:
        self.problem = problem


# No request of this protocol needs a longer number. Python refuses to convert integers of
# more than 4300 digits (ValueError), and a JavaScript client cannot hold integers above 2**53
# exactly anyway; an `_id` of up to this many digits is echoed digit for digit.
MAX_NUMBER_DIGITS = 64
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _integer(text: str) -> int | _Unusable:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        return _Unusable(Bilingual(f"数字超过 {MAX_NUMBER_DIGITS} 位",
                                   f"a number of more than {MAX_NUMBER_DIGITS} digits"))
    return int(text)


def _real(text: str) -> float | _Unusable:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity, which JSON cannot carry back
        return _Unusable(Bilingual("数字超出范围", "a number out of range"))
    return value


def _constant(name: str) -> _Unusable:
    return _Unusable(Bilingual(f"JSON 中没有 {name}", f"{name} is not JSON"))


def _problem(value: Any) -> _Unusable | None:
    """The first part of a parsed frame that is not strict JSON, or a string that cannot be
    UTF-8 (a lone surrogate written as a \\u escape): neither could be answered or used."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Unusable):
            return item
        if isinstance(item, str):
            if not item.isascii() and _LONE_SURROGATE.search(item):
                return _Unusable(Bilingual("字符串含有单独的代理码 (\\ud800-\\udfff)",
                                           "a string holds a lone surrogate (\\ud800-\\udfff)"))
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _not_json(unusable: _Unusable) -> GatewayError:
    problem = unusable.problem
    return bad_arguments(Bilingual(f"报文不是合法的 JSON: {problem.zh}",
                                   f"the frame is not valid JSON: {problem.en}"))


def parse_request(text: str) -> Request:
    """A request from one frame. Anything JSON does not allow (NaN, Infinity, numbers Python
    or a JavaScript client cannot hold, lone surrogates) is refused here, with the frame's
    `_id` and `_method` when those themselves are usable."""
    try:
        envelope = json.loads(text, parse_int=_integer, parse_float=_real,
                              parse_constant=_constant)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise BadRequest(bad_arguments(Bilingual("报文不是合法的 JSON",
                                                 "the frame is not valid JSON"))
                         ) from None
    if not isinstance(envelope, dict):
        problem = _problem(envelope)
        raise BadRequest(_not_json(problem) if problem else bad_arguments(Bilingual("报文应为 "
                                                                                    "JSON 对象",
                                                                                    "the frame "
                                                                                    "must be a "
                                                                                    "JSON object")))
    raw_id = envelope.get("_id")
    request_id: RequestId = None
    if isinstance(raw_id, int | float | str) and not isinstance(raw_id, bool) \
            and _problem(raw_id) is None:
        request_id = raw_id
    method = envelope.get("_method")
    usable_method = method if isinstance(method, str) and _problem(method) is None else ""
    problem = _problem(envelope)
    if problem is not None:
        raise BadRequest(_not_json(problem), request_id, usable_method)
    if not isinstance(method, str) or not method:
        raise BadRequest(bad_arguments(Bilingual("缺少 _method",
                                                 "_method is missing or not a string")),
                         request_id)
    args = envelope.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(bad_arguments(Bilingual("args 应为 JSON 对象",
                                                 "args must be a JSON object")),
                         request_id, method)
    return Request(request_id, method, args)


def reply(request_id: RequestId, method: str, data: list[Any]) -> str:
    return _envelope(request_id, method, True, data, [])


def error_reply(request_id: RequestId, method: str, error: GatewayError) -> str:
    return _envelope(request_id, method, False, [], error.error_array())


def next_block_reply(guid: str, next_block: int, finish: bool, ok: bool = True,
                     error: GatewayError | None = None) -> str:
    data = [{"guid": guid, "next": next_block, "finish": finish}]
    return _envelope(guid, "_nextBlock", ok, data, error.error_array() if error else [])


def _envelope(request_id: RequestId, method: str, result: bool, data: list[Any],
              errors: list[str]) -> str:
    return json.dumps({"_id": request_id, "_method": method, "_status": "00",
                       "_args": {"Result": result, "Data": data, "Error": errors}},
                      ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# ---- arguments ----

def text_arg(args: dict[str, Any], *names: str, required: bool = True) -> str | None:
    """The first of `names` present in args, which must be a string."""
    for name in names:
        if name in args and args[name] is not None:
            value = args[name]
            if not isinstance(value, str):
                raise bad_arguments(Bilingual(f"参数 {name} 应为字符串",
                                              f"argument {name} must be a string"))
            return value
    if required:
        raise bad_arguments(Bilingual(f"缺少参数 {names[0]}", f"argument {names[0]} is missing"))
    return None


def required_text(args: dict[str, Any], *names: str) -> str:
    value = text_arg(args, *names)
    assert value is not None
    return value
