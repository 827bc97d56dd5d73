"""`eport customs` acceptance (pcsc tier): the installed console script against the real eportd
(real pcscd, vpcd, simulated cards) and the real `eport-datacenter` process on its own socket.

What a customs broker does and checks: an operator card saves and uploads, the declarant card
of the same enterprise declares, receipts arrive, numbers go Z → unified → entry number, the
fee is charged once to the right enterprise; an operator card cannot declare (the client says
so; the data centre refuses it too); tampered, untrusted, expired and replayed requests are
refused; a batch survives kill -9 of the data centre; the printed PDF has the barcode.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from eport.common import sm2
from eport.common.customs import numbers
from eport.common.customs.envelope import build_payload
from eport.common.profile import CardKind, credit_code_check_char
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import opened
from tests.support.datacenter_stack import DataCenterProcess, start_datacenter
from tests.support.eport_cli import (
    EPORT,
    PIN,
    READER0,
    Eport,
    Result,
    assert_no_secret,
    describe,
    eport_env,
    error_json,
    human_error,
    ok_json,
)
from tests.support.pcsc_stack import Pcscd
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pcsc

ENTERPRISE_A = {"customs_code": "4403960001",
                "credit_code": "91440300MA5" + "ABCDE" + "X",  # check char fixed below
                "enterprise_name": "深圳测试报关行有限公司"}
ENTERPRISE_B = {"customs_code": "3100960002", "credit_code": "91310000MA1" + "FGHJK" + "X",
                "enterprise_name": "上海另一家贸易有限公司"}
for _enterprise in (ENTERPRISE_A, ENTERPRISE_B):
    _first17 = _enterprise["credit_code"][:17]
    _enterprise["credit_code"] = _first17 + credit_code_check_char(_first17)


# ---- the stack ----

@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CardStack]:
    with running_card_stack(tmp_path_factory.mktemp("customs-stack"),
                            test_ca.trust_bundle) as stack:
        yield stack


@pytest.fixture(scope="module")
def cards(test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CardImage]:
    other_ca = init_ca(tmp_path_factory.mktemp("other-ca"))
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "operator": provision_test_card(test_ca, "sm2", kind=CardKind.OPERATOR,
                                        holder_name="王操作", **ENTERPRISE_A),
        "declarant": provision_test_card(test_ca, "sm2", kind=CardKind.DECLARANT,
                                         holder_name="李报关", **ENTERPRISE_A),
        "declarant_rsa": provision_test_card(test_ca, "rsa2048", kind=CardKind.DECLARANT,
                                             holder_name="赵报关", **ENTERPRISE_A),
        "legal_person": provision_test_card(test_ca, "sm2", kind=CardKind.LEGAL_PERSON,
                                            holder_name="陈法人", **ENTERPRISE_A),
        "declarant_b": provision_test_card(test_ca, "sm2", kind=CardKind.DECLARANT,
                                           holder_name="周报关", **ENTERPRISE_B),
        "expired": provision_test_card(test_ca, "sm2", kind=CardKind.DECLARANT,
                                       not_before=now - timedelta(days=400), days=365,
                                       **ENTERPRISE_A),
        "untrusted": provision_test_card(other_ca, "sm2", kind=CardKind.DECLARANT,
                                         **ENTERPRISE_A),
    }


@pytest.fixture(scope="module")
def datacenter(stack: CardStack, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[DataCenterProcess]:
    centre = start_datacenter(tmp_path_factory.mktemp("datacenter"), test_ca.trust_bundle)
    yield centre
    centre.stop()


class Customs(Eport):
    """`customs("save", ...)` runs `eport customs save ...` against the module's eportd and
    a data centre; `put` inserts cards as in the CLI tests."""

    centre: DataCenterProcess

    def customs(self, *args: str | Path, stdin: str | None = None, lang: str | None = None
                ) -> Result:
        return self("customs", *args, stdin=stdin, lang=lang,
                    env={"EPORT_DATACENTER": self.centre.address})

    def signed(self, *args: str | Path, lang: str | None = None) -> Result:
        """With the PIN on standard input (every data-centre request is signed)."""
        return self.customs(*args, "--pin-stdin", stdin=PIN + "\n", lang=lang)

    def document(self, name: str, document: dict[str, Any]) -> Path:
        return self.file(name, json.dumps(document, ensure_ascii=False, indent=1))


@pytest.fixture
def customs(stack: CardStack, datacenter: DataCenterProcess, tmp_path: Path
            ) -> Iterator[Customs]:
    runner = Customs(stack, tmp_path)
    runner.centre = datacenter
    yield runner
    if stack.daemon is None or stack.daemon.process.poll() is not None:
        stack.start_daemon()
    for slot in (0, 1):
        stack.remove(slot)


def declaration(**overrides: Any) -> dict[str, Any]:
    document = valid_declaration("import", **overrides)
    return document


def signed_request(stack: CardStack, method: str, body: dict[str, Any]) -> dc.SignedRequest:
    """A request signed on the card in slot 0 through eportd, as any program could make it."""
    stub = stack.running().stub()
    info = stub.GetCardInfo(pb.CardSelector(reader=READER0))
    selector = pb.CardSelector(card_id=info.card_id)
    payload = build_payload(method, body)
    answer = stub.Sign(pb.SignRequest(card=selector, data=payload, pin=PIN))
    certificate = stub.GetCertificate(selector).der
    return dc.SignedRequest(payload=payload, signature=answer.signature,
                            certificate=certificate,
                            algorithm=dc.SignatureAlgorithm.ValueType(answer.algorithm))


def signed_off_card(image: CardImage, method: str, body: dict[str, Any]) -> dc.SignedRequest:
    """Signed with the card's key outside any card (a program that holds a copied key): what
    the data centre must refuse on the certificate's merits, not trust eportd to refuse."""
    payload = build_payload(method, body)
    r, s = sm2.sign_message(int.from_bytes(image.private_key, "big"), payload)
    return dc.SignedRequest(payload=payload, signature=sm2.encode_der_signature(r, s),
                            certificate=image.certificate, algorithm=dc.SM2_WITH_SM3)


