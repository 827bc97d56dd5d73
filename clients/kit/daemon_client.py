"""The CLI's one way to eportd: find its socket, call it, turn failures into CliError.

Unary calls go through kit.unary_transport (gRPC without grpcio: a command starts ~40 ms
sooner); event streams through grpcio, imported only when one is opened.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from google.protobuf.message import Message

from eport.clients.kit.errors import daemon_not_running, from_rpc_error, status_name
from eport.clients.kit.unary_transport import UnaryCallError, UnaryConnection, UnaryStub
from eport.common.socket_location import SYSTEM_SOCKET_PATH, client_socket_candidates
from eport.protos.v1 import eportd_pb2 as pb

if TYPE_CHECKING:
    import grpc

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
        self._connection: UnaryConnection | None = None
        self._stub: pb_grpc.CardServiceStub | None = None
        self._channel: grpc.Channel | None = None
        self._streaming_stub: pb_grpc.CardServiceStub | None = None

    @property
    def stub(self) -> pb_grpc.CardServiceStub:
        """The service's methods as grpcio's stub has them (`stub.Sign(request, timeout=…)`);
        the unary ones do not load grpcio."""
        if self._stub is None:
            if not self.socket.exists():
                raise daemon_not_running(self.socket)
            self._connection = UnaryConnection(self.socket)
            service = pb.DESCRIPTOR.services_by_name["CardService"]
            # The cast: UnaryStub answers every method of the service with the same call shape
            # as grpcio's stub (unary ones itself, streaming ones by handing over to grpcio).
            self._stub = cast("pb_grpc.CardServiceStub",
                              UnaryStub(self._connection, service, self._grpc_stub))
        return self._stub

    def _grpc_stub(self) -> pb_grpc.CardServiceStub:
        if self._streaming_stub is None:
            import grpc

            from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
            self._streaming_stub = pb_grpc.CardServiceStub(self._channel)
        return self._streaming_stub

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._stub = self._streaming_stub = None

    def call(self, method: Callable[..., Reply], request: Message) -> Reply:
        try:
            return method(request, timeout=self.timeout)
        except Exception as error:
            if is_call_error(error):
                raise from_rpc_error(error, self.socket) from None
            raise

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

    def watch(self) -> Generator[pb.Event, None, None]:
        """Events until the caller stops iterating; no deadline (it runs until Ctrl-C)."""
        stream = self.stub.WatchEvents(pb.WatchEventsRequest())
        try:
            yield from stream
        except Exception as error:
            if not is_call_error(error):
                raise
            if status_name(error) == "CANCELLED":
                return
            raise from_rpc_error(error, self.socket) from None
        finally:
            stream.cancel()


def is_call_error(error: BaseException) -> bool:
    """A failed call to eportd: the kit's own, or grpcio's RpcError (checked without importing
    grpcio when nothing has loaded it: then no such error can exist)."""
    if isinstance(error, UnaryCallError):
        return True
    grpc_module = sys.modules.get("grpc")
    return grpc_module is not None and isinstance(error, grpc_module.RpcError)


def selector(reader: str | None, card_id: str | None) -> pb.CardSelector:
    return pb.CardSelector(reader=reader or "", card_id=card_id or "")
