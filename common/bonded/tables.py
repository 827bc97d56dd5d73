"""The code tables of the bonded verification document that the customs tables lack, shipped as
data in tables/*.json: 管理模式 (management_mode) and 企业性质 (enterprise_nature).

Each file is ``{"name", "title_zh", "source", "subset", "own_coding", "example": {"code",
"en"}, "codes": {code: Chinese label}, "english": {code: English label}}``; management_mode.json
also says which modes take item data from an e-book record ("uses_ebook") and which delegable
subsystem of e-book manual §4 each mode belongs to ("subsystem"). The manual gives no codes for
either table: "own_coding" true says the codes are this project's. The country (投资国别) and unit
(计量单位) tables are the customs ones, `eport.common.customs.tables`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

TABLE_NAMES: tuple[str, ...] = ("management_mode", "enterprise_nature")
SUBSYSTEMS: tuple[str, ...] = ("ebook", "handbook")


@dataclass(frozen=True)
class BondedTable:
    name: str
    title_zh: str
    source: str
    subset: bool
    own_coding: bool
    example_code: str
    example_en: str
    codes: MappingProxyType[str, str]
    english: MappingProxyType[str, str]
    uses_ebook: frozenset[str]
    subsystem: MappingProxyType[str, str]

    @property
    def example_zh(self) -> str:
        return f"{self.example_code} {self.codes[self.example_code]}"


def _strings(raw: Any, name: str, what: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError(f"tables/{name}.json: {what} must map strings to strings")
    return dict(raw)


@lru_cache(maxsize=8)
def table_info(name: str) -> BondedTable:
    """The whole table file; the name is checked first so it can never become a path."""
    if name not in TABLE_NAMES:
        raise KeyError(f"no bonded code table {name!r}; known: {', '.join(TABLE_NAMES)}")
    text = resources.files("eport.common.bonded").joinpath("tables", f"{name}.json").read_text(
        encoding="utf-8")
    raw: Any = json.loads(text)
    codes = _strings(raw["codes"], name, "codes")
    subsystem = _strings(raw.get("subsystem", {}), name, "subsystem")
    if any(s not in SUBSYSTEMS for s in subsystem.values()) or set(subsystem) - set(codes):
        raise ValueError(f"tables/{name}.json: subsystem must map codes to {SUBSYSTEMS}")
    uses_ebook = raw.get("uses_ebook", [])
    if not isinstance(uses_ebook, list) or not set(uses_ebook) <= set(codes):
        raise ValueError(f"tables/{name}.json: uses_ebook must list codes of the table")
    example = raw["example"]
    return BondedTable(
        name=str(raw["name"]), title_zh=str(raw["title_zh"]), source=str(raw["source"]),
        subset=bool(raw["subset"]), own_coding=bool(raw.get("own_coding", False)),
        example_code=str(example["code"]), example_en=str(example["en"]),
        codes=MappingProxyType(codes),
        english=MappingProxyType(_strings(raw.get("english", {}), name, "english")),
        uses_ebook=frozenset(str(c) for c in uses_ebook),
        subsystem=MappingProxyType(subsystem))


def table(name: str) -> dict[str, str]:
    """code -> Chinese label. A fresh dict each call, so a caller cannot alter the cache."""
    return dict(table_info(name).codes)


def label(name: str, code: str) -> str:
    """The Chinese label of `code`, "" when the table does not have it."""
    return table_info(name).codes.get(code, "")


def has_code(name: str, code: str) -> bool:
    return code in table_info(name).codes
