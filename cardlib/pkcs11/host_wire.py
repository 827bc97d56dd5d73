"""What eportd and its PKCS#11 module host (host.py) say to each other over their socket pair.

Messages are pickled tuples (multiprocessing.connection frames them): both ends are this
package, started by eportd itself, so nothing foreign is ever unpickled.

    eportd -> host   ("start", HostSettings)          first, once
                     ("call", id, operation, args)    connect / token / close / card_gone
                     ("stop",)
    host -> eportd   ("reply", id, True, value) or ("reply", id, False, EncodedError)
                     ("event", listener_method, args, kwargs)   presence, as PresenceListener
                     ("log", level, text)                       the host's log, for eportd's

Exceptions travel as their class's import path, args and attributes, and are rebuilt without
calling their __init__ (cardlib's errors take other arguments than their args hold).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

CONNECT, TOKEN, CLOSE, CARD_GONE = "connect", "token", "close", "card_gone"
# The Token methods the host runs for eportd (cardlib.token.Token), and no other attribute.
TOKEN_METHODS = frozenset({
    "read_certificate", "read_profile", "read_card_id", "credential_status", "verify_pin",
    "change_pin", "unblock_pin", "logout", "sign_digest", "private_step", "decrypt"})
LISTENER_METHODS = frozenset({"service_up", "service_down", "reader_added", "reader_removed",
                              "presence_changed", "scan_complete"})


@dataclass(frozen=True)
class HostSettings:
    module_path: str
    sm2_mechanism: int | None
    sm2_decrypt_mechanism: int | None
    poll_interval: float


@dataclass(frozen=True)
class EncodedError:
    module: str
    qualname: str
    args: tuple[Any, ...]
    state: dict[str, Any]


def encode_error(error: BaseException) -> EncodedError:
    kind = type(error)
    state = {key: value for key, value in vars(error).items() if not key.startswith("__")}
    return EncodedError(kind.__module__, kind.__qualname__, tuple(error.args), state)


def decode_error(encoded: EncodedError) -> BaseException:
    """The exception again; one of another package or shape becomes a RuntimeError that names
    it (a host must not make eportd import arbitrary modules)."""
    if encoded.module.startswith("eport.") or encoded.module == "builtins":
        try:
            kind = getattr(importlib.import_module(encoded.module), encoded.qualname)
        except (ImportError, AttributeError):
            kind = None
        if isinstance(kind, type) and issubclass(kind, BaseException):
            error = kind.__new__(kind)
            error.args = encoded.args
            error.__dict__.update(encoded.state)
            return error
    return RuntimeError(f"{encoded.module}.{encoded.qualname}: {encoded.args}")
