"""The client kit's own gRPC unary calls (kit.unary_transport) against a real grpcio server on
a Unix socket: the same replies and errors as grpcio's stub, big messages both ways (HTTP/2
flow control), deadlines, a server that goes away or is not gRPC, and streams handed to grpcio.
The CLI's tests run it against the real eportd; these take it to its edges."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from eport.clients.kit.daemon_client import DaemonClient
from eport.clients.kit.errors import CliError, KitCode
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.unary_transport import StatusCode, UnaryCallError
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc
from tests.support.waiting import wait_until

SERVICE = "eport.v1.CardService"
BIG = 3 * 1024 * 1024 + 12345  # beyond every HTTP/2 window, under gRPC's 4 MiB message limit


class CaseService:
    """What eportd's service could answer, each method one case."""

    def __init__(self) -> None:
        self.slow_release = threading.Event()

    def card_info(self, request: pb.CardSelector, context: grpc.ServicerContext) -> pb.CardInfo:
        return pb.CardInfo(card_id=request.card_id or "8000000000000001", reader=request.reader,
                           holder_name="张三 (test)")

    def sign(self, request: pb.SignRequest, context: grpc.ServicerContext) -> pb.SignResponse:
        return pb.SignResponse(signature=bytes(reversed(request.data)), card_id="c")

    def verify_pin(self, request: pb.VerifyPinRequest, context: grpc.ServicerContext
                   ) -> pb.VerifyPinResponse:
        detail = any_pb2.Any()
        detail.Pack(pb.ErrorDetail(reason=pb.PIN_INCORRECT, tries_left=2,
                                   message_zh="口令错误", message_en="Wrong PIN",
                                   remedy_zh="请重试", remedy_en="try again", card_id="c"))
        context.abort_with_status(rpc_status.to_status(status_pb2.Status(
            code=code_pb2.UNAUTHENTICATED, message="wrong PIN", details=[detail])))
        raise AssertionError("abort_with_status returns only by raising")

    def pin_status(self, request: pb.CardSelector, context: grpc.ServicerContext
                   ) -> pb.PinStatus:
        self.slow_release.wait(5)  # not a wait: the call must outlast the client's deadline
        return pb.PinStatus(pin_tries_left=3)

    def logout(self, request: pb.CardSelector, context: grpc.ServicerContext
               ) -> pb.LogoutResponse:
        context.abort(grpc.StatusCode.NOT_FOUND, "没有这张卡 100% gone")
        raise AssertionError("abort returns only by raising")

    def watch(self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
              ) -> Iterator[pb.Event]:
        yield pb.Event(reader="reader 1")
        yield pb.Event(reader="reader 2")

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(function: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                function, request_deserializer=request_type.FromString,
                response_serializer=lambda reply: reply.SerializeToString())
        return grpc.method_handlers_generic_handler(SERVICE, {
            "GetCardInfo": unary(self.card_info, pb.CardSelector),
            "Sign": unary(self.sign, pb.SignRequest),
            "VerifyPin": unary(self.verify_pin, pb.VerifyPinRequest),
            "GetPinStatus": unary(self.pin_status, pb.CardSelector),
            "Logout": unary(self.logout, pb.CardSelector),
            "WatchEvents": grpc.unary_stream_rpc_method_handler(
                self.watch, request_deserializer=pb.WatchEventsRequest.FromString,
                response_serializer=lambda reply: reply.SerializeToString()),
        })


@pytest.fixture
def served() -> Iterator[tuple[Path, CaseService]]:
    with tempfile.TemporaryDirectory(prefix="eport-unary-") as temp:
        path = Path(temp) / "eportd.sock"
        service = CaseService()
        server = grpc.server(ThreadPoolExecutor(4))
        server.add_generic_rpc_handlers((service.handler(),))
        server.add_insecure_port(f"unix:{path}")
        server.start()
        try:
            yield path, service
        finally:
            service.slow_release.set()
            server.stop(0)


def test_a_reply_is_what_grpcio_reads(served: tuple[Path, CaseService]) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=5)
    request = pb.CardSelector(card_id="8000000000000042", reader="读卡器 0")
    ours = client.card_info(request)
    with grpc.insecure_channel(f"unix:{path}") as channel:
        theirs = pb_grpc.CardServiceStub(channel).GetCardInfo(request, timeout=5)
    assert ours == theirs
    assert ours.holder_name == "张三 (test)" and ours.reader == "读卡器 0"
    client.close()


