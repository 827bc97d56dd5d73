"""eport-datacenter's configuration failures, from the real console script: exit code 1
(docs/exit-codes.md), the message and remedy in the language asked for on stderr, and with
--json one document whose error has its code and both languages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eport.datacenter.command import DataCenterExit
from eport.firmware_sim.ca import TestCA

BIN = Path(sys.executable).parent / "eport-datacenter"
CJK = re.compile("[\u4e00-\u9fff]")
_CLEARED = ("EPORT_LANG", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "EPORT_DEBUG")


def _run(args: list[str], home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"),
               XDG_RUNTIME_DIR=str(home / "run"), **extra)
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, encoding="utf-8",
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def _unopenable_database(tmp_path: Path) -> list[str]:
    # A directory that cannot be made even by root: its parent is a regular file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return ["migrate", "--db", str(blocker / "missing" / "x.db")]


def _garbage_listen(tmp_path: Path, anchor: Path) -> list[str]:
    return ["serve", "--db", str(tmp_path / "x.db"), "--trust-anchor", str(anchor),
            "--listen", "no-such-address"]


def _certificate_not_pem(tmp_path: Path, anchor: Path) -> list[str]:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    return ["serve", "--db", str(tmp_path / "x.db"), "--trust-anchor", str(anchor),
            "--listen", "127.0.0.1:0", "--tls-cert", str(junk), "--tls-key", str(junk)]


CASES = {
    "database in a missing directory": ("STORAGE", "cannot open the database"),
    "garbage --listen": ("SERVER_CONFIG", "no-such-address"),
    "--tls-cert not PEM": ("SERVER_CONFIG", "holds no PEM certificate"),
}


def _arguments(case: str, tmp_path: Path, anchor: Path) -> list[str]:
    if case == "database in a missing directory":
        return _unopenable_database(tmp_path)
    if case == "garbage --listen":
        return _garbage_listen(tmp_path, anchor)
    return _certificate_not_pem(tmp_path, anchor)


@pytest.mark.parametrize("case", list(CASES))
def test_a_configuration_failure_is_said_in_both_languages(case: str, tmp_path: Path,
                                                          test_ca: TestCA) -> None:
    code, english_fact = CASES[case]
    args = _arguments(case, tmp_path, test_ca.trust_bundle)
    failed = int(DataCenterExit.FAILED)  # docs/exit-codes.md: "cannot serve or do the command"

    english = _run(args, tmp_path, EPORT_LANG="en")
    assert english.returncode == failed, english
    assert "Traceback" not in english.stderr and not CJK.search(english.stderr), english.stderr
    assert re.search(rf"^Error \[{code}\]: .*{re.escape(english_fact)}", english.stderr,
                     re.MULTILINE), english.stderr
    assert re.search(r"^Remedy: \S", english.stderr, re.MULTILINE), english.stderr

    chinese = _run(args, tmp_path, EPORT_LANG="zh")
    assert chinese.returncode == failed, chinese
    assert re.search(rf"^错误 \[{code}\]: .*[\u4e00-\u9fff]", chinese.stderr, re.MULTILINE)
    assert re.search(r"^解决办法: .*[\u4e00-\u9fff]", chinese.stderr, re.MULTILINE), chinese
    assert "Remedy" not in chinese.stderr, chinese.stderr

    document = _run([*args, "--json"], tmp_path)
    assert document.returncode == failed and document.stderr == "", document
    assert document.stdout.count("\n") == 1, document.stdout
    error = json.loads(document.stdout)["error"]
    assert (error["code"], error["exit_code"]) == (code, failed), error
    assert english_fact in error["message"]["en"], error
    for text in (error["message"], error["remedy"]):
        assert CJK.search(text["zh"]) and text["en"] and not CJK.search(text["en"]), error
