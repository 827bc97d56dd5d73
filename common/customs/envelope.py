"""The payload of a signed data-centre request (docs/datacenter.md, "Signed requests").

    {"aud": "eport-datacenter", "body": {...}, "method": "Declare",
     "nonce": "<32 hex digits>", "signed_at": "2026-12-01T10:00:00Z", "v": 1}

The method binds the signature to one RPC (a signed query cannot be replayed as a
declaration); the nonce and the time make replays detectable.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eport.common.customs.canonical import CanonicalError, canonical_json, parse_canonical
from eport.common.failure import EportFailure

AUDIENCE = "eport-datacenter"
ENVELOPE_VERSION = 1
# Every field is matched as a whole (re.fullmatch: "$" would also match before a final "\n").
_NONCE = re.compile(r"[0-9a-f]{32}")
_SIGNED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class EnvelopeError(EportFailure, ValueError):
    """A payload that is not a well-formed request envelope; the message says what is wrong."""

    code = "ENVELOPE_INVALID"


@dataclass(frozen=True)
class Payload:
    method: str
    body: dict[str, Any]
    nonce: str
    signed_at: datetime
    audience: str = AUDIENCE


def build_payload(method: str, body: dict[str, Any], *, nonce: str | None = None,
                  now: datetime | None = None) -> bytes:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return canonical_json({
        "aud": AUDIENCE, "body": body, "method": method,
        "nonce": nonce or secrets.token_hex(16),
        "signed_at": moment.strftime(_TIME_FORMAT), "v": ENVELOPE_VERSION})


def parse_payload(data: bytes) -> Payload:
    try:
        raw = parse_canonical(data)
    except CanonicalError as error:
        raise EnvelopeError(str(error)) from None
    if not isinstance(raw, dict) or set(raw) != {"aud", "body", "method", "nonce",
                                                 "signed_at", "v"}:
        raise EnvelopeError("the envelope must have exactly aud, body, method, nonce, "
                            "signed_at and v")
    # An integer, exactly: true == 1 in Python, and a bool is not a version.
    if type(raw["v"]) is not int or raw["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(f"v must be the integer {ENVELOPE_VERSION}")
    if not isinstance(raw["method"], str) or not isinstance(raw["body"], dict):
        raise EnvelopeError("method must be a string and body an object")
    if not isinstance(raw["nonce"], str) or not _NONCE.fullmatch(raw["nonce"]):
        raise EnvelopeError("nonce must be 32 lowercase hex digits")
    if not isinstance(raw["aud"], str):
        raise EnvelopeError("aud must be a string")
    # strptime alone would take "2026-1-1T1:0:0Z" and other spellings of the same moment.
    if not isinstance(raw["signed_at"], str) or not _SIGNED_AT.fullmatch(raw["signed_at"]):
        raise EnvelopeError("signed_at must be YYYY-MM-DDTHH:MM:SSZ")
    try:
        signed_at = datetime.strptime(raw["signed_at"], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise EnvelopeError("signed_at must be a real UTC time YYYY-MM-DDTHH:MM:SSZ") from None
    return Payload(raw["method"], raw["body"], raw["nonce"], signed_at, raw["aud"])
