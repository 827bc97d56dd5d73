"""The BondedVerification gRPC service (保税核查): verify, run one bonded ledger operation,
answer or abort, as the DataCenter service does (errors: a status code plus one
DataCenterErrorDetail in the rich-status trailer)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import grpc

from eport.datacenter.bonded import BondedLedger, BondedOutcome
from eport.datacenter.receipts import ReceiptHub
from eport.datacenter.review import ReviewWorker
from eport.datacenter.rpc import announce, run_signed
from eport.datacenter.trust import RequestVerifier, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["BondedVerification"].full_name


class BondedVerificationServicer(pb_grpc.BondedVerificationServicer):
    def __init__(self, verifier: RequestVerifier, ledger: BondedLedger, hub: ReceiptHub,
                 worker: ReviewWorker) -> None:
        self._verifier = verifier
        self._ledger = ledger
        self._hub = hub
        self._worker = worker

    def _signed(self, request: pb.SignedRequest, context: grpc.ServicerContext, rpc: str,
                operation: Callable[[VerifiedRequest, datetime], _T]) -> _T:
        return run_signed(self._verifier, request, context, rpc, operation, log=logger)

    def _record(self, request: pb.SignedRequest, context: grpc.ServicerContext, rpc: str,
                operation: Callable[[VerifiedRequest, datetime], BondedOutcome]
                ) -> pb.BondedRecord:
        outcome = self._signed(request, context, rpc, operation)
        announce(outcome, self._hub, self._worker)
        return outcome.record

    def SaveBonded(self, request: pb.SignedRequest, context: grpc.ServicerContext
                   ) -> pb.BondedRecord:
        return self._record(request, context, "SaveBonded", self._ledger.save)

    def DeclareBonded(self, request: pb.SignedRequest, context: grpc.ServicerContext
                      ) -> pb.BondedRecord:
        return self._record(request, context, "DeclareBonded", self._ledger.declare)

    def GetBonded(self, request: pb.SignedRequest, context: grpc.ServicerContext
                  ) -> pb.BondedRecord:
        return self._record(request, context, "GetBonded", self._ledger.get)

    def QueryBonded(self, request: pb.SignedRequest, context: grpc.ServicerContext
                    ) -> pb.BondedQueryResult:
        return self._signed(request, context, "QueryBonded", self._ledger.query)

    def RedeclareStock(self, request: pb.SignedRequest, context: grpc.ServicerContext
                       ) -> pb.BondedRecord:
        return self._record(request, context, "RedeclareStock", self._ledger.redeclare)

    def GetEBookItem(self, request: pb.SignedRequest, context: grpc.ServicerContext
                     ) -> pb.EBookItem:
        return self._signed(request, context, "GetEBookItem", self._ledger.ebook_item)

    def DeleteBonded(self, request: pb.SignedRequest, context: grpc.ServicerContext
                     ) -> pb.BondedRecord:
        return self._record(request, context, "DeleteBonded", self._ledger.delete)

    def DeleteBondedItem(self, request: pb.SignedRequest, context: grpc.ServicerContext
                         ) -> pb.BondedRecord:
        return self._record(request, context, "DeleteBondedItem", self._ledger.delete_item)
