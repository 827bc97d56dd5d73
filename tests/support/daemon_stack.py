"""The real eportd for the pcsc tier: its own process, a real Unix socket, a real gRPC channel."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc
from tests.support.waiting import wait_until


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    socket: Path
    log_path: Path
    started_in: float
    _channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(f"unix:{self.socket}")
        self._channels.append(channel)
        return channel

    def stub(self) -> pb_grpc.CardServiceStub:
        return pb_grpc.CardServiceStub(self.channel())

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        for channel in self._channels:
            channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def is_serving(socket: Path) -> bool:
    """eportd's health service answers SERVING on `socket` (False while it is still starting)."""
    if not socket.exists():
        return False
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    serving: bool = answer.status == health_pb2.HealthCheckResponse.SERVING
    return serving


def start_daemon(directory: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 20.0) -> Daemon:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    socket = directory / "eportd.sock"
    log_path = directory / "eportd.log"
    environment = {**os.environ, **(env or {})}
    environment.pop("EPORTD_SOCKET", None)
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eport.daemon.main", "--socket", str(socket),
             "--no-systemd-activation", *args],
            stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        wait_until(lambda: is_serving(socket) or process.poll() is not None, timeout=timeout,
                   interval=0.02, what=f"eportd serves on {socket}")
        ready = is_serving(socket)
    except AssertionError:
        ready = False
    if not ready:
        process.kill()
        process.wait()
        raise RuntimeError(f"eportd did not become ready:\n{log_path.read_text()}")
    # eportd answers only once its reader monitor has seen pcscd: no waiting for state here.
    return Daemon(process, socket, log_path, time.monotonic() - started)


@contextlib.contextmanager
def running_daemon(directory: Path, *args: str, env: dict[str, str] | None = None
                   ) -> Iterator[Daemon]:
    daemon = start_daemon(directory, *args, env=env)
    try:
        yield daemon
    finally:
        daemon.stop()


def error_detail(error: grpc.RpcError) -> pb.ErrorDetail:
    """The eport.v1.ErrorDetail of a failed call (it must have one)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status in {error}"
    detail = pb.ErrorDetail()
    assert status.details[0].Unpack(detail)
    return detail


def reason_of(error: grpc.RpcError) -> str:
    return pb.ErrorReason.Name(error_detail(error).reason)


def expect_error(call: Callable[[], object], reason: str) -> pb.ErrorDetail:
    """The ErrorDetail of a call that must fail with `reason`; its message and remedy must be
    there in both languages."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert reason_of(caught.value) == reason, error_detail(caught.value)
    detail = error_detail(caught.value)
    assert detail.message_zh and detail.message_en and detail.remedy_zh and detail.remedy_en
    return detail


def wait_for_card(stub: pb_grpc.CardServiceStub, reader: str, present: bool = True,
                  timeout: float = 10.0) -> pb.Reader:
    def shown() -> pb.Reader | None:
        for entry in stub.ListReaders(pb.ListReadersRequest()).readers:
            if entry.name == reader and entry.card_present == present and (
                    not present or entry.card_id or entry.error):
                return entry
        return None

    return wait_until(shown, timeout=timeout, interval=0.02,
                      what=f"reader {reader!r} shows card_present={present}")
