"""Every console script answers a bad argument through the one funnel (eport.common.funnel):
exit code 2, one JSON document with --json (both languages, a remedy), and without --json a
message and remedy in the language asked for, never a traceback. Then the funnel itself:
failures, Ctrl-C and the unexpected, and each script's documented exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path

import click
import pytest

from eport.clients.cli.main import main as eport_main
from eport.clients.daemon_demo import DemoExit
from eport.clients.gateway.exit_codes import GatewayExit
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.views import SCHEMA_VERSION as EPORT_SCHEMA_VERSION
from eport.common.failure import EportFailure
from eport.common.funnel import (
    BASE_EXIT_CODES,
    SCHEMA_VERSION,
    ConsoleFailure,
    FunnelArgumentParser,
    run_console,
)
from eport.common.text import Bilingual
from eport.daemon.main import DaemonExit
from eport.datacenter.command import DataCenterExit
from eport.firmware_sim.cli import SimExit

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CJK = re.compile("[\u4e00-\u9fff]")

# A bad argument for every console script, and for the subcommands that parse their own.
BAD_ARGUMENTS: list[tuple[str, ...]] = [
    ("eport", "--bogus"),
    ("eport", "card", "info", "--bogus"),
    ("eportd", "--bogus"),
    ("eportd", "--idle-timeout", "-3"),
    ("eport-sim", "--bogus"),
    ("eport-sim", "provision", "--bogus"),
    ("eport-gateway", "--bogus"),
    ("eport-gateway", "serve", "--bogus"),
    ("eport-gateway", "ceb-sign", "--bogus"),
    ("eport-gateway", "ceb-verify", "--bogus"),
    ("eport-gateway", "pay179-sign", "--bogus"),
    ("eport-gateway", "tls", "status", "--bogus"),
    ("eport-datacenter", "--bogus"),
    ("eport-datacenter", "revoke", "--bogus"),
    ("eport-demo", "--bogus"),
]


def _id(words: tuple[str, ...]) -> str:
    return " ".join(words)


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No locale or language of the developer's, and homes that nothing real is in."""
    home = tmp_path_factory.mktemp("home")
    cleared = ("EPORT_LANG", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "EPORT_DEBUG",
               "EPORTD_SOCKET")
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"),
               XDG_RUNTIME_DIR=str(home / "run"), XDG_CONFIG_HOME=str(home / "config"))
    return env


def run(words: tuple[str, ...], env: dict[str, str], **extra: str
        ) -> subprocess.CompletedProcess[str]:
    script, *args = words
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True,
                          encoding="utf-8", timeout=60, env={**env, **extra},
                          stdin=subprocess.DEVNULL, cwd=REPO)


def test_every_console_script_is_covered() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {words[0] for words in BAD_ARGUMENTS}


@pytest.mark.parametrize("words", BAD_ARGUMENTS, ids=_id)
def test_a_bad_argument_answers_in_json(words: tuple[str, ...], environment: dict[str, str]
                                        ) -> None:
    done = run((*words, "--json"), environment)
    assert done.returncode == 2, done
    assert done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    document = json.loads(done.stdout)
    assert document["schema_version"] == SCHEMA_VERSION and document["ok"] is False
    error = document["error"]
    assert (error["code"], error["exit_code"]) == ("USAGE", 2), error
    for text in (error["message"], error["remedy"]):
        assert text["zh"] and text["en"], error
        assert CJK.search(text["zh"]) and not CJK.search(text["en"]), error
    bad = words[-1] if words[-1].startswith("--bogus") else words[-2]
    assert bad in error["message"]["en"], error
    assert "--help" in error["remedy"]["en"] and "--help" in error["remedy"]["zh"]


@pytest.mark.parametrize("words", BAD_ARGUMENTS, ids=_id)
def test_a_bad_argument_is_said_in_the_language_asked_for(
        words: tuple[str, ...], environment: dict[str, str]) -> None:
    chinese = run(words, environment, EPORT_LANG="zh")
    english = run(words, environment, EPORT_LANG="en")
    for done in (chinese, english):
        assert done.returncode == 2, done
        assert done.stdout == "" and "Traceback" not in done.stderr, done
    assert re.search(r"^错误 \[USAGE\]: 参数错误: .*--", chinese.stderr, re.MULTILINE), chinese
    assert re.search(r"^解决办法: 运行 .* --help 查看用法$", chinese.stderr, re.MULTILINE)
    assert "Error [USAGE]" not in chinese.stderr and "Remedy" not in chinese.stderr
    assert re.search(r"^Error \[USAGE\]: .*--", english.stderr, re.MULTILINE), english
    assert re.search(r"^Remedy: see `.* --help`$", english.stderr, re.MULTILINE), english
    assert not CJK.search(english.stderr), english.stderr


def test_servers_say_both_languages_when_none_is_asked_for(environment: dict[str, str]
                                                           ) -> None:
    # Their stderr goes to the journal, read by whoever looks: both, unless EPORT_LANG says.
    for script in ("eportd", "eport-gateway", "eport-demo"):
        done = run((script, "--bogus"), environment)
        assert "错误 [USAGE]" in done.stderr and "Error [USAGE]" in done.stderr, done
    # The people's tools follow the locale, as eport does.
    for script in ("eport", "eport-sim", "eport-datacenter"):
        chinese = run((script, "--bogus"), environment, LANG="zh_CN.UTF-8")
        assert "错误 [USAGE]" in chinese.stderr and "Error" not in chinese.stderr, chinese


