"""The data centre's document flow through the real gRPC server: roles, numbers, receipts,
fees, idempotency and validation (QP FAQ §四, 五(三), 十一)."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from eport.common.customs import numbers
from eport.common.customs.canonical import canonical_json
from eport.common.profile import CardKind
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_stack import (
    ENTERPRISE_B,
    SigningCard,
    error_detail,
    make_signing_card,
)
from tests.support.waiting import wait_until

Stub = pb_grpc.DataCenterStub


# The flow's declarant signs SM2 (the other tests' default is the card kind's own default).
@pytest.fixture(scope="module")
def declarant(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.DECLARANT, "sm2")


@pytest.fixture(scope="module")
def legal_person(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.LEGAL_PERSON)


@pytest.fixture(scope="module")
def other_declarant(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.DECLARANT, enterprise=ENTERPRISE_B)


def save(stub: Stub, card: SigningCard, document: dict[str, Any] | None = None,
         **extra: Any) -> pb.DocumentRecord:
    body = {"document": document or valid_declaration(), **extra}
    record: pb.DocumentRecord = stub.Save(card.request("Save", body))
    return record


def call(stub: Stub, card: SigningCard, method: str, **body: Any) -> Any:
    return getattr(stub, method)(card.request(method, body))


def refused(stub: Stub, card: SigningCard, method: str, **body: Any
            ) -> tuple[grpc.StatusCode, pb.DataCenterErrorDetail]:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, card, method, **body)
    return caught.value.code(), error_detail(caught.value)


def wait_status(stub: Stub, card: SigningCard, number: str, status: int,
                timeout: float = 10.0) -> pb.DocumentRecord:
    def reached() -> pb.DocumentRecord | None:
        record: pb.DocumentRecord = call(stub, card, "GetDocument", number=number)
        return record if record.status == status else None

    found: pb.DocumentRecord = wait_until(reached, timeout=timeout, interval=0.02,
                                          what=f"{number} has status {status}")
    return found


def test_operator_saves_and_uploads_declarant_declares_and_customs_clears(
        stub: Stub, operator: SigningCard, declarant: SigningCard) -> None:
    saved = save(stub, operator)
    assert saved.status == pb.SAVED and numbers.is_temporary_number(saved.temporary_number)
    assert saved.enterprise_code == operator.customs_code
    assert saved.saved_by_card == operator.card_id and not saved.unified_number

    uploaded = call(stub, operator, "Upload", number=saved.temporary_number)
    assert uploaded.status == pb.STORED
    assert numbers.is_unified_number(uploaded.unified_number)
    assert uploaded.unified_number.startswith("I")  # import

    declared = call(stub, declarant, "Declare", number=uploaded.unified_number)
    assert declared.status == pb.DECLARED and declared.declaration_count == 1
    assert declared.fee_charged and declared.declared_by_card == declarant.card_id

    cleared = wait_status(stub, declarant, saved.temporary_number, pb.CLEARED)
    entry = cleared.entry_number
    assert numbers.is_entry_number(entry)
    # QP FAQ §十三(九): 4-digit district + 4-digit year + "1" (import) + 9 digits
    assert entry[:4] == "5301" and entry[8] == "1"
    assert cleared.pre_entry_number == entry[-9:]
    # Found by each of its numbers (QP FAQ §十一(五)).
    for number in (saved.temporary_number, uploaded.unified_number, entry):
        assert call(stub, operator, "GetDocument", number=number).entry_number == entry

    receipts = call(stub, operator, "ListReceipts", after=0).receipts
    assert [r.kind for r in receipts] == [pb.STORED_RECEIPT, pb.CLEARED_RECEIPT]
    assert receipts[0].unified_number == uploaded.unified_number
    assert receipts[1].entry_number == entry and receipts[1].pre_entry_number == entry[-9:]
    assert receipts[0].sequence < receipts[1].sequence
    assert "入库成功" in receipts[0].message_zh and "审结" in receipts[1].message_zh


def test_the_declaring_agent_comes_from_the_certificate(
        stub: Stub, operator: SigningCard) -> None:
    document = valid_declaration()
    document["header"]["declaring_agent"] = {"customs_code": "9999999999", "name": "冒名"}
    saved = save(stub, operator, document)
    import json
    agent = json.loads(saved.document_json)["header"]["declaring_agent"]
    profile = operator.image.profile
    assert agent == {"credit_code": profile.credit_code, "customs_code": profile.customs_code,
                     "name": profile.enterprise_name}
    assert saved.document_json == canonical_json(json.loads(saved.document_json)).decode()


def test_declare_from_saved_uploads_first(stub: Stub, operator: SigningCard,
                                          declarant: SigningCard) -> None:
    saved = save(stub, operator, valid_declaration("export"))
    declared = call(stub, declarant, "Declare", number=saved.temporary_number)
    assert declared.status == pb.DECLARED and declared.unified_number.startswith("E")
    cleared = wait_status(stub, declarant, saved.temporary_number, pb.CLEARED)
    assert cleared.entry_number[8] == "0"  # export
    kinds = [r.kind for r in call(stub, operator, "ListReceipts", after=0,
                                  number=saved.temporary_number).receipts]
    assert kinds == [pb.STORED_RECEIPT, pb.CLEARED_RECEIPT]


def test_operator_card_may_not_declare(stub: Stub, operator: SigningCard) -> None:
    saved = save(stub, operator)
    code, detail = refused(stub, operator, "Declare", number=saved.temporary_number)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert detail.reason == pb.WRONG_CARD_KIND and detail.required_card_kind == "declarant"
    assert "操作员卡不能申报" in detail.message_zh and "报关员IC卡" in detail.remedy_zh
    assert "declarant" in detail.remedy_en
    assert call(stub, operator, "GetDocument",
                number=saved.temporary_number).status == pb.SAVED


def test_legal_person_card_may_look_but_not_enter(
        stub: Stub, operator: SigningCard, legal_person: SigningCard) -> None:
    saved = save(stub, operator)
    for method, body in (("Save", {"document": valid_declaration()}),
                         ("Upload", {"number": saved.temporary_number}),
                         ("Declare", {"number": saved.temporary_number})):
        code, detail = refused(stub, legal_person, method, **body)
        assert code is grpc.StatusCode.PERMISSION_DENIED and detail.reason == pb.WRONG_CARD_KIND
        assert detail.message_zh.startswith("法人卡不能")
    assert call(stub, legal_person, "GetDocument",
                number=saved.temporary_number).temporary_number == saved.temporary_number
    assert len(call(stub, legal_person, "Query").documents) == 1
    assert call(stub, legal_person, "GetStatement", **{"from": "2020-01-01",
                                                       "to": "2099-12-31"}).entries == 0


def test_other_enterprises_do_not_find_the_document(
        stub: Stub, operator: SigningCard, other_declarant: SigningCard) -> None:
    saved = save(stub, operator)
    for method in ("GetDocument", "Declare", "Upload"):
        code, detail = refused(stub, other_declarant, method, number=saved.temporary_number)
        assert code is grpc.StatusCode.NOT_FOUND and detail.reason == pb.DOCUMENT_NOT_FOUND
    code, _ = refused(stub, other_declarant, "Save", document=valid_declaration(),
                      temporary_number=saved.temporary_number)
    assert code is grpc.StatusCode.NOT_FOUND
    assert not call(stub, other_declarant, "Query").documents
    assert call(stub, operator, "GetDocument",
                number=saved.temporary_number).status == pb.SAVED


def test_validation_lists_every_problem_and_stores_nothing(
        stub: Stub, operator: SigningCard) -> None:
    document = valid_declaration()
    document["header"]["transport_mode"] = "?"
    document["items"][0]["hs_code"] = "12"
    document["containers"][0]["size"] = "M"
    code, detail = refused(stub, operator, "Save", document=document)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.VALIDATION_FAILED
    paths = {problem.path for problem in detail.problems}
    assert {"header.transport_mode", "items[0].hs_code", "containers[0].size"} <= paths
    assert all(p.message_zh and p.message_en and p.code for p in detail.problems)
    assert not call(stub, operator, "Query").documents


def test_declaring_requires_every_required_field(
        stub: Stub, operator: SigningCard, declarant: SigningCard) -> None:
    document = valid_declaration()
    del document["header"]["trade_mode"]
    saved = save(stub, operator, document)  # saving checks only what is filled in
    code, detail = refused(stub, declarant, "Declare", number=saved.temporary_number)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "header.trade_mode" in {problem.path for problem in detail.problems}
    record = call(stub, operator, "GetDocument", number=saved.temporary_number)
    assert record.status == pb.SAVED and not record.unified_number and not record.fee_charged
    assert not call(stub, operator, "ListReceipts", after=0).receipts


def test_save_is_idempotent_on_client_reference(stub: Stub, operator: SigningCard,
                                                declarant: SigningCard) -> None:
    document = valid_declaration()
    first = save(stub, operator, document)
    again = save(stub, declarant, document)  # a retry after a crash, even with another card
    assert again.already_saved and not first.already_saved
    assert again.temporary_number == first.temporary_number
    assert len(call(stub, operator, "Query").documents) == 1


def test_modifying_a_saved_document_and_not_a_declared_one(
        stub: Stub, operator: SigningCard, declarant: SigningCard) -> None:
    document = valid_declaration()
    saved = save(stub, operator, document)
    document["header"]["remarks"] = "修改后"
    modified = save(stub, operator, document, temporary_number=saved.temporary_number)
    assert modified.temporary_number == saved.temporary_number
    assert '"remarks":"修改后"' in modified.document_json
    call(stub, declarant, "Declare", number=saved.temporary_number)
    code, detail = refused(stub, operator, "Save", document=document,
                           temporary_number=saved.temporary_number)
    assert code is grpc.StatusCode.FAILED_PRECONDITION and detail.reason == pb.WRONG_STATE


def test_declaring_twice_changes_nothing(stub: Stub, operator: SigningCard,
                                         declarant: SigningCard) -> None:
    saved = save(stub, operator)
    first = call(stub, declarant, "Declare", number=saved.temporary_number)
    second = call(stub, declarant, "Declare", number=saved.temporary_number)
    assert second.already_declared and not first.already_declared
    assert second.declaration_count == 1
    cleared = wait_status(stub, declarant, saved.temporary_number, pb.CLEARED)
    third = call(stub, declarant, "Declare", number=cleared.entry_number)
    assert third.already_declared and third.entry_number == cleared.entry_number
    statement = call(stub, declarant, "GetStatement", **{"from": "2020-01-01",
                                                         "to": "2099-12-31"})
    assert statement.entries == 1 and statement.total_fen == 1500


def test_query_filters(stub: Stub, operator: SigningCard, declarant: SigningCard) -> None:
    first = save(stub, operator)
    save(stub, operator)
    call(stub, declarant, "Declare", number=first.temporary_number)
    all_documents = call(stub, operator, "Query").documents
    assert len(all_documents) == 2 and not any(d.document_json for d in all_documents)
    limited = call(stub, operator, "Query", limit=1)
    assert len(limited.documents) == 1 and limited.truncated
    by_number = call(stub, operator, "Query", temporary_number=first.temporary_number)
    assert [d.temporary_number for d in by_number.documents] == [first.temporary_number]
    saved_only = call(stub, operator, "Query", status="SAVED").documents
    assert len(saved_only) == 1 and saved_only[0].temporary_number != first.temporary_number
    assert not call(stub, operator, "Query", to="2000-01-01").documents
    _, detail = refused(stub, operator, "Query", pre_entry_number="000000001")
    assert detail.reason == pb.BAD_REQUEST  # QP FAQ §十一(五): not by pre-entry number


def test_get_info_is_unsigned(stub: Stub) -> None:
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.audience == "eport-datacenter"
    assert info.canonical_format == "eport-canonical-json/1"
    assert info.fee_per_entry_fen == 1500 and info.max_clock_skew_seconds == 300
    assert info.review_policy == "accept" and len(info.trust_anchor_subjects) == 2
    assert abs(info.server_time.seconds - time.time()) < 5


def test_upload_states(stub: Stub, operator: SigningCard, declarant: SigningCard) -> None:
    saved = save(stub, operator)
    uploaded = call(stub, operator, "Upload", number=saved.temporary_number)
    again = call(stub, operator, "Upload", number=uploaded.unified_number)
    assert again.unified_number == uploaded.unified_number and again.status == pb.STORED
    assert len(call(stub, operator, "ListReceipts", after=0).receipts) == 1  # no second 入库
    call(stub, declarant, "Declare", number=saved.temporary_number)
    code, detail = refused(stub, operator, "Upload", number=saved.temporary_number)
    assert code is grpc.StatusCode.FAILED_PRECONDITION and detail.reason == pb.WRONG_STATE
    code, detail = refused(stub, operator, "Upload", number="not-a-number")
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.BAD_REQUEST
    code, detail = refused(stub, operator, "GetDocument", number="Z209900000000000001")
    assert code is grpc.StatusCode.NOT_FOUND and "Z209900000000000001" in detail.message_en


def test_receipt_calls_are_signed_too(stub: Stub, operator: SigningCard) -> None:
    request = operator.request("WatchReceipts", {"after": 0})
    request.signature = b"\x30\x00"
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(stub.WatchReceipts(request)))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error_detail(caught.value).reason == pb.SIGNATURE_INVALID
    code, detail = refused(stub, operator, "ListReceipts", after=-1)
    assert detail.reason == pb.BAD_REQUEST
    code, detail = refused(stub, operator, "GetStatement", **{"from": "2026-02-30",
                                                              "to": "2026-03-01"})
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.BAD_REQUEST


# ---- 删除 (QP FAQ §十三(一): Ctrl+D on the 报关单 page, Ctrl+Delete on the item list) --------

def test_qp_faq_delete_a_document_never_declared_its_numbers_never_come_back(
        datacenter: tuple[Any, Stub], operator: SigningCard, declarant: SigningCard,
        legal_person: SigningCard, other_declarant: SigningCard) -> None:
    """QP FAQ §十三(一) 3 ([报关单(1)] Ctrl+D 删除), bonded manual §2.3: the enterprise deletes a
    saved document it has not declared; its number is never given again."""
    stub = datacenter[1]
    document = valid_declaration()
    saved = save(stub, operator, document)
    uploaded = call(stub, operator, "Upload", number=save(stub, operator).temporary_number)
    # Not another enterprise's card, not a legal-person card (QP FAQ: no QP entry right).
    code, detail = refused(stub, other_declarant, "Delete", number=saved.temporary_number)
    assert (code, detail.reason) == (grpc.StatusCode.NOT_FOUND, pb.DOCUMENT_NOT_FOUND)
    code, detail = refused(stub, legal_person, "Delete", number=saved.temporary_number)
    assert detail.reason == pb.WRONG_CARD_KIND and "法人卡不能删除" in detail.message_zh

    deleted = call(stub, operator, "Delete", number=saved.temporary_number)
    assert deleted.status == pb.DELETED and deleted.deleted_by_card == operator.card_id
    assert deleted.deleted_at.seconds > 0 and deleted.document_json == ""
    # Uploaded (入库, a unified number) but never declared: deletable too, by the declarant.
    gone = call(stub, declarant, "Delete", number=uploaded.unified_number)
    assert gone.status == pb.DELETED and gone.unified_number == uploaded.unified_number
    # A retried delete answers the deleted record; everything else finds nothing.
    assert call(stub, operator, "Delete", number=saved.temporary_number) == deleted
    for method in ("GetDocument", "Upload", "Declare"):
        card = declarant if method == "Declare" else operator
        code, detail = refused(stub, card, method, number=saved.temporary_number)
        assert detail.reason == pb.DOCUMENT_NOT_FOUND, method
        assert "已于" in detail.message_zh and "删除" in detail.message_zh
        assert "deleted" in detail.message_en
    code, detail = refused(stub, operator, "Save", document=document,
                           temporary_number=saved.temporary_number)
    assert detail.reason == pb.DOCUMENT_NOT_FOUND
    numbers_listed = [r.temporary_number for r in call(stub, operator, "Query").documents]
    assert saved.temporary_number not in numbers_listed
    assert uploaded.temporary_number not in numbers_listed

    # Saving the same file again makes a new document with a new number, never the old one.
    again = save(stub, operator, document)
    assert not again.already_saved and again.temporary_number != saved.temporary_number
    assert again.temporary_number > uploaded.temporary_number > saved.temporary_number
    with datacenter[0].store.read() as connection:
        kept = connection.execute(
            "SELECT temporary_number, unified_number, status FROM documents WHERE "
            "temporary_number IN (?, ?)", (saved.temporary_number, uploaded.temporary_number)
        ).fetchall()
    assert sorted(tuple(row) for row in kept) == sorted([
        (saved.temporary_number, None, pb.DELETED),
        (uploaded.temporary_number, uploaded.unified_number, pb.DELETED)])

    # A declared document is not deleted, nor after a 退单 (it was declared).
    declared = call(stub, declarant, "Declare", number=save(stub, operator).temporary_number)
    code, detail = refused(stub, operator, "Delete", number=declared.temporary_number)
    assert (code, detail.reason) == (grpc.StatusCode.FAILED_PRECONDITION, pb.WRONG_STATE)
    assert "已申报过" in detail.message_zh


def test_qp_faq_delete_one_item_the_others_are_renumbered(
        stub: Stub, operator: SigningCard, declarant: SigningCard,
        other_declarant: SigningCard) -> None:
    """QP FAQ §十三(一) 4 (Ctrl+Delete: 删除商品表体列表中选中的那一项)."""
    document = valid_declaration(items=3)
    names = [item["name"] for item in document["items"]]
    saved = save(stub, operator, document)
    shorter = call(stub, operator, "DeleteItem", number=saved.temporary_number, item_number=2)
    stored = json.loads(shorter.document_json)
    assert [item["item_number"] for item in stored["items"]] == [1, 2]
    assert [item["name"] for item in stored["items"]] == [names[0], names[2]]
    assert shorter.status == pb.SAVED and shorter.temporary_number == saved.temporary_number
    for item_number in (3, 0):
        code, detail = refused(stub, operator, "DeleteItem", number=saved.temporary_number,
                               item_number=item_number)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, item_number
    assert [p.path for p in detail.problems] == [] and detail.reason == pb.BAD_REQUEST
    _code, detail = refused(stub, operator, "DeleteItem", number=saved.temporary_number,
                            item_number=3)
    assert [(p.path, p.section) for p in detail.problems] == [("item_number",
                                                               "QP FAQ §十三(一)")]
    _code, detail = refused(stub, other_declarant, "DeleteItem",
                            number=saved.temporary_number, item_number=1)
    assert detail.reason == pb.DOCUMENT_NOT_FOUND
    # The last item may go too (a draft may have none); declaring then needs one.
    call(stub, operator, "DeleteItem", number=saved.temporary_number, item_number=1)
    empty = call(stub, operator, "DeleteItem", number=saved.temporary_number, item_number=1)
    assert json.loads(empty.document_json)["items"] == []
    _code, detail = refused(stub, declarant, "Declare", number=saved.temporary_number)
    assert detail.reason == pb.VALIDATION_FAILED
    # Under review: not modified.
    declared = call(stub, declarant, "Declare", number=save(stub, operator).temporary_number)
    code, detail = refused(stub, operator, "DeleteItem", number=declared.temporary_number,
                           item_number=1)
    assert detail.reason == pb.WRONG_STATE
