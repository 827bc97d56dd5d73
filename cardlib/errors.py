"""What a backend raises: the token could not be reached, or it answered and refused.

PC/SC PIV cards answer with ISO 7816 status words, kept in `sw`; other backends (PKCS#11 return
values, a remote client's error codes) have none: `sw` is None and `detail` names their code.
"""

from __future__ import annotations

from enum import StrEnum

from eport.common.failure import EportFailure
from eport.common.text import Bilingual


class Unavailable(StrEnum):
    SERVICE_NOT_RUNNING = "SERVICE_NOT_RUNNING"  # pcscd, the PKCS#11 module, the remote client
    NO_READER = "NO_READER"
    NO_CARD = "NO_CARD"
    CARD_REMOVED = "CARD_REMOVED"
    CARD_RESET = "CARD_RESET"          # another program reset it: its security status is gone
    CARD_TIMEOUT = "CARD_TIMEOUT"
    SHARING_VIOLATION = "SHARING_VIOLATION"
    UNSUPPORTED_CARD = "UNSUPPORTED_CARD"
    CANCELLED = "CANCELLED"
    INVALID_HANDLE = "INVALID_HANDLE"  # the backend restarted: every handle is dead
    CARD_ERROR = "CARD_ERROR"          # communication failed, cause unknown


# The daemon tells people what these mean (eport.daemon.service.messages); these texts are only
# what a program that uses cardlib on its own can show.
_UNAVAILABLE = Bilingual("无法访问卡片", "The card cannot be reached")
_REFUSED = Bilingual("卡片拒绝了该操作", "The card refused the operation")
_RETRY = Bilingual("请检查卡片和读卡器后重试; 运行 eport doctor 查看详情",
                   "check the card and the reader and retry; `eport doctor` tells more")


class TokenUnavailable(EportFailure):
    """The token could not be reached; `reason` (also `code`) says how, the message what was
    attempted. `native_code` is the backend's own number (a pcsc-lite return code, 0 if none)."""

    message = _UNAVAILABLE
    remedy = _RETRY

    def __init__(self, reason: Unavailable | str, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.reason = Unavailable(reason)
        self.code = self.reason.value
        self.native_code = code


class CardError(EportFailure):
    """The token answered and refused the operation."""

    code = "CARD_ERROR"
    message = _REFUSED
    remedy = _RETRY

    def __init__(self, sw: int | None, operation: str, detail: str = "") -> None:
        what = f"status word {sw:04X}" if sw is not None else (detail or "an error")
        super().__init__(f"{operation} failed with {what}")
        self.sw = sw
        self.operation = operation
        self.detail = detail


class NotPivCardError(CardError):
    """The card has no PIV application (or the token is not one we can drive)."""


class InvalidPinError(CardError):
    """Wrong PIN or PUK; `tries_left` more tries before it blocks (-1: the token does not say)."""

    def __init__(self, sw: int | None, operation: str, tries_left: int) -> None:
        super().__init__(sw, operation)
        self.tries_left = tries_left


class ReferenceBlockedError(CardError):
    """The PIN (or PUK) is blocked."""

    def __init__(self, operation: str, sw: int | None = 0x6983) -> None:
        super().__init__(sw, operation)


class SecurityStatusError(CardError):
    """The operation needs a verified PIN."""

    def __init__(self, operation: str, sw: int | None = 0x6982) -> None:
        super().__init__(sw, operation)


class ReferenceNotFoundError(CardError):
    """No key for that role on the token (PIV 6A88)."""
