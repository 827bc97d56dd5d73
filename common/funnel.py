"""The one error funnel of every console script (eport, eportd, eport-sim, eport-gateway with
its recipes, eport-datacenter, eport-demo): whatever goes wrong becomes one message with a
remedy, in Chinese and English, or one JSON document, and a documented exit code.

run_console() runs a script's body and turns what escapes it into a ConsoleFailure: click's
usage errors and argparse's (through FunnelArgumentParser) into USAGE (2), an EportFailure
into its code and texts, Ctrl-C into INTERRUPTED (130), anything else into UNEXPECTED (1)
without a traceback (EPORT_DEBUG=1 shows it). `--json` anywhere on the command line is known
before parsing, so even a usage error answers in JSON. Exit codes per script: docs/exit-codes.md.

This module sits in common/ because the daemon, the simulator and the data centre may not
import the clients; it imports click, which every script but eportd parses with anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, NoReturn, Protocol

import click

from eport.common.failure import EportFailure
from eport.common.text import LANGUAGE_ENV, Bilingual, Language, detect_language

# Every script's exit codes start with these; docs/exit-codes.md lists each script's own.
BASE_EXIT_CODES: Mapping[str, int] = {"OK": 0, "UNEXPECTED": 1, "USAGE": 2, "INTERRUPTED": 130}
# The envelope of eport's --json output, kept the same for every script.
SCHEMA_VERSION = 1
JSON_FLAG = "--json"
DEBUG_ENV = "EPORT_DEBUG"

# "detected": the language of detect_language(), as eport shows it. "both": Chinese and
# English, for scripts whose stderr goes to a log read by anyone (eportd, the gateway);
# EPORT_LANG=zh|en still picks one.
LanguagePolicy = Literal["detected", "both"]

CANCELLED = Bilingual("已取消", "Cancelled")


@dataclass
class ConsoleFailure(EportFailure):
    """What the funnel shows: a stable code, both texts, the exit code, extra JSON fields."""

    code: str
    message: Bilingual
    remedy: Bilingual
    exit_code: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message.en}"

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "exit_code": int(self.exit_code),
                "message": self.message.as_json(), "remedy": self.remedy.as_json(),
                **self.extra}


def help_remedy(command_path: str) -> Bilingual:
    return Bilingual(f"运行 {command_path} --help 查看用法", f"see `{command_path} --help`")


def usage_failure(command_path: str, problem: str) -> ConsoleFailure:
    """A bad option or argument: the parser's own (English) text, said in both languages."""
    return ConsoleFailure("USAGE", Bilingual(f"参数错误: {problem}", problem),
                          help_remedy(command_path), BASE_EXIT_CODES["USAGE"])


def unexpected_failure(error: BaseException, debug_hint: Bilingual) -> ConsoleFailure:
    # Only the type: an exception's text could hold anything, a PIN included.
    name = type(error).__name__
    return ConsoleFailure("UNEXPECTED", Bilingual(f"意外错误: {name}", f"Unexpected error: {name}"),
                          debug_hint, BASE_EXIT_CODES["UNEXPECTED"])


def wants_json(argv: Sequence[str]) -> bool:
    """`--json` anywhere before a `--` (after it, words are arguments, not options)."""
    for word in argv:
        if word == "--":
            return False
        if word == JSON_FLAG:
            return True
    return False


