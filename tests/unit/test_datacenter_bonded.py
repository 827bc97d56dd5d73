"""Bonded verification (保税核查, bonded manual) through the real gRPC server: save, declare, the
review's 审批通过 / 退单 receipts, query, read-only detail, modify, 库存重新申报 once, e-book
records, agents acting under grants, the ebook command and the schema 2 → 3 migration."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from eport.common.profile import CardKind
from eport.datacenter import authorization, ebooks, registry
from eport.datacenter.clock import CHINA_TIME, to_micros
from eport.datacenter.command import cli
from eport.datacenter.review import ReviewPolicy
from eport.datacenter.storage import migrations, open_store
from eport.datacenter.trust import Identity
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.bonded_documents import ebook_bonded, sample_ebook_items, valid_bonded
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import new_database
from tests.support.datacenter_stack import (
    ENTERPRISE_A,
    ENTERPRISE_B,
    SigningCard,
    error_detail,
    make_signing_card,
    serving,
)
from tests.support.waiting import wait_until

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")

A, B = ENTERPRISE_A[0], ENTERPRISE_B[0]
EBOOK_A, EBOOK_B = "E01040000001", "E44010000002"


class Stack:
    """The served data centre with both stubs."""

    def __init__(self, running: Any, customs: pb_grpc.DataCenterStub,
                 bonded: pb_grpc.BondedVerificationStub) -> None:
        self.running = running
        self.customs = customs
        self.bonded = bonded

    def call(self, card: SigningCard, method: str, **body: Any) -> Any:
        stub = self.customs if hasattr(self.customs, method) else self.bonded
        return getattr(stub, method)(card.request(method, body))

    def refused(self, card: SigningCard, method: str, **body: Any
                ) -> tuple[grpc.StatusCode, pb.DataCenterErrorDetail]:
        with pytest.raises(grpc.RpcError) as caught:
            self.call(card, method, **body)
        return caught.value.code(), error_detail(caught.value)

    def save(self, card: SigningCard, document: dict[str, Any], **extra: Any
             ) -> pb.BondedRecord:
        record: pb.BondedRecord = self.call(card, "SaveBonded", document=document, **extra)
        return record

    def wait(self, card: SigningCard, number: str, status: int, timeout: float = 10.0
             ) -> pb.BondedRecord:
        def reached() -> pb.BondedRecord | None:
            record: pb.BondedRecord = self.call(card, "GetBonded", number=number)
            return record if record.status == status else None

        found: pb.BondedRecord = wait_until(reached, timeout=timeout, interval=0.02,
                                            what=f"{number} has status {status}")
        return found

    def receipts(self, card: SigningCard) -> list[pb.Receipt]:
        return list(self.call(card, "ListReceipts", after=0).receipts)

    def count(self) -> int:
        with self.running.store.read() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM bonded_documents").fetchone()[0])


@contextlib.contextmanager
def stack_at(directory: Path, ca: TestCA, **settings: Any) -> Iterator[Stack]:
    with serving(directory, ca.trust_bundle, **settings) as (running, customs), \
            grpc.insecure_channel(running.address) as channel:
        yield Stack(running, customs, pb_grpc.BondedVerificationStub(channel))


@pytest.fixture
def stack(tmp_path: Path, test_ca: TestCA) -> Iterator[Stack]:
    with stack_at(tmp_path, test_ca) as served:
        yield served


@pytest.fixture(scope="module")
def legal_person(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.LEGAL_PERSON)


@pytest.fixture(scope="module")
def agent(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.OPERATOR, enterprise=ENTERPRISE_B)


@pytest.fixture(scope="module")
def agent_declarant(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.DECLARANT, enterprise=ENTERPRISE_B)


def ours(**overrides: Any) -> dict[str, Any]:
    """A valid 加贸手册 document verifying enterprise A."""
    return valid_bonded(enterprise_code=A, enterprise_name=ENTERPRISE_A[1], **overrides)


def china_today() -> str:
    return datetime.now(UTC).astimezone(CHINA_TIME).strftime("%Y%m%d")


def import_ebook(stack: Stack, number: str, enterprise: str, count: int = 3) -> None:
    books = ebooks.parse_ebooks({"ebook_number": number, "enterprise_code": enterprise,
                                 "items": sample_ebook_items(number, count)})
    with stack.running.store.write() as connection:
        ebooks.import_ebooks(connection, books)


def grant(stack: Stack, principal: str, card: SigningCard, subsystem: str, *,
          operators: bool = True) -> str:
    """The principal's inter-enterprise grant to the card's enterprise and (operators) the
    agent's intra-enterprise grant to the card, through the authorization module."""
    today = datetime.now(UTC).astimezone(CHINA_TIME).date()
    agent_code = card.customs_code
    at = to_micros(datetime.now(UTC))
    principal_card = Identity("8600000000000001", principal, "91110000000000001X", "委托企业",
                              CardKind.LEGAL_PERSON, "00000001")
    agent_card = Identity("8600000000000002", agent_code, "91440000000000002X", "代理企业",
                          CardKind.LEGAL_PERSON, "00000002")
    with stack.running.store.write() as connection:
        registry.import_enterprises(
            connection, [registry.Enterprise(agent_code, agent_card.credit_code, "代理企业")], at)
        given = authorization.grant_enterprise(
            connection, principal_card, agent_code, subsystem, "operate",
            today - timedelta(days=1), today + timedelta(days=30), today, at)
        if operators:
            authorization.grant_operators(connection, agent_card, given.grant_id,
                                          [card.card_id], today, at)
    return given.grant_id


