"""Who is calling: SO_PEERCRED for every connection, and the proxy that makes it visible.

Python grpc cannot report the credentials of a Unix-socket peer (context.peer() is only
"unix:"). So eportd listens on the public socket itself: for each connection it reads the
peer's pid/uid/gid from the kernel, refuses peers the policy does not allow, and splices the
bytes to the real grpc server on a private socket. The outgoing connection is bound to a fresh
path first; grpc then reports that path as context.peer(), and the PeerRegistry maps it back to
the caller's credentials.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import itertools
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)

_RECV_SIZE = 64 * 1024
_CRED = struct.Struct("3i")
# Linux 4.13+: the peer's supplementary groups as the kernel saw them at connect(); not all
# Python builds export the constant.
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_MAX_GROUPS = 65536


@dataclass(frozen=True)
class PeerCred:
    """The calling process as the kernel reported it when it connected."""

    pid: int
    uid: int
    gid: int


def read_peer_cred(sock: socket.socket) -> PeerCred:
    pid, uid, gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return PeerCred(pid=pid, uid=uid, gid=gid)


def _groups_from_socket(sock: socket.socket) -> frozenset[int] | None:
    size = 64 * 4
    while size <= _MAX_GROUPS * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                size *= 4
                continue
            return None  # an older kernel
        count = len(raw) // 4
        return frozenset(struct.unpack(f"{count}I", raw[:count * 4]))
    return None


def _groups_from_proc(pid: int) -> frozenset[int] | None:
    # Racy (the pid could exit and be reused), hence only a fallback for old kernels.
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        return None
    return None


def read_peer_groups(sock: socket.socket, cred: PeerCred) -> frozenset[int]:
    """The peer's primary and supplementary groups, best source first."""
    groups = _groups_from_socket(sock)
    if groups is None:
        groups = _groups_from_proc(cred.pid) or frozenset()
    return groups | {cred.gid}


@dataclass(frozen=True)
class PeerPolicy:
    """Which peers may call: root and our own uid always; in system mode also members of the
    socket's group (the file mode already says so; this check holds even if it is loosened)."""

    server_uid: int
    group_gid: int | None = None

    def allows(self, cred: PeerCred, groups: Iterable[int] = ()) -> bool:
        if cred.uid in (0, self.server_uid):
            return True
        return self.group_gid is not None and self.group_gid in set(groups) | {cred.gid}


class PeerRegistry:
    """Maps grpc's context.peer() string of a proxied connection to the caller's credentials.

    One per server (RunningServer.peers); entries live exactly as long as the connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, PeerCred] = {}

    def register(self, peer: str, cred: PeerCred) -> None:
        with self._lock:
            self._peers[peer] = cred

    def unregister(self, peer: str) -> None:
        with self._lock:
            self._peers.pop(peer, None)

    def lookup(self, peer: str) -> PeerCred | None:
        with self._lock:
            return self._peers.get(peer)

    def peer_of(self, context: grpc.ServicerContext) -> PeerCred | None:
        return self.lookup(context.peer())

    def __len__(self) -> int:
        with self._lock:
            return len(self._peers)


# The call the current thread is serving, set by the logging interceptor around the servicer's
# code. It carries the context too, so a value left over from another call is never returned.
_current_call: contextvars.ContextVar[tuple[grpc.ServicerContext, PeerCred | None] | None] = (
    contextvars.ContextVar("eportd_current_call", default=None))


def peer_of(context: grpc.ServicerContext) -> PeerCred | None:
    """The credentials of the process making this call, for use inside a servicer method.

    None when the call did not come through the proxy (or the interceptor is not installed).
    """
    current = _current_call.get()
    if current is not None and current[0] is context:
        return current[1]
    return None


@contextlib.contextmanager
def serving_call(context: grpc.ServicerContext, cred: PeerCred | None) -> Iterator[None]:
    """Make peer_of(context) answer `cred` while the servicer's code runs in this thread."""
    token = _current_call.set((context, cred))
    try:
        yield
    finally:
        _current_call.reset(token)


