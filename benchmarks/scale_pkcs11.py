"""The PKCS#11 part of benchmarks/scale_cards.py: SoftHSM2 signatures made in-process with
PyKCS11 against the same signatures through eportd's PKCS#11 backend (`--pkcs11-module`).

Both sides sign what eportd's backend signs (eport.cardlib.pkcs11.mechanisms): CKM_RSA_PKCS over
DigestInfo ‖ SHA-256(data) with the RSA-2048 key, CKM_ECDSA over SHA-256(data) with the P-256
key, one signature at a time from one client. The tokens are those of tests/support/softhsm.py
(softhsm2-util, OpenSSL and pkcs11-tool make them, PIN 88888888 on tokens made here only).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import PyKCS11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_benchmark import Verifier, percentile

from eport.cardlib.pkcs11.mechanisms import CKM_ECDSA, CKM_RSA_PKCS, digest_to_sign
from eport.cardlib.sign_mechanism import SignMechanism
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.daemon_stack import start_daemon
from tests.support.softhsm import (
    P256_LABEL,
    RSA_LABEL,
    SOFTHSM_MODULE,
    USER_PIN,
    SoftHsm,
    build_softhsm,
)

NOT_AVAILABLE = "PKCS#11 through eportd: not available yet"


@dataclass(frozen=True)
class KeyUnderTest:
    name: str            # "rsa2048", "p256"
    token_label: str
    certificate: str     # key of SoftHsm.keys
    mechanism: SignMechanism
    pkcs11_mechanism: int
    daemon_algorithm: pb.SignAlgorithm.ValueType


KEYS = (
    KeyUnderTest("rsa2048", RSA_LABEL, "signing", SignMechanism.RSA_PKCS1_SHA256, CKM_RSA_PKCS,
                 pb.SHA256_WITH_RSA),
    KeyUnderTest("p256", P256_LABEL, "p256-signing", SignMechanism.ECDSA_P256, CKM_ECDSA,
                 pb.ECDSA_P256_SHA256),
)


@dataclass
class Pkcs11Series:
    key: str
    path: str  # "in-process" or "eportd"
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failed_verifications: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def p_ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000 if self.latencies else 0.0


def _message(key: str, path: str, index: int) -> bytes:
    return f"<Declaration key='{key}' via='{path}' seq='{index}'/>".encode()


def _timed_series(series: Pkcs11Series, rounds: int, sign: Callable[[bytes], bytes],
                  verify: Verifier) -> Pkcs11Series:
    """`rounds` signatures one after another; each is verified on the host, outside the clock."""
    began = time.perf_counter()
    checked_for = 0.0
    for index in range(rounds):
        data = _message(series.key, series.path, index)
        started = time.perf_counter()
        try:
            signature = sign(data)
        except (grpc.RpcError, PyKCS11.PyKCS11Error) as exc:
            series.errors.append(str(exc)[:200])
            continue
        ended = time.perf_counter()
        series.latencies.append(ended - started)
        if not verify(data, signature):
            series.failed_verifications += 1
        checked_for += time.perf_counter() - ended
    series.seconds = time.perf_counter() - began - checked_for
    return series


def daemon_has_pkcs11() -> bool:
    """Whether this eportd takes --pkcs11-module (H7's backend configuration)."""
    result = subprocess.run([sys.executable, "-m", "eport.daemon.main", "--help"],
                            capture_output=True, text=True, timeout=60)
    return "--pkcs11-module" in result.stdout


def bench_in_process(workdir: Path, rounds: int) -> tuple[list[Pkcs11Series], SoftHsm]:
    hsm = build_softhsm(workdir / "softhsm")
    # SoftHSM2 reads its configuration at C_Initialize: set it before the module loads.
    os.environ["SOFTHSM2_CONF"] = str(hsm.config)
    library = PyKCS11.PyKCS11Lib()
    library.load(SOFTHSM_MODULE)
    results = []
    for key in KEYS:
        slot = next(s for s in library.getSlotList(tokenPresent=True)
                    if library.getTokenInfo(s).label.strip() == key.token_label)
        session = library.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
        session.login(USER_PIN)
        try:
            private = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                                           (PyKCS11.CKA_ID, (0x01,))])[0]
            mechanism = PyKCS11.Mechanism(key.pkcs11_mechanism, None)

            def sign(data: bytes, key: KeyUnderTest = key, session: Any = session,
                     private: Any = private, mechanism: Any = mechanism) -> bytes:
                to_sign = digest_to_sign(key.mechanism, hashlib.sha256(data).digest())
                return bytes(session.sign(private, to_sign, mechanism))

            verifier = Verifier(key.name, hsm.keys[key.certificate].certificate_der.read_bytes(),
                                raw_rs=True)
            results.append(_timed_series(Pkcs11Series(key.name, "in-process"), rounds, sign,
                                         verifier))
        finally:
            session.logout()
            session.closeSession()
    return results, hsm


