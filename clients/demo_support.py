"""What eport-demo's steps share: the installed scripts, step headings, processes it starts and
stops, waiting for a gRPC server, and switching the simulated card in the reader."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.common.profile import credit_code_check_char
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

DEMO_PIN = "88888888"
# One enterprise, three cards: its operator card saves, its declarant card declares, its
# legal-person card grants.
DEMO_CUSTOMS_CODE = "4403960001"
DEMO_CREDIT_CODE = "91440300MA5DXW801" + credit_code_check_char("91440300MA5DXW801")


def bin_path(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextlib.contextmanager
def running_process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_serving(socket: Path, timeout: float = 20, *, what: str = "eportd") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket.exists():
            with grpc.insecure_channel(f"unix:{socket}") as channel, \
                    contextlib.suppress(grpc.RpcError):
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start; see its log")


def swap_card(stub: pb_grpc.CardServiceStub, control: Path, image: Path) -> None:
    """Another card into the reader, as a person switches cards (seed 003 十一(二))."""
    for words in (["remove"], ["insert", str(image)]):
        subprocess.run([bin_path("eport-sim"), "ctl", "--control", str(control), words[0],
                        "--slot", "0", *words[1:]], check=True, stdout=subprocess.DEVNULL)
    wanted = json.loads(image.read_text(encoding="utf-8"))["profile"]["card_id"]
    deadline = time.monotonic() + 15
    while not any(r.card_id == wanted for r in stub.ListReaders(pb.ListReadersRequest()).readers):
        if time.monotonic() > deadline:
            raise SystemExit("the other card never appeared in the reader")
        time.sleep(0.05)
