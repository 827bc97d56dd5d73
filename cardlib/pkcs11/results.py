"""PKCS#11 return values → the token interface's errors (cardlib.errors).

Messages name the operation and the CKR_ code only: a PIN never reaches them (PyKCS11's own
exception text is the code's name, so it is safe to quote).
"""

from __future__ import annotations

import PyKCS11
from PyKCS11 import LowLevel

from eport.cardlib.errors import (
    CardError,
    InvalidPinError,
    ReferenceBlockedError,
    SecurityStatusError,
    TokenUnavailable,
    Unavailable,
)

# The token is gone (unplugged, or a software token's store deleted: SoftHSM2 then answers
# CKR_GENERAL_ERROR for that slot) or the session died with it.
TOKEN_GONE = frozenset({
    LowLevel.CKR_DEVICE_REMOVED, LowLevel.CKR_TOKEN_NOT_PRESENT, LowLevel.CKR_SESSION_CLOSED,
    LowLevel.CKR_SESSION_HANDLE_INVALID, LowLevel.CKR_SLOT_ID_INVALID,
    LowLevel.CKR_TOKEN_NOT_RECOGNIZED, LowLevel.CKR_GENERAL_ERROR, LowLevel.CKR_DEVICE_ERROR,
})
# The module itself is not usable: it was finalised, or it broke.
MODULE_DOWN = frozenset({
    LowLevel.CKR_CRYPTOKI_NOT_INITIALIZED, LowLevel.CKR_HOST_MEMORY,
})


def code_name(code: int) -> str:
    name = PyKCS11.CKR.get(code)
    return name if isinstance(name, str) else f"CKR 0x{code:08X}"


def module_down(error: PyKCS11.PyKCS11Error) -> bool:
    return error.value in MODULE_DOWN or error.value < 0


def to_token_error(error: PyKCS11.PyKCS11Error, operation: str, *, tries_left: int = -1
                   ) -> Exception:
    """The error to raise for `error` from `operation` (raise it `from None`: the PyKCS11 error
    carries nothing more, and a PIN was an argument of the call)."""
    code = error.value
    name = code_name(code)
    if code == LowLevel.CKR_PIN_INCORRECT:
        return InvalidPinError(None, operation, tries_left)
    if code == LowLevel.CKR_PIN_LOCKED:
        return ReferenceBlockedError(operation, sw=None)
    if code == LowLevel.CKR_USER_NOT_LOGGED_IN:
        return SecurityStatusError(operation, sw=None)
    if code in (LowLevel.CKR_PIN_LEN_RANGE, LowLevel.CKR_PIN_INVALID):
        return CardError(None, operation, f"{name}: the token refuses a PIN of that length or form")
    if code in MODULE_DOWN or code < 0:
        return TokenUnavailable(Unavailable.SERVICE_NOT_RUNNING,
                                f"{operation}: the PKCS#11 module is not usable ({name})",
                                code=code)
    if code in TOKEN_GONE:
        return TokenUnavailable(Unavailable.CARD_REMOVED,
                                f"{operation}: the token is gone ({name})", code=code)
    if code == LowLevel.CKR_FUNCTION_CANCELED:
        return TokenUnavailable(Unavailable.CANCELLED, f"{operation}: cancelled ({name})",
                                code=code)
    return CardError(None, operation, name)
