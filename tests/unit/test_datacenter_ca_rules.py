"""Trust as a CA would enforce it: what the anchors must be, what a card certificate must be,
path lengths and SHA-1. Each refusal has its own reason; a good card keeps working beside it.

The four certificates the data centre once accepted are built here with `cryptography`: a CA
certificate (CA:TRUE, keyCertSign, no digitalSignature), one for serverAuth only, one issued
by an anchor that expired a year ago, and one issued by an "anchor" that is an end-entity
certificate.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

from eport.cardlib.certificates import load_certificate
from eport.common.profile import CardKind
from eport.datacenter.errors import DataCenterError
from eport.datacenter.server import ServerConfigError
from eport.datacenter.storage import database_exists
from eport.datacenter.trust import RequestVerifier
from eport.datacenter.trust_store import load_trust
from eport.firmware_sim.ca import TestCA
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_db import new_database
from tests.support.datacenter_stack import SigningCard, error_detail, make_signing_card, serving
from tests.support.trust_certificates import (
    DAY,
    Authority,
    authority,
    now,
    reissued,
    sm2_card_reissued,
    usage,
)

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")

DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


def ca_of(test_ca: TestCA) -> Authority:
    return Authority(test_ca.rsa_key, test_ca.rsa_certificate)


def query(stub: pb_grpc.DataCenterStub, card: SigningCard, **options: Any) -> Any:
    return stub.Query(card.request("Query", {}, **options))


def refused(stub: pb_grpc.DataCenterStub, card: SigningCard, **options: Any
            ) -> pb.DataCenterErrorDetail:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Save(card.request("Save", {"document": valid_declaration()}, **options))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    detail = error_detail(caught.value)
    assert detail.message_zh and detail.message_en and detail.remedy_zh and detail.remedy_en
    return detail


# ---- the four certificates --------------------------------------------------------------

def test_a_ca_certificate_without_digital_signature_is_not_a_card(
        serve: Any, test_ca: TestCA) -> None:
    stub = serve()
    card = make_signing_card(test_ca, CardKind.DECLARANT)
    as_ca = reissued(card, ca_of(test_ca), basic_ca=True,
                     key_usage=usage(cert_sign=True, crl_sign=True))
    detail = refused(stub, as_ca)
    assert detail.reason == pb.CERT_IS_CA and "CA" in detail.message_en
    assert not query(stub, card).documents  # the card's own certificate still works


def test_a_server_auth_only_certificate_is_refused(serve: Any, test_ca: TestCA) -> None:
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), ca_of(test_ca),
                    extended_usage=[EKU.SERVER_AUTH])
    detail = refused(stub, card)
    assert detail.reason == pb.CERT_KEY_USAGE
    assert "serverAuth" in detail.message_en and "扩展密钥用法" in detail.message_zh


def test_a_card_of_an_anchor_that_expired_a_year_ago_is_refused(
        serve: Any, test_ca: TestCA, trust_dir: Path, caplog: pytest.LogCaptureFixture,
        operator: SigningCard) -> None:
    old = authority("E-port TEST old CA", not_before=now() - 3 * 365 * DAY,
                    not_after=now() - 365 * DAY)
    old.write(trust_dir, "old-ca.pem")
    with caplog.at_level(logging.WARNING):
        stub = serve()  # loaded with a warning: a roll-over keeps the old CA for a while
    assert any("old-ca.pem" in record.getMessage() and "expired" in record.getMessage()
               for record in caplog.records)
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR, "rsa2048"), old)
    detail = refused(stub, card)
    assert detail.reason == pb.ISSUER_NOT_VALID
    assert "expired on" in detail.message_en and "E-port TEST old CA" in detail.message_en
    assert "过期" in detail.message_zh
    assert query(stub, operator) is not None  # the current CA's cards are served


def test_an_anchor_not_yet_valid_refuses_its_cards(serve: Any, test_ca: TestCA,
                                                   trust_dir: Path) -> None:
    future = authority("E-port TEST future CA", not_before=now() + 30 * DAY)
    future.write(trust_dir, "future-ca.pem")
    stub = serve()
    detail = refused(stub, reissued(make_signing_card(test_ca, CardKind.OPERATOR), future))
    assert detail.reason == pb.ISSUER_NOT_VALID and "not valid before" in detail.message_en


@pytest.mark.parametrize(("options", "lacking"), [
    ({"ca": False, "key_usage": usage(signing=True)}, "CA:FALSE"),
    ({"ca": None, "key_usage": usage(signing=True)}, "no basicConstraints"),
    ({"ca": True, "key_usage": usage(crl_sign=True)}, "keyCertSign")])
def test_an_anchor_that_is_not_a_ca_stops_the_server(tmp_path: Path, trust_dir: Path,
                                                     options: dict[str, Any],
                                                     lacking: str) -> None:
    fake = authority("E-port TEST end entity", **options)
    path = fake.write(trust_dir, "dropped-card.pem")
    with pytest.raises(ServerConfigError) as caught, serving(tmp_path, trust_dir):
        pass
    message = str(caught.value)
    assert str(path) in message and lacking in message
    assert "不是CA证书" in message and "Remedy" in message
    # Refused before anything is made.
    assert not database_exists(new_database(tmp_path))


def test_the_command_names_the_file_of_a_non_ca_anchor(tmp_path: Path, trust_dir: Path
                                                        ) -> None:
    authority("E-port TEST end entity", ca=False,
              key_usage=usage(signing=True)).write(trust_dir, "card.pem")
    result = subprocess.run(
        [sys.executable, "-m", "eport.datacenter.command", "serve", "--trust-anchor",
         str(trust_dir), "--db", new_database(tmp_path, "dc"), "--listen",
         f"unix:{tmp_path / 's'}"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "card.pem" in result.stderr and "not a CA certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_card_issued_by_an_end_entity_is_refused_with_its_reason(test_ca: TestCA) -> None:
    """Given in code (the loader refuses such a file), the end entity issues nothing."""
    fake = authority("E-port TEST end entity", ca=False, key_usage=usage(signing=True))
    card = reissued(make_signing_card(test_ca, CardKind.DECLARANT), fake)
    anchors = [load_certificate(test_ca.trust_bundle.read_bytes()),
               load_certificate(fake.pem)]
    verifier = RequestVerifier(anchors)
    with pytest.raises(DataCenterError) as caught:
        verifier.verify(card.request("Query", {}), "Query")
    assert caught.value.reason == pb.ISSUER_NOT_CA
    assert "not a CA certificate" in caught.value.message.en


# ---- card certificates: what they must allow ----------------------------------------------

@pytest.mark.parametrize("purposes", [
    [EKU.CLIENT_AUTH], [EKU.EMAIL_PROTECTION], [DOCUMENT_SIGNING],
    [EKU.ANY_EXTENDED_KEY_USAGE], [EKU.SERVER_AUTH, EKU.CLIENT_AUTH]])
def test_signing_purposes_are_accepted(serve: Any, test_ca: TestCA,
                                       purposes: list[x509.ObjectIdentifier]) -> None:
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), ca_of(test_ca),
                    extended_usage=purposes)
    assert query(stub, card) is not None


@pytest.mark.parametrize("purposes", [[EKU.CODE_SIGNING], [EKU.TIME_STAMPING, EKU.SERVER_AUTH],
                                      [EKU.OCSP_SIGNING]])
def test_other_purposes_are_refused(serve: Any, test_ca: TestCA,
                                    purposes: list[x509.ObjectIdentifier]) -> None:
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), ca_of(test_ca),
                    extended_usage=purposes)
    assert refused(stub, card).reason == pb.CERT_KEY_USAGE


@pytest.mark.parametrize(("key_usage", "basic_ca", "reason"), [
    (usage(encipher=True), False, pb.CERT_KEY_USAGE),      # an encryption certificate
    (usage(signing=True, cert_sign=True), None, pb.CERT_IS_CA),
    (usage(signing=True), True, pb.CERT_IS_CA)])
def test_key_usage_and_basic_constraints(serve: Any, test_ca: TestCA,
                                         key_usage: x509.KeyUsage, basic_ca: bool | None,
                                         reason: int) -> None:
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), ca_of(test_ca),
                    key_usage=key_usage, basic_ca=basic_ca)
    assert refused(stub, card).reason == reason


def test_an_sm2_card_certificate_that_is_a_ca_is_refused(serve: Any, test_ca: TestCA) -> None:
    stub = serve()
    card = make_signing_card(test_ca, CardKind.OPERATOR, "sm2")
    assert query(stub, card) is not None
    subject = x509.load_der_x509_certificate(test_ca.sm2_certificate).subject
    as_ca = sm2_card_reissued(card, test_ca.sm2_key, subject, is_ca=True)
    assert refused(stub, as_ca).reason == pb.CERT_IS_CA


# ---- path length ------------------------------------------------------------------------

@pytest.mark.parametrize(("root_path_length", "accepted"), [(0, False), (1, True),
                                                             (None, True)])
def test_the_roots_path_length_is_honoured(serve: Any, test_ca: TestCA, trust_dir: Path,
                                           root_path_length: int | None,
                                           accepted: bool) -> None:
    root = authority("E-port TEST root", path_length=root_path_length)
    intermediate = authority("E-port TEST card CA", issuer=root, path_length=0)
    root.write(trust_dir, "root.pem")
    intermediate.write(trust_dir, "card-ca.pem")
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR), intermediate)
    if accepted:
        assert query(stub, card) is not None
    else:
        detail = refused(stub, card)
        assert detail.reason == pb.PATH_TOO_LONG and "E-port TEST root" in detail.message_en


def test_an_intermediate_under_an_expired_root_is_refused(serve: Any, test_ca: TestCA,
                                                          trust_dir: Path) -> None:
    root = authority("E-port TEST root", not_before=now() - 3000 * DAY,
                     not_after=now() - 10 * DAY)
    intermediate = authority("E-port TEST card CA", issuer=root)
    root.write(trust_dir, "root.pem")
    intermediate.write(trust_dir, "card-ca.pem")
    stub = serve()
    detail = refused(stub, reissued(make_signing_card(test_ca, CardKind.OPERATOR),
                                    intermediate))
    assert detail.reason == pb.ISSUER_NOT_VALID and "E-port TEST root" in detail.message_en


def test_load_trust_links_an_intermediate_to_its_root(tmp_path: Path) -> None:
    root = authority("E-port TEST root")
    intermediate = authority("E-port TEST card CA", issuer=root)
    root.write(tmp_path, "root.pem")
    intermediate.write(tmp_path, "card-ca.pem")
    trust = load_trust([tmp_path], now=now())
    by_name = {ca.source.name: ca for ca in trust.cas}
    assert by_name["card-ca.pem"].parent is by_name["root.pem"]
    assert by_name["root.pem"].parent is None


# ---- SHA-1 only for RSA-1024 cards ---------------------------------------------------------

def test_sha1_signatures_only_from_rsa1024_cards(serve: Any, test_ca: TestCA) -> None:
    stub = serve()
    old = make_signing_card(test_ca, CardKind.OPERATOR, "rsa1024")
    assert query(stub, old, algorithm=pb.SHA1_WITH_RSA) is not None
    newer = make_signing_card(test_ca, CardKind.OPERATOR, "rsa2048")
    detail = refused(stub, newer, algorithm=pb.SHA1_WITH_RSA)
    assert detail.reason == pb.WEAK_ALGORITHM and "RSA-1024" in detail.message_en
    assert query(stub, newer, algorithm=pb.SHA256_WITH_RSA) is not None


@pytest.mark.parametrize(("algorithm", "accepted"), [("rsa1024", True), ("rsa2048", False),
                                                     ("p256", False)])
def test_sha1_signed_card_certificates_only_for_rsa1024(serve: Any, test_ca: TestCA,
                                                        algorithm: str, accepted: bool) -> None:
    stub = serve()
    card = reissued(make_signing_card(test_ca, CardKind.OPERATOR, algorithm),
                    ca_of(test_ca), digest=hashes.SHA1())
    if accepted:
        assert query(stub, card) is not None
    else:
        assert refused(stub, card).reason == pb.WEAK_ALGORITHM


def test_the_simulators_cards_pass_every_rule(test_ca: TestCA) -> None:
    verifier = RequestVerifier(load_trust([test_ca.trust_bundle], now=now()))
    for algorithm in ("rsa1024", "rsa2048", "p256", "sm2"):
        for kind in (CardKind.OPERATOR, CardKind.DECLARANT, CardKind.LEGAL_PERSON):
            card = make_signing_card(test_ca, kind, algorithm)
            assert verifier.verify(card.request("Query", {}), "Query").identity.kind is kind