class _Splice:
    """One client connection spliced to one grpc connection, a thread per direction."""

    def __init__(self, proxy: PeerProxy, client: socket.socket, upstream: socket.socket,
                 peer: str, cred: PeerCred) -> None:
        self._proxy = proxy
        self.client = client
        self.upstream = upstream
        self.peer = peer
        self.cred = cred
        self._lock = threading.Lock()
        self._running = 2
        self._threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True,
                             name=f"eportd-splice-{cred.pid}-in"),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True,
                             name=f"eportd-splice-{cred.pid}-out"),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_RECV_SIZE)
                if not data:
                    # Half-close: the other direction may still carry the last response.
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    break
                sink.sendall(data)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EBADF, errno.ENOTCONN):
                logger.warning("connection of pid %d failed: %s", self.cred.pid, exc)
            self.abort()
        finally:
            self._direction_done()

    def abort(self) -> None:
        """Wake both pumps: shutdown makes their recv() return at once."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _direction_done(self) -> None:
        with self._lock:
            self._running -= 1
            finished = self._running == 0
        if finished:
            self.client.close()
            self.upstream.close()
            self._proxy._connection_ended(self)

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)


class PeerProxy:
    """Accepts on the public socket, checks each peer, and splices it to the grpc server."""

    def __init__(self, listener: socket.socket, target: Path, private_dir: Path,
                 registry: PeerRegistry, policy: PeerPolicy) -> None:
        self._listener = listener
        self._target = str(target)
        self._private_dir = private_dir
        self._registry = registry
        self._policy = policy
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._connections: set[_Splice] = set()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="eportd-accept")

    def start(self) -> None:
        self._thread.start()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def _accept_loop(self) -> None:
        try:
            self._listener.setblocking(False)
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._listener and not self._stopping.is_set():
                            self._accept_one()
        except Exception:
            # Without this thread nobody can connect: make it loud.
            logger.critical("the accept loop failed; eportd accepts no more connections",
                            exc_info=True)

    def _accept_one(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # EMFILE and friends: say so and back off instead of spinning on a ready listener.
            logger.error("cannot accept a connection: %s", exc)
            time.sleep(0.1)
            return
        try:
            client.setblocking(True)
            self._admit(client)
        except Exception:
            logger.exception("cannot set up a client connection")
            client.close()

    def _admit(self, client: socket.socket) -> None:
        cred = read_peer_cred(client)
        groups: frozenset[int] = frozenset()
        if cred.uid not in (0, self._policy.server_uid) and self._policy.group_gid is not None:
            groups = read_peer_groups(client, cred)
        if not self._policy.allows(cred, groups):
            logger.warning("refused connection from uid %d pid %d: not allowed to use eportd",
                           cred.uid, cred.pid,
                           extra={"uid": cred.uid, "pid": cred.pid, "gid": cred.gid})
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = os.path.join(self._private_dir, f"c{next(self._names)}")
        peer = f"unix:{bound}"
        try:
            upstream.bind(bound)
            # Registered before connect: grpc may run the first call before we return.
            self._registry.register(peer, cred)
            try:
                upstream.connect(self._target)
            finally:
                # The bound name only has to stay unique; the file itself is not needed.
                with contextlib.suppress(OSError):
                    os.unlink(bound)
        except BaseException:
            self._registry.unregister(peer)
            upstream.close()
            client.close()
            raise
        splice = _Splice(self, client, upstream, peer, cred)
        with self._lock:
            self._connections.add(splice)
        logger.debug("connection from uid %d pid %d as %s", cred.uid, cred.pid, peer)
        splice.start()

    def _connection_ended(self, splice: _Splice) -> None:
        self._registry.unregister(splice.peer)
        with self._lock:
            self._connections.discard(splice)

    def stop_accepting(self) -> None:
        """Stop accepting and close our listening socket; open connections keep working."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        if self._thread.ident is not None:
            self._thread.join()
        self._listener.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting and cut every remaining connection."""
        self.stop_accepting()
        with self._lock:
            remaining = list(self._connections)
        for splice in remaining:
            splice.abort()
        for splice in remaining:
            splice.join(timeout)
        self._wake_read.close()
        self._wake_write.close()
