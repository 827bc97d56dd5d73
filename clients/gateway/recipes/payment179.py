"""Signing payment data for customs announcement 179 (海关总署公告2018年第179号).

The request is JSON: {"sessionID", "payExchangeInfoHead": {...}, "payExchangeInfoLists": [...],
"serviceTime"}. What is signed is this text, with the head and the lists as compact JSON
(input key order, no spaces, non-ASCII characters as they are) and no escaping around them:

    "sessionID":"<sessionID>"||"payExchangeInfoHead":"<head>"||"payExchangeInfoLists":"<lists>"||"serviceTime":"<serviceTime>"

The result is the request with "certNo" and "signValue" (base64) added, the text to post as
payExInfoStr.

The JSON is re-serialised here rather than with json.dumps because json.loads turns 100.50 into
100.5: a number's text must reach the signing string and the output exactly as given, or
the customs side, which signs what it received, would compute a different string.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

from eport.clients.gateway.recipes.certificates import certificate_key, sm2_raw_signature
from eport.clients.gateway.recipes.errors import CardProblem, RecipeError
from eport.clients.gateway.recipes.signer import CardSigner
from eport.common.text import Bilingual


@dataclass(frozen=True)
class JsonNumber:
    """A JSON number kept as the text it was written as."""

    text: str


JsonValue: TypeAlias = (
    "bool | str | JsonNumber | list[JsonValue] | dict[str, JsonValue] | None"
)

REQUIRED = ("sessionID", "payExchangeInfoHead", "payExchangeInfoLists", "serviceTime")
# Added by signing: replaced if present, since they are not part of what is signed.
SIGNATURE_FIELDS = ("certNo", "signValue")


def parse_request(text: str | bytes) -> dict[str, JsonValue]:
    """The request as an ordered dict, checked: RecipeError naming the field otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            _bad("输入不是 UTF-8 文本", "the input is not UTF-8 text",
                 "请将文件保存为 UTF-8 编码", "save the file as UTF-8")
    if not text.strip():
        _bad("输入为空", "the input is empty", "请提供 179 支付数据 JSON",
             "give the announcement-179 payment JSON")
    try:
        request = json.loads(text, parse_int=JsonNumber, parse_float=JsonNumber,
                             parse_constant=_no_constant, object_pairs_hook=_object)
    except ValueError as exc:
        _bad(f"输入不是正确的 JSON: {exc}", f"the input is not valid JSON: {exc}",
             "请检查 JSON 格式", "check the JSON syntax")
    if not isinstance(request, dict):
        _bad("JSON 顶层应为对象", "the JSON must be an object at the top",
             "请提供 {\"sessionID\": ..., ...} 形式的请求", "give the request object")
    _check(request)
    return request


def signing_string(request: dict[str, JsonValue]) -> str:
    """The exact text the card signs for a checked request."""
    service_time = request["serviceTime"]
    service_text = service_time.text if isinstance(service_time, JsonNumber) else service_time
    return (f'"sessionID":"{request["sessionID"]}"||'
            f'"payExchangeInfoHead":"{compact_json(request["payExchangeInfoHead"])}"||'
            f'"payExchangeInfoLists":"{compact_json(request["payExchangeInfoLists"])}"||'
            f'"serviceTime":"{service_text}"')


def sign_payment179(request_json: str | bytes, signer: CardSigner) -> str:
    """The request with "certNo" and "signValue" added, as compact JSON (payExInfoStr)."""
    request = parse_request(request_json)
    try:
        to_sign = signing_string(request).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        _bad("JSON 中含有无效的 Unicode 转义 (孤立代理项)",
             "the JSON has an invalid Unicode escape (a lone surrogate)",
             "请修正 \\uD800-\\uDFFF 转义", "fix the \\uD800-\\uDFFF escape")
    key = certificate_key(signer.certificate_der())
    certificate_number = signer.certificate_number()
    value = signer.sign(to_sign)
    if key.key_type == "sm2":
        value = sm2_raw_signature(value)
    if not key.verify(to_sign, value):
        raise CardProblem(
            Bilingual("卡片返回的签名无法用其证书验证",
                      "the card's signature does not verify with its certificate"),
            Bilingual("请确认插入的是本人的电子口岸卡, 然后重试",
                      "check that the right E-port card is inserted, then try again"))
    signed = {k: v for k, v in request.items() if k not in SIGNATURE_FIELDS}
    signed["certNo"] = certificate_number
    signed["signValue"] = base64.b64encode(value).decode()
    return compact_json(signed)


def compact_json(value: JsonValue) -> str:
    """JSON with separators "," and ":", keys in their order, non-ASCII as is."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(k)}:{compact_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact_json(item) for item in value) + "]"
    if isinstance(value, str):
        return _string(value)
    return json.dumps(value)  # true, false, null


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # json.loads would keep the last silently; which one customs keeps is unknown.
            raise ValueError(f"duplicate key {key!r} / 重复的键 {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _check(request: dict[str, JsonValue]) -> None:
    for field in REQUIRED:
        if field not in request:
            _bad(f"缺少字段 {field}", f"the field {field} is missing",
                 f"请在请求中加入 {field}", f"add {field} to the request")
    unknown = [k for k in request if k not in REQUIRED and k not in SIGNATURE_FIELDS]
    if unknown:
        names = ", ".join(unknown)
        _bad(f"未知的顶层字段: {names} (它们不会被签名)",
             f"unknown top-level field(s): {names} (they would be posted unsigned)",
             "请删除这些字段", "remove them")
    session = request["sessionID"]
    if not isinstance(session, str) or not session:
        _field_type("sessionID", "非空字符串", "a non-empty string")
    head = request["payExchangeInfoHead"]
    if not isinstance(head, dict) or not head:
        _field_type("payExchangeInfoHead", "非空对象", "a non-empty object")
    lists = request["payExchangeInfoLists"]
    if not isinstance(lists, list) or not lists:
        _field_type("payExchangeInfoLists", "非空数组", "a non-empty array")
    for index, item in enumerate(lists):
        if not isinstance(item, dict):
            _field_type(f"payExchangeInfoLists[{index}]", "对象", "an object")
    service_time = request["serviceTime"]
    # The announcement's samples give it as a string of milliseconds; an integer is accepted
    # too (it is signed as its digits in quotes either way).
    if isinstance(service_time, JsonNumber):
        if not service_time.text.isdigit():
            _field_type("serviceTime", "毫秒数字符串或整数", "a string or integer of milliseconds")
    elif not isinstance(service_time, str) or not service_time:
        _field_type("serviceTime", "毫秒数字符串或整数", "a string or integer of milliseconds")


def _field_type(field: str, want_zh: str, want_en: str) -> NoReturn:
    _bad(f"字段 {field} 应为{want_zh}", f"the field {field} must be {want_en}",
         f"请修正 {field}", f"correct {field}")


def _bad(zh: str, en: str, remedy_zh: str, remedy_en: str) -> NoReturn:
    raise RecipeError(Bilingual(zh, en), Bilingual(remedy_zh, remedy_en))
