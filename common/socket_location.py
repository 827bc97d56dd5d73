"""Where eportd's socket lives: the names the daemon and its clients agree on.

The daemon decides (daemon/server/socket_path.py adds the safety checks); clients look in the
same places, in the same order, so `eport` finds a per-user daemon first and the system one
after it, without being told.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOCKET_ENV = "EPORTD_SOCKET"
SOCKET_NAME = "eportd.sock"
USER_DIRECTORY_NAME = "eportd"
SYSTEM_SOCKET_PATH = Path("/run/eportd") / SOCKET_NAME
SYSTEM_GROUP = "eport"
RUN_USER_ROOT = Path("/run/user")
# The modes the daemon gives its socket: only its user (per-user daemon), or root and the
# group `eport` (system daemon). Anything else is a misconfiguration `eport doctor` reports.
USER_SOCKET_MODE = 0o600
SYSTEM_SOCKET_MODE = 0o660


def user_socket_path(environ: Mapping[str, str] | None = None, uid: int | None = None,
                     run_user_root: Path = RUN_USER_ROOT) -> Path | None:
    """The per-user daemon's socket, or None when there is no runtime directory to hold it."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_absolute():
        return Path(runtime) / USER_DIRECTORY_NAME / SOCKET_NAME
    fallback = run_user_root / str(os.getuid() if uid is None else uid)
    if fallback.is_dir():
        return fallback / USER_DIRECTORY_NAME / SOCKET_NAME
    return None


def client_socket_candidates(environ: Mapping[str, str] | None = None,
                             uid: int | None = None) -> list[Path]:
    """Where a client looks, in order: $EPORTD_SOCKET alone if set, else the per-user socket,
    then the system one."""
    env = os.environ if environ is None else environ
    chosen = env.get(SOCKET_ENV, "")
    if chosen:
        return [Path(chosen).absolute()]
    user = user_socket_path(env, uid)
    return [path for path in (user, SYSTEM_SOCKET_PATH) if path is not None]