def refusal(centre: DataCenterProcess, method: str, request: dc.SignedRequest
            ) -> tuple[grpc.StatusCode, dc.DataCenterErrorDetail]:
    from grpc_status import rpc_status

    with pytest.raises(grpc.RpcError) as caught:
        getattr(centre.stub(), method)(request, timeout=10)
    error = caught.value
    status = rpc_status.from_call(error)
    assert status is not None, error
    detail = dc.DataCenterErrorDetail()
    assert any(packed.Unpack(detail) for packed in status.details), status
    assert detail.message_zh and detail.message_en and detail.remedy_zh and detail.remedy_en
    return error.code(), detail


# ---- the whole path ----

def test_operator_saves_and_uploads_declarant_declares(customs: Customs,
                                                       cards: dict[str, CardImage]) -> None:
    """QP FAQ §四, 十一(二), 十一(六), 五(三): the path of one entry through the data centre."""
    path = customs.document("entry.json", declaration())
    customs.put(cards["operator"])
    saved = ok_json(customs.signed("save", path, "--json"), "customs save")
    temporary = saved["temporary_number"]
    assert numbers.is_temporary_number(temporary), saved
    assert saved["status"] == "SAVED" and saved["unified_number"] is None
    assert saved["enterprise_code"] == ENTERPRISE_A["customs_code"]

    uploaded = ok_json(customs.customs("upload", temporary, "--json"), "customs upload")
    unified = uploaded["unified_number"]
    assert uploaded["status"] == "STORED" and numbers.is_unified_number(unified), uploaded
    assert uploaded["temporary_number"] == temporary

    # The operator card may not declare: the client says so and sends nothing.
    refused = customs.customs("declare", unified)
    text = human_error(refused, "WRONG_CARD_KIND", 16)
    assert "declarant" in text and "eport pin logout" in text
    shown = ok_json(customs.customs("show", unified, "--json"), "customs show")
    assert shown["status"] == "STORED" and shown["declaration_count"] == 0

    # Switching cards ends the session (QP FAQ §十一(二)): the declarant logs in anew.
    customs.put(cards["declarant"])
    status = ok_json(customs("pin", "status", "--json"), "pin status")
    assert status["session_active"] is False, status
    declared = ok_json(customs.signed("declare", unified, "--wait", "20", "--json"),
                       "customs declare")
    assert declared["status"] == "CLEARED", declared
    entry = declared["entry_number"]
    year = str((datetime.now(UTC) + timedelta(hours=8)).year)
    header = declaration()["header"]
    assert numbers.is_entry_number(entry)
    assert entry[:4] == header["declaration_customs"] and entry[4:8] == year
    assert entry[8] == "1"  # import
    assert declared["pre_entry_number"] == entry[-9:]
    assert declared["fee_charged"] and declared["declaration_count"] == 1

    receipts = ok_json(customs.signed("receipts", "--number", unified, "--json"),
                       "customs receipts")["receipts"]
    assert [r["kind"] for r in receipts] == ["STORED_RECEIPT", "CLEARED_RECEIPT"]
    assert receipts[1]["entry_number"] == entry and receipts[0]["sequence"] < \
        receipts[1]["sequence"]

    # The same document by each of its numbers; not by the pre-entry number.
    for option, value in (("--unified-number", unified), ("--entry-number", entry),
                          ("--temporary-number", temporary)):
        found = ok_json(customs.signed("query", option, value, "--json"), "customs query")
        assert [d["unified_number"] for d in found["documents"]] == [unified]
    by_pre_entry = customs.customs("query", "--pre-entry-number", entry[-9:])
    assert "pre-entry" in human_error(by_pre_entry, "USAGE", 2)


