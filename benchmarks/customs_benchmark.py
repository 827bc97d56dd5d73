"""Customs declarations per second end to end: sign + submit + receipt, 1 and N clients.

    .venv/bin/python benchmarks/customs_benchmark.py [--rounds 100] [--clients 8]
                                                     [--algorithms sm2,rsa2048]

One simulated declarant card (vpcd slot 0, in a child process), the real pcscd, the real eportd
and the real eport-datacenter processes (SQLite file, review policy "accept"). The PIN is
verified once. One declaration is: a Save (暂存) request signed on the card through eportd and
sent to the data centre, a Declare (申报) request likewise, and the wait for its 审结 receipt on
a WatchReceipts stream. The peer in the same run is eportd alone signing the same payloads
(two signatures per declaration): "of card" is the share of the card-bound ceiling reached.
Prints median and p99 latency per declaration, declarations per second and that ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_benchmark import (
    card_in_slot,
    percentile,
    run_clients,
    start_pcscd_if_needed,
    stop_pcscd,
)

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.signing_algorithms import default_algorithm
from eport.common.customs.envelope import build_payload
from eport.common.profile import CardForm, CardKind
from eport.firmware_sim.ca import init_ca
from eport.firmware_sim.demo import vpcd_reader_name
from eport.firmware_sim.image import write_image_atomically
from eport.firmware_sim.provision import ProvisionRequest, provision_card
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import datacenter_pb2_grpc as dc_grpc
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc
from tests.support.customs_documents import valid_declaration
from tests.support.daemon_stack import start_daemon
from tests.support.datacenter_stack import start_datacenter

PIN = "88888888"
# Each card key's own algorithm, from the one table (cardlib.signing_algorithms).
CARD_ALGORITHM = {kind: pb.SignAlgorithm.Value(default_algorithm(KeyKind(kind)).value)
                  for kind in ("sm2", "rsa2048", "rsa1024", "p256")}


@dataclass
class Series:
    algorithm: str
    path: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class Card:
    """Signing through eportd, as the customs client does."""

    def __init__(self, socket: Path, algorithm: str) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket}")
        self.stub = pb_grpc.CardServiceStub(self.channel)
        info = self.stub.GetCardInfo(pb.CardSelector(), timeout=30)
        self.selector = pb.CardSelector(card_id=info.card_id)
        self.certificate = self.stub.GetCertificate(self.selector, timeout=30).der
        self.algorithm = CARD_ALGORITHM[algorithm]

    def sign(self, method: str, body: dict[str, Any]) -> dc.SignedRequest:
        payload = build_payload(method, body)
        answer = self.stub.Sign(pb.SignRequest(card=self.selector, data=payload,
                                               algorithm=self.algorithm), timeout=60)
        return dc.SignedRequest(payload=payload, signature=answer.signature,
                                certificate=self.certificate,
                                algorithm=dc.SignatureAlgorithm.ValueType(answer.algorithm))


class ReceiptWaiter:
    """One WatchReceipts stream; declarations wait for their 审结 receipt by unified number."""

    def __init__(self, stub: dc_grpc.DataCenterStub, card: Card) -> None:
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stream = stub.WatchReceipts(card.sign("WatchReceipts", {"after": 0}))
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _event(self, number: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(number, threading.Event())

    def _follow(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for receipt in self._stream:
                if receipt.kind in (dc.CLEARED_RECEIPT, dc.REJECTED_RECEIPT):
                    self._event(receipt.unified_number).set()

    def wait(self, number: str, timeout: float = 60) -> bool:
        return self._event(number).wait(timeout)

    def close(self) -> None:
        self._stream.cancel()


def timed(clients: int, rounds: int, work: Callable[[int, int], None]) -> Series:
    """`work(client, index)` from `clients` threads released together, each call timed; a
    failed call is recorded and the series goes on."""
    series = Series("", "", clients)
    lock = threading.Lock()

    def make_worker(client: int) -> Callable[[int], None]:
        def action(index: int) -> None:
            began = time.perf_counter()
            try:
                work(client, index)
            except (grpc.RpcError, RuntimeError) as error:
                with lock:
                    series.errors.append(str(error)[:200])
                return
            with lock:
                series.latencies.append(time.perf_counter() - began)
        return action

    series.seconds = run_clients(clients, rounds, make_worker)
    return series


def bench(algorithm: str, card: Card, centre: dc_grpc.DataCenterStub, clients: int,
          rounds: int) -> tuple[Series, Series]:
    waiter = ReceiptWaiter(centre, card)
    documents = [[valid_declaration("import") for _ in range(rounds)] for _ in range(clients)]

    def declare(client: int, index: int) -> None:
        saved = centre.Save(card.sign("Save", {"document": documents[client][index]}),
                            timeout=60)
        declared = centre.Declare(card.sign("Declare", {"number": saved.temporary_number}),
                                  timeout=60)
        if not waiter.wait(declared.unified_number):
            raise RuntimeError(f"no receipt for {declared.unified_number}")

    try:
        through = timed(clients, rounds, declare)
    finally:
        waiter.close()
    through.algorithm, through.path = algorithm, "declare"

    def sign_twice(client: int, index: int) -> None:
        body = {"document": documents[client][index]}
        card.sign("Save", body)
        card.sign("Declare", {"number": "Z" + "0" * 18})

    peer = timed(clients, rounds, sign_twice)
    peer.algorithm, peer.path = algorithm, "eportd: 2 signatures"
    return through, peer


def provision(workdir: Path, algorithm: str) -> tuple[Path, Path]:
    ca = init_ca(workdir / "ca")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    image = provision_card(ca, ProvisionRequest(
        kind=CardKind.DECLARANT, form=CardForm.IC, algorithm=algorithm, not_before=start,
        not_after=start + timedelta(days=730), kdf_iterations=500))
    path = workdir / f"{algorithm}.json"
    write_image_atomically(path, image)
    return ca.trust_bundle, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="declarations per client")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--algorithms", default="sm2,rsa2048",
                        help=f"comma-separated of {', '.join(CARD_ALGORITHM)}")
    args = parser.parse_args()
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if not algorithms or set(algorithms) - set(CARD_ALGORITHM):
        parser.error(f"--algorithms: choose from {', '.join(CARD_ALGORITHM)}")
    if min(args.rounds, args.clients) < 1:
        parser.error("--rounds and --clients must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rows: list[tuple[Series, Series]] = []
    with tempfile.TemporaryDirectory(prefix="eport-customs-bench-") as temp, \
            contextlib.ExitStack() as cleanup:
        workdir = Path(temp)
        cleanup.callback(stop_pcscd, start_pcscd_if_needed(vpcd_reader_name(0)))
        print(f"{args.rounds} declarations per client, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        for algorithm in algorithms:
            trust_bundle, image = provision(workdir / algorithm, algorithm)
            with card_in_slot(image, 0, None):
                daemon = start_daemon(workdir / algorithm / "run", "--trust-anchor",
                                      str(trust_bundle))
                centre = start_datacenter(workdir / algorithm / "dc", trust_bundle)
                try:
                    card = Card(daemon.socket, algorithm)
                    card.stub.VerifyPin(pb.VerifyPinRequest(card=card.selector, pin=PIN),
                                        timeout=30)
                    stub = centre.stub()
                    for clients in sorted({1, args.clients}):
                        print(f"{algorithm}: {clients} client(s) ...", flush=True)
                        rows.append(bench(algorithm, card, stub, clients, args.rounds))
                    card.channel.close()
                finally:
                    centre.stop()
                    daemon.stop()
    print()
    print("| card | clients | declarations | p50 ms | p99 ms | decl/s | eportd sig/s | "
          "of card ceiling | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    failed = 0
    for through, peer in rows:
        ceiling = peer.per_second  # the same two signatures per declaration, nothing else
        share = through.per_second / ceiling if ceiling else 0.0
        print(f"| {through.algorithm} | {through.clients} | {len(through.latencies)} | "
              f"{percentile(through.latencies, 0.5) * 1000:.1f} | "
              f"{percentile(through.latencies, 0.99) * 1000:.1f} | "
              f"{through.per_second:.1f} | {peer.per_second * 2:.1f} | {share:.2f} | "
              f"{len(through.errors) + len(peer.errors)} |")
        failed += len(through.errors) + len(peer.errors)
        if through.errors:
            print(f"  first errors: {through.errors[:3]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
