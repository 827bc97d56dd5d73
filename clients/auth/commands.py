"""`eport auth`: 委托授权 (e-book manual §4): inter-enterprise grants by the granting enterprise's
legal-person card, intra-enterprise grants to operator cards by the agent's legal-person card,
and the operators' permissions. A thin client of eportd (signing) and the data centre."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from eport.clients.datacenter.context import (
    DataCenterGroup,
    call_signed,
    datacenter_option,
    signer,
)
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.errors import usage_error
from eport.clients.kit.output import Output
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

# E-book manual §4 1.1: what an enterprise can delegate.
SUBSYSTEMS = {"ebook": Bilingual("加工贸易账册", "processing-trade e-book"),
              "handbook": Bilingual("加工贸易手册", "processing-trade handbook"),
              "logistics": Bilingual("物流账册", "logistics e-book"),
              "goods-flow": Bilingual("货物流转", "goods flow"),
              "inventory": Bilingual("核注清单", "inventory list")}
SUBSYSTEM_HELP = ", ".join(f"{key} ({name.zh})" for key, name in SUBSYSTEMS.items())


def _call(command_args: dict[str, Any], method: str, body: dict[str, Any], *,
          legal_person: bool = False) -> Any:
    card: CardSigner = signer(command_args["reader"], command_args["card_id"],
                              command_args["pin_stdin"], command_args["allow_last_attempt"])
    if legal_person:
        card.require_legal_person()
    return call_signed(card, method, body, service="authorization")


def _enterprise(enterprise: dc.Enterprise) -> dict[str, str]:
    return {"customs_code": enterprise.customs_code, "credit_code": enterprise.credit_code,
            "name": enterprise.name}


def grant_view(grant: dc.EnterpriseGrant) -> dict[str, Any]:
    return {"grant_id": grant.grant_id, "principal": _enterprise(grant.principal),
            "agent": _enterprise(grant.agent), "subsystem": grant.subsystem,
            "grant_type": grant.grant_type, "valid_from": grant.valid_from,
            "valid_until": grant.valid_until, "granted_on": grant.granted_on,
            "granted_by_card": grant.granted_by_card, "valid_now": grant.valid_now}


def operator_grant_view(grant: dc.OperatorGrant) -> dict[str, Any]:
    return {"operator_grant_id": grant.operator_grant_id, "grant_id": grant.grant_id,
            "principal": _enterprise(grant.principal), "agent": _enterprise(grant.agent),
            "subsystem": grant.subsystem, "all_operators": grant.all_operators,
            "operator_card_id": grant.operator_card_id or None,
            "granted_on": grant.granted_on, "valid_until": grant.valid_until,
            "valid_now": grant.valid_now}


def _subsystem_name(out: Output, key: str) -> str:
    return out.text(SUBSYSTEMS.get(key, Bilingual(key, key)))


def _show_grant(out: Output, grant: dc.EnterpriseGrant) -> None:
    state_text = out.text(Bilingual("有效", "valid") if grant.valid_now else
                          Bilingual("已失效或未生效", "not valid today"))
    out.line(f"{grant.grant_id}  {grant.principal.customs_code} {grant.principal.name} → "
             f"{grant.agent.customs_code} {grant.agent.name}  "
             f"{_subsystem_name(out, grant.subsystem)}  {grant.valid_from} – "
             f"{grant.valid_until}  ({state_text})")


def _show_operator_grant(out: Output, grant: dc.OperatorGrant) -> None:
    who = grant.operator_card_id or out.text(Bilingual("全部操作员", "all operators"))
    out.line(f"{grant.operator_grant_id}  {grant.principal.customs_code} "
             f"{grant.principal.name}  {_subsystem_name(out, grant.subsystem)}  {who}  "
             f"{out.text(Bilingual('至', 'until'))} {grant.valid_until}")


def _date(value: datetime | None) -> str | None:
    return value.date().isoformat() if value else None


def card_and_secret_options(function: Callable[..., Any]) -> Callable[..., Any]:
    return json_option(secret_options(card_options(function)))


@click.group("auth", cls=DataCenterGroup)
@datacenter_option
def auth_group() -> None:
    """委托授权: grants between enterprises and to operator cards (e-book manual §4)."""


@auth_group.command("grant", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--agent", "agent_code", required=True, metavar="CUSTOMS_CODE",
              help="The agent enterprise's 10-digit customs code (代理企业编号).")
@click.option("--subsystem", type=click.Choice(list(SUBSYSTEMS)), required=True,
              help=SUBSYSTEM_HELP)
@click.option("--until", "valid_until", type=click.DateTime(["%Y-%m-%d"]), required=True,
              help="Last day of validity (权限有效期), YYYY-MM-DD.")
@click.option("--from", "valid_from", type=click.DateTime(["%Y-%m-%d"]),
              help="First day (default: today).")
@card_and_secret_options
def grant_command(agent_code: str, subsystem: str, valid_until: datetime,
                  valid_from: datetime | None, **card: Any) -> None:
    """企业间授权: let the agent enterprise enter this enterprise's data in SUBSYSTEM.

    Needs this enterprise's legal-person card; the agent's credit code and name come from
    the data centre's registry, the grant date from the data centre."""
    if len(agent_code) != 10:
        raise usage_error(Bilingual("代理企业编号应为10位海关编码",
                                    "The agent's customs code has 10 characters"),
                          Bilingual("请核对代理企业的海关10位编码", "check the agent's code"))
    body: dict[str, Any] = {"agent_customs_code": agent_code, "subsystem": subsystem,
                            "valid_until": _date(valid_until), "grant_type": "operate"}
    if valid_from:
        body["valid_from"] = _date(valid_from)
    grant: dc.EnterpriseGrant = _call(card, "GrantEnterprise", body, legal_person=True)

    def human(out: Output) -> None:
        out.line(Bilingual(f"已授权 ({grant.grant_id})", f"Granted ({grant.grant_id})"),
                 style="green")
        _show_grant(out, grant)

    state().output.result(command_name(), grant_view(grant), human)


