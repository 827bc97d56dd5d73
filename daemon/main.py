"""`eportd`, the card daemon: flags and environment to settings, then serve until SIGTERM.

Exit codes (DaemonExit, docs/exit-codes.md): 0 after a clean shutdown, 2 for a configuration
problem (bad flag, unsafe or busy socket), 1 when the daemon fails for another reason (the log
says why). Errors before the log is set up go through the shared funnel (eport.common.funnel):
both languages on stderr, or JSON with --json.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from enum import IntEnum
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import grpc

from eport.common.funnel import FunnelArgumentParser, run_console
from eport.common.socket_location import SYSTEM_GROUP
from eport.common.stop_signals import StopSignals
from eport.common.text import Bilingual
from eport.daemon.backend_config import backend_specs
from eport.daemon.config import (
    DEFAULT_EXPIRY_WARNING_DAYS,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CALLS,
    DEFAULT_MAX_STREAMS,
    DaemonSettings,
)
from eport.daemon.server.bootstrap import run_server, sd_notify
from eport.daemon.server.logging_setup import LOG_FORMATS, LOG_LEVELS, configure_logging
from eport.daemon.server.socket_path import (
    SYSTEM_MODE,
    USER_MODE,
    ServerConfigError,
    resolve_socket_path,
)

# Not __name__: under `python -m` that is "__main__".
logger = logging.getLogger("eport.daemon.main")

SHUTDOWN_GRACE_S = 5.0


class DaemonExit(IntEnum):
    OK = 0            # a clean shutdown (SIGTERM, SIGINT)
    UNEXPECTED = 1
    FAILED = 1        # the daemon failed while serving: the log says why
    USAGE = 2
    CONFIG = 2        # a configuration problem: unsafe or busy socket, missing trust anchor
    INTERRUPTED = 130  # Ctrl-C before the daemon was serving


class CardServiceApp(Protocol):
    """What eport.daemon.service.app.build_service(settings) returns."""

    def register(self, server: grpc.Server) -> None: ...
    def start(self) -> None: ...
    def shutdown(self, timeout: float) -> None: ...
    def attach_health(self, health_servicer: Any) -> None: ...


AppFactory = Callable[[DaemonSettings], CardServiceApp]


def _version() -> str:
    try:
        return metadata.version("eport-middleware")
    except metadata.PackageNotFoundError:
        return "unknown"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 10000: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = FunnelArgumentParser(
        prog="eportd",
        description="E-port card daemon: serves the card over gRPC on a Unix socket.")
    parser.add_argument("--socket", metavar="PATH",
                        help="socket path (default: $EPORTD_SOCKET, else "
                             "$XDG_RUNTIME_DIR/eportd/eportd.sock, or /run/eportd/eportd.sock "
                             "with --system)")
    parser.add_argument("--system", action="store_true",
                        help=f"run as the system service: root and group '{SYSTEM_GROUP}' "
                             "may call, socket mode 0660")
    parser.add_argument("--trust-anchor", metavar="PATH", action="append", default=[],
                        help="a CA certificate (PEM or DER) or a directory of them; repeatable")
    parser.add_argument("--idle-timeout", metavar="SECONDS", type=_positive_seconds,
                        default=DEFAULT_IDLE_TIMEOUT_S,
                        help="a PIN session ends after this long without use (default: "
                             "%(default)s)")
    parser.add_argument("--expiry-warning-days", metavar="DAYS", type=_days,
                        default=DEFAULT_EXPIRY_WARNING_DAYS,
                        help="warn this many days before a certificate expires (default: "
                             "%(default)s)")
    parser.add_argument("--allow-unattended", action="store_true",
                        help="allow signing without a person present (CI, batch jobs)")
    parser.add_argument("--apdu-trace", action="store_true",
                        help="log every APDU (TRAFFIC level) of the PC/SC transport")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="json")
    parser.add_argument("--ignore-reader", metavar="NAME", action="append", default=[],
                        help="ignore the reader with this exact name; repeatable")
    parser.add_argument("--max-calls", metavar="N", type=_count, default=DEFAULT_MAX_CALLS,
                        help="calls that run at once; more wait for a place until their "
                             "deadline (default: %(default)s)")
    parser.add_argument("--max-streams", metavar="N", type=_count, default=DEFAULT_MAX_STREAMS,
                        help="event streams (eport watch, WatchEvents) open at once; one more "
                             "is refused, and calls keep their own threads (default: "
                             "%(default)s)")
    backends = parser.add_argument_group("card backends (docs/backends.md)")
    backends.add_argument("--config", metavar="FILE",
                          help="a TOML file with [[backend]] tables; the flags below add to it")
    backends.add_argument("--backend", metavar="KIND", action="append", default=[],
                          choices=["pcsc"],
                          help="run this backend (pcsc, the default when nothing else is "
                               "configured); repeatable")
    backends.add_argument("--pkcs11-module", metavar="PATH", action="append", default=[],
                          help="a PKCS#11 module (.so) whose tokens show as readers")
    backends.add_argument("--pkcs11-sm2-mechanism", metavar="0xID",
                          help="the module vendor's mechanism id for SM2 with SM3")
    backends.add_argument("--remote-client", metavar="URL", action="append", default=[],
                          help="the official E-port client's websocket, e.g. "
                               "ws://WINDOWS-HOST:61232")
    backends.add_argument("--allow-insecure-remote", action="store_true",
                          help="allow plain ws:// to a host that is not this machine")
    parser.add_argument("--no-systemd-activation", action="store_true",
                        help="bind the socket even when systemd passed one (LISTEN_FDS)")
    parser.add_argument("--version", action="version", version=f"eportd {_version()}")
    return parser


def settings_from_args(args: argparse.Namespace) -> DaemonSettings:
    trust_anchors = tuple(Path(p).absolute() for p in args.trust_anchor)
    for anchor in trust_anchors:
        if not anchor.exists():
            raise ServerConfigError(Bilingual(f"信任锚不存在: {anchor}",
                                              f"Trust anchor not found: {anchor}"),
                                    Bilingual("给出 CA 证书文件 (PEM/DER) 或证书目录的路径。",
                                              "give the path of a CA certificate (PEM/DER) or of "
                                              "a directory of them."))
    return DaemonSettings(
        socket_path=resolve_socket_path(args.socket, system=args.system),
        mode=SYSTEM_MODE if args.system else USER_MODE,
        socket_group=SYSTEM_GROUP if args.system else None,
        trust_anchors=trust_anchors,
        session_idle_timeout_s=args.idle_timeout,
        expiry_warning_days=args.expiry_warning_days,
        allow_unattended=args.allow_unattended,
        apdu_trace=args.apdu_trace,
        log_level=args.log_level,
        log_json=args.log_format == "json",
        ignored_readers=tuple(args.ignore_reader),
        systemd_activation=not args.no_systemd_activation,
        max_calls=args.max_calls,
        max_streams=args.max_streams,
        backends=backend_specs(args.config, args.backend, args.pkcs11_module,
                               args.pkcs11_sm2_mechanism, args.remote_client,
                               args.allow_insecure_remote),
    )


def _load_build_service() -> AppFactory:
    # Imported by name so this module stays importable (and type-checks) without the card
    # service, e.g. for the bootstrap's own tests.
    module = importlib.import_module("eport.daemon.service.app")
    factory: AppFactory = module.build_service
    return factory


def _serve(settings: DaemonSettings, app_factory: AppFactory) -> None:
    with StopSignals.installed() as stop:
        app = app_factory(settings)
        started = False

        def register(server: grpc.Server) -> None:
            # Start the card service only once the socket is ours (a second eportd must not
            # touch the readers) and before the first call can arrive.
            nonlocal started
            app.register(server)
            started = True
            app.start()

        try:
            with run_server(settings, register) as running:
                app.attach_health(running.health)
                logger.info("eportd ready on %s (pid %d)", running.socket_path, os.getpid(),
                            extra={"path": str(running.socket_path), "pid": os.getpid(),
                                   "mode": settings.mode,
                                   "systemd_activated": running.systemd_activated})
                sd_notify("READY=1")
                stop.wait()
                logger.info("eportd stopping (%s)", ", ".join(stop.received) or "requested")
                sd_notify("STOPPING=1")
                # In-flight calls (a signature under way) get the grace period to finish.
                running.stop(grace=SHUTDOWN_GRACE_S)
        finally:
            if started:
                app.shutdown(SHUTDOWN_GRACE_S)


def _run(argv: list[str], app_factory: AppFactory | None) -> int:
    # A usage or configuration error (ServerConfigError) is for the person who started
    # eportd: it reaches the funnel, which prints it as plain text (or JSON), not as a log line.
    settings = settings_from_args(build_parser().parse_args(argv))
    configure_logging(settings.log_level, json_format=settings.log_json,
                      apdu_trace=settings.apdu_trace)
    try:
        _serve(settings, app_factory or _load_build_service())
    except ServerConfigError:
        raise
    except ModuleNotFoundError as exc:
        logger.critical("the card service is missing (%s); reinstall eport-middleware", exc)
        return int(DaemonExit.FAILED)
    except Exception:
        logger.critical("eportd failed", exc_info=True)
        return int(DaemonExit.FAILED)
    return int(DaemonExit.OK)


def main(argv: list[str] | None = None, *, app_factory: AppFactory | None = None) -> int:
    """Run eportd; returns the exit code. `app_factory` replaces build_service (tests)."""
    return run_console("eportd", lambda args: _run(args, app_factory), argv,
                       exit_codes=DaemonExit, languages="both")


if __name__ == "__main__":
    sys.exit(main())