def test_a_command_failure_keeps_its_exit_code_and_texts(environment: dict[str, str],
                                                         tmp_path: Path) -> None:
    missing = tmp_path / "missing.card"
    done = run(("eport-sim", "show", str(missing), "--json"), environment)
    assert done.returncode == 1, done
    error = json.loads(done.stdout)["error"]
    assert error["exit_code"] == 1 and str(missing) in error["message"]["en"]
    human = run(("eport-sim", "show", str(missing)), environment, EPORT_LANG="en")
    assert human.returncode == 1 and str(missing) in human.stderr
    assert re.search(r"^Remedy: \S", human.stderr, re.MULTILINE), human.stderr


def test_eport_and_the_funnel_share_one_envelope() -> None:
    assert SCHEMA_VERSION == EPORT_SCHEMA_VERSION


# ---- the funnel in-process ----

class _Exit(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    REFUSED = 7
    INTERRUPTED = 130


def _funnel(body: Callable[[list[str]], int | None], *argv: str) -> int:
    return run_console("demo-tool", body, list(argv), exit_codes=_Exit)


def test_each_script_documents_the_shared_exit_codes() -> None:
    for codes in (ExitCode, DaemonExit, SimExit, GatewayExit, DataCenterExit, DemoExit):
        for name, value in BASE_EXIT_CODES.items():
            assert codes[name] == value, (codes, name)
    documented = (REPO / "docs" / "exit-codes.md").read_text()
    for script in ("eport", "eportd", "eport-sim", "eport-gateway", "eport-datacenter",
                   "eport-demo"):
        assert f"## `{script}`" in documented, script


def test_a_failure_keeps_its_code_texts_and_exit_code(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    def refuse(_args: list[str]) -> int:
        raise ConsoleFailure("REFUSED", Bilingual("拒绝", "refused"),
                             Bilingual("换一个", "try another"), _Exit.REFUSED,
                             {"reader": "R"})

    assert _funnel(refuse, "--json") == 7
    document = json.loads(capsys.readouterr().out)
    assert document["error"] == {"code": "REFUSED", "exit_code": 7,
                                 "message": {"zh": "拒绝", "en": "refused"},
                                 "remedy": {"zh": "换一个", "en": "try another"}, "reader": "R"}


def test_an_eport_failure_without_exit_code_is_a_failure_of_its_own(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    class CardGone(EportFailure):
        def __init__(self) -> None:
            super().__init__("gone")
            self.code = "CARD_GONE"
            self.message = Bilingual("卡已拔出", "the card was removed")
            self.remedy = Bilingual("请插入卡", "insert the card")

    def lose(_args: list[str]) -> int:
        raise CardGone()

    monkeypatch.setenv("EPORT_LANG", "zh")
    assert _funnel(lose) == 1
    err = capsys.readouterr().err
    assert err == "错误 [CARD_GONE]: 卡已拔出\n解决办法: 请插入卡\n"


def test_a_wrapped_failure_keeps_its_bilingual_texts(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    class NoCa(EportFailure):
        code = "NO_CA"
        message = Bilingual("没有测试CA", "no test CA")
        remedy = Bilingual("运行 ca init", "run ca init")

    def wrapped(_args: list[str]) -> int:
        try:
            raise NoCa("no test CA")
        except NoCa as error:
            raise click.ClickException(str(error)) from None

    assert _funnel(wrapped, "--json") == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "NO_CA" and error["message"]["zh"] == "没有测试CA"


def test_ctrl_c_is_130_and_says_cancelled(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_args: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setenv("EPORT_LANG", "en")
    assert _funnel(interrupted) == 130
    assert capsys.readouterr().err == "Cancelled\n"


def test_the_unexpected_is_1_and_shows_no_traceback_unless_asked(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_args: list[str]) -> int:
        raise ValueError("secret 12345678 in the text")

    monkeypatch.delenv("EPORT_DEBUG", raising=False)
    assert _funnel(broken, "--json") == 1
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["code"] == "UNEXPECTED" and "ValueError" in error["message"]["en"]
    assert "12345678" not in captured.out + captured.err and "Traceback" not in captured.err
    assert "EPORT_DEBUG=1" in error["remedy"]["en"]
    monkeypatch.setenv("EPORT_DEBUG", "1")
    assert _funnel(broken) == 1
    assert "Traceback" in capsys.readouterr().err


def test_argparse_usage_errors_reach_the_funnel(capsys: pytest.CaptureFixture[str]) -> None:
    def parse(args: list[str]) -> int:
        parser = FunnelArgumentParser(prog="demo-tool")
        parser.add_argument("--count", type=int)
        parser.parse_args(args)
        return 0

    assert _funnel(parse, "--count", "many", "--json") == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "USAGE" and "--count" in error["message"]["en"]
    assert _funnel(parse, "--help") == 0
    assert "usage: demo-tool" in capsys.readouterr().out


def test_eport_main_keeps_its_exit_codes_for_help_and_version(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert eport_main(["--version"]) == 0
    assert "eport" in capsys.readouterr().out
    assert eport_main(["--help"]) == 0
    assert eport_main(["card", "info", "--bogus"]) == int(ExitCode.USAGE)
