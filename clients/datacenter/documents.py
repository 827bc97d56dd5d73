"""Writing a subsystem's document (a declaration, a stock-taking document) as the commands
that make one (new, import, copy) write it: indented UTF-8 JSON, atomically, and with --json an
answer that says where it went."""

from __future__ import annotations

import json
from typing import Any

from eport.clients.kit.context import command_name, state
from eport.clients.kit.files import write_output
from eport.common.text import Bilingual


def document_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_document(document: dict[str, Any], output_path: str, said: Bilingual,
                   extra: dict[str, Any] | None = None) -> None:
    """`document` to `output_path` ('-': standard output, or the JSON answer with --json);
    `said` and the path for a person, {"output", "client_reference", **extra} with --json."""
    cli = state()
    if cli.output.json_mode and output_path == "-":
        cli.output.result(command_name(), {"document": document, "output": None},
                          lambda out: None)
        return
    write_output(output_path, document_bytes(document))
    if output_path != "-":
        cli.output.result(command_name(), {"output": output_path,
                                           "client_reference": document.get("client_reference"),
                                           **(extra or {})},
                          lambda out: out.note(Bilingual(f"{said.zh}: {output_path}",
                                                         f"{said.en}: {output_path}")))
