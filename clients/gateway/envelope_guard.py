"""Web pages must not sign data-centre requests through the gateway.

A data-centre request is the card's signature over a JSON envelope (docs/datacenter.md,
"Signed requests"): {"aud": "eport-datacenter", "body": {...}, "method": "Declare", "nonce",
"signed_at", "v"}. The generic signing methods sign whatever bytes a page sends, so a page could
have the card sign a declaration, a grant or a deletion in the user's name. Those methods refuse
data that looks like such an envelope unless the gateway was started with its own option.

The check is deliberately wider than what the data centre accepts (it accepts only the exact
canonical encoding): any JSON object, whatever its whitespace, key order, byte-order mark or
extra keys, whose `aud` names the data centre or that carries the envelope's `method`, `body`
and `nonce`, so that a later, more lenient data centre is covered too. A digest (the NoHash
methods) cannot be inspected; docs/gateway.md says so.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from eport.clients.gateway.errors import GatewayError, bad_arguments
from eport.common.customs.envelope import AUDIENCE
from eport.common.text import Bilingual

log = logging.getLogger("eport.gateway")

ALLOW_OPTION = "--allow-envelope-signing"
_TELL_TALE_FIELDS = frozenset({"method", "body", "nonce"})
_BYTE_ORDER_MARK = "\ufeff"
# The data centre takes no request near this size (gRPC's 4 MiB message limit), so larger data
# cannot be a request it accepts; the bound keeps a huge --max-message-bytes from costing time.
_MAX_INSPECTED_BYTES = 64 * 1024 * 1024


def _names_datacenter(audience: object) -> bool:
    return isinstance(audience, str) and audience.strip().lower() == AUDIENCE


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys any occurrence counts (a lenient reader might take either one): an
    # `aud` naming the data centre is kept.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key == "aud" and _names_datacenter(result.get("aud")):
            continue
        result[key] = value
    return result


def _parse_json_object(data: bytes) -> dict[str, Any] | None:
    if len(data) > _MAX_INSPECTED_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.lstrip(_BYTE_ORDER_MARK + " \t\r\n")
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text, object_pairs_hook=_object_pairs)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def is_datacenter_envelope(data: bytes) -> bool:
    """True when `data` is (or imitates) the JSON envelope of a signed data-centre request."""
    value = _parse_json_object(data)
    if value is None:
        return False
    return _names_datacenter(value.get("aud")) or value.keys() >= _TELL_TALE_FIELDS


def envelope_refused() -> GatewayError:
    return bad_arguments(Bilingual("待签名的数据是数据中心的请求信封 (aud "
                                   "\"eport-datacenter\")。网页不得通过网关替用户签署数据中心"
                                   "请求 (申报、授权等); 请用 eport 命令行办理。确需允许, 请用 "
                                   f"{ALLOW_OPTION} 启动 eport-gateway",
                                   "the data to sign is a data-centre request envelope (aud "
                                   "\"eport-datacenter\"). A web page must not sign data-centre "
                                   "requests (declarations, grants ...) in the user's name "
                                   "through the gateway; use the eport command line. To allow "
                                   f"it anyway, start eport-gateway with {ALLOW_OPTION}"))


def refuse_datacenter_envelope(data: bytes, allowed: bool, method: str) -> None:
    """Raise the 51500 refusal when `data` is a data-centre envelope and that is not allowed."""
    if allowed or not is_datacenter_envelope(data):
        return
    log.warning("refused to sign a data-centre request envelope (%s); start with %s to allow",
                method, ALLOW_OPTION)
    raise envelope_refused()