def delete_grant(stack: Stack, principal: str, grant_id: str) -> None:
    """What `eport auth delete` does (the principal's legal-person card, e-book manual §4 1.1)."""
    principal_card = Identity("8600000000000001", principal, "91110000000000001X", "委托企业",
                              CardKind.LEGAL_PERSON, "00000001")
    with stack.running.store.write() as connection:
        authorization.delete_enterprise_grant(connection, principal_card, grant_id)


# ---- the flow ------------------------------------------------------------------------------

def test_save_declare_stored_and_approved_receipts_beside_the_customs_ones(
        stack: Stack, operator: SigningCard, declarant: SigningCard) -> None:
    customs = stack.call(declarant, "Save", document=valid_declaration())
    stack.call(declarant, "Declare", number=customs.temporary_number)

    saved = stack.save(operator, ours())
    assert saved.status == pb.BONDED_SAVED and saved.temporary_number.startswith("Z")
    assert len(saved.temporary_number) == 19 and not saved.unified_number
    assert (saved.enterprise_code, saved.agent_code, saved.internal_number) == (A, A, "08091601")
    assert saved.stocktaking_date == "20260916" and not saved.declaration_date
    assert saved.saved_by_card == operator.card_id

    declared = stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    assert declared.status == pb.BONDED_STORED and declared.declaration_count == 1
    assert declared.unified_number.startswith("B") and len(declared.unified_number) == 18
    assert declared.declaration_date == china_today()
    assert json.loads(declared.document_json)["header"]["declaration_date"] == china_today()

    approved = stack.wait(operator, declared.unified_number, pb.BONDED_APPROVED)
    assert approved.reviewed_at.seconds > 0 and not approved.redeclared
    # Declaring a declared (here: approved) record again changes nothing.
    again = stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    assert again.status == pb.BONDED_APPROVED and again.declaration_count == 1

    receipts = stack.receipts(operator)
    bonded = [r for r in receipts if r.subsystem == "bonded"]
    assert [r.kind for r in bonded] == [pb.STORED_RECEIPT, pb.APPROVED_RECEIPT]
    assert all(r.temporary_number == saved.temporary_number for r in bonded)
    assert "入库成功" in bonded[0].message_zh and "审批通过" in bonded[1].message_zh
    customs_kinds = [r.kind for r in receipts if r.subsystem == "customs"]
    assert customs_kinds[0] == pb.STORED_RECEIPT and len(customs_kinds) >= 1
    sequences = [r.sequence for r in receipts]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_ebook_manual_2_3_the_legal_person_card_enters_modifies_deletes_and_declares(
        stack: Stack, declarant: SigningCard, legal_person: SigningCard) -> None:
    """e-book manual §2.3 用户类别: 企业法人卡 录入、暂存、修改、删除、申报、查询/打印 (the e-book
    subsystems); bonded verification by the same reading (the bonded manual names no card kind)."""
    document = ours(items=3)
    saved = stack.save(legal_person, document)  # 录入, 暂存
    assert saved.status == pb.BONDED_SAVED and saved.saved_by_card == legal_person.card_id
    document["header"]["remarks"] = "法人卡修改"
    modified = stack.save(legal_person, document, number=saved.temporary_number)  # 修改
    assert json.loads(modified.document_json)["header"]["remarks"] == "法人卡修改"
    shorter = stack.call(legal_person, "DeleteBondedItem", number=saved.temporary_number,
                         item_number=3)  # 删除 (an item)
    assert len(json.loads(shorter.document_json)["items"]) == 2
    declared = stack.call(legal_person, "DeclareBonded", number=saved.temporary_number)  # 申报
    assert declared.status == pb.BONDED_STORED and declared.declared_by_card == \
        legal_person.card_id
    assert stack.call(legal_person, "QueryBonded").records[0].temporary_number == \
        saved.temporary_number  # 查询
    other = stack.save(legal_person, ours(internal_number="LP2"))
    assert stack.call(legal_person, "DeleteBonded",  # 删除 (the whole record)
                      number=other.temporary_number).status == pb.BONDED_DELETED
    # The declarant and operator cards keep their rights.
    assert stack.save(declarant, ours(internal_number="DC1")).status == pb.BONDED_SAVED


