"""Several eport-datacenter processes on one database: a
receipt stream on one process shows the documents saved and declared through another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_stack import DataCenterProcess, SigningCard, start_datacenter

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")



@pytest.fixture
def two_processes(tmp_path: Path, test_ca: TestCA) -> Iterator[tuple[DataCenterProcess,
                                                                     DataCenterProcess]]:
    """A and B, each its own socket, both on A's SQLite file."""
    first = start_datacenter(tmp_path / "a", test_ca.trust_bundle)
    try:
        second = start_datacenter(tmp_path / "b", test_ca.trust_bundle,
                                  "--db", str(first.db_path))
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_stream_on_one_process_shows_what_another_saved(
        two_processes: tuple[DataCenterProcess, DataCenterProcess], operator: SigningCard,
        declarant: SigningCard) -> None:
    first, second = two_processes
    # The stream is open on A before anything is saved: what it shows arrives live.
    stream = first.stub().WatchReceipts(operator.request("WatchReceipts", {"after": 0}),
                                        timeout=20)
    through_b = second.stub()
    saved = through_b.Save(operator.request("Save", {"document": valid_declaration()}))
    declared = through_b.Declare(declarant.request("Declare",
                                                   {"number": saved.temporary_number}))
    assert declared.status == pb.DECLARED
    seen: list[pb.Receipt] = []
    for receipt in stream:  # DEADLINE_EXCEEDED (a failure) if B's receipts never reach A
        seen.append(receipt)
        if receipt.temporary_number == saved.temporary_number and \
                receipt.kind == pb.CLEARED_RECEIPT:
            break
    stream.cancel()
    mine = [r for r in seen if r.temporary_number == saved.temporary_number]
    assert [r.kind for r in mine] == [pb.STORED_RECEIPT, pb.CLEARED_RECEIPT]
    assert mine[0].unified_number == declared.unified_number
    sequences = [r.sequence for r in seen]
    assert sequences == sorted(set(sequences))  # in order, none twice
