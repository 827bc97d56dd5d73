"""eport-datacenter as a process: the console command, signals, and what a kill -9 keeps."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from eport.datacenter.storage import is_postgres_url
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import new_database, opened
from tests.support.datacenter_stack import (
    SigningCard,
    running_datacenter,
    start_datacenter,
)
from tests.support.waiting import wait_until

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eport.datacenter.command", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_serves_until_sigterm(tmp_path: Path, test_ca: TestCA, operator: SigningCard) -> None:
    datacenter = start_datacenter(tmp_path, test_ca.trust_bundle, "--review-delay", "0.1")
    assert datacenter.socket_path.stat().st_mode & 0o777 == 0o600
    saved = datacenter.stub().Save(operator.request("Save", {"document":
                                                             valid_declaration()}))
    assert saved.status == pb.SAVED
    assert datacenter.stop() == 0
    log = datacenter.log()
    assert "eport-datacenter ready on unix:" in log and "SIGTERM" in log
    assert saved.temporary_number in log  # numbers may be logged; document contents not
    assert "测试进出口贸易有限公司" not in log and "hs_code" not in log
    assert not datacenter.socket_path.exists()


def test_the_command_line_refuses_bad_options(tmp_path: Path, test_ca: TestCA) -> None:
    anchor = str(test_ca.trust_bundle)
    db = new_database(tmp_path, "db")
    bad_policy = run_command("--trust-anchor", anchor, "--db", db, "--review", "perhaps")
    assert bad_policy.returncode == 2 and "reject-first:CODE" in bad_policy.stderr
    no_anchor = run_command("serve", "--db", db)
    assert no_anchor.returncode == 2 and "--trust-anchor" in no_anchor.stderr
    public = run_command("--trust-anchor", anchor, "--db", db, "--listen", "0.0.0.0:0")
    assert public.returncode == 1 and "--tls-cert" in public.stderr
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    no_certificates = run_command("--trust-anchor", str(empty), "--db", db)
    assert no_certificates.returncode == 1 and "trust anchor" in no_certificates.stderr
    assert "serve" in run_command("--help").stdout
    assert run_command("--version").stdout.startswith("eport-datacenter, version ")


def test_tcp_on_loopback(tmp_path: Path, test_ca: TestCA) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "eport.datacenter.command", "--trust-anchor",
         str(test_ca.trust_bundle), "--db", new_database(tmp_path, "db"), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("eport-datacenter ready on 127.0.0.1:")
        address = line.split()[-1]
        with grpc.insecure_channel(address) as channel:
            from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
            info = pb_grpc.DataCenterStub(channel).GetInfo(pb.GetInfoRequest(), timeout=5)
        assert info.audience == "eport-datacenter"
    finally:
        process.terminate()
        assert process.wait(15) == 0


def test_nothing_acknowledged_is_lost_to_a_kill_9(tmp_path: Path, test_ca: TestCA,
                                                  operator: SigningCard,
                                                  declarant: SigningCard) -> None:
    datacenter = start_datacenter(tmp_path, test_ca.trust_bundle, "--review-delay", "0.05")
    acknowledged: list[pb.DocumentRecord] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        stub = datacenter.stub()
        while not stop.is_set():
            try:
                saved = stub.Save(operator.request("Save", {"document": valid_declaration()}))
                declared = stub.Declare(declarant.request(
                    "Declare", {"number": saved.temporary_number}))
            except grpc.RpcError:
                return  # the server died under us: only what was answered counts
            with lock:
                acknowledged.append(declared)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    wait_until(lambda: len(acknowledged) >= 60, timeout=20, interval=0.01,
               what="60 declarations acknowledged")
    datacenter.kill()  # SIGKILL while requests are in flight
    stop.set()
    for worker in workers:
        worker.join(10)
    assert len(acknowledged) >= 60

    datacenter.start()  # the same database
    stub = datacenter.stub()
    for record in acknowledged:
        stored = stub.GetDocument(declarant.request("GetDocument",
                                                    {"number": record.temporary_number}))
        assert stored.unified_number == record.unified_number
        assert stored.status in (pb.DECLARED, pb.CLEARED) and stored.fee_charged
    # Reviews pending at the kill are resumed after the restart.
    def no_review_pending() -> bool:
        with opened(datacenter.db_path) as database:
            return bool(database.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0)

    wait_until(no_review_pending, timeout=20, what="the resumed reviews are done")
    datacenter.stop()
    with opened(datacenter.db_path) as database:
        if not is_postgres_url(datacenter.db_path):  # PostgreSQL checks its own recovery
            assert tuple(database.execute("PRAGMA integrity_check").fetchone()) == ("ok",)
        for column in ("temporary_number", "unified_number", "entry_number"):
            duplicates = database.execute(
                f"SELECT {column}, COUNT(*) FROM documents WHERE {column} IS NOT NULL "
                f"GROUP BY {column} HAVING COUNT(*) > 1").fetchall()
            assert not duplicates, column
        pending, not_cleared = database.execute(
            "SELECT (SELECT COUNT(*) FROM reviews), "
            "(SELECT COUNT(*) FROM documents WHERE status = ?)", (pb.DECLARED,)).fetchone()
        assert (pending, not_cleared) == (0, 0)
        fees, declared = database.execute(
            "SELECT (SELECT COUNT(*) FROM fees), "
            "(SELECT COUNT(*) FROM documents WHERE declaration_count > 0)").fetchone()
        assert fees == declared


def test_running_datacenter_restarts_on_the_same_database(
        tmp_path: Path, test_ca: TestCA, operator: SigningCard) -> None:
    with running_datacenter(tmp_path, test_ca.trust_bundle) as datacenter:
        saved = datacenter.stub().Save(operator.request("Save",
                                                        {"document": valid_declaration()}))
        datacenter.restart()
        again = datacenter.stub().GetDocument(operator.request(
            "GetDocument", {"number": saved.temporary_number}))
        assert again.temporary_number == saved.temporary_number