def bench_through_eportd(workdir: Path, hsm: SoftHsm, rounds: int) -> list[Pkcs11Series]:
    """eportd with the PKCS#11 backend on the same tokens. Each token shows as a reader named
    after its label; it is found by that label. The tokens are those
bench_in_process made (its session closed and logged out), so both sides sign with one key."""
    # The OpenSSL certificates are self-signed: each is its own trust anchor.
    anchors = [arg for key in KEYS
               for arg in ("--trust-anchor", str(hsm.keys[key.certificate].certificate_der))]
    daemon = start_daemon(workdir / "eportd-pkcs11", *anchors, "--pkcs11-module", SOFTHSM_MODULE,
                          env={"SOFTHSM2_CONF": str(hsm.config)})
    results = []
    try:
        stub = daemon.stub()
        deadline = time.monotonic() + 20
        readers: list[pb.Reader] = []
        while time.monotonic() < deadline:
            readers = list(stub.ListReaders(pb.ListReadersRequest(), timeout=10).readers)
            if all(any(k.token_label in r.name and r.card_id for r in readers) for k in KEYS):
                break
            time.sleep(0.1)
        for key in KEYS:
            found = [r for r in readers if key.token_label in r.name and r.card_id]
            if not found:
                results.append(Pkcs11Series(key.name, "eportd", errors=[
                    f"no reader for token {key.token_label!r}: {[r.name for r in readers]}"]))
                continue
            selector = pb.CardSelector(reader=found[0].name)
            stub.VerifyPin(pb.VerifyPinRequest(card=selector, pin=USER_PIN), timeout=30)
            certificate = stub.GetCertificate(selector, timeout=30).der
            verifier = Verifier(key.name, certificate)

            def sign(data: bytes, key: KeyUnderTest = key,
                     selector: pb.CardSelector = selector) -> bytes:
                answer = stub.Sign(pb.SignRequest(card=selector, data=data,
                                                  algorithm=key.daemon_algorithm), timeout=30)
                return bytes(answer.signature)

            results.append(_timed_series(Pkcs11Series(key.name, "eportd"), rounds, sign,
                                         verifier))
        results.append(_call_floor(stub, readers[0].name if readers else "", rounds))
    finally:
        daemon.stop()
    return results


def _call_floor(stub: Any, reader: str, rounds: int) -> Pkcs11Series:
    """GetCardInfo, answered from eportd's cache without touching the token: what one call
    costs in gRPC, eportd's socket proxy and its service layer alone."""
    series = Pkcs11Series("GetCardInfo (cached)", "eportd")
    selector = pb.CardSelector(reader=reader)
    began = time.perf_counter()
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            stub.GetCardInfo(selector, timeout=30)
        except grpc.RpcError as exc:
            series.errors.append(str(exc)[:200])
            continue
        series.latencies.append(time.perf_counter() - started)
    series.seconds = time.perf_counter() - began
    return series


def print_pkcs11_table(local: list[Pkcs11Series], daemon: list[Pkcs11Series] | None) -> None:
    print("\nPKCS#11 (SoftHSM2), one client, one signature at a time:")
    print("| key | path | signatures | sig/s | p50 ms | p99 ms | eportd / in-process sig/s "
          "| added p50 ms | errors | bad signatures |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    peers = {s.key: s for s in local}
    for series in local + (daemon or []):
        peer = peers.get(series.key) if series.path == "eportd" else None
        ratio = f"{series.per_second / peer.per_second:.3f}" if peer and peer.per_second \
            and series.latencies else ""
        added = f"{series.p_ms(0.5) - peer.p_ms(0.5):.2f}" if peer and series.latencies else ""
        first = f" ({series.errors[0]})" if series.errors else ""
        print(f"| {series.key} | {series.path} | {len(series.latencies)} | "
              f"{series.per_second:.1f} | {series.p_ms(0.5):.2f} | {series.p_ms(0.99):.2f} | "
              f"{ratio} | {added} | {len(series.errors)}{first} | "
              f"{series.failed_verifications} |")
    if daemon is None:
        print(NOT_AVAILABLE)