@auth_group.command("list", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--received", is_flag=True,
              help="Grants this enterprise received as an agent (default: the ones it gave).")
@click.option("--principal-code", metavar="CUSTOMS_CODE",
              help="Only from this granting enterprise (授权企业编号).")
@click.option("--principal-credit-code", metavar="CREDIT_CODE",
              help="Only from the enterprise with this social credit code.")
@click.option("--subsystem", type=click.Choice(list(SUBSYSTEMS)))
@card_and_secret_options
def list_command(received: bool, principal_code: str | None,
                 principal_credit_code: str | None, subsystem: str | None,
                 **card: Any) -> None:
    """Inter-enterprise grants given (or, with --received, received)."""
    body: dict[str, Any] = {"direction": "received" if received else "given"}
    for key, value in (("principal_customs_code", principal_code),
                       ("principal_credit_code", principal_credit_code),
                       ("subsystem", subsystem)):
        if value:
            body[key] = value
    listed: dc.EnterpriseGrantList = _call(card, "ListEnterpriseGrants", body)

    def human(out: Output) -> None:
        if not listed.grants:
            out.line(Bilingual("没有授权记录", "No grants"))
        for grant in listed.grants:
            _show_grant(out, grant)

    state().output.result(command_name(), {"grants": [grant_view(g) for g in listed.grants]},
                          human)


