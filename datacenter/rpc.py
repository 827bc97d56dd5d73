"""What every signed data centre RPC does around its operation, for the DataCenter,
BondedVerification and Authorization servicers: verify the SignedRequest at one moment, run
the operation with that moment, and turn a DataCenterError into the gRPC status with its
DataCenterErrorDetail in the rich-status trailer, logging the refusal.

The refusal is logged on the servicer's own logger (`log`), so log records keep the logger
name they had when each servicer aborted by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn, Protocol, TypeVar

import grpc
from grpc_status import rpc_status

from eport.datacenter.clock import now
from eport.datacenter.errors import DataCenterError
from eport.datacenter.trust import RequestVerifier, VerifiedRequest
from eport.protos.v1 import datacenter_pb2 as pb

_T = TypeVar("_T")


class Committed(Protocol):
    """What a ledger operation says it did, once its transaction has committed."""

    @property
    def receipts_written(self) -> bool: ...

    @property
    def review_queued(self) -> bool: ...


class Waker(Protocol):
    def published(self) -> None: ...


class Reviewer(Protocol):
    def wake(self) -> None: ...


def announce(outcome: Committed, hub: Waker, worker: Reviewer) -> None:
    """Wake receipt streams and the reviewer for what just committed. Only after COMMIT: a
    watcher or the reviewer must never see uncommitted rows."""
    if outcome.receipts_written:
        hub.published()
    if outcome.review_queued:
        worker.wake()


def abort(context: grpc.ServicerContext, rpc: str, error: DataCenterError, *,
          log: logging.Logger) -> NoReturn:
    """Log the refusal (method and reason, never payload contents) and end the call."""
    log.info("%s refused: %s", rpc, error,
             extra={"method": rpc, "reason": pb.DataCenterReason.Name(error.reason)})
    context.abort_with_status(rpc_status.to_status(error.to_status()))
    raise AssertionError("abort_with_status returned")  # it raises


def run_signed(verifier: RequestVerifier, request: pb.SignedRequest,
               context: grpc.ServicerContext, rpc: str,
               operation: Callable[[VerifiedRequest, datetime], _T], *,
               log: logging.Logger) -> _T:
    """operation(verified request, moment), or the call aborted with the DataCenterError
    that verifying or the operation raised. One moment serves both, so that the clock check
    and the operation's dates agree."""
    moment = now()
    try:
        return operation(verifier.verify(request, rpc, now=moment), moment)
    except DataCenterError as error:
        abort(context, rpc, error, log=log)
