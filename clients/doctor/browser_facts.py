"""What doctor reads about the browser path (Single Window pages → the gateway): the state of
`eport-gateway tls install`, and who listens on the gateway's ports.

A listener is found as `ss -ltnp` finds it: its LISTEN entry in /proc/net/tcp{,6} gives the
socket's inode and owner uid, and the process is the one with a file descriptor on
`socket:[inode]`. Another user's processes cannot be looked into without root; then the uid is
all there is, and doctor says so.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from eport.clients.gateway.peer_uid import parse_line
from eport.clients.gateway.tls_setup import TlsStatus, default_paths, status

WS_PORT = 61232
WSS_PORT = 61231
TCP_LISTEN = "0A"  # the st column of /proc/net/tcp: TCP_LISTEN
GATEWAY_MARKS = ("eport-gateway", "eport.clients.gateway")


@dataclass
class Listener:
    port: int
    address: str
    uid: int
    pids: list[int] = field(default_factory=list)
    program: str = ""        # the command line of the first process, shortened
    is_gateway: bool = False

    def as_json(self) -> dict[str, object]:
        return {"port": self.port, "address": self.address, "uid": self.uid,
                "pids": self.pids, "program": self.program or None,
                "is_gateway": self.is_gateway}


@dataclass
class BrowserFacts:
    tls: TlsStatus | None
    tls_error: str | None
    certutil: bool
    our_uid: int
    listeners: dict[int, list[Listener]]


def _listening_inodes(proc: Path, ports: tuple[int, ...]) -> dict[int, tuple[int, str, int]]:
    """inode → (port, address, uid) of every listening socket on `ports`."""
    found = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text(encoding="ascii",
                                                         errors="replace").splitlines():
                fields = line.split()
                if len(fields) < 10 or fields[3] != TCP_LISTEN:
                    continue
                entry = parse_line(line)
                if entry is not None and entry.local[1] in ports and entry.inode:
                    found[entry.inode] = (entry.local[1], str(entry.local[0]), entry.uid)
    return found


def _holders(proc: Path, inodes: set[int]) -> dict[int, list[int]]:
    """inode → pids with a descriptor on it (only processes this user may look into)."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    holders: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for descriptor in os.scandir(Path(entry.path) / "fd"):
                    with contextlib.suppress(OSError):
                        inode = wanted.get(os.readlink(descriptor.path))
                        if inode is not None:
                            holders.setdefault(inode, []).append(int(entry.name))
    return holders


def _command_line(proc: Path, pid: int) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    words = [word.decode(errors="replace") for word in raw.split(b"\0") if word]
    if not words:
        with contextlib.suppress(OSError):
            return (proc / str(pid) / "comm").read_text().strip()
    return " ".join(words)[:200]


def port_listeners(ports: tuple[int, ...] = (WSS_PORT, WS_PORT),
                   proc: Path = Path("/proc")) -> dict[int, list[Listener]]:
    inodes = _listening_inodes(proc, ports)
    holders = _holders(proc, set(inodes))
    by_port: dict[int, list[Listener]] = {port: [] for port in ports}
    for inode, (port, address, uid) in sorted(inodes.items()):
        pids = sorted(holders.get(inode, []))
        program = _command_line(proc, pids[0]) if pids else ""
        by_port[port].append(Listener(port, address, uid, pids, program,
                                      any(mark in program for mark in GATEWAY_MARKS)))
    return by_port


def gather_browser(certutil_path: str | None) -> BrowserFacts:
    paths = default_paths()
    try:
        tls, error = status(paths), None
    except Exception as problem:  # doctor reports what it cannot read; it never stops
        tls, error = None, f"{type(problem).__name__}: {problem}"
    # Under sudo the gateway that matters is the invoking user's.
    our_uid = paths.owner[0] if paths.owner is not None else os.geteuid()
    return BrowserFacts(tls, error, certutil_path is not None, our_uid, port_listeners())
