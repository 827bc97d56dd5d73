"""A bonded verification document on its way to the data centre: read (JSON or CSV, with
progress), completed from the registry and the e-book records, checked as the data centre
will check it (seed 000 §2.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from eport.clients.cli.context import state
from eport.clients.cli.errors import CliError, file_error
from eport.clients.cli.language import Bilingual
from eport.clients.datacenter.context import call_signed
from eport.clients.datacenter.errors import validation_failed
from eport.clients.datacenter.signer import CardSigner
from eport.common.bonded.document import (
    EBookItem,
    declare_problems,
    fill_from_ebook,
    save_problems,
    uses_ebook,
)
from eport.common.bonded.importing import load_bonded_file
from eport.common.customs.document import DocumentError
from eport.protos.v1 import datacenter_pb2 as dc


def read_bonded(path: str) -> dict[str, Any]:
    """The document in `path`, with a progress bar for long CSV files; every problem of the
    file at once, with its line, or nothing."""
    output = state().output
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=output.err, disable=output.json_mode, transient=True) as progress:
        task = progress.add_task(output.text(Bilingual("读取", "Reading")), total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            document: dict[str, Any] = load_bonded_file(Path(path), progress=advance)
        except DocumentError as error:
            raise validation_failed(error.problems, Bilingual(f"文件 {path} ", path)) from None
        except OSError as problem:
            raise file_error(path, problem) from None
    return document


class EBookRecords:
    """GetEBookItem answers for one command, each record item asked once."""

    def __init__(self, card: CardSigner) -> None:
        self._card = card
        self._known: dict[tuple[str, str], EBookItem | None] = {}

    def __call__(self, ebook_number: str, record_item_number: str) -> EBookItem | None:
        key = (ebook_number, record_item_number)
        if key not in self._known:
            try:
                item: dc.EBookItem = call_signed(
                    self._card, "GetEBookItem", {"ebook_number": ebook_number,
                                                 "record_item_number": record_item_number},
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
    (seed 000 §2.2.1.2) and, for e-book management modes, each item's code, name and unit
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
    records = EBookRecords(card)
    return fill_from_ebook(document, records), records


def check(document: dict[str, Any], *, declaring: bool, where: str,
          records: EBookRecords | None) -> None:
    """Seed 000 §2.4: at 暂存 the first bad and the first empty field; at 申报 every empty
    required field at once."""
    problems = (declare_problems(document, lookup=records) if declaring
                else save_problems(document, lookup=records))
    if problems:
        raise validation_failed(problems, Bilingual(f"{where} ", where))


def stored(record: dc.BondedRecord) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(record.document_json) if record.document_json \
        else {}
    return document
