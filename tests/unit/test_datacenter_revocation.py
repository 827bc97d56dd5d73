"""Revocation: the CAs' CRL files in the trust directory and the data centre's deny-list
(`eport-datacenter revoke` / `unrevoke` / `revoked`). A revoked card is refused with
CERT_REVOKED, the others are served beside it, and unrevoke restores it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eport.common.profile import CardKind
from eport.datacenter import revocation
from eport.datacenter.server import ServerConfigError
from eport.datacenter.storage import database_exists
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.datacenter_db import new_database, opened
from tests.support.datacenter_stack import SigningCard, error_detail, make_signing_card, serving
from tests.support.trust_certificates import DAY, Authority, authority, crl, now, reissued, sm2_crl

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")



def serial_of(card: SigningCard) -> int:
    return x509.load_der_x509_certificate(card.image.certificate).serial_number


def accepted(stub: pb_grpc.DataCenterStub, card: SigningCard) -> bool:
    try:
        stub.Query(card.request("Query", {}))
    except grpc.RpcError:
        return False
    return True


def refusal(stub: pb_grpc.DataCenterStub, card: SigningCard) -> pb.DataCenterErrorDetail:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Query(card.request("Query", {}))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return error_detail(caught.value)


def rsa_ca(test_ca: TestCA) -> Authority:
    return Authority(test_ca.rsa_key, test_ca.rsa_certificate)


@pytest.fixture(scope="module")
def lost(test_ca: TestCA) -> SigningCard:
    """A card reported lost (its own key and profile, not shared with other tests)."""
    return make_signing_card(test_ca, CardKind.DECLARANT, "p256", days=365)


# ---- CRL files ----------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["der", "pem"])
def test_a_card_on_its_cas_crl_is_refused(serve: Any, test_ca: TestCA, trust_dir: Path,
                                          lost: SigningCard, operator: SigningCard,
                                          encoding: str) -> None:
    der = crl(rsa_ca(test_ca), [serial_of(lost)])
    data = der if encoding == "der" else x509.load_der_x509_crl(der).public_bytes(
        serialization.Encoding.PEM)
    (trust_dir / f"eport-test-ca.{encoding}.crl").write_bytes(data)
    stub = serve()
    detail = refusal(stub, lost)
    assert detail.reason == pb.CERT_REVOKED
    assert "revoked by E-port TEST CA (RSA)" in detail.message_en and "吊销" in detail.message_zh
    assert accepted(stub, operator)


def test_an_sm2_cas_crl_is_checked_with_sm2(serve: Any, test_ca: TestCA,
                                            trust_dir: Path) -> None:
    revoked_card = make_signing_card(test_ca, CardKind.OPERATOR, "sm2", days=400)
    other = make_signing_card(test_ca, CardKind.DECLARANT, "sm2")
    (trust_dir / "sm2.crl").write_bytes(
        sm2_crl(test_ca.sm2_key, test_ca.sm2_certificate, [serial_of(revoked_card)]))
    stub = serve()
    assert refusal(stub, revoked_card).reason == pb.CERT_REVOKED
    assert accepted(stub, other)


def test_the_newest_crl_of_a_ca_counts(serve: Any, test_ca: TestCA, trust_dir: Path,
                                       lost: SigningCard) -> None:
    (trust_dir / "new.crl").write_bytes(crl(rsa_ca(test_ca), [serial_of(lost)],
                                            this_update=now() - DAY))
    (trust_dir / "old.crl").write_bytes(crl(rsa_ca(test_ca), [], this_update=now() - 5 * DAY))
    assert refusal(serve(), lost).reason == pb.CERT_REVOKED


def test_a_revoked_intermediate_revokes_its_cards(serve: Any, test_ca: TestCA,
                                                  trust_dir: Path) -> None:
    root = authority("E-port TEST root")
    intermediate = authority("E-port TEST card CA", issuer=root)
    root.write(trust_dir, "root.pem")
    intermediate.write(trust_dir, "card-ca.pem")
    (trust_dir / "root.crl").write_bytes(crl(root, [intermediate.certificate.serial_number]))
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), intermediate)
    detail = refusal(serve(), card)
    assert detail.reason == pb.CERT_REVOKED and "CA certificate" in detail.message_en


@pytest.mark.parametrize("forged_by", ["other-key", "unknown-ca"])
def test_a_crl_no_anchor_signed_stops_the_server(tmp_path: Path, test_ca: TestCA,
                                                 trust_dir: Path, lost: SigningCard,
                                                 forged_by: str) -> None:
    stranger = authority("E-port TEST CA (RSA) - NOT FOR PRODUCTION")  # same name, other key
    der = (crl(rsa_ca(test_ca), [serial_of(lost)], signer=stranger.key)
           if forged_by == "other-key" else crl(authority("Elsewhere CA"), [1]))
    path = trust_dir / "forged.crl"
    path.write_bytes(der)
    with pytest.raises(ServerConfigError) as caught, serving(tmp_path, trust_dir):
        pass
    assert str(path) in str(caught.value) and "not signed by any CA" in str(caught.value)


def test_a_crl_past_its_next_update_refuses_that_cas_cards(
        serve: Any, test_ca: TestCA, trust_dir: Path, operator: SigningCard) -> None:
    (trust_dir / "stale.crl").write_bytes(crl(rsa_ca(test_ca), [], this_update=now() - 9 * DAY,
                                              next_update=now() - DAY))
    stub = serve()
    detail = refusal(stub, operator)  # not revoked, but nobody can tell any more
    assert detail.reason == pb.REVOCATION_UNKNOWN and "out of date" in detail.message_en
    assert accepted(stub, make_signing_card(test_ca, CardKind.OPERATOR, "sm2"))  # other CA


def test_a_new_crl_is_read_without_a_restart(serve: Any, test_ca: TestCA, trust_dir: Path,
                                             lost: SigningCard, operator: SigningCard,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocation, "_RELOAD_INTERVAL", 0.0)
    path = trust_dir / "ca.crl"
    path.write_bytes(crl(rsa_ca(test_ca), [], this_update=now() - 2 * DAY))
    stub = serve()
    assert accepted(stub, lost)
    path.write_bytes(crl(rsa_ca(test_ca), [serial_of(lost)], this_update=now() - DAY))
    assert refusal(stub, lost).reason == pb.CERT_REVOKED
    path.write_bytes(b"half-written junk")  # a bad file keeps the lists read before
    assert refusal(stub, lost).reason == pb.CERT_REVOKED
    assert accepted(stub, operator)


# ---- the deny-list --------------------------------------------------------------------------

def datacenter_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eport.datacenter.command", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_revoke_and_unrevoke_a_card_while_the_server_runs(
        serve: Any, tmp_path: Path, test_ca: TestCA, lost: SigningCard,
        operator: SigningCard) -> None:
    stub = serve()
    db = new_database(tmp_path)
    assert accepted(stub, lost)
    card_id = lost.card_id
    done = datacenter_command("revoke", "--card", card_id, "--reason", "挂失 lost", "--db", db)
    assert done.returncode == 0 and f"revoked card {card_id}" in done.stdout
    detail = refusal(stub, lost)
    assert detail.reason == pb.CERT_REVOKED and card_id in detail.message_en
    assert "停用" in detail.message_zh
    # Every certificate of the card: a renewed one too.
    renewed = reissued(lost, rsa_ca(test_ca), renewed=True)
    assert refusal(stub, renewed).reason == pb.CERT_REVOKED
    assert accepted(stub, operator)
    listed = datacenter_command("revoked", "--db", db)
    assert listed.returncode == 0
    kind, value, since, reason = listed.stdout.strip().split("\t")
    assert (kind, value, reason) == ("card", card_id, "挂失 lost") and since.endswith("+00:00")
    again = datacenter_command("revoke", "--card", card_id, "--db", db)
    assert again.returncode == 0 and "already revoked" in again.stdout
    undone = datacenter_command("unrevoke", "--card", card_id, "--db", db)
    assert undone.returncode == 0 and f"unrevoked card {card_id}" in undone.stdout
    assert accepted(stub, lost)
    assert datacenter_command("revoked", "--db", db).stdout == ""


def test_revoke_one_certificate_by_its_number(serve: Any, tmp_path: Path, test_ca: TestCA,
                                              lost: SigningCard) -> None:
    stub = serve()
    db = new_database(tmp_path)
    number = lost.image.profile.cert_number
    # Written as a person might copy it: upper case, with leading zeros.
    done = datacenter_command("revoke", "--certificate", "00" + number.upper(), "--db", db)
    assert done.returncode == 0, done.stderr
    detail = refusal(stub, lost)
    assert detail.reason == pb.CERT_REVOKED and "certificate" in detail.message_en
    # A renewal (new number) of the same card is not revoked by the old number.
    renewed = reissued(lost, rsa_ca(test_ca), renewed=True)
    assert accepted(stub, renewed)
    assert datacenter_command("unrevoke", "--certificate", number, "--db", db).returncode == 0
    assert accepted(stub, lost)


@pytest.mark.parametrize(("args", "code", "says"), [
    (["revoke"], 2, "exactly one of --certificate"),
    (["revoke", "--card", "A1", "--certificate", "ab"], 2, "exactly one of --certificate"),
    (["revoke", "--certificate", "xyz"], 2, "hex digits"),
    (["revoke", "--card", "卡号"], 2, "letters or digits"),
    (["unrevoke", "--card", "NOSUCHCARD"], 1, "not on the deny-list")])
def test_bad_revocation_commands_change_nothing(tmp_path: Path, args: list[str], code: int,
                                                says: str) -> None:
    db = new_database(tmp_path, "dc")
    assert datacenter_command("migrate", "--db", db).returncode == 0
    result = datacenter_command(*args, "--db", db)
    assert result.returncode == code and says in result.stderr
    assert "Traceback" not in result.stderr
    with opened(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM revocations").fetchone()[0] == 0


def test_listing_a_missing_database_does_not_create_it(tmp_path: Path) -> None:
    db = new_database(tmp_path, "typo")
    result = datacenter_command("revoked", "--db", db)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not database_exists(db)
