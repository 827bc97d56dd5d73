"""The simulator's control interface: a Unix socket speaking one JSON object per line.

Requests: {"command": "status"}, {"command": "remove", "slot": 0},
{"command": "insert", "slot": 0, "image": "other.card"?}, {"command": "delay", "slot": 0,
"ms": 200}, {"command": "mute", "slot": 0, "on": true},
{"command": "pull", "slot": 0, "after_execute": false}.
Replies: {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from eport.firmware_sim.image import CardImageError
from eport.firmware_sim.runner import SimulatorRunner

_MAX_REQUEST = 64 * 1024


def default_control_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "eport-sim" if runtime else Path(f"/tmp/eport-sim-{os.getuid()}")
    return base / "control.sock"


def _slot_of(request: dict[str, Any]) -> int:
    slot = request.get("slot")
    if not isinstance(slot, int) or isinstance(slot, bool):
        raise ValueError("'slot' must be an integer")
    return slot


def handle_request(runner: SimulatorRunner, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return {"ok": False, "error": "a request is a JSON object"}
    command = request.get("command")
    try:
        if command == "status":
            return {"ok": True, "slots": [s.to_json() for s in runner.status()]}
        if command == "remove":
            runner.slot(_slot_of(request)).remove()
        elif command == "insert":
            image = request.get("image")
            runner.slot(_slot_of(request)).insert(Path(image) if image else None)
        elif command == "delay":
            ms = request.get("ms")
            if not isinstance(ms, int | float) or isinstance(ms, bool):
                raise ValueError("'ms' must be a number")
            runner.slot(_slot_of(request)).set_delay(float(ms))
        elif command == "mute":
            runner.slot(_slot_of(request)).set_mute(bool(request.get("on", True)))
        elif command == "pull":
            runner.slot(_slot_of(request)).pull_during_next_apdu(
                after_execute=bool(request.get("after_execute", False)))
        else:
            return {"ok": False, "error": f"unknown command {command!r}; commands: status, "
                    "remove, insert, delay, mute, pull"}
    except (ValueError, CardImageError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


class ControlServer:
    """Serves the control socket in a background thread."""

    def __init__(self, runner: SimulatorRunner, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            if _is_live(self.path):
                raise RuntimeError(f"another simulator already serves {self.path}")
            self.path.unlink()  # stale socket from a simulator that died
        runner_ref = runner

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    if len(line) > _MAX_REQUEST:
                        reply: dict[str, Any] = {"ok": False, "error": "request too long"}
                    else:
                        try:
                            reply = handle_request(runner_ref, json.loads(line))
                        except json.JSONDecodeError as exc:
                            reply = {"ok": False, "error": f"not JSON: {exc}"}
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = Server(str(self.path), Handler)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="eport-sim-control")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def control_request(path: Path, request: dict[str, Any], timeout: float = 10.0
                    ) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = sock.makefile("rb").readline()
    result: dict[str, Any] = json.loads(reply)
    return result
