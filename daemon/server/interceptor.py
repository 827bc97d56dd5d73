"""One log line per RPC: method, caller uid/pid, duration and status code.

A Python grpc ServerInterceptor never sees the ServicerContext, so it wraps the method handler
instead: the wrapped behaviour gets (request, context), looks the caller up in the
PeerRegistry, and times the call. While the servicer's code runs, peer_of(context) answers
the caller's credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from eport.daemon.server.handler_wrap import Behaviour, TRequest, TResponse, wrap_handler
from eport.daemon.server.peer_proxy import PeerCred, PeerRegistry, serving_call

logger = logging.getLogger(__name__)



def _status_name(context: grpc.ServicerContext, error: BaseException | None,
                 completed: bool) -> str:
    # code() exists on the server context since grpc 1.38 but not in the type stubs; it holds
    # what the servicer set with set_code() or abort().
    code_of = getattr(context, "code", None)
    code = code_of() if callable(code_of) else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if (isinstance(error, GeneratorExit) or (error is None and not completed)
            or not context.is_active()):
        return grpc.StatusCode.CANCELLED.name  # the client went away (or the deadline passed)
    if error is not None:
        return grpc.StatusCode.UNKNOWN.name  # grpc turns an unexpected exception into UNKNOWN
    return grpc.StatusCode.OK.name


class _CallRecord:
    def __init__(self, method: str, cred: PeerCred | None) -> None:
        self.method = method
        self.cred = cred
        self.started = time.monotonic()

    def finish(self, context: grpc.ServicerContext, error: BaseException | None,
               completed: bool) -> None:
        duration_ms = round((time.monotonic() - self.started) * 1000, 3)
        code = _status_name(context, error, completed)
        uid = self.cred.uid if self.cred else None
        pid = self.cred.pid if self.cred else None
        logger.info("rpc %s %s uid=%s pid=%s %.1f ms", self.method, code, uid, pid, duration_ms,
                    extra={"method": self.method, "uid": uid, "pid": pid,
                           "duration_ms": duration_ms, "code": code})


class CallLogInterceptor(grpc.ServerInterceptor):
    """Logs every call at INFO and makes peer_of(context) work inside servicer methods."""

    def __init__(self, peers: PeerRegistry) -> None:
        self._peers = peers

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               grpc.RpcMethodHandler[TRequest, TResponse] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[TRequest, TResponse] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED itself
        method = handler_call_details.method
        return wrap_handler(
            handler,
            unary_response=lambda inner: self._unary_response(inner, method),
            streaming_response=lambda inner: self._streaming_response(inner, method))

    def _unary_response(self, inner: Behaviour, method: str) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            call = _CallRecord(method, self._peers.peer_of(context))
            error: BaseException | None = None
            try:
                with serving_call(context, call.cred):
                    return inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.finish(context, error, completed=True)

        return behaviour

    def _streaming_response(self, inner: Behaviour, method: str) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = _CallRecord(method, self._peers.peer_of(context))
            error: BaseException | None = None
            completed = False
            iterator: Iterator[Any] | None = None
            try:
                # The servicer's code runs inside next(): set the caller around each step only,
                # so nothing leaks into grpc's code between messages.
                with serving_call(context, call.cred):
                    iterator = iter(inner(request, context))
                while True:
                    with serving_call(context, call.cred):
                        try:
                            item = next(iterator)
                        except StopIteration:
                            break
                    yield item
                completed = True
            except BaseException as exc:
                error = exc
                raise
            finally:
                close = getattr(iterator, "close", None)
                if not completed and callable(close):
                    # The stream was cut: let the servicer's generator run its cleanup now.
                    with serving_call(context, call.cred):
                        close()
                call.finish(context, error, completed)

        return behaviour
