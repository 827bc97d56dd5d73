"""`eport pin status | verify | change | unblock | logout`."""

from __future__ import annotations

from collections.abc import Callable

import click

from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    CliState,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.output import Output
from eport.clients.kit.pin_entry import PIN, PUK, SecretReader
from eport.clients.kit.pin_guard import blocked, with_guard
from eport.clients.kit.views import pin_view, timestamp
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb


def _status_for(cli: CliState, reader: str | None, card_id: str | None
                ) -> tuple[pb.CardSelector, pb.PinStatus]:
    status = cli.client.pin_status(selector(reader, card_id))
    # From here on, this card and no other: a card swapped in meanwhile must not get the PIN.
    return pb.CardSelector(card_id=status.card_id), status


def show_pin_status(out: Output, status: pb.PinStatus) -> None:
    if status.pin_blocked:
        out.line(Bilingual("口令: 已锁定", "PIN: blocked"), style="bold red")
    else:
        out.labelled(Bilingual("口令剩余次数", "PIN tries left"),
                  status.pin_tries_left if status.pin_tries_left >= 0 else
                  out.text(Bilingual("已验证", "verified")))
    if status.puk_blocked:
        out.line(Bilingual("解锁码: 已锁定", "PUK: blocked"), style="bold red")
    else:
        out.labelled(Bilingual("解锁码剩余次数", "PUK tries left"),
                  status.puk_tries_left if status.puk_tries_left >= 0 else "-")
    if status.session_active:
        out.labelled(Bilingual("已登录, 会话至", "Logged in until"),
                  timestamp(status.session_expires_at))
    else:
        out.line(Bilingual("未登录", "Not logged in"))


@click.group("pin")
def pin_group() -> None:
    """PIN tries, login, PIN change and unblock."""


@pin_group.command("status")
@card_options
@json_option
def status_command(reader: str | None, card_id: str | None) -> None:
    """PIN and PUK tries left (reading them spends no try)."""
    cli = state()
    status = cli.client.pin_status(selector(reader, card_id))
    cli.output.result(command_name(), pin_view(status), lambda out: show_pin_status(out, status))


@pin_group.command("verify", context_settings=SECRET_COMMAND_SETTINGS)
@card_options
@secret_options
@json_option
def verify_command(reader: str | None, card_id: str | None, pin_stdin: bool,
                   allow_last_attempt: bool) -> None:
    """Log in: check the PIN on the card and open a session for signing."""
    cli = state()
    card, status = _status_for(cli, reader, card_id)
    if status.pin_blocked:
        raise blocked(PIN, puk=False)
    secrets = SecretReader(cli.output, pin_stdin, allow_last_attempt)
    pin = secrets.read(PIN)
    answer = with_guard(secrets, status.pin_tries_left, PIN, lambda allow: cli.client.call(
        cli.client.stub.VerifyPin,
        pb.VerifyPinRequest(card=card, pin=pin, allow_last_attempt=allow)))

    def human(out: Output) -> None:
        out.line(Bilingual("口令正确, 已登录", "PIN accepted: logged in"), style="green")
        show_pin_status(out, answer.status)

    cli.output.result(command_name(), pin_view(answer.status), human)


def _set_new_pin(proof: Bilingual, reader: str | None, card_id: str | None, pin_stdin: bool,
                 allow_last_attempt: bool, done: Bilingual,
                 send: Callable[[CliState, pb.CardSelector, str, str, bool], pb.PinStatus]
                 ) -> None:
    """Change and unblock alike: the proof (current PIN or PUK) under the last-try guard of
    its own counter, then the new PIN (asked twice on a terminal)."""
    cli = state()
    card, status = _status_for(cli, reader, card_id)
    is_puk = proof is PUK
    if status.puk_blocked if is_puk else status.pin_blocked:
        raise blocked(proof, puk=is_puk)
    secrets = SecretReader(cli.output, pin_stdin, allow_last_attempt)
    secret = secrets.read(proof)
    new = secrets.read(PIN, new=True)
    tries = status.puk_tries_left if is_puk else status.pin_tries_left
    answer = with_guard(secrets, tries, proof,
                        lambda allow: send(cli, card, secret, new, allow))
    cli.output.result(command_name(), pin_view(answer),
                      lambda out: out.line(done, style="green"))


@pin_group.command("change", context_settings=SECRET_COMMAND_SETTINGS)
@card_options
@secret_options
@json_option
def change_command(reader: str | None, card_id: str | None, pin_stdin: bool,
                   allow_last_attempt: bool) -> None:
    """Change the PIN (stdin: the current PIN, then the new one)."""
    _set_new_pin(PIN, reader, card_id, pin_stdin, allow_last_attempt,
                 Bilingual("口令已修改", "PIN changed"),
                 lambda cli, card, old, new, allow: cli.client.call(
                     cli.client.stub.ChangePin, pb.ChangePinRequest(
                         card=card, old_pin=old, new_pin=new, allow_last_attempt=allow)))


@pin_group.command("unblock", context_settings=SECRET_COMMAND_SETTINGS)
@card_options
@secret_options
@json_option
def unblock_command(reader: str | None, card_id: str | None, pin_stdin: bool,
                    allow_last_attempt: bool) -> None:
    """Unblock the PIN with the PUK and set a new PIN (stdin: the PUK, then the new PIN)."""
    _set_new_pin(PUK, reader, card_id, pin_stdin, allow_last_attempt,
                 Bilingual("口令已解锁并设置为新口令", "PIN unblocked and set to the new PIN"),
                 lambda cli, card, puk, new, allow: cli.client.call(
                     cli.client.stub.UnblockPin, pb.UnblockPinRequest(
                         card=card, puk=puk, new_pin=new, allow_last_attempt=allow)))


@pin_group.command("logout")
@card_options
@json_option
def logout_command(reader: str | None, card_id: str | None) -> None:
    """End the login session on the card."""
    cli = state()
    answer = cli.client.call(cli.client.stub.Logout, selector(reader, card_id))
    cli.output.result(command_name(), {"session_was_active": answer.session_was_active},
                      lambda out: out.line(Bilingual("已退出登录", "Logged out") if
                                           answer.session_was_active else
                                           Bilingual("本来就未登录", "Was not logged in")))
