"""The customs client's one way to the data centre: a channel, calls, errors as CliError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from eport.clients.datacenter.channel import ChannelConfigError, ClientTls, open_channel
from eport.clients.datacenter.errors import datacenter_unavailable, from_datacenter_error
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.common.customs.endpoint import unix_socket_path
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import datacenter_pb2_grpc as dc_grpc

Reply = TypeVar("Reply", bound=Message)

DEFAULT_TIMEOUT_SECONDS = 30.0
_STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "datacenter": dc_grpc.DataCenterStub,
    "bonded": dc_grpc.BondedVerificationStub,
    "authorization": dc_grpc.AuthorizationStub,
}


class DataCenterClient:
    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 tls: ClientTls | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls  # None: from $EPORT_DATACENTER_CA/_CERT/_KEY (clients/datacenter/channel)
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            try:
                self._channel = open_channel(self.address, self.tls)
            except ValueError:
                raise datacenter_unavailable(self.address) from None
            except ChannelConfigError as error:
                raise CliError("DATACENTER_TLS", Bilingual(str(error), str(error)),
                               Bilingual("修正数据中心的 TLS 设置后重试",
                                         "correct the data centre TLS settings and retry"),
                               ExitCode.USAGE, {"datacenter": self.address}) from None
        return self._channel

    def stub_for(self, service: str) -> Any:
        """The stub of one of the data centre's services, all on one channel."""
        if service not in self._stubs:
            self._stubs[service] = _STUBS[service](self.channel)
        return self._stubs[service]

    @property
    def stub(self) -> dc_grpc.DataCenterStub:
        stub: dc_grpc.DataCenterStub = self.stub_for("datacenter")
        return stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stubs.clear()

    def call(self, method: Callable[..., Reply], request: Message) -> Reply:
        socket = unix_socket_path(self.address)
        if socket is not None and not socket.exists():
            # Said at once: nobody serves there (a person should not wait for a timeout).
            raise datacenter_unavailable(self.address)
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            converted = from_datacenter_error(error, self.address)
            if converted.code == "DATACENTER_UNAVAILABLE":
                # A fresh channel for the next try: this one would sit in reconnect backoff
                # for seconds after a data centre restart.
                self.close()
            raise converted from None

    def info(self) -> dc.DataCenterInfo:
        return self.call(self.stub.GetInfo, dc.GetInfoRequest())

    def watch(self, request: dc.SignedRequest) -> Iterator[dc.Receipt]:
        """Receipts until the caller stops iterating (no deadline: it follows until Ctrl-C)."""
        stream = self.stub.WatchReceipts(request)
        try:
            yield from stream
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_datacenter_error(error, self.address) from None
        finally:
            stream.cancel()
