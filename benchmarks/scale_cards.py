"""Scale: K slow simulated cards signing at once, through eportd and eport-gateway.

    flock /tmp/eport-pcsc.lock .venv/bin/python benchmarks/scale_cards.py [--signatures 40]

Run it under `flock /tmp/eport-pcsc.lock` for the whole run: it restarts pcscd with 8 vpcd
slots (tests/support/pcsc_stack.py, more_vpcd_slots), which every other PC/SC user of the machine
shares. It needs a pcscd it may restart (none running, or one it starts itself).

What it does: provisions 8 RSA-2048 cards (its own test CA), puts them into vpcd slots 0-7 in a
child process, starts eportd on its own socket, verifies 88888888 on each of these cards (and
on no other), then
- measures N undelayed signatures on one card (the card's own time without the delay);
- makes GENERAL AUTHENTICATE (INS 87) take 250 ms on every card (the simulator's per-instruction
  delay, as `eport-sim ctl delay --ins 87` sets it): a USB key signs about 250 a minute
  (202205 crypto guide), so one card gives at most 4 signatures/s;
- for K = 1, 2, 4, 8: K client threads, one per card, each signing N messages through eportd's
  gRPC API naming its card by card id; then the same through eport-gateway's websocket API
  (cus-sec_SpcSignDataAsPEM). A gateway serves one card (`--reader`; DaemonAccess has one
  selector and the E-port client's API names no card), so K gateways run, one per card, one
  websocket connection each, all on the same eportd.
Per signature, the card's own time is measured on the simulator side: every APDU the slot
answers is timed there (injected delay plus execution) on CLOCK_MONOTONIC, which the client shares,
and the APDU time of that card inside the signature's window is subtracted from the latency the
client saw. Overhead = client latency − card time: gRPC, eportd, pcscd, vpcd and the gateway.
Every signature is verified on the host (outside the clock). Then the PKCS#11 part
(benchmarks/scale_pkcs11.py): SoftHSM2 RSA-2048 and P-256, in-process PyKCS11 against eportd's
PKCS#11 backend.

`--pkcs11-only` runs the PKCS#11 part alone (eportd with only that backend: no pcscd, no lock).
About 2 minutes in all.

Figures (2026-12-05, 2 CPUs, load under 1, N=40, one client per card; overhead = latency −
card time, p50/p99 ms):
    K  eportd sig/s (target)  overhead     | PC/SC alone  overhead    | gateway  overhead
    1   3.94 (3.8)  pass      2.72 / 3.97  |  3.97  1.11 / 1.72  |  3.94 pass  3.27 / 7.00
    2   7.88 (7.6)  pass      3.10 / 5.00  |  7.92  0.97 / 2.10  |  7.84 pass  4.08 / 8.41
    4  15.56 (15.2) pass      5.18 / 8.38  | 15.82  1.63 / 3.79  | 15.62 pass  4.52 / 25.82
    8  30.79 (30.4) pass      7.31 / 13.50 | 31.47  1.40 / 9.86  | 30.83 pass  6.52 / 17.61
  Undelayed, one card: overhead 1.33 ms p50 through eportd, 0.38 ms straight through PC/SC
  (eportd's share 0.95 ms); a call eportd answers from its cache costs 0.72 ms (gRPC's Python
  server and the socket relay). The 1 ms p50 target is missed with the delay on: PC/SC alone
  already costs about 1.1 ms then (every thread and process hop wakes an idle CPU), and eportd
  adds 1.6 ms at K = 1.
  Before 2026-12-05 the simulator's RSA step ran on Python's pow() (about 8 ms of host CPU per
  signature; GMP now, under 1 ms). Eight cards in step then crowded the two CPUs, their own
  time grew to 265-268 ms through eportd, and K = 8 made 28.55-28.66 sig/s (FAIL); each caller
  now also runs its card job itself when the card is free (two thread hand-offs fewer).
  SoftHSM2, one client, through eportd's PKCS#11 host process: RSA-2048 380.3 sig/s against
  730.7 in-process (0.520, +1.26 ms p50); P-256 634.6 against 5445.5 (0.117, +1.35 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_benchmark import percentile
from gateway_benchmark import Verifier
from scale_pkcs11 import (
    bench_in_process,
    bench_through_eportd,
    daemon_has_pkcs11,
    print_pkcs11_table,
)

from eport.cardlib.pcsc.backend import PcscBackend
from eport.cardlib.sign_mechanism import SignMechanism
from eport.firmware_sim.ca import init_ca
from eport.firmware_sim.image import load_card, read_image
from eport.firmware_sim.runner import CardFactory, SimulatorRunner, SlotRunner
from eport.firmware_sim.vpcd import VirtualCard, reader_name
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import Daemon, start_daemon
from tests.support.gateway_stack import Gateway, start_gateway
from tests.support.pcsc_stack import (
    Pcscd,
    more_vpcd_slots,
    start_pcscd_if_needed,
    wait_for_presence,
)

PIN = "88888888"  # only ever sent to the cards provisioned here
SLOTS = 8
GENERAL_AUTHENTICATE = 0x87
CARD_MS = 250.0
PER_CARD_TARGET = 1000.0 / CARD_MS  # 4 signatures/s
TARGET_SHARE = 0.95
OVERHEAD_TARGET_MS = 1.0
SIGN_METHOD = "/eport.v1.CardService/Sign"

Interval = tuple[float, float]


# ---- the cards: one child process, every APDU timed on the simulator's side ----

class TimedSlotRunner(SlotRunner):
    """A slot that records when it spent time on each APDU (injected delay plus execution)."""

    def __init__(self, slot: int, image_path: Path, factory: CardFactory) -> None:
        super().__init__(slot, image_path, factory)
        self.intervals: list[Interval] = []
        self._intervals_lock = threading.Lock()

    def _answer_apdu(self, card: VirtualCard, apdu: bytes) -> bytes | None:
        started = time.monotonic()
        try:
            return super()._answer_apdu(card, apdu)
        finally:
            with self._intervals_lock:
                self.intervals.append((started, time.monotonic()))

    def take_intervals(self) -> list[Interval]:
        with self._intervals_lock:
            taken, self.intervals = self.intervals, []
        return taken


def _serve_card(slot: int, image: str, commands: multiprocessing.connection.Connection) -> None:
    """The child: one card in `slot`, driven by (command, argument) messages. One process per
    card, so the cards do not share one interpreter (and its GIL) as real cards share nothing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    runner = SimulatorRunner(load_card)
    timed = runner.slots[slot] = TimedSlotRunner(slot, Path(image), load_card)
    runner.start()
    try:
        while True:
            command, argument = commands.recv()
            if command == "delay":
                timed.set_delay(argument, GENERAL_AUTHENTICATE)
                commands.send(True)
            elif command == "intervals":
                commands.send(timed.take_intervals())
            else:
                return
    finally:
        runner.stop()