def debug_requested(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return "--debug" in argv or env.get(DEBUG_ENV, "") not in ("", "0")


def shown_languages(policy: LanguagePolicy,
                    environ: Mapping[str, str] | None = None) -> tuple[Language, ...]:
    env = os.environ if environ is None else environ
    if policy == "both" and env.get(LANGUAGE_ENV, "").strip().lower() not in ("zh", "en"):
        return ("zh", "en")
    return (detect_language(env),)


class Reporter(Protocol):
    """Where the funnel says what went wrong: eport has its own (rich), the rest use
    StreamReporter."""

    def failure(self, failure: ConsoleFailure, command: str) -> None: ...
    def note(self, message: Bilingual) -> None: ...


@dataclass
class StreamReporter:
    """JSON: eport's envelope on stdout. Otherwise stderr lines in the shown languages:
    `错误 [CODE]: message` and `解决办法: remedy`, the way eport prints them."""

    json_mode: bool
    languages: tuple[Language, ...]

    def failure(self, failure: ConsoleFailure, command: str) -> None:
        if self.json_mode:
            document = {"schema_version": SCHEMA_VERSION, "command": command, "ok": False,
                        "error": failure.as_json()}
            sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        lines = []
        for language in self.languages:
            label = Bilingual("错误", "Error").pick(language)
            lines.append(f"{label} [{failure.code}]: {failure.message.pick(language)}")
            remedy = failure.remedy.pick(language)
            if remedy:
                lines.append(f"{Bilingual('解决办法', 'Remedy').pick(language)}: {remedy}")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()

    def note(self, message: Bilingual) -> None:
        if not self.json_mode:
            sys.stderr.write(" / ".join(message.pick(lang) for lang in self.languages) + "\n")
            sys.stderr.flush()


class UsageExit(SystemExit):
    """argparse's exit for a bad argument, carrying the failure for run_console to show.

    A SystemExit still (code 2), so that code that calls parse_args() outside the funnel sees
    what argparse always raised."""

    def __init__(self, failure: ConsoleFailure) -> None:
        super().__init__(failure.exit_code)
        self.failure = failure


class FunnelArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is a USAGE failure shown by the funnel (both languages,
    JSON with --json) instead of English usage text on stderr."""

    def error(self, message: str) -> NoReturn:
        raise UsageExit(usage_failure(self.prog, message))


def _texts(error: BaseException) -> tuple[Bilingual, Bilingual] | None:
    """The message and remedy of an error that has them (an EportFailure's Bilingual
    attributes)."""
    message = getattr(error, "message", None)
    remedy = getattr(error, "remedy", None)
    if isinstance(message, Bilingual):
        return message, remedy if isinstance(remedy, Bilingual) else Bilingual("", "")
    return None


def failure_of(error: BaseException, failed_exit: int = BASE_EXIT_CODES["UNEXPECTED"]
               ) -> ConsoleFailure | None:
    """The ConsoleFailure an error with bilingual texts stands for, else None."""
    if isinstance(error, ConsoleFailure):
        return error
    texts = _texts(error)
    if texts is None:
        return None
    code = getattr(error, "code", None)
    exit_code = getattr(error, "exit_code", None)
    extra = getattr(error, "extra", None)
    return ConsoleFailure(code if isinstance(code, str) and code else _code_name(error),
                          texts[0], texts[1],
                          int(exit_code) if isinstance(exit_code, int) else failed_exit,
                          dict(extra) if isinstance(extra, dict) else {})


def _code_name(error: BaseException) -> str:
    """A code for an error class that has none yet: ServerConfigError -> SERVER_CONFIG_ERROR."""
    name = type(error).__name__
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()


def _command_of(problem: click.ClickException, program: str) -> tuple[str, str]:
    """The command path of a click error ("eport-sim provision") and the command after the
    program's name ("provision"), for the remedy and the JSON envelope."""
    context = getattr(problem, "ctx", None)
    path = context.command_path if isinstance(context, click.Context) else program
    command = path[len(program):].strip() if path.startswith(program) else ""
    return path or program, command


def _click_failure(problem: click.ClickException, program: str,
                   click_failure_exit: int | None) -> ConsoleFailure:
    path, _ = _command_of(problem, program)
    if isinstance(problem, click.exceptions.NoArgsIsHelpError):
        return ConsoleFailure("USAGE", Bilingual("缺少命令或参数", "Missing command or arguments"),
                              help_remedy(path), BASE_EXIT_CODES["USAGE"])
    if isinstance(problem, click.UsageError):
        return usage_failure(path, problem.format_message())
    exit_code = problem.exit_code if click_failure_exit is None else click_failure_exit
    if isinstance(problem, click.FileError):
        return ConsoleFailure(
            "FILE_ERROR", Bilingual(f"无法打开文件 {problem.ui_filename}: {problem.message}",
                                    f"Cannot open {problem.ui_filename}: {problem.message}"),
            Bilingual("请检查路径和权限", "check the path and its permissions"), exit_code,
            {"path": problem.ui_filename})
    # A command that wrapped a failure (raise click.ClickException(str(e)) from None) keeps
    # it as __context__: its own bilingual texts are better than the one-line string.
    wrapped = failure_of(problem.__context__) if problem.__context__ is not None else None
    if wrapped is not None:
        return ConsoleFailure(wrapped.code, wrapped.message, wrapped.remedy, exit_code,
                              wrapped.extra)
    text = problem.format_message()
    remedy = Bilingual("请按上述说明处理后重试", "act on the message above, then retry")
    return ConsoleFailure("FAILED", Bilingual(text, text), remedy, exit_code)


def run_console(program: str, body: Callable[[list[str]], int | None],
                argv: Sequence[str] | None = None, *,
                exit_codes: type[IntEnum],
                languages: LanguagePolicy = "detected",
                reporter: Reporter | None = None,
                convert: Callable[[BaseException], ConsoleFailure | None] | None = None,
                click_failure_exit: int | None = None,
                debug_hint: Bilingual | None = None,
                command: Callable[[], str] | None = None) -> int:
    """Run `body(args)` and return the exit code a console script ends with.

    `exit_codes` is the script's IntEnum (it must start with BASE_EXIT_CODES); `convert` turns
    a script's own exceptions into failures first; `click_failure_exit` replaces the exit code
    of a click error that is not a usage error (eport: INPUT_ERROR); `command` names the
    command for the JSON envelope once parsing has found it.
    """
    for name, value in BASE_EXIT_CODES.items():
        assert exit_codes[name] == value, f"{exit_codes.__name__}.{name} must be {value}"
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    out = reporter or StreamReporter(wants_json(args), shown_languages(languages))
    hint = debug_hint or Bilingual(f"请设置 {DEBUG_ENV}=1 重试并报告输出",
                                   f"retry with {DEBUG_ENV}=1 and report the output")
    failed_command = ""

    def report(failure: ConsoleFailure) -> int:
        out.failure(failure, command() if command is not None else failed_command)
        return int(failure.exit_code)

    try:
        result = body(args)
        return int(result) if isinstance(result, int) else int(exit_codes["OK"])
    except click.exceptions.Exit as done:  # --help, --version, ctx.exit(code)
        return int(done.exit_code)
    except UsageExit as bad:
        return report(bad.failure)
    except SystemExit as done:  # argparse's --help and --version, a command's sys.exit(code)
        if done.code is None or isinstance(done.code, int):
            return int(done.code or 0)
        sys.stderr.write(f"{done.code}\n")
        return int(exit_codes["UNEXPECTED"])
    except (click.Abort, KeyboardInterrupt):
        out.note(CANCELLED)
        return int(exit_codes["INTERRUPTED"])
    except click.ClickException as problem:
        failed_command = _command_of(problem, program)[1]
        if isinstance(problem, click.exceptions.NoArgsIsHelpError) and not wants_json(args):
            problem.show()  # the help text itself is the answer
            return int(exit_codes["USAGE"])
        return report(_click_failure(problem, program, click_failure_exit))
    except Exception as error:
        failure = (convert(error) if convert is not None else None) or failure_of(error)
        if failure is not None:
            return report(failure)
        if debug:
            traceback.print_exc()
        return report(unexpected_failure(error, hint))


@dataclass
class CallbackReporter:
    """A Reporter made of two functions: for a script with an output object of its own."""

    on_failure: Callable[[ConsoleFailure, str], None]
    on_note: Callable[[Bilingual], None]

    def failure(self, failure: ConsoleFailure, command: str) -> None:
        self.on_failure(failure, command)

    def note(self, message: Bilingual) -> None:
        self.on_note(message)
