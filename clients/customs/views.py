"""Data-centre answers as the stable JSON of `eport customs --json`, and their human lines."""

from __future__ import annotations

import json
from typing import Any

from eport.clients.kit.output import Output
from eport.clients.kit.views import timestamp
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

STATUS_NAMES: dict[int, Bilingual] = {
    dc.SAVED: Bilingual("暂存", "saved"),
    dc.STORED: Bilingual("已入库", "stored (uploaded)"),
    dc.DECLARED: Bilingual("已申报, 审核中", "declared, under review"),
    dc.CLEARED: Bilingual("审结", "cleared"),
    dc.REJECTED: Bilingual("退单", "rejected"),
    dc.DELETED: Bilingual("已删除", "deleted"),
}
# What --status takes on the command line.
STATUS_CHOICES = {"saved": dc.SAVED, "stored": dc.STORED, "declared": dc.DECLARED,
                  "cleared": dc.CLEARED, "rejected": dc.REJECTED}
RECEIPT_NAMES: dict[int, Bilingual] = {
    dc.STORED_RECEIPT: Bilingual("入库成功", "stored"),
    dc.CLEARED_RECEIPT: Bilingual("审结", "cleared"),
    dc.REJECTED_RECEIPT: Bilingual("退单", "rejected"),
}


def record_view(record: dc.DocumentRecord, *, with_document: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "temporary_number": record.temporary_number or None,
        "unified_number": record.unified_number or None,
        "entry_number": record.entry_number or None,
        "pre_entry_number": record.pre_entry_number or None,
        "status": dc.DocumentStatus.Name(record.status),
        "document_type": record.document_type or None,
        "direction": record.direction or None,
        "enterprise_code": record.enterprise_code or None,
        "saved_by_card": record.saved_by_card or None,
        "declared_by_card": record.declared_by_card or None,
        "saved_at": timestamp(record.saved_at),
        "uploaded_at": timestamp(record.uploaded_at),
        "declared_at": timestamp(record.declared_at),
        "reviewed_at": timestamp(record.reviewed_at),
        "declaration_count": record.declaration_count,
        "fee_charged": record.fee_charged,
        "reject_reason_code": record.reject_reason_code or None,
        "reject_reason": record.reject_reason or None,
        "already_declared": record.already_declared,
        "already_saved": record.already_saved,
        "client_reference": record.client_reference or None,
        "deleted_at": timestamp(record.deleted_at),
        "deleted_by_card": record.deleted_by_card or None,
    }
    if with_document:
        view["document"] = json.loads(record.document_json) if record.document_json else None
    return view


def receipt_view(receipt: dc.Receipt) -> dict[str, Any]:
    return {
        "sequence": receipt.sequence,
        "kind": dc.ReceiptKind.Name(receipt.kind),
        "temporary_number": receipt.temporary_number or None,
        "unified_number": receipt.unified_number or None,
        "entry_number": receipt.entry_number or None,
        "pre_entry_number": receipt.pre_entry_number or None,
        "reason_code": receipt.reason_code or None,
        "reason": receipt.reason or None,
        "time": timestamp(receipt.time),
        "message": {"zh": receipt.message_zh, "en": receipt.message_en},
    }


def best_number(record: dc.DocumentRecord) -> str:
    return record.entry_number or record.unified_number or record.temporary_number


def show_record(out: Output, record: dc.DocumentRecord) -> None:
    status = STATUS_NAMES.get(record.status, Bilingual("未知", "unknown"))
    out.labelled(Bilingual("状态", "Status"), out.text(status))
    if record.temporary_number:
        out.labelled(Bilingual("暂存编号", "Temporary number"), record.temporary_number)
    if record.unified_number:
        out.labelled(Bilingual("统一编号", "Unified number"), record.unified_number)
    if record.entry_number:
        out.labelled(Bilingual("报关单号", "Entry number"), record.entry_number)
        out.labelled(Bilingual("预录入编号", "Pre-entry number"), record.pre_entry_number)
    if record.status == dc.REJECTED:
        out.labelled(Bilingual("退单原因", "Rejected because"),
                     f"{record.reject_reason_code} {record.reject_reason}".strip(), style="red")
    if record.status == dc.DELETED:
        out.labelled(Bilingual("删除", "Deleted"),
                     f"{timestamp(record.deleted_at)} {record.deleted_by_card}".strip())
    if record.fee_charged:
        out.labelled(Bilingual("数据传输费", "Transmission fee"),
                     out.text(Bilingual(f"已收取 15 元 (企业 {record.enterprise_code})",
                                        f"15 yuan charged (enterprise "
                                        f"{record.enterprise_code})")))


def show_receipt(out: Output, receipt: dc.Receipt) -> None:
    kind = RECEIPT_NAMES.get(receipt.kind, Bilingual("回执", "receipt"))
    number = receipt.entry_number or receipt.unified_number or receipt.temporary_number
    reason = f" {receipt.reason_code} {receipt.reason}" if receipt.reason_code else ""
    style = "red" if receipt.kind == dc.REJECTED_RECEIPT else None
    out.line(f"#{receipt.sequence} {timestamp(receipt.time)} {out.text(kind)} {number}{reason}",
             style=style)
