"""The gateway's pure helpers for the cus-sec_ methods: argument parsing and the data-centre
envelope check. The methods against the real gateway, eportd and cards are
tests/pcsc/test_gateway_methods.py."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from eport.clients.gateway.arguments import (
    certificate_arg,
    certificate_validity,
    decode_base64,
    key_of_certificate,
)
from eport.clients.gateway.envelope_guard import (
    envelope_refused,
    is_datacenter_envelope,
    refuse_datacenter_envelope,
)
from eport.clients.gateway.errors import BAD_ARGUMENTS, GatewayError
from eport.clients.gateway.methods import METHODS
from eport.common.customs.envelope import build_payload
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.ws_protocol_client import PAGE_LIBRARY_METHODS

NOT_BEFORE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def certificate_der() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway argument test")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(0x1234)
                   .not_valid_before(NOT_BEFORE)
                   .not_valid_after(NOT_BEFORE + timedelta(days=365))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.DER)


def _pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# ---- the page library's 35 card methods ----

def test_every_card_method_of_the_page_library_is_served() -> None:
    assert len(PAGE_LIBRARY_METHODS) == 35
    assert set(METHODS) == PAGE_LIBRARY_METHODS


# ---- base64 and certificates ----

def test_base64_ignores_line_breaks_and_refuses_junk() -> None:
    assert decode_base64("aGVs\nbG8=\r\n", "inData") == b"hello"
    for bad in ("not base64!", "aGVsbG8", "====", "aGVs*G8="):
        with pytest.raises(GatewayError) as caught:
            decode_base64(bad, "inData")
        assert caught.value.code == BAD_ARGUMENTS and "inData" in caught.value.text.en


def test_certificate_as_bare_base64_or_pem(certificate_der: bytes) -> None:
    bare = base64.b64encode(certificate_der).decode()
    assert certificate_arg(bare, "cert") == certificate_der
    assert certificate_arg(_pem(certificate_der), "cert") == certificate_der
    assert certificate_arg(_pem(certificate_der).replace("\n", "\r\n"), "cert") == \
        certificate_der
    assert key_of_certificate(certificate_der) == pb.RSA_2048


@pytest.mark.parametrize("text", [
    "", "bm90IGEgY2VydGlmaWNhdGU=",  # base64 of "not a certificate"
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\nno end line",
    "A" * 400_000,
])
def test_what_is_not_a_certificate(text: str) -> None:
    with pytest.raises(GatewayError) as caught:
        certificate_arg(text, "certData")
    assert caught.value.code == BAD_ARGUMENTS
    assert "certData" in caught.value.text.zh and "certData" in caught.value.text.en


def test_truncated_certificate_is_refused(certificate_der: bytes) -> None:
    with pytest.raises(GatewayError):
        certificate_arg(base64.b64encode(certificate_der[:-20]).decode(), "cert")


def test_certificate_validity(certificate_der: bytes) -> None:
    validity = certificate_validity(certificate_der)
    assert validity.not_before == NOT_BEFORE
    assert validity.not_after == NOT_BEFORE + timedelta(days=365)


# ---- data-centre envelopes ----

def _envelope() -> bytes:
    return build_payload("Declare", {"document": {"entry_type": "M", "items": [1, 2]}})


def test_a_real_envelope_is_detected() -> None:
    assert is_datacenter_envelope(_envelope())


def test_envelopes_rewritten_are_still_detected() -> None:
    value = json.loads(_envelope())
    variants = [
        json.dumps(value, indent=2),                       # whitespace
        json.dumps(dict(reversed(list(value.items())))),   # key order
        json.dumps(value, ensure_ascii=True),              # \\u escapes
        "\ufeff" + json.dumps(value),                      # a byte-order mark
        "\n\t " + json.dumps(value) + "\n",                # surrounding whitespace
        json.dumps({**value, "extra": True}),              # an extra key
        json.dumps({**value, "aud": " EPORT-DATACENTER "}),
        json.dumps({k: v for k, v in value.items() if k != "aud"}),  # method, body, nonce
        # duplicate keys: a lenient reader may take either aud
        json.dumps(value)[:-1] + ', "aud": "something else"}',
    ]
    for text in variants:
        assert is_datacenter_envelope(text.encode("utf-8")), text


@pytest.mark.parametrize("data", [
    b"", b"plain text to sign", "<CEBMessage>报关单</CEBMessage>".encode(),
    b'{"aud": "someone else", "method": "Declare"}',
    b'{"method": "Declare", "body": {}}',               # no nonce, no aud
    b'[{"aud": "eport-datacenter"}]',                   # the data centre takes only an object
    b'"eport-datacenter"',
    b'{"aud": "eport-datacenter"',                     # not JSON
    b"\xff\xfe{\x00}\x00",                               # not UTF-8
    b'{"nested": {"aud": "eport-datacenter", "method": "x", "body": {}, "nonce": "y"}}',
    b"[" * 100_000,                                     # too deep for the parser
])
def test_what_is_not_an_envelope(data: bytes) -> None:
    assert not is_datacenter_envelope(data)


def test_the_refusal_names_the_option_in_both_languages() -> None:
    with pytest.raises(GatewayError) as caught:
        refuse_datacenter_envelope(_envelope(), allowed=False, method="SpcSignData")
    error = caught.value
    assert error.code == BAD_ARGUMENTS
    assert error.text.zh.startswith("输入参数错误") and "--allow-envelope-signing" in error.text.zh
    assert "must not sign" in error.text.en and "--allow-envelope-signing" in error.text.en
    assert error.error_array() == envelope_refused().error_array()
    refuse_datacenter_envelope(_envelope(), allowed=True, method="SpcSignData")  # no raise
    refuse_datacenter_envelope(b"ordinary", allowed=False, method="SpcSignData")  # no raise
