"""Authorization (委托授权, e-book manual §4) through the real gRPC server: inter-enterprise
grants by legal-person cards, the enterprise registry, intra-enterprise (operator) grants, the
permissions view, deletion, and check_acting_for as the bonded service uses it."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.common.profile import CardKind
from eport.datacenter.authorization import SUBSYSTEMS, check_acting_for
from eport.datacenter.clock import china_date, now
from eport.datacenter.command import cli
from eport.datacenter.errors import DataCenterError
from eport.datacenter.storage import Store, migrations, open_store
from eport.datacenter.trust import Identity
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.provision import random_credit_code
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.datacenter_stack import (
    ENTERPRISE_B,
    SigningCard,
    error_detail,
    make_signing_card,
)

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")

Auth = pb_grpc.AuthorizationStub
ENTERPRISE_C = ("3100000001", "测试制造有限公司")


@pytest.fixture
def auth(datacenter: tuple[Any, pb_grpc.DataCenterStub]) -> Iterator[Auth]:
    with grpc.insecure_channel(datacenter[0].address) as channel:
        yield pb_grpc.AuthorizationStub(channel)


@pytest.fixture
def store(datacenter: tuple[Any, pb_grpc.DataCenterStub]) -> Store:
    running_store: Store = datacenter[0].store
    return running_store


@pytest.fixture(scope="module")
def principal(test_ca: TestCA) -> SigningCard:
    """Enterprise A's legal-person card: the granting enterprise (授权企业)."""
    return make_signing_card(test_ca, CardKind.LEGAL_PERSON)


@pytest.fixture(scope="module")
def agent(test_ca: TestCA) -> SigningCard:
    """Enterprise B's legal-person card: the agent (代理企业)."""
    return make_signing_card(test_ca, CardKind.LEGAL_PERSON, enterprise=ENTERPRISE_B)


@pytest.fixture(scope="module")
def agent_operator(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.OPERATOR, enterprise=ENTERPRISE_B)


@pytest.fixture(scope="module")
def agent_operator_2(test_ca: TestCA) -> SigningCard:
    # An override makes make_signing_card provision a second, distinct card of B.
    return make_signing_card(test_ca, CardKind.OPERATOR, enterprise=ENTERPRISE_B, days=729)


@pytest.fixture(scope="module")
def third(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.LEGAL_PERSON, enterprise=ENTERPRISE_C)


def today() -> date:
    return date.fromisoformat(china_date(now()))


def later(days: int = 30) -> str:
    return (today() + timedelta(days=days)).isoformat()


def call(auth: Auth, card: SigningCard, method: str, **body: Any) -> Any:
    return getattr(auth, method)(card.request(method, body))


def refused(auth: Auth, card: SigningCard, method: str, **body: Any
            ) -> tuple[grpc.StatusCode, pb.DataCenterErrorDetail]:
    with pytest.raises(grpc.RpcError) as caught:
        call(auth, card, method, **body)
    return caught.value.code(), error_detail(caught.value)


def login(auth: Auth, card: SigningCard) -> pb.Enterprise:
    """What a client's first call does: any signed call registers the card's enterprise."""
    enterprise: pb.Enterprise = call(auth, card, "LookupEnterprise",
                                     customs_code=card.customs_code)
    return enterprise


def grant(auth: Auth, principal: SigningCard, agent_code: str, subsystem: str = "ebook",
          **extra: Any) -> pb.EnterpriseGrant:
    body = {"agent_customs_code": agent_code, "subsystem": subsystem,
            "valid_until": later(), **extra}
    granted: pb.EnterpriseGrant = call(auth, principal, "GrantEnterprise", **body)
    return granted


def identity(card: SigningCard) -> Identity:
    profile = card.image.profile
    return Identity(profile.card_id, profile.customs_code, profile.credit_code,
                    profile.enterprise_name, profile.kind, profile.cert_number)


def given(auth: Auth, card: SigningCard, **body: Any) -> list[pb.EnterpriseGrant]:
    return list(call(auth, card, "ListEnterpriseGrants", **body).grants)


# ---- 企业间授权 ------------------------------------------------------------------------------

