"""What every `eport` command gets: the output, the daemon client, and shared options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from eport.clients.kit.daemon_client import DaemonClient
from eport.clients.kit.errors import usage_error
from eport.clients.kit.output import Output
from eport.common.text import Bilingual

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    output: Output
    client: DaemonClient
    debug: bool = False
    command: str = "eport"  # the command being run, as JSON output names it


def state() -> CliState:
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, CliState)
    return obj


def command_name() -> str:
    """`card info` for `eport card info`: the name JSON output carries."""
    path = click.get_current_context().command_path
    return path.split(" ", 1)[1] if " " in path else path


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    root = ctx.find_root().obj
    if isinstance(root, CliState):
        # Every command has this option, so this is where the command's name becomes known
        # (errors raised later are reported under it).
        path = ctx.command_path
        root.command = path.split(" ", 1)[1] if " " in path else path
        if value:
            root.output.json_mode = True
    return value


def json_option(function: F) -> F:
    """`--json` on every command (also accepted before the command: `eport --json ...`)."""
    return click.option("--json", "json_flag", is_flag=True, expose_value=False,
                        callback=_set_json, is_eager=True,
                        help="Print one JSON document (schema in docs/cli.md).")(function)


def card_options(function: F) -> F:
    """Which card: by reader name or card id; by default the only card (or the IC card when
    an IC card and an IKEY are both present, as the E-port client does)."""
    function = click.option("--card", "card_id", metavar="CARD_ID",
                            help="The card with this card id.")(function)
    return click.option("--reader", metavar="NAME",
                        help="The card in this reader (see `eport readers`).")(function)


# The commands that take a PIN accept extra arguments only to refuse them themselves (see
# secret_options): click's own error would repeat them, and there they are most likely the PIN.
SECRET_COMMAND_SETTINGS: dict[str, Any] = {"allow_extra_args": True}


def _refuse_extra_arguments(function: F) -> F:
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if click.get_current_context().args:
            raise usage_error(
                Bilingual("命令行上有多余的参数 (不予显示, 以免泄露口令)",
                          "Unexpected extra arguments (not shown: one may be a PIN)"),
                Bilingual("口令不能写在命令行上: 请在提示时输入, 或用 --pin-stdin 从标准输入提供",
                          "a PIN is never given on the command line: type it when asked, or "
                          "give it on standard input with --pin-stdin"))
        return function(*args, **kwargs)

    return cast(F, checked)


def secret_options(function: F) -> F:
    """--pin-stdin and --allow-last-attempt; extra arguments are refused without being echoed
    (the command needs context_settings=SECRET_COMMAND_SETTINGS)."""
    function = _refuse_extra_arguments(function)
    function = click.option(
        "--allow-last-attempt", is_flag=True,
        help="Send the PIN/PUK even when only one try is left (scripts; a person is asked).",
    )(function)
    return click.option(
        "--pin-stdin", is_flag=True,
        help="Read the PIN (and PUK/new PIN) from standard input, one per line.")(function)
