"""What eport-demo's steps share: the installed scripts, step headings, processes it starts and
stops, waiting for a gRPC server, waiting for one of its cards and switching the simulated card
in the reader, and DemoError, the one-line bilingual failure."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.common.failure import EportFailure
from eport.common.profile import credit_code_check_char
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

DEMO_PIN = "88888888"
# One enterprise, three cards: its operator card saves, its declarant card declares, its
# legal-person card grants.
DEMO_CUSTOMS_CODE = "4403960001"
DEMO_CREDIT_CODE = "91440300MA5DXW801" + credit_code_check_char("91440300MA5DXW801")
CARD_WAIT_S = 15


class DemoError(EportFailure):
    """A failure the demo reports as one line in Chinese and English, with an exit code; the
    line says what to do when there is something to do."""

    code = "DEMO_FAILED"
    remedy = Bilingual("", "")

    def __init__(self, message: Bilingual, exit_code: int = 1) -> None:
        super().__init__(f"{message.zh} / {message.en}")
        self.message = message
        self.exit_code = exit_code


def bin_path(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextlib.contextmanager
def running_process(args: list[str], log: Path, env: dict[str, str] | None = None
                    ) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env)
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
    raise DemoError(Bilingual(f"{what} 未能启动", f"{what} did not start; see its log"))


def card_id_of(image: Path) -> str:
    card_id: str = json.loads(image.read_text(encoding="utf-8"))["profile"]["card_id"]
    return card_id


def wait_for_card(stub: pb_grpc.CardServiceStub, reader: str, card_id: str) -> None:
    """Until eportd has read the card `card_id` in `reader` (never another card)."""
    deadline = time.monotonic() + CARD_WAIT_S
    while not any(r.name == reader and r.card_id == card_id
                  for r in stub.ListReaders(pb.ListReadersRequest()).readers):
        if time.monotonic() > deadline:
            raise DemoError(
                Bilingual(f"演示卡 {card_id} 没有出现在读卡器 {reader} 中",
                          f"the demo card {card_id} never appeared in {reader!r}; is "
                          "vsmartcard-vpcd installed? Remedy: scripts/setup.sh"))
        time.sleep(0.05)


@dataclass(frozen=True)
class DemoReader:
    """The vpcd slot the demo's simulator uses and pcscd's name for it."""

    slot: int
    name: str
    control: Path  # the simulator's control socket


def swap_card(stub: pb_grpc.CardServiceStub, reader: DemoReader, image: Path) -> str:
    """Another card into the reader, as a person switches cards (QP FAQ §十一(二)); returns
    its card id once eportd has read it."""
    for words in (["remove"], ["insert", str(image)]):
        subprocess.run([bin_path("eport-sim"), "ctl", "--control", str(reader.control),
                        words[0], "--slot", str(reader.slot), *words[1:]], check=True,
                       stdout=subprocess.DEVNULL)
    wanted = card_id_of(image)
    wait_for_card(stub, reader.name, wanted)
    return wanted
