"""run_server(): the data centre's store, review worker, gRPC server and health, in one place.

main() and the tests share it (as in grpc's Python examples). Listening: a Unix socket (its
directory made 0700 when we create it, the socket itself 0600) or, for a networked test bed,
TCP host:port. Off loopback only with TLS (datacenter/tls.py): requests are signed, but a
plaintext channel would show every declaration to the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eport.common.customs.endpoint import unix_socket_path
from eport.common.failure import ConfigFailure
from eport.common.text import Bilingual
from eport.datacenter.auth_servicer import AuthorizationServicer
from eport.datacenter.bonded import BondedLedger
from eport.datacenter.bonded_servicer import SERVICE_NAME as BONDED_SERVICE_NAME
from eport.datacenter.bonded_servicer import BondedVerificationServicer
from eport.datacenter.documents import Ledger, Validator
from eport.datacenter.receipt_feed import ReceiptFeed
from eport.datacenter.receipts import ReceiptHub
from eport.datacenter.review import ReviewPolicy, ReviewWorker
from eport.datacenter.revocation import CrlIndex, DenyList
from eport.datacenter.servicer import DataCenterServicer
from eport.datacenter.storage import Store, open_store
from eport.datacenter.tls import (
    ServerTls,
    TlsConfigError,
    check_listen_security,
    server_credentials,
    unix_socket_with_tls,
)
from eport.datacenter.trust import DEFAULT_MAX_CLOCK_SKEW, RequestVerifier
from eport.datacenter.trust_store import TrustConfigError, load_trust
from eport.datacenter.unavailable import UnavailableInterceptor
from eport.protos.v1 import datacenter_pb2
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME: str = datacenter_pb2.DESCRIPTOR.services_by_name["DataCenter"].full_name
AUTHORIZATION_SERVICE_NAME: str = datacenter_pb2.DESCRIPTOR.services_by_name[
    "Authorization"].full_name
_SOCKET_MODE = 0o600


class ServerConfigError(ConfigFailure):
    """The data centre cannot start as configured."""

    code = "SERVER_CONFIG"


@dataclass(frozen=True)
class DataCenterSettings:
    db_path: str | Path  # a SQLite file or a postgresql:// URL (storage.open_store)
    listen: str
    trust_anchors: tuple[Path, ...]
    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    review_delay: float = 0.0
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    # Required for a TCP address off loopback; optional on loopback; refused on a Unix socket.
    tls: ServerTls | None = None
    # WatchReceipts streams hold a worker thread each.
    max_workers: int = 64


def _default_validator() -> Validator:
    from eport.common.customs.document import validate

    return validate


def _claim_unix_path(path: Path) -> None:
    """Make the parent directory (0700 when ours) and remove a stale socket of a dead server;
    refuse to take over a live one or any other file."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServerConfigError(Bilingual(f"{path} 已存在且不是套接字",
                                          f"{path} exists and is not a socket"),
                                Bilingual("删除该文件, 或换一个 --listen 路径。",
                                          "remove it or choose another --listen path."))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: left by a killed server
        return
    finally:
        probe.close()
    raise ServerConfigError(Bilingual(f"另一个数据中心已在服务 {path}",
                                      f"another data centre is already serving {path}"),
                            Bilingual("先停止它, 或换一个 --listen 路径。",
                                      "stop it, or choose another --listen path."))


def _no_trust_anchors(paths: tuple[Path, ...]) -> ServerConfigError:
    shown = ", ".join(map(str, paths)) or "(none)"
    return ServerConfigError(Bilingual(f"无法从 {shown} 读到任何信任锚证书",
                                       f"no trust anchor certificates could be read from {shown}"),
                             Bilingual("用 --trust-anchor 给出卡 CA 的 PEM 证书文件。",
                                       "pass --trust-anchor with the card CA's PEM file."))


def _tcp_address(address: str, tls: ServerTls | None) -> str:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ServerConfigError(Bilingual(f"--listen {address!r}: 不是可用的监听地址",
                                          f"--listen {address!r}: not a listen address"),
                                Bilingual("使用 unix:/path、/path 或 host:port。",
                                          "use unix:/path, /path or host:port."))
    try:
        check_listen_security(host, address, tls)
    except TlsConfigError as error:
        raise ServerConfigError(error.message, error.remedy) from None
    return address


def _credentials(settings: DataCenterSettings, unix: bool) -> grpc.ServerCredentials | None:
    if settings.tls is None:
        return None
    if unix:
        raise ServerConfigError(*unix_socket_with_tls(settings.listen))
    try:
        return server_credentials(settings.tls)
    except TlsConfigError as error:
        raise ServerConfigError(error.message, error.remedy) from None


