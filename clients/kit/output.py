"""Where `eport` writes: one JSON document (or JSON line) on stdout with --json, otherwise
short human lines through rich (results on stdout, warnings and errors on stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eport.clients.kit.errors import CliError
from eport.clients.kit.views import SCHEMA_VERSION
from eport.common.text import Bilingual, Language

if TYPE_CHECKING:
    from rich.console import Console


# rich is imported when something is first printed for people: `eport sign` in a script
# (signature to stdout or a file, or --json) never needs it, and it costs ~40 ms per process.
def _console(stderr: bool) -> Console:
    from rich.console import Console

    # highlight=False: rich would otherwise colour numbers and paths in card data at random.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


@dataclass
class Output:
    json_mode: bool
    language: Language
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console(False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(True)
        return self._err

    def text(self, message: Bilingual) -> str:
        return message.pick(self.language)

    def envelope(self, command: str, ok: bool, body: dict[str, Any]) -> str:
        key = "result" if ok else "error"
        document = {"schema_version": SCHEMA_VERSION, "command": command, "ok": ok, key: body}
        return json.dumps(document, ensure_ascii=False, sort_keys=False)

    def result(self, command: str, data: dict[str, Any],
               human: Callable[[Output], None]) -> None:
        if self.json_mode:
            sys.stdout.write(self.envelope(command, True, data) + "\n")
            sys.stdout.flush()
        else:
            human(self)

    def line(self, message: Bilingual | str, style: str | None = None) -> None:
        text = message if isinstance(message, str) else self.text(message)
        self.out.print(escape(text), style=style)

    def labelled(self, label: Bilingual, value: object, style: str | None = None) -> None:
        self.out.print(f"{escape(self.text(label))}: {escape(str(value))}", style=style)

    def warn(self, message: Bilingual) -> None:
        """A warning for people; JSON carries the same facts in its fields."""
        if not self.json_mode:
            self.err.print(escape(self.text(message)), style="bold yellow")

    def note(self, message: Bilingual) -> None:
        if not self.json_mode:
            self.err.print(escape(self.text(message)))

    def error(self, command: str, error: CliError) -> None:
        if self.json_mode:
            sys.stdout.write(self.envelope(command, False, error.as_json()) + "\n")
            sys.stdout.flush()
            return
        label = Bilingual("错误", "Error").pick(self.language)
        remedy = Bilingual("解决办法", "Remedy").pick(self.language)
        self.err.print(f"[bold red]{label}[/] [{escape(error.code)}]: "
                       f"{escape(self.text(error.message))}")
        self.err.print(f"{remedy}: {escape(self.text(error.remedy))}")