def test_only_a_legal_person_card_may_grant(auth: Auth, operator: SigningCard,
                                            declarant: SigningCard, agent: SigningCard
                                            ) -> None:
    login(auth, agent)
    for card in (operator, declarant):
        code, detail = refused(auth, card, "GrantEnterprise",
                               agent_customs_code=agent.customs_code, subsystem="ebook",
                               valid_until=later())
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert detail.reason == pb.WRONG_CARD_KIND
        assert detail.message_zh == "非法人卡，不允许操作!"
        assert "法人卡" in detail.remedy_zh and "legal-person card" in detail.remedy_en
        assert detail.required_card_kind == "legal-person"
    assert given(auth, operator) == []


def test_the_agent_is_unknown_until_its_card_logs_in_once(
        auth: Auth, principal: SigningCard, agent: SigningCard,
        caplog: pytest.LogCaptureFixture) -> None:
    code, detail = refused(auth, principal, "GrantEnterprise",
                           agent_customs_code=agent.customs_code, subsystem="ebook",
                           valid_until=later())
    assert code == grpc.StatusCode.NOT_FOUND and detail.reason == pb.UNKNOWN_ENTERPRISE
    assert agent.customs_code in detail.message_zh
    assert "log in once" in detail.remedy_en and "import the registry" in detail.remedy_en
    code, detail = refused(auth, principal, "LookupEnterprise",
                           customs_code=agent.customs_code)
    assert detail.reason == pb.UNKNOWN_ENTERPRISE

    me = login(auth, agent)
    assert (me.customs_code, me.name) == ENTERPRISE_B
    assert call(auth, principal, "LookupEnterprise", customs_code=agent.customs_code) == me

    caplog.set_level("DEBUG")
    until = later(45)
    granted = grant(auth, principal, agent.customs_code, valid_until=until)
    a, b = principal.image.profile, agent.image.profile
    assert re.fullmatch(r"G\d{12}", granted.grant_id)
    assert granted.principal == pb.Enterprise(customs_code=a.customs_code,
                                              credit_code=a.credit_code, name=a.enterprise_name)
    assert granted.agent == pb.Enterprise(customs_code=b.customs_code,
                                          credit_code=b.credit_code, name=b.enterprise_name)
    assert (granted.subsystem, granted.grant_type) == ("ebook", "operate")
    assert granted.valid_from == granted.granted_on == today().isoformat()
    assert granted.valid_until == until and granted.valid_now
    assert granted.granted_by_card == principal.card_id
    assert until not in caplog.text  # logs never hold payload values


def test_registry_import_json_and_csv_then_list(
        tmp_path: Path, auth: Auth, store: Store, principal: SigningCard) -> None:
    credit_c, credit_d = random_credit_code(), random_credit_code()
    json_file = tmp_path / "registry.json"
    json_file.write_text(json.dumps([{"customs_code": ENTERPRISE_C[0], "credit_code": credit_c,
                                      "name": ENTERPRISE_C[1]}], ensure_ascii=False), "utf-8")
    csv_file = tmp_path / "registry.csv"
    csv_file.write_text(f"customs_code,credit_code,name\n4403000002,{credit_d},深圳测试物流有限公司\n",
                        "utf-8")
    runner = CliRunner()
    for path in (json_file, csv_file):
        result = runner.invoke(cli, ["registry", "import", str(path), "--db", store.location])
        assert result.exit_code == 0, result.output
        assert "1 enterprise(s), 1 new or changed" in result.output

    bad = tmp_path / "bad.csv"
    bad.write_text(f"4403000003,{credit_d},好企业\n4403000004,NOTACREDITCODE0000,坏企业\n",
                   "utf-8")
    result = runner.invoke(cli, ["registry", "import", str(bad), "--db", store.location])
    assert result.exit_code != 0 and "line 2" in result.output

    result = runner.invoke(cli, ["registry", "list", "--db", store.location])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"{ENTERPRISE_C[0]}\t{credit_c}\t{ENTERPRISE_C[1]}" in lines
    assert f"4403000002\t{credit_d}\t深圳测试物流有限公司" in lines
    assert not any(line.startswith("4403000003") for line in lines)  # nothing of a bad file

    granted = grant(auth, principal, "4403000002", "logistics")
    assert granted.agent == pb.Enterprise(customs_code="4403000002", credit_code=credit_d,
                                          name="深圳测试物流有限公司")


