"""Receipts (回执): written in the transaction of the change they report, read by sequence.

The sequence is the table's AUTOINCREMENT key, and writes are serial, so receipts become
visible in sequence order: a watcher that has seen sequence N never later finds a smaller one.
ReceiptHub wakes watchers after each commit that wrote receipts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from eport.datacenter.clock import timestamp
from eport.datacenter.storage import Connection, Row
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

LIST_LIMIT = 1000

_TEXTS: dict[int, tuple[str, str]] = {
    pb.STORED_RECEIPT: ("入库成功", "Stored in the data centre"),
    pb.CLEARED_RECEIPT: ("审结", "Cleared by customs review"),
    pb.REJECTED_RECEIPT: ("退单", "Rejected by customs review"),
    pb.APPROVED_RECEIPT: ("审批通过", "Approved by customs review"),
}
# Receipt.subsystem: which document table ReceiptFacts.document_id points into.
CUSTOMS = "customs"
BONDED = "bonded"


@dataclass(frozen=True)
class ReceiptFacts:
    document_id: int
    enterprise_code: str
    temporary_number: str
    unified_number: str = ""
    entry_number: str = ""
    pre_entry_number: str = ""
    reason_code: str = ""
    reason: str = ""


def add_receipt(connection: Connection, kind: pb.ReceiptKind.ValueType,
                facts: ReceiptFacts, at_micros: int, *, subsystem: str = CUSTOMS) -> int:
    """Write one receipt; `subsystem` BONDED makes facts.document_id a bonded document's."""
    zh, en = _TEXTS[kind]
    if kind == pb.CLEARED_RECEIPT:
        zh, en = f"审结, 报关单号 {facts.entry_number}", f"Cleared: entry {facts.entry_number}"
    elif kind == pb.REJECTED_RECEIPT:
        zh = f"退单: [{facts.reason_code}] {facts.reason}"
        en = f"Rejected: [{facts.reason_code}] {facts.reason}"
    elif kind == pb.STORED_RECEIPT:
        zh = f"入库成功, 统一编号 {facts.unified_number}"
        en = f"Stored in the data centre: unified number {facts.unified_number}"
    if subsystem == BONDED and kind == pb.APPROVED_RECEIPT:
        zh = f"审批通过, 统一编号 {facts.unified_number}"
        en = f"Approved by customs review: unified number {facts.unified_number}"
    # The CHECK of migration 0003 pairs the subsystem with its document column.
    customs_id, bonded_id = ((facts.document_id, None) if subsystem == CUSTOMS
                             else (None, facts.document_id))
    row = connection.execute(
        "INSERT INTO receipts (subsystem, document_id, bonded_document_id, enterprise_code, "
        "kind, temporary_number, unified_number, entry_number, pre_entry_number, reason_code, "
        "reason, time, message_zh, message_en) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "RETURNING sequence",
        (subsystem, customs_id, bonded_id, facts.enterprise_code, kind, facts.temporary_number,
         facts.unified_number, facts.entry_number, facts.pre_entry_number, facts.reason_code,
         facts.reason, at_micros, zh, en)).fetchone()
    return int(row[0])


def receipt_message(row: Row) -> pb.Receipt:
    return pb.Receipt(
        sequence=row["sequence"], kind=row["kind"], temporary_number=row["temporary_number"],
        unified_number=row["unified_number"], entry_number=row["entry_number"],
        pre_entry_number=row["pre_entry_number"], reason_code=row["reason_code"],
        reason=row["reason"], time=timestamp(row["time"]), message_zh=row["message_zh"],
        message_en=row["message_en"], subsystem=row["subsystem"])


def list_receipts(connection: Connection, enterprise_code: str, after: int, *,
                  document_id: int | None = None, limit: int = LIST_LIMIT) -> list[pb.Receipt]:
    if document_id is None:
        rows = connection.execute(
            "SELECT * FROM receipts WHERE enterprise_code = ? AND sequence > ? "
            "ORDER BY sequence LIMIT ?", (enterprise_code, after, limit)).fetchall()
    else:
        rows = connection.execute(
            "SELECT * FROM receipts WHERE enterprise_code = ? AND sequence > ? AND "
            "document_id = ? ORDER BY sequence LIMIT ?",
            (enterprise_code, after, document_id, limit)).fetchall()
    return [receipt_message(row) for row in rows]


class ReceiptHub:
    """Wakes WatchReceipts streams when receipts commit, and ends them when the server stops."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    def published(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, generation: int, timeout: float) -> int:
        """Block until something is published after `generation`, the hub closes, or the
        timeout passes; the current generation."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != generation or self._closed,
                                     timeout)
            return self._generation

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
