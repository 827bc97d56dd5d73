"""Review stand-in, receipts stream and fees (QP FAQ §五(三), 十一(六))."""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from eport.common.profile import CardKind
from eport.datacenter.clock import CHINA_TIME
from eport.datacenter.review import PolicyError, ReviewPolicy
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import new_database, opened
from tests.support.datacenter_stack import (
    ENTERPRISE_B,
    SigningCard,
    make_signing_card,
    serving,
)
from tests.support.waiting import wait_until

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")

Stub = pb_grpc.DataCenterStub
ALL_TIME = {"from": "2020-01-01", "to": "2099-12-31"}


def call(stub: Stub, card: SigningCard, method: str, **body: Any) -> Any:
    return getattr(stub, method)(card.request(method, body))


def save(stub: Stub, card: SigningCard, document: dict[str, Any] | None = None,
         **extra: Any) -> pb.DocumentRecord:
    record: pb.DocumentRecord = call(stub, card, "Save",
                                     document=document or valid_declaration(), **extra)
    return record


def wait_status(stub: Stub, card: SigningCard, number: str, status: int,
                timeout: float = 10.0) -> pb.DocumentRecord:
    def reached() -> pb.DocumentRecord | None:
        record: pb.DocumentRecord = call(stub, card, "GetDocument", number=number)
        return record if record.status == status else None

    found: pb.DocumentRecord = wait_until(reached, timeout=timeout, interval=0.02,
                                          what=f"{number} has status {status}")
    return found


def test_review_policies_parse() -> None:
    assert ReviewPolicy.parse("accept").accepts(1)
    reject = ReviewPolicy.parse("reject:R01:单证不齐")
    assert not reject.accepts(2) and reject.reason == "单证不齐"
    first = ReviewPolicy.parse("reject-first:E7")
    assert not first.accepts(1) and first.accepts(2) and first.reason
    for bad in ("maybe", "reject", "reject:", "accept:x", "reject:has space"):
        with pytest.raises(PolicyError):
            ReviewPolicy.parse(bad)


def test_fee_once_after_a_rejection_and_a_re_declaration(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard,
        declarant: SigningCard) -> None:
    other = make_signing_card(test_ca, CardKind.DECLARANT, enterprise=ENTERPRISE_B)
    with serving(tmp_path, test_ca.trust_bundle,
                 review=ReviewPolicy.parse("reject-first:E01:申报要素不全")) as (_, stub):
        document = valid_declaration()
        saved = save(stub, operator, document)
        first = call(stub, declarant, "Declare", number=saved.temporary_number)
        assert first.fee_charged
        rejected = wait_status(stub, declarant, saved.temporary_number, pb.REJECTED)
        assert rejected.reject_reason_code == "E01" and rejected.reject_reason == "申报要素不全"
        assert not rejected.entry_number
        # 退单: modify and declare again (QP FAQ §五(三): still one fee)
        document["header"]["remarks"] = "补充申报要素"
        save(stub, operator, document, temporary_number=saved.temporary_number)
        again = call(stub, declarant, "Declare", number=rejected.unified_number)
        assert again.declaration_count == 2 and again.status == pb.DECLARED
        cleared = wait_status(stub, declarant, saved.temporary_number, pb.CLEARED)
        receipts = call(stub, operator, "ListReceipts", after=0).receipts
        assert [r.kind for r in receipts] == [pb.STORED_RECEIPT, pb.REJECTED_RECEIPT,
                                              pb.CLEARED_RECEIPT]
        assert receipts[1].reason_code == "E01" and "退单" in receipts[1].message_zh

        statement = call(stub, operator, "GetStatement", **ALL_TIME)
        assert statement.enterprise_code == operator.customs_code
        assert statement.entries == 1 and statement.total_fen == 1500
        line = statement.lines[0]
        assert (line.temporary_number, line.unified_number, line.entry_number,
                line.amount_fen) == (saved.temporary_number, cleared.unified_number,
                                     cleared.entry_number, 1500)
        today = datetime.now(UTC).astimezone(CHINA_TIME).date().isoformat()
        assert call(stub, declarant, "GetStatement", **{"from": today, "to": today}).entries
        assert not call(stub, operator, "GetStatement",
                        **{"from": "2020-01-01", "to": "2020-12-31"}).entries
        assert not call(stub, other, "GetStatement", **ALL_TIME).entries