def test_self_grants_bad_subsystems_and_dates_are_refused_and_change_nothing(
        auth: Auth, principal: SigningCard, agent: SigningCard) -> None:
    login(auth, agent)
    good = {"agent_customs_code": agent.customs_code, "subsystem": "ebook",
            "valid_until": later()}
    yesterday = (today() - timedelta(days=1)).isoformat()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "agent_customs_code": principal.customs_code}, pb.VALIDATION_FAILED,
         "agent_customs_code"),
        ({**good, "subsystem": "customs"}, pb.BAD_REQUEST, ""),
        ({**good, "valid_until": yesterday}, pb.VALIDATION_FAILED, "valid_until"),
        ({**good, "valid_from": yesterday}, pb.VALIDATION_FAILED, "valid_from"),
        ({**good, "valid_from": later(31)}, pb.VALIDATION_FAILED, "valid_from"),
        ({**good, "valid_until": "2030/01/01"}, pb.BAD_REQUEST, ""),
        ({**good, "grant_type": "query"}, pb.BAD_REQUEST, ""),
        ({**good, "agent_customs_code": "44019"}, pb.BAD_REQUEST, ""),
        ({"agent_customs_code": agent.customs_code, "subsystem": "ebook"}, pb.BAD_REQUEST, ""),
        ({**good, "note": "x"}, pb.BAD_REQUEST, ""),
    ]
    for body, reason, path in cases:
        code, detail = refused(auth, principal, "GrantEnterprise", **body)
        assert detail.reason == reason, body
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        if path:
            assert [problem.path for problem in detail.problems] == [path], body
    _, detail = refused(auth, principal, "GrantEnterprise", **{**good, "subsystem": "customs"})
    for key, (zh, _en) in SUBSYSTEMS.items():
        assert key in detail.message_en and zh in detail.message_zh  # the choices are listed
    _, detail = refused(auth, principal, "GrantEnterprise",
                        **{**good, "agent_customs_code": principal.customs_code})
    assert detail.message_zh == "不能授权给本企业"
    assert given(auth, principal) == []
    # The last day may be today; the first day may be later than today.
    assert grant(auth, principal, agent.customs_code, valid_until=today().isoformat()).valid_now
    assert not grant(auth, principal, agent.customs_code, "handbook", valid_from=later(2),
                     valid_until=later(3)).valid_now


def test_granting_again_replaces_the_validity_and_keeps_the_operators(
        auth: Auth, principal: SigningCard, agent: SigningCard) -> None:
    login(auth, agent)
    first = grant(auth, principal, agent.customs_code, valid_until=later(10))
    call(auth, agent, "GrantOperators", grant_id=first.grant_id, all_operators=True)
    second = grant(auth, principal, agent.customs_code, valid_until=later(400),
                   valid_from=later(1))
    assert second.grant_id == first.grant_id
    assert (second.valid_from, second.valid_until) == (later(1), later(400))
    assert [g.valid_until for g in given(auth, principal)] == [later(400)]
    permissions = call(auth, agent, "ListOperatorPermissions", subsystem="ebook").grants
    assert [p.valid_until for p in permissions] == [later(400)]


def test_lists_given_and_received_with_filters(
        auth: Auth, principal: SigningCard, agent: SigningCard, third: SigningCard,
        agent_operator: SigningCard) -> None:
    login(auth, agent)
    login(auth, third)
    ebook = grant(auth, principal, agent.customs_code, "ebook")
    inventory = grant(auth, principal, agent.customs_code, "inventory")
    from_third = grant(auth, third, agent.customs_code, "ebook")
    grant(auth, principal, third.customs_code, "goods-flow")

    def ids(grants: list[pb.EnterpriseGrant]) -> list[str]:
        return [g.grant_id for g in grants]

    assert len(given(auth, principal)) == 3
    assert ids(given(auth, principal, direction="given", subsystem="inventory")) == \
        [inventory.grant_id]
    assert given(auth, agent) == []  # B gave nothing
    # §4 1.2: the agent's screen lists the grants it received, and any card of it may look.
    received = given(auth, agent_operator, direction="received")
    assert ids(received) == sorted([ebook.grant_id, inventory.grant_id, from_third.grant_id])
    assert ids(given(auth, agent, direction="received",
                     principal_customs_code=principal.customs_code)) == \
        [ebook.grant_id, inventory.grant_id]
    assert ids(given(auth, agent, direction="received",
                     principal_credit_code=third.image.profile.credit_code)) == \
        [from_third.grant_id]
    assert ids(given(auth, agent, direction="received", subsystem="ebook",
                     principal_customs_code=third.customs_code)) == [from_third.grant_id]
    assert given(auth, agent, direction="received", principal_customs_code="1111111111") == []
    assert all(g.valid_now for g in received)
    for body in ({"direction": "sideways"}, {"principal_customs_code": 5301234567},
                 {"subsystem": "all"}, {"agent": "x"}):
        _, detail = refused(auth, agent, "ListEnterpriseGrants", **body)
        assert detail.reason == pb.BAD_REQUEST, body


