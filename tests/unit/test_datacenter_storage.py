"""The data centre's store on SQLite and on PostgreSQL: migrations, durability settings,
numbers under concurrency, a lost server, and the number formats and address rules shared
with the client."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eport.common.customs import numbers
from eport.common.customs.endpoint import channel_target, default_datacenter_address
from eport.common.profile import CardKind
from eport.datacenter.command import cli
from eport.datacenter.storage import (
    SQLITE,
    StorageError,
    Store,
    is_postgres_url,
    migrations,
    open_store,
)
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import new_database, opened
from tests.support.datacenter_stack import make_signing_card, serving
from tests.support.waiting import wait_until

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")



def _tables(store: Store) -> set[str]:
    query = ("SELECT name FROM sqlite_master WHERE type = 'table'" if store.dialect == SQLITE
             else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    with store.read() as connection:
        return {row[0] for row in connection.execute(query)}


def test_migrations_create_the_schema_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    db = new_database(tmp_path / "new")
    store = open_store(db)
    assert store.schema_version == len(migrations()) >= 1
    with store.write() as connection:
        connection.execute("INSERT INTO sequences (name, value) VALUES ('probe', 7)")
    store.close()
    reopened = open_store(db)
    assert reopened.schema_version == len(migrations())
    with reopened.read() as connection:
        assert connection.execute("SELECT value FROM sequences").fetchone()[0] == 7
        if reopened.dialect == SQLITE:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        else:  # an acknowledged COMMIT is on disk
            assert connection.execute("SHOW synchronous_commit").fetchone()[0] == "on"
            assert connection.execute("SHOW fsync").fetchone()[0] == "on"
    assert {"documents", "receipts", "fees", "reviews", "nonces", "sequences"} <= \
        _tables(reopened)
    reopened.close()


def test_times_in_microseconds_fit_on_both_databases(tmp_path: Path) -> None:
    """SQLite's INTEGER is 64-bit, PostgreSQL's 32-bit: the migrations' INTEGER columns must
    hold a microsecond time of 2026 (about 1.8e15) on both."""
    store = open_store(new_database(tmp_path))
    moment = 1_796_000_000_000_000
    with store.write() as connection:
        connection.execute("INSERT INTO nonces (nonce, signed_at) VALUES ('n', ?)", (moment,))
    with store.read() as connection:
        assert connection.execute("SELECT signed_at FROM nonces").fetchone()[0] == moment
    store.close()


@pytest.mark.sqlite_only
def test_the_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "private" / "datacenter.sqlite3"
    store = open_store(path)
    with store.write() as connection:
        connection.execute("INSERT INTO sequences (name, value) VALUES ('probe', 1)")
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(file.exists() for file in files)
    assert {file.name: file.stat().st_mode & 0o777 for file in files} == {
        file.name: 0o600 for file in files}
    assert path.parent.stat().st_mode & 0o777 == 0o700
    store.close()


@pytest.mark.sqlite_only
def test_an_older_world_readable_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    open_store(path).close()
    path.chmod(0o644)
    open_store(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = open_store(new_database(tmp_path))
    with pytest.raises(RuntimeError), store.write() as connection:
        connection.execute("INSERT INTO sequences (name, value) VALUES ('x', 1)")
        raise RuntimeError("refused half-way")
    with store.read() as connection:
        assert connection.execute("SELECT COUNT(*) FROM sequences").fetchone()[0] == 0
    store.close()


@pytest.mark.sqlite_only
def test_a_newer_schema_or_another_file_is_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version = {len(migrations()) + 1}")
    with pytest.raises(StorageError, match="newer"):
        open_store(newer)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(StorageError, match="not a data centre database"):
        open_store(junk)


def test_the_migrate_command(tmp_path: Path) -> None:
    db = new_database(tmp_path / "db")
    result = CliRunner().invoke(cli, ["migrate", "--db", db])
    assert result.exit_code == 0, result.output
    assert f"schema version {len(migrations())}" in result.output
    version_query = ("PRAGMA user_version" if not is_postgres_url(db)
                     else "SELECT version FROM eport_schema")
    with opened(db) as connection:
        assert connection.execute(version_query).fetchone()[0] == len(migrations())
    again = CliRunner().invoke(cli, ["migrate", "--db", db])
    assert again.exit_code == 0 and f"schema version {len(migrations())}" in again.output


def test_number_formats() -> None:
    assert numbers.temporary_number(2026, 42) == "Z202600000000000042"
    assert numbers.unified_number("import", 2026, 7) == "I20260000000000007"
    assert numbers.unified_number("export", 2026, 7)[0] == "E"
    entry = numbers.entry_number("5301", 2026, "import", 42)
    assert entry == "530120261000000042" and numbers.pre_entry_number(entry) == "000000042"
    assert numbers.entry_number("5301", 2026, "export", 1)[8] == "0"
    assert numbers.is_temporary_number("Z202600000000000042")
    assert not numbers.is_temporary_number("Z20260000000000004")
    assert numbers.is_unified_number("E20260000000000007")
    assert not numbers.is_unified_number("X20260000000000007")
    assert numbers.is_entry_number(entry) and not numbers.is_entry_number("530120262000000042")
    assert numbers.is_pre_entry_number("000000042")
    assert [numbers.number_kind(n) for n in ("Z202600000000000042", "I20260000000000007",
                                               entry, "12")] == ["temporary", "unified",
                                                                 "entry", None]
    bad: Any
    for bad in (lambda: numbers.temporary_number(2026, 0),
                lambda: numbers.entry_number("53", 2026, "import", 1),
                lambda: numbers.unified_number("transit", 2026, 1),
                lambda: numbers.entry_number("5301", 2026, "import", 10**9)):
        with pytest.raises(ValueError):
            bad()


def test_default_address_and_channel_targets() -> None:
    assert default_datacenter_address({"EPORT_DATACENTER": "127.0.0.1:9"}) == "127.0.0.1:9"
    assert default_datacenter_address({"XDG_RUNTIME_DIR": "/run/user/7"}) == \
        "unix:/run/user/7/eport-datacenter/datacenter.sock"
    assert default_datacenter_address({}) == "unix:/run/eport-datacenter/datacenter.sock"
    assert channel_target("unix:/tmp/dc.sock") == "unix:/tmp/dc.sock"
    assert channel_target("/tmp/dc.sock") == "unix:/tmp/dc.sock"
    assert channel_target("unix:///tmp/dc.sock") == "unix:/tmp/dc.sock"
    assert channel_target("localhost:50051") == "localhost:50051"
    with pytest.raises(ValueError):
        channel_target("nowhere")


def test_numbers_stay_unique_with_eight_threads_of_fifty_declarations(
        tmp_path: Path, test_ca: TestCA) -> None:
    operator = make_signing_card(test_ca, CardKind.OPERATOR)
    declarant = make_signing_card(test_ca, CardKind.DECLARANT)
    with serving(tmp_path, test_ca.trust_bundle) as (_, stub):

        def declare_fifty(worker: int) -> list[str]:
            made = []
            for index in range(50):
                document = valid_declaration("import" if (worker + index) % 2 else "export")
                saved = stub.Save(operator.request("Save", {"document": document}))
                declared = stub.Declare(declarant.request(
                    "Declare", {"number": saved.temporary_number}))
                assert declared.status == pb.DECLARED
                made.append(saved.temporary_number)
            return made

        with ThreadPoolExecutor(8) as pool:
            temporaries = [n for batch in pool.map(declare_fifty, range(8)) for n in batch]
        assert len(set(temporaries)) == 400
        def all_cleared() -> Any:
            result = stub.Query(operator.request("Query", {"limit": 1000}))
            return result if all(d.status == pb.CLEARED for d in result.documents) else None

        documents = wait_until(all_cleared, timeout=30, interval=0.1,
                               what="every declaration is cleared").documents
        assert len(documents) == 400 and all(d.status == pb.CLEARED for d in documents)
        for field in ("temporary_number", "unified_number", "entry_number"):
            values = [getattr(d, field) for d in documents]
            assert len(set(values)) == 400, field
        assert all(numbers.is_entry_number(d.entry_number) for d in documents)
        statement: Any = stub.GetStatement(operator.request(
            "GetStatement", {"from": "2020-01-01", "to": "2099-12-31"}))
        assert statement.entries == 400 and statement.total_fen == 400 * 1500
