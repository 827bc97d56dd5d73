"""--datacenter works before and after a subsystem's subcommand; the later one wins."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from eport.clients.customs.commands import customs_group
from eport.clients.datacenter.context import DataCenterGroup, datacenter, datacenter_option
from eport.common.customs.endpoint import ADDRESS_ENV


@click.group("subsystem", cls=DataCenterGroup)
@datacenter_option
def subsystem() -> None:
    pass


@subsystem.command("where")
def where() -> None:
    click.echo(datacenter().address)


@pytest.mark.parametrize("args,env,expected", [
    (["--datacenter", "unix:/run/a.sock", "where"], {}, "unix:/run/a.sock"),
    (["where", "--datacenter", "unix:/run/b.sock"], {}, "unix:/run/b.sock"),
    (["--datacenter", "unix:/run/a.sock", "where", "--datacenter", "127.0.0.1:7"], {},
     "127.0.0.1:7"),
    (["where", "--datacenter", "unix:/run/b.sock"], {ADDRESS_ENV: "unix:/run/env.sock"},
     "unix:/run/b.sock"),
    (["where"], {ADDRESS_ENV: "unix:/run/env.sock"}, "unix:/run/env.sock"),
])
def test_the_address_comes_from_the_last_place_it_is_given(args: list[str], env: dict[str, str],
                                                           expected: str) -> None:
    result = CliRunner().invoke(subsystem, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == expected


def test_every_customs_command_takes_the_option() -> None:
    for name, command in customs_group.commands.items():
        assert "--datacenter" in [opt for p in command.params for opt in p.opts], name
        help_text = CliRunner().invoke(customs_group, [name, "--help"]).output
        assert "--datacenter" in help_text, name