# ---- 企业内授权 and 查看操作员权限 -------------------------------------------------------------

def test_operator_grants_all_or_listed_and_the_refused_combinations(
        auth: Auth, principal: SigningCard, agent: SigningCard,
        agent_operator: SigningCard, agent_operator_2: SigningCard) -> None:
    login(auth, agent)
    received = grant(auth, principal, agent.customs_code)
    card_1, card_2 = agent_operator.card_id, agent_operator_2.card_id
    listed = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                  all_operators=False, operator_card_ids=[card_1, card_1, card_2]).grants
    assert [g.operator_card_id for g in listed] == [card_1, card_2]
    assert not any(g.all_operators for g in listed)
    assert all(re.fullmatch(r"P\d{12}", g.operator_grant_id) for g in listed)
    again = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                 all_operators=False, operator_card_ids=[card_1]).grants
    assert [g.operator_grant_id for g in again] == [listed[0].operator_grant_id]  # idempotent
    every = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                 all_operators=True).grants
    assert len(every) == 1 and every[0].all_operators and every[0].operator_card_id == ""
    # What `eport auth grant-operators --all` sends: an empty list is no card id.
    assert call(auth, agent, "GrantOperators", grant_id=received.grant_id, all_operators=True,
                operator_card_ids=[]).grants == every
    assert every[0].grant_id == received.grant_id and every[0].granted_by_card == agent.card_id
    assert every[0].principal.customs_code == principal.customs_code

    bad_bodies: list[dict[str, Any]] = [
        {"all_operators": True, "operator_card_ids": [card_1]},
        {"all_operators": False},
        {"all_operators": False, "operator_card_ids": []},
        {"all_operators": False, "operator_card_ids": [str(n) for n in range(101)]},
        {"all_operators": False, "operator_card_ids": ["not-a-card"]},
        {"all_operators": False, "operator_card_ids": ["12345678901234567"]},
        {"all_operators": "yes"},
    ]
    for body in bad_bodies:
        _, detail = refused(auth, agent, "GrantOperators", grant_id=received.grant_id, **body)
        assert detail.reason == pb.BAD_REQUEST, body
    # Only the agent's legal-person card, only on a grant its enterprise received.
    _, detail = refused(auth, agent_operator, "GrantOperators", grant_id=received.grant_id,
                        all_operators=True)
    assert detail.message_zh == "非法人卡，不允许操作!"
    _, detail = refused(auth, principal, "GrantOperators", grant_id=received.grant_id,
                        all_operators=True)
    assert detail.reason == pb.GRANT_NOT_FOUND
    _, detail = refused(auth, agent, "GrantOperators", grant_id="G999999999999",
                        all_operators=True)
    assert detail.reason == pb.GRANT_NOT_FOUND
    permissions = call(auth, agent, "ListOperatorPermissions", subsystem="ebook").grants
    assert list(permissions) == list(every)  # e-book manual §4 1.3: one record, no card number


