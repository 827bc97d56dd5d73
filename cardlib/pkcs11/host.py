"""The PKCS#11 module host: one process per configured module, started by eportd.

    python -m eport.cardlib.pkcs11.host FD

Why a process of its own: PyKCS11 keeps Python's interpreter lock while a module call runs, so
a module that blocks (OpenSC's, seen waiting forever on its own lock after a card was pulled)
would stop every thread of eportd. Here it stops only this process, which eportd then kills
and starts again (hosted.py). The host runs the in-process backend (backend.py) unchanged: its
presence monitor, whose callbacks go to eportd as events, and the token calls eportd sends.

The host ends when eportd says stop or when its end of the socket pair closes (eportd gone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from eport.cardlib.pkcs11.backend import Pkcs11Backend
from eport.cardlib.pkcs11.connection import Pkcs11Connection
from eport.cardlib.pkcs11.host_wire import (
    CARD_GONE,
    CLOSE,
    CONNECT,
    TOKEN,
    TOKEN_METHODS,
    HostSettings,
    encode_error,
)
from eport.cardlib.token import ReaderPresence

# Calls from eportd run beside the monitor; the module's own lock still takes them in turn.
CALL_THREADS = 8


class _Channel:
    """The host's end: sends from any thread, one message at a time."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._connection.send(message)


class _ForwardingListener:
    """The monitor's PresenceListener: every callback becomes an event for eportd."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def _event(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._channel.send(("event", method, args, kwargs))

    def service_up(self) -> None:
        self._event("service_up")

    def service_down(self, cause: str = "", code: int = 0) -> None:
        self._event("service_down", cause, code)

    def reader_added(self, presence: ReaderPresence) -> None:
        self._event("reader_added", presence)

    def reader_removed(self, name: str) -> None:
        self._event("reader_removed", name)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None:
        self._event("presence_changed", presence, reinserted=reinserted)

    def scan_complete(self) -> None:
        self._event("scan_complete")


class _LogForwarder(logging.Handler):
    """The host's log lines go to eportd's log, which has the format and the destination."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        self._channel.send(("log", record.levelno, record.getMessage()))


class _Host:
    def __init__(self, settings: HostSettings, channel: _Channel) -> None:
        self.backend = Pkcs11Backend(settings.module_path, settings.sm2_mechanism,
                                     sm2_decrypt_mechanism=settings.sm2_decrypt_mechanism,
                                     poll_interval=settings.poll_interval)
        self.channel = channel
        self._connections: dict[int, Pkcs11Connection] = {}
        self._next_handle = 1
        self._lock = threading.Lock()

    def run_call(self, call_id: int, operation: str, args: tuple[Any, ...]) -> None:
        try:
            value = self._dispatch(operation, args)
        except BaseException as error:  # every failure goes back to the caller, as it was
            self.channel.send(("reply", call_id, False, encode_error(error)))
        else:
            self.channel.send(("reply", call_id, True, value))
        finally:
            _wipe_secrets(args)

    def _dispatch(self, operation: str, args: tuple[Any, ...]) -> Any:
        if operation == CONNECT:
            connection = self.backend.connect(args[0])
            with self._lock:
                handle, self._next_handle = self._next_handle, self._next_handle + 1
                self._connections[handle] = connection
            return handle
        if operation == TOKEN:
            handle, method, method_args, keywords = args
            if method not in TOKEN_METHODS:
                raise ValueError(f"not a token method: {method!r}")
            return getattr(self._connection(handle).token, method)(*method_args, **keywords)
        if operation == CLOSE:
            with self._lock:
                closing = self._connections.pop(args[0], None)
            if closing is not None:
                closing.close()
            return None
        if operation == CARD_GONE:
            return self.backend.card_gone(args[0], args[1])
        raise ValueError(f"unknown operation {operation!r}")

    def _connection(self, handle: int) -> Pkcs11Connection:
        with self._lock:
            return self._connections[handle]

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()
        with contextlib.suppress(Exception):
            self.backend.close()


def _wipe_secrets(args: tuple[Any, ...]) -> None:
    """PINs and PUKs arrive as bytearrays (never str): zero them once the call is done."""
    for argument in args:
        if isinstance(argument, bytearray):
            argument[:] = bytes(len(argument))
        elif isinstance(argument, tuple):
            _wipe_secrets(argument)


def serve(connection: Connection) -> None:
    channel = _Channel(connection)
    logging.basicConfig(level=logging.INFO, handlers=[_LogForwarder(channel)], force=True)
    first = connection.recv()
    if not (isinstance(first, tuple) and first[0] == "start" and
            isinstance(first[1], HostSettings)):
        raise SystemExit("the first message must be ('start', HostSettings)")
    host = _Host(first[1], channel)
    monitor = host.backend.monitor(_ForwardingListener(channel))
    monitor.start()
    calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="pkcs11-host-call")
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return  # eportd is gone
            if message[0] == "stop":
                return
            if message[0] == "call":
                _kind, call_id, operation, args = message
                calls.submit(host.run_call, call_id, operation, args)
    finally:
        monitor.stop(2.0)
        calls.shutdown(wait=False, cancel_futures=True)
        host.close()


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        raise SystemExit("usage: python -m eport.cardlib.pkcs11.host FD (started by eportd)")
    connection = Connection(int(sys.argv[1]))
    try:
        serve(connection)
    finally:
        connection.close()
        # A module thread that never returns (the reason this process exists) must not keep
        # it alive after eportd let go of it.
        os._exit(0)


if __name__ == "__main__":
    main()