def test_query_by_each_criterion(stack: Stack, operator: SigningCard,
                                 agent: SigningCard) -> None:
    first = stack.save(operator, ours(internal_number="Q1", stocktaking_date="20260901"))
    second = stack.save(operator, ours(internal_number="Q2", stocktaking_date="20260902"))
    stack.call(operator, "DeclareBonded", number=second.temporary_number)

    def numbers(**body: Any) -> list[str]:
        result = stack.call(operator, "QueryBonded", **body)
        assert all(not r.document_json for r in result.records)
        return [r.temporary_number for r in result.records]

    assert numbers() == [first.temporary_number, second.temporary_number]
    assert numbers(internal_number="Q2") == [second.temporary_number]
    assert numbers(enterprise_code=A) == numbers()
    assert numbers(enterprise_code=B) == []
    assert numbers(stocktaking_date="20260901") == [first.temporary_number]
    today = china_today()
    assert numbers(declared_from=today, declared_to=today) == [second.temporary_number]
    assert numbers(declared_from="20000101", declared_to="20001231") == []
    assert numbers(declared_to=today) == [second.temporary_number]
    limited = stack.call(operator, "QueryBonded", limit=1)
    assert len(limited.records) == 1 and limited.truncated
    # Another enterprise sees nothing of ours; malformed criteria are BAD_REQUEST.
    assert list(stack.call(agent, "QueryBonded").records) == []
    for body in ({"stocktaking_date": "2026-09-01"}, {"declared_from": "20261341"},
                 {"enterprise_code": "53012345"}, {"status": "SAVED"}):
        _code, detail = stack.refused(operator, "QueryBonded", **body)
        assert detail.reason == pb.BAD_REQUEST, body


def test_detail_is_read_only_and_hidden_from_other_enterprises(
        stack: Stack, operator: SigningCard, agent: SigningCard) -> None:
    saved = stack.save(operator, ours())
    detail = stack.call(operator, "GetBonded", number=saved.temporary_number)
    assert detail.read_only and json.loads(detail.document_json)["header"]["enterprise_code"] == A
    code, error = stack.refused(agent, "GetBonded", number=saved.temporary_number)
    assert code == grpc.StatusCode.NOT_FOUND and error.reason == pb.DOCUMENT_NOT_FOUND
    code, error = stack.refused(operator, "GetBonded", number="Z202600000000999999")
    assert error.reason == pb.DOCUMENT_NOT_FOUND
    code, error = stack.refused(operator, "GetBonded", number="I20260000000000001")
    assert error.reason == pb.BAD_REQUEST


def test_modify_a_saved_record_and_not_one_under_review(
        stack: Stack, operator: SigningCard) -> None:
    saved = stack.save(operator, ours())
    document = json.loads(saved.document_json)
    document["header"]["stocktaking_date"] = "20260920"
    document["items"][0]["stock_qty"] = "5"
    document["items"][0]["total_stock_qty"] = ""  # computed again (normalise)
    modified = stack.save(operator, document, number=saved.temporary_number)
    assert modified.temporary_number == saved.temporary_number
    assert modified.status == pb.BONDED_SAVED and modified.stocktaking_date == "20260920"
    item = json.loads(modified.document_json)["items"][0]
    assert item["total_stock_qty"] == "41.50"  # 5 + 21 + 0 + 12.25 + 0.25 + 3
    assert stack.count() == 1

    stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    document["header"]["stocktaking_date"] = "20260921"
    _code, detail = stack.refused(operator, "SaveBonded", document=document,
                                 number=saved.temporary_number)
    assert detail.reason == pb.WRONG_STATE  # under review or approved by now
    stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)
    _code, detail = stack.refused(operator, "SaveBonded", document=document,
                                 number=saved.temporary_number)
    assert detail.reason == pb.WRONG_STATE and "库存重新申报" in detail.remedy_zh
    assert stack.call(operator, "GetBonded",
                      number=saved.temporary_number).stocktaking_date == "20260920"


def test_a_record_under_review_cannot_be_modified(tmp_path: Path, test_ca: TestCA,
                                                  operator: SigningCard) -> None:
    with stack_at(tmp_path, test_ca, review_delay=60.0) as stack:
        saved = stack.save(operator, ours())
        stack.call(operator, "DeclareBonded", number=saved.temporary_number)
        code, detail = stack.refused(operator, "SaveBonded", document=ours(),
                                     number=saved.temporary_number)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and detail.reason == pb.WRONG_STATE
        assert "审核中" in detail.message_zh
        for method, extra in (("DeleteBonded", {}), ("DeleteBondedItem", {"item_number": 1})):
            code, detail = stack.refused(operator, method, number=saved.temporary_number,
                                         **extra)
            assert detail.reason == pb.WRONG_STATE, method