def test_ebook_manual_4_1_3_all_operators_is_one_record_even_after_listed_cards(
        auth: Auth, store: Store, principal: SigningCard, agent: SigningCard,
        agent_operator: SigningCard, agent_operator_2: SigningCard) -> None:
    """E-book manual §4 1.3 说明1: "当授予全部操作员时，只显示一条记录，而且该记录IC卡号的值为空",
    also when cards were listed on that grant before (§4 1.2: 是 greys the card number out)."""
    login(auth, agent)
    received = grant(auth, principal, agent.customs_code, "logistics")
    call(auth, agent, "GrantOperators", grant_id=received.grant_id, all_operators=False,
         operator_card_ids=[agent_operator.card_id, agent_operator_2.card_id])
    assert len(call(auth, agent, "ListOperatorPermissions", subsystem="logistics").grants) == 2
    every = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                 all_operators=True).grants
    view = call(auth, agent, "ListOperatorPermissions", subsystem="logistics").grants
    assert [(g.operator_grant_id, g.operator_card_id, g.all_operators) for g in view] == [
        (every[0].operator_grant_id, "", True)]
    # The listed cards are covered by it: they still may act for the principal.
    for card in (agent_operator, agent_operator_2):
        assert _acting(store, card, principal.customs_code, "logistics") is None
    # Listing cards beside it would narrow it silently: refused, nothing changes.
    code, detail = refused(auth, agent, "GrantOperators", grant_id=received.grant_id,
                           all_operators=False, operator_card_ids=[agent_operator.card_id])
    assert (code, detail.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.VALIDATION_FAILED)
    assert every[0].operator_grant_id in detail.remedy_zh and "delete-operator" in \
        detail.remedy_en
    assert [p.section for p in detail.problems] == ["e-book manual §4 1.2, 1.3"]
    assert call(auth, agent, "ListOperatorPermissions", subsystem="logistics").grants == view
    # After deleting the all-operators record, cards may be listed again.
    call(auth, agent, "DeleteOperatorGrant", operator_grant_id=every[0].operator_grant_id)
    listed = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                  all_operators=False, operator_card_ids=[agent_operator.card_id]).grants
    assert [g.operator_card_id for g in listed] == [agent_operator.card_id]


def test_the_permissions_view_shows_an_all_operators_grant_as_one_record(
        auth: Auth, principal: SigningCard, third: SigningCard, agent: SigningCard,
        agent_operator: SigningCard) -> None:
    login(auth, agent)
    from_a = grant(auth, principal, agent.customs_code, "inventory")
    from_c = grant(auth, third, agent.customs_code, "inventory")
    call(auth, agent, "GrantOperators", grant_id=from_a.grant_id, all_operators=True)
    call(auth, agent, "GrantOperators", grant_id=from_c.grant_id, all_operators=False,
         operator_card_ids=[agent_operator.card_id])
    # Any card of the agent may look (here its operator card).
    view = call(auth, agent_operator, "ListOperatorPermissions", subsystem="inventory").grants
    # Ordered by the granting enterprise's code: C (3100…) before A (5301…).
    assert [(g.principal.customs_code, g.operator_card_id, g.all_operators) for g in view] == [
        (third.customs_code, agent_operator.card_id, False),
        (principal.customs_code, "", True),
    ]
    assert all(g.valid_now and g.valid_until == later() for g in view)
    assert call(auth, agent, "ListOperatorPermissions", subsystem="ebook").grants == []
    assert call(auth, principal, "ListOperatorPermissions", subsystem="inventory").grants == []
    for body in ({}, {"subsystem": "bonded"}):
        _, detail = refused(auth, agent, "ListOperatorPermissions", **body)
        assert detail.reason == pb.BAD_REQUEST


# ---- deleting ---------------------------------------------------------------------------------

def test_deleting_one_grant_at_a_time_deletes_its_operator_grants(
        auth: Auth, principal: SigningCard, agent: SigningCard, operator: SigningCard,
        agent_operator: SigningCard, agent_operator_2: SigningCard) -> None:
    login(auth, agent)
    doomed = grant(auth, principal, agent.customs_code, "ebook")
    kept = grant(auth, principal, agent.customs_code, "handbook")
    call(auth, agent, "GrantOperators", grant_id=doomed.grant_id, all_operators=False,
         operator_card_ids=[agent_operator.card_id, agent_operator_2.card_id])
    call(auth, agent, "GrantOperators", grant_id=kept.grant_id, all_operators=True)

    for body in ({"grant_id": [doomed.grant_id, kept.grant_id]}, {"grant_ids": ["x"]}, {}):
        _, detail = refused(auth, principal, "DeleteEnterpriseGrant", **body)
        assert detail.reason == pb.BAD_REQUEST, body
    _, detail = refused(auth, operator, "DeleteEnterpriseGrant", grant_id=doomed.grant_id)
    assert detail.message_zh == "非法人卡，不允许操作!"
    for card, grant_id in ((agent, doomed.grant_id), (principal, "G000000009999")):
        code, detail = refused(auth, card, "DeleteEnterpriseGrant", grant_id=grant_id)
        assert (code, detail.reason) == (grpc.StatusCode.NOT_FOUND, pb.GRANT_NOT_FOUND)

    result = call(auth, principal, "DeleteEnterpriseGrant", grant_id=doomed.grant_id)
    assert (result.grant_id, result.operator_grants_deleted) == (doomed.grant_id, 2)
    assert [g.grant_id for g in given(auth, principal)] == [kept.grant_id]
    assert call(auth, agent, "ListOperatorPermissions", subsystem="ebook").grants == []
    assert len(call(auth, agent, "ListOperatorPermissions", subsystem="handbook").grants) == 1
    _, detail = refused(auth, principal, "DeleteEnterpriseGrant", grant_id=doomed.grant_id)
    assert detail.reason == pb.GRANT_NOT_FOUND


