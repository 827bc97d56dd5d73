"""The E-port client's error codes in our taxonomy (docs/backends.md, "Remote E-port client").

Tries are read from the wrong-PIN message, "口令不正确,还可以重试N次": the API has no call that
reads them without spending one.
"""

from __future__ import annotations

import re

from eport.cardlib.errors import (
    CardError,
    InvalidPinError,
    ReferenceBlockedError,
    SecurityStatusError,
    TokenUnavailable,
    Unavailable,
)
from eport.cardlib.remote.channel import RemoteReply

_TRIES = re.compile(r"重试\s*(\d+)\s*次")
# eport-gateway's own refusal to send a PIN on the last try: the PIN was not checked.
_LAST_TRY_REFUSED = "只剩最后1次"

READER_OPEN_FAILED = {"50200", "50040"}
READER_RESET_FAILED = {"50070"}
CARD_INVALID = {"51590"}
PIN_INCORRECT = "0A000024"
PIN_LOCKED = "0A000025"
PIN_FORMAT = "0A000026"
NOT_LOGGED_IN = "0A00002D"


class LastTryRefusedError(CardError):
    """The remote client would not send a PIN with one try left (eport-gateway does this)."""


def tries_in(reply: RemoteReply) -> int:
    match = _TRIES.search(reply.error[0] if reply.error else "")
    return int(match.group(1)) if match else -1


def last_try_refused(reply: RemoteReply) -> bool:
    return reply.code == PIN_INCORRECT and _LAST_TRY_REFUSED in (reply.error[:1] or [""])[0]


def raise_for(reply: RemoteReply, operation: str) -> None:
    """Raise what a failed reply means; nothing when it succeeded. Never puts args in text."""
    if reply.ok:
        return
    code, text = reply.code, reply.message
    detail = f"remote client Err:Custom{code}: {text}" if code else f"remote client: {text}"
    if code in READER_OPEN_FAILED:
        raise TokenUnavailable(Unavailable.NO_READER, f"{operation}: {detail}")
    if code in READER_RESET_FAILED:
        raise TokenUnavailable(Unavailable.CARD_ERROR, f"{operation}: {detail}")
    if code in CARD_INVALID:
        raise TokenUnavailable(Unavailable.NO_CARD, f"{operation}: {detail}")
    if code == PIN_INCORRECT:
        if last_try_refused(reply):
            raise LastTryRefusedError(None, operation, detail)
        raise InvalidPinError(None, operation, tries_in(reply))
    if code == PIN_LOCKED:
        raise ReferenceBlockedError(operation, None)
    if code == NOT_LOGGED_IN:
        raise SecurityStatusError(operation, None)
    raise CardError(None, operation, detail)
