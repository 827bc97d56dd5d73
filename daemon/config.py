"""The daemon's settings: one frozen dataclass built by main() from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_IDLE_TIMEOUT_S = 15 * 60
DEFAULT_EXPIRY_WARNING_DAYS = 30
# Calls in progress at once, and event streams open at once (eport.daemon.server.call_limits).
DEFAULT_MAX_CALLS = 64
DEFAULT_MAX_STREAMS = 32


@dataclass(frozen=True)
class BackendSpec:
    """One configured card backend: its kind and the keyword options of its factory
    (eport.daemon.service.backends.FACTORIES)."""

    kind: str  # "pcsc", "pkcs11", "remote"
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class DaemonSettings:
    socket_path: Path
    # "user": $XDG_RUNTIME_DIR/eportd, directory 0700, socket 0600, only our uid may call.
    # "system": /run/eportd, group `eport`, socket 0660, root and members of the group may call.
    mode: str = "user"
    socket_group: str | None = None
    trust_anchors: tuple[Path, ...] = ()
    session_idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    expiry_warning_days: int = DEFAULT_EXPIRY_WARNING_DAYS
    allow_unattended: bool = False
    apdu_trace: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    # Extra readers to ignore (by exact name), e.g. a laptop's built-in reader.
    ignored_readers: tuple[str, ...] = field(default_factory=tuple)
    systemd_activation: bool = True  # take the listening socket from LISTEN_FDS when present
    max_calls: int = DEFAULT_MAX_CALLS
    max_streams: int = DEFAULT_MAX_STREAMS
    # The card backends, in order; empty means PC/SC alone.
    backends: tuple[BackendSpec, ...] = ()