def test_the_fee_goes_to_the_enterprise_of_the_first_saver(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard,
        declarant: SigningCard) -> None:
    with serving(tmp_path, test_ca.trust_bundle) as (_, stub):
        first = save(stub, operator)
        second = save(stub, declarant)  # the declarant saved this one itself
        for record in (first, second):
            call(stub, declarant, "Declare", number=record.temporary_number)
        statement = call(stub, operator, "GetStatement", **ALL_TIME)
        assert statement.entries == 2 and statement.total_fen == 3000
        records = [call(stub, operator, "GetDocument", number=r.temporary_number)
                   for r in (first, second)]
        assert {r.enterprise_code for r in records} == {operator.customs_code}
        assert [r.saved_by_card for r in records] == [operator.card_id, declarant.card_id]


def test_review_delay_and_restart_resume_pending_reviews(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard,
        declarant: SigningCard) -> None:
    with serving(tmp_path, test_ca.trust_bundle, review_delay=0.6) as (_, stub):
        saved = save(stub, operator)
        declared_at = time.monotonic()
        call(stub, declarant, "Declare", number=saved.temporary_number)
        assert call(stub, operator, "GetDocument",
                    number=saved.temporary_number).status == pb.DECLARED
        wait_status(stub, operator, saved.temporary_number, pb.CLEARED)
        assert time.monotonic() - declared_at >= 0.5
        pending = save(stub, operator)
        call(stub, declarant, "Declare", number=pending.temporary_number)
    # Stopped before the review was due; a new server on the same file resumes it.
    with opened(new_database(tmp_path)) as database:
        assert database.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 1
    with serving(tmp_path, test_ca.trust_bundle, review_delay=30) as (_, stub):
        cleared = wait_status(stub, operator, pending.temporary_number, pb.CLEARED)
        assert cleared.entry_number


def test_reject_policy_sends_the_reason(tmp_path: Path, test_ca: TestCA,
                                        operator: SigningCard, declarant: SigningCard) -> None:
    with serving(tmp_path, test_ca.trust_bundle,
                 review=ReviewPolicy.parse("reject:R09")) as (_, stub):
        saved = save(stub, operator)
        call(stub, declarant, "Declare", number=saved.temporary_number)
        rejected = wait_status(stub, operator, saved.temporary_number, pb.REJECTED)
        assert rejected.reject_reason_code == "R09" and rejected.reject_reason
        info = stub.GetInfo(pb.GetInfoRequest())
        assert info.review_policy.startswith("reject:R09")


def _collect(stream: Any, into: queue.Queue[Any]) -> None:
    try:
        for receipt in stream:
            into.put(receipt)
        into.put("end")
    except grpc.RpcError as error:
        into.put(error)


def test_watch_receipts_gets_the_backlog_then_live_ones(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard,
        declarant: SigningCard) -> None:
    other = make_signing_card(test_ca, CardKind.DECLARANT, enterprise=ENTERPRISE_B)
    with serving(tmp_path, test_ca.trust_bundle, review_delay=0.2) as (running, stub):
        first = save(stub, operator)
        call(stub, operator, "Upload", number=first.temporary_number)
        received: queue.Queue[Any] = queue.Queue()
        stream = stub.WatchReceipts(operator.request("WatchReceipts", {"after": 0}))
        threading.Thread(target=_collect, args=(stream, received), daemon=True).start()
        backlog = received.get(timeout=5)
        assert backlog.kind == pb.STORED_RECEIPT
        assert backlog.temporary_number == first.temporary_number
        # Another enterprise's receipts never reach this stream.
        foreign = save(stub, other)
        call(stub, other, "Declare", number=foreign.temporary_number)
        call(stub, declarant, "Declare", number=first.temporary_number)
        live = received.get(timeout=5)
        assert live.kind == pb.CLEARED_RECEIPT and live.sequence > backlog.sequence
        assert live.temporary_number == first.temporary_number
        with pytest.raises(queue.Empty):
            received.get(timeout=0.5)
        # A second watcher resumes after a sequence; cancelling ends it cleanly.
        resumed = stub.WatchReceipts(operator.request("WatchReceipts",
                                                      {"after": backlog.sequence}))
        assert next(resumed).sequence == live.sequence
        resumed.cancel()
        # The server stopping ends the first stream instead of hanging the shutdown.
        started = time.monotonic()
        running.stop(grace=5.0)
        assert received.get(timeout=5) == "end"
        assert time.monotonic() - started < 4