def test_redeclare_stock_once_per_approved_record(stack: Stack, operator: SigningCard) -> None:
    saved = stack.save(operator, ours())
    code, detail = stack.refused(operator, "RedeclareStock", number=saved.temporary_number,
                                 document=ours())
    assert detail.reason == pb.WRONG_STATE  # not approved yet
    stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    approved = stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)

    document = json.loads(approved.document_json)
    document["items"][0]["stock_qty"] = "900"
    document["items"][0]["total_stock_qty"] = ""
    renamed = json.loads(approved.document_json)
    renamed["header"]["internal_number"] = "OTHER1"
    code, detail = stack.refused(operator, "RedeclareStock", number=saved.temporary_number,
                                 document=renamed)
    assert detail.reason == pb.VALIDATION_FAILED
    assert detail.problems[0].path == "header.internal_number"

    redeclared = stack.call(operator, "RedeclareStock", number=approved.unified_number,
                            document=document)
    assert redeclared.status == pb.BONDED_STORED and redeclared.redeclared
    assert redeclared.declaration_count == 2
    assert redeclared.unified_number == approved.unified_number
    assert json.loads(redeclared.document_json)["items"][0]["total_stock_qty"] == "936.50"
    again = stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)
    assert again.redeclared

    code, detail = stack.refused(operator, "RedeclareStock", number=saved.temporary_number,
                                 document=document)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and detail.reason == pb.WRONG_STATE
    assert "每笔审批通过的数据，企业只可变更一次" in detail.message_zh
    kinds = [r.kind for r in stack.receipts(operator) if r.subsystem == "bonded"]
    assert kinds == [pb.STORED_RECEIPT, pb.APPROVED_RECEIPT] * 2


def test_rejected_then_modified_and_declared_again(tmp_path: Path, test_ca: TestCA,
                                                   operator: SigningCard) -> None:
    policy = ReviewPolicy.parse("reject-first:R01:库存数据有误")
    with stack_at(tmp_path, test_ca, review=policy) as stack:
        saved = stack.save(operator, ours())
        stack.call(operator, "DeclareBonded", number=saved.temporary_number)
        rejected = stack.wait(operator, saved.temporary_number, pb.BONDED_REJECTED)
        assert (rejected.reject_reason_code, rejected.reject_reason) == ("R01", "库存数据有误")

        document = json.loads(rejected.document_json)  # dated: the date is the centre's own
        document["items"][0]["online_qty"] = "30"
        modified = stack.save(operator, document, number=saved.temporary_number)
        assert modified.status == pb.BONDED_REJECTED
        declared = stack.call(operator, "DeclareBonded", number=saved.temporary_number)
        assert declared.status == pb.BONDED_STORED and declared.declaration_count == 2
        assert not declared.reject_reason_code
        stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)
        receipts = [r for r in stack.receipts(operator) if r.subsystem == "bonded"]
        assert [r.kind for r in receipts] == [pb.STORED_RECEIPT, pb.REJECTED_RECEIPT,
                                              pb.STORED_RECEIPT, pb.APPROVED_RECEIPT]
        assert receipts[1].reason_code == "R01" and "退单" in receipts[1].message_zh


def test_reviews_survive_a_restart(tmp_path: Path, test_ca: TestCA,
                                   operator: SigningCard) -> None:
    with stack_at(tmp_path, test_ca, review_delay=3600.0) as stack:
        saved = stack.save(operator, ours())
        stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    with stack_at(tmp_path, test_ca) as stack:
        # The pending review was written with a due time an hour ahead: make it due now.
        with stack.running.store.write() as connection:
            connection.execute("UPDATE bonded_reviews SET due_at = 0")
        stack.running.worker.wake()
        stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)


# ---- checks --------------------------------------------------------------------------------

def test_save_reports_the_first_bad_and_the_first_empty_field(
        stack: Stack, operator: SigningCard) -> None:
    document = ours(stocktaking_date="2026-09-16", phone="x" * 40)
    document["items"][0]["unit"] = "KG"
    document["items"][1]["name"] = ""
    document["items"][1]["stock_qty"] = ""
    code, detail = stack.refused(operator, "SaveBonded", document=document)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.VALIDATION_FAILED
    assert [(p.path, p.code) for p in detail.problems] == [
        ("header.stocktaking_date", "format"), ("items[1].name", "required")]
    assert "字段格式不正确，请修改" in detail.problems[0].message_zh
    assert "不能为空" in detail.problems[1].message_zh
    assert stack.count() == 0


def test_declare_reports_every_empty_field_at_once(stack: Stack, operator: SigningCard) -> None:
    document = ours()
    document["items"].append({"item_number": 3})  # the screen's fresh empty row: saved as is
    saved = stack.save(operator, document)
    _code, detail = stack.refused(operator, "DeclareBonded", number=saved.temporary_number)
    assert detail.reason == pb.VALIDATION_FAILED
    empties = [p.path for p in detail.problems if p.code == "required"]
    assert {"items[2].record_item_number", "items[2].hs_code", "items[2].name",
            "items[2].unit", "items[2].stock_qty"} <= set(empties)
    record = stack.call(operator, "GetBonded", number=saved.temporary_number)
    assert record.status == pb.BONDED_SAVED and record.declaration_count == 0


