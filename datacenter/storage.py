"""The data centre's store: one interface over SQLite (the embedded default) and PostgreSQL.

`open_store(db)` opens `db`: a file path is SQLite (storage_sqlite), a `postgresql://` URL is
PostgreSQL (storage_postgres). Both apply the same numbered migrations (migrations/0001_...
.sql; a statement after a `-- only: sqlite` or `-- only: postgresql` line is for that one
database) and give the same guarantees:
  - `write()` is one transaction, and writes are serial: on SQLite by BEGIN IMMEDIATE, on
    PostgreSQL by a transaction-scoped advisory lock that every writer of the database takes
    first, across all data-centre processes. So the ledger's read-check-write steps see no
    concurrent change, numbers come from counters bumped inside that transaction (unique, and
    gapless: a rolled-back transaction rolls its bump back), and receipts commit in sequence
    order (receipt_feed);
  - an acknowledged write is durable: COMMIT returns after the log is on disk (SQLite
    synchronous=FULL; PostgreSQL synchronous_commit on, its default), and servicers answer
    only after COMMIT;
  - bad input raises inside the block and rolls everything back.
SQL in the ledger modules is written once, in the subset both speak: `?` placeholders,
ON CONFLICT upserts, RETURNING instead of lastrowid, no SQLite-only functions.

A lost database connection (a PostgreSQL restart) raises StorageUnavailable, which the RPCs
answer with UNAVAILABLE so that clients retry; the next call reconnects.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from eport.common.failure import ConfigFailure
from eport.common.text import Bilingual

_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
_ONLY = re.compile(r"--\s*only:\s*(sqlite|postgresql)\s*")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# A row of a result: by position (row[0]) and by column name (row["id"]); sqlite3.Row on
# SQLite, storage_postgres.Row on PostgreSQL.
Row: TypeAlias = Any


class StorageError(ConfigFailure):
    """The database cannot be used; the message says why, the remedy what to do."""

    code = "STORAGE"


class StorageUnavailable(StorageError):
    """The database server is not reachable now (restarting, network); retry later."""


# Not the operator's to fix: the migrations ship with the program.
_REINSTALL = Bilingual("重新安装 eport, 数据库迁移文件随程序一起发布。",
                       "reinstall eport; the migration files ship with the program.")
CLOSED_REMEDY = Bilingual("数据中心正在停止; 请在重启后重试。",
                          "the data centre is stopping; retry once it has restarted.")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the ledger modules use of a connection: sqlite3.Connection has it, and so does
    storage_postgres's wrapper around psycopg's."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, dialect: str) -> list[str]:
        """The statements for `dialect`, split at lines ending in ';' outside quotes."""
        found: list[str] = []
        pending: list[str] = []
        only: str | None = None
        for line in self.sql.splitlines():
            marker = _ONLY.fullmatch(line.strip())
            if marker and not pending:
                only = marker.group(1)
                continue
            if not pending and (not line.strip() or line.lstrip().startswith("--")):
                continue
            pending.append(line)
            ends = line.rstrip().endswith(";") and not line.lstrip().startswith("--")
            if ends and "\n".join(pending).count("'") % 2 == 0:
                if only in (None, dialect):
                    found.append("\n".join(pending))
                pending, only = [], None
        if pending:
            raise StorageError(Bilingual(f"迁移文件 {self.name} 以不完整的语句结尾",
                                         f"{self.name} ends with an incomplete statement"),
                               _REINSTALL)
        return found


def migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("eport.datacenter").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        names = [m.name for m in found]
        raise StorageError(Bilingual(f"迁移文件的编号不是 1..n: {names}",
                                     f"migrations are not numbered 1..n: {names}"), _REINSTALL)
    return found


def newer_schema_error(version: int, known: int) -> StorageError:
    return StorageError(Bilingual(f"数据库的结构版本 {version} 比本程序认识的 ({known}) 新",
                                  f"the database has schema version {version}, newer than "
                                  f"this program knows ({known})"),
                        Bilingual("运行更新版本的 eport-datacenter。",
                                  "run a newer eport-datacenter."))


def closed_error() -> StorageError:
    """A store used after close(): a request that raced the server's shutdown."""
    return StorageError(Bilingual("数据库已关闭", "the database is closed"), CLOSED_REMEDY)


class Store(ABC):
    """The open database. `write()` is the only way to change it; `read()` sees committed
    state."""

    dialect: str
    schema_version: int
    location: str  # what --db said: the file path or the postgresql:// URL

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data is, for logs and messages (never a password)."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Connection]:
        """A write transaction, committed durably when the block ends without an error and
        rolled back when it raises."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Connection]:
        """A connection for reading committed state."""

    @abstractmethod
    def close(self) -> None: ...


def is_postgres_url(db: str | Path) -> bool:
    return str(db).startswith(POSTGRES_SCHEMES)


def open_store(db: str | Path) -> Store:
    """The store at `db` (a SQLite file path or a postgresql:// URL), migrated to the newest
    schema. Raises StorageError with the reason and a remedy."""
    if is_postgres_url(db):
        from eport.datacenter.storage_postgres import PostgresStore

        return PostgresStore(str(db))
    from eport.datacenter.storage_sqlite import SqliteStore

    return SqliteStore(Path(db))


def database_exists(db: str | Path) -> bool:
    """Whether `db` already holds a data-centre database (for admin listings, which must not
    create one at a mistyped location)."""
    if is_postgres_url(db):
        from eport.datacenter.storage_postgres import schema_present

        return schema_present(str(db))
    return Path(db).exists()

