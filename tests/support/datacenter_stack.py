"""The real eport-datacenter as a subprocess, and a card that signs data-centre requests.

`start_datacenter(directory, trust_anchor, *extra_args)` runs `python -m
eport.datacenter.command serve` on a Unix socket and waits for health SERVING; `.kill()` is
SIGKILL (the durability tests), `.stop()` SIGTERM, `.restart()` starts it again on the same
database. `SigningCard` signs requests with a provisioned test card's key, as the card would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.signing_algorithms import default_algorithm
from eport.common import sm2
from eport.common.customs.envelope import build_payload
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.datacenter_db import new_database
from tests.support.waiting import wait_until

_MAX_SOCKET_PATH = 100


def card_default_algorithm(key: str) -> int:
    """What a card of this key kind ("rsa1024", ...) signs with (cardlib.signing_algorithms)."""
    return pb.SignatureAlgorithm.Value(default_algorithm(KeyKind(key)).value)



@dataclass
class SigningCard:
    """A test card's key and certificate; `request()` builds a SignedRequest."""

    image: CardImage
    _loaded_key: Any = field(default=None, repr=False, compare=False)

    @property
    def customs_code(self) -> str:
        return self.image.profile.customs_code

    @property
    def card_id(self) -> str:
        return self.image.profile.card_id

    def _private_key(self) -> Any:
        # Loading (and checking) an RSA key costs tens of milliseconds: once per card.
        if self._loaded_key is None:
            self._loaded_key = serialization.load_der_private_key(self.image.private_key, None)
        return self._loaded_key

    def sign(self, data: bytes, algorithm: int | None = None) -> bytes:
        chosen = card_default_algorithm(self.image.profile.algorithm) if algorithm is None \
            else algorithm
        if chosen == pb.SM2_WITH_SM3:
            d = int.from_bytes(self.image.private_key, "big")
            return sm2.encode_der_signature(*sm2.sign_message(d, data))
        key = self._private_key()
        if isinstance(key, rsa.RSAPrivateKey):
            digest: hashes.HashAlgorithm = hashes.SHA1() if chosen == pb.SHA1_WITH_RSA \
                else hashes.SHA256()
            return key.sign(data, padding.PKCS1v15(), digest)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def request(self, method: str, body: dict[str, Any], *, nonce: str | None = None,
                now: datetime | None = None, algorithm: int | None = None,
                payload: bytes | None = None) -> pb.SignedRequest:
        data = payload if payload is not None else build_payload(method, body, nonce=nonce,
                                                                 now=now)
        chosen = card_default_algorithm(self.image.profile.algorithm) if algorithm is None \
            else algorithm
        return pb.SignedRequest(payload=data, signature=self.sign(data, chosen),
                                certificate=self.image.certificate,
                                algorithm=pb.SignatureAlgorithm.ValueType(chosen))


