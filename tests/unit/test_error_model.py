"""One error model (one taxonomy, one root): every exception the project defines derives from
EportFailure; Bilingual is the one type that holds a Chinese and an English text; the remedy
"take the card to the E-port card centre" has one wording, kept in eport.common.messages."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import eport
from eport.common.failure import EportFailure
from eport.common.messages import CARD_CENTRE

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cardlib", "clients", "common", "daemon", "datacenter", "firmware_sim")


def product_modules() -> Iterator[str]:
    for info in pkgutil.walk_packages(eport.__path__, "eport."):
        # Generated code, and the `python -m` entry points (importing one runs the program).
        if not info.name.startswith("eport.protos") and not info.name.endswith(".__main__"):
            yield info.name


def product_files() -> Iterator[Path]:
    for folder in PRODUCT:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_every_exception_class_derives_from_eport_failure() -> None:
    outside: list[str] = []
    seen = 0
    for name in product_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # SystemExit and its kind are requests to exit, not failures.
            if cls.__module__ != name or not issubclass(cls, Exception):
                continue
            seen += 1
            if not issubclass(cls, EportFailure):
                outside.append(f"{name}.{cls.__qualname__}")
    assert seen > 40  # the walk found the project's exceptions, not nothing
    assert outside == []


def _assigned_names(node: ast.ClassDef) -> set[str]:
    """Attribute names a class declares in its body or assigns to self in its methods."""
    names: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            for target in item.targets:
                for element in ast.walk(target):
                    if isinstance(element, ast.Name) and item in node.body:
                        names.add(element.id)
                    elif (isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name)
                          and element.value.id == "self"):
                        names.add(element.attr)
    return names


def test_only_bilingual_holds_a_chinese_and_an_english_text() -> None:
    pairs: list[str] = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name != "Bilingual":
                names = _assigned_names(node)
                if {"zh", "en"} <= names:
                    pairs.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert pairs == []


def test_exceptions_hold_no_text_pairs_of_their_own() -> None:
    """An exception's texts are Bilingual values (message, remedy), not *_zh/*_en attributes."""
    found: list[str] = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(base) for base in node.bases}
            if not any(b.endswith(("Error", "Exception", "Failure", "Unavailable"))
                       for b in bases | {node.name}):
                continue
            names = _assigned_names(node)
            found += [f"{path.relative_to(ROOT)} {node.name}.{n}" for n in sorted(names)
                      if n.endswith(("_zh", "_en"))]
    assert found == []


def test_the_card_centre_remedy_has_one_wording() -> None:
    wording_zh = "电子口岸制卡中心办理"
    wording_en = "take the card to the E-port card centre"
    assert wording_zh in CARD_CENTRE.zh and wording_en in CARD_CENTRE.en
    holders = sorted(str(path.relative_to(ROOT)) for path in product_files()
                     if wording_zh in (text := path.read_text(encoding="utf-8"))
                     or wording_en in text)
    assert holders == ["common/messages.py"]
