"""Request verification at the data centre: only signed, fresh, canonical requests of trusted
E-port cards get through, and a refused request changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eport.common.customs.canonical import canonical_json
from eport.common.customs.envelope import build_payload
from eport.common.profile import CardKind
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import datacenter_pb2 as pb
from eport.protos.v1 import datacenter_pb2_grpc as pb_grpc
from tests.support.customs_documents import valid_declaration
from tests.support.datacenter_stack import SigningCard, error_detail, make_signing_card

Stub = pb_grpc.DataCenterStub
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def save_request(card: SigningCard, **options: Any) -> pb.SignedRequest:
    return card.request("Save", {"document": valid_declaration()}, **options)


def refusal(call: Any, request: Any) -> tuple[grpc.StatusCode, pb.DataCenterErrorDetail]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value.code(), error_detail(caught.value)


def nothing_saved(stub: Stub, card: SigningCard) -> bool:
    return not stub.Query(card.request("Query", {})).documents


@pytest.mark.parametrize(("algorithm", "signature"), [
    ("rsa1024", pb.SHA1_WITH_RSA), ("rsa1024", pb.SHA256_WITH_RSA),
    ("rsa2048", pb.SHA256_WITH_RSA), ("p256", pb.ECDSA_P256_SHA256), ("sm2", pb.SM2_WITH_SM3)])
def test_each_card_algorithm_is_accepted(stub: Stub, test_ca: TestCA, algorithm: str,
                                         signature: int) -> None:
    card = make_signing_card(test_ca, CardKind.OPERATOR, algorithm)
    record = stub.Save(save_request(card, algorithm=signature))
    assert record.status == pb.SAVED and record.saved_by_card == card.card_id


@pytest.mark.parametrize(("algorithm", "claimed"), [
    ("p256", pb.SHA256_WITH_RSA), ("sm2", pb.ECDSA_P256_SHA256), ("rsa2048", pb.SM2_WITH_SM3),
    ("p256", pb.SIGNATURE_ALGORITHM_UNSPECIFIED)])
def test_the_algorithm_must_match_the_key(stub: Stub, test_ca: TestCA, algorithm: str,
                                          claimed: int) -> None:
    card = make_signing_card(test_ca, CardKind.OPERATOR, algorithm)
    request = save_request(card)
    request.algorithm = claimed  # type: ignore[assignment]
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.SIGNATURE_INVALID
    assert nothing_saved(stub, card)


@pytest.mark.parametrize("algorithm", ["p256", "sm2", "rsa2048"])
def test_a_tampered_payload_is_refused(stub: Stub, test_ca: TestCA, algorithm: str) -> None:
    card = make_signing_card(test_ca, CardKind.OPERATOR, algorithm)
    request = save_request(card)
    request.payload = request.payload.replace(b'"import"', b'"export"', 1)
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.SIGNATURE_INVALID
    assert detail.message_zh and detail.remedy_zh and detail.message_en and detail.remedy_en
    assert nothing_saved(stub, card)


def test_a_signature_by_another_card_is_refused(stub: Stub, test_ca: TestCA,
                                                operator: SigningCard) -> None:
    other = make_signing_card(test_ca, CardKind.DECLARANT)
    request = save_request(operator)
    request.signature = other.sign(request.payload)
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.SIGNATURE_INVALID


def test_a_card_of_an_untrusted_ca_is_refused(stub: Stub, tmp_path: Path,
                                              operator: SigningCard) -> None:
    rogue_ca = init_ca(tmp_path / "rogue-ca")  # same names as the real test CA, other keys
    for algorithm in ("p256", "sm2"):
        rogue = make_signing_card(rogue_ca, CardKind.DECLARANT, algorithm)
        code, detail = refusal(stub.Save, save_request(rogue))
        assert code is UNAUTHENTICATED and detail.reason == pb.CERT_UNTRUSTED
    assert nothing_saved(stub, operator)


@pytest.mark.parametrize(("start", "reason"), [
    (timedelta(days=-800), pb.CERT_EXPIRED), (timedelta(days=2), pb.CERT_NOT_YET_VALID)])
def test_expired_and_not_yet_valid_certificates_are_refused(
        stub: Stub, test_ca: TestCA, operator: SigningCard, start: timedelta,
        reason: int) -> None:
    card = make_signing_card(test_ca, CardKind.OPERATOR,
                             not_before=datetime.now(UTC).replace(microsecond=0) + start)
    code, detail = refusal(stub.Save, save_request(card))
    assert code is UNAUTHENTICATED and detail.reason == reason
    assert nothing_saved(stub, operator)


def test_a_certificate_without_eport_identity_is_refused(stub: Stub, test_ca: TestCA,
                                                         operator: SigningCard) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")]))
                   .issuer_name(test_ca.rsa_certificate.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30))
                   .sign(test_ca.rsa_key, hashes.SHA256()))
    payload = build_payload("Save", {"document": valid_declaration()})
    request = pb.SignedRequest(
        payload=payload, signature=key.sign(payload, ec.ECDSA(hashes.SHA256())),
        certificate=certificate.public_bytes(serialization.Encoding.DER),
        algorithm=pb.ECDSA_P256_SHA256)
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.NOT_EPORT_CARD
    assert nothing_saved(stub, operator)


def test_a_replayed_request_is_refused(stub: Stub, operator: SigningCard) -> None:
    request = save_request(operator)
    stub.Save(request)
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.REPLAY
    assert len(stub.Query(operator.request("Query", {})).documents) == 1
    # The nonce is spent for every method, also read-only ones.
    query = operator.request("Query", {})
    stub.Query(query)
    assert refusal(stub.Query, query)[1].reason == pb.REPLAY


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_stale_request_is_refused(stub: Stub, operator: SigningCard,
                                    offset: timedelta) -> None:
    request = save_request(operator, now=datetime.now(UTC) + offset)
    code, detail = refusal(stub.Save, request)
    assert code is UNAUTHENTICATED and detail.reason == pb.STALE_REQUEST
    assert "时间" in detail.remedy_zh and "clock" in detail.remedy_en
    assert stub.Save(save_request(operator, now=datetime.now(UTC) + offset / 3)).status


def test_the_method_must_be_the_rpc(stub: Stub, operator: SigningCard) -> None:
    saved = stub.Save(save_request(operator))
    signed_for_query = operator.request("GetDocument", {"number": saved.temporary_number})
    code, detail = refusal(stub.Upload, signed_for_query)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.BAD_REQUEST
    assert stub.GetDocument(operator.request(
        "GetDocument", {"number": saved.temporary_number})).status == pb.SAVED


def envelope(**fields: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(build_payload("Save", {"document": valid_declaration()}))
    raw.update(fields)
    return raw


# Built when the test runs, not when it is collected: signed_at must be within the allowed
# clock skew, and a full suite collects minutes before it gets here.
MALFORMED_PAYLOADS: dict[str, Callable[[], bytes]] = {
    "aud": lambda: canonical_json(envelope(aud="eport-gateway")),
    "version": lambda: canonical_json(envelope(v=2)),
    "nonce": lambda: canonical_json(envelope(nonce="short")),
    "signed_at": lambda: canonical_json(envelope(signed_at="yesterday")),
    "missing-key": lambda: canonical_json(
        {k: v for k, v in envelope().items() if k != "nonce"}),
    "indented": lambda: json.dumps(envelope(), ensure_ascii=False, indent=1).encode(),
    "ascii-escaped": lambda: json.dumps(envelope(), ensure_ascii=True, sort_keys=True,
                                        separators=(",", ":")).encode(),
    "duplicate-key": lambda: canonical_json(envelope())[:-1] + b',"v":1}',
    "junk": lambda: b"\xff\xfe junk \x00",
    "empty": lambda: b"",
    "array": lambda: canonical_json(["not", "an", "object"]),
    "document-not-object": lambda: canonical_json(envelope(body={"document": "text"})),
    "unknown-body-key": lambda: canonical_json(envelope(body={"document": {}, "extra": 1})),
    # Exact fields: a bool is not the version, "$" must not let a final newline through.
    "version-true": lambda: canonical_json(envelope(v=True)),
    "version-string": lambda: canonical_json(envelope(v="1")),
    "nonce-newline": lambda: canonical_json(envelope(nonce="0123456789abcdef" * 2 + "\n")),
    "nonce-upper": lambda: canonical_json(envelope(nonce="0123456789ABCDEF" * 2)),
    "signed_at-short": lambda: canonical_json(envelope(
        signed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M") + ":5Z")),
    "signed_at-newline": lambda: canonical_json(envelope(
        signed_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + "\n")),
    "signed_at-number": lambda: canonical_json(envelope(signed_at=20261201)),
    # What the JSON parser itself refuses: never an internal error (UNKNOWN).
    "integer-5000-digits": lambda: with_limit(b"9" * 5000),
    "integer-17-digits": lambda: with_limit(b"12345678901234567"),
    "lone-surrogate": lambda: with_limit(b'"\\ud800"'),
    "nan": lambda: with_limit(b"NaN"),
    "infinity": lambda: with_limit(b"-Infinity"),
    "float": lambda: with_limit(b"1.5"),
    "deep-nesting": lambda: with_limit(b"[" * 100_000 + b"]" * 100_000),
}


def with_limit(raw_value: bytes) -> bytes:
    """A canonical envelope whose body's "limit" is replaced by raw JSON text."""
    return canonical_json(envelope(body={"limit": 7})).replace(b'"limit":7',
                                                               b'"limit":' + raw_value)


