"""Bounds on eportd's RPC threads: one cap on calls in progress, a separate one on streams.

Every call holds one of the server's worker threads while it runs, and an event stream
(WatchEvents, a health Watch) holds one for as long as the client listens. Without separate
caps, one client opening streams could take every thread and leave other clients' calls waiting
for ever. So:

- streams: at most `max_streams` at once; one more is refused at once with RESOURCE_EXHAUSTED
  and a message saying so (a stream that waited would only look like a silent one);
- unary calls: at most `max_calls` run at once; more wait for a free place, until their
  deadline (then RESOURCE_EXHAUSTED), as calls waiting for a busy card already do;
- the thread pool has `max_calls + max_streams` threads, so streams can never take the
  threads calls need. (The converse is weaker: a call waiting for a place holds a thread
  while it waits, so with more than `max_calls` calls at once a new stream may start late,
  once a call ends; it is never refused because of them.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from eport.daemon.config import DEFAULT_MAX_CALLS, DEFAULT_MAX_STREAMS
from eport.daemon.server.handler_wrap import Behaviour, TRequest, TResponse, wrap_handler
from eport.protos.v1 import eportd_pb2 as pb

logger = logging.getLogger(__name__)

_ANSWER_MARGIN_S = 0.1


def worker_threads(max_calls: int, max_streams: int) -> int:
    return max_calls + max_streams


def _exhausted(message_zh: str, message_en: str, remedy_zh: str, remedy_en: str
               ) -> grpc.Status:
    detail = pb.ErrorDetail(reason=pb.ERROR_REASON_UNSPECIFIED, message_zh=message_zh,
                            message_en=message_en, remedy_zh=remedy_zh, remedy_en=remedy_en)
    packed = any_pb2.Any()
    packed.Pack(detail)
    status: grpc.Status = rpc_status.to_status(status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message=f"{message_en} Remedy: {remedy_en} / {message_zh} 解决办法: {remedy_zh}",
        details=[packed]))
    return status


def too_many_streams(limit: int) -> grpc.Status:
    return _exhausted(
        f"eportd 的事件流已达上限 ({limit} 个同时打开)",
        f"eportd already serves its limit of {limit} event streams at once.",
        "关闭不用的 eport watch 或监听程序后重试；如确需更多，用 eportd --max-streams 调大上限。",
        "close event watchers you do not need (eport watch, other listeners) and try again; "
        "if you need more, raise the limit with eportd --max-streams.")


def too_many_calls(limit: int) -> grpc.Status:
    return _exhausted(
        f"eportd 正忙: 已有 {limit} 个调用在进行，本调用在截止时间前没有等到空位",
        f"eportd is busy: {limit} calls are in progress and this one found no free place "
        "before its deadline.",
        "稍后重试，或给调用更长的截止时间；如是正常负载，用 eportd --max-calls 调大上限。",
        "retry shortly or with a longer deadline; if this is the normal load, raise the "
        "limit with eportd --max-calls.")


class CallLimits:
    """The two counters; thread-safe."""

    def __init__(self, max_calls: int = DEFAULT_MAX_CALLS,
                 max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        if max_calls < 1 or max_streams < 1:
            raise ValueError("the limits must be at least 1")
        self.max_calls = max_calls
        self.max_streams = max_streams
        self._calls = threading.BoundedSemaphore(max_calls)
        self._streams = threading.BoundedSemaphore(max_streams)
        self._lock = threading.Lock()
        self.streams_open = 0

    def acquire_call(self, timeout: float | None) -> bool:
        return self._calls.acquire(timeout=timeout)

    def release_call(self) -> None:
        self._calls.release()

    def acquire_stream(self) -> bool:
        if not self._streams.acquire(blocking=False):
            return False
        with self._lock:
            self.streams_open += 1
        return True

    def release_stream(self) -> None:
        with self._lock:
            self.streams_open -= 1
        self._streams.release()


class CallLimitInterceptor(grpc.ServerInterceptor):
    """Applies CallLimits to every call (behind the logging interceptor, so a refused call is
    logged with its RESOURCE_EXHAUSTED like any other)."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               grpc.RpcMethodHandler[TRequest, TResponse] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[TRequest, TResponse] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, unary_response=self._limited_call,
                            streaming_response=self._limited_stream)

    def _limited_call(self, inner: Behaviour) -> Behaviour:
        limits = self.limits

        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            # Give up a little before the deadline, so the caller hears why.
            wait = None if remaining is None else max(remaining - _ANSWER_MARGIN_S, 0.0)
            if not limits.acquire_call(wait):
                logger.warning("call refused: %d calls in progress", limits.max_calls)
                context.abort_with_status(too_many_calls(limits.max_calls))
            try:
                return inner(request, context)
            finally:
                limits.release_call()

        return behaviour

    def _limited_stream(self, inner: Behaviour) -> Behaviour:
        limits = self.limits

        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not limits.acquire_stream():
                logger.warning("stream refused: %d streams open", limits.max_streams)
                context.abort_with_status(too_many_streams(limits.max_streams))
            try:
                yield from inner(request, context)
            finally:
                limits.release_stream()

        return behaviour