def test_internal_numbers_are_unique_per_verified_enterprise(
        stack: Stack, operator: SigningCard, agent: SigningCard) -> None:
    first = stack.save(operator, ours(internal_number="DUP1"))
    _code, detail = stack.refused(operator, "SaveBonded", document=ours(internal_number="DUP1"))
    assert detail.reason == pb.VALIDATION_FAILED
    assert detail.problems[0].path == "header.internal_number"
    assert "企业内部编号 不允许重复" in detail.problems[0].message_zh
    assert first.temporary_number in detail.problems[0].message_en
    # Another enterprise's verification may use the same internal number.
    theirs = valid_bonded(enterprise_code=B, internal_number="DUP1")
    assert stack.save(agent, theirs).internal_number == "DUP1"
    # Modifying a record keeps its own number without clashing with itself.
    again = json.loads(first.document_json)
    assert stack.save(operator, again, number=first.temporary_number).internal_number == "DUP1"


def test_save_is_idempotent_on_the_client_reference(stack: Stack, operator: SigningCard) -> None:
    document = ours()
    first = stack.save(operator, document)
    second = stack.save(operator, document)
    assert second.temporary_number == first.temporary_number and stack.count() == 1


def test_bad_input_and_replays_change_nothing(stack: Stack, operator: SigningCard) -> None:
    _code, detail = stack.refused(operator, "SaveBonded", document=ours(), extra=1)
    assert detail.reason == pb.BAD_REQUEST
    _code, detail = stack.refused(operator, "SaveBonded", document=[1])
    assert detail.reason == pb.BAD_REQUEST
    request = operator.request("SaveBonded", {"document": ours()})
    stack.bonded.SaveBonded(request)
    with pytest.raises(grpc.RpcError) as caught:
        stack.bonded.SaveBonded(request)
    assert error_detail(caught.value).reason == pb.REPLAY and stack.count() == 1
    query = operator.request("QueryBonded", {})
    stack.bonded.QueryBonded(query)
    with pytest.raises(grpc.RpcError) as caught:
        stack.bonded.QueryBonded(query)
    assert error_detail(caught.value).reason == pb.REPLAY


def test_total_stock_override_is_kept_with_a_warning(stack: Stack, operator: SigningCard
                                                     ) -> None:
    document = ours()
    document["items"][0]["total_stock_qty"] = "1"
    saved = stack.save(operator, document)
    assert json.loads(saved.document_json)["items"][0]["total_stock_qty"] == "1"
    assert [w.path for w in saved.warnings] == ["items[0].total_stock_qty"]


# ---- e-books -------------------------------------------------------------------------------

def test_ebook_items_must_match_the_principals_ebook(stack: Stack, operator: SigningCard
                                                     ) -> None:
    import_ebook(stack, EBOOK_A, A)
    import_ebook(stack, EBOOK_B, B)
    good = ebook_bonded(EBOOK_A, 2, enterprise_code=A, internal_number="EB1")
    assert stack.save(operator, good).status == pb.BONDED_SAVED

    wrong_name = ebook_bonded(EBOOK_A, 2, enterprise_code=A, internal_number="EB2")
    wrong_name["items"][1]["name"] = "别的名称"
    _code, detail = stack.refused(operator, "SaveBonded", document=wrong_name)
    assert [(p.path, p.code) for p in detail.problems] == [("items[1].name", "rule")]

    unknown = ebook_bonded(EBOOK_A, 2, enterprise_code=A, internal_number="EB3")
    unknown["items"][1]["record_item_number"] = "99"
    _code, detail = stack.refused(operator, "SaveBonded", document=unknown)
    assert [p.path for p in detail.problems] == ["items[1].record_item_number"]

    # Another enterprise's e-book is "not found" for ours.
    foreign = ebook_bonded(EBOOK_B, 1, enterprise_code=A, internal_number="EB4")
    _code, detail = stack.refused(operator, "SaveBonded", document=foreign)
    assert [p.path for p in detail.problems] == ["items[0].record_item_number"]
    assert stack.count() == 1


def test_get_ebook_item(stack: Stack, operator: SigningCard, agent: SigningCard) -> None:
    import_ebook(stack, EBOOK_A, A)
    item = stack.call(operator, "GetEBookItem", ebook_number=EBOOK_A, record_item_number="2")
    expected = sample_ebook_items(EBOOK_A, 2)[1]
    assert (item.hs_code, item.name, item.specification, item.unit) == (
        expected["hs_code"], expected["name"], expected["specification"], expected["unit"])
    assert item.enterprise_code == A and item.ebook_number == EBOOK_A
    for card, number, item_number in ((operator, EBOOK_A, "9"), (operator, "NOSUCH", "1"),
                                      (agent, EBOOK_A, "2")):
        _code, detail = stack.refused(card, "GetEBookItem", ebook_number=number,
                                     record_item_number=item_number)
        assert detail.reason == pb.DOCUMENT_NOT_FOUND, (number, item_number)
    grant(stack, A, agent, "ebook")
    assert stack.call(agent, "GetEBookItem", ebook_number=EBOOK_A,
                      record_item_number="2").name == expected["name"]