class CardProcesses:
    """The cards, slot i holding images[i], each in its own process."""

    def __init__(self, images: list[Path]) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for slot, image in enumerate(images):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_serve_card, args=(slot, str(image), child_end),
                                      name=f"sim-card-{slot}", daemon=True)
            process.start()
            self._pipes.append(parent_end)
            self.processes.append(process)
        for slot in range(len(images)):
            wait_for_presence(reader_name(slot), True, timeout=30)

    def set_delay(self, milliseconds: float) -> None:
        for pipe in self._pipes:
            pipe.send(("delay", milliseconds))
            pipe.recv()

    def take_intervals(self) -> dict[int, list[Interval]]:
        taken: dict[int, list[Interval]] = {}
        for slot, pipe in enumerate(self._pipes):
            pipe.send(("intervals", None))
            taken[slot] = pipe.recv()
        return taken

    def stop(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


# ---- figures ----

@dataclass
class CardSeries:
    """Signatures made on one card: the client's window for each, and the card's time in it."""

    windows: list[Interval] = field(default_factory=list)
    card_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_signatures: int = 0

    def attribute(self, intervals: list[Interval]) -> None:
        """Card time per signature: the card's APDU time inside the signature's window."""
        starts = [start for start, _ in intervals]
        for began, ended in self.windows:
            inside = 0.0
            for start, end in intervals[max(0, bisect.bisect_left(starts, began) - 1):]:
                if start >= ended:
                    break
                inside += max(0.0, min(end, ended) - max(start, began))
            self.card_seconds.append(inside)


@dataclass
class Run:
    path: str  # "eportd", "gateway" or "pcsc" (no daemon: the floor any PC/SC program pays)
    cards: int
    cards_series: list[CardSeries]
    seconds: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per signature, per process
    daemon_ms: list[float] = field(default_factory=list)  # eportd's own duration_ms per Sign

    @property
    def signatures(self) -> int:
        return sum(len(s.windows) for s in self.cards_series)

    @property
    def per_second(self) -> float:
        return self.signatures / self.seconds if self.seconds else 0.0

    def overheads_ms(self) -> list[float]:
        return [(end - start - card) * 1000 for series in self.cards_series
                for (start, end), card in zip(series.windows, series.card_seconds, strict=True)]

    def card_ms(self) -> list[float]:
        return [card * 1000 for series in self.cards_series for card in series.card_seconds]

    def errors(self) -> list[str]:
        return [e for series in self.cards_series for e in series.errors]

    def bad_signatures(self) -> int:
        return sum(series.bad_signatures for series in self.cards_series)


def _message(path: str, card: int, index: int) -> bytes:
    return f"<ceb:Message via='{path}' card='{card}' seq='{index}'/>".encode()


# ---- the two paths ----

Signer = Callable[[bytes], bytes]


def _sign_in_threads(path: str, verifiers: list[Verifier], signatures: int,
                     open_signer: Callable[[int], contextlib.AbstractContextManager[Signer]],
                     ) -> tuple[list[CardSeries], float]:
    """One thread per card, each signing `signatures` messages one after another with the
    signer `open_signer(card)` gives it; the clock starts when every thread is ready."""
    series = [CardSeries() for _ in verifiers]
    barrier = threading.Barrier(len(verifiers) + 1)

    def client(card: int) -> None:
        mine = series[card]
        with open_signer(card) as sign:
            barrier.wait()
            for index in range(signatures):
                data = _message(path, card, index)
                began = time.monotonic()
                try:
                    signature = sign(data)
                except Exception as error:  # every failure is a figure here, not a crash
                    mine.errors.append(f"{type(error).__name__}: {error}")
                    continue
                mine.windows.append((began, time.monotonic()))
                try:
                    verifiers[card].check(data, signature)
                except Exception:
                    mine.bad_signatures += 1

    threads = [threading.Thread(target=client, args=(card,)) for card in range(len(verifiers))]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return series, time.monotonic() - began


def sign_through_eportd(socket: Path, card_ids: list[str], verifiers: list[Verifier],
                        signatures: int) -> tuple[list[CardSeries], float]:
    """Each card's client on a gRPC channel of its own, naming its card by card id."""
    @contextlib.contextmanager
    def signer(card: int) -> Iterator[Signer]:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            stub = pb_grpc.CardServiceStub(channel)
            selector = pb.CardSelector(card_id=card_ids[card])

            def sign(data: bytes) -> bytes:
                answer = stub.Sign(pb.SignRequest(card=selector, data=data,
                                                  algorithm=pb.SHA1_WITH_RSA), timeout=60)
                signature: bytes = answer.signature
                return signature

            yield sign

    return _sign_in_threads("eportd", verifiers, signatures, signer)


def sign_through_pcsc(readers: list[str], verifiers: list[Verifier], signatures: int
                      ) -> tuple[list[CardSeries], float]:
    """The same card operation with no daemon: each card's client with a PC/SC handle of its
    own, sending what eportd sends for a signature (a transaction around GENERAL
    AUTHENTICATE, chained, and GET RESPONSE) through the same host-side card library. This
    is what any PC/SC program pays for pcscd and vpcd; eportd's share is the rest."""
    @contextlib.contextmanager
    def signer(card: int) -> Iterator[Signer]:
        connection = PcscBackend().connect(readers[card])

        def sign(data: bytes) -> bytes:
            with connection.transaction():
                return connection.token.sign_digest(SignMechanism.RSA_PKCS1_SHA1,
                                                    hashlib.sha1(data).digest())

        try:
            yield sign
        finally:
            connection.close()

    return _sign_in_threads("pcsc", verifiers, signatures, signer)


async def _gateway_client(url: str, card: int, mine: CardSeries, verifier: Verifier,
                          signatures: int, ready: asyncio.Barrier, go: asyncio.Event) -> None:
    async with connect(url, max_size=None) as socket:
        greeting = json.loads(await socket.recv())
        assert greeting["_method"] == "open", greeting
        await ready.wait()
        await go.wait()
        for index in range(signatures):
            data = _message("gateway", card, index)
            began = time.monotonic()
            await socket.send(json.dumps({"_method": "cus-sec_SpcSignDataAsPEM", "_id": index,
                                          "args": {"inData": data.decode()}}))
            answer = json.loads(await socket.recv())
            ended = time.monotonic()
            if not answer["_args"]["Result"]:
                mine.errors.append(str(answer["_args"]["Error"]))
                continue
            mine.windows.append((began, ended))
            try:
                verifier.check(data, base64.b64decode(answer["_args"]["Data"][0]))
            except Exception:
                mine.bad_signatures += 1


async def _sign_through_gateways(urls: list[str], verifiers: list[Verifier], signatures: int
                                 ) -> tuple[list[CardSeries], float]:
    series = [CardSeries() for _ in urls]
    ready = asyncio.Barrier(len(urls) + 1)
    go = asyncio.Event()
    tasks = [asyncio.create_task(_gateway_client(url, card, series[card], verifiers[card],
                                                 signatures, ready, go))
             for card, url in enumerate(urls)]
    await ready.wait()  # every connection greeted before the clock starts
    began = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)
    return series, time.monotonic() - began


