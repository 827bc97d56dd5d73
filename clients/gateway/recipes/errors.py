"""The recipes' errors: every one carries Chinese and English text, so that the CLI can show
both and a program can pick one. None of them ever carries a PIN."""

from __future__ import annotations

from eport.common.failure import EportFailure
from eport.common.text import Bilingual

NO_REMEDY = Bilingual("", "")


class RecipeError(EportFailure):
    """The input cannot be signed or verified as given; the remedy says what to change.

    `exit_code` is what the CLI exits with: 2 (bad input) unless a subclass says otherwise.
    """

    code = "BAD_INPUT"
    exit_code = 2

    def __init__(self, message: Bilingual, remedy: Bilingual = NO_REMEDY) -> None:
        super().__init__(f"{message.zh} / {message.en}")
        self.message = message
        self.remedy = remedy


class CardProblem(RecipeError):
    """The card (or whatever answers for it) cannot serve the recipe: an unsupported key type,
    or a signature that does not verify with the card's own certificate. Not the input's fault,
    so the CLI treats it like a gateway error (exit 3)."""

    code = "CARD_PROBLEM"
    exit_code = 3


class GatewayReplyError(EportFailure):
    """The gateway refused, failed or could not be reached.

    `code` is the E-port code from the reply's `Err:Custom<code>` (for example "0A000024", wrong
    PIN) or, for failures that never produced a reply, one of our own words: "unreachable",
    "refused" (HTTP error at the handshake, e.g. an Origin not allowed), "timeout", "closed",
    "protocol" (a reply that does not follow the protocol), "card-changed".
    """

    exit_code = 3
    remedy = NO_REMEDY  # the gateway's own sentence says what to do, when it says anything

    def __init__(self, code: str, message: Bilingual) -> None:
        super().__init__(f"[{code}] {message.zh} / {message.en}")
        self.code = code
        self.message = message