def test_the_ebook_command(tmp_path: Path) -> None:
    db = new_database(tmp_path, "dc")
    books = tmp_path / "ebooks.json"
    books.write_text(json.dumps([
        {"ebook_number": EBOOK_A, "enterprise_code": A, "items": sample_ebook_items(EBOOK_A, 3)},
        {"ebook_number": EBOOK_B, "enterprise_code": B, "items": sample_ebook_items(EBOOK_B, 1)},
    ], ensure_ascii=False), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["ebook", "import", str(books), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "2 e-book(s), 4 record item(s)" in result.output
    listed = runner.invoke(cli, ["ebook", "list", "--db", str(db)])
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [f"{EBOOK_A}\t{A}\t3 item(s)",
                                          f"{EBOOK_B}\t{B}\t1 item(s)"]

    # Re-importing replaces the items; moving an e-book to another enterprise is refused.
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"ebook_number": EBOOK_A, "enterprise_code": A,
                               "items": sample_ebook_items(EBOOK_A, 1)}), encoding="utf-8")
    assert runner.invoke(cli, ["ebook", "import", str(one), "--db", str(db)]).exit_code == 0
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps({"ebook_number": EBOOK_A, "enterprise_code": B, "items": []}),
                     encoding="utf-8")
    result = runner.invoke(cli, ["ebook", "import", str(moved), "--db", str(db)])
    assert result.exit_code == 1 and "belongs to enterprise" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ebook_number": EBOOK_A, "enterprise_code": A,
                               "items": [{"record_item_number": "1", "hs_code": "39A"}]}))
    result = runner.invoke(cli, ["ebook", "import", str(bad), "--db", str(db)])
    assert result.exit_code == 1 and "hs_code" in result.output
    listed = runner.invoke(cli, ["ebook", "list", "--db", str(db)])
    assert listed.output.splitlines()[0] == f"{EBOOK_A}\t{A}\t1 item(s)"
    missing = runner.invoke(cli, ["ebook", "list", "--db", new_database(tmp_path, "none")])
    assert missing.exit_code == 1


# ---- agents --------------------------------------------------------------------------------

def test_an_agent_needs_both_grants(stack: Stack, operator: SigningCard, agent: SigningCard,
                                    agent_declarant: SigningCard) -> None:
    code, detail = stack.refused(agent, "SaveBonded", document=ours())
    assert code == grpc.StatusCode.PERMISSION_DENIED and detail.reason == pb.NOT_AUTHORIZED
    grant(stack, A, agent, "handbook", operators=False)
    code, detail = stack.refused(agent, "SaveBonded", document=ours())
    assert detail.reason == pb.NOT_AUTHORIZED and "企业内授权" in detail.message_zh
    # A grant for another subsystem is not one for this mode (加贸手册 is "handbook").
    grant(stack, A, agent, "ebook")
    code, detail = stack.refused(agent, "SaveBonded", document=ours())
    assert detail.reason == pb.NOT_AUTHORIZED
    assert stack.count() == 0

    grant(stack, A, agent, "handbook")
    saved = stack.save(agent, ours())
    assert (saved.enterprise_code, saved.agent_code) == (A, B)
    declared = stack.call(agent, "DeclareBonded", number=saved.temporary_number)
    assert declared.declared_by_card == agent.card_id
    # The principal sees it; the agent's other card, without its operator grant, does not.
    stack.wait(operator, saved.temporary_number, pb.BONDED_APPROVED)
    assert [r.temporary_number for r in stack.call(operator, "QueryBonded").records] == [
        saved.temporary_number]
    code, detail = stack.refused(agent_declarant, "GetBonded", number=saved.temporary_number)
    assert detail.reason == pb.DOCUMENT_NOT_FOUND
    # The receipts go to the enterprise that entered it, as for customs declarations.
    assert [r.kind for r in stack.receipts(agent) if r.subsystem == "bonded"] == [
        pb.STORED_RECEIPT, pb.APPROVED_RECEIPT]


def test_ebook_manual_4_1_2_an_agents_query_lists_the_principals_records_while_granted(
        stack: Stack, operator: SigningCard, agent: SigningCard,
        agent_declarant: SigningCard) -> None:
    """E-book manual §4 1.2: "被授权的企业操作员可以对授权企业、授权子系统的数据进行相应的操作
    (查询、暂存、申报等)" and "删除 … 再次登录被授权子系统时，没有相应的操作权限": the agent's
    card lists the principal's records of the granted subsystem, whoever entered them, and none
    once the grant is deleted (not even those it saved itself)."""
    import_ebook(stack, EBOOK_A, A)
    by_principal = stack.save(operator, ours())  # 加贸手册: the handbook subsystem
    in_ebook = stack.save(operator, ebook_bonded(EBOOK_A, 1, enterprise_code=A,
                                                 internal_number="EB1"))

    def listed(card: SigningCard, **body: Any) -> list[str]:
        return [r.temporary_number for r in stack.call(card, "QueryBonded", **body).records]

    assert listed(agent) == []
    handbook = grant(stack, A, agent, "handbook")
    assert listed(agent) == [by_principal.temporary_number]
    by_agent = stack.save(agent, ours(internal_number="AG1"))
    assert listed(agent) == [by_principal.temporary_number, by_agent.temporary_number]
    assert listed(agent, enterprise_code=A, internal_number="AG1") == [by_agent.temporary_number]
    # The e-book record needs the e-book subsystem; the agent's card without its own operator
    # grant sees nothing; the principal sees all of its records.
    assert in_ebook.temporary_number not in listed(agent)
    assert listed(agent_declarant) == []
    assert listed(operator) == [by_principal.temporary_number, in_ebook.temporary_number,
                                by_agent.temporary_number]
    grant(stack, A, agent, "ebook")
    assert in_ebook.temporary_number in listed(agent)

    delete_grant(stack, A, handbook)
    assert listed(agent) == [in_ebook.temporary_number]
    code, detail = stack.refused(agent, "GetBonded", number=by_agent.temporary_number)
    assert (code, detail.reason) == (grpc.StatusCode.NOT_FOUND, pb.DOCUMENT_NOT_FOUND)
    assert listed(operator)[-1] == by_agent.temporary_number  # still the principal's record