def test_deleting_an_operator_grant(auth: Auth, principal: SigningCard, agent: SigningCard,
                                    agent_operator: SigningCard) -> None:
    login(auth, agent)
    received = grant(auth, principal, agent.customs_code)
    listed = call(auth, agent, "GrantOperators", grant_id=received.grant_id,
                  all_operators=False, operator_card_ids=[agent_operator.card_id]).grants
    target = listed[0].operator_grant_id
    _, detail = refused(auth, principal, "DeleteOperatorGrant", operator_grant_id=target)
    assert detail.reason == pb.GRANT_NOT_FOUND  # the agent's grant, not the principal's
    _, detail = refused(auth, agent_operator, "DeleteOperatorGrant", operator_grant_id=target)
    assert detail.reason == pb.WRONG_CARD_KIND
    _, detail = refused(auth, agent, "DeleteOperatorGrant", operator_grant_id="G1")
    assert detail.reason == pb.BAD_REQUEST
    result = call(auth, agent, "DeleteOperatorGrant", operator_grant_id=target)
    assert (result.grant_id, result.operator_grants_deleted) == (received.grant_id, 1)
    assert call(auth, agent, "ListOperatorPermissions", subsystem="ebook").grants == []
    _, detail = refused(auth, agent, "DeleteOperatorGrant", operator_grant_id=target)
    assert detail.reason == pb.GRANT_NOT_FOUND
    assert len(given(auth, principal)) == 1  # the enterprise grant stays


# ---- check_acting_for -------------------------------------------------------------------------

def _acting(store: Store, card: SigningCard, principal_code: str, subsystem: str = "ebook",
            on: date | None = None) -> DataCenterError | None:
    with store.read() as connection:
        try:
            check_acting_for(connection, identity(card), principal_code, subsystem,
                             on or today())
        except DataCenterError as error:
            return error
    return None


def test_check_acting_for(auth: Auth, store: Store, principal: SigningCard,
                          agent: SigningCard, operator: SigningCard,
                          agent_operator: SigningCard, agent_operator_2: SigningCard) -> None:
    a = principal.customs_code
    assert _acting(store, operator, a) is None  # its own enterprise: no grant needed

    missing = _acting(store, agent_operator, a)
    assert missing is not None and missing.reason == pb.NOT_AUTHORIZED
    assert missing.status_code == grpc.StatusCode.PERMISSION_DENIED
    assert a in missing.message.zh and "加工贸易账册" in missing.message.zh
    assert "inter-enterprise grant from" in missing.message.en
    assert "eport auth grant" in missing.remedy.en and "法人卡" in missing.remedy.zh

    login(auth, agent)
    received = grant(auth, principal, agent.customs_code, valid_until=later(10))
    only_inter = _acting(store, agent_operator, a)
    assert only_inter is not None and only_inter.reason == pb.NOT_AUTHORIZED
    assert agent_operator.card_id in only_inter.message.en
    assert "intra-enterprise" in only_inter.message.en
    assert "eport auth grant-operators" in only_inter.remedy.en

    call(auth, agent, "GrantOperators", grant_id=received.grant_id, all_operators=False,
         operator_card_ids=[agent_operator.card_id])
    assert _acting(store, agent_operator, a) is None
    assert _acting(store, agent_operator_2, a) is not None  # not listed
    assert _acting(store, agent_operator, a, "inventory") is not None  # another subsystem
    assert _acting(store, agent_operator, a, on=date.fromisoformat(later(10))) is None

    expired = _acting(store, agent_operator, a, on=date.fromisoformat(later(11)))
    assert expired is not None and f"expired on {later(10)}" in expired.message.en
    assert "eport auth grant" in expired.remedy.en

    call(auth, agent, "GrantOperators", grant_id=received.grant_id, all_operators=True)
    assert _acting(store, agent_operator_2, a) is None  # all operators now
    call(auth, principal, "DeleteEnterpriseGrant", grant_id=received.grant_id)
    after = _acting(store, agent_operator, a)
    assert after is not None and "There is no inter-enterprise grant" in after.message.en

    with store.read() as connection, pytest.raises(ValueError):
        check_acting_for(connection, identity(agent_operator), a, "customs", today())


