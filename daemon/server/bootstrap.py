"""run_server(): eportd's socket, grpc server, health, reflection and peer proxy, in one place.

main() and the tests share it (as in grpc's Python examples). The public socket is served by
the PeerProxy, which checks each caller with SO_PEERCRED; grpc itself listens only on a socket
in a private 0700 directory. Also here: systemd socket activation and sd_notify.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eport.common.socket_location import SYSTEM_GROUP, SYSTEM_SOCKET_MODE, USER_SOCKET_MODE
from eport.common.text import Bilingual
from eport.daemon.config import DaemonSettings
from eport.daemon.server.call_limits import CallLimitInterceptor, CallLimits, worker_threads
from eport.daemon.server.interceptor import CallLogInterceptor
from eport.daemon.server.peer_proxy import PeerPolicy, PeerProxy, PeerRegistry
from eport.daemon.server.socket_path import (
    MAX_SOCKET_PATH_BYTES,
    SYSTEM_MODE,
    ServerConfigError,
    claim_socket_path,
    remove_stale_private_dirs,
)
from eport.protos.v1 import eportd_pb2

logger = logging.getLogger(__name__)

CARD_SERVICE_NAME: str = eportd_pb2.DESCRIPTOR.services_by_name["CardService"].full_name
SD_LISTEN_FDS_START = 3
_LISTEN_BACKLOG = 128
# The longest name the proxy binds in the private directory ("c" and a 64-bit counter).
_LONGEST_CLIENT_NAME = "c18446744073709551615"


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd our state ("READY=1", "STOPPING=1"); False when not run by systemd."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    elif not address.startswith("/"):
        return False  # unset, or a transport (vsock) we do not speak
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as notify:
            notify.connect(address)
            notify.sendall(state.encode())
    except OSError as exc:
        logger.warning("cannot notify systemd (%s): %s", state, exc)
        return False
    return True


def take_activated_socket(environ: MutableMapping[str, str] | None = None
                          ) -> socket.socket | None:
    """The listening socket systemd passed us (fd 3), or None when not socket-activated.

    LISTEN_PID guards against variables inherited from a parent that was activated; like
    sd_listen_fds(1) we remove them so our own children do not take the fd for theirs.
    """
    env = os.environ if environ is None else environ
    listen_pid, listen_fds = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    if not listen_pid or not listen_fds:
        return None
    try:
        pid, count = int(listen_pid), int(listen_fds)
    except ValueError:
        logger.warning("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", listen_pid, listen_fds)
        return None
    if pid != os.getpid() or count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count > 1:
        logger.warning("systemd passed %d sockets; eportd uses only the first", count)
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as exc:
        raise ServerConfigError(Bilingual(f"systemd 传入的套接字 (fd 3) 不可用: {exc.strerror}",
                                          "The socket systemd passed (fd 3) is not usable: "
                                          f"{exc.strerror}"),
                                Bilingual("检查 eportd.socket 单元。",
                                          "check the eportd.socket unit.")) from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()  # not ours to close
        raise ServerConfigError(Bilingual("systemd 传入的 fd 3 不是正在监听的 Unix 流套接字",
                                          "The fd 3 systemd passed is not a listening Unix "
                                          "stream socket"),
                                Bilingual("在 eportd.socket 中使用 "
                                          "ListenStream=/run/eportd/eportd.sock。",
                                          "use ListenStream=/run/eportd/eportd.sock in "
                                          "eportd.socket."))
    sock.set_inheritable(False)
    return sock


def _socket_group_gid(settings: DaemonSettings) -> int | None:
    if settings.mode != SYSTEM_MODE:
        return None  # user mode: only our own uid (and root) may call
    name = settings.socket_group or SYSTEM_GROUP
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ServerConfigError(Bilingual(f"用户组 {name} 不存在，系统模式需要它来授权访问套接字",
                                          f"The group {name} does not exist; system mode needs "
                                          "it to grant access to the socket"),
                                Bilingual("groupadd --system "
                                          f"{name}，再把需要使用电子口岸卡的用户加入该组 "
                                          f"(usermod -aG {name} 用户名)。",
                                          f"groupadd --system {name}, then add the users who "
                                          f"need the card (usermod -aG {name} USER).")) from None


def _listen(path: Path, group_gid: int | None) -> socket.socket:
    """Bind, set owner and mode, then listen: no connection can arrive before the mode is set."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        try:
            if group_gid is not None:
                os.chown(path, -1, group_gid, follow_symlinks=False)
                os.chmod(path, SYSTEM_SOCKET_MODE)
            else:
                os.chmod(path, USER_SOCKET_MODE)
        except PermissionError:
            path.unlink()
            raise ServerConfigError(Bilingual(f"无法把套接字 {path} 交给用户组 (gid {group_gid})",
                                              f"Cannot give the socket {path} to its group (gid "
                                              f"{group_gid})"),
                                    Bilingual("以 root 运行系统模式，或让 eportd 的用户加入该组。",
                                              "run system mode as root, or add eportd's user to "
                                              "that group.")) from None
        listener.listen(_LISTEN_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


def _unlink_if_ours(path: Path, inode: int) -> None:
    # Only our own socket: never a file someone put there after we stopped listening.
    with contextlib.suppress(FileNotFoundError):
        if path.lstat().st_ino == inode:
            path.unlink()


def _bound_path(sock: socket.socket) -> Path | None:
    name = sock.getsockname()
    if isinstance(name, str) and name.startswith("/"):
        return Path(name)
    return None  # abstract or unnamed


def private_dir_prefix(socket_path: Path) -> str:
    return f".{socket_path.name}.private-"


def _make_private_dir(candidates: list[tuple[Path, str]]) -> Path:
    """A fresh 0700 directory (mkdtemp) for grpc's socket, short enough for sun_path."""
    for base, prefix in candidates:
        try:
            directory = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        except OSError:
            continue
        if len(os.fsencode(directory / _LONGEST_CLIENT_NAME)) <= MAX_SOCKET_PATH_BYTES:
            return directory
        directory.rmdir()
    raise ServerConfigError(Bilingual("无法创建私有套接字目录 (权限不足或路径过长)",
                                      "Cannot create the private socket directory (no "
                                      "permission, or the path is too long)"),
                            Bilingual("用 --socket 指定更短的路径，或检查 TMPDIR。",
                                      "pass a shorter path with --socket, or check TMPDIR."))


class RunningServer:
    """What run_server() yields: the live server and the means to stop it."""

    def __init__(self, socket_path: Path, server: grpc.Server, health_servicer: Any,
                 peers: PeerRegistry, proxy: PeerProxy, systemd_activated: bool,
                 limits: CallLimits | None = None) -> None:
        self.socket_path = socket_path
        self.server = server
        # grpc_health.v1.health.HealthServicer; the card service may set() its own status.
        self.health = health_servicer
        self.peers = peers
        self.systemd_activated = systemd_activated
        self.limits = limits or CallLimits()
        self._proxy = proxy
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def connection_count(self) -> int:
        return self._proxy.connection_count

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting, let in-flight calls finish within `grace` seconds, then cut all
        connections. None cancels in-flight calls at once. Calling it again does nothing."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._proxy.stop_accepting()
        # Watchers of the health service learn NOT_SERVING before their streams end.
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self._proxy.close()
        logger.info("eportd stopped serving %s", self.socket_path,
                    extra={"path": str(self.socket_path)})


@contextlib.contextmanager
def run_server(settings: DaemonSettings, register: Callable[[grpc.Server], None], *,
               environ: MutableMapping[str, str] | None = None) -> Iterator[RunningServer]:
    """Serve eportd at settings.socket_path until the block exits.

    At most settings.max_calls calls run at once and settings.max_streams streams are open
    at once, on a pool of both together (eport.daemon.server.call_limits).

    `register(server)` adds the card service; it runs after the socket is ours and before the
    first call can arrive. Health ("" and eport.v1.CardService: SERVING) and reflection are
    added here. Raises ServerConfigError when the socket cannot safely be served.
    """
    policy = PeerPolicy(server_uid=os.getuid(), group_gid=_socket_group_gid(settings))
    with contextlib.ExitStack() as cleanup:
        activated = take_activated_socket(environ) if settings.systemd_activation else None
        if activated is not None:
            # systemd owns the socket file: no claim, no chmod, no unlink.
            listener = activated
            cleanup.callback(listener.close)
            socket_path = _bound_path(listener) or settings.socket_path
            candidates = [(socket_path.parent, "eportd-")]
            logger.info("using the socket systemd passed: %s", socket_path)
        else:
            socket_path = settings.socket_path
            claim = claim_socket_path(socket_path, settings.mode)
            cleanup.callback(claim.release)
            prefix = private_dir_prefix(socket_path)
            remove_stale_private_dirs(socket_path.parent, prefix)
            listener = _listen(socket_path, policy.group_gid)
            cleanup.callback(_unlink_if_ours, socket_path, os.stat(socket_path).st_ino)
            cleanup.callback(listener.close)
            candidates = [(socket_path.parent, prefix)]
        candidates.append((Path(tempfile.gettempdir()), "eportd-"))
        private_dir = _make_private_dir(candidates)
        cleanup.callback(shutil.rmtree, private_dir, ignore_errors=True)
        if stat.S_IMODE(private_dir.stat().st_mode) != 0o700:
            raise RuntimeError(f"{private_dir} is not 0700")  # mkdtemp promises it

        peers = PeerRegistry()
        limits = CallLimits(settings.max_calls, settings.max_streams)
        executor = ThreadPoolExecutor(worker_threads(limits.max_calls, limits.max_streams),
                                      thread_name_prefix="eportd-rpc")
        cleanup.callback(executor.shutdown, wait=False, cancel_futures=True)
        server = grpc.server(executor,
                             interceptors=[CallLogInterceptor(peers), CallLimitInterceptor(limits)],
                             options=[("grpc.so_reuseport", 0)])
        # Watch streams run as ordinary generators through the logging interceptor (its
        # wrapper hides grpc's experimental non-blocking mode), one worker thread each.
        health_servicer = health.HealthServicer()
        register(server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in ("", CARD_SERVICE_NAME):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (CARD_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        target = private_dir / "grpc.sock"
        server.add_insecure_port(f"unix:{target}")
        server.start()
        cleanup.callback(server.stop, None)

        proxy = PeerProxy(listener, target, private_dir, peers, policy)
        running = RunningServer(socket_path, server, health_servicer, peers, proxy,
                                systemd_activated=activated is not None, limits=limits)
        cleanup.callback(running.stop, None)
        proxy.start()
        logger.debug("grpc listens on %s; proxy on %s", target, socket_path)
        yield running
