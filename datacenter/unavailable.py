"""A database that cannot be reached answers UNAVAILABLE, the status clients retry on.

StorageUnavailable can come from any RPC that touches the store (a PostgreSQL restart, a
network cut); without this, gRPC would answer UNKNOWN and a client could not tell a passing
outage from a bug. The message is the store's own, in both languages, with its remedy; it
names the database but never its password (storage_postgres.redacted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from eport.datacenter.storage import StorageUnavailable

logger = logging.getLogger(__name__)


def _unary(behaviour: Callable[[Any, grpc.ServicerContext], Any]
           ) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except StorageUnavailable as error:
            logger.warning("answered UNAVAILABLE: %s", error)
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
    return handle


def _streaming(behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]]
               ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behaviour(request, context)
        except StorageUnavailable as error:
            logger.warning("stream answered UNAVAILABLE: %s", error)
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
    return handle


class UnavailableInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary), handler.request_deserializer,
                handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream), handler.request_deserializer,
                handler.response_serializer)
        return handler
