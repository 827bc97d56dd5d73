"""Benchmark of eportd, the card daemon, as users run it, against OpenSC's PKCS#11 module.

    .venv/bin/python benchmarks/daemon_benchmark.py [--rounds 200] [--algorithms rsa2048,p256,sm2]
                                                    [--clients 16] [--verify-every 50] [--json]

For each algorithm a simulated card is provisioned by a throwaway test CA and put in vpcd slot 0
(a SimulatorRunner, through the real pcscd). Then, on that card:

1. OpenSC (RSA-2048 and P-256 only: OpenSC's PIV driver has no SM2): OpenSC's PKCS#11 module
   loaded in this process with PyKCS11, one C_Login, then C_Sign of distinct messages with
   CKM_SHA256_RSA_PKCS or CKM_ECDSA_SHA256 (CKM_ECDSA over a SHA-256 digest when the module
   lacks it): one thread, then `--clients` threads with one PKCS#11 session each (the login is
   per token, so one C_Login serves them all; PyKCS11 holds the GIL and OpenSC locks the card,
   so their calls are serialised). The module is finalized before the daemon starts, so
   OpenSC and the daemon never share the card.
2. eportd: a real `python -m eport.daemon.main` process on a socket in a temporary directory.
   Measured: spawn to the first SERVING health check, spawn to the card being readable
   (GetCardInfo), VmRSS at ready, idle (card read, before load) and after load; one VerifyPin,
   then Sign of distinct messages from one client, then from `--clients` clients (threads, one
   grpc channel each); finally SIGTERM to exit.

Each phase first signs a few warm-up messages (not counted). Every `--verify-every`th
signature is verified on the host with the card's certificate (cryptography; eport.common.sm2
for SM2), and one per algorithm also with the daemon's Verify RPC.

The card runs in a child process: PyKCS11 does not release the GIL during C_Sign, so a card
simulated in this process could not answer OpenSC (it would deadlock); both paths get the same
out-of-process card.

pcscd: by default the system's (when it is not running, started for the run and stopped
afterwards; root only). `--pcscd private` runs a pcscd of our own instead (root; its socket in
the temporary directory, bound over /run/pcscd in a private mount namespace, PCSCLITE_CSOCK_NAME
pointing clients at it, and vpcd on its own ports), so that other PC/SC users of the machine (a
test suite, another eportd) cannot put their card into our reader or read ours meanwhile.

Exit status: 0 when every signature was made and the sampled ones verify, 1 otherwise, 2 when
pcscd cannot be had. Figures from a busy machine are skewed: the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.cardlib.pcsc.transport import PcscContext, PcscError
from eport.common import sm2
from eport.common.profile import CardForm, CardKind
from eport.common.sm2_cert import certificate_public_point
from eport.firmware_sim.ca import init_ca
from eport.firmware_sim.demo import vpcd_reader_name
from eport.firmware_sim.image import load_card, read_image, write_image_atomically
from eport.firmware_sim.provision import ProvisionRequest, provision_card
from eport.firmware_sim.runner import SimulatorRunner
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

OPENSC_MODULES = ("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
                  "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so",
                  "/usr/lib/opensc-pkcs11.so")
ALGORITHMS = ("rsa2048", "p256", "sm2")
OPENSC_ALGORITHMS = ("rsa2048", "p256")
PIN = "88888888"
# A low PBKDF2 cost (as tests/support/cards.py) keeps provisioning and VERIFY quick.
KDF_ITERATIONS = 500
WARMUP = 3
PRIVATE_VPCD_PORT = 0x8C9B  # 35995, 35996: away from the system vpcd (0x8C7B = 35963)
PCSCD_SOCKET_DIR = "/run/pcscd"  # pcscd's compiled-in ipcdir (pcscd --version)
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


# ---- figures ----

def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Figures:
    """One measured series: who signed, how many threads, latencies and throughput."""

    algorithm: str
    path: str  # "eportd" or "opensc"
    clients: int
    signatures: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    per_second: float = 0.0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    verified: int = 0
    verify_failures: int = 0
    # eportd only: the median duration_ms its log gives these calls (time inside the daemon)
    server_p50_ms: float = 0.0
    note: str = ""

    def record(self, latencies_ms: list[float], seconds: float) -> None:
        self.signatures = len(latencies_ms)
        self.seconds = seconds
        if latencies_ms:
            self.p50_ms = statistics.median(latencies_ms)
            self.p99_ms = percentile(latencies_ms, 0.99)
        self.per_second = self.signatures / seconds if seconds > 0 else 0.0


@dataclass
class DaemonRun:
    """One eportd process: start, memory, shutdown and what its log said."""

    algorithm: str
    ready_ms: float = 0.0  # spawn -> first SERVING health check
    card_ready_ms: float = 0.0  # spawn -> first successful GetCardInfo
    rss_ready_kib: int = 0
    rss_idle_kib: int = 0
    rss_after_load_kib: int = 0
    hwm_kib: int = 0
    verify_pin_ms: float = 0.0
    rpc_floor_ms: float = 0.0  # p50 of GetCardInfo: cached, no card access (gRPC + proxy)
    verify_rpc_ok: bool = False
    stop_ms: float = 0.0  # SIGTERM -> exit
    exit_code: int | None = None
    log_problems: list[str] = field(default_factory=list)
    failure: str = ""


@dataclass
class Signed:
    """A signature kept for verification."""

    message: bytes
    signature: bytes


@dataclass
class Series:
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[Signed] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sign_once(self, sign: Callable[[bytes], bytes], message: bytes, *, keep: bool) -> None:
        """One timed signature (any thread); a failure is recorded and the series goes on."""
        began = time.perf_counter()
        try:
            signature = sign(message)
        except (grpc.RpcError, PyKCS11.PyKCS11Error) as exc:
            with self.lock:
                self.errors.append(describe_rpc_error(exc) if isinstance(exc, grpc.RpcError)
                                   else str(exc))
            return
        elapsed = (time.perf_counter() - began) * 1000
        with self.lock:
            self.latencies_ms.append(elapsed)
            if keep:
                self.samples.append(Signed(message, signature))


def message_for(algorithm: str, path: str, client: int, index: int) -> bytes:
    return (f"<Declaration alg='{algorithm}' via='{path}' client='{client}' seq='{index}'>"
            f"<EntryId>{client:02d}{index:08d}</EntryId></Declaration>").encode()


def run_clients(clients: int, rounds: int, make_worker: Callable[[int], Callable[[int], None]],
                ) -> float:
    """Start `clients` threads, release them together, return the wall time until the last is
    done. make_worker(client) runs in the thread (set-up: channel, session) and returns the
    per-round action."""
    barrier = threading.Barrier(clients + 1)
    failures: list[BaseException] = []

    def thread_main(client: int) -> None:
        try:
            action = make_worker(client)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()
            raise
        barrier.wait()
        for index in range(rounds):
            action(index)

    threads = [threading.Thread(target=thread_main, args=(c,), name=f"client-{c}")
               for c in range(clients)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        raise RuntimeError(f"a client could not start: {failures[0]!r}") from None
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# ---- verification on the host ----

class Verifier:
    def __init__(self, algorithm: str, certificate_der: bytes, *, raw_rs: bool = False) -> None:
        self.algorithm = algorithm
        self.certificate_der = certificate_der
        self.raw_rs = raw_rs  # ECDSA/SM2 signatures as r || s (PKCS#11) rather than DER
        if algorithm == "sm2":
            self._point = certificate_public_point(certificate_der)
        else:
            self._key = x509.load_der_x509_certificate(certificate_der).public_key()

    def __call__(self, message: bytes, signature: bytes) -> bool:
        """`signature`: PKCS#1 v1.5 for RSA; DER (or r || s) for ECDSA and SM2."""
        if self.algorithm == "sm2":
            try:
                r, s = (sm2.decode_raw_signature(signature) if self.raw_rs
                        else sm2.decode_der_signature(signature))
            except sm2.SM2Error:
                return False
            return sm2.verify_message(self._point, message, r, s)
        try:
            if isinstance(self._key, rsa.RSAPublicKey):
                self._key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
                return True
            if isinstance(self._key, ec.EllipticCurvePublicKey):
                if self.raw_rs:
                    signature = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                                     int.from_bytes(signature[32:], "big"))
                self._key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                return True
        except Exception:
            return False
        return False

    def check(self, figures: Figures, samples: list[Signed]) -> None:
        for sample in samples:
            if self(sample.message, sample.signature):
                figures.verified += 1
            else:
                figures.verify_failures += 1