def test_operator_declare_refused_by_the_data_centre(customs: Customs,
                                                     cards: dict[str, CardImage]) -> None:
    """QP FAQ §四(一): an operator card's declaration, sent directly, is refused."""
    customs.put(cards["operator"])
    saved = ok_json(customs.signed("save", customs.document("op.json", declaration()),
                                   "--json"), "customs save")
    request = signed_request(customs.stack, "Declare", {"number": saved["temporary_number"]})
    code, detail = refusal(customs.centre, "Declare", request)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert dc.DataCenterReason.Name(detail.reason) == "WRONG_CARD_KIND"
    assert detail.required_card_kind == "declarant"
    after = ok_json(customs.signed("show", saved["temporary_number"], "--json"),
                    "customs show")
    assert after["status"] == "SAVED" and not after["fee_charged"]


# ---- fees ----

def test_fee_once_after_a_rejection_to_the_first_savers_enterprise(
        customs: Customs, cards: dict[str, CardImage], test_ca: TestCA, tmp_path: Path) -> None:
    """QP FAQ §五(三): 15 yuan per declared entry, charged once however often it is
    declared (also after 退单), to the enterprise of the operator who first saved it."""
    centre = start_datacenter(tmp_path / "reject-first", test_ca.trust_bundle,
                              "--review", "reject-first:R042:申报要素不全")
    try:
        customs.centre = centre
        customs.put(cards["operator"])
        path = customs.document("fee.json", declaration())
        temporary = ok_json(customs.signed("save", path, "--json"),
                            "customs save")["temporary_number"]
        customs.put(cards["declarant"])
        first = ok_json(customs.signed("declare", temporary, "--wait", "20", "--json"),
                        "customs declare")
        assert first["status"] == "REJECTED", first
        assert first["reject_reason_code"] == "R042" and first["reject_reason"] == "申报要素不全"
        assert first["fee_charged"] and first["entry_number"] is None
        unified = first["unified_number"]

        # 退单: modified and saved again under its number, then declared again.
        changed = declaration()
        changed["header"]["remarks"] = "补充申报要素"
        changed["client_reference"] = json.loads(path.read_text())["client_reference"]
        modified = ok_json(customs.signed("save", customs.document("fee2.json", changed),
                                          "--number", unified, "--json"), "customs save")
        assert modified["unified_number"] == unified
        second = ok_json(customs.signed("declare", unified, "--wait", "20", "--json"),
                         "customs declare")
        assert second["status"] == "CLEARED" and second["declaration_count"] == 2, second
        again = ok_json(customs.signed("declare", unified, "--json"), "customs declare")
        assert again["already_declared"] and again["declaration_count"] == 2

        stats = ok_json(customs.signed("stats", "--json"), "customs stats")
        assert stats["enterprise_code"] == ENTERPRISE_A["customs_code"]
        assert (stats["charged_entries"], stats["total_fen"], stats["total_yuan"]) == \
            (1, 1500, "15.00")
        assert [line["unified_number"] for line in stats["lines"]] == [unified]
        assert stats["documents"]["cleared"] == 1
        receipts = ok_json(customs.signed("receipts", "--number", unified, "--json"),
                           "customs receipts")["receipts"]
        assert [r["kind"] for r in receipts] == ["STORED_RECEIPT", "REJECTED_RECEIPT",
                                                 "CLEARED_RECEIPT"]
        assert receipts[1]["reason_code"] == "R042"

        # Another enterprise neither sees the document nor pays for it.
        customs.put(cards["declarant_b"])
        hidden = customs.signed("show", unified, "--json")
        error_json(hidden, "DOCUMENT_NOT_FOUND", 17)
        other = ok_json(customs.signed("stats", "--json"), "customs stats")
        assert other["enterprise_code"] == ENTERPRISE_B["customs_code"]
        assert other["charged_entries"] == 0 and other["total_fen"] == 0
    finally:
        centre.stop()