@pytest.mark.parametrize("name", list(MALFORMED_PAYLOADS))
def test_malformed_payloads_are_bad_requests(stub: Stub, operator: SigningCard,
                                             name: str) -> None:
    payload = MALFORMED_PAYLOADS[name]()
    code, detail = refusal(stub.Save, operator.request("Save", {}, payload=payload))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.BAD_REQUEST
    assert detail.message_en.startswith("The request is malformed")
    assert nothing_saved(stub, operator)


def test_junk_requests_change_nothing(datacenter: tuple[Any, Stub],
                                      operator: SigningCard) -> None:
    running, stub = datacenter
    code, detail = refusal(stub.Save, pb.SignedRequest())
    assert code is grpc.StatusCode.INVALID_ARGUMENT and detail.reason == pb.BAD_REQUEST
    request = save_request(operator)
    request.certificate = b"\x30\x03junk"
    assert refusal(stub.Save, request)[1].reason == pb.BAD_REQUEST
    with grpc.insecure_channel(running.address) as channel:
        raw: Any = channel.unary_unary("/eport.datacenter.v1.DataCenter/Save")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff not a protobuf")
        assert caught.value.code() is not grpc.StatusCode.OK
    assert nothing_saved(stub, operator)


def test_identity_comes_from_the_certificate_only(stub: Stub, operator: SigningCard,
                                                  test_ca: TestCA) -> None:
    declarant = make_signing_card(test_ca, CardKind.DECLARANT)
    # The operator's certificate with the declarant's signature is not a declarant request.
    saved = stub.Save(save_request(operator))
    request = declarant.request("Declare", {"number": saved.temporary_number})
    request.certificate = operator.image.certificate
    assert refusal(stub.Declare, request)[1].reason == pb.SIGNATURE_INVALID
    image: CardImage = operator.image
    request = operator.request("Declare", {"number": saved.temporary_number,
                                           "kind": "declarant"})
    assert refusal(stub.Declare, request)[1].reason in (pb.WRONG_CARD_KIND, pb.BAD_REQUEST)
    assert image.profile.kind is CardKind.OPERATOR


def test_the_chain_is_checked_once_per_certificate(test_ca: TestCA, operator: SigningCard,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from eport.datacenter import trust, trust_store

    verifier = trust.RequestVerifier(
        trust_store.load_trust([test_ca.trust_bundle], now=datetime.now(UTC)))
    calls: list[bytes] = []
    real_issued_by = trust_store.issued_by

    def counting_issued_by(certificate: Any, issuer: Any) -> bool:
        found = real_issued_by(certificate, issuer)
        if found:
            calls.append(certificate.der)
        return found

    monkeypatch.setattr(trust_store, "issued_by", counting_issued_by)
    sm2_card = make_signing_card(test_ca, CardKind.DECLARANT, "sm2")
    for card in (operator, sm2_card, operator, sm2_card):
        verified = verifier.verify(card.request("Query", {}), "Query")
        assert verified.identity.card_id == card.card_id
        assert verified.identity.customs_code == card.customs_code
    assert len(calls) == 2
