"""Running the installed `eport` console script as users do, for the pcsc-tier tests: a
subprocess without a terminal, against a real eportd, with checks of the one JSON document,
the exit code, the human error with its remedy, and that no secret or traceback shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eport.firmware_sim.image import CardImage
from tests.support.card_stack import CardStack as Stack
from tests.support.pcsc_stack import reader_for_slot

EPORT = str(Path(sys.executable).with_name("eport"))
PIN, PUK, NEW_PIN, WRONG_PIN, WRONG_PUK = "88888888", "12345678", "24682468", "11111111", \
    "87654321"
SECRETS = (PIN, PUK, NEW_PIN, WRONG_PIN, WRONG_PUK)
READER0, READER1 = reader_for_slot(0), reader_for_slot(1)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What would change eport's language, colours or daemon behind a test's back.
_CLEARED = ("EPORTD_SOCKET", "EPORT_LANG", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES",
            "NO_COLOR", "FORCE_COLOR", "COLUMNS", "XDG_RUNTIME_DIR")
Result = subprocess.CompletedProcess[str]


# ---- running eport ----

def eport_env(socket_path: Path | str, lang: str | None, env: Mapping[str, str] | None = None
              ) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    environment.update(LANG="C.UTF-8", EPORTD_SOCKET=str(socket_path))
    if lang is not None:
        environment["EPORT_LANG"] = lang
    environment.update(env or {})
    return environment


def run_eport(*args: str, socket_path: Path | str, stdin: str | None = None,
              lang: str | None = "en", env: Mapping[str, str] | None = None,
              timeout: float = 60) -> Result:
    """`eport ARGS` as a script runs it: no terminal (a session of its own, so no /dev/tty),
    `stdin` on standard input (else /dev/null). Never a traceback without --debug."""
    result = subprocess.run(
        [EPORT, *args], input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, encoding="utf-8", timeout=timeout,
        env=eport_env(socket_path, lang, env), start_new_session=True)
    if "--debug" not in args:
        assert "Traceback" not in result.stdout + result.stderr, describe(result)
    return result


def describe(result: Result) -> str:
    return (f"$ eport {' '.join(map(str, result.args[1:]))}\nexit {result.returncode}\n"
            f"--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}")


def ok_json(result: Result, command: str) -> dict[str, Any]:
    """The result of a command that succeeded with --json: exactly one JSON document."""
    assert result.returncode == 0, describe(result)
    assert result.stdout.count("\n") == 1, describe(result)
    document = json.loads(result.stdout)
    assert (document["schema_version"], document["command"], document["ok"]) == \
        (1, command, True), document
    assert "error" not in document
    result_body: dict[str, Any] = document["result"]
    return result_body


def error_json(result: Result, code: str, exit_code: int) -> dict[str, Any]:
    """The error of a failed command with --json: one document, on stdout, nothing on stderr."""
    assert result.returncode == exit_code, describe(result)
    assert result.stdout.count("\n") == 1 and result.stderr == "", describe(result)
    document = json.loads(result.stdout)
    assert document["ok"] is False and "result" not in document, document
    error: dict[str, Any] = document["error"]
    assert (error["code"], error["exit_code"]) == (code, exit_code), error
    for text in (error["message"], error["remedy"]):
        assert text["zh"] and text["en"], error
    return error


def human_error(result: Result, code: str, exit_code: int) -> str:
    """The error as a person sees it: on stderr, with its code, its message and a remedy."""
    assert result.returncode == exit_code, describe(result)
    assert f"[{code}]" in result.stderr, describe(result)
    assert re.search(r"^(Remedy|解决办法): \S", result.stderr, re.MULTILINE), describe(result)
    return result.stderr


def assert_no_secret(*results: Result | str) -> None:
    for result in results:
        shown = result if isinstance(result, str) else result.stdout + result.stderr
        for secret in SECRETS:
            assert secret not in shown, f"a secret ({secret}) was shown:\n{shown}"


def command_line(args: tuple[str, ...]) -> str:
    return " ".join(args)


def pin_lines(*secrets: str) -> str:
    return "".join(f"{secret}\n" for secret in secrets)


@dataclass
class Eport:
    """`eport(...)` runs the command against the module's eportd; `put` inserts cards."""

    stack: Stack
    workdir: Path
    lang: str = "en"

    def __call__(self, *args: str | Path, stdin: str | None = None, lang: str | None = None,
                 env: Mapping[str, str] | None = None) -> Result:
        return run_eport(*map(str, args), socket_path=self.stack.socket, stdin=stdin,
                         lang=lang or self.lang, env=env)

    def put(self, image: CardImage, slot: int = 0, *, wait: bool = True) -> Path:
        """A fresh copy of `image` in `slot` (replacing what was there), read by eportd."""
        return self.stack.put(image, self.workdir, slot, wait=wait)

    def pull(self, slot: int = 0) -> None:
        self.stack.pull(slot)

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.workdir / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path
