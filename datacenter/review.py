"""The review stand-in (审单): decides declared documents by a policy given on the command line.

Pending reviews are rows of `reviews`, written in the Declare transaction, so a restart resumes
them; the worker thread takes the due ones in batches, each batch one transaction with its
receipts. It also prunes nonces that have left the clock-skew window.

Policies: "accept"; "reject:CODE[:TEXT]" (every declaration); "reject-first:CODE[:TEXT]" (each
document's first declaration is rejected, later ones are accepted: the fee-rule scenario).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from eport.common.customs import numbers
from eport.common.failure import EportFailure
from eport.datacenter import bonded
from eport.datacenter.clock import now as utc_now
from eport.datacenter.clock import to_micros
from eport.datacenter.numbering import new_entry_number
from eport.datacenter.receipts import ReceiptFacts, ReceiptHub, add_receipt
from eport.datacenter.storage import Connection, Row, StorageError, StorageUnavailable, Store
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

_BATCH = 200
_IDLE_WAKE_SECONDS = 60.0
_PRUNE_EVERY_SECONDS = 60.0
_REASON_CODE = re.compile(r"[0-9A-Za-z_-]{1,16}")
DEFAULT_REJECT_TEXT = "海关审单退单"


class PolicyError(EportFailure, ValueError):
    """A --review value that is not a policy; the message shows the accepted forms."""

    code = "REVIEW_POLICY"


@dataclass(frozen=True)
class ReviewPolicy:
    mode: str = "accept"  # "accept", "reject" or "reject-first"
    reason_code: str = ""
    reason: str = ""

    @classmethod
    def parse(cls, text: str) -> ReviewPolicy:
        mode, _, rest = text.partition(":")
        if mode == "accept" and not rest:
            return cls()
        if mode in ("reject", "reject-first"):
            code, _, reason = rest.partition(":")
            if _REASON_CODE.fullmatch(code):
                return cls(mode, code, reason or DEFAULT_REJECT_TEXT)
        raise PolicyError(f"review policy {text!r}: use accept, reject:CODE[:TEXT] or "
                          "reject-first:CODE[:TEXT] (CODE: up to 16 letters, digits, - or _)")

    def accepts(self, declaration: int) -> bool:
        """Whether the document's `declaration`-th declaration (1, 2, ...) is cleared."""
        if self.mode == "accept":
            return True
        if self.mode == "reject-first":
            return declaration > 1
        return False

    def describe(self) -> str:
        if self.mode == "accept":
            return "accept"
        return f"{self.mode}:{self.reason_code}:{self.reason}"


