"""The host facts doctor reads without the daemon: installed programs, processes, files, the
journal, the clock. One small interface, so the checks can be unit-tested with a fake host."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol


class Host(Protocol):
    def which(self, program: str) -> str | None: ...
    def exists(self, path: str) -> bool: ...
    def read_text(self, path: str) -> str | None: ...
    def list_dir(self, path: str) -> list[str]: ...
    def processes(self, name: str) -> list[int]: ...
    def run(self, *command: str, timeout: float = 5.0) -> str | None: ...
    def now(self) -> datetime: ...


class RealHost:
    def which(self, program: str) -> str | None:
        found = shutil.which(program)
        if found:
            return found
        # sbin is often not on a normal user's PATH.
        for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            candidate = Path(directory) / program
            if candidate.exists():
                return str(candidate)
        return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def processes(self, name: str) -> list[int]:
        found = []
        for entry in self.list_dir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                comm = Path("/proc", entry, "comm").read_text().strip()
                stat = Path("/proc", entry, "stat").read_text()
                # A zombie (state Z) is not a running service.
                state = stat.rsplit(")", 1)[1].split()[0] if ")" in stat else ""
                if comm == name and state != "Z":
                    found.append(int(entry))
        return found

    def run(self, *command: str, timeout: float = 5.0) -> str | None:
        """The command's output, or None when it is missing or fails to run."""
        if self.which(command[0]) is None:
            return None
        try:
            done = subprocess.run(list(command), capture_output=True, text=True,
                                  timeout=timeout, check=False,
                                  env={**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": ""})
        except (OSError, subprocess.SubprocessError):
            return None
        return (done.stdout + done.stderr).strip()

    def now(self) -> datetime:
        return datetime.now(UTC)
