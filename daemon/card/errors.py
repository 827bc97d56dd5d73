"""Card-level errors: status words turned into what they mean."""

from __future__ import annotations

from eport.common.apdu import SW


class CardError(Exception):
    """The card answered with a status word that the operation could not accept."""

    def __init__(self, sw: int, operation: str) -> None:
        super().__init__(f"{operation} failed with status word {sw:04X}")
        self.sw = sw
        self.operation = operation


class NotPivCardError(CardError):
    """SELECT of the PIV application failed: not an E-port/PIV card."""


class InvalidPinError(CardError):
    """Wrong PIN or PUK; `tries_left` more tries before it blocks."""

    def __init__(self, sw: int, operation: str, tries_left: int) -> None:
        super().__init__(sw, operation)
        self.tries_left = tries_left


class ReferenceBlockedError(CardError):
    """The PIN (or PUK) is blocked (6983)."""

    def __init__(self, operation: str) -> None:
        super().__init__(SW.AUTH_METHOD_BLOCKED, operation)


class SecurityStatusError(CardError):
    """The operation needs a verified PIN (6982)."""

    def __init__(self, operation: str) -> None:
        super().__init__(SW.SECURITY_STATUS_NOT_SATISFIED, operation)
