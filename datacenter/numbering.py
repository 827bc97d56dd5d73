"""Allocating numbers inside the write transaction (formats: eport.common.customs.numbers).

Each counter is a row of `sequences`, bumped with one UPSERT in the same transaction as the
document change that uses it; the transaction's lock makes numbers unique under concurrency
and the UNIQUE constraints on the documents table would refuse a duplicate anyway.
"""

from __future__ import annotations

import logging
from datetime import datetime

from eport.common.customs import numbers
from eport.datacenter.clock import china_year
from eport.datacenter.storage import Connection

logger = logging.getLogger(__name__)


def next_value(connection: Connection, name: str) -> int:
    row = connection.execute(
        "INSERT INTO sequences (name, value) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET value = sequences.value + 1 RETURNING value",
        (name,)).fetchone()
    return int(row[0])


def new_temporary_number(connection: Connection, moment: datetime) -> str:
    year = china_year(moment)
    return numbers.temporary_number(year, next_value(connection, f"temporary:{year}"))


def new_unified_number(connection: Connection, direction: str, moment: datetime) -> str:
    # One counter for both directions: the letter tells them apart, the digits stay unique.
    year = china_year(moment)
    return numbers.unified_number(direction, year, next_value(connection, f"unified:{year}"))


def new_entry_number(connection: Connection, district: str, direction: str,
                     moment: datetime) -> str:
    """Per district and year (QP FAQ §十三(九): district + year + I/E digit + 9 digits)."""
    year = china_year(moment)
    sequence = next_value(connection, f"entry:{district}:{year}")
    return numbers.entry_number(district, year, direction, sequence)