@auth_group.command("delete", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("grant_id")
@card_and_secret_options
def delete_command(grant_id: str, **card: Any) -> None:
    """Delete one inter-enterprise grant (and the agent's operator grants resting on it)."""
    done: dc.DeleteGrantResult = _call(card, "DeleteEnterpriseGrant", {"grant_id": grant_id},
                                       legal_person=True)
    state().output.result(
        command_name(), {"grant_id": done.grant_id,
                         "operator_grants_deleted": done.operator_grants_deleted},
        lambda out: out.line(Bilingual(
            f"已删除 {done.grant_id}, 同时删除企业内授权 {done.operator_grants_deleted} 条",
            f"Deleted {done.grant_id} and {done.operator_grants_deleted} operator grant(s) "
            "resting on it"), style="green"))


@auth_group.command("grant-operators", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("grant_id")
@click.option("--all", "all_operators", is_flag=True,
              help="Every operator card of this enterprise (是否授予全部操作员: 是).")
@click.option("--card-id", "operator_cards", multiple=True, metavar="CARD_ID",
              help="An operator IC card number; repeat for several.")
@card_and_secret_options
def grant_operators_command(grant_id: str, all_operators: bool,
                            operator_cards: tuple[str, ...], **card: Any) -> None:
    """企业内授权: give this enterprise's operators the grant GRANT_ID it received.

    Needs this (the agent) enterprise's legal-person card."""
    if all_operators == bool(operator_cards):
        raise usage_error(Bilingual("请选择 --all (全部操作员) 或给出 --card-id, 二者选一",
                                    "Give either --all or one or more --card-id"),
                          Bilingual("例如: eport auth grant-operators G… --card-id 1234…",
                                    "e.g. eport auth grant-operators G… --card-id 1234…"))
    listed: dc.OperatorGrantList = _call(
        card, "GrantOperators", {"grant_id": grant_id, "all_operators": all_operators,
                                 "operator_card_ids": list(operator_cards)},
        legal_person=True)

    def human(out: Output) -> None:
        out.line(Bilingual("已授权给操作员", "Operators granted"), style="green")
        for grant in listed.grants:
            _show_operator_grant(out, grant)

    state().output.result(command_name(),
                          {"grants": [operator_grant_view(g) for g in listed.grants]}, human)


@auth_group.command("delete-operator", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("operator_grant_id")
@card_and_secret_options
def delete_operator_command(operator_grant_id: str, **card: Any) -> None:
    """Delete one intra-enterprise (operator) grant."""
    done: dc.DeleteGrantResult = _call(card, "DeleteOperatorGrant",
                                       {"operator_grant_id": operator_grant_id},
                                       legal_person=True)
    state().output.result(command_name(), {"operator_grant_id": operator_grant_id,
                                           "grant_id": done.grant_id},
                          lambda out: out.line(Bilingual("已删除", "Deleted"), style="green"))


@auth_group.command("permissions", context_settings=SECRET_COMMAND_SETTINGS)
@click.option("--subsystem", type=click.Choice(list(SUBSYSTEMS)), required=True)
@card_and_secret_options
def permissions_command(subsystem: str, **card: Any) -> None:
    """查看操作员权限: which of this enterprise's operators may work in SUBSYSTEM for whom.

    A grant to all operators shows as one record without a card number (e-book manual §4 1.3)."""
    listed: dc.OperatorGrantList = _call(card, "ListOperatorPermissions",
                                         {"subsystem": subsystem})

    def human(out: Output) -> None:
        if not listed.grants:
            out.line(Bilingual("没有操作员权限记录", "No operator permissions"))
        for grant in listed.grants:
            _show_operator_grant(out, grant)

    state().output.result(command_name(),
                          {"grants": [operator_grant_view(g) for g in listed.grants]}, human)


@auth_group.command("lookup", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("customs_code")
@card_and_secret_options
def lookup_command(customs_code: str, **card: Any) -> None:
    """An enterprise in the data centre's registry: credit code and name."""
    enterprise: dc.Enterprise = _call(card, "LookupEnterprise", {"customs_code": customs_code})
    state().output.result(command_name(), _enterprise(enterprise), lambda out: out.line(
        f"{enterprise.customs_code}  {enterprise.credit_code}  {enterprise.name}"))
