"""`eport customs save | upload | declare | batch-declare | delete`: the documents' way to the
data centre, each request signed on the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from eport.clients.customs.batch import run_batch
from eport.clients.customs.context import (
    check_locally,
    is_file_argument,
    read_document,
    warn_about_clock,
)
from eport.clients.customs.saving import declare, declared_already, save, wait_for_review
from eport.clients.customs.views import best_number, record_view, show_record
from eport.clients.datacenter.context import call_signed, signer
from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.output import Output
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

WAIT_HELP = "Wait up to SECONDS for the review (审结 or 退单) and show its result."


def _result(record: dc.DocumentRecord, said: Bilingual, extra: dict[str, Any] | None = None
            ) -> None:
    def human(out: Output) -> None:
        out.line(said, style="green")
        show_record(out, record)

    state().output.result(command_name(), {**record_view(record), **(extra or {})}, human)


@click.command("save", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("document_file", metavar="FILE")
@click.option("--number", metavar="Z_NUMBER",
              help="Modify this saved document (its temporary or unified number).")
@card_options
@secret_options
@json_option
def save_command(document_file: str, number: str | None, reader: str | None,
                 card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """暂存: save FILE (JSON or CSV) in the data centre; answers with its Z number.

    Operator and declarant cards may save. Saving the same file again returns the same
    number (and sends the changes, if any)."""
    document = read_document(document_file)
    check_locally(document, declaring=False, where=document_file)
    clock = warn_about_clock()
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    record = save(card, document, number)
    if record.already_saved and record.status not in (dc.SAVED, dc.STORED, dc.REJECTED):
        raise declared_already(record)
    _result(record, Bilingual(f"已暂存, 暂存编号 {record.temporary_number}",
                              f"Saved as {record.temporary_number}"),
            {"clock_warning": list(clock) if clock else None})


@click.command("upload", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@card_options
@secret_options
@json_option
def upload_command(number: str, reader: str | None, card_id: str | None, pin_stdin: bool,
                   allow_last_attempt: bool) -> None:
    """上载: a saved document enters the data centre and gets its unified number.

    Declaring uploads too (QP FAQ §十一(三)): usually `declare` is all you need."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    record: dc.DocumentRecord = call_signed(card, "Upload", {"number": number})
    _result(record, Bilingual(f"已上载, 统一编号 {record.unified_number}",
                              f"Uploaded: unified number {record.unified_number}"))


@click.command("declare", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("target", metavar="NUMBER|FILE")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=None,
              metavar="SECONDS", help=WAIT_HELP)
@card_options
@secret_options
@json_option
def declare_command(target: str, wait_seconds: float | None, reader: str | None,
                    card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """申报: declare a saved document (by number), or save and declare FILE.

    Only the declarant (报关员) IC card may declare: with an operator card in the reader the
    command says so and sends nothing."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    card.require_declarant()
    clock = None
    if is_file_argument(target):
        document = read_document(target)
        check_locally(document, declaring=True, where=target)
        clock = warn_about_clock()
        saved = save(card, document)
        target = saved.unified_number or saved.temporary_number
    record = declare(card, target)
    if wait_seconds is not None and record.status == dc.DECLARED:
        record = wait_for_review(card, best_number(record), wait_seconds)
    said = (Bilingual(f"此前已申报 ({record.unified_number}), 未重复申报",
                      f"Declared before ({record.unified_number}); not declared again")
            if record.already_declared else
            Bilingual(f"已申报, 统一编号 {record.unified_number}",
                      f"Declared: unified number {record.unified_number}"))
    _result(record, said, {"clock_warning": list(clock) if clock else None})


@click.command("batch-declare", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write one JSON line per document here.")
@click.option("--retry-seconds", type=click.FloatRange(min=0), default=120.0,
              show_default=True,
              help="How long to keep retrying a document while the data centre is "
                   "unreachable.")
@card_options
@secret_options
@json_option
def batch_declare_command(files: tuple[str, ...], report_path: Path | None,
                          retry_seconds: float, reader: str | None, card_id: str | None,
                          pin_stdin: bool, allow_last_attempt: bool) -> None:
    """Save and declare many documents (JSON or CSV files), with progress.

    Every file is checked first; bad ones are listed and not sent. Run it again after an
    interruption: documents declared already are recognised, not declared twice."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    card.require_declarant()
    warn_about_clock()
    run_batch(card, list(files), report_path, retry_seconds)


@click.command("delete", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.option("--item", "item_number", type=click.IntRange(min=1), metavar="N",
              help="Delete item N (商品项) only; the items after it are renumbered.")
@card_options
@secret_options
@json_option
def delete_command(number: str, item_number: int | None, reader: str | None,
                   card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """删除 (QP FAQ §十三(一): Ctrl+D, Ctrl+Delete): a document never declared, or item N.

    Operator and declarant cards of the enterprise. A deleted document's numbers are never
    given again; saving its file again makes a new document. An item may be deleted wherever
    the document may be modified (saved, uploaded or rejected)."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    if item_number is None:
        record: dc.DocumentRecord = call_signed(card, "Delete", {"number": number})
        _result(record, Bilingual(f"已删除 {record.temporary_number} (编号不再使用)",
                                  f"Deleted {record.temporary_number} (its numbers are not "
                                  "used again)"))
        return
    record = call_signed(card, "DeleteItem", {"number": number, "item_number": item_number})
    left = len(json.loads(record.document_json).get("items") or [])
    _result(record, Bilingual(f"已删除第 {item_number} 项商品, 剩余 {left} 项",
                              f"Deleted item {item_number}; {left} left"))
