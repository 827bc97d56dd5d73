"""Signatures per second through eport-gateway against eportd directly, in the same run.

    .venv/bin/python benchmarks/gateway_benchmark.py [--rounds 400] [--algorithms rsa2048,sm2]

One simulated card (vpcd slot 0, in a child process), the real pcscd, the real eportd and the
real eport-gateway processes. The PIN is verified once; then, per algorithm, four series run
in turn: eportd over gRPC with 1 client, the gateway with 1 websocket connection, eportd with
N clients (threads) and the gateway with N connections (each keeping requests in flight).
Distinct data for every signature; every `--verify-every`-th signature is verified on the host
against the card's certificate. Prints median and p99 latency, signatures per second, and the
gateway's throughput as a ratio of eportd's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_benchmark import (
    card_in_slot,
    percentile,
    provision,
    start_pcscd_if_needed,
    stop_pcscd,
)

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.signing_algorithms import e_port_client_algorithm
from eport.common import sm2
from eport.common.sm2_cert import certificate_public_point
from eport.firmware_sim.demo import vpcd_reader_name
from eport.firmware_sim.image import read_image
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc
from tests.support.daemon_stack import Daemon, start_daemon
from tests.support.gateway_stack import Gateway, start_gateway

PIN = "88888888"
# What the gateway signs with, as the E-port client does (SHA1withRSA on every RSA card).
SIGN_ALGORITHM = {kind: pb.SignAlgorithm.Value(e_port_client_algorithm(KeyKind(kind)).value)
                  for kind in ("rsa2048", "rsa1024", "sm2")}
IN_FLIGHT_PER_CONNECTION = 4


@dataclass(kw_only=True)
class Tally:
    """What a series of signatures counts (Series here, the TLS benchmark's Totals)."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    verified: int = 0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


@dataclass
class Series(Tally):
    algorithm: str
    path: str
    clients: int

    def row(self, peer: Series | None) -> str:
        if not self.latencies:
            return f"| {self.algorithm} | {self.path} | {self.clients} | 0 | | | | | " \
                   f"{len(self.errors)} (first: {self.errors[:1]}) |"
        ratio = f"{self.per_second / peer.per_second:.2f}" if peer and peer.per_second else ""
        return (f"| {self.algorithm} | {self.path} | {self.clients} | {len(self.latencies)} | "
                f"{percentile(self.latencies, 0.5) * 1000:.2f} | "
                f"{percentile(self.latencies, 0.99) * 1000:.2f} | {self.per_second:.1f} | "
                f"{ratio} | {len(self.errors)} |")


class Verifier:
    def __init__(self, algorithm: str, certificate_der: bytes) -> None:
        self.algorithm = algorithm
        self.certificate_der = certificate_der
        if algorithm != "sm2":
            key = x509.load_der_x509_certificate(certificate_der).public_key()
            assert isinstance(key, rsa.RSAPublicKey)
            self.rsa_key = key

    def check(self, data: bytes, signature: bytes) -> None:
        if self.algorithm == "sm2":
            point = certificate_public_point(self.certificate_der)
            r, s = sm2.decode_raw_signature(signature)
            if not sm2.verify_message(point, data, r, s):
                raise AssertionError("SM2 signature does not verify")
        else:
            self.rsa_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())


def _data(tag: str, number: int) -> bytes:
    body = hashlib.sha256(str(number).encode()).hexdigest()
    return f"<ceb:Message seq='{number}' tag='{tag}'>{body}</ceb:Message>".encode()


def add_card_arguments(parser: argparse.ArgumentParser, algorithms: str) -> None:
    """--algorithms (default `algorithms`), --verify-every and --slot."""
    parser.add_argument("--algorithms", default=algorithms,
                        help="comma-separated of rsa2048, rsa1024, sm2 (default: %(default)s)")
    parser.add_argument("--verify-every", type=int, default=25)
    parser.add_argument("--slot", type=int, default=0)