def sign_through_gateways(urls: list[str], verifiers: list[Verifier], signatures: int
                          ) -> tuple[list[CardSeries], float]:
    return asyncio.run(_sign_through_gateways(urls, verifiers, signatures))


# ---- the stack ----

@dataclass
class Stack:
    cards: CardProcesses
    daemon: Daemon
    card_ids: list[str]
    verifiers: list[Verifier]
    pcscd: Pcscd
    gateways: list[Gateway] = field(default_factory=list)
    log_lines_read: int = 0

    def pids(self) -> dict[str, list[int]]:
        pcscd = [self.pcscd.process.pid] if self.pcscd.process else []
        return {"eportd": [self.daemon.process.pid], "pcscd": pcscd,
                "cards": [p.pid for p in self.cards.processes if p.pid is not None],
                "gateways": [g.process.pid for g in self.gateways]}

    def new_sign_durations(self) -> list[float]:
        """duration_ms of the successful Sign calls eportd logged since the last call."""
        lines = self.daemon.log().splitlines()
        fresh, self.log_lines_read = lines[self.log_lines_read:], len(lines)
        durations = []
        for line in fresh:
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if (isinstance(entry, dict) and entry.get("method") == SIGN_METHOD
                        and entry.get("code") == "OK" and "duration_ms" in entry):
                    durations.append(float(entry["duration_ms"]))
        return durations


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(stack: Stack) -> dict[str, float]:
    spent = {group: sum(cpu_seconds(pid) for pid in pids)
             for group, pids in stack.pids().items()}
    own = os.times()
    spent["client"] = own.user + own.system
    return spent