def test_bonded_manual_2_2_1_3_a_handbook_grant_calls_up_the_handbooks_record_items(
        stack: Stack, agent: SigningCard) -> None:
    """Bonded manual §2.2.1.3 (纸质手册电子化: 由备案序号调用对应的商品编码 …) with e-book manual §4
    (加工贸易手册 is delegated on its own): an agent holding only the handbook grant calls up the
    record items of a 纸质手册电子化 document, as the data centre's save check reads them."""
    document = valid_bonded(management_mode="2", enterprise_code=A,
                            enterprise_name=ENTERPRISE_A[1])
    handbook_number = document["header"]["ebook_number"]
    import_ebook(stack, handbook_number, A)
    grant(stack, A, agent, "handbook")
    item = stack.call(agent, "GetEBookItem", ebook_number=handbook_number,
                      record_item_number="1", management_mode="2")
    assert item.name == document["items"][0]["name"] and item.enterprise_code == A
    # The e-book's items (mode 1, or an older client naming no mode) need the e-book grant.
    for extra in ({}, {"management_mode": "1"}):
        _code, detail = stack.refused(agent, "GetEBookItem", ebook_number=handbook_number,
                                      record_item_number="1", **extra)
        assert detail.reason == pb.DOCUMENT_NOT_FOUND and "加工贸易账册" in detail.remedy_zh
    for mode in ("3", "X", 2):
        _code, detail = stack.refused(agent, "GetEBookItem", ebook_number=handbook_number,
                                      record_item_number="1", management_mode=mode)
        assert detail.reason == pb.BAD_REQUEST, mode
    # What the client then sends, the data centre accepts.
    assert stack.save(agent, document).status == pb.BONDED_SAVED


# ---- 删除 (bonded manual §2.3) ------------------------------------------------------------------

def test_bonded_manual_2_3_delete_a_saved_record_and_its_number_is_never_given_again(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard, agent: SigningCard) -> None:
    """Bonded manual §2.3 删除: "光标在表头时 … 可删除整单数据"; a record never declared."""
    with stack_at(tmp_path, test_ca, review=ReviewPolicy.parse("reject:R1")) as stack:
        document = ours()
        saved = stack.save(operator, document)
        code, detail = stack.refused(agent, "DeleteBonded", number=saved.temporary_number)
        assert (code, detail.reason) == (grpc.StatusCode.NOT_FOUND, pb.DOCUMENT_NOT_FOUND)
        deleted = stack.call(operator, "DeleteBonded", number=saved.temporary_number)
        assert deleted.status == pb.BONDED_DELETED and deleted.deleted_by_card == \
            operator.card_id
        assert deleted.deleted_at.seconds > 0 and deleted.document_json == ""
        assert stack.call(operator, "DeleteBonded", number=saved.temporary_number) == deleted
        for method in ("GetBonded", "DeclareBonded"):
            _code, detail = stack.refused(operator, method, number=saved.temporary_number)
            assert detail.reason == pb.DOCUMENT_NOT_FOUND and "删除" in detail.message_zh
        assert list(stack.call(operator, "QueryBonded").records) == []
        # The same file saved again: a new record, a new number; the 企业内部编号 is free.
        again = stack.save(operator, document)
        assert again.temporary_number > saved.temporary_number
        assert again.internal_number == saved.internal_number
        assert stack.count() == 2  # the deleted one stays as a tombstone, number kept

        # Declared and sent back (退单): not deleted; its items may be, as in 修改.
        declared = stack.call(operator, "DeclareBonded", number=again.temporary_number)
        stack.wait(operator, declared.unified_number, pb.BONDED_REJECTED)
        code, detail = stack.refused(operator, "DeleteBonded", number=declared.unified_number)
        assert (code, detail.reason) == (grpc.StatusCode.FAILED_PRECONDITION, pb.WRONG_STATE)
        fixed = stack.call(operator, "DeleteBondedItem", number=declared.unified_number,
                           item_number=1)  # bonded manual §3.2.4: 修改 may delete items
        assert fixed.status == pb.BONDED_REJECTED
        assert len(json.loads(fixed.document_json)["items"]) == 1


