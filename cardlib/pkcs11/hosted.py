"""The PKCS#11 backend as eportd runs it: the module in a host process of its own (host.py).

A module call that blocks holds Python's interpreter lock in its process (PyKCS11 never lets
go of it), so in eportd's own process it would stop every other call, reader and client. In
the host it stops only the host. eportd notices in two ways and then kills the host and starts
a new one, with backoff, as it restarts a module that failed to load:

- a call gets no answer within `call_timeout` seconds (that call fails with
  SERVICE_NOT_RUNNING: it may have reached the token, so it is not sent again);
- the host's presence monitor, which reports after every scan of the module (at least every
  ten seconds, even while the module is down), has said nothing for `call_timeout` seconds.

A restart is what a pcscd restart is for PC/SC: the host's readers go (service_down), its
sessions are gone with its process (the token logged out), and the new host reports the tokens
as new insertions. A connection made before answers INVALID_HANDLE, so the card worker
connects again and runs its job on the new host.

This module imports no PKCS#11 library: only the host does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.pkcs11.host_wire import (
    CARD_GONE,
    CLOSE,
    CONNECT,
    LISTENER_METHODS,
    TOKEN,
    EncodedError,
    HostSettings,
    decode_error,
)
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.token import (
    CertificateRole,
    Credential,
    CredentialStatus,
    PresenceListener,
    ReaderPresence,
    no_transaction,
)
from eport.common.profile import EportProfile

logger = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_S = 30.0
_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 10.0
_STOP_GRACE_S = 3.0
_HEALTHY_RUN_S = 60.0  # a host that lived this long starts the next one without delay


@dataclass(frozen=True)
class ModuleLocation:
    """Where the module is (what GetDaemonInfo and `eport doctor` show of a PKCS#11 backend)."""

    path: str

    @property
    def basename(self) -> str:
        return os.path.basename(self.path)


class _Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None


class ModuleHost:
    """One running host process and the calls waiting on it."""

    def __init__(self, settings: HostSettings, listener: PresenceListener | None) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eport.cardlib.pkcs11.host", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._connection = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._listener = listener
        self._waiters: dict[int, _Waiter] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.ended = threading.Event()
        self.cause = ""
        self.last_heard = time.monotonic()
        # Presence events wait here for their own thread: the reader must never block on the
        # card service (which may be waiting for a reply the reader is to deliver).
        self._events: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._send(("start", settings))
        name = os.path.basename(settings.module_path)
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"pkcs11-host {name}")
        self._dispatcher = threading.Thread(target=self._dispatch_events, daemon=True,
                                            name=f"pkcs11-host-events {name}")
        self._reader.start()
        self._dispatcher.start()

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()

    def detach_listener(self) -> None:
        """No more presence events from this host (eportd is shutting down)."""
        self._listener = None

    def call(self, operation: str, *args: Any, timeout: float) -> Any:
        waiter = _Waiter()
        with self._lock:
            if self.ended.is_set():
                raise TokenUnavailable(Unavailable.INVALID_HANDLE,
                                       f"{operation}: the PKCS#11 module's host has ended")
            call_id = next(self._ids)
            self._waiters[call_id] = waiter
        try:
            self._send(("call", call_id, operation, args))
            if not waiter.done.wait(timeout):
                self.kill(f"the PKCS#11 module did not answer {operation!r} within "
                          f"{timeout:g} s")
                raise TokenUnavailable(Unavailable.SERVICE_NOT_RUNNING,
                                       f"{operation}: {self.cause}; its process is restarted")
        finally:
            with self._lock:
                self._waiters.pop(call_id, None)
        if waiter.ok:
            return waiter.value
        raise waiter.value

    def stop(self) -> None:
        """Ask the host to finalise the module and exit; kill it if it does not."""
        with contextlib.suppress(OSError):
            self._send(("stop",))
        try:
            self.process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill("it did not stop when asked")
        self.ended.wait(_STOP_GRACE_S)

    def kill(self, cause: str) -> None:
        with self._lock:
            if not self.cause:
                self.cause = cause
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        # The reader sees the socket close and ends every waiting call.

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                self._connection.send(message)
            except (OSError, ValueError):
                raise TokenUnavailable(Unavailable.INVALID_HANDLE,
                                       "the PKCS#11 module's host has ended") from None

    def _read(self) -> None:
        try:
            while True:
                message = self._connection.recv()
                self.last_heard = time.monotonic()
                self._handle(message)
        except (EOFError, OSError):
            pass
        finally:
            self._ended()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "reply":
            _kind, call_id, ok, value = message
            with self._lock:
                waiter = self._waiters.get(call_id)
            if waiter is not None:
                waiter.ok = ok
                waiter.value = value if ok else decode_error(value) \
                    if isinstance(value, EncodedError) else RuntimeError(repr(value))
                waiter.done.set()
        elif kind == "event" and message[1] in LISTENER_METHODS:
            self._events.put(message)
        elif kind == "log":
            logger.log(int(message[1]), "%s", message[2])

    def _dispatch_events(self) -> None:
        while (message := self._events.get()) is not None:
            listener = self._listener
            if listener is not None:
                try:
                    getattr(listener, message[1])(*message[2], **message[3])
                except Exception:  # one bad callback must not end the host's events
                    logger.exception("PKCS#11 presence event %s failed", message[1])

    def _ended(self) -> None:
        self._events.put(None)
        with contextlib.suppress(OSError):
            self._connection.close()
        code = self.process.poll()
        with self._lock:
            if not self.cause:
                self.cause = f"the PKCS#11 module's host exited (status {code})" \
                    if code is not None else "the PKCS#11 module's host closed its end"
            self.ended.set()
            waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.ok = False
            waiter.value = TokenUnavailable(Unavailable.SERVICE_NOT_RUNNING, self.cause)
            waiter.done.set()


