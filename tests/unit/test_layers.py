"""Which package may import what, read from the source with ast (nothing is imported):
pyscard only in the PC/SC backend, the PKCS#11 library only in the PKCS#11 backend, and
neither the data centre, the simulator nor the card library imports the daemon."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The shipped packages. Tests and benchmarks may use pyscard or PyKCS11 directly: as
# independent checkers of what eportd does, and as the in-process baseline of a benchmark.
PRODUCT = ("cardlib", "clients", "common", "daemon", "datacenter", "firmware_sim", "protos")


def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from eport import daemon` imports the daemon as well.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def importers_of(prefixes: tuple[str, ...], folders: tuple[str, ...]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in python_files(*folders):
        hits = {m for m in imported_modules(path)
                if any(m == p or m.startswith(p + ".") for p in prefixes)}
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def outside(found: dict[str, set[str]], allowed: str) -> dict[str, set[str]]:
    return {path: hits for path, hits in found.items() if not path.startswith(allowed)}


def test_only_the_pcsc_backend_imports_pyscard() -> None:
    found = importers_of(("smartcard",), PRODUCT)
    assert "cardlib/pcsc/transport.py" in found  # the check sees the one that does
    assert outside(found, "cardlib/pcsc/") == {}


def test_only_the_pkcs11_backend_imports_a_pkcs11_library() -> None:
    found = importers_of(("PyKCS11", "pkcs11"), PRODUCT)
    assert outside(found, "cardlib/pkcs11/") == {}


@pytest.mark.parametrize("folder", ["datacenter", "firmware_sim", "cardlib"])
def test_the_data_centre_the_simulator_and_the_card_library_import_no_daemon_module(
        folder: str) -> None:
    assert importers_of(("eport.daemon",), (folder,)) == {}


def test_the_import_check_sees_a_daemon_import() -> None:
    # The daemon itself imports eport.daemon modules: the scan must find them.
    assert importers_of(("eport.daemon",), ("daemon",))
