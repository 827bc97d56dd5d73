"""The customs client's one way to the data centre: a channel, calls, errors as CliError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from eport.clients.customs.errors import datacenter_unavailable, from_datacenter_error
from eport.common.customs.endpoint import channel_target
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import datacenter_pb2_grpc as dc_grpc

Reply = TypeVar("Reply", bound=Message)

DEFAULT_TIMEOUT_SECONDS = 30.0


class DataCenterClient:
    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        self._stub: dc_grpc.DataCenterStub | None = None

    @property
    def stub(self) -> dc_grpc.DataCenterStub:
        if self._stub is None:
            try:
                target = channel_target(self.address)
            except ValueError:
                raise datacenter_unavailable(self.address) from None
            self._channel = grpc.insecure_channel(target)
            self._stub = dc_grpc.DataCenterStub(self._channel)
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def call(self, method: Callable[..., Reply], request: Message) -> Reply:
        try:
            # wait_for_ready: a data centre that is restarting is waited for (up to the
            # timeout) instead of failing the first call at once.
            return method(request, timeout=self.timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise from_datacenter_error(error, self.address) from None

    def info(self) -> dc.DataCenterInfo:
        return self.call(self.stub.GetInfo, dc.GetInfoRequest())

    def watch(self, request: dc.SignedRequest) -> Iterator[dc.Receipt]:
        """Receipts until the caller stops iterating (no deadline: it follows until Ctrl-C)."""
        stream = self.stub.WatchReceipts(request, wait_for_ready=True)
        try:
            yield from stream
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_datacenter_error(error, self.address) from None
        finally:
            stream.cancel()
