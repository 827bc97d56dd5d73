"""The PIN rules every client applies before it sends a PIN: the last try only after an explicit
confirmation, a blocked PIN answered with the card centre's remedy instead of a call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.pin_entry import PIN, SecretReader
from eport.common.messages import CARD_CENTRE_UNBLOCK
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

Reply = TypeVar("Reply")


def blocked(what: Bilingual, puk: bool) -> CliError:
    remedy = CARD_CENTRE_UNBLOCK if puk else Bilingual(
        "如有解锁码(PUK), 可用 eport pin unblock 解锁; 否则" + CARD_CENTRE_UNBLOCK.zh,
        "with the PUK, unblock it with `eport pin unblock`; otherwise " + CARD_CENTRE_UNBLOCK.en)
    return CliError("PUK_BLOCKED" if puk else "PIN_BLOCKED",
                    Bilingual(f"{what.zh}已锁定", f"The {what.en} is blocked"), remedy,
                    ExitCode.BLOCKED, {"tries_left": 0})


def with_guard(secrets: SecretReader, tries_left: int, what: Bilingual,
               send: Callable[[bool], Reply]) -> Reply:
    """Send once; on the last try only after an explicit confirmation. If the daemon's guard
    fires anyway (a try was spent elsewhere meanwhile), ask and send again."""
    allow = False
    if tries_left == 1:
        secrets.confirm_last_try(what)
        allow = True
    try:
        return send(allow)
    except CliError as error:
        if error.code != "PIN_LAST_ATTEMPT_GUARD" or allow:
            raise
        secrets.confirm_last_try(what)
        return send(True)


def send_with_pin(secrets: SecretReader, status: pb.PinStatus,
                  send: Callable[[str, bool], Reply]) -> Reply:
    """send(pin, allow_last_attempt) for a card operation behind the PIN (sign, decrypt). The
    PIN is asked for only when the daemon holds no session and no stored PIN for the card, or
    when --pin-stdin says one comes; otherwise "" lets the daemon use what it holds."""
    pin = ""
    needs_pin = secrets.from_stdin or not (status.session_active or status.unattended_enabled)
    if needs_pin:
        if status.pin_blocked:
            raise blocked(PIN, puk=False)
        pin = secrets.read(PIN)
    return with_guard(secrets, status.pin_tries_left if needs_pin else -1, PIN,
                      lambda allow: send(pin, allow))
