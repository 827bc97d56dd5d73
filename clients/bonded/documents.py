"""A bonded verification document on its way to the data centre: read (JSON or CSV, with
progress), completed from the registry and the e-book records, checked as the data centre
will check it (bonded manual §2.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from eport.clients.datacenter.context import call_signed
from eport.clients.datacenter.errors import validation_failed
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.context import state
from eport.clients.kit.errors import CliError, file_error
from eport.clients.kit.exit_codes import ExitCode
from eport.common.bonded.document import (
    EBookItem,
    declare_problems,
    fill_from_ebook,
    save_problems,
    uses_ebook,
)
from eport.common.bonded.importing import load_bonded_file
from eport.common.customs.document import DocumentError
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

RULES = "docs/bonded-document.md"


def read_bonded(path: str, *, importing: bool = False) -> dict[str, Any]:
    """The document in `path`. A CSV file, and any file being imported, is read as an import:
    every problem of the file at once, with its line, or nothing (with a progress bar for long
    files). A JSON document being saved or declared is taken as it is, so that 暂存 and 申报
    answer with the checks of bonded manual §2.4 instead."""
    if not importing and not path.lower().endswith(".csv"):
        try:
            raw = json.loads(Path(path).read_bytes().decode("utf-8-sig"))
        except OSError as problem:
            raise file_error(path, problem) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise not_a_document(path, str(error)) from None
        if not isinstance(raw, dict):
            raise not_a_document(path, "the top level is not an object")
        return raw
    output = state().output
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=output.err, disable=output.json_mode, transient=True) as progress:
        task = progress.add_task(output.text(Bilingual("读取", "Reading")), total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            document: dict[str, Any] = load_bonded_file(Path(path), progress=advance)
        except DocumentError as error:
            raise validation_failed(error.problems, Bilingual(f"文件 {path} ", path),
                                    rules=RULES) from None
        except OSError as problem:
            raise file_error(path, problem) from None
    return document


def not_a_document(path: str, why: str) -> CliError:
    return CliError(
        "VALIDATION_FAILED",
        Bilingual(f"{path} 不是 JSON 格式的保税核查数据: {why}",
                  f"{path} is not a bonded verification document in JSON: {why}"),
        Bilingual("用 eport bonded new 生成模板, 或用 eport bonded import 导入 CSV",
                  "start from `eport bonded new`, or import a CSV with `eport bonded import`"),
        ExitCode.VALIDATION_FAILED)


class EBookRecords:
    """GetEBookItem answers for one command, each record item asked once. The management
    mode goes with each request: an agent calls up 电子账册 items under its 加工贸易账册 grant
    and 纸质手册电子化 items under its 加工贸易手册 grant (bonded manual §2.2.1.3,
    e-book manual §4)."""

    def __init__(self, card: CardSigner, management_mode: str) -> None:
        self._card = card
        self._mode = management_mode
        self._known: dict[tuple[str, str], EBookItem | None] = {}

    def __call__(self, ebook_number: str, record_item_number: str) -> EBookItem | None:
        key = (ebook_number, record_item_number)
        if key not in self._known:
            try:
                item: dc.EBookItem = call_signed(
                    self._card, "GetEBookItem", {"ebook_number": ebook_number,
                                                 "record_item_number": record_item_number,
                                                 "management_mode": self._mode},
                    service="bonded")
            except CliError as error:
                if error.code != "DOCUMENT_NOT_FOUND":
                    raise
                self._known[key] = None
            else:
                self._known[key] = EBookItem(item.ebook_number, item.record_item_number,
                                             item.hs_code, item.name, item.specification,
                                             item.unit)
        return self._known[key]


def complete(card: CardSigner, document: dict[str, Any]) -> tuple[dict[str, Any],
                                                                   EBookRecords | None]:
    """What the E-port client fills in: the verified enterprise's name from the registry
    (bonded manual §2.2.1.2) and, for e-book management modes, each item's code, name and unit
    from the e-book record (§2.2.1.3)."""
    header = document.get("header")
    if isinstance(header, dict) and header.get("enterprise_code") and \
            not header.get("enterprise_name"):
        try:
            enterprise: dc.Enterprise = call_signed(
                card, "LookupEnterprise", {"customs_code": header["enterprise_code"]},
                service="authorization")
            header["enterprise_name"] = enterprise.name
        except CliError as error:
            if error.code != "UNKNOWN_ENTERPRISE":
                raise
    mode = header.get("management_mode", "") if isinstance(header, dict) else ""
    if not (isinstance(mode, str) and uses_ebook(mode)):
        return document, None
    records = EBookRecords(card, mode)
    # Only what was left empty is filled in: a code, name or unit typed differently from the
    # record stays, so that the check names it instead of the client overwriting it.
    filled = fill_from_ebook(document, records)
    for typed, taken in zip(document.get("items") or [], filled.get("items") or [],
                            strict=False):
        if isinstance(typed, dict) and isinstance(taken, dict):
            for key in ("hs_code", "name", "unit", "specification"):
                if typed.get(key):
                    taken[key] = typed[key]
    return filled, records


def check(document: dict[str, Any], *, declaring: bool, where: str,
          records: EBookRecords | None) -> None:
    """Bonded manual §2.4: at 暂存 the first bad and the first empty field; at 申报 every empty
    required field at once."""
    problems = (declare_problems(document, lookup=records) if declaring
                else save_problems(document, lookup=records))
    if problems:
        raise validation_failed(problems, Bilingual(f"{where} ", where), rules=RULES)


def stored(record: dc.BondedRecord) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(record.document_json) if record.document_json \
        else {}
    return document