class HostedPkcs11Backend:
    """cardlib.token.Backend for one module, run in its host; options as Pkcs11Backend's."""

    name = "pkcs11"

    def __init__(self, module_path: str, sm2_mechanism: int | None = None, *,
                 sm2_decrypt_mechanism: int | None = None, poll_interval: float = 0.2,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.module = ModuleLocation(module_path)
        self.sm2_mechanism = sm2_mechanism
        self.call_timeout = call_timeout
        self.settings = HostSettings(module_path, sm2_mechanism, sm2_decrypt_mechanism,
                                     poll_interval)
        self.last_error = ""  # why the module is down, "" when it is up
        self._host: ModuleHost | None = None
        self._lock = threading.Lock()

    @property
    def reader_prefix(self) -> str:
        return f"pkcs11:{self.module.basename}:"

    def owns(self, reader: str) -> bool:
        return reader.startswith(self.reader_prefix)

    def monitor(self, listener: PresenceListener) -> HostSupervisor:
        return HostSupervisor(self, listener)

    def current_host(self) -> ModuleHost:
        with self._lock:
            host = self._host
        if host is None or not host.alive:
            raise TokenUnavailable(Unavailable.SERVICE_NOT_RUNNING,
                                   f"the PKCS#11 module {self.module.basename} is starting "
                                   "again (its host process ended)")
        return host

    def set_host(self, host: ModuleHost | None) -> None:
        with self._lock:
            self._host = host

    def connect(self, reader: str) -> HostedConnection:
        host = self.current_host()
        handle = host.call(CONNECT, reader, timeout=self.call_timeout)
        return HostedConnection(HostedToken(self, host, int(handle)))

    def card_gone(self, reader: str, timeout: float) -> bool:
        try:
            host = self.current_host()
            return bool(host.call(CARD_GONE, reader, timeout,
                                  timeout=timeout + self.call_timeout))
        except TokenUnavailable:
            return True  # no host, no token: gone for whoever asked

    def close(self) -> None:
        with self._lock:
            host, self._host = self._host, None
        if host is not None:
            host.stop()


class HostedToken:
    """cardlib.token.Token: each call runs in the host that made the connection."""

    def __init__(self, backend: HostedPkcs11Backend, host: ModuleHost, handle: int) -> None:
        self._backend = backend
        self._host = host
        self._handle = handle

    def _call(self, method: str, *args: Any, **keywords: Any) -> Any:
        if not self._host.alive:
            raise TokenUnavailable(Unavailable.INVALID_HANDLE,
                                   f"{method}: the PKCS#11 module's host was restarted")
        return self._host.call(TOKEN, self._handle, method, args, keywords,
                               timeout=self._backend.call_timeout)

    @property
    def atr(self) -> bytes:
        return b""

    def read_certificate(self, role: CertificateRole = CertificateRole.SIGNING) -> bytes | None:
        value = self._call("read_certificate", role)
        return bytes(value) if value is not None else None

    def read_profile(self) -> EportProfile | None:
        value = self._call("read_profile")
        return value if isinstance(value, EportProfile) else None

    def read_card_id(self) -> str:
        return str(self._call("read_card_id"))

    def credential_status(self, credential: Credential = Credential.PIN) -> CredentialStatus:
        value = self._call("credential_status", credential)
        assert isinstance(value, CredentialStatus)
        return value

    def verify_pin(self, pin: bytearray) -> None:
        self._call("verify_pin", pin)

    def change_pin(self, old: bytearray, new: bytearray) -> None:
        self._call("change_pin", old, new)

    def unblock_pin(self, puk: bytearray, new_pin: bytearray) -> None:
        self._call("unblock_pin", puk, new_pin)

    def logout(self) -> None:
        self._call("logout")

    def sign_digest(self, mechanism: SignMechanism, digest: bytes) -> bytes:
        return bytes(self._call("sign_digest", mechanism, digest))

    def private_step(self, role: CertificateRole, data: bytes, *, sm2: bool) -> bytes:
        return bytes(self._call("private_step", role, data, sm2=sm2))

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        value = self._call("decrypt", ciphertext)
        return bytes(value) if value is not None else None

    def close(self) -> None:
        if self._host.alive:
            with contextlib.suppress(TokenUnavailable):
                self._host.call(CLOSE, self._handle, timeout=self._backend.call_timeout)


class HostedConnection:
    def __init__(self, token: HostedToken) -> None:
        self.token = token

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        # The module's lock in the host serialises each call; PKCS#11 has no transaction.
        return no_transaction()

    def close(self) -> None:
        self.token.close()


class HostSupervisor:
    """The backend's PresenceMonitor: keeps one host running, restarting it with backoff when
    it ends or stops answering."""

    def __init__(self, backend: HostedPkcs11Backend, listener: PresenceListener) -> None:
        self._backend = backend
        self._listener = _ErrorTracking(listener, backend)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pkcs11-supervisor {backend.module.basename}")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop supervising. The host itself stays, so that eportd can still log its tokens
        out at shutdown; it ends when eportd's end of the socket closes, or on close()."""
        self._stop.set()
        self._thread.join(timeout)
        with contextlib.suppress(TokenUnavailable):
            self._backend.current_host().detach_listener()

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                host = ModuleHost(self._backend.settings, self._listener)
            except (OSError, TokenUnavailable) as exc:
                self._listener.service_down(f"cannot start the PKCS#11 module's host: {exc}")
            else:
                self._backend.set_host(host)
                self._watch(host)
                if self._stop.is_set():
                    return
                self._backend.set_host(None)
                logger.warning("PKCS#11 module %s: %s; starting its host again",
                               self._backend.module.basename, host.cause)
                self._listener.service_down(host.cause)
            if time.monotonic() - started >= _HEALTHY_RUN_S:
                backoff = _BACKOFF_START_S
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _watch(self, host: ModuleHost) -> None:
        """Until the host ends or eportd stops; a host whose monitor went silent is killed."""
        limit = self._backend.call_timeout
        while not self._stop.is_set() and host.alive:
            host.ended.wait(min(1.0, limit / 4))
            silent = time.monotonic() - host.last_heard
            if host.alive and silent > limit:
                host.kill(f"the PKCS#11 module's host said nothing for {silent:.0f} s "
                          "(a module call that does not return)")


class _ErrorTracking:
    """The listener, keeping the backend's last_error as the in-process backend does."""

    def __init__(self, target: PresenceListener, backend: HostedPkcs11Backend) -> None:
        self._target = target
        self._backend = backend

    def service_up(self) -> None:
        self._backend.last_error = ""
        self._target.service_up()

    def service_down(self, cause: str = "", code: int = 0) -> None:
        self._backend.last_error = cause
        self._target.service_down(cause, code)

    def reader_added(self, presence: ReaderPresence) -> None:
        self._target.reader_added(presence)

    def reader_removed(self, name: str) -> None:
        self._target.reader_removed(name)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None:
        self._target.presence_changed(presence, reinserted=reinserted)

    def scan_complete(self) -> None:
        self._target.scan_complete()
