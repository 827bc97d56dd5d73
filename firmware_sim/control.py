"""The simulator's control interface: a Unix socket speaking one JSON object per line.

Requests: {"command": "status"}, {"command": "remove", "slot": 0},
{"command": "insert", "slot": 0, "image": "other.card"?}, {"command": "delay", "slot": 0,
"ms": 200, "ins": 135?} (ins: only that instruction, e.g. 0x87 GENERAL AUTHENTICATE),
{"command": "mute", "slot": 0, "on": true},
{"command": "pull", "slot": 0, "after_execute": false}.
Replies: {"ok": true, ...} or {"ok": false, "error": "..."}.

The socket lives in a directory only its owner can enter (0700) and is itself 0600: whoever
reaches it can pull cards and change their behaviour.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any

from eport.common.failure import EportFailure
from eport.firmware_sim.image import CardImageError
from eport.firmware_sim.runner import SimulatorRunner

logger = logging.getLogger(__name__)

_MAX_REQUEST = 64 * 1024
COMMANDS = ("status", "remove", "insert", "delay", "mute", "pull")


class ControlError(EportFailure, RuntimeError):
    """The control socket cannot be set up or reached; the message says why."""

    code = "CONTROL"


def default_control_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "eport-sim" if runtime else Path(f"/tmp/eport-sim-{os.getuid()}")
    return base / "control.sock"


def _slot_of(request: dict[str, Any]) -> int:
    slot = request.get("slot")
    if not isinstance(slot, int) or isinstance(slot, bool):
        raise ValueError("'slot' must be an integer")
    return slot


def _flag(request: dict[str, Any], name: str, default: bool) -> bool:
    # bool("false") is True: accept real JSON booleans only, so a typo cannot flip a fault on.
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"'{name}' must be true or false")
    return value


def handle_request(runner: SimulatorRunner, request: Any) -> dict[str, Any]:
    """Apply one request; every problem comes back as {"ok": false, "error": ...}."""
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
            if image is not None and (not isinstance(image, str) or not image):
                raise ValueError("'image' must be the path of a card image")
            runner.slot(_slot_of(request)).insert(Path(image) if image else None)
        elif command == "delay":
            ms = request.get("ms")
            if not isinstance(ms, int | float) or isinstance(ms, bool):
                raise ValueError("'ms' must be a number")
            ins = request.get("ins")
            if ins is not None and (not isinstance(ins, int) or isinstance(ins, bool)):
                raise ValueError("'ins' must be an instruction byte (0 to 255)")
            runner.slot(_slot_of(request)).set_delay(float(ms), ins)
        elif command == "mute":
            runner.slot(_slot_of(request)).set_mute(_flag(request, "on", True))
        elif command == "pull":
            runner.slot(_slot_of(request)).pull_during_next_apdu(
                after_execute=_flag(request, "after_execute", False))
        else:
            return {"ok": False, "error": f"unknown command {command!r}; commands: "
                    + ", ".join(COMMANDS)}
    except (ValueError, CardImageError) as exc:
        return {"ok": False, "error": str(exc)}
    except OSError as exc:  # a card factory reading an image file
        return {"ok": False, "error": f"cannot load the card image: {exc}"}
    return {"ok": True}


def _private_directory(directory: Path) -> None:
    """Create `directory` 0700, or check that an existing one is ours and private."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        # In /tmp anyone could have made it first, to read or replace our socket.
        raise ControlError(f"{directory} is not a directory owned by this user; remove it or "
                           "pass --control with another path")
    if info.st_mode & 0o077:
        directory.chmod(0o700)


def _is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(_MAX_REQUEST + 1)
            if not line:
                return
            if len(line) > _MAX_REQUEST:
                self._reply({"ok": False, "error": "request too long"})
                return  # the rest of that line would be read as more requests
            if not line.strip():
                continue
            try:
                reply = handle_request(self.server.runner, json.loads(line))
            except json.JSONDecodeError as exc:
                reply = {"ok": False, "error": f"not JSON: {exc}"}
            except Exception as exc:
                # A bug in a command must cost one request, not the control server.
                logger.exception("control request %r failed", line[:200])
                reply = {"ok": False, "error": f"internal error: {exc}"}
            self._reply(reply)

    def _reply(self, reply: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, runner: SimulatorRunner) -> None:
        self.runner = runner
        super().__init__(str(path), _Handler)


class ControlServer:
    """Serves the control socket in a background thread."""

    def __init__(self, runner: SimulatorRunner, path: Path) -> None:
        self.path = Path(path)
        _private_directory(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if _is_live(self.path):
                raise RuntimeError(f"another simulator already serves {self.path}")
            self.path.unlink()  # stale socket from a simulator that died
        self._server = _Server(self.path, runner)
        # chmod rather than a umask change: umask is process-wide and the slot threads may be
        # writing card images right now. The 0700 directory covers the moment in between.
        self.path.chmod(0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="eport-sim-control")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is not None:  # shutdown() waits for serve_forever to run
            self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control_request(path: Path, request: dict[str, Any], timeout: float = 10.0
                    ) -> dict[str, Any]:
    """Send one request to a running simulator; raises OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as stream:
            reply = stream.readline()
    if not reply:
        raise ConnectionError(f"the simulator at {path} closed the connection without a reply")
    try:
        result = json.loads(reply)
    except json.JSONDecodeError as exc:
        raise ConnectionError(f"the simulator at {path} sent a reply that is not JSON: {exc}"
                              ) from None
    if not isinstance(result, dict):
        raise ConnectionError(f"the simulator at {path} sent a reply that is not an object")
    return result