def _wait_for_card_ids(daemon: Daemon, readers: list[str], timeout: float = 30) -> list[str]:
    stub = daemon.stub()
    deadline = time.monotonic() + timeout
    while True:
        seen = {r.name: r.card_id for r in
                stub.ListReaders(pb.ListReadersRequest(), timeout=10).readers}
        if all(seen.get(reader) for reader in readers):
            return [seen[reader] for reader in readers]
        if time.monotonic() > deadline:
            raise RuntimeError(f"eportd did not read every card in time: {seen}")
        time.sleep(0.1)


@contextlib.contextmanager
def card_stack(workdir: Path, trust_bundle: Path, images: list[Path], pcscd: Pcscd
               ) -> Iterator[Stack]:
    cards = CardProcesses(images)
    try:
        daemon = start_daemon(workdir / "eportd", "--trust-anchor", str(trust_bundle))
        try:
            readers = [reader_name(slot) for slot in range(len(images))]
            card_ids = _wait_for_card_ids(daemon, readers)
            expected = [read_image(image).profile.card_id for image in images]
            if card_ids != expected:  # never send our PIN to a card we did not make
                raise RuntimeError(f"the readers hold other cards than ours: {card_ids} "
                                   f"(ours: {expected})")
            stub = daemon.stub()
            for card_id in card_ids:
                stub.VerifyPin(pb.VerifyPinRequest(card=pb.CardSelector(card_id=card_id),
                                                   pin=PIN), timeout=30)
            verifiers = [Verifier("rsa2048", read_image(image).certificate) for image in images]
            stack = Stack(cards, daemon, card_ids, verifiers, pcscd)
            try:
                yield stack
            finally:
                for gateway in stack.gateways:
                    gateway.stop()
        finally:
            daemon.stop()
    finally:
        cards.stop()


