"""The Authorization gRPC service (委托授权, e-book manual §4): verify, check the body, one
transaction.

Every call is signed. The card kind and the body are checked before the transaction, so a
refused request changes nothing; the transaction then stores the nonce, records the caller's
enterprise in the registry (so an agent becomes known by logging in once with its card) and
does the operation, and commits before the answer. Logs name the method, the reason, grant
ids, enterprise codes and card ids, never other payload values.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any, TypeVar

import grpc

from eport.common.text import Bilingual
from eport.datacenter import authorization as rules
from eport.datacenter.bodies import check_keys, date_of
from eport.datacenter.clock import china_date, to_micros
from eport.datacenter.documents import store_nonce
from eport.datacenter.errors import DataCenterError, Problem, bad_request
from eport.datacenter.registry import CUSTOMS_CODE, remember_enterprise, require_enterprise
from eport.datacenter.rpc import run_signed
from eport.datacenter.storage import Connection, Store
from eport.datacenter.trust import RequestVerifier, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
MAX_OPERATOR_CARDS = 100
_GRANT_ID = re.compile(r"G[0-9]{12}")
_OPERATOR_GRANT_ID = re.compile(r"P[0-9]{12}")
_CARD_ID = re.compile(r"[0-9A-Za-z]{1,16}")
_CREDIT_CODE = re.compile(r"[0-9A-Z]{18}")
_DIRECTIONS = ("given", "received")
_SECTION = "e-book manual §4 1.1"


def _today(moment: datetime) -> date:
    return date.fromisoformat(china_date(moment))


# ---- body fields -----------------------------------------------------------------------------

def _subsystem(body: dict[str, Any]) -> str:
    value = body.get("subsystem")
    if isinstance(value, str) and value in rules.SUBSYSTEMS:
        return value
    choices = ", ".join(f"{key} ({zh}, {en})" for key, (zh, en) in rules.SUBSYSTEMS.items())
    raise DataCenterError(
        pb.BAD_REQUEST, "subsystem is not one of the choices",
        message=Bilingual(f"授权子系统不正确, 可选: {choices}",
                          f"The subsystem must be one of: {choices}"),
        remedy=Bilingual("请从下拉列表中选择授权子系统", "Choose one of the listed subsystems"))


def _matching(body: dict[str, Any], key: str, pattern: re.Pattern[str], shape: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise bad_request(f"{key} must be {shape}")
    return value


def _customs_code(body: dict[str, Any], key: str) -> str:
    return _matching(body, key, CUSTOMS_CODE, "a 10-character customs code")


def _grant_id(body: dict[str, Any]) -> str:
    return _matching(body, "grant_id", _GRANT_ID, '"G" and 12 digits')


def _date_problem(path: str, zh: str, en: str) -> Problem:
    return Problem(path, "rule", Bilingual(zh, en), _SECTION)


def _validity(body: dict[str, Any], today: date) -> tuple[date, date]:
    """(valid_from, valid_until): neither before today, from not after until."""
    until_text, from_text = date_of(body, "valid_until"), date_of(body, "valid_from")
    assert until_text is not None  # required by check_keys
    until = date.fromisoformat(until_text)
    start = date.fromisoformat(from_text) if from_text is not None else today
    problems = []
    if until < today:
        problems.append(_date_problem("valid_until", f"权限有效期不能早于今天 ({today})",
                                      f"valid_until cannot be before today ({today})"))
    if start < today:
        problems.append(_date_problem("valid_from", f"起始日期不能早于今天 ({today})",
                                      f"valid_from cannot be before today ({today})"))
    if from_text is not None and start > until:  # a default start is covered above
        problems.append(_date_problem("valid_from", "起始日期不能晚于权限有效期",
                                      "valid_from cannot be after valid_until"))
    if problems:
        raise DataCenterError(
            pb.VALIDATION_FAILED, f"{len(problems)} date problem(s)",
            message=Bilingual("授权的有效期不正确", "The grant's validity dates are wrong"),
            remedy=Bilingual("请修改有效期: 从今天或以后开始, 到权限有效期 (含) 为止",
                             "Correct the dates: from today or later, until valid_until "
                             "(inclusive)"),
            problems=problems)
    return start, until


def _operator_cards(body: dict[str, Any]) -> list[str]:
    """[ALL_OPERATORS] or the listed card ids (order kept, duplicates dropped)."""
    every, listed = body.get("all_operators"), body.get("operator_card_ids")
    if not isinstance(every, bool):
        raise bad_request("all_operators must be true or false")
    if every:
        if listed:  # the screen greys the card id out when 是 (all) is chosen
            raise bad_request("operator_card_ids must be absent when all_operators is true")
        return [rules.ALL_OPERATORS]
    if (not isinstance(listed, list) or not 1 <= len(listed) <= MAX_OPERATOR_CARDS
            or not all(isinstance(card, str) and _CARD_ID.fullmatch(card) for card in listed)):
        raise bad_request(f"operator_card_ids must list 1 to {MAX_OPERATOR_CARDS} card ids "
                          "(1 to 16 letters or digits) when all_operators is false")
    return list(dict.fromkeys(listed))


def _self_grant() -> DataCenterError:
    return DataCenterError(
        pb.VALIDATION_FAILED, "self-grant",
        message=Bilingual("不能授权给本企业", "An enterprise cannot authorize itself"),
        remedy=Bilingual("请录入代理企业的海关10位编码", "Enter the agent enterprise's code"),
        problems=[Problem("agent_customs_code", "rule",
                          Bilingual("代理企业不能是授权企业本身",
                                    "The agent cannot be the granting enterprise"), _SECTION)])


# ---- the service -----------------------------------------------------------------------------

class AuthorizationServicer(pb_grpc.AuthorizationServicer):
    def __init__(self, store: Store, verifier: RequestVerifier) -> None:
        self._store = store
        self._verifier = verifier

    def _signed(self, request: pb.SignedRequest, context: grpc.ServicerContext, rpc: str,
                operation: Callable[[VerifiedRequest, datetime], _T]) -> _T:
        return run_signed(self._verifier, request, context, rpc, operation, log=logger)

    @contextlib.contextmanager
    def _transaction(self, verified: VerifiedRequest, moment: datetime
                     ) -> Iterator[Connection]:
        with self._store.write() as connection:
            store_nonce(connection, verified)
            remember_enterprise(connection, verified.identity, to_micros(moment))
            yield connection

    # ---- 企业间授权 -------------------------------------------------------------------------

    def _grant(self, verified: VerifiedRequest, moment: datetime) -> pb.EnterpriseGrant:
        identity, body = verified.identity, verified.body
        rules.require_legal_person(identity)
        check_keys(body, {"agent_customs_code", "subsystem", "valid_until"},
                   {"valid_from", "grant_type"})
        agent = _customs_code(body, "agent_customs_code")
        subsystem = _subsystem(body)
        grant_type = body.get("grant_type", rules.DEFAULT_GRANT_TYPE)
        if grant_type not in rules.GRANT_TYPES:
            raise bad_request("grant_type must be " + ", ".join(
                f"{key} ({zh})" for key, (zh, _en) in rules.GRANT_TYPES.items()))
        today = _today(moment)
        start, until = _validity(body, today)
        if agent == identity.customs_code:
            raise _self_grant()
        with self._transaction(verified, moment) as connection:
            return rules.grant_enterprise(connection, identity, agent, subsystem, grant_type,
                                          start, until, today, to_micros(moment))

    def GrantEnterprise(self, request: pb.SignedRequest, context: grpc.ServicerContext
                        ) -> pb.EnterpriseGrant:
        return self._signed(request, context, "GrantEnterprise", self._grant)

    def _list(self, verified: VerifiedRequest, moment: datetime) -> pb.EnterpriseGrantList:
        body = verified.body
        check_keys(body, set(), {"direction", "principal_customs_code",
                                 "principal_credit_code", "subsystem"})
        direction = body.get("direction", "given")
        if direction not in _DIRECTIONS:
            raise bad_request('direction must be "given" or "received"')
        selection = rules.GrantFilter(
            received=direction == "received",
            principal_customs_code=(_customs_code(body, "principal_customs_code")
                                    if "principal_customs_code" in body else None),
            principal_credit_code=(
                _matching(body, "principal_credit_code", _CREDIT_CODE,
                          "an 18-character social credit code")
                if "principal_credit_code" in body else None),
            subsystem=_subsystem(body) if "subsystem" in body else None)
        with self._transaction(verified, moment) as connection:
            return pb.EnterpriseGrantList(grants=rules.list_grants(
                connection, verified.identity.customs_code, selection, _today(moment)))

    def ListEnterpriseGrants(self, request: pb.SignedRequest, context: grpc.ServicerContext
                             ) -> pb.EnterpriseGrantList:
        return self._signed(request, context, "ListEnterpriseGrants", self._list)

    def _delete(self, verified: VerifiedRequest, moment: datetime) -> pb.DeleteGrantResult:
        rules.require_legal_person(verified.identity)
        # One record at a time (§4 1.1 注2): exactly one grant_id, never a list.
        check_keys(verified.body, {"grant_id"})
        grant_id = _grant_id(verified.body)
        with self._transaction(verified, moment) as connection:
            return rules.delete_enterprise_grant(connection, verified.identity, grant_id)

    def DeleteEnterpriseGrant(self, request: pb.SignedRequest, context: grpc.ServicerContext
                              ) -> pb.DeleteGrantResult:
        return self._signed(request, context, "DeleteEnterpriseGrant", self._delete)

    # ---- 企业内授权 and 查看操作员权限 ------------------------------------------------------

    def _grant_operators(self, verified: VerifiedRequest, moment: datetime
                         ) -> pb.OperatorGrantList:
        rules.require_legal_person(verified.identity)
        check_keys(verified.body, {"grant_id", "all_operators"}, {"operator_card_ids"})
        grant_id = _grant_id(verified.body)
        cards = _operator_cards(verified.body)
        with self._transaction(verified, moment) as connection:
            return pb.OperatorGrantList(grants=rules.grant_operators(
                connection, verified.identity, grant_id, cards, _today(moment),
                to_micros(moment)))

    def GrantOperators(self, request: pb.SignedRequest, context: grpc.ServicerContext
                       ) -> pb.OperatorGrantList:
        return self._signed(request, context, "GrantOperators", self._grant_operators)

    def _delete_operator(self, verified: VerifiedRequest, moment: datetime
                         ) -> pb.DeleteGrantResult:
        rules.require_legal_person(verified.identity)
        check_keys(verified.body, {"operator_grant_id"})
        operator_grant_id = _matching(verified.body, "operator_grant_id", _OPERATOR_GRANT_ID,
                                      '"P" and 12 digits')
        with self._transaction(verified, moment) as connection:
            return rules.delete_operator_grant(connection, verified.identity,
                                               operator_grant_id)

    def DeleteOperatorGrant(self, request: pb.SignedRequest, context: grpc.ServicerContext
                            ) -> pb.DeleteGrantResult:
        return self._signed(request, context, "DeleteOperatorGrant", self._delete_operator)

    def _permissions(self, verified: VerifiedRequest, moment: datetime
                     ) -> pb.OperatorGrantList:
        # Any card of the enterprise may look (§4 1.3 lets the enterprise see who may operate).
        check_keys(verified.body, {"subsystem"})
        subsystem = _subsystem(verified.body)
        with self._transaction(verified, moment) as connection:
            return pb.OperatorGrantList(grants=rules.operator_permissions(
                connection, verified.identity.customs_code, subsystem, _today(moment)))

    def ListOperatorPermissions(self, request: pb.SignedRequest,
                                context: grpc.ServicerContext) -> pb.OperatorGrantList:
        return self._signed(request, context, "ListOperatorPermissions", self._permissions)

    # ---- the registry ----------------------------------------------------------------------

    def _lookup(self, verified: VerifiedRequest, moment: datetime) -> pb.Enterprise:
        check_keys(verified.body, {"customs_code"})
        code = _customs_code(verified.body, "customs_code")
        with self._transaction(verified, moment) as connection:
            return require_enterprise(connection, code).message()

    def LookupEnterprise(self, request: pb.SignedRequest, context: grpc.ServicerContext
                         ) -> pb.Enterprise:
        return self._signed(request, context, "LookupEnterprise", self._lookup)
