"""Signatures per second over wss (61231's TLS endpoint) against ws, on the same simulated card,
the same eportd and the same eport-gateway process, in one run.

    .venv/bin/python benchmarks/gateway_tls_benchmark.py [--rounds 200] [--blocks 6]
        [--algorithms rsa2048,sm2] [--clients 4]

The certificate is made by `tls install` (in-process) under a temporary HOME, so the gateway
serves wss with exactly what a user gets. The client connects to wss://wss.singlewindow.cn
(resolved to 127.0.0.1 by the client, checked against the CA as a browser checks it) and sends
the Origin of a Single Window page, on both schemes. The series alternate, block by block
(ws, wss, then wss, ws, ...), so that a drifting machine load falls on both alike. Three
shapes of client: one persistent connection (the page library, the Python wrapper),
N persistent connections with requests in flight, and a new connection per signature (the
Java wrapper), where the TLS handshake is paid every time. Prints median and p99 latency,
signatures per second and the wss / ws throughput ratio (the target: TLS costs at most 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_benchmark import percentile, provision, start_pcscd_if_needed, stop_pcscd
from gateway_benchmark import (
    Tally,
    Verifier,
    add_card_arguments,
    chosen_algorithms,
    exit_status,
    sign_over_socket,
    signing_stack,
)

from eport.clients.gateway.tls_setup import TlsPaths, install
from eport.firmware_sim.demo import vpcd_reader_name

ORIGIN = "https://www.singlewindow.cn"
HOST_NAME = "wss.singlewindow.cn"
IN_FLIGHT_PER_CONNECTION = 4
SHAPES = ("1 connection", "N connections", "connection per call")


@dataclass
class Totals(Tally):
    algorithm: str
    shape: str
    scheme: str
    clients: int


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    port: int
    tls: ssl.SSLContext | None

    def connect_arguments(self) -> tuple[str, dict[str, Any]]:
        if self.tls is None:
            return f"ws://127.0.0.1:{self.port}", {}
        # The name a page uses, checked against the CA; the address this machine would map
        # it to with the hosts line.
        return (f"wss://{HOST_NAME}:{self.port}",
                {"ssl": self.tls, "host": "127.0.0.1", "server_hostname": HOST_NAME})


async def _greeted(endpoint: Endpoint) -> Any:
    uri, arguments = endpoint.connect_arguments()
    # proxy=None: a proxy from the environment must not carry (or slow) a loopback call.
    socket = await connect(uri, origin=ORIGIN, max_size=None, proxy=None,  # type: ignore[arg-type]
                           **arguments)
    greeting = json.loads(await socket.recv())
    assert greeting["_method"] == "open", greeting
    return socket


async def _block(endpoint: Endpoint, totals: Totals, shape: str, clients: int, rounds: int,
                 first_number: int, verifier: Verifier, verify_every: int) -> None:
    """One block of `rounds` signatures per client; the clock runs from the first request
    (for per-call connections, from the first connect: the handshake is what is measured)."""
    numbers = [[first_number + client * rounds + i for i in range(rounds)]
               for client in range(clients)]
    if shape == "connection per call":
        started = time.perf_counter()
        for number in numbers[0]:
            began, answered = time.perf_counter(), len(totals.latencies)
            socket = await _greeted(endpoint)
            try:
                await sign_over_socket(socket, totals, totals.scheme, [number], 1, verifier,
                                       verify_every)
            finally:
                await socket.close()
            if len(totals.latencies) > answered:
                # A per-call client's latency includes its connect, handshake and greeting.
                totals.latencies[-1] = time.perf_counter() - began
        totals.seconds += time.perf_counter() - started
        return
    sockets = [await _greeted(endpoint) for _ in range(clients)]
    window = 1 if clients == 1 else IN_FLIGHT_PER_CONNECTION
    try:
        started = time.perf_counter()
        await asyncio.gather(*(sign_over_socket(socket, totals, totals.scheme, mine, window,
                                                verifier, verify_every)
                               for socket, mine in zip(sockets, numbers, strict=True)))
        totals.seconds += time.perf_counter() - started
    finally:
        for socket in sockets:
            await socket.close()


async def _compare(algorithm: str, endpoints: tuple[Endpoint, Endpoint], args: argparse.Namespace,
                   verifier: Verifier) -> list[Totals]:
    results = []
    next_number = 0
    for endpoint in endpoints:  # warm up: first connections, caches, the card's first job
        await _block(endpoint, Totals(algorithm, "warm-up", endpoint.scheme, 1), "1 connection",
                     1, 10, next_number, verifier, args.verify_every)
        next_number += 10
    for shape in SHAPES:
        clients = args.clients if shape == "N connections" else 1
        rounds = args.rounds if shape != "connection per call" else max(args.rounds // 2, 1)
        by_scheme = {endpoint.scheme: Totals(algorithm, shape, endpoint.scheme, clients)
                     for endpoint in endpoints}
        print(f"{algorithm}: {shape} ({clients} client(s)) ...", flush=True)
        for block in range(args.blocks):
            order = endpoints if block % 2 == 0 else endpoints[::-1]
            for endpoint in order:
                await _block(endpoint, by_scheme[endpoint.scheme], shape, clients, rounds,
                             next_number, verifier, args.verify_every)
                next_number += clients * rounds
        results += list(by_scheme.values())
    return results


def _row(totals: Totals, ws: Totals | None) -> str:
    if not totals.latencies:
        return (f"| {totals.algorithm} | {totals.shape} | {totals.scheme} | 0 | | | | | "
                f"{len(totals.errors)} (first: {totals.errors[:1]}) |")
    ratio = f"{totals.per_second / ws.per_second:.3f}" if ws and ws.per_second else ""
    return (f"| {totals.algorithm} | {totals.shape} | {totals.scheme} | {len(totals.latencies)} "
            f"| {percentile(totals.latencies, 0.5) * 1000:.2f} "
            f"| {percentile(totals.latencies, 0.99) * 1000:.2f} | {totals.per_second:.1f} "
            f"| {ratio} | {len(totals.errors)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200,
                        help="signatures per client and block (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=6,
                        help="alternating blocks per scheme and shape (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4,
                        help="connections of the concurrent shape (default: %(default)s)")
    add_card_arguments(parser, "rsa2048,sm2")
    args = parser.parse_args()
    algorithms = chosen_algorithms(parser, args.algorithms)
    if min(args.rounds, args.blocks, args.clients, args.verify_every) < 1:
        parser.error("--rounds, --blocks, --clients and --verify-every must be at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    reader = vpcd_reader_name(args.slot)
    rows: list[Totals] = []
    with tempfile.TemporaryDirectory(prefix="eport-tlsbench-") as temp, \
            contextlib.ExitStack() as cleanup:
        workdir = Path(temp)
        home = workdir / "home"
        home.mkdir()
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        paths = TlsPaths(home / ".config" / "eport" / "gateway-tls", home / ".pki" / "nssdb")
        install(paths)
        client_tls = ssl.create_default_context(cafile=str(paths.tls_dir / "ca.pem"))
        cleanup.callback(stop_pcscd, start_pcscd_if_needed(reader))
        trust_bundle, cards = provision(workdir / "ca", workdir, algorithms)
        print(f"{args.rounds} rounds per client and block, {args.blocks} blocks per scheme, "
              f"{args.clients} concurrent connections, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        for algorithm in algorithms:
            with signing_stack(workdir, algorithm, cards[algorithm], trust_bundle, args.slot,
                               env) as (verifier, _daemon, gateway):
                if gateway.wss_url is None:
                    print("the gateway serves no wss:\n" + gateway.log())
                    return 1
                endpoints = (Endpoint("ws", gateway.port, None),
                             Endpoint("wss", gateway.tls_port, client_tls))
                rows += asyncio.run(_compare(algorithm, endpoints, args, verifier))
    print()
    print("| algorithm | client | scheme | signatures | p50 ms | p99 ms | sig/s | wss / ws | "
          "errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    ws_of = {(t.algorithm, t.shape): t for t in rows if t.scheme == "ws"}
    for totals in rows:
        print(_row(totals, ws_of.get((totals.algorithm, totals.shape))
                   if totals.scheme == "wss" else None))
    print(f"\n{sum(t.verified for t in rows)} signatures verified on the host, all valid.")
    for totals in rows:
        ws = ws_of[(totals.algorithm, totals.shape)]
        if totals.scheme == "wss" and totals.per_second and ws.per_second:
            overhead = (ws.per_second / totals.per_second - 1) * 100
            print(f"{totals.algorithm}, {totals.shape}: TLS adds {overhead:.1f} % to the time "
                  f"per signature ({totals.per_second:.1f} against {ws.per_second:.1f} sig/s; "
                  f"target: at most 10 %)")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
