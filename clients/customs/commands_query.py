"""`eport customs query | receipts | stats`: what the data centre holds for the enterprise of
the card (every request is signed: the centre answers only for the card's own enterprise)."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from eport.clients.customs.views import (
    STATUS_CHOICES,
    STATUS_NAMES,
    receipt_view,
    record_view,
    show_receipt,
)
from eport.clients.datacenter.context import call_signed, datacenter, signer
from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.errors import usage_error
from eport.clients.kit.output import Output
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

# Counting is done here from one query; past this many documents the counts say so.
STATS_LIMIT = 1000


def _china_today() -> date:
    # The data centre's periods are China dates (UTC+8), whatever the local time zone.
    return (datetime.now(UTC) + timedelta(hours=8)).date()


def _refuse_pre_entry_number(_ctx: click.Context, _param: click.Parameter,
                             value: str | None) -> None:
    if value:
        raise usage_error(
            Bilingual("不能按预录入号查询报关单 (QP FAQ §十一(五))",
                      "Documents cannot be queried by pre-entry number (QP FAQ §十一(五))"),
            Bilingual("请改用数据中心统一编号 (--unified-number) 或报关单号 (--entry-number)",
                      "use the unified number (--unified-number) or the entry number "
                      "(--entry-number) instead"))


@click.command("query", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--unified-number", metavar="NUMBER", help="统一编号.")
@click.option("--entry-number", metavar="NUMBER", help="报关单号 (18 digits).")
@click.option("--temporary-number", metavar="Z_NUMBER", help="暂存编号.")
@click.option("--status", type=click.Choice(list(STATUS_CHOICES)), help="Only this state.")
@click.option("--from", "date_from", type=click.DateTime(["%Y-%m-%d"]),
              help="Saved on or after (YYYY-MM-DD, China time).")
@click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]),
              help="Saved on or before (YYYY-MM-DD).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--pre-entry-number", hidden=True, expose_value=False, is_eager=True,
              callback=_refuse_pre_entry_number)
@card_options
@secret_options
@json_option
def query_command(unified_number: str | None, entry_number: str | None,
                  temporary_number: str | None, status: str | None,
                  date_from: datetime | None, date_to: datetime | None, limit: int,
                  reader: str | None, card_id: str | None, pin_stdin: bool,
                  allow_last_attempt: bool) -> None:
    """查询: the enterprise's documents by unified number, entry number, state or save date.

    Not by pre-entry number: QP no longer offers it (QP FAQ §十一(五))."""
    body: dict[str, Any] = {"limit": limit}
    for key, value in (("unified_number", unified_number), ("entry_number", entry_number),
                       ("temporary_number", temporary_number), ("status", status)):
        if value:
            body[key] = value.upper() if key == "status" else value
    if date_from:
        body["from"] = date_from.date().isoformat()
    if date_to:
        body["to"] = date_to.date().isoformat()
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    result: dc.QueryResult = call_signed(card, "Query", body)
    rows = [record_view(record) for record in result.documents]

    def human(out: Output) -> None:
        if not rows:
            out.line(Bilingual("没有符合条件的报关单", "No documents match"))
        for record in result.documents:
            saved = record.saved_at.ToDatetime(tzinfo=UTC).date().isoformat()
            status_text = out.text(STATUS_NAMES.get(record.status, Bilingual("?", "?")))
            out.line(f"{record.temporary_number}  {record.unified_number or '-':18}  "
                     f"{record.entry_number or '-':18}  {status_text}  {saved}")
        if result.truncated:
            out.note(Bilingual(f"仅显示前 {limit} 条, 请缩小范围", f"Only the first {limit} "
                               "are shown: narrow the query"))

    state().output.result(command_name(), {"documents": rows, "truncated": result.truncated},
                          human)


@click.command("receipts", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Only receipts after this sequence number.")
@click.option("--number", metavar="NUMBER", help="Only this document's receipts.")
@click.option("--follow", is_flag=True, help="Keep waiting for new receipts (Ctrl-C ends).")
@click.option("--count", type=click.IntRange(min=1), help="With --follow: stop after N.")
@card_options
@secret_options
@json_option
def receipts_command(after: int, number: str | None, follow: bool, count: int | None,
                     reader: str | None, card_id: str | None, pin_stdin: bool,
                     allow_last_attempt: bool) -> None:
    """回执: 入库成功, 审结 and 退单 receipts of the enterprise's documents."""
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    output = state().output
    if not follow:
        body: dict[str, Any] = {"after": after}
        if number:
            body["number"] = number
        listed: dc.ReceiptList = call_signed(card, "ListReceipts", body)

        def human(out: Output) -> None:
            if not listed.receipts:
                out.line(Bilingual("没有回执", "No receipts"))
            for receipt in listed.receipts:
                show_receipt(out, receipt)

        output.result(command_name(), {"receipts": [receipt_view(r) for r in listed.receipts]},
                      human)
        return
    seen = 0
    for receipt in datacenter().watch(card.sign("WatchReceipts", {"after": after})):
        if number and number not in (receipt.temporary_number, receipt.unified_number,
                                     receipt.entry_number):
            continue
        # One JSON line per receipt: a stream has no end to wrap a document around.
        output.result(command_name(), receipt_view(receipt),
                      functools.partial(show_receipt, receipt=receipt))
        seen += 1
        if count is not None and seen >= count:
            return


@click.command("stats", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--from", "date_from", type=click.DateTime(["%Y-%m-%d"]),
              help="First day (default: the first of this month, China time).")
@click.option("--to", "date_to", type=click.DateTime(["%Y-%m-%d"]),
              help="Last day (default: today).")
@card_options
@secret_options
@json_option
def stats_command(date_from: datetime | None, date_to: datetime | None, reader: str | None,
                  card_id: str | None, pin_stdin: bool, allow_last_attempt: bool) -> None:
    """业务统计: documents by state and the transmission fees (15 yuan per declared entry,
    QP FAQ §五(三)) of the card's enterprise in a period."""
    today = _china_today()
    first = date_from.date() if date_from else today.replace(day=1)
    last = date_to.date() if date_to else today
    period = {"from": first.isoformat(), "to": last.isoformat()}
    card = signer(reader, card_id, pin_stdin, allow_last_attempt)
    statement: dc.Statement = call_signed(card, "GetStatement", period)
    found: dc.QueryResult = call_signed(card, "Query", {**period, "limit": STATS_LIMIT})
    counts = {name: sum(1 for record in found.documents if record.status == value)
              for name, value in STATUS_CHOICES.items()}
    data = {"enterprise_code": statement.enterprise_code, **period, "documents": counts,
            "documents_truncated": found.truncated,
            "charged_entries": statement.entries, "total_fen": statement.total_fen,
            "total_yuan": f"{statement.total_fen / 100:.2f}",
            "lines": [{"unified_number": line.unified_number,
                       "entry_number": line.entry_number or None,
                       "amount_fen": line.amount_fen} for line in statement.lines]}

    def human(out: Output) -> None:
        out.labelled(Bilingual("企业", "Enterprise"), statement.enterprise_code)
        out.labelled(Bilingual("期间", "Period"), f"{first} – {last}")
        for name, value in STATUS_CHOICES.items():
            out.labelled(STATUS_NAMES[value], counts[name])
        out.labelled(Bilingual("计费票数", "Entries charged"), statement.entries)
        out.labelled(Bilingual("数据传输费合计", "Transmission fees"),
                     f"{statement.total_fen / 100:.2f} " + out.text(Bilingual("元", "yuan")))

    state().output.result(command_name(), data, human)
