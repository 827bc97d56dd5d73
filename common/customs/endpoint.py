"""Where the data centre listens: the default address the server and its clients agree on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ADDRESS_ENV = "EPORT_DATACENTER"
DIRECTORY_NAME = "eport-datacenter"
SOCKET_NAME = "datacenter.sock"
SYSTEM_SOCKET_PATH = Path("/run") / DIRECTORY_NAME / SOCKET_NAME


def default_datacenter_address(environ: Mapping[str, str] | None = None) -> str:
    """$EPORT_DATACENTER, else a socket in $XDG_RUNTIME_DIR, else the system socket."""
    env = os.environ if environ is None else environ
    chosen = env.get(ADDRESS_ENV, "").strip()
    if chosen:
        return chosen
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_absolute():
        return f"unix:{Path(runtime) / DIRECTORY_NAME / SOCKET_NAME}"
    return f"unix:{SYSTEM_SOCKET_PATH}"


def unix_socket_path(address: str) -> Path | None:
    """The socket path of "unix:/path", "unix:///path" or "/path"; None for host:port."""
    if address.startswith("unix://"):
        return Path(address[len("unix://"):])
    if address.startswith("unix:"):
        return Path(address[len("unix:"):])
    if address.startswith("/"):
        return Path(address)
    return None


def channel_target(address: str) -> str:
    """What grpc.insecure_channel() takes: "unix:/abs/path" or "host:port"."""
    path = unix_socket_path(address)
    if path is not None:
        return f"unix:{path.absolute()}"
    if ":" not in address:
        raise ValueError(f"data centre address {address!r}: use unix:/path, /path or host:port")
    return address
