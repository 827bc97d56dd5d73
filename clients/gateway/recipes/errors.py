"""The recipes' errors: every one carries Chinese and English text, so that the CLI can show
both and a program can pick one. None of them ever carries a PIN."""

from __future__ import annotations


class RecipeError(Exception):
    """The input cannot be signed or verified as given; the remedy says what to change.

    `exit_code` is what the CLI exits with: 2 (bad input) unless a subclass says otherwise.
    """

    exit_code = 2

    def __init__(self, message_zh: str, message_en: str, remedy_zh: str = "",
                 remedy_en: str = "") -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.message_zh = message_zh
        self.message_en = message_en
        self.remedy_zh = remedy_zh
        self.remedy_en = remedy_en


class CardProblem(RecipeError):
    """The card (or whatever answers for it) cannot serve the recipe: an unsupported key type,
    or a signature that does not verify with the card's own certificate. Not the input's fault,
    so the CLI treats it like a gateway error (exit 3)."""

    exit_code = 3


class GatewayReplyError(Exception):
    """The gateway refused, failed or could not be reached.

    `code` is the E-port code from the reply's `Err:Custom<code>` (for example "0A000024", wrong
    PIN) or, for failures that never produced a reply, one of our own words: "unreachable",
    "refused" (HTTP error at the handshake, e.g. an Origin not allowed), "timeout", "closed",
    "protocol" (a reply that does not follow the protocol), "card-changed".
    """

    exit_code = 3

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(f"[{code}] {message_zh} / {message_en}")
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en
