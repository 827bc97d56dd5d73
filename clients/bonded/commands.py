"""`eport bonded`: 保税核查 (bonded manual): enter the verification data (header, then body), save
(暂存), declare (申报), query, view (read-only), modify, re-declare the stock of an approved
record once (库存重新申报), and delete (删除) a record never declared or one body item. Every
request is signed on the card through eportd."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from eport.clients.bonded.documents import check, complete, read_bonded, stored
from eport.clients.customs.context import is_file_argument
from eport.clients.customs.views import receipt_view, show_receipt
from eport.clients.datacenter.context import (
    DataCenterGroup,
    call_signed,
    datacenter_option,
    signer,
)
from eport.clients.datacenter.documents import document_bytes, write_document
from eport.clients.datacenter.errors import problem_view
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.files import write_output
from eport.clients.kit.output import Output
from eport.clients.kit.views import timestamp
from eport.common.bonded.document import new_bonded_document, normalise, stock_warnings
from eport.common.bonded.examples import example_bonded
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

STATUS_NAMES = {dc.BONDED_SAVED: Bilingual("暂存", "saved"),
                dc.BONDED_STORED: Bilingual("已申报, 入库成功, 审批中", "declared, stored, "
                                            "under review"),
                dc.BONDED_APPROVED: Bilingual("审批通过", "approved"),
                dc.BONDED_REJECTED: Bilingual("退单", "rejected"),
                dc.BONDED_DELETED: Bilingual("已删除", "deleted")}
_POLL_SECONDS = 0.2


def record_view(record: dc.BondedRecord, *, with_document: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "temporary_number": record.temporary_number or None,
        "unified_number": record.unified_number or None,
        "status": dc.BondedStatus.Name(record.status),
        "internal_number": record.internal_number, "enterprise_code": record.enterprise_code,
        "enterprise_name": record.enterprise_name, "agent_code": record.agent_code or None,
        "saved_by_card": record.saved_by_card or None,
        "declared_by_card": record.declared_by_card or None,
        "stocktaking_date": record.stocktaking_date or None,
        "declaration_date": record.declaration_date or None,
        "saved_at": timestamp(record.saved_at), "declared_at": timestamp(record.declared_at),
        "reviewed_at": timestamp(record.reviewed_at),
        "declaration_count": record.declaration_count, "redeclared": record.redeclared,
        "reject_reason_code": record.reject_reason_code or None,
        "reject_reason": record.reject_reason or None, "read_only": record.read_only,
        "deleted_at": timestamp(record.deleted_at),
        "deleted_by_card": record.deleted_by_card or None,
        "warnings": [problem_view(w) for w in record.warnings],
    }
    if with_document:
        view["document"] = stored(record) or None
    return view


def show_record(out: Output, record: dc.BondedRecord) -> None:
    out.labelled(Bilingual("状态", "Status"),
                 out.text(STATUS_NAMES.get(record.status, Bilingual("未知", "unknown"))))
    out.labelled(Bilingual("企业内部编号", "Internal number"), record.internal_number)
    out.labelled(Bilingual("核查企业", "Enterprise verified"),
                 f"{record.enterprise_code} {record.enterprise_name}")
    if record.temporary_number:
        out.labelled(Bilingual("暂存编号", "Temporary number"), record.temporary_number)
    if record.unified_number:
        out.labelled(Bilingual("统一编号", "Unified number"), record.unified_number)
    if record.declaration_date:
        out.labelled(Bilingual("申报日期", "Declared on"), record.declaration_date)
    if record.status == dc.BONDED_REJECTED:
        out.labelled(Bilingual("退单原因", "Rejected because"),
                     f"{record.reject_reason_code} {record.reject_reason}".strip(), style="red")
    if record.status == dc.BONDED_DELETED:
        out.labelled(Bilingual("删除", "Deleted"),
                     f"{timestamp(record.deleted_at)} {record.deleted_by_card}".strip())
    if record.redeclared:
        out.line(Bilingual("已库存重新申报 (每笔审批通过的数据只可变更一次)",
                           "Stock re-declared (an approved record may be changed once)"))
    for warning in record.warnings:
        out.warn(Bilingual(warning.message_zh, warning.message_en))


def _result(record: dc.BondedRecord, said: Bilingual, *, document: bool = False) -> None:
    def human(out: Output) -> None:
        out.line(said, style="green")
        show_record(out, record)

    state().output.result(command_name(), record_view(record, with_document=document), human)


def _signer(card: dict[str, Any]) -> CardSigner:
    return signer(card["reader"], card["card_id"], card["pin_stdin"], card["allow_last_attempt"])


def _bonded(card: CardSigner, method: str, body: dict[str, Any]) -> dc.BondedRecord:
    record: dc.BondedRecord = call_signed(card, method, body, service="bonded")
    return record


def _prepared(card: CardSigner, path: str, *, declaring: bool) -> dict[str, Any]:
    completed, records = complete(card, read_bonded(path))
    # The system-filled values (序号, a total stock left empty) as the data centre fills them.
    document = normalise(completed)
    check(document, declaring=declaring, where=path, records=records)
    for warning in stock_warnings(document):
        state().output.warn(warning.message)
    return document


def _wait(card: CardSigner, number: str, seconds: float) -> dc.BondedRecord:
    deadline = time.monotonic() + seconds
    while True:
        record = _bonded(card, "GetBonded", {"number": number})
        if record.status != dc.BONDED_STORED or time.monotonic() >= deadline:
            return record
        time.sleep(_POLL_SECONDS)


def signing_options(function: Any) -> Any:
    return json_option(secret_options(card_options(function)))


@click.group("bonded", cls=DataCenterGroup)
@datacenter_option
def bonded_group() -> None:
    """保税核查: bonded verification: stock-taking data of processing-trade enterprises."""


@bonded_group.command("new")
@click.option("-o", "--output", "output_path", default="-", metavar="FILE")
@click.option("--example", is_flag=True,
              help="A filled-in document that passes every check (加贸手册 mode, two items), "
                   "to start from.")
@click.option("--enterprise-code", metavar="CODE",
              help="With --example: your 10-digit customs code (核查企业代码); the name is then "
                   "filled from the data centre's registry at save unless --enterprise-name.")
@click.option("--enterprise-name", metavar="NAME", default="",
              help="With --example and --enterprise-code: the enterprise's name.")
@json_option
def new_command(output_path: str, example: bool, enterprise_code: str | None,
                enterprise_name: str) -> None:
    """录入: an empty document (header first, then the body; bonded manual §2.2), or --example."""
    if (enterprise_code or enterprise_name) and not example:
        raise click.UsageError("--enterprise-code and --enterprise-name go with --example")
    if enterprise_name and not enterprise_code:
        raise click.UsageError("--enterprise-name needs --enterprise-code")
    document = (example_bonded(enterprise_code=enterprise_code or "",
                               enterprise_name=enterprise_name)
                if example else new_bonded_document())
    write_document(document, output_path, Bilingual("新核查单", "New document"),
                   {"internal_number": document["header"]["internal_number"] or None})


@bonded_group.command("import")
@click.argument("input_file", metavar="FILE")
@click.option("-o", "--output", "output_path", metavar="FILE",
              help="Write the document (JSON) here (default: FILE with the suffix .json).")
@json_option
def import_command(input_file: str, output_path: str | None) -> None:
    """导入: a document from JSON or CSV (hundreds of body lines), with progress; every bad
    line is named, and nothing is written then."""
    document = read_bonded(input_file, importing=True)
    target = output_path or str(Path(input_file).with_suffix(".json"))
    if target == input_file:
        target = input_file + ".json"
    write_output(target, document_bytes(document))
    items = len(document.get("items") or [])
    state().output.result(command_name(), {"output": target, "items": items},
                          lambda out: out.note(Bilingual(f"已导入 {items} 项表体: {target}",
                                                         f"Imported {items} body lines: "
                                                         f"{target}")))


@bonded_group.command("save", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("document_file", metavar="FILE")
@click.option("--number", metavar="NUMBER", help="Modify this saved or rejected document.")
@signing_options
def save_command(document_file: str, number: str | None, **card_args: Any) -> None:
    """暂存: save FILE. Refused with the first bad field and the first empty one (bonded manual
    §2.4); item code, name and unit come from the e-book record in e-book modes."""
    card = _signer(card_args)
    document = _prepared(card, document_file, declaring=False)
    body: dict[str, Any] = {"document": document}
    if number:
        body["number"] = number
    record = _bonded(card, "SaveBonded", body)
    _result(record, Bilingual(f"暂存成功, 暂存编号 {record.temporary_number}",
                              f"Saved as {record.temporary_number}"))


@bonded_group.command("declare", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("target", metavar="NUMBER|FILE")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait for the review (审批通过 or 退单).")
@signing_options
def declare_command(target: str, wait_seconds: float | None, **card_args: Any) -> None:
    """申报: a saved document (by number), or FILE saved and declared; every empty required
    field is named at once (bonded manual §2.4)."""
    card = _signer(card_args)
    if is_file_argument(target):
        document = _prepared(card, target, declaring=True)
        target = _bonded(card, "SaveBonded", {"document": document}).temporary_number
    record = _bonded(card, "DeclareBonded", {"number": target})
    if wait_seconds is not None:
        record = _wait(card, record.unified_number or target, wait_seconds)
    _result(record, Bilingual(f"申报成功, 统一编号 {record.unified_number}",
                              f"Declared: unified number {record.unified_number}"))


@bonded_group.command("query", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--internal-number", help="企业内部编号.")
@click.option("--enterprise-code", help="核查企业代码 (10 characters).")
@click.option("--stocktaking-date", metavar="YYYYMMDD", help="盘库日期.")
@click.option("--declared-from", metavar="YYYYMMDD", help="申报日期 from.")
@click.option("--declared-to", metavar="YYYYMMDD", help="申报日期 to.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@signing_options
def query_command(internal_number: str | None, enterprise_code: str | None,
                  stocktaking_date: str | None, declared_from: str | None,
                  declared_to: str | None, limit: int, **card_args: Any) -> None:
    """查询 (bonded manual §3.2.2): by internal number, enterprise, stock-taking date or the
    declaration date range."""
    body: dict[str, Any] = {"limit": limit}
    for key, value in (("internal_number", internal_number),
                       ("enterprise_code", enterprise_code),
                       ("stocktaking_date", stocktaking_date),
                       ("declared_from", declared_from), ("declared_to", declared_to)):
        if value:
            body[key] = value
    card = _signer(card_args)
    result: dc.BondedQueryResult = call_signed(card, "QueryBonded", body, service="bonded")

    def human(out: Output) -> None:
        if not result.records:
            out.line(Bilingual("没有符合条件的记录", "No records match"))
        for record in result.records:
            status = out.text(STATUS_NAMES.get(record.status, Bilingual("?", "?")))
            out.line(f"{record.unified_number or record.temporary_number}  "
                     f"{record.internal_number}  {record.enterprise_code} "
                     f"{record.enterprise_name}  {record.stocktaking_date}  {status}")

    state().output.result(command_name(), {"records": [record_view(r) for r in result.records],
                                           "truncated": result.truncated}, human)


@bonded_group.command("show", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.option("-o", "--output", "output_path", metavar="FILE",
              help="Also write the document here, to modify it (eport bonded modify).")
@signing_options
def show_command(number: str, output_path: str | None, **card_args: Any) -> None:
    """查看明细: the record, read-only (bonded manual §3.2.3): nothing can be changed here."""
    card = _signer(card_args)
    record = _bonded(card, "GetBonded", {"number": number})
    document = stored(record)
    if output_path:
        write_output(output_path, document_bytes(document))

    def human(out: Output) -> None:
        out.line(Bilingual("查看明细 (只读)", "Detail (read-only)"), style="bold")
        show_record(out, record)
        for item in document.get("items") or []:
            out.line(f"  {item.get('item_number')}. {item.get('record_item_number')} "
                     f"{item.get('hs_code')} {item.get('name')} {item.get('unit')} "
                     f"{out.text(Bilingual('总库存', 'total'))} {item.get('total_stock_qty')}")

    state().output.result(command_name(), record_view(record, with_document=True), human)


@bonded_group.command("modify", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.argument("document_file", metavar="FILE")
@click.option("--declare", "and_declare", is_flag=True, help="Declare it after saving.")
@signing_options
def modify_command(number: str, document_file: str, and_declare: bool,
                   **card_args: Any) -> None:
    """修改 (bonded manual §3.2.4): save FILE as the new content of NUMBER (saved or rejected)."""
    card = _signer(card_args)
    document = _prepared(card, document_file, declaring=and_declare)
    record = _bonded(card, "SaveBonded", {"document": document, "number": number})
    if and_declare:
        record = _bonded(card, "DeclareBonded", {"number": record.temporary_number})
    _result(record, Bilingual("已修改", "Modified"))


@bonded_group.command("redeclare", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.argument("document_file", metavar="FILE")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), metavar="SECONDS")
@signing_options
def redeclare_command(number: str, document_file: str, wait_seconds: float | None,
                      **card_args: Any) -> None:
    """库存重新申报 (bonded manual §3.2.5): an approved record, changed and declared again; once
    per approved record."""
    card = _signer(card_args)
    document = _prepared(card, document_file, declaring=True)
    record = _bonded(card, "RedeclareStock", {"number": number, "document": document})
    if wait_seconds is not None:
        record = _wait(card, record.unified_number or number, wait_seconds)
    _result(record, Bilingual("已库存重新申报", "Stock re-declared"))


@bonded_group.command("delete", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("number")
@click.option("--item", "item_number", type=click.IntRange(min=1), metavar="N",
              help="Delete body item N (序号) only; the items after it are renumbered.")
@signing_options
def delete_command(number: str, item_number: int | None, **card_args: Any) -> None:
    """删除 (bonded manual §2.3): a saved record never declared (its number is never given again),
    or with --item one body item of a saved or rejected record."""
    card = _signer(card_args)
    if item_number is None:
        record = _bonded(card, "DeleteBonded", {"number": number})
        _result(record, Bilingual(f"已删除 {record.temporary_number} (编号不再使用)",
                                  f"Deleted {record.temporary_number} (its number is not "
                                  "used again)"))
        return
    record = _bonded(card, "DeleteBondedItem", {"number": number, "item_number": item_number})
    left = len(stored(record).get("items") or [])
    _result(record, Bilingual(f"已删除表体第 {item_number} 项, 剩余 {left} 项",
                              f"Deleted body item {item_number}; {left} left"), document=True)


@bonded_group.command("ebook-item", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("ebook_number")
@click.argument("record_item_number")
@click.option("--management-mode", metavar="CODE", default="1", show_default=True,
              help="The mode the item is for: 1 电子账册 (an agent needs the 加工贸易账册 "
                   "grant) or 2 纸质手册电子化 (the 加工贸易手册 grant).")
@signing_options
def ebook_item_command(ebook_number: str, record_item_number: str, management_mode: str,
                       **card_args: Any) -> None:
    """An e-book (账册) or handbook record item: code, name, specification and unit."""
    card = _signer(card_args)
    item: dc.EBookItem = call_signed(card, "GetEBookItem", {
        "ebook_number": ebook_number, "record_item_number": record_item_number,
        "management_mode": management_mode}, service="bonded")
    data = {"ebook_number": item.ebook_number, "record_item_number": item.record_item_number,
            "hs_code": item.hs_code, "name": item.name, "specification": item.specification,
            "unit": item.unit}
    state().output.result(command_name(), data, lambda out: out.line(
        f"{item.record_item_number}  {item.hs_code}  {item.name}  {item.specification}  "
        f"{item.unit}"))


@bonded_group.command("receipts", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--number", metavar="NUMBER")
@signing_options
def receipts_command(after: int, number: str | None, **card_args: Any) -> None:
    """回执 of bonded verification documents (入库成功, 审批通过, 退单)."""
    card = _signer(card_args)
    # The data centre's number filter names customs documents; bonded ones are picked here.
    listed: dc.ReceiptList = call_signed(card, "ListReceipts", {"after": after})
    receipts = [r for r in listed.receipts if r.subsystem == "bonded" and (
        not number or number in (r.temporary_number, r.unified_number))]

    def human(out: Output) -> None:
        if not receipts:
            out.line(Bilingual("没有回执", "No receipts"))
        for receipt in receipts:
            show_receipt(out, receipt)

    state().output.result(command_name(), {"receipts": [receipt_view(r) for r in receipts]},
                          human)
