"""`eport bonded` and `eport auth` acceptance (pcsc tier): the console script against the
real eportd (pcscd, vpcd, simulated cards) and the real `eport-datacenter` process, with the
cards of two enterprises: a processing-trade enterprise (the principal, 授权企业) and a customs
broker acting for it (the agent, 代理企业).

Bonded manual (保税核查): the flow save → declare → receipts, query by each criterion, read-only
detail, modify, one 库存重新申报 and a second refused, the §2.4 messages. E-book manual §4
(委托授权): only a legal-person card grants; the agent's operator acts for the principal only
while both grants exist and are valid; deleting the inter-enterprise grant deletes its intra grants.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from eport.common.profile import CardKind, credit_code_check_char
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from tests.support.bonded_documents import valid_bonded
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card
from tests.support.datacenter_stack import (
    DataCenterProcess,
    SigningCard,
    error_detail,
    start_datacenter,
)
from tests.support.eport_cli import PIN, Eport, Result, describe, error_json, human_error, ok_json
from tests.support.pcsc_stack import Pcscd

pytestmark = pytest.mark.pcsc


def _enterprise(customs_code: str, first17: str, name: str) -> dict[str, str]:
    return {"customs_code": customs_code, "credit_code": first17 + credit_code_check_char(first17),
            "enterprise_name": name}


PRINCIPAL = _enterprise("3205960001", "91320500MA1XK2P3W", "苏州测试精密制造有限公司")
AGENT = _enterprise("3201980002", "91320100MA2YL3Q4T", "南京测试报关服务有限公司")


def china_day(offset: int = 0) -> str:
    return ((datetime.now(UTC) + timedelta(hours=8)).date() + timedelta(days=offset)).isoformat()


@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CardStack]:
    with running_card_stack(tmp_path_factory.mktemp("bonded-stack"),
                            test_ca.trust_bundle) as stack:
        yield stack


@pytest.fixture(scope="module")
def cards(test_ca: TestCA) -> dict[str, CardImage]:
    return {
        "principal_legal": provision_test_card(test_ca, "sm2", kind=CardKind.LEGAL_PERSON,
                                               holder_name="周法人", **PRINCIPAL),
        "principal_operator": provision_test_card(test_ca, "sm2", kind=CardKind.OPERATOR,
                                                  holder_name="吴操作", **PRINCIPAL),
        "agent_legal": provision_test_card(test_ca, "sm2", kind=CardKind.LEGAL_PERSON,
                                           holder_name="郑法人", **AGENT),
        "agent_operator": provision_test_card(test_ca, "sm2", kind=CardKind.OPERATOR,
                                              holder_name="王代理", **AGENT),
        "agent_other_operator": provision_test_card(test_ca, "sm2", kind=CardKind.OPERATOR,
                                                    holder_name="冯代理", **AGENT),
    }


@pytest.fixture
def centre(stack: CardStack, test_ca: TestCA, tmp_path: Path) -> Iterator[DataCenterProcess]:
    process = start_datacenter(tmp_path / "dc", test_ca.trust_bundle)
    yield process
    process.stop()


class Client(Eport):
    centre: DataCenterProcess

    def run(self, *args: str | Path, pin: bool = True, lang: str | None = None) -> Result:
        extra = ["--pin-stdin"] if pin else []
        return self(*args, *extra, stdin=PIN + "\n" if pin else None, lang=lang,
                    env={"EPORT_DATACENTER": self.centre.address})

    def as_card(self, image: CardImage) -> None:
        self.put(image)

    def document(self, name: str, document: dict[str, Any]) -> Path:
        return self.file(name, json.dumps(document, ensure_ascii=False, indent=1))

    def import_ebook(self, ebook_number: str, items: list[dict[str, str]]) -> None:
        """The principal's e-book (or handbook) records loaded with `eport-datacenter ebook
        import`, the data centre stopped meanwhile."""
        records = self.file(f"{ebook_number}.json", json.dumps(
            {"ebook_number": ebook_number, "enterprise_code": PRINCIPAL["customs_code"],
             "items": items}, ensure_ascii=False))
        self.centre.stop()
        imported = subprocess.run([sys.executable, "-m", "eport.datacenter.command", "ebook",
                                   "import", str(records), "--db", str(self.centre.db_path)],
                                  capture_output=True, text=True)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        self.centre.start()


@pytest.fixture
def client(stack: CardStack, centre: DataCenterProcess, tmp_path: Path) -> Iterator[Client]:
    runner = Client(stack, tmp_path)
    runner.centre = centre
    yield runner
    if stack.daemon is None or stack.daemon.process.poll() is not None:
        stack.start_daemon()
    for slot in (0, 1):
        stack.remove(slot)


_internal_numbers = itertools.count(1)


def principal_document(**header: Any) -> dict[str, Any]:
    """The principal's document with an internal number of its own (they may not repeat)."""
    header.setdefault("internal_number", f"PD{next(_internal_numbers):06d}")
    return valid_bonded(enterprise_code=PRINCIPAL["customs_code"],
                        enterprise_name=PRINCIPAL["enterprise_name"], **header)


# ---- authorization ----

def test_only_a_legal_person_card_grants(client: Client, cards: dict[str, CardImage]) -> None:
    """E-book manual §4 1.1: "非法人卡，不允许操作!", from the client and from the data centre."""
    client.as_card(cards["agent_legal"])
    ok_json(client.run("auth", "permissions", "--subsystem", "handbook", "--json"),
            "auth permissions")  # the agent's card has logged in once: it is in the registry
    client.as_card(cards["principal_operator"])
    refused = client.run("auth", "grant", "--agent", AGENT["customs_code"], "--subsystem",
                         "handbook", "--until", china_day(30), lang="zh")
    assert "非法人卡，不允许操作!" in human_error(refused, "WRONG_CARD_KIND", 16)
    operator = SigningCard(cards["principal_operator"])
    with pytest.raises(grpc.RpcError) as caught:
        client.centre.authorization().GrantEnterprise(operator.request("GrantEnterprise", {
            "agent_customs_code": AGENT["customs_code"], "subsystem": "handbook",
            "valid_until": china_day(30)}), timeout=10)
    detail = error_detail(caught.value)
    assert detail.message_zh == "非法人卡，不允许操作!" and detail.required_card_kind == \
        "legal-person"


def _grant(client: Client, cards: dict[str, CardImage], until: str, subsystem: str
           ) -> dict[str, Any]:
    client.as_card(cards["agent_legal"])
    ok_json(client.run("auth", "permissions", "--subsystem", subsystem, "--json"),
            "auth permissions")
    client.as_card(cards["principal_legal"])
    grant = ok_json(client.run("auth", "grant", "--agent", AGENT["customs_code"],
                               "--subsystem", subsystem, "--until", until, "--json"),
                    "auth grant")
    assert grant["agent"] == {"customs_code": AGENT["customs_code"],
                              "credit_code": AGENT["credit_code"],
                              "name": AGENT["enterprise_name"]}
    assert grant["principal"]["customs_code"] == PRINCIPAL["customs_code"]
    assert grant["granted_on"] == china_day() and grant["grant_type"] == "operate"
    assert grant["valid_now"]
    return grant


def test_the_agents_operator_acts_for_the_principal_only_with_both_grants(
        client: Client, cards: dict[str, CardImage]) -> None:
    """E-book manual §4 1.1-1.3 enforced by the data centre."""
    from eport.common.bonded.document import subsystem_for

    document = principal_document()
    subsystem = subsystem_for(document["header"]["management_mode"])
    path = client.document("for-principal.json", document)
    grant = _grant(client, cards, china_day(1), subsystem)

    client.as_card(cards["agent_operator"])
    error = error_json(client.run("bonded", "save", path, "--json"), "NOT_AUTHORIZED", 19)
    assert "grant-operators" in error["remedy"]["en"]

    client.as_card(cards["agent_legal"])
    received = ok_json(client.run("auth", "list", "--received", "--principal-code",
                                  PRINCIPAL["customs_code"], "--json"), "auth list")
    assert [g["grant_id"] for g in received["grants"]] == [grant["grant_id"]]
    operator_id = cards["agent_operator"].profile.card_id
    granted = ok_json(client.run("auth", "grant-operators", grant["grant_id"], "--card-id",
                                 operator_id, "--json"), "auth grant-operators")
    assert [g["operator_card_id"] for g in granted["grants"]] == [operator_id]
    permissions = ok_json(client.run("auth", "permissions", "--subsystem", subsystem,
                                     "--json"), "auth permissions")["grants"]
    assert [(p["operator_card_id"], p["principal"]["customs_code"]) for p in permissions] \
        == [(operator_id, PRINCIPAL["customs_code"])]

    client.as_card(cards["agent_operator"])
    saved = ok_json(client.run("bonded", "save", path, "--json"), "bonded save")
    assert saved["enterprise_code"] == PRINCIPAL["customs_code"]
    assert saved["agent_code"] == AGENT["customs_code"]
    declared = ok_json(client.run("bonded", "declare", saved["temporary_number"], "--wait",
                                  "20", "--json"), "bonded declare")
    assert declared["status"] == "BONDED_APPROVED", declared
    client.as_card(cards["agent_other_operator"])  # an operator the grant does not name
    error_json(client.run("bonded", "save", client.document("other.json", principal_document()),
                          "--json"), "NOT_AUTHORIZED", 19)

    # The grant runs out at the end of tomorrow: the day after, the agent cannot act.
    client.centre.restart(days_ahead=2)
    client.as_card(cards["agent_operator"])
    error_json(client.run("bonded", "save", client.document("late.json", principal_document()),
                          "--json"), "NOT_AUTHORIZED", 19)
    client.centre.restart(days_ahead=0)
    ok_json(client.run("bonded", "save", client.document("again.json", principal_document()),
                       "--json"), "bonded save")

    # Deleting the inter-enterprise grant deletes its intra-enterprise grants (§4 1.1 注3).
    client.as_card(cards["principal_legal"])
    deleted = ok_json(client.run("auth", "delete", grant["grant_id"], "--json"), "auth delete")
    assert deleted["operator_grants_deleted"] == 1
    client.as_card(cards["agent_legal"])
    assert ok_json(client.run("auth", "permissions", "--subsystem", subsystem, "--json"),
                   "auth permissions")["grants"] == []
    client.as_card(cards["agent_operator"])
    error_json(client.run("bonded", "save", client.document("gone.json", principal_document()),
                          "--json"), "NOT_AUTHORIZED", 19)


def test_a_grant_to_all_operators_is_one_record_without_a_card_number(
        client: Client, cards: dict[str, CardImage]) -> None:
    """E-book manual §4 1.3: 当授予全部操作员时，只显示一条记录，而且该记录IC卡号的值为空."""
    grant = _grant(client, cards, china_day(30), "ebook")
    client.as_card(cards["agent_legal"])
    ok_json(client.run("auth", "grant-operators", grant["grant_id"], "--all", "--json"),
            "auth grant-operators")
    shown = client.run("auth", "permissions", "--subsystem", "ebook", "--json")
    grants = ok_json(shown, "auth permissions")["grants"]
    assert len(grants) == 1 and grants[0]["operator_card_id"] is None
    assert grants[0]["all_operators"]
    human = client.run("auth", "permissions", "--subsystem", "ebook")
    assert "all operators" in human.stdout, describe(human)


# ---- bonded verification ----

def test_bonded_flow_query_detail_modify_and_one_redeclaration(
        client: Client, cards: dict[str, CardImage]) -> None:
    """Bonded manual §1.1, §2.2, §3: 暂存, 申报, 入库成功, 审批; query, read-only detail, modify,
    库存重新申报 once."""
    client.as_card(cards["principal_operator"])
    document = principal_document()
    path = client.document("bonded.json", document)
    saved = ok_json(client.run("bonded", "save", path, "--json"), "bonded save")
    assert saved["status"] == "BONDED_SAVED" and saved["temporary_number"].startswith("Z")

    # 修改 a saved one: the remarks change, the number stays.
    document["header"]["remarks"] = "盘点后修改"
    modified = ok_json(client.run("bonded", "modify", saved["temporary_number"],
                                  client.document("bonded2.json", document), "--json"),
                       "bonded modify")
    assert modified["temporary_number"] == saved["temporary_number"]

    declared = ok_json(client.run("bonded", "declare", saved["temporary_number"], "--wait",
                                  "20", "--json"), "bonded declare")
    assert declared["status"] == "BONDED_APPROVED", declared
    unified = declared["unified_number"]
    assert declared["declaration_date"] == china_day().replace("-", "")
    receipts = ok_json(client.run("bonded", "receipts", "--number", unified, "--json"),
                       "bonded receipts")["receipts"]
    assert [r["kind"] for r in receipts] == ["STORED_RECEIPT", "APPROVED_RECEIPT"]

    header = document["header"]
    day = china_day().replace("-", "")
    for option, value in (("--internal-number", header["internal_number"]),
                          ("--enterprise-code", header["enterprise_code"]),
                          ("--stocktaking-date", header["stocktaking_date"])):
        found = ok_json(client.run("bonded", "query", option, value, "--json"), "bonded query")
        assert unified in [r["unified_number"] for r in found["records"]], (option, found)
    ranged = ok_json(client.run("bonded", "query", "--declared-from", day, "--declared-to",
                                day, "--json"), "bonded query")
    assert unified in [r["unified_number"] for r in ranged["records"]]
    before = ok_json(client.run("bonded", "query", "--declared-to", "20200101", "--json"),
                     "bonded query")
    assert unified not in [r["unified_number"] for r in before["records"]]

    detail = ok_json(client.run("bonded", "show", unified, "--json"), "bonded show")
    assert detail["read_only"] and detail["document"]["header"]["remarks"] == "盘点后修改"
    # An approved record is modified only by 库存重新申报.
    error_json(client.run("bonded", "modify", unified, client.document("no.json", document),
                          "--json"), "WRONG_STATE", 17)

    document["items"][0]["stock_qty"] = "999"
    document["items"][0]["total_stock_qty"] = ""
    again = ok_json(client.run("bonded", "redeclare", unified,
                               client.document("stock.json", document), "--wait", "20",
                               "--json"), "bonded redeclare")
    assert again["redeclared"] and again["status"] == "BONDED_APPROVED", again
    twice = client.run("bonded", "redeclare", unified,
                       client.document("stock2.json", document), lang="zh")
    assert "只可变更一次" in human_error(twice, "WRONG_STATE", 17)


def test_save_names_the_first_bad_and_the_first_empty_field_declare_every_empty_one(
        client: Client, cards: dict[str, CardImage]) -> None:
    """Bonded manual §2.4: at 暂存 "xx 字段格式不正确，请修改" for the first bad field and
    "xxx 不能为空" for the first empty one; at 申报 every empty required field at once."""
    client.as_card(cards["principal_operator"])
    bad = principal_document()
    bad["header"]["stocktaking_date"] = "2026-13-45"
    bad["header"]["management_mode"] = ""
    bad["items"][0]["stock_qty"] = "many"
    saving = client.run("bonded", "save", client.document("bad.json", bad), "--json")
    problems = error_json(saving, "VALIDATION_FAILED", 15)["problems"]
    # One format problem and one empty field, whatever else is wrong; and the body was
    # entered before the header was complete (§2.2.1.2).
    assert [p["code"] for p in problems if p["code"] in ("format", "required")] == \
        ["format", "required"], problems
    assert any(p["path"] == "items" and p["code"] == "rule" for p in problems), problems
    texts = [p["message"]["zh"] for p in problems]
    assert any("盘库日期" in t and "字段格式不正确，请修改" in t for t in texts), texts
    assert any("管理模式" in t and "不能为空" in t for t in texts), texts

    empty = principal_document()
    for key in ("internal_number", "stocktaking_date", "enterprise_nature"):
        empty["header"][key] = ""
    declaring = client.run("bonded", "declare", client.document("empty.json", empty), "--json")
    listed = error_json(declaring, "VALIDATION_FAILED", 15)["problems"]
    named = {p["path"] for p in listed}
    assert {"header.internal_number", "header.stocktaking_date",
            "header.enterprise_nature"} <= named, listed
    assert all("不能为空" in p["message"]["zh"] for p in listed)
    assert ok_json(client.run("bonded", "query", "--json"), "bonded query")["records"] == []


def test_bad_csv_lines_are_named_and_nothing_is_saved(client: Client,
                                                      cards: dict[str, CardImage]) -> None:
    from eport.common.bonded.importing import dump_bonded_csv

    client.as_card(cards["principal_operator"])
    document = principal_document(items=1)
    item = document["items"][0]
    document["items"] = [dict(item, record_item_number=str(n + 1)) for n in range(10_000)]
    document["items"][10]["stock_qty"] = "abc"
    document["items"][500]["name"] = "名" * 51
    document["items"][9_999]["unit"] = "99999"
    path = client.file("big.csv", dump_bonded_csv(document))
    result = client.run("bonded", "save", path, "--json")
    problems = error_json(result, "VALIDATION_FAILED", 15)["problems"]
    lines = " ".join(p["message"]["en"] for p in problems)
    assert lines.count("line ") >= 3, problems
    assert ok_json(client.run("bonded", "query", "--json"), "bonded query")["records"] == []


def test_ebook_mode_takes_code_name_and_unit_from_the_record(
        client: Client, cards: dict[str, CardImage], tmp_path: Path) -> None:
    """Bonded manual §2.2.1.3: with an e-book management mode the item code, name and unit come
    from the e-book record and may not be changed."""
    from tests.support.bonded_documents import ebook_bonded, sample_ebook_items

    ebook = "E32059600011"
    client.import_ebook(ebook, sample_ebook_items(ebook, 3))
    client.as_card(cards["principal_operator"])
    document = ebook_bonded(ebook, 3)
    document["header"].update(enterprise_code=PRINCIPAL["customs_code"],
                              enterprise_name=PRINCIPAL["enterprise_name"])
    for item in document["items"]:
        item.update(hs_code="", name="", unit="")  # filled from the record by the client
    saved = ok_json(client.run("bonded", "save", client.document("eb.json", document),
                               "--json"), "bonded save")
    shown = ok_json(client.run("bonded", "show", saved["temporary_number"], "--json"),
                    "bonded show")["document"]
    expected = sample_ebook_items(ebook, 3)
    assert [(i["hs_code"], i["name"], i["unit"]) for i in shown["items"]] == \
        [(e["hs_code"], e["name"], e["unit"]) for e in expected]
    changed = ebook_bonded(ebook, 3)
    changed["header"].update(enterprise_code=PRINCIPAL["customs_code"],
                             enterprise_name=PRINCIPAL["enterprise_name"])
    changed["header"]["internal_number"] = "EB0002"
    changed["items"][1]["name"] = "改过的名称"
    error = error_json(client.run("bonded", "save", client.document("eb2.json", changed),
                                  "--json"), "VALIDATION_FAILED", 15)
    assert any(p["path"] == "items[1].name" for p in error["problems"]), error


def test_bonded_manual_2_2_1_3_a_handbook_agent_saves_a_paper_handbook_document_and_lists_it(
        client: Client, cards: dict[str, CardImage], tmp_path: Path) -> None:
    """Bonded manual §2.2.1.3 with e-book manual §4: an agent granted the 加工贸易手册 subsystem
    saves a 纸质手册电子化 document whose code, name and unit `eport bonded save` calls up from the
    handbook's records. E-book manual §4 1.2: its query lists the principal's records of that
    subsystem, and none once the grant is deleted. E-book manual §4 1.3: the grant to all operators,
    after a listed card, is one record without a card number."""
    from tests.support.bonded_documents import sample_ebook_items

    handbook = "B32059600021"
    client.import_ebook(handbook, sample_ebook_items(handbook, 2))
    client.as_card(cards["principal_operator"])
    own = ok_json(client.run("bonded", "save", client.document("own.json",
                                                               principal_document()),
                             "--json"), "bonded save")

    grant = _grant(client, cards, china_day(30), "handbook")
    client.as_card(cards["agent_legal"])
    ok_json(client.run("auth", "grant-operators", grant["grant_id"], "--card-id",
                       cards["agent_operator"].profile.card_id, "--json"),
            "auth grant-operators")
    ok_json(client.run("auth", "grant-operators", grant["grant_id"], "--all", "--json"),
            "auth grant-operators")
    permissions = ok_json(client.run("auth", "permissions", "--subsystem", "handbook",
                                     "--json"), "auth permissions")["grants"]
    assert [(p["operator_card_id"], p["all_operators"]) for p in permissions] == [(None, True)]

    document = principal_document(management_mode="2", ebook_number=handbook)
    document["items"] = [dict(item, record_item_number=record["record_item_number"],
                              hs_code="", name="", unit="", specification="")
                         for item, record in zip(document["items"],
                                                 sample_ebook_items(handbook, 2), strict=True)]
    client.as_card(cards["agent_operator"])
    saved = ok_json(client.run("bonded", "save", client.document("paper.json", document),
                               "--json"), "bonded save")
    assert (saved["enterprise_code"], saved["agent_code"]) == (PRINCIPAL["customs_code"],
                                                               AGENT["customs_code"])
    shown = ok_json(client.run("bonded", "show", saved["temporary_number"], "--json"),
                    "bonded show")["document"]
    assert [i["name"] for i in shown["items"]] == [r["name"] for r in
                                                   sample_ebook_items(handbook, 2)]
    listed = ok_json(client.run("bonded", "query", "--json"), "bonded query")["records"]
    assert [r["temporary_number"] for r in listed] == [own["temporary_number"],
                                                       saved["temporary_number"]]

    client.as_card(cards["principal_legal"])
    ok_json(client.run("auth", "delete", grant["grant_id"], "--json"), "auth delete")
    client.as_card(cards["agent_operator"])
    assert ok_json(client.run("bonded", "query", "--json"), "bonded query")["records"] == []


def test_bonded_manual_2_3_bonded_delete_an_item_then_the_record(
        client: Client, cards: dict[str, CardImage]) -> None:
    """Bonded manual §2.3 删除: one body item (the rest renumbered), then the whole record never
    declared; its 企业内部编号 may be used again, its number never."""
    client.as_card(cards["principal_operator"])
    document = principal_document(items=3)
    path = client.document("del.json", document)
    saved = ok_json(client.run("bonded", "save", path, "--json"), "bonded save")
    number = saved["temporary_number"]
    shorter = ok_json(client.run("bonded", "delete", number, "--item", "1", "--json"),
                      "bonded delete")
    assert [(i["item_number"], i["name"]) for i in shorter["document"]["items"]] == [
        (1, document["items"][1]["name"]), (2, document["items"][2]["name"])]
    client.as_card(cards["principal_legal"])  # e-book manual §2.3: the legal-person card 删除
    deleted = ok_json(client.run("bonded", "delete", number, "--json"), "bonded delete")
    assert deleted["status"] == "BONDED_DELETED"
    assert deleted["deleted_by_card"] == cards["principal_legal"].profile.card_id
    gone = error_json(client.run("bonded", "show", number, "--json"), "DOCUMENT_NOT_FOUND", 17)
    assert "删除" in gone["message"]["zh"]
    again = ok_json(client.run("bonded", "save", path, "--json"), "bonded save")
    assert again["temporary_number"] > number
    assert again["internal_number"] == saved["internal_number"]
