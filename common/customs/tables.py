"""The customs code tables (代码表) the document refers to, shipped as data in tables/*.json.

Each file is ``{"name", "title_zh", "source", "subset", "example": {"code", "en"}, "codes":
{code: Chinese label}}``. Codes are case-sensitive (the 监管证件 table has both "A" and "a"
style codes). Where "subset" is true the file holds a realistic part of the published table,
not all of it: a real code missing here is refused, so extend the file rather than the code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

TABLE_NAMES: tuple[str, ...] = (
    "customs", "transport_mode", "trade_mode", "levy_kind", "country", "currency", "unit",
    "package_type", "transaction_mode", "duty_mode", "entry_type", "document_code",
    "container_size")


@dataclass(frozen=True)
class TableInfo:
    name: str
    title_zh: str
    source: str
    subset: bool
    example_code: str
    example_en: str
    codes: MappingProxyType[str, str]

    @property
    def example_zh(self) -> str:
        return f"{self.example_code} {self.codes[self.example_code]}"


@lru_cache(maxsize=32)
def table_info(name: str) -> TableInfo:
    """The whole table file; the name is checked first so it can never become a path."""
    if name not in TABLE_NAMES:
        raise KeyError(f"no customs code table {name!r}; known: {', '.join(TABLE_NAMES)}")
    text = resources.files("eport.common.customs").joinpath("tables", f"{name}.json").read_text(
        encoding="utf-8")
    raw: Any = json.loads(text)
    codes = raw["codes"]
    if not isinstance(codes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in codes.items()):
        raise ValueError(f"tables/{name}.json: codes must map strings to strings")
    example = raw["example"]
    return TableInfo(name=str(raw["name"]), title_zh=str(raw["title_zh"]),
                     source=str(raw["source"]), subset=bool(raw["subset"]),
                     example_code=str(example["code"]), example_en=str(example["en"]),
                     codes=MappingProxyType(dict(codes)))


def table(name: str) -> dict[str, str]:
    """code -> Chinese label. A fresh dict each call, so a caller cannot alter the cache."""
    return dict(table_info(name).codes)


def label(name: str, code: str) -> str:
    """The Chinese label of `code`, "" when the table does not have it."""
    return table_info(name).codes.get(code, "")


def has_code(name: str, code: str) -> bool:
    return code in table_info(name).codes


@lru_cache(maxsize=1)
def _numeric_countries() -> MappingProxyType[str, str]:
    text = resources.files("eport.common.customs").joinpath("tables", "country.json").read_text(
        encoding="utf-8")
    numeric = json.loads(text).get("numeric", {})
    codes = table_info("country").codes
    if not isinstance(numeric, dict) or not all(
            isinstance(k, str) and k.isdigit() and v in codes for k, v in numeric.items()):
        raise ValueError("tables/country.json: numeric must map digit strings to country codes")
    return MappingProxyType(dict(numeric))


def numeric_country(code: str) -> str:
    """The ISO alpha-3 code of a numeric customs country code (142 -> CHN, 110 -> HKG, 502 ->
    USA), "" when the table does not have it. Bonded manual §2.2.1.2 投资国别 is "4 位,
    按照国别代码表"."""
    return _numeric_countries().get(code, "")
