"""A grpc method handler with its behaviour wrapped, whatever its kind: what eportd's server
interceptors return.

A Python grpc ServerInterceptor never sees the ServicerContext, so to act around a call it
returns a copy of the method handler whose behaviour is wrapped. The wrapper differs by what the
behaviour gives back: one answer (unary-unary, stream-unary) or a stream of them (unary-stream,
stream-stream).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

TRequest = TypeVar("TRequest")
TResponse = TypeVar("TResponse")
Behaviour = Callable[[Any, grpc.ServicerContext], Any]
Wrapper = Callable[[Behaviour], Behaviour]


def wrap_handler(handler: grpc.RpcMethodHandler[TRequest, TResponse], *,
                 unary_response: Wrapper,
                 streaming_response: Wrapper) -> grpc.RpcMethodHandler[TRequest, TResponse]:
    """The handler with its behaviour passed through `unary_response` or `streaming_response`
    (by the kind of answer), its (de)serializers kept."""
    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary_response(handler.unary_unary), deserializer, serializer)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary_response(handler.stream_unary), deserializer, serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming_response(handler.unary_stream), deserializer, serializer)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            streaming_response(handler.stream_stream), deserializer, serializer)
    return handler
