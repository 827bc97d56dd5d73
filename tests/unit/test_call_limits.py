"""eportd's caps on calls and streams, through run_server on a real socket: with every stream
place taken, calls still work and one more stream is refused with RESOURCE_EXHAUSTED and a
message in Chinese and English; calls beyond their cap wait their turn, until their deadline."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.clients.kit.errors import error_detail_of
from eport.daemon.config import DaemonSettings
from eport.daemon.main import build_parser, settings_from_args
from eport.daemon.server.bootstrap import run_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
SERVICE = "eport.test.Limits"


class _Service:
    """Hold: a stream that sends one message, then stays open until released (an idle
    WatchEvents). Sleep: a slow call. Echo: a quick one."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sleeping = 0  # Sleep calls that have started
        self._lock = threading.Lock()

    def hold(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"open"
        while context.is_active() and not self.release.wait(0.05):
            pass

    def sleep(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.sleeping += 1
        time.sleep(float(request.decode()))  # the slow call's own work, not a wait
        return b"slept"

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request[::-1]

    def register(self, server: grpc.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Hold": grpc.unary_stream_rpc_method_handler(self.hold),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
        }),))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="epl-", dir="/tmp"))
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=False)


def _settings(path: Path, **changes: Any) -> DaemonSettings:
    return replace(DaemonSettings(socket_path=path, systemd_activation=False), **changes)


def _unary(channel: grpc.Channel, method: str, request: bytes, timeout: float = 5.0) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{SERVICE}/{method}")
    reply: bytes = call(request, timeout=timeout)
    return reply


def _open_stream(channel: grpc.Channel) -> Any:
    """The call: an iterator of the stream's messages, with cancel()."""
    hold: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        f"/{SERVICE}/Hold")
    return hold(b"")


def test_with_every_stream_place_taken_calls_work_and_one_more_stream_is_refused(
        short_dir: Path) -> None:
    service = _Service()
    path = short_dir / "eportd.sock"
    with run_server(_settings(path, max_streams=2, max_calls=4), service.register) as running, \
            grpc.insecure_channel(f"unix:{path}") as channel:
        streams = [_open_stream(channel) for _ in range(2)]
        assert [next(stream) for stream in streams] == [b"open", b"open"]
        assert running.limits.streams_open == 2
        # Calls keep their own threads: many, and some at once, all answered.
        for n in range(20):
            assert _unary(channel, "Echo", f"call {n}".encode()) == f"call {n}".encode()[::-1]
        with grpc.insecure_channel(f"unix:{path}") as other:
            health = health_pb2_grpc.HealthStub(other).Check(health_pb2.HealthCheckRequest(),
                                                             timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        # One more stream: refused at once, saying why in both languages.
        refused = _open_stream(channel)
        with pytest.raises(grpc.RpcError) as caught:
            next(refused)
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = error_detail_of(error)
        assert detail is not None
        assert "事件流已达上限 (2 个同时打开)" in detail.message_zh
        assert "limit of 2 event streams" in detail.message_en
        assert "--max-streams" in detail.remedy_en and "--max-streams" in detail.remedy_zh
        assert "--max-streams" in (error.details() or "")
        # A stream that ends gives its place back.
        streams[0].cancel()
        wait_until(lambda: running.limits.streams_open == 1, timeout=5, what="one stream open")
        again = _open_stream(channel)
        assert next(again) == b"open"
        service.release.set()


def test_calls_beyond_their_cap_wait_their_turn_until_their_deadline(short_dir: Path) -> None:
    service = _Service()
    path = short_dir / "eportd.sock"
    with run_server(_settings(path, max_calls=2, max_streams=1), service.register), \
            grpc.insecure_channel(f"unix:{path}") as channel:
        sleep: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/Sleep")
        slow = [sleep.future(b"1.5", timeout=10) for _ in range(2)]
        wait_until(lambda: service.sleeping == 2, timeout=5,
                   what="both slow calls hold their places")
        with pytest.raises(grpc.RpcError) as caught:
            _unary(channel, "Echo", b"hurry", timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        detail = error_detail_of(caught.value)
        assert detail is not None and "2 calls are in progress" in detail.message_en
        assert "eportd 正忙" in detail.message_zh
        # With time to wait, a call gets the first free place.
        assert _unary(channel, "Echo", b"patient", timeout=10) == b"tneitap"
        assert [call.result() for call in slow] == [b"slept", b"slept"]


def test_the_flags_set_the_caps_and_refuse_nonsense() -> None:
    args = build_parser().parse_args(["--socket", "/tmp/x.sock", "--max-calls", "8",
                                      "--max-streams", "3"])
    settings = settings_from_args(args)
    assert (settings.max_calls, settings.max_streams) == (8, 3)
    defaults = settings_from_args(build_parser().parse_args(["--socket", "/tmp/x.sock"]))
    assert (defaults.max_calls, defaults.max_streams) == (64, 32)
    for wrong in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--max-streams", wrong])