def test_messages_larger_than_every_window_go_both_ways(served: tuple[Path, CaseService]
                                                        ) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=20)
    data = bytes(range(256)) * (BIG // 256)
    reply = client.call(client.stub.Sign, pb.SignRequest(data=data))
    assert reply.signature == bytes(reversed(data))
    # Together more than the connection's receive window: it must be given back between calls.
    for round_number in range(4):
        piece = bytes([round_number]) * BIG
        assert client.call(client.stub.Sign, pb.SignRequest(data=piece)).signature == piece
    client.close()


def test_eportd_error_detail_arrives_as_through_grpcio(served: tuple[Path, CaseService]) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=5)
    with pytest.raises(CliError) as caught:
        client.call(client.stub.VerifyPin, pb.VerifyPinRequest(pin="not-sent-anywhere"))
    failure = caught.value
    assert failure.code == "PIN_INCORRECT"
    assert failure.extra["tries_left"] == 2 and failure.extra["card_id"] == "c"
    assert failure.message.zh == "口令错误" and failure.remedy.en == "try again"
    assert failure.exit_code == ExitCode.PIN_REFUSED
    assert "not-sent-anywhere" not in str(failure)


def test_a_plain_status_keeps_its_code_and_its_text(served: tuple[Path, CaseService]) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=5)
    with pytest.raises(UnaryCallError) as caught:
        client.stub.Logout(pb.CardSelector(), timeout=5)
    assert caught.value.status == StatusCode.NOT_FOUND
    assert caught.value.details == "没有这张卡 100% gone"
    with pytest.raises(CliError) as as_cli:
        client.call(client.stub.Logout, pb.CardSelector())
    assert as_cli.value.code == KitCode.DAEMON_ERROR and "NOT_FOUND" in as_cli.value.message.en


def test_a_deadline_ends_the_call_and_the_next_call_works(served: tuple[Path, CaseService]
                                                          ) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(CliError) as caught:
        client.pin_status(pb.CardSelector())
    assert caught.value.code == KitCode.DAEMON_TIMEOUT
    assert time.monotonic() - started < 3
    client.timeout = 5
    assert client.card_info(pb.CardSelector(card_id="1")).card_id == "1"


def test_a_socket_nobody_serves_is_daemon_unavailable(tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="eport-stale-")) / "eportd.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a daemon that died
    with pytest.raises(CliError) as caught:
        DaemonClient(path, timeout=5).readers()
    assert caught.value.code == KitCode.DAEMON_UNAVAILABLE
    assert str(path) in caught.value.message.en


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\x00" * 40])
def test_a_server_that_is_not_grpc_gives_a_clear_error_not_a_hang(answer: bytes) -> None:
    path = Path(tempfile.mkdtemp(prefix="eport-other-")) / "other.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def answer_once() -> None:
        connection, _ = listener.accept()
        connection.recv(4096)
        connection.sendall(answer)
        connection.close()

    threading.Thread(target=answer_once, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(CliError) as caught:
        DaemonClient(path, timeout=10).readers()
    assert time.monotonic() - started < 5
    assert caught.value.code in (KitCode.DAEMON_UNAVAILABLE, KitCode.DAEMON_ERROR)
    listener.close()


def test_a_daemon_restart_between_calls_is_survived(tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="eport-restart-")) / "eportd.sock"
    client = DaemonClient(path, timeout=5)
    for generation in range(2):
        service = CaseService()
        server = grpc.server(ThreadPoolExecutor(2))
        server.add_generic_rpc_handlers((service.handler(),))
        server.add_insecure_port(f"unix:{path}")
        server.start()
        try:
            card_id = f"800000000000000{generation}"
            wait_until(lambda: path.exists(), timeout=5, what="the socket")
            if generation == 0:
                assert client.card_info(pb.CardSelector(card_id=card_id)).card_id == card_id
            else:  # the old connection is dead; the first call finds out and the next works
                try:
                    answer = client.card_info(pb.CardSelector(card_id=card_id))
                except CliError as failure:
                    assert failure.code == KitCode.DAEMON_UNAVAILABLE
                    answer = client.card_info(pb.CardSelector(card_id=card_id))
                assert answer.card_id == card_id
        finally:
            server.stop(0).wait()
    client.close()


def test_streams_go_through_grpcio(served: tuple[Path, CaseService]) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=5)
    events = client.watch()
    assert [next(events).reader, next(events).reader] == ["reader 1", "reader 2"]
    events.close()
    client.close()


def test_unary_calls_do_not_load_grpcio(served: tuple[Path, CaseService]) -> None:
    """What the transport is for: a one-call command starts without grpcio."""
    path, _ = served
    script = ("import sys\n"
              "from pathlib import Path\n"
              "from eport.clients.kit.daemon_client import DaemonClient\n"
              "from eport.protos.v1 import eportd_pb2 as pb\n"
              f"client = DaemonClient(Path({str(path)!r}), timeout=5)\n"
              "assert client.card_info(pb.CardSelector(card_id='7')).card_id == '7'\n"
              "print('grpc' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_an_option_the_transport_cannot_send_is_refused_not_dropped(
        served: tuple[Path, CaseService]) -> None:
    path, _ = served
    client = DaemonClient(path, timeout=5)
    with pytest.raises(TypeError, match="metadata"):
        client.stub.GetCardInfo(pb.CardSelector(), timeout=5, metadata=(("x-id", "1"),))
