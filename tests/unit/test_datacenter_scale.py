"""Acceptance of several data-centre processes: two of them on one database,
8 clients, 500 declarations; a kill -9 of one process (and, on PostgreSQL, a restart of the
database) during the batch loses nothing acknowledged, and the batch completes after retries.

How a retry stays single: every declaration carries its own client_reference, and each attempt
is signed afresh (a new nonce: resending the same signed request after a lost answer would be
refused as REPLAY). Save is idempotent on the client_reference (a second Save answers the
first document with already_saved) and Declare on the document (already_declared), so an
attempt whose answer was lost is found again, never saved twice; the documents table's unique
index on (enterprise, client_reference) holds that even for two processes racing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support import datacenter_db
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_stack import DataCenterProcess, SigningCard, start_datacenter
from tests.support.waiting import wait_until

DECLARATIONS = 500
CLIENTS = 8
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CALL_TIMEOUT = 10.0
_BATCH_DEADLINE = 240.0


class Database:
    """Where the processes keep their data; `disrupt()` restarts it (PostgreSQL only)."""

    db_argument: str

    def disrupt(self) -> None:
        """Nothing on SQLite: it has no server to restart."""


@dataclass
class SqliteDatabase(Database):
    path: Path

    def __post_init__(self) -> None:
        self.db_argument = str(self.path)


@dataclass
class PostgresDatabase(Database):
    server: Any
    url: str

    def __post_init__(self) -> None:
        self.db_argument = self.url

    def disrupt(self) -> None:
        self.server.restart()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield SqliteDatabase(tmp_path / "shared.sqlite3")
        return
    # The session's server (tests/support/datacenter_db.py); this test restarts it.
    datacenter_db.use(datacenter_db.POSTGRESQL)
    try:
        db_argument = datacenter_db.new_database(tmp_path, "scale")
    finally:
        datacenter_db.use(datacenter_db.SQLITE)
    yield PostgresDatabase(datacenter_db.postgres_server(), db_argument)


@dataclass
class Batch:
    """The work and what the data centre acknowledged, shared by the client threads."""

    pending: list[dict[str, Any]]
    declared: dict[str, pb.DocumentRecord] = field(default_factory=dict)  # by client_reference
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> dict[str, Any] | None:
        with self.lock:
            return self.pending.pop() if self.pending else None

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.declared)


def _with_retries(call: Callable[[pb_grpc.DataCenterStub], pb.DocumentRecord],
                  stubs: list[pb_grpc.DataCenterStub], first: int, batch: Batch
                  ) -> pb.DocumentRecord:
    """The call's answer, moving to the other process after each UNAVAILABLE or timeout."""
    deadline = time.monotonic() + _BATCH_DEADLINE  # not a wait: the client's retry budget
    attempt = first
    while True:  # not a wait: retries within the budget above
        try:
            return call(stubs[attempt % len(stubs)])
        except grpc.RpcError as error:
            if error.code() not in _RETRYABLE or time.monotonic() > deadline:
                raise
            with batch.lock:
                batch.retries += 1
            attempt += 1


def _client(index: int, processes: list[DataCenterProcess], batch: Batch,
            operator: SigningCard, declarant: SigningCard) -> None:
    # Channels of their own: the processes' helpers close theirs on kill().
    channels = [grpc.insecure_channel(process.address) for process in processes]
    stubs = [pb_grpc.DataCenterStub(channel) for channel in channels]
    try:
        while (document := batch.take()) is not None:
            saved = _with_retries(lambda stub: stub.Save(
                operator.request("Save", {"document": document}), timeout=_CALL_TIMEOUT),
                stubs, index, batch)
            number = saved.temporary_number
            declared = _with_retries(lambda stub, number=number: stub.Declare(  # type: ignore[misc]
                declarant.request("Declare", {"number": number}), timeout=_CALL_TIMEOUT),
                stubs, index, batch)
            with batch.lock:
                batch.declared[document["client_reference"]] = declared
    except grpc.RpcError as error:
        with batch.lock:
            batch.failures.append(f"client {index}: {error.code()} {error.details()}")
    finally:
        for channel in channels:
            channel.close()


def test_two_processes_eight_clients_500_declarations_survive_kill_and_restart(
        tmp_path: Path, test_ca: TestCA, database: Database, operator: SigningCard,
        declarant: SigningCard) -> None:
    anchor = test_ca.trust_bundle
    first = start_datacenter(tmp_path / "a", anchor, "--db", database.db_argument)
    second = start_datacenter(tmp_path / "b", anchor, "--db", database.db_argument)
    processes = [first, second]
    batch = Batch([valid_declaration() for _ in range(DECLARATIONS)])
    clients = [threading.Thread(target=_client, args=(index, processes, batch, operator,
                                                      declarant))
               for index in range(CLIENTS)]
    try:
        for client in clients:
            client.start()
        wait_until(lambda: batch.done >= 100 or bool(batch.failures), timeout=_BATCH_DEADLINE,
                   interval=0.01, what="100 declarations")
        first.kill()  # SIGKILL with requests in flight; the clients move to the second
        wait_until(lambda: batch.done >= 200 or bool(batch.failures), timeout=_BATCH_DEADLINE,
                   interval=0.01, what="200 declarations")
        database.disrupt()  # PostgreSQL restarts under the process left serving
        first.start()  # the killed one comes back on the same database
        for client in clients:
            client.join(_BATCH_DEADLINE)
        assert not any(client.is_alive() for client in clients), "the batch did not finish"
        assert batch.failures == []
        assert batch.retries > 0  # the kill reached the clients of the first process
        acknowledged = list(batch.declared.values())
        assert len(acknowledged) == DECLARATIONS
        temporary = {record.temporary_number for record in acknowledged}
        unified = {record.unified_number for record in acknowledged}
        assert len(temporary) == DECLARATIONS and len(unified) == DECLARATIONS

        # Every acknowledged declaration is there, as it was answered, through each process;
        # and nothing else: no retry saved a document twice.
        for process in processes:
            stub = process.stub()
            for record in acknowledged[::25]:
                stored = stub.GetDocument(declarant.request(
                    "GetDocument", {"number": record.temporary_number}))
                assert stored.unified_number == record.unified_number
                assert stored.status in (pb.DECLARED, pb.CLEARED)
        listed = first.stub().Query(declarant.request("Query", {"limit": 1000})).documents
        assert {record.temporary_number for record in listed} == temporary
        assert {record.client_reference for record in listed} == set(batch.declared)
        for record in listed:
            assert record.status in (pb.DECLARED, pb.CLEARED), record.temporary_number
    finally:
        for process in processes:
            process.stop()