# ---- trust ----

def test_tampered_untrusted_expired_and_replayed_requests_are_refused(
        customs: Customs, cards: dict[str, CardImage], tmp_path: Path) -> None:
    customs.put(cards["declarant"])
    body = {"document": declaration()}
    request = signed_request(customs.stack, "Save", body)

    tampered = dc.SignedRequest()
    tampered.CopyFrom(request)
    tampered.payload = request.payload.replace("深圳".encode(), "上海".encode(), 1)
    assert tampered.payload != request.payload
    code, detail = refusal(customs.centre, "Save", tampered)
    assert (code, dc.DataCenterReason.Name(detail.reason)) == \
        (grpc.StatusCode.UNAUTHENTICATED, "SIGNATURE_INVALID")

    accepted = customs.centre.stub().Save(request, timeout=10)
    assert numbers.is_temporary_number(accepted.temporary_number)
    code, detail = refusal(customs.centre, "Save", request)  # the same bytes again
    assert dc.DataCenterReason.Name(detail.reason) == "REPLAY"

    # A signed query is not a declaration: the method is part of what is signed.
    query = signed_request(customs.stack, "Query", {"limit": 1})
    code, detail = refusal(customs.centre, "Declare", query)
    assert dc.DataCenterReason.Name(detail.reason) == "BAD_REQUEST"

    untrusted = signed_off_card(cards["untrusted"], "Save", body)
    code, detail = refusal(customs.centre, "Save", untrusted)
    assert dc.DataCenterReason.Name(detail.reason) == "CERT_UNTRUSTED"

    expired = signed_off_card(cards["expired"], "Save", body)
    code, detail = refusal(customs.centre, "Save", expired)
    assert dc.DataCenterReason.Name(detail.reason) == "CERT_EXPIRED"

    # The same key and certificate, still valid: accepted (so the refusals above are about
    # the certificate, not the off-card signing).
    valid = signed_off_card(cards["declarant"], "Save", {"document": declaration()})
    assert customs.centre.stub().Save(valid, timeout=10).temporary_number


def test_rsa_declarant_card_declares(customs: Customs, cards: dict[str, CardImage]) -> None:
    """Old RSA cards sign SHA1withRSA (RSA-1024) or SHA256withRSA; the data centre takes
    both, as it takes SM2."""
    customs.put(cards["declarant_rsa"])
    declared = ok_json(customs.signed("declare", customs.document("rsa.json", declaration()),
                                      "--wait", "20", "--json"), "customs declare")
    assert declared["status"] == "CLEARED" and numbers.is_entry_number(
        declared["entry_number"])


# ---- validation ----

