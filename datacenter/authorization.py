"""Authorization (委托授权, e-book manual §4): the rules and the grants' storage.

Two levels, both needed before a card may act for another enterprise:
- 企业间授权 (§4 1.1): the principal's legal-person card lets an agent enterprise enter one
  subsystem's data for it, from valid_from to valid_until (China dates, inclusive). One grant
  per (principal, agent, subsystem): granting again replaces the validity and grant type of the
  existing grant, which keeps its id and its operator grants (renewing an expiring grant must
  not force the agent to re-grant all its operators).
- 企业内授权 (§4 1.2): the agent's legal-person card lets its operator cards, listed or all
  (operator_card_id '' then), use a grant it received. Deleting the enterprise grant deletes
  these with it (§4 1.1 注3).

`check_acting_for` is what other services (bonded verification) call inside their write
transaction before a card saves or declares data of another enterprise. Every function here
takes the caller's open connection: the caller owns the transaction and its nonce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from eport.common.profile import CardKind
from eport.common.text import Bilingual
from eport.datacenter.errors import DataCenterError, Problem
from eport.datacenter.numbering import next_value
from eport.datacenter.registry import Enterprise, require_enterprise
from eport.datacenter.storage import Connection, Row
from eport.datacenter.trust import Identity
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

# key → (zh label, en label); the keys are the proto's subsystem strings.
SUBSYSTEMS: dict[str, tuple[str, str]] = {
    "ebook": ("加工贸易账册", "processing-trade e-book"),
    "handbook": ("加工贸易手册", "processing-trade handbook"),
    "logistics": ("物流账册", "logistics e-book"),
    "goods-flow": ("货物流转", "goods flow"),
    "inventory": ("核注清单", "bonded inventory list"),
}
GRANT_TYPES: dict[str, tuple[str, str]] = {"operate": ("操作权", "operate")}
DEFAULT_GRANT_TYPE = "operate"
_SECTION_OPERATORS = "e-book manual §4 1.2, 1.3"
ALL_OPERATORS = ""  # operator_card_id of an all-operators grant (§4 1.3 说明1: empty card id)

_GRANT_COLUMNS = (
    "g.grant_id, g.principal_code, g.principal_credit_code, g.principal_name, g.agent_code, "
    "g.agent_credit_code, g.agent_name, g.subsystem, g.grant_type, g.valid_from, "
    "g.valid_until, g.granted_on, g.granted_by_card")


@dataclass(frozen=True)
class GrantFilter:
    """ListEnterpriseGrants: "given" (as principal) or "received" (as agent), narrowed."""

    received: bool = False
    principal_customs_code: str | None = None
    principal_credit_code: str | None = None
    subsystem: str | None = None


# ---- who may ---------------------------------------------------------------------------------

def require_legal_person(identity: Identity) -> None:
    """Granting and deleting grants: the legal-person card only (§4 1.1, the exact prompt)."""
    if identity.kind is CardKind.LEGAL_PERSON:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not grant",
        message=Bilingual("非法人卡，不允许操作!",
                          "This is not a legal-person card: it may not grant or delete "
                          "authorizations"),
        remedy=Bilingual("请退出, 插入本企业法人卡后重新登录再操作",
                         "Log out, insert your enterprise's legal-person card and log in again"),
        required_card_kind=CardKind.LEGAL_PERSON.value)


def subsystem_label(subsystem: str) -> tuple[str, str]:
    return SUBSYSTEMS[subsystem]


# ---- check_acting_for --------------------------------------------------------------------------

def check_acting_for(connection: Connection, identity: Identity,
                     principal_customs_code: str, subsystem: str, today: date) -> None:
    """Return when the card may enter `subsystem` data of `principal_customs_code` today.

    Its own enterprise always may. Otherwise both must exist: the enterprise grant
    principal → the card's enterprise for the subsystem, valid on `today` (valid_from <= today
    <= valid_until), and an operator grant on it for the card's id or for all operators.
    Else NOT_AUTHORIZED saying which grant is missing and whose legal-person card gives it.
    Reads only; `subsystem` must be a key of SUBSYSTEMS (ValueError: a caller's bug).
    """
    if identity.customs_code == principal_customs_code:
        return
    if subsystem not in SUBSYSTEMS:
        raise ValueError(f"unknown subsystem {subsystem!r}")
    zh, en = SUBSYSTEMS[subsystem]
    agent = identity.customs_code
    row = connection.execute(
        "SELECT grant_id, valid_from, valid_until FROM enterprise_grants "
        "WHERE principal_code = ? AND agent_code = ? AND subsystem = ?",
        (principal_customs_code, agent, subsystem)).fetchone()
    day = today.isoformat()
    if row is None or not str(row[1]) <= day <= str(row[2]):
        what_zh = f"企业 {principal_customs_code} 授予本企业 ({agent}) 的{zh}企业间授权"
        what_en = f"inter-enterprise grant from {principal_customs_code} to {agent} " \
                  f"for the {en}"
        if row is None:
            state_zh, state_en = "不存在", f"There is no {what_en}"
        elif day > str(row[2]):
            state_zh, state_en = f"已于 {row[2]} 到期", f"The {what_en} expired on {row[2]}"
        else:
            state_zh = f"自 {row[1]} 起才生效"
            state_en = f"The {what_en} is valid from {row[1]} only"
        raise DataCenterError(
            pb.NOT_AUTHORIZED,
            f"no valid enterprise grant {principal_customs_code} -> {agent} for {subsystem}",
            message=Bilingual(f"{what_zh}{state_zh}, 不能代理该企业操作",
                              f"{state_en}: you cannot act for it"),
            remedy=Bilingual(f"请企业 {principal_customs_code} 用其法人卡执行 eport auth grant "
                             f"授权本企业{zh}",
                             f"Ask enterprise {principal_customs_code} to grant your enterprise "
                             f"the {en} with its legal-person card: eport auth grant"))
    covered = connection.execute(
        "SELECT 1 FROM operator_grants WHERE grant_id = ? AND operator_card_id IN (?, ?)",
        (row[0], ALL_OPERATORS, identity.card_id)).fetchone()
    if covered is None:
        raise DataCenterError(
            pb.NOT_AUTHORIZED,
            f"grant {row[0]} has no operator grant for card {identity.card_id}",
            message=Bilingual(f"本企业尚未将企业 {principal_customs_code} 的{zh}授权授予卡 "
                              f"{identity.card_id} (企业内授权)",
                              f"Your enterprise has not given card {identity.card_id} the "
                              f"intra-enterprise grant for {principal_customs_code}'s {en}"),
            remedy=Bilingual(f"请本企业法人卡执行 eport auth grant-operators, 将授权 {row[0]} "
                             "授予该卡或全部操作员",
                             f"Have your enterprise's legal-person card give grant {row[0]} to "
                             "this card or to all operators: eport auth grant-operators"))


def acting_for_scopes(connection: Connection, identity: Identity, today: date
                      ) -> list[tuple[str, str]]:
    """(principal customs code, subsystem) for which `check_acting_for` passes today: what the
    card may see and enter for other enterprises (§4 1.2 "被授权的企业操作员可以对授权企业、授权
    子系统的数据进行相应的操作(查询、暂存、申报等)"). A deleted or expired grant, or one not
    given to this card (nor to all operators), gives nothing."""
    day = today.isoformat()
    rows = connection.execute(
        "SELECT DISTINCT g.principal_code, g.subsystem FROM enterprise_grants g "
        "JOIN operator_grants o ON o.grant_id = g.grant_id "
        "WHERE g.agent_code = ? AND g.valid_from <= ? AND g.valid_until >= ? "
        "AND o.operator_card_id IN (?, ?) ORDER BY g.principal_code, g.subsystem",
        (identity.customs_code, day, day, ALL_OPERATORS, identity.card_id)).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows
            if str(row[0]) != identity.customs_code]


# ---- enterprise grants (企业间授权) -------------------------------------------------------------

def _party(row: Row, prefix: str) -> pb.Enterprise:
    return pb.Enterprise(customs_code=row[f"{prefix}_code"],
                         credit_code=row[f"{prefix}_credit_code"], name=row[f"{prefix}_name"])


def _valid(row: Row, today: date) -> bool:
    return bool(row["valid_from"] <= today.isoformat() <= row["valid_until"])


def grant_message(row: Row, today: date) -> pb.EnterpriseGrant:
    return pb.EnterpriseGrant(
        grant_id=row["grant_id"], principal=_party(row, "principal"),
        agent=_party(row, "agent"), subsystem=row["subsystem"], grant_type=row["grant_type"],
        valid_from=row["valid_from"], valid_until=row["valid_until"],
        granted_on=row["granted_on"], granted_by_card=row["granted_by_card"],
        valid_now=_valid(row, today))


def _grant_row(connection: Connection, grant_id: str) -> Row | None:
    row = connection.execute(f"SELECT {_GRANT_COLUMNS} FROM enterprise_grants g "
                             "WHERE g.grant_id = ?", (grant_id,)).fetchone()
    return row


def _grant_not_found(grant_id: str, customs_code: str) -> DataCenterError:
    return DataCenterError(
        pb.GRANT_NOT_FOUND, f"grant {grant_id} for {customs_code}",
        message=Bilingual(f"本企业没有编号为 {grant_id} 的授权记录",
                          f"Your enterprise has no grant {grant_id}"),
        remedy=Bilingual("请先查询授权记录 (eport auth list), 再选择本企业的记录",
                         "List the grants first (eport auth list) and pick one of your "
                         "enterprise's"))


def own_grant(connection: Connection, grant_id: str, customs_code: str, *,
              as_agent: bool) -> Row:
    """The grant given (as_agent False) or received (True) by the enterprise; another
    enterprise's is "not found", so grant ids cannot be probed."""
    row = _grant_row(connection, grant_id)
    party = None if row is None else row["agent_code" if as_agent else "principal_code"]
    if row is None or party != customs_code:
        raise _grant_not_found(grant_id, customs_code)
    return row


def grant_enterprise(connection: Connection, identity: Identity, agent_code: str,
                     subsystem: str, grant_type: str, valid_from: date, valid_until: date,
                     today: date, at: int) -> pb.EnterpriseGrant:
    """Insert the grant, or replace the validity of the existing one (see the module doc).
    The caller has checked the card kind, the subsystem and the dates."""
    agent: Enterprise = require_enterprise(connection, agent_code)
    existing = connection.execute(
        "SELECT grant_id FROM enterprise_grants "
        "WHERE principal_code = ? AND agent_code = ? AND subsystem = ?",
        (identity.customs_code, agent_code, subsystem)).fetchone()
    values = (identity.credit_code, identity.enterprise_name, agent.credit_code, agent.name,
              grant_type, valid_from.isoformat(), valid_until.isoformat(), today.isoformat(),
              identity.card_id, at)
    if existing is not None:
        grant_id = str(existing[0])
        connection.execute(
            "UPDATE enterprise_grants SET principal_credit_code = ?, principal_name = ?, "
            "agent_credit_code = ?, agent_name = ?, grant_type = ?, valid_from = ?, "
            "valid_until = ?, granted_on = ?, granted_by_card = ?, granted_at = ? "
            "WHERE grant_id = ?", (*values, grant_id))
    else:
        grant_id = f"G{next_value(connection, 'enterprise-grant'):012d}"
        connection.execute(
            "INSERT INTO enterprise_grants (principal_credit_code, principal_name, "
            "agent_credit_code, agent_name, grant_type, valid_from, valid_until, granted_on, "
            "granted_by_card, granted_at, grant_id, principal_code, agent_code, subsystem) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, grant_id, identity.customs_code, agent_code, subsystem))
    logger.info("%s grant %s %s -> %s for %s by card %s",
                "renewed" if existing is not None else "new", grant_id,
                identity.customs_code, agent_code, subsystem, identity.card_id)
    row = _grant_row(connection, grant_id)
    assert row is not None
    return grant_message(row, today)


def list_grants(connection: Connection, customs_code: str, selection: GrantFilter,
                today: date) -> list[pb.EnterpriseGrant]:
    where = ["g.agent_code = ?" if selection.received else "g.principal_code = ?"]
    parameters: list[str] = [customs_code]
    for column, value in (("g.principal_code", selection.principal_customs_code),
                          ("g.principal_credit_code", selection.principal_credit_code),
                          ("g.subsystem", selection.subsystem)):
        if value is not None:
            where.append(f"{column} = ?")
            parameters.append(value)
    rows = connection.execute(
        f"SELECT {_GRANT_COLUMNS} FROM enterprise_grants g WHERE {' AND '.join(where)} "
        "ORDER BY g.grant_id", parameters)
    return [grant_message(row, today) for row in rows]


def delete_enterprise_grant(connection: Connection, identity: Identity,
                            grant_id: str) -> pb.DeleteGrantResult:
    """The principal's grant and every operator grant resting on it (§4 1.1 注3)."""
    own_grant(connection, grant_id, identity.customs_code, as_agent=False)
    removed = connection.execute("DELETE FROM operator_grants WHERE grant_id = ?",
                                 (grant_id,)).rowcount
    connection.execute("DELETE FROM enterprise_grants WHERE grant_id = ?", (grant_id,))
    logger.info("deleted grant %s of %s and %d operator grant(s), card %s", grant_id,
                identity.customs_code, removed, identity.card_id)
    return pb.DeleteGrantResult(grant_id=grant_id, operator_grants_deleted=removed)


# ---- operator grants (企业内授权) --------------------------------------------------------------

_OPERATOR_SELECT = (
    f"SELECT o.operator_grant_id, o.operator_card_id, o.granted_on AS operator_granted_on, "
    f"o.granted_by_card AS operator_granted_by_card, {_GRANT_COLUMNS} "
    "FROM operator_grants o JOIN enterprise_grants g ON g.grant_id = o.grant_id")


def operator_message(row: Row, today: date) -> pb.OperatorGrant:
    return pb.OperatorGrant(
        operator_grant_id=row["operator_grant_id"], grant_id=row["grant_id"],
        principal=_party(row, "principal"), agent=_party(row, "agent"),
        subsystem=row["subsystem"], all_operators=row["operator_card_id"] == ALL_OPERATORS,
        operator_card_id=row["operator_card_id"], granted_on=row["operator_granted_on"],
        granted_by_card=row["operator_granted_by_card"], valid_until=row["valid_until"],
        valid_now=_valid(row, today))


def grant_operators(connection: Connection, identity: Identity, grant_id: str,
                    card_ids: list[str], today: date, at: int) -> list[pb.OperatorGrant]:
    """One operator grant per card id (ALL_OPERATORS for all) on a grant the card's
    enterprise received; a card id granted before keeps its record (idempotent)."""
    own_grant(connection, grant_id, identity.customs_code, as_agent=True)
    _keep_one_all_operators_record(connection, grant_id, card_ids)
    for card_id in card_ids:
        exists = connection.execute(
            "SELECT 1 FROM operator_grants WHERE grant_id = ? AND operator_card_id = ?",
            (grant_id, card_id)).fetchone()
        if exists is None:
            connection.execute(
                "INSERT INTO operator_grants (operator_grant_id, grant_id, operator_card_id, "
                "granted_on, granted_by_card, granted_at) VALUES (?, ?, ?, ?, ?, ?)",
                (f"P{next_value(connection, 'operator-grant'):012d}", grant_id, card_id,
                 today.isoformat(), identity.card_id, at))
    logger.info("operator grant(s) on %s for %d card id(s) by card %s", grant_id,
                len(card_ids), identity.card_id)
    placeholders = ", ".join("?" * len(card_ids))
    rows = connection.execute(
        f"{_OPERATOR_SELECT} WHERE o.grant_id = ? AND o.operator_card_id IN ({placeholders}) "
        "ORDER BY o.operator_grant_id", (grant_id, *card_ids))
    return [operator_message(row, today) for row in rows]


def _keep_one_all_operators_record(connection: Connection, grant_id: str,
                                   card_ids: list[str]) -> None:
    """A grant to all operators is one record with no card number (§4 1.3 说明1), never
    beside listed cards: granting all replaces the cards listed before (it covers them); while
    all operators hold it, listing cards (是否授予全部操作员 = 否, "只授权给指定的操作员") would
    narrow it silently, so that is refused until the all-operators record is deleted."""
    everyone = connection.execute(
        "SELECT operator_grant_id FROM operator_grants WHERE grant_id = ? AND "
        "operator_card_id = ?", (grant_id, ALL_OPERATORS)).fetchone()
    if card_ids == [ALL_OPERATORS]:
        replaced = connection.execute(
            "DELETE FROM operator_grants WHERE grant_id = ? AND operator_card_id != ?",
            (grant_id, ALL_OPERATORS)).rowcount
        if replaced:
            logger.info("grant %s to all operators replaces %d listed card(s)", grant_id,
                        replaced)
        return
    if everyone is not None:
        raise DataCenterError(
            pb.VALIDATION_FAILED, f"grant {grant_id} is held by all operators",
            message=Bilingual(f"授权 {grant_id} 已授予全部操作员 ({everyone[0]}), "
                              "不能再指定操作员IC卡号",
                              f"Grant {grant_id} is given to all operators ({everyone[0]}); "
                              "cards cannot be listed beside that"),
            remedy=Bilingual("如只授权给指定的操作员, 请先删除全部操作员的授权记录 (eport auth "
                             f"delete-operator {everyone[0]}), 再指定IC卡号",
                             "To give it to listed cards only, first delete the all-operators "
                             f"record (eport auth delete-operator {everyone[0]}), then list the "
                             "cards"),
            problems=[Problem("operator_card_ids", "rule",
                              Bilingual("该授权已授予全部操作员, 操作员IC卡号不可编辑",
                                        "all operators hold this grant: no card ids may be listed"),
                              _SECTION_OPERATORS)])


def delete_operator_grant(connection: Connection, identity: Identity,
                          operator_grant_id: str) -> pb.DeleteGrantResult:
    row = connection.execute(
        "SELECT o.grant_id FROM operator_grants o JOIN enterprise_grants g "
        "ON g.grant_id = o.grant_id WHERE o.operator_grant_id = ? AND g.agent_code = ?",
        (operator_grant_id, identity.customs_code)).fetchone()
    if row is None:
        raise _grant_not_found(operator_grant_id, identity.customs_code)
    connection.execute("DELETE FROM operator_grants WHERE operator_grant_id = ?",
                       (operator_grant_id,))
    logger.info("deleted operator grant %s of %s, card %s", operator_grant_id,
                identity.customs_code, identity.card_id)
    return pb.DeleteGrantResult(grant_id=str(row[0]), operator_grants_deleted=1)


def operator_permissions(connection: Connection, customs_code: str, subsystem: str,
                         today: date) -> list[pb.OperatorGrant]:
    """§4 1.3: the enterprise's operator grants (as agent) for the subsystem."""
    rows = connection.execute(
        f"{_OPERATOR_SELECT} WHERE g.agent_code = ? AND g.subsystem = ? "
        "ORDER BY g.principal_code, o.operator_card_id", (customs_code, subsystem))
    return [operator_message(row, today) for row in rows]
