"""`eport customs`: the customs declaration client (报关申报), a thin client of eportd (which
signs on the card) and of the E-port data centre (which numbers, reviews and charges).

Every command that talks to the data centre signs its request on the card; the PIN is asked
once per command when the card has no session (or read with --pin-stdin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eport.clients.customs.commands_flow import (
    batch_declare_command,
    declare_command,
    delete_command,
    save_command,
    upload_command,
)
from eport.clients.customs.commands_query import query_command, receipts_command, stats_command
from eport.clients.customs.context import (
    check_locally,
    is_file_argument,
    read_document,
    stored_document,
)
from eport.clients.customs.views import record_view, show_record
from eport.clients.datacenter.context import (
    DataCenterGroup,
    call_signed,
    datacenter_option,
    signer,
)
from eport.clients.datacenter.documents import document_bytes, write_document
from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.errors import CliError, file_error
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.files import write_output
from eport.clients.kit.output import Output
from eport.common.customs.document import (
    DIRECTIONS,
    DOCUMENT_TYPES,
    DocumentError,
    copy_document,
    copy_item,
    new_document,
)
from eport.common.customs.examples import example_declaration
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc


@click.group("customs", cls=DataCenterGroup)
@datacenter_option
def customs_group() -> None:
    """报关申报: customs declarations and filing lists: new, import, save (暂存), upload (上载),
    declare (申报), delete (删除), query, receipts, print, statistics."""


@customs_group.command("new")
@click.option("--type", "document_type", type=click.Choice(DOCUMENT_TYPES),
              default="declaration", show_default=True,
              help="declaration (报关单) or filing-list (备案清单).")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="import",
              show_default=True)
@click.option("--example", is_flag=True,
              help="A filled-in import declaration that passes every check, to start from.")
@click.option("-o", "--output", "output_path", default="-", metavar="FILE",
              help="Write the document here (default: standard output).")
@json_option
def new_command(document_type: str, direction: str, example: bool, output_path: str) -> None:
    """录入: an empty document to fill in (every field present; the import date is today)."""
    document = example_declaration() if example else new_document(document_type, direction)
    write_document(document, output_path, Bilingual("新报关单", "New document"))


@customs_group.command("import")
@click.argument("input_file", metavar="FILE")
@click.option("-o", "--output", "output_path", metavar="FILE",
              help="Write the document here (default: FILE with the suffix .json; '-' for "
                   "standard output).")
@json_option
def import_command(input_file: str, output_path: str | None) -> None:
    """导入: make a document from a JSON or CSV file (docs/customs-document.md), checked.

    Every bad field is named at once; nothing is written then."""
    document = read_document(input_file)
    check_locally(document, declaring=False, where=input_file)
    target = output_path or str(Path(input_file).with_suffix(".json"))
    if target == input_file:
        target = str(Path(input_file).with_suffix(".imported.json"))
    write_document(document, target, Bilingual("已导入", "Imported"))


def _source_document(source: str, reader: str | None, card_id: str | None, pin_stdin: bool,
                     allow_last_attempt: bool) -> dict[str, Any]:
    if is_file_argument(source):
        return read_document(source)
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    record: dc.DocumentRecord = call_signed(card, "GetDocument", {"number": source})
    return stored_document(record)


@customs_group.command("copy", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("source", metavar="NUMBER|FILE")
@click.option("--item", "item_number", type=click.IntRange(min=1), metavar="N",
              help="Copy item N as a new item at the end (复制商品) instead of the document.")
@click.option("-o", "--output", "output_path", required=True, metavar="FILE",
              help="Write the new document here.")
@card_options
@secret_options
@json_option
def copy_command(source: str, item_number: int | None, output_path: str, reader: str | None,
                 card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """复制: a new document from a saved one (by number) or a file; or one item copied."""
    document = _source_document(source, reader, card_id, pin_stdin, allow_last_attempt)
    header = document.get("header")
    if isinstance(header, dict):
        header.pop("declaring_agent", None)  # the data centre fills it from the signing card
    try:
        copied = copy_item(document, item_number) if item_number else copy_document(document)
    except DocumentError as error:
        raise CliError("COPY_FAILED", Bilingual(f"无法复制: {error}", f"Cannot copy: {error}"),
                       Bilingual("请检查项号 (eport customs show 可查看商品项)",
                                 "check the item number (`eport customs show` lists items)"),
                       ExitCode.REQUEST_REFUSED) from None
    write_document(copied, output_path, Bilingual("已复制", "Copied"))


@customs_group.command("show", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.option("-o", "--output", "output_path", metavar="FILE",
              help="Also write the document (JSON) here, e.g. to modify and save it again.")
@card_options
@secret_options
@json_option
def show_command(number: str, output_path: str | None, reader: str | None,
                 card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """查看: a document by its temporary, unified or entry number."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    record: dc.DocumentRecord = call_signed(card, "GetDocument", {"number": number})
    document = stored_document(record)
    if output_path:
        write_output(output_path, document_bytes(document))

    def human(out: Output) -> None:
        show_record(out, record)
        header = document.get("header") or {}
        items = document.get("items") or []
        out.labelled(Bilingual("类型", "Type"),
                     f"{record.document_type} / {record.direction}")
        out.labelled(Bilingual("境内收发货人", "Domestic party"),
                     (header.get("domestic_party") or {}).get("name", ""))
        out.labelled(Bilingual("监管方式", "Trade mode"), header.get("trade_mode", ""))
        out.labelled(Bilingual("商品项数", "Items"), len(items))
        for item in items[:50]:
            out.line(f"  {item.get('item_number')}. {item.get('hs_code')} {item.get('name')} "
                     f"{item.get('quantity')} {item.get('total_price')} {item.get('currency')}")
        out.labelled(Bilingual("集装箱", "Containers"), len(document.get("containers") or []))

    state().output.result(command_name(), record_view(record, with_document=True), human)


@customs_group.command("print", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.option("-o", "--output", "output_path", required=True, metavar="FILE.pdf")
@card_options
@secret_options
@json_option
def print_command(number: str, output_path: str, reader: str | None, card_id: str | None,
                  pin_stdin: bool, allow_last_attempt: bool) -> None:
    """打印: the declaration as an A4 PDF in the standard format, with the barcode of the
    pre-entry number once it has one (QP FAQ §八)."""
    # Imported here: reportlab and the font take a while to load, and only print needs them.
    from eport.clients.customs.printing import PrintError, PrintRecord, write_declaration_pdf

    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    record: dc.DocumentRecord = call_signed(card, "GetDocument", {"number": number})
    document = stored_document(record)
    declared = record.declared_at.ToDatetime() if record.HasField("declared_at") else None
    try:
        write_declaration_pdf(Path(output_path), document, PrintRecord(
            temporary_number=record.temporary_number, unified_number=record.unified_number,
            entry_number=record.entry_number, pre_entry_number=record.pre_entry_number,
            status=dc.DocumentStatus.Name(record.status), declared_at=declared))
    except PrintError as error:
        raise CliError("PRINT_FAILED", error.message, error.remedy,
                       ExitCode.INPUT_ERROR) from None
    except OSError as problem:
        raise file_error(output_path, problem, writing=True) from None
    state().output.result(command_name(), {"output": output_path, **record_view(record)},
                          lambda out: out.note(Bilingual(f"已生成 {output_path}",
                                                         f"Written: {output_path}")))


for _command in (save_command, upload_command, declare_command, batch_declare_command,
                 delete_command, query_command, receipts_command, stats_command):
    customs_group.add_command(_command)
