"""The real eport-gateway for the pcsc tier: the installed console script in its own process,
on a real TCP port, in front of a real eportd. It only starts and stops the process; tests talk
to it with their own protocol code."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

GATEWAY = str(Path(sys.executable).with_name("eport-gateway"))
# "eport-gateway listening on wss://H:P and ws://H:P (eportd: ...)", or ws only.
_LISTENING = re.compile(r"eport-gateway listening on (?:(wss://\S+) and )?(ws://\S+)")


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    url: str                      # ws://
    wss_url: str | None = None    # wss:// when the gateway serves TLS
    _log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def tls_port(self) -> int:
        assert self.wss_url is not None, "this gateway serves no wss:\n" + self.log()
        return int(self.wss_url.rsplit(":", 1)[1])

    def log(self) -> str:
        return "".join(self._log)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        return self.process.returncode


def start_gateway(eportd_socket: Path, *args: str, timeout: float = 20.0,
                  env: dict[str, str] | None = None) -> Gateway:
    """`eport-gateway serve --port 0 --tls-port 0 --socket S ARGS` (a later --port in ARGS
    wins); returns once it says it is listening. It serves wss too when the certificate of
    `eport-gateway tls install` is found under the environment's HOME / XDG_CONFIG_HOME."""
    environment = {**os.environ, **(env or {})}
    environment.pop("EPORTD_SOCKET", None)
    process = subprocess.Popen(
        [GATEWAY, "serve", "--port", "0", "--tls-port", "0", "--socket", str(eportd_socket),
         *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        env=environment)
    log: list[str] = []
    ready = threading.Event()
    found: list[tuple[str | None, str]] = []

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            match = _LISTENING.search(line)
            if match and not found:
                found.append((match.group(1), match.group(2)))
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    ready.wait(timeout)  # set by the pump on the "listening" line or when the process exits
    if not found:
        process.kill()
        process.wait()
        raise RuntimeError("eport-gateway did not start listening:\n" + "".join(log))
    wss_url, ws_url = found[0]
    return Gateway(process, ws_url, wss_url, log, reader)


@contextlib.contextmanager
def running_gateway(eportd_socket: Path, *args: str, env: dict[str, str] | None = None
                    ) -> Iterator[Gateway]:
    gateway = start_gateway(eportd_socket, *args, env=env)
    try:
        yield gateway
    finally:
        gateway.stop()
