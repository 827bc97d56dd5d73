"""The `eport` command's structure: clients/cli holds only eport's own commands and main, so
nothing else imports it; `eport --help` lists every command; and `eport sign` does not import
the other subsystems (each costs start-up time in every process a script runs)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest

from eport.clients.cli.lazy_group import short_help_of
from eport.clients.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
EPORT = str(Path(sys.executable).with_name("eport"))
# Package directories of the repository (the project's root is the package `eport`).
SKIPPED_DIRS = {".venv", ".git", "node_modules", "__pycache__", "build", "dist", "tests",
                "benchmarks", "docs", "scripts"}
ALLOWED = ("clients/kit/", "clients/cli/")
CLI_PACKAGE = "eport.clients.cli"
OTHER_SUBSYSTEMS = ("eport.clients.customs", "eport.clients.doctor", "eport.clients.bonded",
                    "eport.clients.auth", "eport.clients.datacenter", "eport.clients.gateway")


def _project_modules() -> list[Path]:
    found = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if not set(relative.parts[:-1]) & SKIPPED_DIRS and relative.parts[0] not in SKIPPED_DIRS:
            found.append(path)
    return found


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_only_the_client_kit_and_the_cli_import_the_cli_package() -> None:
    offenders = []
    for path in _project_modules():
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        for name in _imported_modules(tree):
            if name == CLI_PACKAGE or name.startswith(CLI_PACKAGE + "."):
                offenders.append(f"{relative} imports {name}")
    assert _project_modules(), "no project module found: is ROOT right?"
    assert not offenders, (
        "clients/cli holds only the `eport` commands and main; shared client code belongs in "
        "clients/kit (tables of algorithms in cardlib). Move what these use:\n  "
        + "\n  ".join(sorted(set(offenders))))


def test_eport_help_lists_every_command_with_its_short_help() -> None:
    result = subprocess.run([EPORT, "--help"], capture_output=True, text=True, timeout=60,
                            env={"LANG": "C.UTF-8", "COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:", 1)[1]
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in listed.splitlines()
            if line.strip()}
    assert set(rows) == set(COMMANDS), rows
    assert rows["sign"] == "Sign FILE ('-' for stdin) on the card."


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_tables_short_help_is_the_commands_own(name: str) -> None:
    """The table keeps `eport --help` from importing every command; it must not drift from
    the docstrings users see in `eport NAME --help`."""
    command = COMMANDS[name].load()
    assert command.name == name
    for limit in (45, 74, 200):
        assert short_help_of(COMMANDS[name].short_help, limit) == \
            command.get_short_help_str(limit), f"update COMMANDS[{name!r}] in clients/cli/main.py"


def test_the_group_loads_a_command_only_when_asked() -> None:
    context = click.Context(cli)
    assert sorted(COMMANDS) == cli.list_commands(context)
    assert cli.get_command(context, "no-such-command") is None


def test_eport_sign_imports_no_other_subsystem() -> None:
    probe = (
        "import sys\n"
        "from eport.clients.cli.main import main\n"
        "code = main(['sign', '--help'])\n"
        "assert code == 0, code\n"
        "assert 'eport.clients.cli.commands_sign' in sys.modules\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({OTHER_SUBSYSTEMS!r}))\n"
        "print('LOADED', loaded)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "Sign FILE" in result.stdout
    assert "LOADED []" in result.stdout, (
        "`eport sign` imported other subsystems (start-up time in every process):\n"
        + result.stdout.rsplit("LOADED", 1)[1])
