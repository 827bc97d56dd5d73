"""Data-centre declarations per second end to end, by database, clients and processes.

    .venv/bin/python benchmarks/datacenter_scale.py [--per-client 20] [--clients 1,8,32]
                                                    [--processes 1,2] [--backends sqlite,postgresql]

One declaration is: sign a Save (暂存) request with the card's key in software (as the tests'
SigningCard does: this measures the data centre, not a card), submit it, sign and submit its
Declare (申报), and wait for its 审结 receipt on a WatchReceipts stream of the process the client
talks to. Clients are threads, spread round-robin over the data-centre processes (real
`eport-datacenter serve` subprocesses on Unix sockets, review policy "accept", no review
delay), all on one database: a SQLite file, or a PostgreSQL server of its own (started by
tests/support/postgres_server.py, as the postgres test tier does). Prints, per configuration,
declarations per second and the median and p99 latency of one declaration.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon_benchmark import percentile, run_clients

from eport.common.profile import CardKind
from eport.firmware_sim.ca import init_ca
from eport.protos.v1 import datacenter_pb2 as pb
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_stack import (
    DataCenterProcess,
    SigningCard,
    make_signing_card,
    start_datacenter,
)


@dataclass(frozen=True)
class Row:
    backend: str
    processes: int
    clients: int
    declarations: int
    seconds: float
    latencies: list[float]

    def line(self) -> str:
        median = percentile(self.latencies, 0.5) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        return (f"{self.backend:<11}{self.processes:>6}{self.clients:>8}"
                f"{self.declarations:>8}{self.declarations / self.seconds:>10.1f}"
                f"{median:>11.1f}{p99:>11.1f}")


HEADER = (f"{'database':<11}{'procs':>6}{'clients':>8}{'decls':>8}{'decl/s':>10}"
          f"{'median ms':>11}{'p99 ms':>11}")


class ClearedWaiter:
    """One WatchReceipts stream on a process; clients wait for their number's 审结 on it."""

    def __init__(self, process: DataCenterProcess, card: SigningCard) -> None:
        self._condition = threading.Condition()
        self._cleared: set[str] = set()
        self._stream = process.stub().WatchReceipts(card.request("WatchReceipts",
                                                                 {"after": 0}))
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for receipt in self._stream:
                if receipt.kind == pb.CLEARED_RECEIPT:
                    with self._condition:
                        self._cleared.add(receipt.temporary_number)
                        self._condition.notify_all()

    def wait(self, number: str, timeout: float = 60.0) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: number in self._cleared, timeout):
                raise TimeoutError(f"no 审结 receipt for {number} within {timeout} s")

    def close(self) -> None:
        self._stream.cancel()


@contextlib.contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    """The --db value of a fresh database."""
    if backend == "sqlite":
        yield str(directory / "datacenter.sqlite3")
        return
    from tests.support.postgres_server import start_postgres

    server = start_postgres(directory / "postgres")
    try:
        yield str(server.url("benchmark"))
    finally:
        server.remove()


def measure(backend: str, processes: int, clients: int, per_client: int,
            trust_anchor: Path, operator: SigningCard, declarant: SigningCard) -> Row:
    with tempfile.TemporaryDirectory(prefix="dc-bench-") as temporary, \
            database(backend, Path(temporary)) as db:
        started = [start_datacenter(Path(temporary) / f"p{index}", trust_anchor, "--db", db,
                                    "--log-level", "WARNING")
                   for index in range(processes)]
        waiters = [ClearedWaiter(process, operator) for process in started]
        latencies: list[float] = []
        lock = threading.Lock()

        def make_worker(client: int) -> Callable[[int], None]:
            process = started[client % processes]
            stub = process.stub()
            waiter = waiters[client % processes]

            def declare_one(_round: int) -> None:
                began = time.perf_counter()
                saved = stub.Save(operator.request("Save", {"document": valid_declaration()}))
                stub.Declare(declarant.request("Declare", {"number": saved.temporary_number}))
                waiter.wait(saved.temporary_number)
                with lock:
                    latencies.append(time.perf_counter() - began)

            return declare_one

        try:
            seconds = run_clients(clients, per_client, make_worker)
        finally:
            for waiter in waiters:
                waiter.close()
            for process in started:
                process.stop()
        if len(latencies) != clients * per_client:  # a client thread failed (printed above)
            raise RuntimeError(f"{backend}, {processes} process(es), {clients} clients: only "
                               f"{len(latencies)} of {clients * per_client} declarations done")
        return Row(backend, processes, clients, clients * per_client, seconds, latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-client", type=int, default=20,
                        help="declarations each client makes")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dc-bench-ca-") as ca_directory:
        ca = init_ca(Path(ca_directory))
        operator = make_signing_card(ca, CardKind.OPERATOR)
        declarant = make_signing_card(ca, CardKind.DECLARANT)
        # Warm-up: the first request of a process pays for imports and certificate caches.
        measure("sqlite", 1, 1, 3, ca.trust_bundle, operator, declarant)
        print(HEADER, flush=True)
        for backend in options.backends.split(","):
            for processes in (int(p) for p in options.processes.split(",")):
                for clients in (int(c) for c in options.clients.split(",")):
                    row = measure(backend, processes, clients, options.per_client,
                                  ca.trust_bundle, operator, declarant)
                    print(row.line(), flush=True)


if __name__ == "__main__":
    main()
