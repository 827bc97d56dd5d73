"""The ledger of bonded verification documents (保税核查, bonded manual): SaveBonded (暂存),
DeclareBonded (申报), GetBonded (查看明细), QueryBonded (查询), RedeclareStock (库存重新申报),
DeleteBonded and DeleteBondedItem (删除), GetEBookItem, and the review stand-in's decision.

Statuses (BondedStatus):

    SAVED ──Declare──▶ STORED (入库成功) ──review──▶ APPROVED (审批通过)
                        ▲  ▲                  └──▶ REJECTED (退单) ── Save (modify) ─┐
                        │  └──────────────── Declare ──────────────────────────────┘
                        └── RedeclareStock (once per record, from APPROVED)

Save modifies a SAVED or REJECTED record; a STORED one is under review and an APPROVED one
changes only through RedeclareStock, at most once per record ever (bonded manual §3.2.5 "每笔审批
通过的数据，企业只可变更一次"): a re-declared record that is rejected may still be corrected and
declared, but once approved again it cannot be re-declared a second time.

A document names the enterprise verified (header.enterprise_code, the principal). A card of
another enterprise (an agent) may save, declare or see it only under valid grants
(authorization.check_acting_for, subsystem "ebook" or "handbook" by management mode); without
them the record is "not found", so numbers of other enterprises cannot be probed, and
QueryBonded lists a principal's records only while the card's grants hold (e-book manual §4 1.2).
Every card kind of the enterprise may act here (roles.require_bonded_right, e-book manual §2.3).

Each operation is one write transaction: the nonce first (a replay rolls back with
everything), then the acting-for check, the document checks, the changes and the receipts.
The checks run inside the transaction, unlike the customs ledger's: they read the principal's
e-book records, and those must be the ones of the same instant as the write.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from eport.common.bonded import document as model
from eport.common.bonded import tables as model_tables
from eport.common.customs.canonical import CanonicalError, canonical_json
from eport.common.text import Bilingual
from eport.datacenter import authorization, ebooks
from eport.datacenter.bodies import check_keys, integer_of
from eport.datacenter.clock import CHINA_TIME, china_year, timestamp, to_micros
from eport.datacenter.documents import (
    QUERY_DEFAULT_LIMIT,
    QUERY_MAX_LIMIT,
    ProblemLike,
    store_nonce,
)
from eport.datacenter.errors import DataCenterError, Problem, bad_request
from eport.datacenter.numbering import new_temporary_number, next_value
from eport.datacenter.receipts import BONDED, ReceiptFacts, add_receipt
from eport.datacenter.roles import require_bonded_right
from eport.datacenter.storage import Connection, Row, Store
from eport.datacenter.trust import Identity, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

_SECTION_HEADER = "bonded manual §2.2.1.2"
_SECTION_REDECLARE = "bonded manual §3.2.5"
# 统一编号 of a bonded document: "B" + 4-digit China year + 13-digit sequence (18 characters,
# the length of the customs unified number, whose I/E letter a bonded document has no use for).
_UNIFIED = re.compile(r"B[0-9]{17}")
_TEMPORARY = re.compile(r"Z[0-9]{18}")
_YYYYMMDD = re.compile(r"[0-9]{8}")
_CUSTOMS_CODE = re.compile(r"[0-9A-Z]{10}")
_INTERNAL_NUMBER = re.compile(r"[0-9A-Za-z]{1,20}")
_UNIFIED_DIGITS = 13

_Check = Callable[..., Sequence[ProblemLike]]


@dataclass(frozen=True)
class BondedOutcome:
    record: pb.BondedRecord
    receipts_written: bool = False
    review_queued: bool = False


@dataclass(frozen=True)
class _Entry:
    """What SaveBonded and RedeclareStock store: the checked, normalised document."""

    document: dict[str, Any]
    text: str
    header: dict[str, Any]


# ---- small helpers ---------------------------------------------------------------------------

def china_day(moment: datetime) -> date:
    return moment.astimezone(CHINA_TIME).date()


def _yyyymmdd(moment: datetime) -> str:
    return china_day(moment).strftime("%Y%m%d")


def new_bonded_unified_number(connection: Connection, moment: datetime) -> str:
    year = china_year(moment)
    sequence = next_value(connection, f"bonded-unified:{year}")
    if not 0 < sequence < 10**_UNIFIED_DIGITS:
        raise ValueError(f"bonded unified sequence {sequence} does not fit")
    return f"B{year}{sequence:0{_UNIFIED_DIGITS}d}"


def _number_column(body: dict[str, Any]) -> tuple[str, str]:
    value = body.get("number")
    if isinstance(value, str) and _TEMPORARY.fullmatch(value):
        return "temporary_number", value
    if isinstance(value, str) and _UNIFIED.fullmatch(value):
        return "unified_number", value
    raise bad_request("number must be a Z temporary number or a bonded unified number (B...)")


def _header_of(document: dict[str, Any]) -> dict[str, Any]:
    header = document.get("header")
    return header if isinstance(header, dict) else {}


def _text(header: dict[str, Any], key: str) -> str:
    value = header.get(key)
    return value if isinstance(value, str) else ""


def _clear_declaration_date(document: dict[str, Any]) -> None:
    """申报日期 is the data centre's to fill at 申报 (bonded manual §2.2.1.2 "返填"): a client that
    sends back a record it read (dated) must not trip over the date it was given, and a
    rejected record declared again gets the new date."""
    header = document.get("header")
    if isinstance(header, dict) and "declaration_date" in header:
        header["declaration_date"] = ""


def _problems(problems: Sequence[ProblemLike]) -> list[Problem]:
    return [Problem(p.path, p.code, p.message, p.section) for p in problems]


def _validation_failed(problems: Sequence[ProblemLike]) -> DataCenterError:
    return DataCenterError(
        pb.VALIDATION_FAILED, f"{len(problems)} problem(s)",
        message=Bilingual(f"保税核查数据有 {len(problems)} 处不符合填制规范",
                          f"The bonded verification document has {len(problems)} problem(s)"),
        problems=_problems(problems))


def _field_problem(path: str, code: str, zh: str, en: str, section: str = _SECTION_HEADER
                   ) -> DataCenterError:
    return _validation_failed([Problem(path, code, Bilingual(zh, en), section)])


def _not_found(number: str, identity: Identity) -> DataCenterError:
    return DataCenterError(
        pb.DOCUMENT_NOT_FOUND, f"bonded {number} for {identity.customs_code}",
        message=Bilingual(f"没有本企业可以查看的保税核查数据 {number}",
                          f"There is no bonded verification document {number} your enterprise "
                          "may see"),
        remedy=Bilingual("请检查编号; 代理企业须持有核查企业的有效授权 (企业间授权和企业内授权)",
                         "Check the number; an agent needs the verified enterprise's valid "
                         "grants (inter-enterprise and intra-enterprise)"))


def _wrong_state(row: Row, action_zh: str, action_en: str, *,
                 remedy: Bilingual | None = None) -> DataCenterError:
    status = pb.BondedStatus.Name(row["status"])
    return DataCenterError(
        pb.WRONG_STATE, f"bonded {action_en} in state {status}",
        message=Bilingual(f"保税核查数据 {row['temporary_number']} 当前状态 ({status}) "
                          f"不能{action_zh}",
                          f"Bonded verification document {row['temporary_number']} cannot be "
                          f"{action_en} in state {status}"),
        remedy=remedy)


def _subsystem(header: dict[str, Any]) -> str | None:
    """"ebook" or "handbook" for a known management mode, else None."""
    try:
        return model.subsystem_for(_text(header, "management_mode"))
    except (KeyError, ValueError):
        return None


def record_message(row: Row, *, full: bool = True) -> pb.BondedRecord:
    record = pb.BondedRecord(
        temporary_number=row["temporary_number"], unified_number=row["unified_number"] or "",
        status=row["status"], document_json=row["document_json"] if full else "",
        internal_number=row["internal_number"], enterprise_code=row["enterprise_code"],
        enterprise_name=row["enterprise_name"], agent_code=row["agent_code"],
        saved_by_card=row["saved_by_card"], declared_by_card=row["declared_by_card"],
        stocktaking_date=row["stocktaking_date"], declaration_date=row["declaration_date"],
        saved_at=timestamp(row["saved_at"]), declared_at=timestamp(row["declared_at"]),
        reviewed_at=timestamp(row["reviewed_at"]), declaration_count=row["declaration_count"],
        redeclared=bool(row["redeclared"]), reject_reason_code=row["reject_reason_code"],
        reject_reason=row["reject_reason"], deleted_at=timestamp(row["deleted_at"]),
        deleted_by_card=row["deleted_by_card"])
    if full and row["deleted_at"] is None:
        document = json.loads(row["document_json"])
        record.warnings.extend(
            pb.FieldProblem(path=w.path, code=w.code, message_zh=w.message.zh,
                            message_en=w.message.en, section=w.section)
            for w in model.stock_warnings(document))
    return record


def _reread(connection: Connection, row_id: int) -> Row:
    row = connection.execute("SELECT * FROM bonded_documents WHERE id = ?",
                             (row_id,)).fetchone()
    assert row is not None
    return row


def _who(identity: Identity) -> str:
    return f" (enterprise {identity.customs_code}, card {identity.card_id})"


# ---- who may see a record --------------------------------------------------------------------

def visible_record(connection: Connection, identity: Identity, body: dict[str, Any],
                   today: date, *, deleted: bool = False) -> Row:
    """The record named by body["number"] when the card's enterprise is its principal or acts
    for it under valid grants today; DOCUMENT_NOT_FOUND otherwise (never "forbidden"). A
    deleted record is DOCUMENT_NOT_FOUND saying when it was deleted, unless `deleted`."""
    column, number = _number_column(body)
    row = connection.execute(f"SELECT * FROM bonded_documents WHERE {column} = ?",
                             (number,)).fetchone()
    if row is None:
        raise _not_found(number, identity)
    assert row is not None
    if row["enterprise_code"] != identity.customs_code:
        subsystem = _subsystem({"management_mode": row["management_mode"]}) or "ebook"
        try:
            authorization.check_acting_for(connection, identity, row["enterprise_code"],
                                           subsystem, today)
        except DataCenterError as error:
            if error.reason == pb.NOT_AUTHORIZED:
                raise _not_found(number, identity) from None
            raise
    if row["deleted_at"] is not None and not deleted:
        raise _was_deleted(row)
    return row


def _was_deleted(row: Row) -> DataCenterError:
    when = datetime.fromtimestamp(row["deleted_at"] / 1e6, CHINA_TIME).strftime("%Y-%m-%d %H:%M")
    return DataCenterError(
        pb.DOCUMENT_NOT_FOUND, f"bonded {row['temporary_number']} was deleted",
        message=Bilingual(f"保税核查数据 {row['temporary_number']} 已于 {when} 由卡 "
                          f"{row['deleted_by_card']} 删除",
                          f"Bonded verification document {row['temporary_number']} was deleted "
                          f"on {when} (China time) by card {row['deleted_by_card']}"),
        remedy=Bilingual("删除的数据不能恢复, 其编号不再使用; 请重新录入并暂存 (得到新的编号)",
                         "A deleted document cannot be restored and its number is not used "
                         "again; enter and save it anew (it gets a new number)"))


def _check_principal(connection: Connection, identity: Identity,
                     document: dict[str, Any], today: date, check: _Check) -> None:
    """An agent saving or re-declaring for another enterprise needs its grants (NOT_AUTHORIZED
    says which one is missing: the agent named the principal, so there is nothing to hide).
    A malformed code is left to the document checks, which refuse it."""
    header = _header_of(document)
    principal = _text(header, "enterprise_code")
    if not _CUSTOMS_CODE.fullmatch(principal) or principal == identity.customs_code:
        return
    subsystem = _subsystem(header)
    if subsystem is None:  # the grant needed is unknown: report the checks' problems
        problems = list(check(document, lookup=None)) or [Problem(
            "header.management_mode", "code", Bilingual(
                "管理模式不正确, 无法确定代理所需的授权子系统",
                "The management mode is not a known code, so the grant an agent needs is unknown"),
            _SECTION_HEADER)]
        raise _validation_failed(problems)
    authorization.check_acting_for(connection, identity, principal, subsystem, today)


# ---- the ledger ------------------------------------------------------------------------------

class BondedLedger:
    def __init__(self, store: Store, *, review_delay: float = 0.0) -> None:
        self._store = store
        self._review_delay = timedelta(seconds=review_delay)

    # ---- SaveBonded --------------------------------------------------------------------------

    @staticmethod
    def _entry(connection: Connection, identity: Identity, raw: Any, today: date, *,
               declaring: bool) -> _Entry:
        """The checked document as it will be stored (acting-for check first, so that an
        agent without grants learns nothing of the principal's e-books)."""
        if not isinstance(raw, dict):
            raise bad_request("document must be an object")
        # First what the system fills (序号, an empty 总库存数量 computed from its parts, bonded
        # manual §2.2.1.3), so that a client leaving them to us is not told they are empty.
        document = model.normalise(raw)
        _clear_declaration_date(document)
        check: _Check = model.declare_problems if declaring else model.save_problems
        _check_principal(connection, identity, document, today, check)
        lookup = ebooks.lookup_for(connection, _text(_header_of(document), "enterprise_code"))
        problems = list(check(document, lookup=lookup))
        if problems:
            raise _validation_failed(problems)
        try:
            text = canonical_json(document).decode("utf-8")
        except CanonicalError as error:
            raise bad_request(f"document: {error}") from None
        return _Entry(document, text, _header_of(document))

    @staticmethod
    def _check_unique(connection: Connection, header: dict[str, Any],
                      row_id: int | None) -> None:
        internal, principal = _text(header, "internal_number"), _text(header, "enterprise_code")
        clash = connection.execute(
            "SELECT temporary_number FROM bonded_documents WHERE enterprise_code = ? AND "
            "internal_number = ? AND id IS DISTINCT FROM ? AND deleted_at IS NULL",
            (principal, internal, row_id)).fetchone()
        if clash is not None:
            raise _field_problem(
                "header.internal_number", "rule",
                f"企业内部编号 不允许重复: {internal} 已用于保税核查数据 {clash[0]}; 请换一个编号, "
                "或查询并修改那笔数据",
                f"The internal number (企业内部编号) must not repeat: {internal} is already used "
                f"by {clash[0]}; choose another, or query and modify that document")

    def save(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        identity, body = request.identity, request.body
        require_bonded_right(identity, "暂存", "save")
        check_keys(body, {"document"}, {"number"})
        today, at = china_day(moment), to_micros(moment)
        raw = body["document"]
        reference = raw.get("client_reference") if isinstance(raw, dict) else None
        reference = reference if isinstance(reference, str) and reference else None
        with self._store.write() as connection:
            store_nonce(connection, request)
            row: Row | None = None
            if "number" in body:
                row = visible_record(connection, identity, body, today)
                if row["status"] == pb.BONDED_STORED:
                    raise _wrong_state(row, "修改 (海关审核中)", "modified while under review",
                                       remedy=Bilingual("请等待审批回执; 退单后可修改再申报",
                                                        "Wait for the review receipt; a rejected "
                                                        "one may be modified and declared again"))
                if row["status"] == pb.BONDED_APPROVED:
                    raise _wrong_state(row, "直接修改", "modified directly",
                                       remedy=Bilingual("审批通过的数据请用 库存重新申报 "
                                                        "(每笔只可一次)",
                                                        "Change an approved document with "
                                                        "RedeclareStock (库存重新申报, once per "
                                                        "document)"))
            elif reference is not None:
                existing = connection.execute(
                    "SELECT * FROM bonded_documents WHERE agent_code = ? AND "
                    "client_reference = ? AND deleted_at IS NULL",
                    (identity.customs_code, reference)).fetchone()
                if existing is not None:
                    return BondedOutcome(record_message(existing))  # a retried save
            entry = self._entry(connection, identity, raw, today, declaring=False)
            header = entry.header
            if row is not None:
                if _text(header, "enterprise_code") != row["enterprise_code"]:
                    raise _field_problem(
                        "header.enterprise_code", "rule",
                        f"核查企业代码不能修改 (本数据为 {row['enterprise_code']}); 请新建一笔数据",
                        f"The verified enterprise cannot change (this document's is "
                        f"{row['enterprise_code']}); save a new document instead")
                if reference is not None and reference != row["client_reference"]:
                    raise bad_request("client_reference of a saved document cannot change")
            self._check_unique(connection, header, None if row is None else row["id"])
            values = (entry.text, _text(header, "internal_number"),
                      _text(header, "enterprise_code"), _text(header, "enterprise_name"),
                      _text(header, "management_mode"), _text(header, "stocktaking_date"), at)
            if row is not None:
                connection.execute(
                    "UPDATE bonded_documents SET document_json = ?, internal_number = ?, "
                    "enterprise_code = ?, enterprise_name = ?, management_mode = ?, "
                    "stocktaking_date = ?, modified_at = ? WHERE id = ?", (*values, row["id"]))
                logger.info("bonded: modified %s%s", row["temporary_number"], _who(identity))
                return BondedOutcome(record_message(_reread(connection, row["id"])))
            number = new_temporary_number(connection, moment)
            created = connection.execute(
                "INSERT INTO bonded_documents (document_json, internal_number, enterprise_code, "
                "enterprise_name, management_mode, stocktaking_date, modified_at, "
                "temporary_number, status, agent_code, client_reference, saved_by_card, "
                "saved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (*values, number, pb.BONDED_SAVED, identity.customs_code, reference,
                 identity.card_id, at)).fetchone()
            logger.info("bonded: saved %s for %s%s", number, _text(header, "enterprise_code"),
                        _who(identity))
            return BondedOutcome(record_message(_reread(connection, created["id"])))

    # ---- DeclareBonded and RedeclareStock ----------------------------------------------------

    def _enter(self, connection: Connection, row: Row, document: dict[str, Any],
               identity: Identity, moment: datetime, *, redeclared: bool) -> Row:
        """申报: date, unified number, STORED with its 入库成功 receipt, review queued."""
        day, at = _yyyymmdd(moment), to_micros(moment)
        header = _header_of(document)
        header["declaration_date"] = day
        text = canonical_json(document).decode("utf-8")
        unified = row["unified_number"] or new_bonded_unified_number(connection, moment)
        count = row["declaration_count"] + 1
        connection.execute(
            "UPDATE bonded_documents SET status = ?, unified_number = ?, document_json = ?, "
            "declaration_date = ?, declared_by_card = ?, declared_at = ?, modified_at = ?, "
            "declaration_count = ?, redeclared = ?, reject_reason_code = '', "
            "reject_reason = '' WHERE id = ?",
            (pb.BONDED_STORED, unified, text, day, identity.card_id, at, at, count,
             int(redeclared or bool(row["redeclared"])), row["id"]))
        add_receipt(connection, pb.STORED_RECEIPT,
                    ReceiptFacts(row["id"], row["agent_code"], row["temporary_number"], unified),
                    at, subsystem=BONDED)
        connection.execute(
            "INSERT INTO bonded_reviews (bonded_document_id, due_at, declaration) "
            "VALUES (?, ?, ?) ON CONFLICT (bonded_document_id) DO UPDATE SET "
            "due_at = excluded.due_at, declaration = excluded.declaration",
            (row["id"], to_micros(moment + self._review_delay), count))
        logger.info("bonded: declared %s as %s, declaration %d%s", row["temporary_number"],
                    unified, count, _who(identity))
        return _reread(connection, row["id"])

    def declare(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        identity, body = request.identity, request.body
        # The bonded manual names no declarant card for 保税核查: any card of the enterprise
        # declares (roles: e-book manual §2.3 read for the bonded manual).
        require_bonded_right(identity, "申报", "declare")
        check_keys(body, {"number"})
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = visible_record(connection, identity, body, china_day(moment))
            if row["status"] in (pb.BONDED_STORED, pb.BONDED_APPROVED):
                return BondedOutcome(record_message(row))  # declared before: nothing changes
            document = json.loads(row["document_json"])
            _clear_declaration_date(document)
            problems = model.declare_problems(
                document, lookup=ebooks.lookup_for(connection, row["enterprise_code"]))
            if problems:
                raise _validation_failed(problems)
            row = self._enter(connection, row, document, identity, moment, redeclared=False)
            return BondedOutcome(record_message(row), receipts_written=True,
                                 review_queued=True)

    def redeclare(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        identity, body = request.identity, request.body
        require_bonded_right(identity, "库存重新申报", "re-declare the stock")
        check_keys(body, {"number", "document"})
        today = china_day(moment)
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = visible_record(connection, identity, body, today)
            if row["redeclared"]:
                raise DataCenterError(
                    pb.WRONG_STATE, f"bonded {row['temporary_number']} was re-declared before",
                    message=Bilingual("每笔审批通过的数据，企业只可变更一次: "
                                      f"{row['temporary_number']} 已做过库存重新申报",
                                      "Each approved document may be changed once only "
                                      f"({_SECTION_REDECLARE}): {row['temporary_number']} has "
                                      "been re-declared already"),
                    remedy=Bilingual("如需再次变更, 请新建一笔保税核查数据 (新的企业内部编号) "
                                     "申报",
                                     "To change it again, save and declare a new document (with "
                                     "a new internal number)"))
            if row["status"] != pb.BONDED_APPROVED:
                raise _wrong_state(row, "库存重新申报", "re-declared",
                                   remedy=Bilingual("只有审批通过的数据可以库存重新申报; "
                                                    "暂存或退单的数据请修改后申报",
                                                    "Only an approved document can be "
                                                    "re-declared; modify and declare a saved or "
                                                    "rejected one"))
            entry = self._entry(connection, identity, body["document"], today, declaring=True)
            for key, zh, en in (("internal_number", "企业内部编号", "internal number"),
                                ("enterprise_code", "核查企业代码", "verified enterprise")):
                if _text(entry.header, key) != row[key]:
                    raise _field_problem(
                        f"header.{key}", "rule",
                        f"库存重新申报不能修改{zh} (应为 {row[key]})",
                        f"Re-declaring the stock cannot change the {en} (it is {row[key]})",
                        _SECTION_REDECLARE)
            connection.execute(
                "UPDATE bonded_documents SET management_mode = ?, enterprise_name = ?, "
                "stocktaking_date = ? WHERE id = ?",
                (_text(entry.header, "management_mode"), _text(entry.header, "enterprise_name"),
                 _text(entry.header, "stocktaking_date"), row["id"]))
            row = self._enter(connection, _reread(connection, row["id"]), entry.document,
                              identity, moment, redeclared=True)
            return BondedOutcome(record_message(row), receipts_written=True,
                                 review_queued=True)

    # ---- 删除 (bonded manual §2.3) ----------------------------------------------------------

    def delete(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        """光标在表头时 "可删除整单数据": a saved record never declared becomes a tombstone
        (BONDED_DELETED, its content cleared); its numbers stay taken, so they are never given
        again, and its 企业内部编号 is free. A retried delete answers the deleted record."""
        identity, body = request.identity, request.body
        require_bonded_right(identity, "删除", "delete")
        check_keys(body, {"number"})
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = visible_record(connection, identity, body, china_day(moment), deleted=True)
            if row["deleted_at"] is not None:
                return BondedOutcome(record_message(row))
            if row["status"] != pb.BONDED_SAVED or row["declaration_count"]:
                raise _wrong_state(row, "删除 (已申报过)", "deleted once declared",
                                   remedy=Bilingual("只有暂存且从未申报的数据可以删除; "
                                                    "已申报的数据请修改后重新申报",
                                                    "Only a saved document that was never "
                                                    "declared can be deleted; correct a declared "
                                                    "one and declare it again"))
            at = to_micros(moment)
            connection.execute(
                "UPDATE bonded_documents SET status = ?, document_json = '', deleted_at = ?, "
                "deleted_by_card = ?, modified_at = ? WHERE id = ?",
                (pb.BONDED_DELETED, at, identity.card_id, at, row["id"]))
            logger.info("bonded: deleted %s of %s%s", row["temporary_number"],
                        row["enterprise_code"], _who(identity))
            return BondedOutcome(record_message(_reread(connection, row["id"])))

    def delete_item(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        """光标在表体中某项时 "可删除该项商品记录" (§2.3), also while modifying a record
        (§3.2.4 修改: "可以进行数据修改、删除、新增、申报操作"): the items after it move up and
        序号 is renumbered; the rest is checked as at 暂存 and stored. Where SaveBonded may
        modify (SAVED, REJECTED)."""
        identity, body = request.identity, request.body
        require_bonded_right(identity, "删除", "delete an item")
        check_keys(body, {"number", "item_number"})
        item_number = integer_of(body, "item_number", default=0, minimum=1,
                                 maximum=model.MAX_ITEMS)
        today, at = china_day(moment), to_micros(moment)
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = visible_record(connection, identity, body, today)
            if row["status"] not in (pb.BONDED_SAVED, pb.BONDED_REJECTED):
                raise _wrong_state(row, "删除表体", "changed (an item deleted)",
                                   remedy=Bilingual("海关审核中或审批通过的数据不能修改; "
                                                    "审批通过的数据请用 库存重新申报",
                                                    "A document under review or approved cannot "
                                                    "be modified; change an approved one with "
                                                    "RedeclareStock"))
            document = json.loads(row["document_json"])
            items = document.get("items")
            count = len(items) if isinstance(items, list) else 0
            if not isinstance(items, list) or item_number > count:
                raise _field_problem(
                    "item_number", "rule",
                    f"表体没有第 {item_number} 项 (共 {count} 项)",
                    f"There is no body item {item_number} (the document has {count})",
                    "bonded manual §2.3")
            del items[item_number - 1]
            entry = self._entry(connection, identity, document, today, declaring=False)
            connection.execute(
                "UPDATE bonded_documents SET document_json = ?, modified_at = ? WHERE id = ?",
                (entry.text, at, row["id"]))
            logger.info("bonded: deleted item %d of %s%s", item_number, row["temporary_number"],
                        _who(identity))
            return BondedOutcome(record_message(_reread(connection, row["id"])))

    # ---- reading -----------------------------------------------------------------------------

    def get(self, request: VerifiedRequest, moment: datetime) -> BondedOutcome:
        check_keys(request.body, {"number"})
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = visible_record(connection, request.identity, request.body, china_day(moment))
            record = record_message(row)
        record.read_only = True  # 查看明细: a view; changes go through SaveBonded/Redeclare
        return BondedOutcome(record)

    def query(self, request: VerifiedRequest, moment: datetime) -> pb.BondedQueryResult:
        body = request.body
        check_keys(body, set(), {"internal_number", "enterprise_code", "stocktaking_date",
                                 "declared_from", "declared_to", "limit"})
        clauses = ["deleted_at IS NULL"]
        values: list[str | int] = []
        for key, pattern, what in (("internal_number", _INTERNAL_NUMBER, "up to 20 letters or "
                                    "digits"),
                                   ("enterprise_code", _CUSTOMS_CODE, "a 10-character customs "
                                    "code")):
            if key in body:
                value = body[key]
                if not isinstance(value, str) or not pattern.fullmatch(value):
                    raise bad_request(f"{key} must be {what}")
                clauses.append(f"{key} = ?")
                values.append(value)
        for key, column, operator in (("stocktaking_date", "stocktaking_date", "="),
                                      ("declared_from", "declaration_date", ">="),
                                      ("declared_to", "declaration_date", "<=")):
            if key in body:
                clauses.append(f"{column} {operator} ?")
                values.append(_date_of(body, key))
        if "declared_from" in body or "declared_to" in body:
            clauses.append("declaration_date != ''")  # never declared: no 申报日期 to match
        limit = integer_of(body, "limit", default=QUERY_DEFAULT_LIMIT, minimum=1,
                           maximum=QUERY_MAX_LIMIT)
        with self._store.write() as connection:
            store_nonce(connection, request)
            seen, seen_values = _visible_clause(connection, request.identity, china_day(moment))
            rows = connection.execute(
                f"SELECT * FROM bonded_documents WHERE {seen} AND {' AND '.join(clauses)} "
                "ORDER BY id LIMIT ?", (*seen_values, *values, limit + 1)).fetchall()
        return pb.BondedQueryResult(records=[record_message(row, full=False)
                                             for row in rows[:limit]],
                                    truncated=len(rows) > limit)

    def ebook_item(self, request: VerifiedRequest, moment: datetime) -> pb.EBookItem:
        identity, body = request.identity, request.body
        check_keys(body, {"ebook_number", "record_item_number"}, {"management_mode"})
        number, item_number = body["ebook_number"], body["record_item_number"]
        if not isinstance(number, str) or not isinstance(item_number, str):
            raise bad_request("ebook_number and record_item_number must be strings")
        subsystem = _record_subsystem(body)
        missing = DataCenterError(
            pb.DOCUMENT_NOT_FOUND, f"e-book item {number}/{item_number[:9]}",
            message=Bilingual(f"没有找到账册 {number} 的备案序号 {item_number[:9]}",
                              f"No record item {item_number[:9]} of e-book {number} was found"),
            remedy=Bilingual("请检查账册编号和备案序号; "
                             f"代理企业须持有账册企业的{authorization.subsystem_label(subsystem)[0]}授权",
                             "Check the e-book and record item numbers; an agent needs the "
                             "e-book owner's grants for the "
                             f"{authorization.subsystem_label(subsystem)[1]}"))
        with self._store.write() as connection:
            store_nonce(connection, request)
            owner = ebooks.ebook_owner(connection, number)
            if owner is None:
                raise missing
            try:
                authorization.check_acting_for(connection, identity, owner, subsystem,
                                               china_day(moment))
            except DataCenterError as error:
                if error.reason == pb.NOT_AUTHORIZED:
                    raise missing from None
                raise
            item = ebooks.find_item(connection, number, item_number)
        if item is None:
            raise missing
        return pb.EBookItem(ebook_number=item.ebook_number,
                            record_item_number=item.record_item_number, hs_code=item.hs_code,
                            name=item.name, specification=item.specification, unit=item.unit,
                            enterprise_code=owner)


def _record_subsystem(body: dict[str, Any]) -> str:
    """The grant an agent needs to call up a record item: that of the management mode the
    item is for (bonded manual §2.2.1.3: 电子账册 items come from the e-book, 纸质手册电子化 items
    from the handbook's record database; e-book manual §4: 加工贸易账册 and 加工贸易手册 are
    delegated apart). Without a mode (older clients) the e-book's."""
    if "management_mode" not in body:
        return "ebook"
    mode = body["management_mode"]
    if not isinstance(mode, str) or not model.uses_ebook(mode):
        raise bad_request("management_mode must be a mode whose items come from a record: " +
                          ", ".join(f"{code} {model_tables.label('management_mode', code)}"
                                    for code in model_tables.table_info(
                                        "management_mode").uses_ebook))
    return model.subsystem_for(mode)


def _modes_of(subsystem: str) -> list[str]:
    return sorted(code for code, key in
                  model_tables.table_info("management_mode").subsystem.items()
                  if key == subsystem)


def _visible_clause(connection: Connection, identity: Identity, today: date
                    ) -> tuple[str, list[str | int]]:
    """SQL for "records this card may see" (e-book manual §4 1.2): its own enterprise's, and a
    principal's in the subsystems of the grants this card holds today (as check_acting_for:
    deleted or expired grants, or none for this card, show nothing), whoever saved them. What
    an agent saved for a principal is the principal's: it goes when the grant goes."""
    parts, values = ["enterprise_code = ?"], [identity.customs_code]
    for principal, subsystem in authorization.acting_for_scopes(connection, identity, today):
        modes = _modes_of(subsystem)
        if modes:
            parts.append(f"(enterprise_code = ? AND management_mode IN "
                         f"({', '.join('?' * len(modes))}))")
            values.extend([principal, *modes])
    return f"({' OR '.join(parts)})", list(values)


def _date_of(body: dict[str, Any], key: str) -> str:
    value = body[key]
    try:
        if not isinstance(value, str) or not _YYYYMMDD.fullmatch(value):
            raise ValueError
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise bad_request(f"{key} must be a date YYYYMMDD") from None
    return value


# ---- the review stand-in's part (review.ReviewWorker calls these) ----------------------------

def due_reviews(connection: Connection, at: int, limit: int) -> list[Row]:
    rows = connection.execute(
        "SELECT r.bonded_document_id, r.declaration, d.* FROM bonded_reviews r "
        "JOIN bonded_documents d ON d.id = r.bonded_document_id WHERE r.due_at <= ? "
        "ORDER BY r.due_at LIMIT ?", (at, limit)).fetchall()
    return list(rows)


def decide(connection: Connection, row: Row, accepted: bool, reason_code: str,
           reason: str, moment: datetime) -> None:
    """审批通过 (APPROVED_RECEIPT) or 退单 (REJECTED_RECEIPT with the reason), in the worker's
    transaction; the receipt goes to the enterprise that saved the document, as customs."""
    document_id = row["bonded_document_id"]
    connection.execute("DELETE FROM bonded_reviews WHERE bonded_document_id = ?",
                       (document_id,))
    if row["status"] != pb.BONDED_STORED:
        return  # nothing to decide (cannot happen: only a declaration queues a review)
    at = to_micros(moment)
    facts = ReceiptFacts(document_id, row["agent_code"], row["temporary_number"],
                         row["unified_number"] or "")
    if accepted:
        connection.execute(
            "UPDATE bonded_documents SET status = ?, reviewed_at = ?, reject_reason_code = '', "
            "reject_reason = '' WHERE id = ?", (pb.BONDED_APPROVED, at, document_id))
        add_receipt(connection, pb.APPROVED_RECEIPT, facts, at, subsystem=BONDED)
        logger.info("bonded: approved %s (enterprise %s)", facts.unified_number,
                    row["enterprise_code"])
        return
    connection.execute(
        "UPDATE bonded_documents SET status = ?, reviewed_at = ?, reject_reason_code = ?, "
        "reject_reason = ? WHERE id = ?",
        (pb.BONDED_REJECTED, at, reason_code, reason, document_id))
    add_receipt(connection, pb.REJECTED_RECEIPT,
                ReceiptFacts(document_id, facts.enterprise_code, facts.temporary_number,
                             facts.unified_number, reason_code=reason_code, reason=reason),
                at, subsystem=BONDED)
    logger.info("bonded: rejected %s with %s (enterprise %s)", facts.unified_number,
                reason_code, row["enterprise_code"])