def test_every_bad_field_is_named_at_once_by_client_and_data_centre(
        customs: Customs, cards: dict[str, CardImage]) -> None:
    """The client checks before anything is signed; a document sent around the client is
    refused by the data centre with the same list, and nothing is stored."""
    bad = declaration()
    bad["header"]["transport_mode"] = "Q"
    bad["header"]["trade_mode"] = "12"
    bad["header"]["net_weight"] = "abc"
    bad["items"][0]["currency"] = "XXX"
    bad["containers"][0]["size"] = "M"
    customs.put(cards["declarant"])
    path = customs.document("bad.json", bad)
    error = error_json(customs.signed("declare", path, "--json"), "VALIDATION_FAILED", 15)
    paths = {problem["path"] for problem in error["problems"]}
    assert {"header.transport_mode", "header.trade_mode", "header.net_weight",
            "items[0].currency", "containers[0].size"} <= paths, error
    size = next(p for p in error["problems"] if p["path"] == "containers[0].size")
    assert "QP FAQ" in size["section"]
    chinese = customs.signed("save", path, lang="zh")
    assert "运输方式" in human_error(chinese, "VALIDATION_FAILED", 15)

    before = ok_json(customs.signed("query", "--json"), "customs query")["documents"]
    code, detail = refusal(customs.centre, "Save", signed_request(
        customs.stack, "Save", {"document": bad}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {p.path for p in detail.problems} >= paths
    after = ok_json(customs.signed("query", "--json"), "customs query")["documents"]
    assert len(after) == len(before)


def test_new_import_csv_copy_and_show(customs: Customs, cards: dict[str, CardImage]) -> None:
    empty = ok_json(customs.customs("new", "--direction", "export", "--json"), "customs new")
    template = empty["document"]
    assert template["direction"] == "export" and template["client_reference"]
    customs.put(cards["declarant"])
    original = customs.document("orig.json", declaration(items=2))
    saved = ok_json(customs.signed("save", original, "--json"), "customs save")
    reference = json.loads(original.read_text())["client_reference"]
    # 复制 an item (QP FAQ §十三(六)): the same document with item 2 again at the end; saving
    # it modifies the saved document.
    with_item = customs.workdir / "with-item.json"
    ok_json(customs.signed("copy", saved["temporary_number"], "--item", "2", "-o",
                           with_item, "--json"), "customs copy")
    grown = json.loads(with_item.read_text())
    assert len(grown["items"]) == 3 and grown["items"][2]["item_number"] == 3
    assert grown["items"][2]["name"] == grown["items"][1]["name"]
    assert grown["client_reference"] == reference
    modified = ok_json(customs.signed("save", with_item, "--json"), "customs save")
    assert modified["temporary_number"] == saved["temporary_number"]
    # 复制 a document: a new one, saved under a new number.
    copied_path = customs.workdir / "copy.json"
    ok_json(customs.signed("copy", saved["temporary_number"], "-o", copied_path, "--json"),
            "customs copy")
    copied = json.loads(copied_path.read_text())
    assert copied["client_reference"] != reference and len(copied["items"]) == 3
    again = ok_json(customs.signed("save", copied_path, "--json"), "customs save")
    assert again["temporary_number"] != saved["temporary_number"]
    # Saving the same file twice gives its number back (idempotent on client_reference).
    twice = ok_json(customs.signed("save", copied_path, "--json"), "customs save")
    assert twice["temporary_number"] == again["temporary_number"] and twice["already_saved"]
    shown = customs.signed("show", again["temporary_number"])
    assert shown.returncode == 0 and "Items: 3" in shown.stdout, describe(shown)


# ---- batch and crash safety ----

def _wait_for_lines(path: Path, count: int, process: subprocess.Popen[str],
                    timeout: float = 120) -> None:
    def written() -> bool:
        assert process.poll() is None, "the batch ended before the data centre was killed"
        return path.exists() and len(path.read_text().splitlines()) >= count

    wait_until(written, timeout=timeout, interval=0.02, what=f"{count} lines in the report")


def test_batch_of_200_survives_kill_9_of_the_data_centre(
        customs: Customs, cards: dict[str, CardImage], test_ca: TestCA, tmp_path: Path) -> None:
    """kill -9 of the data centre in the middle of a batch of 200 declarations: nothing it
    acknowledged is lost, nothing is numbered or charged twice, and the batch completes."""
    centre = start_datacenter(tmp_path / "crash", test_ca.trust_bundle)
    try:
        customs.centre = centre
        files = [customs.document(f"batch-{n:03d}.json", declaration()) for n in range(200)]
        customs.put(cards["declarant"])
        report = tmp_path / "report.jsonl"
        batch = subprocess.Popen(
            [EPORT, "customs", "batch-declare", *map(str, files), "--report", str(report),
             "--pin-stdin", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", start_new_session=True,
            env=eport_env(customs.stack.socket, "en", {"EPORT_DATACENTER": centre.address}))
        assert batch.stdin is not None
        batch.stdin.write(PIN + "\n")
        batch.stdin.close()
        batch.stdin = None  # communicate() below must not flush it again
        _wait_for_lines(report, 60, batch)
        centre.kill()  # SIGKILL, mid-batch
        acknowledged = [json.loads(line) for line in report.read_text().splitlines()]
        time.sleep(0.5)  # not a wait: the outage lasts a moment, as a real one would
        centre.restart()
        stdout, stderr = batch.communicate(timeout=300)
        assert batch.returncode == 0, f"exit {batch.returncode}\n{stdout}\n{stderr}"
        summary = json.loads(stdout)["result"]
        assert summary["files"] == 200 and summary["failed"] == 0, summary
        assert summary["declared"] + summary["declared_before"] == 200

        # Every acknowledged declaration is still there, with the numbers it was given.
        found = ok_json(customs.signed("query", "--limit", "1000", "--json"),
                        "customs query")["documents"]
        by_unified = {d["unified_number"]: d for d in found}
        assert len(found) == 200 and len(by_unified) == 200
        assert len({d["temporary_number"] for d in found}) == 200
        for line in acknowledged:
            assert line["ok"], line
            assert by_unified[line["unified_number"]]["temporary_number"] == \
                line["temporary_number"]
        stats = ok_json(customs.signed("stats", "--json"), "customs stats")
        assert stats["charged_entries"] == 200 and stats["total_fen"] == 200 * 1500
        # All reviewed: 200 different entry numbers.
        def all_cleared() -> list[dict[str, Any]] | None:
            cleared: list[dict[str, Any]] = ok_json(customs.signed(
                "query", "--status", "cleared", "--limit", "1000", "--json"),
                "customs query")["documents"]
            return cleared if len(cleared) == 200 else None

        cleared = wait_until(all_cleared, timeout=60, interval=0.5,
                             what="all 200 declarations are cleared")
        assert len({d["entry_number"] for d in cleared}) == 200
        assert_no_secret(stdout, stderr, centre.log())
    finally:
        centre.stop()


# ---- printing and receipts ----

def test_printed_declaration_has_the_barcode_and_the_container_pages(
        customs: Customs, cards: dict[str, CardImage], tmp_path: Path) -> None:
    """QP FAQ §八 and 十三(八): A4, the pre-entry number's barcode after review, the first
    container in its box, 7 more in the remarks, and the attachment page beyond 8."""
    document = declaration(containers=10, transport_mode="2", transport_name="COSCO STAR",
                           voyage_number="V123E")
    customs.put(cards["declarant"])
    declared = ok_json(customs.signed("declare", customs.document("ship.json", document),
                                      "--wait", "20", "--json"), "customs declare")
    assert declared["status"] == "CLEARED", declared
    pdf = tmp_path / "entry.pdf"
    ok_json(customs.signed("print", declared["unified_number"], "-o", pdf, "--json"),
            "customs print")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert declared["pre_entry_number"] in text and declared["entry_number"] in text
    assert "COSCO STAR/V123E" in text and "集装箱附加页" in text
    for container in document["containers"]:
        assert container["number"] in text
    pages = subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf), str(tmp_path / "page")],
                           capture_output=True, text=True)
    assert pages.returncode == 0, pages.stderr
    assert len(list(tmp_path.glob("page*.png"))) >= 2


