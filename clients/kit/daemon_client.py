"""The CLI's one way to eportd: find its socket, call it, turn failures into CliError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from eport.clients.kit.errors import daemon_not_running, from_rpc_error
from eport.common.socket_location import SYSTEM_SOCKET_PATH, client_socket_candidates
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

Reply = TypeVar("Reply", bound=Message)

# Card operations queue behind other clients' calls; a generous default beats a spurious
# timeout in the middle of a PIN entry.
DEFAULT_TIMEOUT_SECONDS = 60.0


def choose_socket(flag: str | None) -> Path:
    """--socket, then $EPORTD_SOCKET, then the first existing of the per-user and system
    sockets (the per-user one when neither exists, so the error names where we looked)."""
    if flag:
        return Path(flag).absolute()
    candidates = client_socket_candidates()
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0] if candidates else SYSTEM_SOCKET_PATH


class DaemonClient:
    def __init__(self, socket: Path, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.socket = socket
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.CardServiceStub | None = None

    @property
    def stub(self) -> pb_grpc.CardServiceStub:
        if self._stub is None:
            if not self.socket.exists():
                raise daemon_not_running(self.socket)
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
            self._stub = pb_grpc.CardServiceStub(self._channel)
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def call(self, method: Callable[..., Reply], request: Message) -> Reply:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, self.socket) from None

    # The calls the commands use, one line each, so the commands read as what they do.
    def daemon_info(self) -> pb.DaemonInfo:
        return self.call(self.stub.GetDaemonInfo, pb.GetDaemonInfoRequest())

    def readers(self) -> pb.ListReadersResponse:
        return self.call(self.stub.ListReaders, pb.ListReadersRequest())

    def usb_devices(self) -> pb.ListUsbDevicesResponse:
        return self.call(self.stub.ListUsbDevices, pb.ListUsbDevicesRequest())

    def card_info(self, card: pb.CardSelector) -> pb.CardInfo:
        return self.call(self.stub.GetCardInfo, card)

    def pin_status(self, card: pb.CardSelector) -> pb.PinStatus:
        return self.call(self.stub.GetPinStatus, card)

    def certificate(self, card: pb.CardSelector) -> pb.Certificate:
        return self.call(self.stub.GetCertificate, card)

    def envelope_certificate(self, card: pb.CardSelector) -> pb.Certificate:
        return self.call(self.stub.GetEnvelopeCertificate, card)

    def watch(self) -> Iterator[pb.Event]:
        """Events until the caller stops iterating; no deadline (it runs until Ctrl-C)."""
        stream = self.stub.WatchEvents(pb.WatchEventsRequest())
        try:
            yield from stream
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(error, self.socket) from None
        finally:
            stream.cancel()


def selector(reader: str | None, card_id: str | None) -> pb.CardSelector:
    return pb.CardSelector(reader=reader or "", card_id=card_id or "")
