"""The E-port client's JSON envelope: greeting, request, reply. Pure functions, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eport.clients.gateway.errors import GatewayError, bad_arguments

METHOD_PREFIX = "cus-sec_"
# `_id` is echoed as the client sent it; JSON numbers and strings are what clients use.
RequestId = int | float | str | None

GREETING = json.dumps({"_id": 0, "_method": "open", "_status": "00"})


@dataclass(frozen=True)
class Request:
    request_id: RequestId
    method: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadRequest(Exception):
    """A frame that is not a usable request, with whatever of its envelope could be read."""

    error: GatewayError
    request_id: RequestId = None
    method: str = ""


def parse_request(text: str) -> Request:
    try:
        envelope = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BadRequest(bad_arguments("报文不是合法的 JSON", "the frame is not valid JSON")
                         ) from None
    if not isinstance(envelope, dict):
        raise BadRequest(bad_arguments("报文应为 JSON 对象", "the frame must be a JSON object"))
    request_id = envelope.get("_id")
    if not isinstance(request_id, int | float | str) or isinstance(request_id, bool):
        request_id = None
    method = envelope.get("_method")
    if not isinstance(method, str) or not method:
        raise BadRequest(bad_arguments("缺少 _method", "_method is missing or not a string"),
                         request_id)
    args = envelope.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(bad_arguments("args 应为 JSON 对象", "args must be a JSON object"),
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
                      ensure_ascii=False, separators=(",", ":"))


# ---- arguments ----

def text_arg(args: dict[str, Any], *names: str, required: bool = True) -> str | None:
    """The first of `names` present in args, which must be a string."""
    for name in names:
        if name in args and args[name] is not None:
            value = args[name]
            if not isinstance(value, str):
                raise bad_arguments(f"参数 {name} 应为字符串", f"argument {name} must be a string")
            return value
    if required:
        raise bad_arguments(f"缺少参数 {names[0]}", f"argument {names[0]} is missing")
    return None


def required_text(args: dict[str, Any], *names: str) -> str:
    value = text_arg(args, *names)
    assert value is not None
    return value
