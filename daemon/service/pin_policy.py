"""The PIN guard: nothing the daemon does spends a try the caller did not ask for.

Before a PIN (or PUK) reaches the card its format is checked (a typo of the wrong length never
costs a try) and the card's counter, the authority, is read without spending a try. With one
try left the PIN is sent only when the request explicitly allows the last attempt: the E-port
manuals advise stopping after two wrong tries.
"""

from __future__ import annotations

from eport.cardlib.token import CredentialStatus
from eport.daemon.service.errors import EportError, Reason

EPORT_PIN_LENGTH = 8


def secret_bytes(secret: str, *, what: str, eport_card: bool) -> bytearray:
    """The secret as ASCII digits in a bytearray the caller wipes; PIN_FORMAT otherwise.

    E-port cards use 8-digit PINs; other PIV cards 6 to 8 characters. The message names the
    rule and the length seen, never the value.
    """
    if eport_card:
        ok = len(secret) == EPORT_PIN_LENGTH and secret.isascii() and secret.isdigit()
        rule = f"{what} must be {EPORT_PIN_LENGTH} digits (got {len(secret)} characters)"
    else:
        ok = 6 <= len(secret) <= 8 and secret.isascii() and secret.isprintable()
        rule = f"{what} must be 6 to 8 characters (got {len(secret)})"
    if not ok:
        raise EportError(Reason.PIN_FORMAT, rule)
    return bytearray(secret.encode("ascii"))


def wipe(buffer: bytearray) -> None:
    for index in range(len(buffer)):
        buffer[index] = 0


def guard(status: CredentialStatus, *, allow_last_attempt: bool, puk: bool = False) -> None:
    """Refuse to send the secret when it is blocked, or on the last try unless allowed."""
    if status.blocked:
        raise EportError(Reason.PUK_BLOCKED if puk else Reason.PIN_BLOCKED, tries_left=0)
    # on_last_try: one try left, or a token that only says "final try" (tries_left -1).
    if status.on_last_try and not allow_last_attempt:
        raise EportError(Reason.PIN_LAST_ATTEMPT_GUARD,
                         "PUK" if puk else "PIN", tries_left=1)
