"""The document ledger: Save (暂存), Upload (上载), Declare (申报), Delete and DeleteItem (删除),
GetDocument and Query.

Each operation is one write transaction that first stores the request's nonce (a replay fails
on the UNIQUE key and rolls back with everything else) and commits before the answer is sent.
Validation runs outside the transaction: it is the CPU-heavy part, and the write lock should
only cover the few rows a request touches. Declare re-checks that the document did not change
between its validation and its transaction.

Statuses: SAVED → (Upload) STORED → (Declare) DECLARED → review → CLEARED or REJECTED.
Save may modify a SAVED, STORED or REJECTED document (status and numbers stay); Upload of a
SAVED or REJECTED document (re-)enters it (receipt STORED); Declare of a SAVED one uploads it
first (QP FAQ §十一(三)); Declare of a DECLARED or CLEARED one changes nothing. Delete turns a
document never declared into a DELETED tombstone (its numbers are never given again).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from eport.common.customs.canonical import CanonicalError, canonical_json
from eport.common.customs.document import MAX_ITEMS
from eport.common.failure import EportFailure
from eport.common.text import Bilingual
from eport.datacenter import fees
from eport.datacenter.bodies import check_keys, date_of, integer_of, number_of, typed_number
from eport.datacenter.clock import CHINA_TIME, china_date, timestamp, to_micros
from eport.datacenter.errors import DataCenterError, Problem, bad_request
from eport.datacenter.numbering import new_temporary_number, new_unified_number
from eport.datacenter.receipts import ReceiptFacts, add_receipt
from eport.datacenter.roles import require_declare_right, require_entry_right
from eport.datacenter.storage import Connection, Row, Store
from eport.datacenter.trust import Identity, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

QUERY_DEFAULT_LIMIT = 100
QUERY_MAX_LIMIT = 1000
_DIRECTIONS = ("import", "export")
_DOCUMENT_TYPES = ("declaration", "filing-list")
_STATUS_BY_NAME = {name: value for name, value in pb.DocumentStatus.items() if value}


class ProblemLike(Protocol):
    """What the document validator reports per field (read-only)."""

    @property
    def path(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> Bilingual: ...
    @property
    def section(self) -> str: ...


Validator = Callable[..., Sequence[ProblemLike]]


@dataclass(frozen=True)
class Outcome:
    record: pb.DocumentRecord
    receipts_written: bool = False
    review_queued: bool = False


def store_nonce(connection: Connection, request: VerifiedRequest) -> None:
    # ON CONFLICT rather than catching the constraint error: on PostgreSQL a failed
    # statement aborts the whole transaction.
    stored = connection.execute(
        "INSERT INTO nonces (nonce, signed_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING "
        "RETURNING nonce", (request.nonce, to_micros(request.signed_at))).fetchone()
    if stored is None:
        raise DataCenterError(pb.REPLAY, f"nonce of card {request.identity.card_id}") from None


def record_message(row: Row, *, full: bool = True) -> pb.DocumentRecord:
    return pb.DocumentRecord(
        temporary_number=row["temporary_number"], unified_number=row["unified_number"] or "",
        entry_number=row["entry_number"] or "", pre_entry_number=row["pre_entry_number"] or "",
        status=row["status"], document_json=row["document_json"] if full else "",
        document_type=row["document_type"], direction=row["direction"],
        enterprise_code=row["enterprise_code"], saved_by_card=row["saved_by_card"],
        declared_by_card=row["declared_by_card"], saved_at=timestamp(row["saved_at"]),
        uploaded_at=timestamp(row["uploaded_at"]), declared_at=timestamp(row["declared_at"]),
        reviewed_at=timestamp(row["reviewed_at"]), declaration_count=row["declaration_count"],
        fee_charged=bool(row["fee_charged"]), reject_reason_code=row["reject_reason_code"],
        reject_reason=row["reject_reason"], client_reference=row["client_reference"] or "",
        deleted_at=timestamp(row["deleted_at"]), deleted_by_card=row["deleted_by_card"])


def find_document(connection: Connection, identity: Identity, column: str,
                  number: str, *, deleted: bool = False) -> Row:
    """The caller's enterprise's document; another enterprise's is "not found" (not
    "forbidden"), so numbers of other enterprises cannot be probed. A deleted one is "not
    found" saying when it was deleted, unless `deleted`."""
    assert column in ("temporary_number", "unified_number", "entry_number")
    row = connection.execute(
        f"SELECT * FROM documents WHERE {column} = ? AND enterprise_code = ?",
        (number, identity.customs_code)).fetchone()
    if row is None:
        raise DataCenterError(pb.DOCUMENT_NOT_FOUND, f"{number} for {identity.customs_code}",
                              message=Bilingual(f"本企业没有编号为 {number} 的单据",
                                                f"Your enterprise has no document {number}"))
    assert row is not None
    if row["deleted_at"] is not None and not deleted:
        when = datetime.fromtimestamp(row["deleted_at"] / 1e6, CHINA_TIME).strftime(
            "%Y-%m-%d %H:%M")
        raise DataCenterError(
            pb.DOCUMENT_NOT_FOUND, f"{number} of {identity.customs_code} was deleted",
            message=Bilingual(f"单据 {row['temporary_number']} 已于 {when} 由卡 "
                              f"{row['deleted_by_card']} 删除",
                              f"Document {row['temporary_number']} was deleted on {when} (China "
                              f"time) by card {row['deleted_by_card']}"),
            remedy=Bilingual("删除的单据不能恢复, 其编号不再使用; 请重新暂存 (得到新的暂存编号)",
                             "A deleted document cannot be restored and its numbers are not used "
                             "again; save it anew (it gets a new temporary number)"))
    return row


