"""Which database the data-centre tests run on: every such test runs twice, on SQLite and on
PostgreSQL (a real server, tests/support/postgres_server.py, one per test session).

A test module opts in with `pytestmark = pytest.mark.usefixtures("datacenter_db")` (the
fixture is in tests/conftest.py); then `new_database(directory)` gives, for the current run,
a new SQLite file in `directory` or a new empty PostgreSQL database, as the `--db` argument
(and DataCenterProcess, serving() and the scale tests use it). Without the fixture it is
SQLite, as before.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

_lock = threading.Lock()
_state: dict[str, Any] = {"kind": SQLITE, "server": None}
_names = itertools.count(1)
_by_directory: dict[tuple[str, str], str] = {}


def current_kind() -> str:
    return str(_state["kind"])


def use(kind: str) -> None:
    _state["kind"] = kind


def postgres_server() -> Any:
    """The session's PostgreSQL server, started on first use; fails (CI=true) or skips the
    test when it cannot start."""
    with _lock:
        if _state["server"] is None:
            from tests.support.postgres_server import PostgresUnavailable, start_postgres

            try:
                _state["server"] = start_postgres()
            except (PostgresUnavailable, RuntimeError, OSError) as error:
                if os.environ.get("CI") == "true":
                    pytest.fail(f"the postgres tier cannot start PostgreSQL: {error}")
                pytest.skip(f"PostgreSQL is not available here: {error}")
        return _state["server"]


def stop_postgres() -> None:
    with _lock:
        server, _state["server"] = _state["server"], None
    if server is not None:
        server.remove()


@contextlib.contextmanager
def opened(db: str | Path) -> Iterator[Any]:
    """A reading connection to the data centre database `db` (either kind), for a test that
    looks at what was stored."""
    from eport.datacenter.storage import open_store

    store = open_store(db)
    try:
        with store.read() as connection:
            yield connection
    finally:
        store.close()


def new_database(directory: Path, name: str = "datacenter") -> str:
    """The database of `directory` for the current run, the --db argument: a SQLite file in
    it, or a PostgreSQL database made for it (the same one when asked again, as the file
    would be)."""
    if current_kind() == POSTGRESQL:
        key = (str(directory.resolve()), name)
        with _lock:
            known = _by_directory.get(key)
        if known is None:
            known = str(postgres_server().url(f"{name}_{os.getpid()}_{next(_names)}"))
            with _lock:
                _by_directory[key] = known
        return known
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{name}.sqlite3")
