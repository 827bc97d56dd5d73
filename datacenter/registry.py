"""The enterprise registry: customs code → social credit code and name (table `enterprises`).

An inter-enterprise grant names its agent by customs code only (e-book manual §4 1.1 说明3: the
screen fills in the agent's credit code and name); they come from here. The registry is filled
(a) from the certificate of every card that makes a signed Authorization call
(`remember_enterprise`, one UPSERT that writes only when the enterprise is unknown or its data
changed) and (b) by `eport-datacenter registry import FILE` (a JSON list or a CSV file).
The customs Save/Declare path does not touch it: their hot path stays as it was.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from eport.common.failure import EportFailure
from eport.common.profile import is_valid_credit_code
from eport.common.text import Bilingual
from eport.datacenter.errors import DataCenterError
from eport.datacenter.storage import Connection
from eport.datacenter.trust import Identity
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

CUSTOMS_CODE = re.compile(r"[0-9A-Z]{10}")
_FIELDS = ("customs_code", "credit_code", "name")
_MAX_NAME = 200


class RegistryFileError(EportFailure, ValueError):
    """A registry file that cannot be imported; the message names the line or entry."""

    code = "REGISTRY_FILE"


@dataclass(frozen=True)
class Enterprise:
    customs_code: str
    credit_code: str
    name: str

    def message(self) -> pb.Enterprise:
        return pb.Enterprise(customs_code=self.customs_code, credit_code=self.credit_code,
                             name=self.name)


def remember_enterprise(connection: Connection, identity: Identity, at: int) -> None:
    """Record the card's enterprise; one statement, and a write only when unknown or changed
    (the WHERE of the upsert), so calling it on every request costs an index probe."""
    connection.execute(
        "INSERT INTO enterprises (customs_code, credit_code, name, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (customs_code) DO UPDATE SET "
        "credit_code = excluded.credit_code, name = excluded.name, "
        "updated_at = excluded.updated_at "
        "WHERE enterprises.credit_code != excluded.credit_code "
            "OR enterprises.name != excluded.name",
        (identity.customs_code, identity.credit_code, identity.enterprise_name, at))


def lookup(connection: Connection, customs_code: str) -> Enterprise | None:
    row = connection.execute(
        "SELECT customs_code, credit_code, name FROM enterprises WHERE customs_code = ?",
        (customs_code,)).fetchone()
    return None if row is None else Enterprise(str(row[0]), str(row[1]), str(row[2]))


def require_enterprise(connection: Connection, customs_code: str) -> Enterprise:
    """The registered enterprise, or UNKNOWN_ENTERPRISE saying how it gets registered."""
    found = lookup(connection, customs_code)
    if found is not None:
        return found
    raise DataCenterError(
        pb.UNKNOWN_ENTERPRISE, f"customs code {customs_code} not in the registry",
        message=Bilingual(f"数据中心没有海关编码为 {customs_code} 的企业信息",
                          f"The data centre does not know the enterprise {customs_code}"),
        remedy=Bilingual("请检查海关10位编码; 或请该企业用其IC卡登录一次, 或由管理员导入企业名录 "
                         "(eport-datacenter registry import)",
                         "Check the 10-character customs code; or ask the agent to log in once "
                         "with its card, or import the registry (eport-datacenter registry "
                         "import)"))


def all_enterprises(connection: Connection) -> list[Enterprise]:
    rows = connection.execute(
        "SELECT customs_code, credit_code, name FROM enterprises ORDER BY customs_code")
    return [Enterprise(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def import_enterprises(connection: Connection, entries: list[Enterprise], at: int
                       ) -> int:
    """Insert or replace each entry (the file is the newer word); the number written."""
    written = 0
    for entry in entries:
        cursor = connection.execute(
            "INSERT INTO enterprises (customs_code, credit_code, name, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (customs_code) DO UPDATE SET "
            "credit_code = excluded.credit_code, name = excluded.name, "
            "updated_at = excluded.updated_at "
            "WHERE enterprises.credit_code != excluded.credit_code "
            "OR enterprises.name != excluded.name",
            (entry.customs_code, entry.credit_code, entry.name, at))
        written += cursor.rowcount
    return written


# ---- registry files ------------------------------------------------------------------------

def _entry(values: dict[str, object], where: str) -> Enterprise:
    customs, credit, name = (values.get(key) for key in _FIELDS)
    if not isinstance(customs, str) or not CUSTOMS_CODE.fullmatch(customs):
        raise RegistryFileError(f"{where}: customs_code must be 10 digits or capital letters "
                                "/ 海关编码应为10位数字或大写字母")
    if not isinstance(credit, str) or not is_valid_credit_code(credit):
        raise RegistryFileError(f"{where}: credit_code is not a valid 18-character social "
                                "credit code / 统一社会信用代码不正确")
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise RegistryFileError(f"{where}: name must be 1 to {_MAX_NAME} characters "
                                "/ 企业名称不能为空")
    return Enterprise(customs, credit, name.strip())


def _from_json(text: str) -> list[Enterprise]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise RegistryFileError(f"not JSON: {error}") from None
    if not isinstance(raw, list):
        raise RegistryFileError("a JSON registry is a list of objects with customs_code, "
                                "credit_code and name")
    entries = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - set(_FIELDS):
            raise RegistryFileError(f"entry {index}: an object with exactly customs_code, "
                                    "credit_code and name")
        entries.append(_entry(item, f"entry {index}"))
    return entries


def _from_csv(text: str) -> list[Enterprise]:
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if number == 1 and cells[0].lower() == "customs_code":
            continue  # a header line
        if len(cells) != len(_FIELDS):
            raise RegistryFileError(f"line {number}: three columns customs_code,credit_code,"
                                    "name")
        entries.append(_entry(dict(zip(_FIELDS, cells, strict=True)), f"line {number}"))
    return entries


def read_registry_file(path: Path) -> list[Enterprise]:
    """The entries of a JSON list (first non-blank character "[") or a CSV file
    customs_code,credit_code,name (header line optional), all checked before any is used."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes CSV with a BOM
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryFileError(f"cannot read {path}: {error}") from None
    entries = _from_json(text) if text.lstrip().startswith("[") else _from_csv(text)
    counts = Counter(entry.customs_code for entry in entries)
    duplicates = sorted(code for code, count in counts.items() if count > 1)
    if duplicates:
        raise RegistryFileError(f"customs codes listed twice: {', '.join(duplicates)}")
    return entries
