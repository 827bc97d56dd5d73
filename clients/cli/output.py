"""Where `eport` writes: one JSON document (or JSON line) on stdout with --json, otherwise
short human lines through rich (results on stdout, warnings and errors on stderr)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from eport.clients.cli.errors import CliError
from eport.clients.cli.language import Bilingual, Language
from eport.clients.cli.views import SCHEMA_VERSION


def _console(stderr: bool) -> Console:
    # highlight=False: rich would otherwise colour numbers and paths in card data at random.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@dataclass
class Output:
    json_mode: bool
    language: Language
    out: Console = field(default_factory=lambda: _console(False))
    err: Console = field(default_factory=lambda: _console(True))

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