def _reread(connection: Connection, document_id: int) -> Row:
    row = connection.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
    assert row is not None
    return row


def _wrong_state(row: Row, action_zh: str, action_en: str) -> DataCenterError:
    status = pb.DocumentStatus.Name(row["status"])
    return DataCenterError(
        pb.WRONG_STATE, f"{action_en} in state {status}",
        message=Bilingual(f"单据 {row['temporary_number']} 当前状态 ({status}) 不能{action_zh}",
                          f"Document {row['temporary_number']} cannot be {action_en} in state "
                          f"{status}"))


def _validation_failed(problems: Sequence[ProblemLike]) -> DataCenterError:
    return DataCenterError(
        pb.VALIDATION_FAILED, f"{len(problems)} problem(s)",
        message=Bilingual(f"单据有 {len(problems)} 处不符合填制规范",
                          f"The document has {len(problems)} problem(s)"),
        problems=[Problem(p.path, p.code, p.message, p.section) for p in problems])


class Ledger:
    def __init__(self, store: Store, validate: Validator, *, review_delay: float = 0.0
                 ) -> None:
        self._store = store
        self._validate = validate
        self._review_delay = timedelta(seconds=review_delay)

    # ---- Save ----------------------------------------------------------------------------

    def _prepare(self, identity: Identity, raw: Any) -> tuple[dict[str, Any], str]:
        """The document as it will be stored (declaring agent from the card) and its JSON;
        VALIDATION_FAILED with every problem of a save-time check."""
        if not isinstance(raw, dict):
            raise bad_request("document must be an object")
        document = copy.deepcopy(raw)
        header = document.get("header")
        if isinstance(header, dict):
            header["declaring_agent"] = {"credit_code": identity.credit_code,
                                         "customs_code": identity.customs_code,
                                         "name": identity.enterprise_name}
        problems = list(self._validate(document, declaring=False))
        if not problems:
            problems.extend(_shape_problems(document))
        if problems:
            raise _validation_failed(problems)
        try:
            text = canonical_json(document).decode("utf-8")
        except CanonicalError as error:
            raise bad_request(f"document: {error}") from None
        return document, text

    def save(self, request: VerifiedRequest, moment: datetime) -> Outcome:
        identity, body = request.identity, request.body
        require_entry_right(identity, "暂存", "save")
        check_keys(body, {"document"}, {"temporary_number"})
        temporary = typed_number(body, "temporary_number", "temporary")
        document, text = self._prepare(identity, body["document"])
        reference = document.get("client_reference")
        reference = reference if isinstance(reference, str) and reference else None
        header = document.get("header")
        district = header.get("declaration_customs", "") if isinstance(header, dict) else ""
        at = to_micros(moment)
        with self._store.write() as connection:
            store_nonce(connection, request)
            if temporary is not None:
                row = find_document(connection, identity, "temporary_number", temporary)
                if row["status"] in (pb.DECLARED, pb.CLEARED):
                    raise _wrong_state(row, "修改", "modified")
                if reference is not None and reference != row["client_reference"]:
                    raise bad_request("client_reference of a saved document cannot change")
                connection.execute(
                    "UPDATE documents SET document_json = ?, document_type = ?, direction = ?, "
                    "declaration_customs = ?, modified_at = ? WHERE id = ?",
                    (text, document["document_type"], document["direction"], str(district), at,
                     row["id"]))
                logger.info("modified %s%s", temporary, _who(identity), extra=_log(identity))
                return Outcome(record_message(_reread(connection, row["id"])))
            if reference is not None:
                existing = connection.execute(
                    "SELECT * FROM documents WHERE enterprise_code = ? AND client_reference = ? "
                    "AND deleted_at IS NULL", (identity.customs_code, reference)).fetchone()
                if existing is not None:
                    record = record_message(existing)
                    record.already_saved = True
                    return Outcome(record)
            number = new_temporary_number(connection, moment)
            created = connection.execute(
                "INSERT INTO documents (temporary_number, status, document_json, document_type, "
                "direction, declaration_customs, enterprise_code, client_reference, "
                "saved_by_card, saved_at, save_date, modified_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (number, pb.SAVED, text, document["document_type"], document["direction"],
                 str(district), identity.customs_code, reference, identity.card_id, at,
                 china_date(moment), at)).fetchone()
            logger.info("saved %s%s", number, _who(identity), extra=_log(identity))
            return Outcome(record_message(_reread(connection, created["id"])))

    # ---- Upload and Declare --------------------------------------------------------------

    def _upload(self, connection: Connection, row: Row, moment: datetime
                ) -> None:
        unified = row["unified_number"] or new_unified_number(connection, row["direction"],
                                                              moment)
        at = to_micros(moment)
        connection.execute(
            "UPDATE documents SET status = ?, unified_number = ?, uploaded_at = ?, "
            "reject_reason_code = '', reject_reason = '' WHERE id = ?",
            (pb.STORED, unified, at, row["id"]))
        add_receipt(connection, pb.STORED_RECEIPT,
                    ReceiptFacts(row["id"], row["enterprise_code"], row["temporary_number"],
                                 unified), at)

    def upload(self, request: VerifiedRequest, moment: datetime) -> Outcome:
        identity = request.identity
        require_entry_right(identity, "上载", "upload")
        check_keys(request.body, {"number"})
        column, number = number_of(request.body)
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = find_document(connection, identity, column, number)
            if row["status"] in (pb.DECLARED, pb.CLEARED):
                raise _wrong_state(row, "上载", "uploaded")
            if row["status"] == pb.STORED:
                return Outcome(record_message(row))
            self._upload(connection, row, moment)
            row = _reread(connection, row["id"])
            logger.info("uploaded %s as %s%s", row["temporary_number"], row["unified_number"],
                        _who(identity), extra=_log(identity))
            return Outcome(record_message(row), receipts_written=True)

    def declare(self, request: VerifiedRequest, moment: datetime) -> Outcome:
        identity = request.identity
        require_declare_right(identity)
        check_keys(request.body, {"number"})
        column, number = number_of(request.body)
        # Validate the stored document outside the write lock; if it changes before our
        # transaction (a concurrent Save), validate again.
        for _ in range(5):
            with self._store.read() as connection:
                seen = find_document(connection, identity, column, number)
            problems: list[ProblemLike] = []
            if seen["status"] not in (pb.DECLARED, pb.CLEARED):
                problems = list(self._validate(json.loads(seen["document_json"]),
                                               declaring=True))
            try:
                return self._declare(request, moment, seen, problems)
            except _RetryError:
                continue
        raise _wrong_state(seen, "申报 (正在被修改)", "declared while it is being modified")

    def _declare(self, request: VerifiedRequest, moment: datetime, seen: Row,
                 problems: list[ProblemLike]) -> Outcome:
        identity = request.identity
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = _reread(connection, seen["id"])
            if row["status"] in (pb.DECLARED, pb.CLEARED):
                record = record_message(row)
                record.already_declared = True
                return Outcome(record)
            if row["modified_at"] != seen["modified_at"] or row["status"] != seen["status"]:
                raise _RetryError
            if problems:
                raise _validation_failed(problems)
            receipts = False
            if row["status"] == pb.SAVED:
                self._upload(connection, row, moment)
                receipts = True
            at = to_micros(moment)
            count = row["declaration_count"] + 1
            connection.execute(
                "UPDATE documents SET status = ?, declared_by_card = ?, declared_at = ?, "
                "declaration_count = ?, reject_reason_code = '', reject_reason = '' "
                "WHERE id = ?", (pb.DECLARED, identity.card_id, at, count, row["id"]))
            fees.charge_once(connection, row["id"], row["enterprise_code"], at,
                             china_date(moment))
            connection.execute(
                "INSERT INTO reviews (document_id, due_at, declaration) VALUES (?, ?, ?) "
                "ON CONFLICT (document_id) DO UPDATE SET due_at = excluded.due_at, "
                "declaration = excluded.declaration",
                (row["id"], to_micros(moment + self._review_delay), count))
            row = _reread(connection, row["id"])
        logger.info("declared %s (%s), declaration %d%s", row["unified_number"],
                    row["temporary_number"], count, _who(identity), extra=_log(identity))
        return Outcome(record_message(row), receipts_written=receipts, review_queued=True)

    # ---- reading -------------------------------------------------------------------------

    def get_document(self, request: VerifiedRequest) -> Outcome:
        check_keys(request.body, {"number"})
        column, number = number_of(request.body)
        with self._store.write() as connection:
            store_nonce(connection, request)
            return Outcome(record_message(find_document(connection, request.identity, column,
                                                        number)))

    def query(self, request: VerifiedRequest) -> pb.QueryResult:
        body = request.body
        check_keys(body, set(), {"unified_number", "entry_number", "temporary_number",
                                 "status", "from", "to", "limit"})
        clauses: list[str] = ["enterprise_code = ?", "deleted_at IS NULL"]
        values: list[str | int] = [request.identity.customs_code]
        for key, kind in (("unified_number", "unified"), ("entry_number", "entry"),
                          ("temporary_number", "temporary")):
            number = typed_number(body, key, kind)
            if number is not None:
                clauses.append(f"{key} = ?")
                values.append(number)
        if "status" in body:
            status = body["status"]
            if not isinstance(status, str) or status not in _STATUS_BY_NAME:
                raise bad_request(f"status must be one of {', '.join(_STATUS_BY_NAME)}")
            clauses.append("status = ?")
            values.append(_STATUS_BY_NAME[status])
        for key, operator in (("from", ">="), ("to", "<=")):
            day = date_of(body, key)
            if day is not None:
                clauses.append(f"save_date {operator} ?")
                values.append(day)
        limit = integer_of(body, "limit", default=QUERY_DEFAULT_LIMIT, minimum=1,
                           maximum=QUERY_MAX_LIMIT)
        with self._store.write() as connection:
            store_nonce(connection, request)
            rows = connection.execute(
                f"SELECT * FROM documents WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                (*values, limit + 1)).fetchall()
        return pb.QueryResult(documents=[record_message(row, full=False)
                                         for row in rows[:limit]],
                              truncated=len(rows) > limit)


    # ---- 删除 (QP FAQ §十三(一): the 报关单 screen's Ctrl+D) ---------------------------------

    def delete(self, request: VerifiedRequest, moment: datetime) -> Outcome:
        """A document never declared (SAVED, or STORED before its first Declare: no fee, no
        review) becomes a tombstone: DELETED, its content cleared, its numbers kept in their
        UNIQUE columns so that they are never given again (an upload's STORED receipt keeps
        its document). Its client_reference is free: saving the file again makes a new
        document. A retried delete answers the deleted record."""
        identity = request.identity
        require_entry_right(identity, "删除", "delete")
        check_keys(request.body, {"number"})
        column, number = number_of(request.body)
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = find_document(connection, identity, column, number, deleted=True)
            if row["deleted_at"] is not None:
                return Outcome(record_message(row))
            if row["status"] not in (pb.SAVED, pb.STORED) or row["declaration_count"]:
                raise DataCenterError(
                    pb.WRONG_STATE, f"delete in state {pb.DocumentStatus.Name(row['status'])}",
                    message=Bilingual(f"单据 {row['temporary_number']} 已申报过, 不能删除",
                                      f"Document {row['temporary_number']} has been declared: it "
                                      "cannot be deleted"),
                    remedy=Bilingual("只有暂存或上载后从未申报的单据可以删除; "
                                     "退单的单据请修改后重新申报",
                                     "Only a document never declared can be deleted; modify a "
                                     "rejected one and declare it again"))
            at = to_micros(moment)
            connection.execute(
                "UPDATE documents SET status = ?, document_json = '', deleted_at = ?, "
                "deleted_by_card = ?, modified_at = ? WHERE id = ?",
                (pb.DELETED, at, identity.card_id, at, row["id"]))
            logger.info("deleted %s%s", row["temporary_number"], _who(identity),
                        extra=_log(identity))
            return Outcome(record_message(_reread(connection, row["id"])))

    def delete_item(self, request: VerifiedRequest, moment: datetime) -> Outcome:
        """删除 one 商品项 (QP FAQ §十三(一) 4: Ctrl+Delete on the item list): the items after
        it move up and are renumbered 1, 2, 3 … (项号 in list order), the rest validated as at
        暂存 and stored, wherever Save may modify the document (SAVED, STORED, REJECTED)."""
        identity = request.identity
        require_entry_right(identity, "删除商品项", "delete an item")
        check_keys(request.body, {"number", "item_number"})
        column, number = number_of(request.body)
        item_number = integer_of(request.body, "item_number", default=0, minimum=1,
                                 maximum=MAX_ITEMS)
        at = to_micros(moment)
        with self._store.write() as connection:
            store_nonce(connection, request)
            row = find_document(connection, identity, column, number)
            if row["status"] in (pb.DECLARED, pb.CLEARED):
                raise _wrong_state(row, "修改", "modified")
            document = json.loads(row["document_json"])
            items = document.get("items")
            count = len(items) if isinstance(items, list) else 0
            if not isinstance(items, list) or item_number > count:
                raise _validation_failed([Problem(
                    "item_number", "rule",
                    Bilingual(f"没有第 {item_number} 项商品 (共 {count} 项)",
                              f"There is no item {item_number} (the document has {count})"),
                    "QP FAQ §十三(一)")])
            del items[item_number - 1]
            # Validated inside the transaction (unlike Save): the document is the stored one,
            # read under the lock, and one document's check is small beside a batch's.
            for position, item in enumerate(items, start=1):
                if isinstance(item, dict):
                    item["item_number"] = position
            problems = list(self._validate(document, declaring=False))
            if problems:
                raise _validation_failed(problems)
            connection.execute("UPDATE documents SET document_json = ?, modified_at = ? "
                               "WHERE id = ?", (canonical_json(document).decode("utf-8"), at,
                                                row["id"]))
            logger.info("deleted item %d of %s%s", item_number, row["temporary_number"],
                        _who(identity), extra=_log(identity))
            return Outcome(record_message(_reread(connection, row["id"])))


class _RetryError(EportFailure):
    """The document changed between validation and the Declare transaction."""

    code = "RETRY"


def _shape_problems(document: dict[str, Any]) -> list[ProblemLike]:
    """The two fields the ledger itself relies on, should the validator let them pass."""
    problems: list[ProblemLike] = []
    if document.get("direction") not in _DIRECTIONS:
        problems.append(Problem("direction", "code",
                                Bilingual("进出口标志应为 import 或 export",
                                          "direction must be import or export")))
    if document.get("document_type") not in _DOCUMENT_TYPES:
        problems.append(Problem("document_type", "code",
                                Bilingual("单据类型应为 declaration 或 filing-list",
                                          "document_type must be declaration or filing-list")))
    return problems


def _who(identity: Identity) -> str:
    return f" (enterprise {identity.customs_code}, card {identity.card_id})"


def _log(identity: Identity) -> dict[str, str]:
    return {"enterprise": identity.customs_code, "card_id": identity.card_id}