def error_detail(error: grpc.RpcError) -> pb.DataCenterErrorDetail:
    """The DataCenterErrorDetail in a failed call's rich-status trailer."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status in {error}"
    detail = pb.DataCenterErrorDetail()
    assert status.details and status.details[0].Unpack(detail)
    return detail


def short_socket_path(directory: Path, name: str = "datacenter.sock") -> Path:
    """A socket path that fits in sun_path (pytest's tmp_path can be too long)."""
    path = directory / name
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp")) / name


def _libfaketime() -> str:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is missing: apt-get install faketime (scripts/setup.sh)")
    return str(found[0])


@dataclass
class DataCenterProcess:
    directory: Path
    trust_anchor: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    # Days the data centre's clock runs ahead (libfaketime), to see grants and certificates
    # expire as they would; its clock-skew allowance grows to match.
    days_ahead: int = 0
    _channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.socket_path = short_socket_path(self.directory)
        self.db_path = new_database(self.directory)
        self.log_path = self.directory / "datacenter.log"

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    def start(self, timeout: float = 20.0) -> None:
        command = [sys.executable, "-m", "eport.datacenter.command", "serve",
                   "--db", str(self.db_path), "--listen", self.address,
                   "--trust-anchor", str(self.trust_anchor), "--log-level", "DEBUG",
                   *self.extra_args]
        environment = dict(os.environ)
        if self.days_ahead:
            # libfaketime preloaded into the server itself (the `faketime` wrapper would stand
            # between it and our signals).
            command += ["--max-clock-skew", str(self.days_ahead * 86400 + 300)]
            environment.update(LD_PRELOAD=_libfaketime(), FAKETIME=f"+{self.days_ahead}d")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=environment)
        self._wait_serving(timeout)

    def _wait_serving(self, timeout: float) -> None:
        process = self.process
        assert process is not None

        def serving() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"eport-datacenter exited with {process.returncode}:"
                                   f"\n{self.log()}")
            # A channel made before the socket exists backs off for a second: wait for it.
            if not self.socket_path.exists():
                return False
            with grpc.insecure_channel(self.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1)
            answered: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
            return answered

        try:
            wait_until(serving, timeout=timeout, interval=0.02, retry_on=(grpc.RpcError,),
                       what="eport-datacenter serves")
        except AssertionError as exc:
            raise RuntimeError(f"eport-datacenter did not become ready ({exc}):\n{self.log()}"
                               ) from None

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.address)
        self._channels.append(channel)
        return channel

    def stub(self) -> pb_grpc.DataCenterStub:
        return pb_grpc.DataCenterStub(self.channel())

    def _close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power loss of the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_channels()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; the exit code (None when it was not running)."""
        self._close_channels()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def restart(self, *, days_ahead: int | None = None) -> None:
        self.stop()
        if days_ahead is not None:
            self.days_ahead = days_ahead
        self.start()

    def authorization(self) -> pb_grpc.AuthorizationStub:
        return pb_grpc.AuthorizationStub(self.channel())

    def bonded(self) -> pb_grpc.BondedVerificationStub:
        return pb_grpc.BondedVerificationStub(self.channel())

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def start_datacenter(directory: Path, trust_anchor: Path, *extra_args: str
                     ) -> DataCenterProcess:
    directory.mkdir(parents=True, exist_ok=True)
    process = DataCenterProcess(directory, trust_anchor, tuple(extra_args))
    process.start()
    return process


@contextlib.contextmanager
def running_datacenter(directory: Path, trust_anchor: Path, *extra_args: str
                       ) -> Iterator[DataCenterProcess]:
    process = start_datacenter(directory, trust_anchor, *extra_args)
    try:
        yield process
    finally:
        process.stop()


# ---- in-process data centre and cards for the unit tier -------------------------------------

ENTERPRISE_A = ("5301234567", "测试进出口贸易有限公司")
ENTERPRISE_B = ("4401987654", "测试报关行有限公司")
_CARDS: dict[tuple[str, str, str, str], SigningCard] = {}


def make_signing_card(ca: Any, kind: Any, algorithm: str = "p256",
              enterprise: tuple[str, str] = ENTERPRISE_A, **overrides: Any) -> SigningCard:
    """A provisioned card of the enterprise; cached per CA, kind, algorithm and enterprise
    (key generation is slow) unless overrides (validity dates...) make it special."""
    from eport.firmware_sim.provision import random_credit_code
    from tests.support.cards import provision_test_card

    key = (str(ca.directory), str(kind), algorithm, enterprise[0])
    if not overrides and key in _CARDS:
        return _CARDS[key]
    credit = _CREDIT.setdefault(enterprise[0], random_credit_code())
    card = SigningCard(provision_test_card(ca, algorithm, kind=kind, customs_code=enterprise[0],
                                           enterprise_name=enterprise[1], credit_code=credit,
                                           **overrides))
    if not overrides:
        _CARDS[key] = card
    return card


_CREDIT: dict[str, str] = {}


@contextlib.contextmanager
def serving(directory: Path, trust_anchor: Path, **settings: Any
            ) -> Iterator[tuple[Any, pb_grpc.DataCenterStub]]:
    """The real server (run_server) in this process on a Unix socket in `directory`."""
    from eport.datacenter.server import DataCenterSettings, run_server

    socket_path = short_socket_path(directory)
    options = {"db_path": new_database(directory), "listen": f"unix:{socket_path}",
               "trust_anchors": (trust_anchor,), **settings}
    with run_server(DataCenterSettings(**options)) as running, \
            grpc.insecure_channel(running.address) as channel:
        yield running, pb_grpc.DataCenterStub(channel)
        running.stop(grace=1.0)
