"""A real PostgreSQL server for the postgres tier: Debian's binaries, initdb in a temporary
directory, listening only on a Unix socket in that directory (no port to collide with).

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
`postgres` system user that Debian's package creates, in a directory owned by it. Clients
(the tests, eport-datacenter) connect over the socket with trust authentication: the
directory is the server's only door and nobody else's test uses it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.support.waiting import wait_until

_PORT = 5432  # only names the socket file (.s.PGSQL.5432) in our own directory
_START_TIMEOUT = 30.0
_SUPERUSER = "eport"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (apt-get install postgresql: scripts/setup.sh)."""


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    if not found:
        raise PostgresUnavailable("PostgreSQL's initdb is missing: apt-get install postgresql "
                                  "(scripts/setup.sh installs it)")
    return found[-1].parent


def _server_user() -> str | None:
    """Whom the server runs as: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no `postgres` user to run the "
                                  "server as (Debian's postgresql package creates it)") from None
    return "postgres"


@dataclass
class PostgresServer:
    directory: Path
    user: str | None
    bin_dir: Path
    process: subprocess.Popen[bytes] | None = None
    _databases: set[str] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` (created on first use) over our socket."""
        if database != "postgres" and database not in self._databases:
            self.create_database(database)
        return (f"postgresql://{_SUPERUSER}@/{quote(database)}?host="
                f"{quote(str(self.directory), safe='')}&port={_PORT}")

    def _run(self, *command: str) -> None:
        subprocess.run(command, check=True, user=self.user, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # -k: the socket in our directory; listen_addresses '': no TCP at all.
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-k",
                 str(self.directory), "-p", str(_PORT), "-c", "listen_addresses=",
                 "-c", "max_connections=200"],
                user=self.user, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        process = self.process
        assert process is not None

        def accepts() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with {process.returncode}:\n{self.log()}")
            with psycopg.connect(self.url(), connect_timeout=2):
                return True

        try:
            wait_until(accepts, timeout=_START_TIMEOUT, retry_on=(psycopg.OperationalError,),
                       what="postgres accepts connections")
        except AssertionError as exc:
            raise RuntimeError(f"postgres did not accept connections ({exc}):\n{self.log()}"
                               ) from None

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.add(name)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): connections are cut, as when an administrator restarts
        the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def start_postgres(directory: Path | None = None) -> PostgresServer:
    """initdb and start a server. `directory` is only a hint: the server's own directory must
    be reachable by its user, and a pytest tmp_path under root's 0700 tree is not, so it is
    always a fresh directory under /tmp."""
    del directory
    bin_dir = _binaries()
    user = _server_user()
    # A short path: the socket path must fit in sun_path (108 bytes).
    base = Path(tempfile.mkdtemp(prefix="eport-pg-", dir="/tmp"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(base, user, bin_dir)
    try:
        server._run(str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", _SUPERUSER,
                    "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        server.start()
    except BaseException:
        with contextlib.suppress(Exception):
            server.remove()
        raise
    return server
