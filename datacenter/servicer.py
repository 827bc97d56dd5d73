"""The DataCenter gRPC service: verify, run one ledger operation, answer or abort.

Errors leave as a gRPC status code plus one DataCenterErrorDetail in the rich-status trailer
(grpc_status.rpc_status.from_call() reads it). Logs carry the method, reason, numbers,
enterprise and card id, never payload contents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

import grpc

from eport import __version__
from eport.common.customs.canonical import CANONICAL_FORMAT
from eport.common.customs.envelope import AUDIENCE
from eport.datacenter import fees
from eport.datacenter.bodies import check_keys, date_of, integer_of, number_of
from eport.datacenter.clock import now, timestamp, to_micros
from eport.datacenter.documents import Ledger, Outcome, find_document, store_nonce
from eport.datacenter.errors import bad_request
from eport.datacenter.receipts import LIST_LIMIT, ReceiptHub, list_receipts
from eport.datacenter.review import ReviewPolicy, ReviewWorker
from eport.datacenter.rpc import announce, run_signed
from eport.datacenter.storage import StorageError, StorageUnavailable, Store
from eport.datacenter.trust import RequestVerifier, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_MAX_SEQUENCE = 2**53 - 1
# How often an idle WatchReceipts stream looks whether its client is still there.
_WATCH_POLL_SECONDS = 1.0


class DataCenterServicer(pb_grpc.DataCenterServicer):
    def __init__(self, store: Store, verifier: RequestVerifier, ledger: Ledger,
                 hub: ReceiptHub, worker: ReviewWorker, policy: ReviewPolicy) -> None:
        self._store = store
        self._verifier = verifier
        self._ledger = ledger
        self._hub = hub
        self._worker = worker
        self._policy = policy

    def _signed(self, request: pb.SignedRequest, context: grpc.ServicerContext, rpc: str,
                operation: Callable[[VerifiedRequest, datetime], _T]) -> _T:
        return run_signed(self._verifier, request, context, rpc, operation, log=logger)

    def _document(self, request: pb.SignedRequest, context: grpc.ServicerContext, rpc: str,
                  operation: Callable[[VerifiedRequest, datetime], Outcome]
                  ) -> pb.DocumentRecord:
        outcome = self._signed(request, context, rpc, operation)
        announce(outcome, self._hub, self._worker)
        return outcome.record

    # ---- unsigned ------------------------------------------------------------------------

    def GetInfo(self, request: pb.GetInfoRequest, context: grpc.ServicerContext
                ) -> pb.DataCenterInfo:
        return pb.DataCenterInfo(
            version=__version__, server_time=timestamp(to_micros(now())),
            canonical_format=CANONICAL_FORMAT, audience=AUDIENCE,
            max_clock_skew_seconds=int(self._verifier.max_clock_skew.total_seconds()),
            trust_anchor_subjects=[anchor.subject for anchor in self._verifier.anchors],
            review_policy=self._policy.describe(), fee_per_entry_fen=fees.FEE_PER_ENTRY_FEN)

    # ---- documents -----------------------------------------------------------------------

    def Save(self, request: pb.SignedRequest, context: grpc.ServicerContext
             ) -> pb.DocumentRecord:
        return self._document(request, context, "Save", self._ledger.save)

    def Upload(self, request: pb.SignedRequest, context: grpc.ServicerContext
               ) -> pb.DocumentRecord:
        return self._document(request, context, "Upload", self._ledger.upload)

    def Declare(self, request: pb.SignedRequest, context: grpc.ServicerContext
                ) -> pb.DocumentRecord:
        return self._document(request, context, "Declare", self._ledger.declare)

    def GetDocument(self, request: pb.SignedRequest, context: grpc.ServicerContext
                    ) -> pb.DocumentRecord:
        return self._document(request, context, "GetDocument",
                              lambda verified, _moment: self._ledger.get_document(verified))

    def Query(self, request: pb.SignedRequest, context: grpc.ServicerContext
              ) -> pb.QueryResult:
        return self._signed(request, context, "Query",
                            lambda verified, _moment: self._ledger.query(verified))

    def Delete(self, request: pb.SignedRequest, context: grpc.ServicerContext
               ) -> pb.DocumentRecord:
        return self._document(request, context, "Delete", self._ledger.delete)

    def DeleteItem(self, request: pb.SignedRequest, context: grpc.ServicerContext
                   ) -> pb.DocumentRecord:
        return self._document(request, context, "DeleteItem", self._ledger.delete_item)

    # ---- receipts and fees ---------------------------------------------------------------

    def _list(self, verified: VerifiedRequest) -> pb.ReceiptList:
        check_keys(verified.body, {"after"}, {"number"})
        after = integer_of(verified.body, "after", default=0, minimum=0, maximum=_MAX_SEQUENCE)
        with self._store.write() as connection:
            store_nonce(connection, verified)
            document_id = None
            if "number" in verified.body:
                column, number = number_of(verified.body)
                document_id = find_document(connection, verified.identity, column,
                                            number)["id"]
            return pb.ReceiptList(receipts=list_receipts(
                connection, verified.identity.customs_code, after, document_id=document_id))

    def ListReceipts(self, request: pb.SignedRequest, context: grpc.ServicerContext
                     ) -> pb.ReceiptList:
        return self._signed(request, context, "ListReceipts",
                            lambda verified, _moment: self._list(verified))

    def _watch_start(self, verified: VerifiedRequest, _moment: datetime) -> tuple[str, int]:
        check_keys(verified.body, {"after"})
        after = integer_of(verified.body, "after", default=0, minimum=0, maximum=_MAX_SEQUENCE)
        with self._store.write() as connection:
            store_nonce(connection, verified)
        return verified.identity.customs_code, after

    def WatchReceipts(self, request: pb.SignedRequest, context: grpc.ServicerContext
                      ) -> Iterator[pb.Receipt]:
        enterprise, after = self._signed(request, context, "WatchReceipts", self._watch_start)
        context.add_callback(self._hub.published)  # wake this stream's wait when it ends
        while context.is_active() and not self._hub.closed:
            generation = self._hub.generation  # before listing: no publish can slip between
            try:
                with self._store.read() as connection:
                    batch = list_receipts(connection, enterprise, after)
            except StorageUnavailable:
                # A restarting database: keep the stream, try again shortly.
                self._hub.wait(generation, _WATCH_POLL_SECONDS)
                continue
            except StorageError:
                return  # the server is stopping
            for receipt in batch:
                yield receipt
                after = receipt.sequence
            if len(batch) < LIST_LIMIT:
                self._hub.wait(generation, _WATCH_POLL_SECONDS)

    def _statement(self, verified: VerifiedRequest) -> pb.Statement:
        check_keys(verified.body, {"from", "to"})
        start, end = date_of(verified.body, "from"), date_of(verified.body, "to")
        assert start is not None and end is not None
        if start > end:
            raise bad_request("from is after to")
        with self._store.write() as connection:
            store_nonce(connection, verified)
            return fees.statement(connection, verified.identity.customs_code, start, end)

    def GetStatement(self, request: pb.SignedRequest, context: grpc.ServicerContext
                     ) -> pb.Statement:
        return self._signed(request, context, "GetStatement",
                            lambda verified, _moment: self._statement(verified))
