"""A stand-in for the card service, for the server bootstrap's tests.

It registers a tiny raw-bytes service, `eport.test.Probe`, whose methods answer with what the
daemon knows about the caller (peer_of), sleep, or abort. Run as a module it is eportd with
this app instead of build_service:

    python -m tests.unit.fake_eportd_app [--activate-fd N] -- EPORTD-FLAGS...

`--activate-fd N` moves fd N to fd 3 and sets LISTEN_PID/LISTEN_FDS for this process, as
systemd does for a socket-activated service. With EPORTD_FAKE_APP_EVENTS=PATH the app appends
each lifecycle step (register, start, attach_health, shutdown) to PATH.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import grpc

from eport.daemon.config import DaemonSettings
from eport.daemon.server.peer_proxy import peer_of

PROBE_SERVICE = "eport.test.Probe"
EVENTS_ENV = "EPORTD_FAKE_APP_EVENTS"


def _who(context: grpc.ServicerContext) -> bytes:
    cred = peer_of(context)
    return json.dumps({"peer": context.peer(),
                       "cred": asdict(cred) if cred else None}).encode()


def _who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
    return _who(context)


def _who_am_i_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in range(3):
        yield _who(context)


def _sleep(request: bytes, context: grpc.ServicerContext) -> bytes:
    path = os.environ.get(EVENTS_ENV)
    if path:  # so that a test can wait until the call is in flight
        with open(path, "a", encoding="utf-8") as log:
            log.write("sleep-started\n")
    time.sleep(float(request.decode() or "1"))  # not a wait: the slow call a test lets run
    return b"slept"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request[::-1]


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such card")


def probe_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(PROBE_SERVICE, {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(_who_am_i),
        "WhoAmIStream": grpc.unary_stream_rpc_method_handler(_who_am_i_stream),
        "Sleep": grpc.unary_unary_rpc_method_handler(_sleep),
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    })


def register_probe(server: grpc.Server) -> None:
    server.add_generic_rpc_handlers((probe_handler(),))


class FakeApp:
    """Satisfies eport.daemon.main.CardServiceApp."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.events: list[str] = []
        self.health: Any = None

    def _record(self, event: str) -> None:
        self.events.append(event)
        path = os.environ.get(EVENTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(event + "\n")

    def register(self, server: grpc.Server) -> None:
        register_probe(server)
        self._record("register")

    def start(self) -> None:
        self._record("start")

    def shutdown(self, timeout: float) -> None:
        self._record("shutdown")

    def attach_health(self, health_servicer: Any) -> None:
        self.health = health_servicer
        self._record("attach_health")


def _child_main(argv: list[str]) -> int:
    from eport.daemon.main import main  # after the fd shuffle, as a real service would be

    if argv[:1] == ["--activate-fd"]:
        passed = int(argv[1])
        argv = argv[2:]
        os.dup2(passed, 3)
        os.close(passed)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return main(argv, app_factory=FakeApp)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