class RunningDataCenter:
    """What run_server() yields."""

    def __init__(self, address: str, store: Store, server: grpc.Server, health_servicer: object,
                 hub: ReceiptHub, worker: ReviewWorker) -> None:
        self.address = address
        self.store = store
        self.server = server
        self._health = health_servicer
        self._hub = hub
        self.worker = worker
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop serving (in-flight calls get `grace` seconds), then the worker and the store.
        Calling it again does nothing."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._health.enter_graceful_shutdown()  # type: ignore[attr-defined]
        self._hub.close()  # WatchReceipts streams end rather than hold the shutdown
        self.server.stop(grace).wait()
        self.worker.stop()
        self.store.close()
        logger.info("eport-datacenter stopped serving %s", self.address)


@contextlib.contextmanager
def run_server(settings: DataCenterSettings, *, validator: Validator | None = None
               ) -> Iterator[RunningDataCenter]:
    """Serve the data centre until the block exits. Raises ServerConfigError (bad address,
    no trust anchors, a trust anchor that is not a CA, a CRL no anchor signed) or StorageError
    (unusable database) before serving."""
    started = datetime.now(UTC)
    try:
        trust = load_trust(settings.trust_anchors, now=started)
        crls = CrlIndex(settings.trust_anchors, trust.cas, now=started)
    except TrustConfigError as error:
        raise ServerConfigError(error.message, error.remedy) from None
    if not trust.cas:
        raise _no_trust_anchors(settings.trust_anchors)
    socket_path = unix_socket_path(settings.listen)
    target = (f"unix:{socket_path.absolute()}" if socket_path is not None
              else _tcp_address(settings.listen, settings.tls))
    credentials = _credentials(settings, socket_path is not None)
    with contextlib.ExitStack() as cleanup:
        store = open_store(settings.db_path)
        cleanup.callback(store.close)
        hub = ReceiptHub()
        cleanup.callback(hub.close)
        worker = ReviewWorker(store, settings.review, hub,
                              max_clock_skew=settings.max_clock_skew)
        cleanup.callback(worker.stop)
        verifier = RequestVerifier(trust, max_clock_skew=settings.max_clock_skew, crls=crls,
                                   deny_list=DenyList(store))
        ledger = Ledger(store, validator or _default_validator(),
                        review_delay=settings.review_delay)
        executor = ThreadPoolExecutor(settings.max_workers,
                                      thread_name_prefix="eport-datacenter-rpc")
        cleanup.callback(executor.shutdown, wait=False, cancel_futures=True)
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)],
                             interceptors=[UnavailableInterceptor()])
        pb_grpc.add_DataCenterServicer_to_server(
            DataCenterServicer(store, verifier, ledger, hub, worker, settings.review), server)
        pb_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(store, verifier), server)
        pb_grpc.add_BondedVerificationServicer_to_server(BondedVerificationServicer(
            verifier, BondedLedger(store, review_delay=settings.review_delay), hub, worker),
            server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if socket_path is not None:
            _claim_unix_path(socket_path.absolute())
        # The socket is born 0600 (umask) rather than chmod-ed after a window of default mode.
        previous_umask = os.umask(0o177) if socket_path is not None else None
        try:
            port = (server.add_insecure_port(target) if credentials is None
                    else server.add_secure_port(target, credentials))
            server.start()
        except RuntimeError as error:
            raise ServerConfigError(Bilingual(f"无法监听 {settings.listen}: {error}",
                                              f"cannot listen on {settings.listen}: {error}"),
                                    Bilingual("检查该地址是否已被占用、能否在本机绑定。",
                                              "check that the address is free and can be bound "
                                              "on this machine.")) from None
        finally:
            if previous_umask is not None:
                os.umask(previous_umask)
        if socket_path is None:
            address = f"{target.rpartition(':')[0]}:{port}"
        else:
            address = f"unix:{socket_path.absolute()}"
        cleanup.callback(server.stop, None)
        if socket_path is not None:
            os.chmod(socket_path, _SOCKET_MODE)
            cleanup.callback(_remove_socket, socket_path)
        worker.start()  # resumes reviews left pending by a previous run
        # Receipts saved through another process on the same database wake our streams.
        feed = ReceiptFeed(store.read, hub)
        feed.start()
        cleanup.callback(feed.stop)
        running = RunningDataCenter(address, store, server, health_servicer, hub, worker)
        cleanup.callback(running.stop, None)
        for service in ("", SERVICE_NAME):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set(AUTHORIZATION_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set(BONDED_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info("eport-datacenter ready on %s (database %s, schema %d, %s)", address,
                    store.description, store.schema_version,
                    "plaintext" if credentials is None else
                    "TLS with client certificates" if settings.tls and settings.tls.client_ca
                    else "TLS")
        yield running


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