def _nonces(centre: DataCenterProcess) -> int:
    """Signed requests the data centre has accepted (each stores its nonce)."""
    with opened(centre.db_path) as database:
        return int(database.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])


def test_receipts_follow_streams_new_receipts(customs: Customs,
                                              cards: dict[str, CardImage]) -> None:
    customs.put(cards["declarant"])
    before = ok_json(customs.signed("receipts", "--json"), "customs receipts")["receipts"]
    last = max((r["sequence"] for r in before), default=0)
    nonces_before = _nonces(customs.centre)
    follower = subprocess.Popen(
        [EPORT, "customs", "receipts", "--follow", "--count", "2", "--after", str(last),
         "--pin-stdin", "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, encoding="utf-8", start_new_session=True,
        env=eport_env(customs.stack.socket, "en",
                      {"EPORT_DATACENTER": customs.centre.address}))
    assert follower.stdin is not None
    follower.stdin.write(PIN + "\n")
    follower.stdin.close()
    follower.stdin = None
    # The follower is connected once the data centre has stored its signed request's nonce.
    wait_until(lambda: _nonces(customs.centre) > nonces_before, timeout=30,
               what="the follower has opened its receipt stream")
    declared = ok_json(customs.signed("declare", customs.document("f.json", declaration()),
                                      "--json"), "customs declare")
    try:
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGINT)
    assert follower.returncode == 0, stderr
    lines = [json.loads(line)["result"] for line in stdout.splitlines()]
    assert [r["kind"] for r in lines] == ["STORED_RECEIPT", "CLEARED_RECEIPT"]
    assert {r["unified_number"] for r in lines} == {declared["unified_number"]}