def chosen_algorithms(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated --algorithms, each one that SIGN_ALGORITHM knows."""
    algorithms = [a.strip() for a in text.split(",") if a.strip()]
    if not algorithms or set(algorithms) - set(SIGN_ALGORITHM):
        parser.error(f"--algorithms: choose from {', '.join(SIGN_ALGORITHM)}")
    return algorithms


@contextlib.contextmanager
def signing_stack(workdir: Path, algorithm: str, card: Path, trust_bundle: Path, slot: int,
                  gateway_env: dict[str, str] | None = None
                  ) -> Iterator[tuple[Verifier, Daemon, Gateway]]:
    """The card in its vpcd slot, eportd trusting the test CA with the PIN verified once, and
    eport-gateway on that eportd; a Verifier for the card's signatures."""
    verifier = Verifier(algorithm, read_image(card).certificate)
    with card_in_slot(card, slot, None):
        daemon = start_daemon(workdir / f"run-{algorithm}", "--trust-anchor", str(trust_bundle))
        try:
            with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
                pb_grpc.CardServiceStub(channel).VerifyPin(pb.VerifyPinRequest(pin=PIN),
                                                           timeout=30)
            gateway = start_gateway(daemon.socket, env=gateway_env)
            try:
                yield verifier, daemon, gateway
            finally:
                gateway.stop()
        finally:
            daemon.stop()


async def sign_over_socket(socket: Any, tally: Tally, tag: str, numbers: Iterable[int],
                           window: int, verifier: Verifier, verify_every: int) -> None:
    """Sign one distinct message per number through a greeted gateway connection, keeping up
    to `window` requests in flight; every `verify_every`-th signature is checked here."""
    pending: dict[int, tuple[bytes, float]] = {}
    queue = list(numbers)
    while queue or pending:
        while queue and len(pending) < window:
            number = queue.pop(0)
            data = _data(tag, number)
            pending[number] = (data, time.perf_counter())
            await socket.send(json.dumps({"_method": "cus-sec_SpcSignDataAsPEM",
                                          "_id": number, "args": {"inData": data.decode()}}))
        answer = json.loads(await socket.recv())
        data, started = pending.pop(answer["_id"])
        if not answer["_args"]["Result"]:
            tally.errors.append(answer["_args"]["Error"][1])
            continue
        tally.latencies.append(time.perf_counter() - started)
        if answer["_id"] % verify_every == 0:
            verifier.check(data, base64.b64decode(answer["_args"]["Data"][0]))
            tally.verified += 1


def exit_status(tallies: Iterable[Tally]) -> int:
    """1 (with the first errors printed) when any signature failed, else 0."""
    failed = [e for tally in tallies for e in tally.errors]
    if failed:
        print(f"errors: {len(failed)}, first: {failed[:5]}")
        return 1
    return 0


def bench_eportd(algorithm: str, socket: Path, clients: int, rounds: int, verifier: Verifier,
                 verify_every: int) -> Series:
    series = Series(algorithm, "eportd", clients)
    lock = threading.Lock()
    counter = itertools.count()
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = pb_grpc.CardServiceStub(channel)
            barrier.wait()
            for _ in range(rounds):
                number = next(counter)
                data = _data(f"d{index}", number)
                started = time.perf_counter()
                try:
                    answer = stub.Sign(pb.SignRequest(data=data,
                                                      algorithm=SIGN_ALGORITHM[algorithm]),
                                       timeout=60)
                except grpc.RpcError as error:
                    with lock:
                        series.errors.append(str(error.code()))
                    continue
                elapsed = time.perf_counter() - started
                signature = answer.signature_raw_rs or answer.signature
                if number % verify_every == 0:
                    verifier.check(data, signature)
                    with lock:
                        series.verified += 1
                with lock:
                    series.latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    series.seconds = time.perf_counter() - started
    return series


async def _gateway_connection(url: str, index: int, rounds: int, series: Series,
                              verifier: Verifier, verify_every: int,
                              start: asyncio.Event) -> None:
    async with connect(url, max_size=None) as socket:
        greeting = json.loads(await socket.recv())
        assert greeting["_method"] == "open", greeting
        await start.wait()
        window = 1 if series.clients == 1 else IN_FLIGHT_PER_CONNECTION
        await sign_over_socket(socket, series, f"g{index}",
                               range(index * rounds, (index + 1) * rounds), window, verifier,
                               verify_every)


async def _bench_gateway(algorithm: str, url: str, clients: int, rounds: int,
                         verifier: Verifier, verify_every: int) -> Series:
    series = Series(algorithm, "gateway", clients)
    start = asyncio.Event()
    tasks = [asyncio.create_task(_gateway_connection(url, i, rounds, series, verifier,
                                                     verify_every, start))
             for i in range(clients)]
    await asyncio.sleep(0.5)  # every connection greeted before the clock starts
    started = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    series.seconds = time.perf_counter() - started
    return series


def bench_gateway(algorithm: str, url: str, clients: int, rounds: int, verifier: Verifier,
                  verify_every: int) -> Series:
    return asyncio.run(_bench_gateway(algorithm, url, clients, rounds, verifier, verify_every))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=400,
                        help="signatures per client and series (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8,
                        help="connections / clients of the concurrent series (default: 8)")
    add_card_arguments(parser, "rsa2048")
    args = parser.parse_args()
    algorithms = chosen_algorithms(parser, args.algorithms)
    if min(args.rounds, args.clients, args.verify_every) < 1:
        parser.error("--rounds, --clients and --verify-every must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    reader = vpcd_reader_name(args.slot)
    rows: list[tuple[Series, Series | None]] = []
    with tempfile.TemporaryDirectory(prefix="eport-gwbench-") as temp, \
            contextlib.ExitStack() as cleanup:
        workdir = Path(temp)
        cleanup.callback(stop_pcscd, start_pcscd_if_needed(reader))
        trust_bundle, cards = provision(workdir / "ca", workdir, algorithms)
        print(f"{args.rounds} rounds per client, {args.clients} concurrent clients, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        for algorithm in algorithms:
            with signing_stack(workdir, algorithm, cards[algorithm], trust_bundle,
                               args.slot) as (verifier, daemon, gateway):
                for clients in (1, args.clients):
                    print(f"{algorithm}: {clients} client(s) ...", flush=True)
                    direct = bench_eportd(algorithm, daemon.socket, clients, args.rounds,
                                          verifier, args.verify_every)
                    through = bench_gateway(algorithm, gateway.url, clients, args.rounds,
                                            verifier, args.verify_every)
                    rows += [(direct, None), (through, direct)]
    print()
    print("| algorithm | path | clients | signatures | p50 ms | p99 ms | sig/s | "
          "gateway / eportd | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for series, peer in rows:
        print(series.row(peer))
    verified = sum(series.verified for series, _ in rows)
    print(f"\n{verified} signatures verified on the host, all valid.")
    for series, peer in rows:
        if peer is not None and peer.per_second:
            overhead = (peer.per_second / series.per_second - 1) * 100
            print(f"{series.algorithm}, {series.clients} client(s): the gateway adds "
                  f"{overhead:.1f} % to the time per signature "
                  f"({series.per_second:.1f} against {peer.per_second:.1f} sig/s)")
    return exit_status(series for series, _ in rows)


if __name__ == "__main__":
    sys.exit(main())
