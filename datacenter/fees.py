"""The data transmission fee (数据传输服务费, QP FAQ §五(三)).

15 yuan (1500 fen) per entry, charged at its first successful declaration whatever the review
later says, once however often it is declared again, to the enterprise of the card that first
saved it (the record's enterprise_code). The fees table's primary key is the document, so a
second charge is impossible even by mistake. Statement periods are China dates (UTC+8).
"""

from __future__ import annotations

import logging

from eport.datacenter.clock import timestamp
from eport.datacenter.storage import Connection
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

FEE_PER_ENTRY_FEN = 1500


def charge_once(connection: Connection, document_id: int, enterprise_code: str,
                at_micros: int, charge_date: str) -> bool:
    """Charge the entry unless it was charged before; True when this call charged it."""
    cursor = connection.execute(
        "INSERT INTO fees (document_id, enterprise_code, charged_at, charge_date, amount_fen) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (document_id) DO NOTHING",
        (document_id, enterprise_code, at_micros, charge_date, FEE_PER_ENTRY_FEN))
    if cursor.rowcount:
        connection.execute("UPDATE documents SET fee_charged = 1 WHERE id = ?", (document_id,))
        logger.debug("fee of %d fen charged to %s", FEE_PER_ENTRY_FEN, enterprise_code)
        return True
    return False


def statement(connection: Connection, enterprise_code: str, start: str, end: str
              ) -> pb.Statement:
    """The enterprise's fees charged on China dates start..end (inclusive)."""
    rows = connection.execute(
        "SELECT fees.charged_at, fees.amount_fen, documents.unified_number, "
        "documents.entry_number, documents.temporary_number FROM fees "
        "JOIN documents ON documents.id = fees.document_id "
        "WHERE fees.enterprise_code = ? AND fees.charge_date BETWEEN ? AND ? "
        "ORDER BY fees.charged_at, fees.document_id", (enterprise_code, start, end)).fetchall()
    lines = [pb.FeeLine(unified_number=row["unified_number"] or "",
                        entry_number=row["entry_number"] or "",
                        charged_at=timestamp(row["charged_at"]), amount_fen=row["amount_fen"],
                        temporary_number=row["temporary_number"]) for row in rows]
    return pb.Statement(enterprise_code=enterprise_code, lines=lines, entries=len(lines),
                        total_fen=sum(line.amount_fen for line in lines),
                        **{"from": start, "to": end})