def test_no_pin_in_any_output_or_log(customs: Customs, cards: dict[str, CardImage]) -> None:
    customs.put(cards["declarant"])
    results = [customs.signed("declare", customs.document("p.json", declaration()),
                              "--wait", "5"),
               customs.signed("query"), customs.signed("stats")]
    for result in results:
        assert result.returncode == 0, describe(result)
    assert_no_secret(*results, customs.centre.log(), customs.stack.running().log())
    assert re.search(r"I\d{17}", results[0].stdout)


def test_delete_a_saved_document_or_one_item_qp_faq_13_1(customs: Customs,
                                                          cards: dict[str, CardImage]) -> None:
    """QP FAQ §十三(一) (Ctrl+D 删除; Ctrl+Delete 删除商品表体中选中的那一项): `eport customs
    delete` deletes an item, then the document never declared; its number is not given again,
    and saving the same file again makes a new document."""
    document = declaration(items=3)
    path = customs.document("to-delete.json", document)
    customs.put(cards["operator"])
    saved = ok_json(customs.signed("save", path, "--json"), "customs save")
    temporary = saved["temporary_number"]
    shorter = ok_json(customs.customs("delete", temporary, "--item", "2", "--json"),
                      "customs delete")
    assert shorter["status"] == "SAVED" and shorter["temporary_number"] == temporary
    shown = ok_json(customs.customs("show", temporary, "--json"), "customs show")["document"]
    assert [i["item_number"] for i in shown["items"]] == [1, 2]
    assert [i["name"] for i in shown["items"]] == [document["items"][0]["name"],
                                                   document["items"][2]["name"]]
    error = error_json(customs.customs("delete", temporary, "--item", "9", "--json"),
                       "VALIDATION_FAILED", 15)
    assert error["problems"][0]["section"] == "QP FAQ §十三(一)"

    customs.put(cards["legal_person"])  # QP FAQ: no entry right, so no 删除
    assert "法人卡不能删除" in human_error(customs.signed("delete", temporary, lang="zh"),
                                      "WRONG_CARD_KIND", 16)
    customs.put(cards["operator"])
    deleted = ok_json(customs.signed("delete", temporary, "--json"), "customs delete")
    assert deleted["status"] == "DELETED" and deleted["deleted_at"]
    assert deleted["deleted_by_card"] == cards["operator"].profile.card_id
    gone = error_json(customs.customs("show", temporary, "--json"), "DOCUMENT_NOT_FOUND", 17)
    assert "删除" in gone["message"]["zh"] and "deleted" in gone["message"]["en"]
    again = ok_json(customs.customs("save", path, "--json"), "customs save")
    assert again["temporary_number"] > temporary and not again["already_saved"]

    # Once declared it stays (it was charged and reviewed).
    customs.put(cards["declarant"])
    declared = ok_json(customs.signed("declare", again["temporary_number"], "--json"),
                       "customs declare")
    error_json(customs.customs("delete", declared["unified_number"], "--json"),
               "WRONG_STATE", 17)
