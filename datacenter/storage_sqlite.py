"""The data centre on a SQLite file (storage.Store): opening it durably, migrations, one write
transaction at a time.

Durability: WAL with synchronous=FULL, so a transaction is on disk when COMMIT returns, and
the servicer answers only after COMMIT: a kill -9 after an answer loses nothing. Writes are
serialised by a lock around one connection and BEGIN IMMEDIATE (which also keeps another
process, e.g. `eport-datacenter migrate`, out while we write).

Migrations are the numbered files in migrations/ (0001_initial.sql, ...); PRAGMA user_version
holds the last one applied. Each runs in its own transaction with the version bump.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from eport.common.text import Bilingual
from eport.datacenter.storage import (
    SQLITE,
    Connection,
    StorageError,
    Store,
    closed_error,
    migrations,
    newer_schema_error,
)

logger = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 10_000
_FILE_MODE = 0o600  # documents, nonces and grants are nobody else's business


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite would make it 0644 under
    the usual umask); SQLite gives its -wal and -shm files the database file's mode. A file
    that exists with group or other bits (made by an older version) is tightened."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                os.chmod(file, mode & ~0o077)
                logger.warning("%s was readable by others (mode %o); made it %o", file, mode,
                               mode & ~0o077)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(path)
        # isolation_level=None: we issue BEGIN / COMMIT ourselves.
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     timeout=_BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as error:
        raise StorageError(Bilingual(f"数据库 {path} 无法打开: {error}",
                                     f"cannot open the database {path}: {error}"),
                           Bilingual("检查路径及其权限 (--db)。",
                                     "check the path and its permissions (--db).")) from None
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(Bilingual(f"{path}: 无法使用 WAL 日志模式 ({mode})",
                                         f"{path}: the WAL journal is not available ({mode})"),
                               Bilingual("--db 请使用本地文件系统上的文件。",
                                         "use a local file system for --db."))
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    except sqlite3.DatabaseError as error:
        connection.close()
        raise StorageError(Bilingual(f"{path} 不是数据中心数据库: {error}",
                                     f"{path} is not a data centre database: {error}"),
                           Bilingual("让 --db 指向正确的文件, 或一个新文件。",
                                     "point --db at the right file, or at a new one.")) from None
    return connection


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations the file lacks; the resulting schema version."""
    known = migrations()
    for migration in known:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            if version > len(known):
                raise newer_schema_error(version, len(known))
            if version >= migration.version:
                connection.execute("ROLLBACK")
                continue
            for statement in migration.statements(SQLITE):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {migration.version}")
            connection.execute("COMMIT")
            logger.info("applied migration %s", migration.name)
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


class SqliteStore(Store):
    """Both write() and read() serialise on one connection: SQLite's own writes are serial
    anyway, and the reads here are a few indexed rows."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(path)
        self._connection = _connect(self.path)
        try:
            self.schema_version = migrate(self._connection)
        except (sqlite3.Error, StorageError) as error:
            self._connection.close()
            if isinstance(error, StorageError):
                raise
            raise StorageError(Bilingual(f"{path}: 数据库迁移失败: {error}",
                                         f"{path}: migration failed: {error}"),
                               Bilingual("检查磁盘空间和文件权限, 然后再运行 "
                                         "eport-datacenter migrate。",
                                         "check the disk space and the file's permissions, then "
                                         "run eport-datacenter migrate again.")) from None
        self._connection.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._closed = False

    @property
    def description(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed (durably) when the block ends without an error and
        rolled back when it raises: bad input never changes state."""
        with self._lock:
            self._check_open()
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._lock:
            self._check_open()
            yield self._connection

    def _check_open(self) -> None:
        if self._closed:
            raise closed_error()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._connection.close()