# ---- the card: a SimulatorRunner in a child process ----

def _serve_card(image_path: str, slot: int, base_port: int | None,
                stop: multiprocessing.synchronize.Event) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    runner = SimulatorRunner(load_card, base_port=base_port)
    runner.add_slot(slot, Path(image_path))
    runner.start()
    try:
        stop.wait()
    finally:
        runner.stop()


@contextlib.contextmanager
def card_in_slot(image_path: Path, slot: int, base_port: int | None) -> Iterator[None]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=_serve_card,
                              args=(str(image_path), slot, base_port, stop),
                              name=f"sim-card-{slot}", daemon=True)
    process.start()
    reader = vpcd_reader_name(slot)
    try:
        with PcscContext() as pcsc:
            pcsc.wait_for_presence(reader, True, timeout=20)
        yield
    finally:
        stop.set()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        with contextlib.suppress(PcscError), PcscContext() as pcsc:
            pcsc.wait_for_presence(reader, False, timeout=5)


# ---- pcscd ----

def wait_for_reader(reader: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            with PcscContext() as pcsc:
                if reader in pcsc.list_readers():
                    return
                problem = f"no reader {reader!r}"
        except PcscError as exc:
            problem = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"pcscd is not usable: {problem}")


def start_pcscd_if_needed(reader: str) -> subprocess.Popen[bytes] | None:
    """The system pcscd if it runs; else one started here (returned, for stop_pcscd)."""
    try:
        with PcscContext():
            pass
    except PcscError as exc:
        if exc.reason != "SERVICE_NOT_RUNNING":
            raise RuntimeError(f"pcscd is not usable: {exc}") from None
    else:
        wait_for_reader(reader, 5)
        return None
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if os.geteuid() != 0 or not Path(pcscd).exists():
        raise RuntimeError("pcscd is not running and cannot be started here: start it as root "
                           "(`pcscd` or `systemctl start pcscd.socket`), or install it "
                           "(scripts/setup.sh)")
    print("starting pcscd for this run ...")
    process = subprocess.Popen([pcscd, "--foreground"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for_reader(reader, 15)
    except RuntimeError:
        stop_pcscd(process)
        raise
    return process


def stop_pcscd(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PrivatePcscd:
    """A pcscd of our own: its socket in `directory`, the vpcd driver on `port`.

    pcscd 1.9 has no option for its socket path (PCSCLITE_CSOCK_NAME is read by the client
    library only), so it runs in a private mount namespace with `directory` bound over
    /run/pcscd; clients (this process, OpenSC, eportd) find it through PCSCLITE_CSOCK_NAME.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.port = port
        self._run_dir = directory / "pcscd-run"
        self._conf_dir = directory / "pcscd-conf"
        self._log = directory / "pcscd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, reader: str) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("--pcscd private needs root (mount namespace, pcscd)")
        self._run_dir.mkdir(mode=0o755)
        self._conf_dir.mkdir()
        (self._conf_dir / "vpcd").write_text(
            'FRIENDLYNAME "Virtual PCD"\n'
            f"DEVICENAME   /dev/null:0x{self.port:04X}\n"
            "LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\n"
            f"CHANNELID    0x{self.port:04X}\n")
        pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
        script = ('mkdir -p "$3" && mount --bind "$0" "$3" && '
                  'exec "$1" --foreground --config "$2"')
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 str(self._run_dir), pcscd, str(self._conf_dir), PCSCD_SOCKET_DIR],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # Before this process's first PC/SC call: libpcsclite reads it once.
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self._run_dir / "pcscd.comm")
        deadline = time.monotonic() + 10
        while not (self._run_dir / "pcscd.comm").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the private pcscd did not start: "
                                   f"{self._log.read_text(errors='replace')[-500:]}")
            time.sleep(0.02)
        wait_for_reader(reader, 10)

    def stop(self) -> None:
        stop_pcscd(self.process)


# ---- OpenSC through PKCS#11 ----

def opensc_module() -> str:
    for candidate in OPENSC_MODULES:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError("OpenSC's opensc-pkcs11.so not found (apt-get install opensc)")


def bench_opensc(algorithm: str, reader: str, certificate_der: bytes, rounds: int,
                 clients: int, verify_every: int) -> list[Figures]:
    library = PyKCS11.PyKCS11Lib()
    library.load(opensc_module())
    try:
        slots = [s for s in library.getSlotList(tokenPresent=True)
                 if library.getSlotInfo(s).slotDescription.strip().startswith(reader)]
        if not slots:
            raise RuntimeError(f"OpenSC shows no token in {reader!r} (another program uses this "
                               "vpcd slot? --pcscd private avoids that)")
        slot = slots[0]
        session = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
        try:
            session.login(PIN)
            return _opensc_series(library, slot, session, algorithm, certificate_der, rounds,
                                  clients, verify_every)
        finally:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                session.logout()
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                library.closeAllSessions(slot)
    finally:
        library.unload()  # C_Finalize: OpenSC lets go of pcscd and the card


def _opensc_series(library: Any, slot: int, session: Any, algorithm: str,
                   certificate_der: bytes, rounds: int, clients: int, verify_every: int
                   ) -> list[Figures]:
    def private_key(on: Any) -> Any:
        keys = on.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                               (PyKCS11.CKA_ID, (0x02,))])
        if not keys:
            raise RuntimeError("OpenSC shows no private key with id 02 (PIV key 9C)")
        return keys[0]

    certificates = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
                                        (PyKCS11.CKA_ID, (0x02,))])
    seen = bytes(session.getAttributeValue(certificates[0], [PyKCS11.CKA_VALUE])[0])
    if seen != certificate_der:
        raise RuntimeError("OpenSC reads another certificate than our card's: another program "
                           "uses this vpcd slot? (--pcscd private avoids that)")
    mechanisms = library.getMechanismList(slot)
    note = ""
    prehash = False
    if algorithm == "rsa2048":
        mechanism = PyKCS11.Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS, None)
        note = "CKM_SHA256_RSA_PKCS"
    elif "CKM_ECDSA_SHA256" in mechanisms:
        mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256, None)
        note = "CKM_ECDSA_SHA256"
    else:
        mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
        prehash = True
        note = "CKM_ECDSA over SHA-256 (no CKM_ECDSA_SHA256)"

    def signer(on: Any) -> Callable[[bytes], bytes]:
        key = private_key(on)

        def sign(message: bytes) -> bytes:
            data = hashlib.sha256(message).digest() if prehash else message
            return bytes(on.sign(key, data, mechanism))

        return sign

    verifier = Verifier(algorithm, certificate_der, raw_rs=True)
    results = []
    sign_on_main = signer(session)
    for index in range(WARMUP):
        sign_on_main(message_for(algorithm, "opensc-warmup", 0, index))

    single = Series()
    started = time.perf_counter()
    for index in range(rounds):
        single.sign_once(sign_on_main, message_for(algorithm, "opensc", 0, index),
                         keep=index % verify_every == 0)
    figures = Figures(algorithm, "opensc", 1, note=note)
    figures.record(single.latencies_ms, time.perf_counter() - started)
    verifier.check(figures, single.samples)
    results.append(figures)

    many = Series()
    lock = threading.Lock()
    sessions: list[Any] = []

    def make_worker(client: int) -> Callable[[int], None]:
        own = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)  # logged in: per token
        with lock:
            sessions.append(own)
        sign = signer(own)

        def action(index: int) -> None:
            many.sign_once(sign, message_for(algorithm, "opensc", client + 1, index),
                           keep=index % verify_every == 0)

        return action

    try:
        seconds = run_clients(clients, rounds, make_worker)
    finally:
        for own in sessions:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                own.closeSession()
    figures = Figures(algorithm, "opensc", clients, note=f"{note}; one session per thread")
    figures.record(many.latencies_ms, seconds)
    figures.errors, figures.first_errors = len(many.errors), many.errors[:3]
    verifier.check(figures, many.samples)
    results.append(figures)
    return results


# ---- eportd ----

def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return 0


def describe_rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    text = f"{code.name if code else 'RPC'}: {exc.details() if isinstance(exc, grpc.Call) else exc}"
    trailers: Any = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                error = pb.ErrorDetail()
                if detail.Unpack(error):
                    text += f" [{pb.ErrorReason.Name(error.reason)}: {error.message_en}]"
    return text


class Daemon:
    """eportd as a user starts it: its own process, its own socket."""

    def __init__(self, workdir: Path, trust_bundle: Path, name: str) -> None:
        self.socket = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self.target = f"unix:{self.socket}"
        self._trust_bundle = trust_bundle
        self.process: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.spawned_at = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eport.daemon.main", "--socket", str(self.socket),
             "--trust-anchor", str(self._trust_bundle)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"eportd exited with {self.process.returncode}:\n"
                               f"{self.log_tail()}")

    def wait_serving(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from spawn to the first SERVING answer of the health service ("")."""
        deadline = self.spawned_at + timeout
        while time.perf_counter() < deadline:
            self._alive()
            if not self.socket.exists():
                time.sleep(0.002)
                continue
            # A fresh channel per try: a failed channel would wait out grpc's reconnect backoff.
            with grpc.insecure_channel(self.target) as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                except grpc.RpcError:
                    time.sleep(0.002)
                    continue
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - self.spawned_at
        raise TimeoutError(f"eportd was not SERVING after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_card(self, stub: pb_grpc.CardServiceStub, timeout: float = READY_TIMEOUT_S
                  ) -> float:
        """Seconds from spawn to the first successful GetCardInfo (the card has been read)."""
        deadline = self.spawned_at + timeout
        last = ""
        while time.perf_counter() < deadline:
            self._alive()
            try:
                stub.GetCardInfo(pb.CardSelector(), timeout=5)
                return time.perf_counter() - self.spawned_at
            except grpc.RpcError as exc:
                last = describe_rpc_error(exc)
                time.sleep(0.005)
        raise TimeoutError(f"eportd did not read the card within {timeout:.0f} s ({last})")

    def stop(self) -> tuple[float, int | None]:
        """SIGTERM; returns (seconds to exit, exit code)."""
        if self.process is None or self.process.poll() is not None:
            return 0.0, None if self.process is None else self.process.returncode
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return time.perf_counter() - started, None
        return time.perf_counter() - started, code

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def read_log(self, run: DaemonRun) -> list[float]:
        """Notes the warnings and errors of the daemon's JSON log in `run`; returns the
        duration_ms of its successful Sign calls, in the order it logged them."""
        durations: list[float] = []
        for line in self.log_lines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if line.strip():
                    run.log_problems.append(f"(not JSON) {line[:200]}")
                continue
            if not isinstance(entry, dict):
                continue
            level = entry.get("level", "")
            if level in ("WARNING", "ERROR", "CRITICAL"):
                run.log_problems.append(f"{level} {entry.get('logger')}: {entry.get('msg')}"[:300])
            if (entry.get("method") == "/eport.v1.CardService/Sign"
                    and entry.get("code") == "OK" and "duration_ms" in entry):
                durations.append(float(entry["duration_ms"]))
        return durations


def bench_daemon(algorithm: str, workdir: Path, trust_bundle: Path, certificate_der: bytes,
                 rounds: int, clients: int, verify_every: int
                 ) -> tuple[DaemonRun, list[Figures]]:
    run = DaemonRun(algorithm)
    results: list[Figures] = []
    daemon = Daemon(workdir, trust_bundle, f"eportd-{algorithm}")
    daemon.start()
    try:
        run.ready_ms = daemon.wait_serving() * 1000
        run.rss_ready_kib = rss_kib(daemon.pid)
        with grpc.insecure_channel(daemon.target) as channel:
            stub = pb_grpc.CardServiceStub(channel)
            run.card_ready_ms = daemon.wait_card(stub) * 1000
            run.rss_idle_kib = rss_kib(daemon.pid)
            certificate = stub.GetCertificate(pb.CardSelector(), timeout=10)
            if certificate.der != certificate_der:
                raise RuntimeError("eportd reports another certificate than our card's: another "
                                   "program uses this vpcd slot? (--pcscd private avoids that)")
            began = time.perf_counter()
            stub.VerifyPin(pb.VerifyPinRequest(pin=PIN), timeout=30)
            run.verify_pin_ms = (time.perf_counter() - began) * 1000
            floor = []
            for _ in range(WARMUP + 100):
                began = time.perf_counter()
                stub.GetCardInfo(pb.CardSelector(), timeout=10)
                floor.append((time.perf_counter() - began) * 1000)
            run.rpc_floor_ms = statistics.median(floor[WARMUP:])
            for index in range(WARMUP):
                stub.Sign(pb.SignRequest(data=message_for(algorithm, "eportd-warmup", 0, index)),
                          timeout=30)
            verifier = Verifier(algorithm, certificate_der)
            results.append(_daemon_single(stub, algorithm, rounds, verify_every, verifier, run))
        results.append(_daemon_many(daemon.target, algorithm, rounds, clients, verify_every,
                                    verifier))
        run.rss_after_load_kib = rss_kib(daemon.pid)
        run.hwm_kib = rss_kib(daemon.pid, "VmHWM")
    except Exception as exc:
        run.failure = f"{type(exc).__name__}: {exc}"
    finally:
        stop_s, run.exit_code = daemon.stop()
        run.stop_ms = stop_s * 1000
        durations = daemon.read_log(run)[WARMUP:]  # logged as they finished
        for figures in results:
            mine, durations = durations[:figures.signatures], durations[figures.signatures:]
            if mine:
                figures.server_p50_ms = statistics.median(mine)
    return run, results


def daemon_signer(stub: pb_grpc.CardServiceStub, *, timeout: float
                  ) -> Callable[[bytes], bytes]:
    def sign(message: bytes) -> bytes:
        answer: bytes = stub.Sign(pb.SignRequest(data=message), timeout=timeout).signature
        return answer

    return sign


def _daemon_single(stub: pb_grpc.CardServiceStub, algorithm: str, rounds: int,
                   verify_every: int, verifier: Verifier, run: DaemonRun) -> Figures:
    series = Series()
    started = time.perf_counter()
    for index in range(rounds):
        series.sign_once(daemon_signer(stub, timeout=30),
                         message_for(algorithm, "eportd", 0, index),
                         keep=index % verify_every == 0)
    figures = Figures(algorithm, "eportd", 1)
    figures.record(series.latencies_ms, time.perf_counter() - started)
    figures.errors, figures.first_errors = len(series.errors), series.errors[:3]
    verifier.check(figures, series.samples)
    if series.samples:  # and once by the daemon itself, with the certificate we hold
        sample = series.samples[0]
        checked = stub.Verify(pb.VerifyRequest(certificate=verifier.certificate_der,
                                               data=sample.message, signature=sample.signature),
                              timeout=30)
        run.verify_rpc_ok = checked.valid
    return figures


def _daemon_many(target: str, algorithm: str, rounds: int, clients: int, verify_every: int,
                 verifier: Verifier) -> Figures:
    series = Series()
    lock = threading.Lock()
    channels: list[grpc.Channel] = []

    def make_worker(client: int) -> Callable[[int], None]:
        channel = grpc.insecure_channel(target)
        with lock:
            channels.append(channel)
        grpc.channel_ready_future(channel).result(timeout=10)
        sign = daemon_signer(pb_grpc.CardServiceStub(channel), timeout=60)

        def action(index: int) -> None:
            series.sign_once(sign, message_for(algorithm, "eportd", client + 1, index),
                             keep=index % verify_every == 0)

        return action

    try:
        seconds = run_clients(clients, rounds, make_worker)
    finally:
        for channel in channels:
            channel.close()
    figures = Figures(algorithm, "eportd", clients, note="one grpc channel per thread")
    figures.record(series.latencies_ms, seconds)
    figures.errors, figures.first_errors = len(series.errors), series.errors[:3]
    verifier.check(figures, series.samples)
    return figures


# ---- the run ----

def provision(ca_dir: Path, workdir: Path, algorithms: list[str]) -> tuple[Path, dict[str, Path]]:
    test_ca = init_ca(ca_dir)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    cards = {}
    for algorithm in algorithms:
        image = provision_card(test_ca, ProvisionRequest(
            kind=CardKind.OPERATOR, form=CardForm.IC, algorithm=algorithm, not_before=start,
            not_after=start + timedelta(days=730), kdf_iterations=KDF_ITERATIONS))
        cards[algorithm] = workdir / f"{algorithm}.json"
        write_image_atomically(cards[algorithm], image)
    return test_ca.trust_bundle, cards


def print_table(runs: list[DaemonRun], figures: list[Figures], clients: int) -> None:
    print("\neportd process (spawn = `python -m eport.daemon.main`):")
    print(f"  {'algorithm':9} {'ready ms':>9} {'card ms':>8} {'RSS ready':>10} {'RSS idle':>9} "
          f"{'RSS load':>9} {'peak':>7} {'PIN ms':>7} {'stop ms':>8} {'exit':>4} {'warn':>4}")
    for run in runs:
        def mib(kib: int) -> str:
            return f"{kib / 1024:.1f}M"

        print(f"  {run.algorithm:9} {run.ready_ms:9.0f} {run.card_ready_ms:8.0f} "
              f"{mib(run.rss_ready_kib):>10} {mib(run.rss_idle_kib):>9} "
              f"{mib(run.rss_after_load_kib):>9} {mib(run.hwm_kib):>7} {run.verify_pin_ms:7.1f} "
              f"{run.stop_ms:8.0f} {run.exit_code!s:>4} {len(run.log_problems):4d}")
    print("  ready: spawn to the first SERVING health check; card: spawn to the first "
          "GetCardInfo that\n  succeeds; RSS: VmRSS at ready / card read, before load / after "
          "load; peak: VmHWM;\n  stop: SIGTERM to exit; warn: WARNING+ lines in its log.")

    print(f"\nSignatures of distinct messages ({clients} = concurrent clients; p50/p99 per "
          "call; sig/s over the whole series):")
    print(f"  {'algorithm':9} {'path':7} {'clients':>7} {'sigs':>6} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'sig/s':>8} {'errors':>6} {'verified':>9}  note")
    for f in figures:
        print(f"  {f.algorithm:9} {f.path:7} {f.clients:7d} {f.signatures:6d} {f.p50_ms:8.2f} "
              f"{f.p99_ms:8.2f} {f.per_second:8.1f} {f.errors:6d} "
              f"{f.verified:4d}/{f.verified + f.verify_failures:<4d}  {f.note}")
    inside = [f for f in figures if f.server_p50_ms]
    if inside:
        print("  p50 inside eportd (its log's duration_ms; the rest is gRPC, its socket proxy "
              "and the client):\n    "
              + ", ".join(f"{f.algorithm}/{f.clients} {f.server_p50_ms:.2f} ms" for f in inside))
    floors = [r for r in runs if r.rpc_floor_ms]
    if floors:
        print("  p50 of a call that does not touch the card (GetCardInfo, cached): "
              + ", ".join(f"{r.algorithm} {r.rpc_floor_ms:.2f} ms" for r in floors))

    ratios = ratio_rows(figures)
    if ratios:
        print("\nSignatures per second, eportd / OpenSC (>= 1.0: the daemon is at least as "
              "fast; the target):")
        for algorithm, count, ratio in ratios:
            verdict = "met" if ratio >= 1.0 else "NOT met"
            print(f"  {algorithm:9} {count:2d} client(s): {ratio:5.2f}  ({verdict})")


def ratio_rows(figures: list[Figures]) -> list[tuple[str, int, float]]:
    rows = []
    for daemon in (f for f in figures if f.path == "eportd"):
        for opensc in figures:
            if (opensc.path == "opensc" and opensc.algorithm == daemon.algorithm
                    and opensc.clients == daemon.clients and opensc.per_second > 0):
                rows.append((daemon.algorithm, daemon.clients,
                             daemon.per_second / opensc.per_second))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="eportd against OpenSC's PKCS#11 module")
    parser.add_argument("--rounds", type=int, default=200,
                        help="signatures per client and series (default: %(default)s)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="comma-separated, of %(default)s")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent clients of the second series (default: %(default)s)")
    parser.add_argument("--verify-every", type=int, default=50,
                        help="verify every n-th signature on the host (default: %(default)s)")
    parser.add_argument("--slot", type=int, default=0, help="vpcd slot (default: 0)")
    parser.add_argument("--pcscd", choices=("system", "private"), default="system",
                        help="the system's pcscd, or one of our own that no other program "
                             "uses (root; default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown or not algorithms:
        parser.error(f"unknown algorithm(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(ALGORITHMS)}")
    if args.rounds < 1 or args.clients < 1 or args.verify_every < 1:
        parser.error("--rounds, --clients and --verify-every must be at least 1")

    # SIGTERM unwinds like Ctrl-C, so the card, eportd and a pcscd we started are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    reader = vpcd_reader_name(args.slot)
    runs: list[DaemonRun] = []
    figures: list[Figures] = []
    opensc_failures: list[str] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eport-dbench-") as temp, \
            contextlib.ExitStack() as cleanup:
        workdir = Path(temp)
        base_port: int | None = None
        try:
            if args.pcscd == "private":
                private = PrivatePcscd(workdir, PRIVATE_VPCD_PORT)
                cleanup.callback(private.stop)
                private.start(reader)
                base_port = private.port
            else:
                cleanup.callback(stop_pcscd, start_pcscd_if_needed(reader))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        trust_bundle, cards = provision(workdir / "ca", workdir, algorithms)
        print(f"{args.rounds} rounds, {args.clients} clients, {os.cpu_count()} CPUs, "
              f"{args.pcscd} pcscd, card in {reader!r} (a SimulatorRunner in a child process); "
              f"load average {load_before[0]:.2f}")
        for algorithm in algorithms:
            certificate_der = read_image(cards[algorithm]).certificate
            with card_in_slot(cards[algorithm], args.slot, base_port):
                # OpenSC first, finalized before eportd starts: they never share the card.
                if algorithm in OPENSC_ALGORITHMS:
                    print(f"{algorithm}: OpenSC PKCS#11 ...", flush=True)
                    try:
                        figures += bench_opensc(algorithm, reader, certificate_der, args.rounds,
                                                args.clients, args.verify_every)
                    except Exception as exc:
                        opensc_failures.append(f"{algorithm}: {type(exc).__name__}: {exc}")
                        print(f"  OpenSC failed: {opensc_failures[-1]}")
                print(f"{algorithm}: eportd ...", flush=True)
                run, measured = bench_daemon(algorithm, workdir, trust_bundle, certificate_der,
                                             args.rounds, args.clients, args.verify_every)
                runs.append(run)
                figures += measured
                if run.failure:
                    print(f"  eportd failed: {run.failure}")
                for problem in run.log_problems[:5]:
                    print(f"  eportd log: {problem}")

    load_after = os.getloadavg()
    print_table(runs, figures, args.clients)
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs (other programs skew the figures)")
    if args.json:
        print(json.dumps({
            "rounds": args.rounds, "clients": args.clients, "cpus": os.cpu_count(),
            "pcscd": args.pcscd, "load_average": [load_before[0], load_after[0]],
            "daemon": [asdict(r) for r in runs], "opensc_failures": opensc_failures,
            "signatures": [asdict(f) for f in figures],
            "ratio_eportd_over_opensc": [
                {"algorithm": a, "clients": c, "ratio": round(r, 3)}
                for a, c, r in ratio_rows(figures)],
        }, indent=2, ensure_ascii=False))
    failed = bool(opensc_failures) or any(r.failure or r.exit_code != 0 for r in runs) or any(
        f.verify_failures or f.errors for f in figures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
