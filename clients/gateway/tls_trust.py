"""Where the gateway's CA is trusted and where its name points: the user's NSS database (read
by Chromium and Firefox on Linux), the system store (Debian's update-ca-certificates), and
/etc/hosts for wss.singlewindow.cn.

certutil (Debian libnss3-tools) is the only program that writes an NSS database safely while
a browser has it open (SQLite with locking), so every NSS change goes through it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from eport.clients.gateway.tls_certificates import GATEWAY_HOST_NAME
from eport.common.failure import EportFailure

NSS_NICKNAME = f"eport-gateway local CA ({GATEWAY_HOST_NAME} only)"
# "C,,": a trusted CA for TLS servers only; nothing for e-mail or code signing.
NSS_TRUST = "C,,"
NSS_DB_FILES = ("cert9.db", "key4.db", "pkcs11.txt")
SYSTEM_CA_DIR = Path("/usr/local/share/ca-certificates")
SYSTEM_CA_FILE = f"eport-gateway-{GATEWAY_HOST_NAME}.crt"
HOSTS_FILE = Path("/etc/hosts")
HOSTS_MARKER = "# added by eport-gateway tls install"
HOSTS_LINE = f"127.0.0.1 {GATEWAY_HOST_NAME} {HOSTS_MARKER}"


class TrustToolError(EportFailure):
    """certutil or update-ca-certificates is missing or failed; `detail` is its own output."""

    code = "TRUST_TOOL_FAILED"

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"{tool}: {detail}")
        self.tool = tool
        self.detail = detail


def default_nss_db() -> Path:
    return Path.home() / ".pki" / "nssdb"


def _run(tool: str, *arguments: str) -> str:
    if shutil.which(tool) is None:
        raise TrustToolError(tool, "not installed")
    done = subprocess.run([tool, *arguments], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise TrustToolError(tool, (done.stderr or done.stdout).strip() or
                             f"exit status {done.returncode}")
    return done.stdout


# ---- NSS ----

def nss_exists(db: Path) -> bool:
    return (db / "cert9.db").is_file()


def nss_listing(db: Path) -> list[tuple[str, str]]:
    """(nickname, trust flags) of every certificate, as `certutil -L` lists them."""
    output = _run("certutil", "-L", "-d", f"sql:{db}")
    entries = []
    for line in output.splitlines()[4:]:  # the header is two titles and a blank line
        name, _, trust = line.rstrip().rpartition(" ")
        if name.strip():
            entries.append((name.strip(), trust))
    return entries


def nss_certificate(db: Path, nickname: str = NSS_NICKNAME) -> bytes | None:
    """The DER of the certificate under `nickname`, or None."""
    if not nss_exists(db):
        return None
    try:
        return subprocess.run(
            ["certutil", "-L", "-d", f"sql:{db}", "-n", nickname, "-r"], capture_output=True,
            timeout=60, check=True).stdout or None
    except (OSError, subprocess.SubprocessError):
        return None


def nss_trust(db: Path, nickname: str = NSS_NICKNAME) -> str | None:
    return next((trust for name, trust in nss_listing(db) if name == nickname), None)


def nss_create(db: Path) -> list[Path]:
    """Make an empty database with an empty password; the directories it had to create."""
    created = [parent for parent in (db.parent, db) if not parent.exists()]
    db.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    return created


def nss_add(db: Path, ca_pem: Path, nickname: str = NSS_NICKNAME) -> None:
    _run("certutil", "-A", "-d", f"sql:{db}", "-n", nickname, "-t", NSS_TRUST, "-i", str(ca_pem))


def nss_delete(db: Path, nickname: str = NSS_NICKNAME) -> bool:
    """Remove every certificate under `nickname`; True when there was one."""
    removed = False
    # certutil -D removes one certificate per call when several share a nickname.
    while nss_exists(db) and nss_trust(db, nickname) is not None:
        _run("certutil", "-D", "-d", f"sql:{db}", "-n", nickname)
        removed = True
    return removed


def nss_remove_database(db: Path, created_dirs: list[Path]) -> bool:
    """Delete a database install created, unless something else was added to it since."""
    if not nss_exists(db) or nss_listing(db):
        return False
    for name in NSS_DB_FILES:
        (db / name).unlink(missing_ok=True)
    for directory in sorted(created_dirs, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: someone else keeps files there
            directory.rmdir()
    return True


# ---- the system store ----

def system_store_file(directory: Path = SYSTEM_CA_DIR) -> Path:
    return directory / SYSTEM_CA_FILE


def update_system_store(command: tuple[str, ...] = ("update-ca-certificates",)) -> None:
    _run(*command)


# ---- the name ----

@dataclass
class Resolution:
    addresses: list[str]
    error: str | None = None

    @property
    def loopback(self) -> bool:
        return bool(self.addresses) and all(
            ipaddress.ip_address(address.split("%")[0]).is_loopback
            for address in self.addresses)


def resolve_gateway_name(name: str = GATEWAY_HOST_NAME) -> Resolution:
    try:
        infos = socket.getaddrinfo(name, 61231, type=socket.SOCK_STREAM)
    except OSError as error:
        return Resolution([], str(error))
    return Resolution(sorted({str(info[4][0]) for info in infos}))


def hosts_has_line(hosts: Path = HOSTS_FILE, line: str = HOSTS_LINE) -> bool:
    try:
        return line in hosts.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False


def hosts_add(hosts: Path = HOSTS_FILE, line: str = HOSTS_LINE) -> None:
    text = hosts.read_text(encoding="utf-8") if hosts.exists() else ""
    separator = "" if not text or text.endswith("\n") else "\n"
    with hosts.open("a", encoding="utf-8") as stream:
        stream.write(f"{separator}{line}\n")


def hosts_remove(hosts: Path = HOSTS_FILE, line: str = HOSTS_LINE) -> bool:
    try:
        lines = hosts.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError:
        return False
    kept = [entry for entry in lines if entry.rstrip("\r\n") != line]
    if len(kept) == len(lines):
        return False
    # Rewrite in place (not rename): /etc/hosts may be a bind mount or have its own owner.
    with hosts.open("w", encoding="utf-8") as stream:
        stream.writelines(kept)
    return True