def measure(stack: Stack, path: str, count: int, signatures: int) -> Run:
    stack.cards.take_intervals()  # forget the APDUs of set-up and earlier runs
    stack.new_sign_durations()
    cpu_before = cpu_by_group(stack)
    if path == "eportd":
        series, seconds = sign_through_eportd(stack.daemon.socket, stack.card_ids[:count],
                                              stack.verifiers[:count], signatures)
    elif path == "pcsc":
        series, seconds = sign_through_pcsc([reader_name(slot) for slot in range(count)],
                                            stack.verifiers[:count], signatures)
    else:
        series, seconds = sign_through_gateways([g.url for g in stack.gateways[:count]],
                                                stack.verifiers[:count], signatures)
    cpu_after = cpu_by_group(stack)
    intervals = stack.cards.take_intervals()
    for slot, card_series in enumerate(series):
        card_series.attribute(intervals[slot])
    run = Run(path, count, series, seconds, daemon_ms=stack.new_sign_durations())
    if run.signatures:
        run.cpu_ms = {group: (cpu_after[group] - cpu_before[group]) * 1000 / run.signatures
                      for group in cpu_after if group in cpu_before}
    return run


def rpc_floor_ms(stack: Stack, calls: int) -> float:
    """p50 of a call eportd answers from its cache (GetCardInfo): gRPC, the socket proxy, the
    interceptors and the call log, with no card and no worker thread involved."""
    stub = stack.daemon.stub()
    selector = pb.CardSelector(card_id=stack.card_ids[0])
    took = []
    for _ in range(max(calls, 50)):
        began = time.monotonic()
        stub.GetCardInfo(selector, timeout=10)
        took.append((time.monotonic() - began) * 1000)
    return percentile(took, 0.5)


# ---- output ----

