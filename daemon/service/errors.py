"""The daemon's one error type: a reason of the error taxonomy (the Reason enum) plus facts.

Every failure that leaves the daemon is an EportError; the servicer turns it into a gRPC
status code and an eport.v1.ErrorDetail with the Chinese and English message and remedy of
eport.daemon.service.messages. Nothing in here ever holds a PIN or PUK.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from eport.common.failure import EportFailure

if TYPE_CHECKING:
    from eport.common.text import Bilingual
    from eport.daemon.service.messages import Entry


class Reason(StrEnum):
    SERVICE_NOT_RUNNING = "SERVICE_NOT_RUNNING"
    NO_READER = "NO_READER"
    NO_CARD = "NO_CARD"
    CARD_REMOVED = "CARD_REMOVED"
    UNSUPPORTED_CARD = "UNSUPPORTED_CARD"
    SHARING_VIOLATION = "SHARING_VIOLATION"
    PIN_FORMAT = "PIN_FORMAT"
    PIN_INCORRECT = "PIN_INCORRECT"
    PIN_LAST_ATTEMPT_GUARD = "PIN_LAST_ATTEMPT_GUARD"
    PIN_BLOCKED = "PIN_BLOCKED"
    PUK_INCORRECT = "PUK_INCORRECT"
    PUK_BLOCKED = "PUK_BLOCKED"
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"
    CERT_UNTRUSTED = "CERT_UNTRUSTED"
    CARD_TIMEOUT = "CARD_TIMEOUT"
    CARD_ERROR = "CARD_ERROR"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNATTENDED_DISABLED = "UNATTENDED_DISABLED"
    AMBIGUOUS_CARD = "AMBIGUOUS_CARD"
    DAEMON_SHUTTING_DOWN = "DAEMON_SHUTTING_DOWN"


class EportError(EportFailure):
    """A failure with its reason. `detail` is extra English context for logs and messages
    (a reader name, which argument was wrong); it must never contain a secret.

    `code` is the reason's name; `message` and `remedy` come from the daemon's catalogue."""

    def __init__(
        self,
        reason: Reason,
        detail: str = "",
        *,
        tries_left: int | None = None,
        status_word: int | None = None,
        reader: str = "",
        card_id: str = "",
        variant: str = "",
    ) -> None:
        self.reason = reason
        self.code = reason.value
        # A more precise message of the same reason (eport.daemon.service.messages.VARIANTS).
        self.variant = variant
        self.detail = detail
        self.tries_left = tries_left
        self.status_word = status_word
        self.reader = reader
        self.card_id = card_id
        parts = [reason.value]
        if detail:
            parts.append(detail)
        if tries_left is not None:
            parts.append(f"tries left {tries_left}")
        if status_word is not None:
            parts.append(f"SW {status_word:04X}")
        if reader:
            parts.append(f"reader {reader!r}")
        super().__init__(": ".join(parts[:2]) + "".join(f"; {p}" for p in parts[2:]))

    @property
    def message(self) -> Bilingual:  # type: ignore[override]  # computed, never assigned
        return self._entry().message

    @property
    def remedy(self) -> Bilingual:  # type: ignore[override]
        return self._entry().remedy

    def _entry(self) -> Entry:
        # The catalogue imports this module: import it when a text is asked for.
        from eport.daemon.service.messages import message_for

        return message_for(self)

    def located(self, reader: str, card_id: str = "") -> EportError:
        """The same error with the reader (and card) filled in where they were unknown."""
        if not self.reader:
            self.reader = reader
        if not self.card_id:
            self.card_id = card_id
        return self
