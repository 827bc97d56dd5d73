"""A click group that imports a subcommand's module only when that subcommand runs.

Importing every subsystem (customs, bonded, auth, doctor, …) cost about 0.2 s per `eport`
process, paid again by every `eport sign` in a script. The group keeps a table of
name → ("module:attribute", short help) so that `eport --help` lists every command without
importing any of them; the short help is checked against the commands' own docstrings by
tests/unit/test_structure_imports.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    target: str  # "package.module:attribute"
    short_help: str  # what `eport --help` shows; the command's docstring, first sentence

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy_commands: dict[str, LazyCommand] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        loaded = self.commands.get(cmd_name)
        if loaded is not None:
            return loaded
        lazy = self.lazy_commands.get(cmd_name)
        if lazy is None:
            return None
        command = lazy.load()
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's own, but with the table's short help for commands not yet loaded."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                rows.append((name, short_help_of(self.lazy_commands[name].short_help, limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def short_help_of(help_text: str, limit: int) -> str:
    """What click would show for a command whose help is `help_text`."""
    return click.Command("_", help=help_text).get_short_help_str(limit)