def test_bonded_manual_2_3_delete_one_body_item_and_the_rest_are_renumbered(
        stack: Stack, operator: SigningCard) -> None:
    """Bonded manual §2.3: "光标在表体中某项时 … 可删除该项商品记录"; 序号 is the system's."""
    document = ours(items=3)
    names = [item["name"] for item in document["items"]]
    saved = stack.save(operator, document)
    shorter = stack.call(operator, "DeleteBondedItem", number=saved.temporary_number,
                         item_number=1)
    items = json.loads(shorter.document_json)["items"]
    assert [(item["item_number"], item["name"]) for item in items] == [(1, names[1]),
                                                                       (2, names[2])]
    _code, detail = stack.refused(operator, "DeleteBondedItem", number=saved.temporary_number,
                                  item_number=3)
    assert [(p.path, p.section) for p in detail.problems] == [("item_number", "bonded manual §2.3")]
    for body in ({"item_number": 0}, {"item_number": "1"}, {}):
        _code, detail = stack.refused(operator, "DeleteBondedItem",
                                      number=saved.temporary_number, **body)
        assert detail.reason == pb.BAD_REQUEST, body
    assert len(json.loads(stack.call(operator, "GetBonded", number=saved.temporary_number)
                          .document_json)["items"]) == 2


# ---- migrations ----------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_schema_2_to_3_keeps_customs_data_and_the_receipt_sequence(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    connection = sqlite3.connect(path, isolation_level=None)
    for migration in migrations()[:2]:
        connection.executescript("\n".join(migration.statements("sqlite")))
    connection.execute("PRAGMA user_version = 2")
    connection.execute(
        "INSERT INTO documents (id, temporary_number, status, document_json, document_type, "
        "direction, declaration_customs, enterprise_code, saved_by_card, saved_at, save_date, "
        "modified_at) VALUES (1, 'Z202600000000000001', 2, '{}', 'declaration', 'import', "
        "'5301', ?, 'card', 0, '2026-12-01', 0)", (A,))
    for _ in range(2):
        connection.execute(
            "INSERT INTO receipts (document_id, enterprise_code, kind, temporary_number, time, "
            "message_zh, message_en) VALUES (1, ?, 1, 'Z202600000000000001', 0, '入库成功', "
            "'Stored')", (A,))
    connection.execute("DELETE FROM receipts WHERE sequence = 2")  # the high-water mark stays
    connection.close()

    store = open_store(path)
    assert store.schema_version == len(migrations()) >= 3
    with store.write() as connection:
        rows = connection.execute("SELECT sequence, subsystem, document_id FROM receipts"
                                  ).fetchall()
        assert [tuple(row) for row in rows] == [(1, "customs", 1)]
        assert connection.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 1
        cursor = connection.execute(
            "INSERT INTO receipts (document_id, enterprise_code, kind, temporary_number, time, "
            "message_zh, message_en) VALUES (1, ?, 1, 'Z202600000000000001', 0, 'x', 'x')", (A,))
        assert cursor.lastrowid == 3
        with pytest.raises(sqlite3.IntegrityError):  # a receipt names one kind of document
            connection.execute(
                "INSERT INTO receipts (subsystem, document_id, enterprise_code, kind, "
                "temporary_number, time, message_zh, message_en) "
                "VALUES ('bonded', 1, ?, 1, 'Z', 0, 'x', 'x')", (A,))
    store.close()


def test_ebook_files_are_checked() -> None:
    with pytest.raises(ebooks.EBookFileError, match="listed twice"):
        ebooks.parse_ebooks([{"ebook_number": EBOOK_A, "enterprise_code": A, "items": []}] * 2)
    with pytest.raises(ebooks.EBookFileError, match="unit"):
        ebooks.parse_ebooks({"ebook_number": EBOOK_A, "enterprise_code": A, "items": [
            {"record_item_number": "1", "hs_code": "3901100090", "name": "x", "unit": "KG"}]})
    with pytest.raises(ebooks.EBookFileError, match="enterprise_code"):
        ebooks.parse_ebooks({"ebook_number": EBOOK_A, "enterprise_code": "53", "items": []})
    parsed = ebooks.parse_ebooks({"ebook_number": EBOOK_A, "enterprise_code": A, "items": [
        {"record_item_number": "1", "hs_code": "3901100090", "name": "x", "unit": "035"}]})
    assert parsed[0].items[0].specification == ""


def test_health_and_the_receipt_stream_include_bonded_verification(
        stack: Stack, operator: SigningCard) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from eport.datacenter.bonded_servicer import SERVICE_NAME

    with grpc.insecure_channel(stack.running.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stream = stack.customs.WatchReceipts(operator.request("WatchReceipts", {"after": 0}))
    saved = stack.save(operator, ours())
    stack.call(operator, "DeclareBonded", number=saved.temporary_number)
    seen = [next(stream), next(stream)]
    stream.cancel()
    assert [(r.subsystem, r.kind) for r in seen] == [("bonded", pb.STORED_RECEIPT),
                                                     ("bonded", pb.APPROVED_RECEIPT)]