def test_a_grant_not_yet_valid_does_not_authorize(
        auth: Auth, store: Store, principal: SigningCard, agent: SigningCard,
        agent_operator: SigningCard) -> None:
    login(auth, agent)
    received = grant(auth, principal, agent.customs_code, valid_from=later(5),
                     valid_until=later(9))
    call(auth, agent, "GrantOperators", grant_id=received.grant_id, all_operators=True)
    early = _acting(store, agent_operator, principal.customs_code)
    assert early is not None and f"valid from {later(5)}" in early.message.en
    assert _acting(store, agent_operator, principal.customs_code,
                   on=date.fromisoformat(later(5))) is None


# ---- trust, wiring, schema --------------------------------------------------------------------

def test_a_replayed_grant_is_refused(auth: Auth, principal: SigningCard,
                                     agent: SigningCard) -> None:
    login(auth, agent)
    request = principal.request("GrantEnterprise", {
        "agent_customs_code": agent.customs_code, "subsystem": "ebook",
        "valid_until": later()})
    first = auth.GrantEnterprise(request)
    with pytest.raises(grpc.RpcError) as caught:
        auth.GrantEnterprise(request)
    assert error_detail(caught.value).reason == pb.REPLAY
    assert given(auth, principal) == [first]


def test_the_health_service_names_the_authorization_service(
        datacenter: tuple[Any, pb_grpc.DataCenterStub]) -> None:
    with grpc.insecure_channel(datacenter[0].address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(
            service="eport.datacenter.v1.Authorization"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.sqlite_only
def test_a_schema_1_database_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(migrations()[0].sql)
        connection.execute(
            "INSERT INTO documents (temporary_number, status, document_json, document_type, "
            "direction, declaration_customs, enterprise_code, saved_by_card, saved_at, "
            "save_date, modified_at) VALUES ('Z202600000000000001', 1, '{}', 'declaration', "
            "'import', '5300', '5301234567', '1234', 1, '2026-01-01', 1)")
        connection.execute("INSERT INTO sequences (name, value) VALUES ('temporary:2026', 1)")
        connection.execute("PRAGMA user_version = 1")
    connection.close()
    store = open_store(path)
    try:
        assert store.schema_version == len(migrations()) >= 2
        with store.read() as reader:
            assert reader.execute("SELECT temporary_number FROM documents").fetchall()[0][0] \
                == "Z202600000000000001"
            assert reader.execute("SELECT value FROM sequences").fetchone()[0] == 1
            for table in ("enterprises", "enterprise_grants", "operator_grants"):
                assert reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    finally:
        store.close()


@pytest.mark.sqlite_only
def test_schema_5_keeps_only_the_all_operators_record_ebook_manual_4_1_3(tmp_path: Path) -> None:
    """A database of schema 4 may hold listed cards beside an all-operators record of the same
    grant; migrating keeps the one record without a card number (e-book manual §4 1.3 说明1)."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:
        for migration in migrations()[:4]:
            connection.executescript("\n".join(migration.statements("sqlite")))
        connection.execute(
            "INSERT INTO enterprise_grants VALUES ('G000000000001', '5301234567', "
            "'91440300MA5F2K8Q19', 'A', '4403960001', '91440300MA5F2K8Q19', 'B', 'ebook', "
            "'operate', '2026-01-01', '2099-12-31', '2026-01-01', '1', 1)")
        connection.executemany(
            "INSERT INTO operator_grants VALUES (?, 'G000000000001', ?, '2026-01-01', '1', 1)",
            [("P000000000001", "61230001"), ("P000000000002", ""),
             ("P000000000003", "61230002")])
        connection.execute("PRAGMA user_version = 4")
    connection.close()
    store = open_store(path)
    try:
        with store.read() as reader:
            rows = reader.execute("SELECT operator_grant_id, operator_card_id FROM "
                                  "operator_grants").fetchall()
            assert [tuple(row) for row in rows] == [("P000000000002", "")]
    finally:
        store.close()
