"""Reaching the data centre from a click command: the client a group attaches (from
--datacenter, $EPORT_DATACENTER or the default socket), the card signer, signed calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from eport.clients.datacenter.client import DataCenterClient
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.context import state
from eport.clients.kit.pin_entry import SecretReader
from eport.common.customs.endpoint import ADDRESS_ENV, default_datacenter_address

F = TypeVar("F", bound=Callable[..., Any])
_DATACENTER_KEY = "eport.datacenter.client"


def _attach(ctx: click.Context, _param: click.Parameter, address: str | None) -> None:
    client = DataCenterClient(address or default_datacenter_address())
    ctx.meta[_DATACENTER_KEY] = client
    ctx.call_on_close(client.close)


def _attach_given(ctx: click.Context, param: click.Parameter, address: str | None) -> None:
    """--datacenter after the subcommand's name wins over the group's (or its default)."""
    if address is not None:
        _attach(ctx, param, address)


def datacenter_option(function: F) -> F:
    """--datacenter on a subsystem's command group; the client is there for its commands."""
    return click.option(
        "--datacenter", metavar="ADDRESS", envvar=ADDRESS_ENV, expose_value=False,
        callback=_attach,
        help=f"The data centre: unix:/path or host:port (default: ${ADDRESS_ENV}, then the "
             "local eport-datacenter socket).")(function)


class DataCenterGroup(click.Group):
    """A subsystem's group whose every command takes --datacenter too, so that
    `eport customs save --datacenter ADDRESS FILE` works as well as the option before `save`
    (people put options after the subcommand they belong to)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(param.name == "datacenter" for param in cmd.params):
            cmd.params.append(click.Option(
                ["--datacenter"], metavar="ADDRESS", expose_value=False,
                callback=_attach_given,
                help="The data centre, as the group's --datacenter (which it overrides)."))
        super().add_command(cmd, name)


def datacenter() -> DataCenterClient:
    client = click.get_current_context().meta[_DATACENTER_KEY]
    assert isinstance(client, DataCenterClient)
    return client


def signer(reader: str | None, card_id: str | None, pin_stdin: bool,
           allow_last_attempt: bool) -> CardSigner:
    cli = state()
    return CardSigner(cli, SecretReader(cli.output, pin_stdin, allow_last_attempt),
                      reader, card_id)


def call_signed(card: CardSigner, method: str, body: dict[str, Any], *,
                service: str = "datacenter") -> Any:
    """Sign `body` for `method` on the card and send it to `service` ("datacenter",
    "bonded" or "authorization"); the data centre's answer."""
    client = datacenter()
    return client.call(getattr(client.stub_for(service), method), card.sign(method, body))