def print_table(runs: list[Run], baseline: Run, signatures: int, delay_ms: float) -> None:
    print(f"\nN = {signatures} signatures per card and run; RSA-2048 SHA1withRSA; one client "
          f"per card; GENERAL AUTHENTICATE delayed {delay_ms:.1f} ms on every card, so that "
          f"with the simulator's own work a signature costs the card about {CARD_MS:.0f} ms.")
    base_card = baseline.card_ms()
    base_overhead = baseline.overheads_ms()
    print(f"Undelayed, 1 card through eportd: card time p50 {percentile(base_card, 0.5):.2f} ms, "
          f"overhead p50 {percentile(base_overhead, 0.5):.2f} ms, p99 "
          f"{percentile(base_overhead, 0.99):.2f} ms, {baseline.per_second:.1f} sig/s.")
    print("\n| K | path | signatures | sig/s | target 0.95×K×4 | pass | card ms p50 | "
          "overhead ms p50 | overhead ms p99 | p50 ≤ 1 ms | inside eportd ms p50 | errors | "
          "bad signatures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        target = TARGET_SHARE * run.cards * PER_CARD_TARGET
        overheads = run.overheads_ms()
        if not overheads:
            print(f"| {run.cards} | {run.path} | 0 | | {target:.1f} | FAIL | | | | | | "
                  f"{len(run.errors())} ({run.errors()[:1]}) | |")
            continue
        p50 = percentile(overheads, 0.5)
        print(f"| {run.cards} | {run.path} | {run.signatures} | {run.per_second:.2f} | "
              f"{target:.1f} | {'pass' if run.per_second >= target else 'FAIL'} | "
              f"{percentile(run.card_ms(), 0.5):.1f} | {p50:.2f} | "
              f"{percentile(overheads, 0.99):.2f} | "
              f"{'pass' if p50 <= OVERHEAD_TARGET_MS else 'FAIL'} | "
              f"{percentile(run.daemon_ms, 0.5) if run.daemon_ms else 0:.1f} | "
              f"{len(run.errors())} | {run.bad_signatures()} |")
    groups = ("client", "eportd", "pcscd", "cards", "gateways")
    print("\nCPU ms per signature, by process (client = this script: gRPC / websocket clients):")
    print("| K | path | " + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for run in [baseline, *runs]:
        print(f"| {run.cards}{' (undelayed)' if run is baseline else ''} | {run.path} | "
              + " | ".join(f"{run.cpu_ms.get(g, 0.0):.2f}" for g in groups) + " |")


def print_breakdown(runs: list[Run], baseline: Run, bare: Run, floor_ms: float) -> None:
    """Where the overhead goes: PC/SC itself (pcscd and vpcd, paid by any program), and eportd's
    share above it, of which the cached-call floor is gRPC and the socket proxy."""
    def p50(run: Run) -> float:
        overheads = run.overheads_ms()
        return percentile(overheads, 0.5) if overheads else float("nan")

    print("\nOverhead by layer, p50 ms (over the card's own APDU time):")
    print("| K | through PC/SC, no daemon | through eportd | eportd's share | "
          "eportd ÷ PC/SC sig/s |")
    print("|---|---|---|---|---|")
    pairs = [(baseline, bare)] + [
        (run, next(r for r in runs if r.path == "pcsc" and r.cards == run.cards))
        for run in runs if run.path == "eportd"]
    for daemon_run, pcsc_run in pairs:
        ratio = (daemon_run.per_second / pcsc_run.per_second if pcsc_run.per_second
                 else float("nan"))
        label = f"{daemon_run.cards}{' (undelayed)' if daemon_run is baseline else ''}"
        print(f"| {label} | {p50(pcsc_run):.2f} | {p50(daemon_run):.2f} | "
              f"{p50(daemon_run) - p50(pcsc_run):.2f} | {ratio:.3f} |")
    print(f"A call eportd answers from its cache (GetCardInfo): {floor_ms:.2f} ms p50 "
          "(gRPC, the socket proxy, interceptors, the call log).")


def run_cards(args: argparse.Namespace, counts: list[int], workdir: Path) -> tuple[int, int]:
    """The PC/SC part; returns (failed signatures, bad signatures)."""
    print(f"provisioning {SLOTS} cards ...", flush=True)
    test_ca = init_ca(workdir / "ca")
    images = [write_card(provision_test_card(test_ca), workdir, f"card-{slot}.json")
              for slot in range(SLOTS)]
    pcscd = start_pcscd_if_needed()
    if not pcscd.restartable:
        print("pcscd was already running: stop it first (this run restarts pcscd with "
              f"{SLOTS} vpcd slots, so it must be one it started) / 请先停止正在运行的 pcscd")
        return 1, 0
    try:
        with more_vpcd_slots(pcscd, SLOTS, workdir / "pcscd"), \
                card_stack(workdir, test_ca.trust_bundle, images, pcscd) as stack:
            print("undelayed baseline ...", flush=True)
            baseline = measure(stack, "eportd", 1, args.signatures)
            bare = measure(stack, "pcsc", 1, args.signatures)
            floor_ms = rpc_floor_ms(stack, args.signatures)
            # The simulator needs some ms of its own per signature: the injected delay makes
            # up the rest, so that a signature costs the card 250 ms in all.
            delay_ms = max(0.0, CARD_MS - percentile(baseline.card_ms(), 0.5))
            print(f"delay on GENERAL AUTHENTICATE: {delay_ms:.1f} ms", flush=True)
            stack.cards.set_delay(delay_ms)
            runs = []
            for count in counts:
                print(f"K={count} through eportd, then straight through PC/SC ...", flush=True)
                runs.append(measure(stack, "eportd", count, args.signatures))
                runs.append(measure(stack, "pcsc", count, args.signatures))
            stack.gateways = [start_gateway(stack.daemon.socket, "--reader", reader_name(slot))
                              for slot in range(max(counts))]
            for count in counts:
                print(f"K={count} through {count} gateway(s) ...", flush=True)
                runs.append(measure(stack, "gateway", count, args.signatures))
    finally:
        pcscd.stop()
    print_table(runs, baseline, args.signatures, delay_ms)
    print_breakdown(runs, baseline, bare, floor_ms)
    failed = [e for run in [*runs, baseline, bare] for e in run.errors()]
    if failed:
        print(f"errors: {len(failed)} (first: {failed[:3]})")
    return len(failed), sum(run.bad_signatures() for run in [*runs, baseline, bare])


def run_pkcs11(args: argparse.Namespace, workdir: Path) -> tuple[int, int]:
    """The PKCS#11 part (no pcscd: eportd runs the PKCS#11 backend only)."""
    print("\nPKCS#11: SoftHSM2 in-process ...", flush=True)
    local, hsm = bench_in_process(workdir, args.pkcs11_rounds)
    through = None
    if daemon_has_pkcs11():
        print("PKCS#11: through eportd ...", flush=True)
        through = bench_through_eportd(workdir, hsm, args.pkcs11_rounds)
    print_pkcs11_table(local, through)
    every = local + (through or [])
    return (sum(len(s.errors) for s in every), sum(s.failed_verifications for s in every))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signatures", type=int, default=40,
                        help="N: signatures per card in each run (default: %(default)s)")
    parser.add_argument("--cards", default="1,2,4,8",
                        help="the K to run, comma-separated, each 1 to 8 (default: %(default)s)")
    parser.add_argument("--pkcs11-rounds", type=int, default=300,
                        help="signatures per SoftHSM2 key and path (default: %(default)s)")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--skip-pkcs11", action="store_true", help="the PC/SC part only")
    part.add_argument("--pkcs11-only", action="store_true",
                      help="the PKCS#11 part only (needs no pcscd, so no lock)")
    args = parser.parse_args()
    counts = [int(k) for k in args.cards.split(",") if k.strip()]
    if not counts or not all(1 <= k <= SLOTS for k in counts) or args.signatures < 1 \
            or args.pkcs11_rounds < 1:
        parser.error(f"--cards: numbers from 1 to {SLOTS}; --signatures and --pkcs11-rounds "
                     "at least 1")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    failed = bad = 0
    with tempfile.TemporaryDirectory(prefix="eport-scale-") as temp:
        workdir = Path(temp)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        if not args.pkcs11_only:
            failed, bad = run_cards(args, counts, workdir)
        if not args.skip_pkcs11:
            more_failed, more_bad = run_pkcs11(args, workdir)
            failed, bad = failed + more_failed, bad + more_bad
    if failed or bad:
        print(f"failed signatures: {failed}, signatures that do not verify: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
