"""Tests wait for events, not for time: tests/support/waiting.py's wait_until is the one polling
loop, and every other sleep in tests/ is part of what a test exercises and says so."""
from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
WAITING = TESTS / "support" / "waiting.py"
THIS = Path(__file__).resolve()  # its docstrings and probe speak of sleeps
MARK = "not a wait"
SLEEP_CALL = re.compile(r"(?<![\w.])(?:time\.|asyncio\.)?sleep\(")


def modules_of_the_tests() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def marked(lines: list[str], number: int) -> bool:
    """The "# not a wait: <why>" comment on the line or the one before."""
    return MARK in lines[number - 1] or (number > 1 and MARK in lines[number - 2])


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def timing_calls(tree: ast.AST, names: tuple[str, ...]) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and _dotted(node.func).endswith(names)]


def sleeps_without_a_reason(path: Path) -> list[str]:
    """Lines that call sleep() with no reason given; read as text, so that the scripts tests
    run as child processes (kept in strings) count too."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [f"{path.relative_to(TESTS)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1)
            if SLEEP_CALL.search(line) and not line.lstrip().startswith(("def ", "async def "))
            and not marked(lines, n)]


def deadline_loops(path: Path) -> list[str]:
    """`while` loops that look at the clock: a wait-until of their own, unless marked."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for loop in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.While)):
        for call in timing_calls(loop, ("time.monotonic", "time.time", "time.perf_counter")):
            if not (marked(lines, call.lineno) or marked(lines, loop.lineno)):
                found.append(f"{path.relative_to(TESTS)}:{loop.lineno}: "
                             f"{lines[loop.lineno - 1].strip()}")
                break
    return found


def test_every_sleep_in_the_tests_says_why_it_is_not_a_wait() -> None:
    found = [entry for path in modules_of_the_tests() if path not in (WAITING, THIS)
             for entry in sleeps_without_a_reason(path)]
    assert found == [], ("wait for the event with tests.support.waiting.wait_until, or say "
                         f"'# {MARK}: <why>' on the line:\n" + "\n".join(found))


def test_only_waiting_py_loops_on_the_clock() -> None:
    found = [entry for path in modules_of_the_tests() if path != WAITING
             for entry in deadline_loops(path)]
    assert found == [], ("use tests.support.waiting.wait_until instead of a loop of your own:\n"
                         + "\n".join(found))


def test_the_checks_see_an_unmarked_sleep_and_a_deadline_loop(tmp_path: Path) -> None:
    probe = TESTS / "unit" / f"_probe_{tmp_path.name}.py"
    probe.write_text("import time\n\n\ndef wait(ready):\n    deadline = time.monotonic() + 5\n"
                     "    while not ready() and time.monotonic() < deadline:\n"
                     "        time.sleep(0.1)\n", encoding="utf-8")  # not a wait: probe text
    try:
        assert len(sleeps_without_a_reason(probe)) == 1
        assert len(deadline_loops(probe)) == 1
    finally:
        probe.unlink()