class ReviewWorker:
    """One thread deciding due reviews; `wake()` after a Declare commits."""

    def __init__(self, store: Store, policy: ReviewPolicy, hub: ReceiptHub, *,
                 max_clock_skew: float, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._policy = policy
        self._hub = hub
        self._clock = clock
        self._nonce_window = timedelta(seconds=2 * max_clock_skew + 60)
        self._condition = threading.Condition()
        self._woken = False
        self._stopping = False
        self._last_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="eport-datacenter-review",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with self._condition:
            self._woken = True
            self._condition.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                decided = self.process_due()
                self._prune_nonces()
                delay = self._seconds_to_next_due()
            except StorageUnavailable as error:
                logger.warning("the review worker cannot reach the database; retrying in a "
                               "second (%s)", error)
                delay = 1.0
                decided = 0
            except StorageError:
                return  # the store closed under us: the server is stopping
            except Exception:
                logger.exception("the review worker failed; retrying in a second")
                delay = 1.0
                decided = 0
            if decided:
                continue  # more may be due right away
            with self._condition:
                if not self._woken and not self._stopping:
                    self._condition.wait(delay)
                self._woken = False
                if self._stopping:
                    return

    def _seconds_to_next_due(self) -> float:
        with self._store.read() as connection:
            row = connection.execute(
                "SELECT MIN(due_at) FROM (SELECT due_at FROM reviews "
                "UNION ALL SELECT due_at FROM bonded_reviews) AS due").fetchone()
        if row[0] is None:
            return _IDLE_WAKE_SECONDS
        left = (int(row[0]) - to_micros(self._clock())) / 1_000_000
        return min(max(left, 0.0), _IDLE_WAKE_SECONDS)

    def _prune_nonces(self) -> None:
        # Not on every wake: under load that would double the transactions (and fsyncs).
        if time.monotonic() - self._last_prune < _PRUNE_EVERY_SECONDS:
            return
        self._last_prune = time.monotonic()
        cutoff = to_micros(self._clock() - self._nonce_window)
        with self._store.write() as connection:
            connection.execute("DELETE FROM nonces WHERE signed_at < ?", (cutoff,))

    def process_due(self) -> int:
        """Decide every review due now (in batches), customs and bonded; how many were."""
        return self._process_customs_due() + self._process_bonded_due()

    def _process_bonded_due(self) -> int:
        """Bonded verification documents (保税核查): the same policy, 审批通过 for 审结."""
        total = 0
        while True:
            moment = self._clock()
            with self._store.write() as connection:
                rows = bonded.due_reviews(connection, to_micros(moment), _BATCH)
                for row in rows:
                    accepted = self._policy.accepts(row["declaration"])
                    bonded.decide(connection, row, accepted, self._policy.reason_code,
                                  self._policy.reason, moment)
            if rows:
                self._hub.published()
            total += len(rows)
            if len(rows) < _BATCH:
                return total

    def _process_customs_due(self) -> int:
        total = 0
        while True:
            moment = self._clock()
            with self._store.read() as connection:
                due = connection.execute("SELECT 1 FROM reviews WHERE due_at <= ? LIMIT 1",
                                         (to_micros(moment),)).fetchone()
            if due is None:
                return total  # woken by a Declare whose review is not due yet
            with self._store.write() as connection:
                rows = connection.execute(
                    "SELECT reviews.document_id, reviews.declaration, documents.* FROM reviews "
                    "JOIN documents ON documents.id = reviews.document_id "
                    "WHERE reviews.due_at <= ? ORDER BY reviews.due_at LIMIT ?",
                    (to_micros(moment), _BATCH)).fetchall()
                for row in rows:
                    self._decide(connection, row, moment)
            if rows:
                self._hub.published()
            total += len(rows)
            if len(rows) < _BATCH:
                return total

    def _decide(self, connection: Connection, row: Row, moment: datetime
                ) -> None:
        document_id = row["document_id"]
        connection.execute("DELETE FROM reviews WHERE document_id = ?", (document_id,))
        if row["status"] != pb.DECLARED:
            return  # nothing to decide (cannot happen: only Declare writes reviews)
        at = to_micros(moment)
        facts = ReceiptFacts(document_id, row["enterprise_code"], row["temporary_number"],
                             row["unified_number"] or "")
        district = _district(row["document_json"])
        if self._policy.accepts(row["declaration"]) and district:
            entry = new_entry_number(connection, district, row["direction"], moment)
            pre_entry = numbers.pre_entry_number(entry)
            connection.execute(
                "UPDATE documents SET status = ?, entry_number = ?, pre_entry_number = ?, "
                "reviewed_at = ?, reject_reason_code = '', reject_reason = '' WHERE id = ?",
                (pb.CLEARED, entry, pre_entry, at, document_id))
            add_receipt(connection, pb.CLEARED_RECEIPT,
                        ReceiptFacts(document_id, facts.enterprise_code, facts.temporary_number,
                                     facts.unified_number, entry, pre_entry), at)
            logger.info("cleared %s as %s (enterprise %s)", facts.unified_number, entry,
                        facts.enterprise_code)
            return
        code, reason = self._policy.reason_code, self._policy.reason
        if not district:
            code, reason = "DC01", "申报地海关代码无效 / the declaration customs is not 4 digits"
        connection.execute(
            "UPDATE documents SET status = ?, reviewed_at = ?, reject_reason_code = ?, "
            "reject_reason = ? WHERE id = ?", (pb.REJECTED, at, code, reason, document_id))
        add_receipt(connection, pb.REJECTED_RECEIPT,
                    ReceiptFacts(document_id, facts.enterprise_code, facts.temporary_number,
                                 facts.unified_number, reason_code=code, reason=reason), at)
        logger.info("rejected %s with %s (enterprise %s)", facts.unified_number, code,
                    facts.enterprise_code)


def _district(document_json: str) -> str:
    """header.declaration_customs when it is the 4 digits an entry number needs, else ""."""
    try:
        header = json.loads(document_json).get("header", {})
        district = header.get("declaration_customs", "") if isinstance(header, dict) else ""
    except (ValueError, AttributeError):
        return ""
    return district if isinstance(district, str) and re.fullmatch(r"[0-9]{4}", district) else ""
