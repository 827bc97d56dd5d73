"""The page library's 35 card methods through the real eport-gateway, eportd, pcscd and vpcd with
simulated RSA-2048 and SM2 cards, from the independent websocket client
(tests/support/ws_protocol_client.py), written from docs/gateway.md.

Each method's success is checked as a user would check it (signatures with openssl, ciphertexts
decrypted by openssl with the card's envelope key and the other way round), and each method's bad
input gets the documented code without changing state: no PIN try spent (GetPinStatus), the PIN
session still open. Nothing here imports the gateway's code.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card
from tests.support.daemon_stack import start_daemon
from tests.support.gateway_stack import Gateway, running_gateway
from tests.support.pcsc_stack import Pcscd, reader_for_slot
from tests.support.ws_protocol_client import GatewayClient, Reply

pytestmark = pytest.mark.pcsc

PIN, WRONG_PIN = "88888888", "11111111"
SM2_ID = "1234567812345678"
READER0 = reader_for_slot(0)
CST = timedelta(hours=8)
ALGORITHMS = ["rsa2048", "sm2"]
KEYRING = {"PYTHON_KEYRING_BACKEND": "tests.support.memory_keyring.MemoryKeyring"}
# The Error[0] beginnings of docs/gateway.md, by code.
ZH = {"51500": "输入参数错误", "51590": "[智能卡应用模块]卡片无效", "0A000024": "口令不正确",
      "0A00002D": "尚未验证口令"}


# ---- replies ----

def ok(reply: Reply) -> list[Any]:
    reply.check_shape()
    assert reply.ok, f"expected success: {reply.describe()}"
    return reply.data


def failed(reply: Reply, code: str) -> list[Any]:
    reply.check_shape()
    assert not reply.ok and reply.code == code, f"expected {code}: {reply.describe()}"
    assert reply.error[0].startswith(ZH[code]), reply.describe()
    return reply.error


# ---- independent checks: openssl ----

_files = itertools.count()


def run(*args: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([str(a) for a in args], input=stdin, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout!r} {result.stderr!r}"
    return result.stdout


def write(workdir: Path, data: bytes, stem: str = "file") -> Path:
    path = workdir / f"{stem}-{next(_files)}"
    path.write_bytes(data)
    return path


def public_key_pem(certificate: bytes, workdir: Path) -> Path:
    pem = run("openssl", "x509", "-inform", "DER", "-in", write(workdir, certificate, "cert"),
              "-pubkey", "-noout")
    return write(workdir, pem, "pub")


def openssl_verifies(image: CardImage, data: bytes, signature: bytes, workdir: Path) -> bool:
    """SHA1withRSA, or SM2-SM3 r || s with the default user id, by `openssl dgst -verify`."""
    pub = public_key_pem(image.certificate, workdir)
    if image.profile.algorithm == "sm2":
        assert len(signature) == 64, f"SM2 signatures are r || s: {len(signature)} bytes"
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        args = ["-sm3", "-sigopt", f"distid:{SM2_ID}"]
    else:
        der, args = signature, ["-sha1"]
    result = subprocess.run(
        ["openssl", "dgst", *args, "-verify", str(pub), "-signature",
         str(write(workdir, der, "sig")), str(write(workdir, data, "data"))],
        capture_output=True, text=True, timeout=60, check=False)
    return result.returncode == 0 and "Verified OK" in result.stdout


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def envelope_private_key_pem(image: CardImage, workdir: Path) -> Path:
    """The card's envelope private key as a file openssl reads (PKCS#8 DER)."""
    key = image.envelope_private_key
    assert key is not None
    if image.profile.algorithm == "sm2":
        # PKCS#8 { 0, {id-ecPublicKey, sm2}, ECPrivateKey { 1, d } }
        ec_public_key = bytes.fromhex("06072a8648ce3d0201")
        sm2_curve = bytes.fromhex("06082a811ccf5501822d")
        inner = _der(0x30, b"\x02\x01\x01" + _der(0x04, key))
        key = _der(0x30, b"\x02\x01\x00" + _der(0x30, ec_public_key + sm2_curve)
                   + _der(0x04, inner))
    return write(workdir, key, "key.der")


def openssl_decrypt(image: CardImage, ciphertext: bytes, workdir: Path) -> bytes:
    return run("openssl", "pkeyutl", "-decrypt", "-keyform", "DER", "-inkey",
               envelope_private_key_pem(image, workdir), "-in",
               write(workdir, ciphertext, "cipher"))


def openssl_encrypt(certificate: bytes, plaintext: bytes, workdir: Path) -> bytes:
    return run("openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey",
               public_key_pem(certificate, workdir), "-in", write(workdir, plaintext, "plain"))


def sm2_asn1_to_c1c3c2(ciphertext: bytes) -> bytes:
    """GM/T 0009 SEQUENCE {x, y, hash, ciphertext} as 04 || x || y || hash || ciphertext."""
    parts: list[bytes] = []
    body = _read_der(ciphertext, 0x30)
    while body:
        tag = body[0]
        content, body = _split_der(body)
        if tag == 0x02:
            content = content.lstrip(b"\x00").rjust(32, b"\x00")
        parts.append(content)
    x, y, digest, encrypted = parts
    return b"\x04" + x + y + digest + encrypted


def _split_der(data: bytes) -> tuple[bytes, bytes]:
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(data[2:2 + count], "big"), 2 + count
    return data[offset:offset + length], data[offset + length:]


def _read_der(data: bytes, tag: int) -> bytes:
    assert data[0] == tag, data[:4].hex()
    content, rest = _split_der(data)
    assert not rest
    return content


def sm2_e(image: CardImage, message: bytes) -> bytes:
    """e = SM3(Z || M), Z from the card's public key and the default user id (GM/T 0009)."""
    pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-pubkey", "-noout"],
                         input=image.certificate, capture_output=True, check=True).stdout
    der = base64.b64decode(b"".join(line for line in pub.splitlines() if b"-----" not in line))
    point = der[-64:]
    constants = bytes.fromhex(
        "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
        "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
        "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
        "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")
    user_id = SM2_ID.encode()
    z = hashlib.new("sm3", (len(user_id) * 8).to_bytes(2, "big") + user_id + constants
                    + point).digest()
    return hashlib.new("sm3", z + message).digest()


def pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    return ("-----BEGIN CERTIFICATE-----\n"
            + "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
            + "\n-----END CERTIFICATE-----\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def datacenter_envelope(method: str = "Declare") -> bytes:
    """A data-centre request envelope as docs/datacenter.md describes it (canonical JSON)."""
    return json.dumps({"aud": "eport-datacenter", "body": {"document": {"entry_type": "I"}},
                       "method": method, "nonce": secrets.token_hex(16),
                       "signed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "v": 1},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---- the stack ----

@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CardStack]:
    directory = tmp_path_factory.mktemp("gateway-methods")
    with running_card_stack(directory, test_ca.trust_bundle) as stack:
        # eportd with unattended signing allowed (an in-memory keyring), so that a stored PIN
        # exists that the gateway must not use.
        stack.stop_daemon()
        stack.daemon = start_daemon(directory / "run", "--trust-anchor",
                                    str(test_ca.trust_bundle), "--allow-unattended",
                                    env=KEYRING)
        yield stack


@pytest.fixture(scope="module")
def gateway(stack: CardStack) -> Iterator[Gateway]:
    with running_gateway(stack.socket) as started:
        yield started


@pytest.fixture(scope="module")
def cards(test_ca: TestCA) -> dict[str, CardImage]:
    return {algorithm: provision_test_card(test_ca, algorithm) for algorithm in ALGORITHMS}


@pytest.fixture(scope="module")
def other_cards(test_ca: TestCA) -> dict[str, CardImage]:
    """Cards that are never inserted: their envelope certificates are someone else's."""
    return {algorithm: provision_test_card(test_ca, algorithm) for algorithm in ALGORITHMS}


@dataclass
class Env:
    stack: CardStack
    workdir: Path

    def put(self, image: CardImage) -> None:
        self.stack.put(image, self.workdir)

    def status(self) -> pb.PinStatus:
        return self.stack.running().stub().GetPinStatus(pb.CardSelector(reader=READER0))


@pytest.fixture
def env(stack: CardStack, gateway: Gateway, tmp_path: Path) -> Iterator[Env]:
    yield Env(stack, tmp_path)
    assert gateway.alive(), "the gateway died:\n" + gateway.log()[-5000:]
    assert "Traceback" not in gateway.log(), gateway.log()[-5000:]
    stack.remove(0)


def connect(gateway: Gateway) -> GatewayClient:
    return GatewayClient.connect(gateway.url)


# ---- every method works ----

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_environment_and_card_methods(env: Env, gateway: Gateway, cards: dict[str, CardImage],
                                      algorithm: str) -> None:
    image = cards[algorithm]
    profile = image.profile
    env.put(image)
    with connect(gateway) as client:
        assert ok(client.call("SpcSetInitEnvPriority", {"szInitEnvPriority": "1,2,3"})) == []
        assert ok(client.call("SpcInitEnvEx")) == []
        assert ok(client.call("SpcGetCardID")) == [profile.card_id]
        [cert_no] = ok(client.call("SpcGetCertNo"))
        assert ok(client.call("SpcGetUName")) == [profile.holder_name]
        assert ok(client.call("SpcGetEntID")) == [profile.customs_code]
        assert ok(client.call("SpcGetEntName")) == [profile.enterprise_name]
        assert ok(client.call("SpcGetEntMode")) == ["2"]
        [info] = ok(client.call("SpcGetCardUserInfo"))
        assert info["szCardID"] == profile.card_id and info["szCertNo"] == cert_no
        # The attach info: JSON text of the card's profile, and the base64 of its bytes.
        [attach] = ok(client.call("SpcGetCardAttachInfo"))
        fields = json.loads(attach)
        assert fields["szCardID"] == profile.card_id and fields["szCertNo"] == cert_no
        assert fields["szEntID"] == profile.customs_code
        assert fields["szCreditCode"] == profile.credit_code
        assert fields["szAlgorithm"] == {"rsa2048": "RSA2048", "sm2": "SM2"}[algorithm]
        [attach_b64] = ok(client.call("SpcGetCardAttachInfoAsPEM"))
        assert base64.b64decode(attach_b64, validate=True).decode() == attach
        assert ok(client.call("SpcDecodePEMAsString", {"inData": attach_b64})) == [attach]
        # The signing and the envelope certificates.
        for method in ("SpcGetSignCert", "SpcGetSignCertAsPEM"):
            [text] = ok(client.call(method))
            assert base64.b64decode(text, validate=True) == image.certificate
        assert image.envelope_certificate is not None
        for method in ("SpcGetEnvCert", "SpcGetEnvCertAsPEM"):
            [text] = ok(client.call(method))
            assert "\n" not in text and "-----" not in text
            assert base64.b64decode(text, validate=True) == image.envelope_certificate
        assert image.envelope_certificate != image.certificate


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_valid_time_of_the_card_and_of_a_given_certificate(
        env: Env, gateway: Gateway, cards: dict[str, CardImage], test_ca: TestCA,
        algorithm: str) -> None:
    from cryptography import x509

    env.put(cards[algorithm])
    start = datetime(2025, 3, 4, 17, 30, 0, tzinfo=UTC)
    given = provision_test_card(test_ca, algorithm, not_before=start, days=100).certificate
    parsed = x509.load_der_x509_certificate(cards[algorithm].certificate)

    def stamps(begin: datetime, end: datetime) -> dict[str, str]:
        return {"szStartTime": (begin + CST).strftime("%Y%m%d%H%M%S"),
                "szEndTime": (end + CST).strftime("%Y%m%d%H%M%S")}

    with connect(gateway) as client:
        assert ok(client.call("SpcGetValidTimeFromCert")) == [
            stamps(parsed.not_valid_before_utc, parsed.not_valid_after_utc)]
        expected = [stamps(start, start + timedelta(days=100))]
        assert expected[0]["szStartTime"] == "20250305013000"  # 17:30 UTC is 01:30 CST
        assert ok(client.call("SpcGetValidTimeFromCert", {"cert": b64(given)})) == expected
        assert ok(client.call("SpcGetValidTimeFromCert", {"cert": pem(given)})) == expected
        # An empty cert is what the library sends as "none": the card's certificate.
        assert ok(client.call("SpcGetValidTimeFromCert", {"cert": ""})) == [
            stamps(parsed.not_valid_before_utc, parsed.not_valid_after_utc)]
    env.stack.remove(0)
    with connect(gateway) as client:  # with cert, no card is needed
        assert ok(client.call("SpcGetValidTimeFromCert", {"cert": b64(given)})) == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pin_methods(env: Env, gateway: Gateway, cards: dict[str, CardImage],
                     algorithm: str) -> None:
    env.put(cards[algorithm])
    with connect(gateway) as client:
        for method in ("SpcVerifyPIN", "SpcVerifyPINAll"):
            assert not env.status().session_active
            assert ok(client.call(method, {"passwd": PIN})) == []
            assert env.status().session_active, method
            assert ok(client.call("SpcClearEnv")) == []
            assert not env.status().session_active
        error = failed(client.call("SpcVerifyPINAll", {"passwd": WRONG_PIN}), "0A000024")
        assert "还可以重试2次" in error[0], error
        assert ok(client.call("SpcVerifyPINAll", {"passwd": PIN})) == []
        assert env.status().pin_tries_left in (3, -1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signing_methods(env: Env, gateway: Gateway, cards: dict[str, CardImage],
                         algorithm: str, tmp_path: Path) -> None:
    image = cards[algorithm]
    env.put(image)
    text = f"报关单 {algorithm} {secrets.token_hex(6)}"
    binary = b"\x00\xff\xfe binary " + secrets.token_bytes(16)
    random = secrets.token_bytes(32)
    with connect(gateway) as client:
        [cert_no] = ok(client.call("SpcGetCertNo"))
        signed: list[tuple[str, bytes, list[Any]]] = []
        for method in ("SpcSignData", "SpcSignDataAsPEM"):
            signed.append((method, text.encode(), ok(client.call(
                method, {"inData": text, "passwd": PIN}))))
        signed.append(("SpcSignPemDataAsPem", binary, ok(client.call(
            "SpcSignPemDataAsPem", {"inData": b64(binary), "passwd": PIN}))))
        signed.append(("SpcSignRandom", random, ok(client.call(
            "SpcSignRandom", {"random": b64(random), "passwd": PIN}))))
        digest = (sm2_e(image, text.encode()) if algorithm == "sm2"
                  else hashlib.sha1(text.encode()).digest())
        for method in ("SpcSignDataNoHash", "SpcSignDataNoHashAsPEM"):
            signed.append((method, text.encode(), ok(client.call(
                method, {"inData": digest.hex(), "passwd": PIN}))))
        # In the PIN session, without passwd (the library leaves it out then).
        signed.append(("SpcSignPemDataAsPem", binary, ok(client.call(
            "SpcSignPemDataAsPem", {"inData": b64(binary)}))))
        signed.append(("SpcSignRandom", random, ok(client.call(
            "SpcSignRandom", {"random": b64(random), "passwd": ""}))))
        for method, data, answer in signed:
            signature_b64, number = answer
            assert number == cert_no, method
            signature = base64.b64decode(signature_b64, validate=True)
            assert openssl_verifies(image, data, signature, tmp_path), method
            assert not openssl_verifies(image, data + b"!", signature, tmp_path), method
        # The verification methods accept what was signed, and only that.
        signature_b64 = signed[0][2][0]
        assert ok(client.call("SpcVerifySignData", {"inData": text,
                                                    "signData": signature_b64})) == []
        assert ok(client.call("SpcVerifySignData", {
            "inData": text, "signData": signature_b64,
            "certDataPEM": pem(image.certificate)})) == []
        assert ok(client.call("SpcVerifySignDataNoHash", {"inData": digest.hex(),
                                                          "signData": signature_b64})) == []
        failed_reply = client.call("SpcVerifySignData", {"inData": text + "x",
                                                         "signData": signature_b64})
        assert not failed_reply.ok and failed_reply.code == "51620"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_no_card_methods(env: Env, gateway: Gateway, algorithm: str) -> None:
    text = "报关单 declaration ✓ " + secrets.token_hex(4)
    with connect(gateway) as client:
        assert ok(client.call("SpcSHA1Digest", {"szInfo": text})) == \
            [hashlib.sha1(text.encode()).hexdigest().upper()]
        assert ok(client.call("SpcSHA1DigestAsPEM", {"szInfo": text})) == \
            [b64(hashlib.sha1(text.encode()).digest())]
        [encoded] = ok(client.call("SpcEncodePEM", {"inData": text}))
        assert base64.b64decode(encoded).decode() == text
        assert ok(client.call("SpcDecodePEM", {"inData": encoded})) == [text]
        assert ok(client.call("SpcDecodePEMAsString", {"inData": encoded})) == [text]


# ---- encryption, both directions against openssl ----

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_encrypt_to_the_envelope_certificate_and_decrypt(
        env: Env, gateway: Gateway, cards: dict[str, CardImage],
        other_cards: dict[str, CardImage], algorithm: str, tmp_path: Path) -> None:
    image, other = cards[algorithm], other_cards[algorithm]
    assert image.envelope_certificate is not None and other.envelope_certificate is not None
    env.put(image)
    text = f"加密的报关数据 {algorithm} ✓ {secrets.token_hex(8)}"
    with connect(gateway) as client:
        # To the card's own envelope certificate (no certData): openssl decrypts it with the
        # card's envelope key, and so does the card.
        [ciphertext_b64] = ok(client.call("SpcRSAEncrypt", {"inData": text}))
        ciphertext = base64.b64decode(ciphertext_b64, validate=True)
        if algorithm == "rsa2048":
            assert len(ciphertext) == 256
        else:
            assert ciphertext[0] == 0x30  # the GM/T 0009 ASN.1 SEQUENCE
        assert openssl_decrypt(image, ciphertext, tmp_path) == text.encode()
        [plain_b64] = ok(client.call("SpcRSADecrypt", {"inData": ciphertext_b64,
                                                       "passwd": PIN}))
        assert base64.b64decode(plain_b64, validate=True) == text.encode()
        assert ok(client.call("SpcDecodePEMAsString", {"inData": plain_b64})) == [text]
        # Encrypted by openssl to the certificate SpcGetEnvCert gives: the card decrypts it
        # (in the PIN session, without passwd).
        [envelope_b64] = ok(client.call("SpcGetEnvCert"))
        from_openssl = openssl_encrypt(base64.b64decode(envelope_b64), text.encode(), tmp_path)
        [plain_b64] = ok(client.call("SpcRSADecrypt", {"inData": b64(from_openssl)}))
        assert base64.b64decode(plain_b64) == text.encode()
        if algorithm == "sm2":  # the raw C1 || C3 || C2 form is accepted too
            raw = sm2_asn1_to_c1c3c2(from_openssl)
            [plain_b64] = ok(client.call("SpcRSADecrypt", {"inData": b64(raw)}))
            assert base64.b64decode(plain_b64) == text.encode()
        # With certData, to someone else's envelope certificate (bare base64 and PEM): only
        # that key decrypts it.
        for certificate in (b64(other.envelope_certificate), pem(other.envelope_certificate)):
            [sealed_b64] = ok(client.call("SpcRSAEncrypt", {
                "inData": text, "certData": certificate, "passwd": PIN}))
            sealed = base64.b64decode(sealed_b64)
            assert openssl_decrypt(other, sealed, tmp_path) == text.encode()
        # Binary plaintext survives (base64 out, never guessed to be text).
        binary = b"\x00\xff\x80 bytes"
        sealed = openssl_encrypt(image.envelope_certificate, binary, tmp_path)
        assert ok(client.call("SpcRSADecrypt", {"inData": b64(sealed)})) == [b64(binary)]
        # Nothing was spent.
        assert env.status().pin_tries_left in (3, -1)


def test_decrypt_needs_the_pin_and_spends_no_try_on_a_bad_ciphertext(
        env: Env, gateway: Gateway, cards: dict[str, CardImage], tmp_path: Path) -> None:
    image = cards["rsa2048"]
    assert image.envelope_certificate is not None
    env.put(image)
    sealed = b64(openssl_encrypt(image.envelope_certificate, b"secret", tmp_path))
    with connect(gateway) as client:
        failed(client.call("SpcRSADecrypt", {"inData": sealed}), "0A00002D")
        error = failed(client.call("SpcRSADecrypt", {"inData": sealed, "passwd": WRONG_PIN}),
                       "0A000024")
        assert "还可以重试2次" in error[0]
        assert ok(client.call("SpcRSADecrypt", {"inData": sealed, "passwd": PIN})) == \
            [b64(b"secret")]


def test_a_card_without_an_envelope_key(env: Env, gateway: Gateway, test_ca: TestCA,
                                        tmp_path: Path) -> None:
    image = provision_test_card(test_ca, "rsa2048", envelope_key=False)
    env.put(image)
    with connect(gateway) as client:
        for method, args in (("SpcGetEnvCert", None), ("SpcGetEnvCertAsPEM", None),
                             ("SpcRSAEncrypt", {"inData": "x"}),
                             ("SpcRSADecrypt", {"inData": b64(b"\x01" * 256), "passwd": PIN})):
            failed(client.call(method, args), "51590")
        assert env.status().pin_tries_left == 3
        ok(client.call("SpcSignData", {"inData": "signing still works", "passwd": PIN}))


# ---- bad input: the documented code, and nothing changes ----

def _bad_inputs(algorithm: str, image: CardImage, other: CardImage, pin: str | None,
                p256_certificate: bytes) -> list[tuple[str, dict[str, Any] | None]]:
    """(method, args) that must each get 51500; `pin` is put into every passwd."""
    assert other.envelope_certificate is not None
    with_pin: dict[str, Any] = {} if pin is None else {"passwd": pin}
    too_long = "x" * (246 if algorithm == "rsa2048" else (1 << 20) + 1)
    wrong_digest = "00" * (32 if algorithm == "rsa2048" else 20)
    return [
        ("SpcSetInitEnvPriority", {"szInitEnvPriority": {"devices": [1]}}),
        ("SpcSetInitEnvPriority", {"szInitEnvPriority": "1" * 300}),
        ("SpcVerifyPIN", {"passwd": 88888888}),
        ("SpcVerifyPINAll", {}),
        ("SpcVerifyPINAll", {"passwd": ["88888888"]}),
        ("SpcChangePIN", {"oldPin": 88888888, "newPin": "24682468"}),
        ("SpcGetValidTimeFromCert", {"cert": "bm90IGEgY2VydGlmaWNhdGU="}),
        ("SpcGetValidTimeFromCert", {"cert": "%%% not base64 %%%"}),
        ("SpcGetValidTimeFromCert", {"cert": 42}),
        ("SpcGetValidTimeFromCert", {"cert": pem(image.certificate)[:300]}),
        ("SpcSignData", {"inData": 5, **with_pin}),
        ("SpcSignDataAsPEM", {"inData": ["text"], **with_pin}),
        ("SpcSignDataAsPEM", {"inData": "text", "passwd": 88888888}),
        ("SpcSignPemDataAsPem", {"inData": "not base64!", **with_pin}),
        ("SpcSignPemDataAsPem", {**with_pin}),
        ("SpcSignRandom", {"random": "%%%", **with_pin}),
        ("SpcSignRandom", {"random": "", **with_pin}),
        ("SpcSignRandom", {"random": 123456, **with_pin}),
        ("SpcSignDataNoHash", {"inData": wrong_digest, **with_pin}),
        ("SpcSignDataNoHashAsPEM", {"inData": "zz" * 20, **with_pin}),
        ("SpcVerifySignData", {"inData": "x", "signData": "***"}),
        ("SpcVerifySignData", {"inData": "x", "signData": b64(b"x" * 64),
                               "certDataPEM": "not a certificate"}),
        ("SpcVerifySignDataNoHash", {"inData": wrong_digest, "signData": b64(b"x" * 64)}),
        ("SpcSHA1Digest", {"szInfo": {"a": 1}}),
        ("SpcSHA1DigestAsPEM", {"szInfo": 3.5}),
        ("SpcEncodePEM", {"inData": None}),
        ("SpcDecodePEM", {"inData": "***"}),
        ("SpcDecodePEMAsString", {"inData": b64(b"\xff\xfe\xfd")}),
        ("SpcRSAEncrypt", {"inData": too_long, **with_pin}),
        ("SpcRSAEncrypt", {"inData": "", **with_pin}),
        ("SpcRSAEncrypt", {"inData": 7, **with_pin}),
        ("SpcRSAEncrypt", {"inData": "x", "certData": "bm90IGEgY2VydGlmaWNhdGU=", **with_pin}),
        ("SpcRSAEncrypt", {"inData": "x", "certData": "%%%", **with_pin}),
        # A signing certificate (keyUsage without encipherment) and an ECDSA one: no.
        ("SpcRSAEncrypt", {"inData": "x", "certData": b64(image.certificate), **with_pin}),
        ("SpcRSAEncrypt", {"inData": "x", "certData": b64(p256_certificate), **with_pin}),
        ("SpcRSADecrypt", {"inData": "***", **with_pin}),
        ("SpcRSADecrypt", {"inData": "", **with_pin}),
        ("SpcRSADecrypt", {"inData": 12, **with_pin}),
        ("SpcRSADecrypt", {"inData": b64(b"\x01" * 10), **with_pin}),   # no ciphertext's size
        ("SpcRSADecrypt", {"inData": "A" * (3 << 20), **with_pin}),      # oversize
    ]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bad_input_gets_51500_and_spends_nothing(
        env: Env, gateway: Gateway, cards: dict[str, CardImage],
        other_cards: dict[str, CardImage], test_ca: TestCA, algorithm: str,
        tmp_path: Path) -> None:
    image, other = cards[algorithm], other_cards[algorithm]
    p256 = provision_test_card(test_ca, "p256").certificate
    env.put(image)
    with connect(gateway) as client:
        # No session, and a wrong PIN in every passwd: had any reached the card, a try would
        # be gone.
        for method, args in _bad_inputs(algorithm, image, other, WRONG_PIN, p256):
            failed(client.call(method, args), "51500")
        status = env.status()
        assert status.pin_tries_left == 3 and not status.session_active
        # In a PIN session, without passwd: the session survives every bad request, including
        # a well-formed ciphertext for another card's key.
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        assert other.envelope_certificate is not None
        foreign = openssl_encrypt(other.envelope_certificate, b"not for this card", tmp_path)
        bad = [*_bad_inputs(algorithm, image, other, None, p256),
               ("SpcRSADecrypt", {"inData": b64(foreign)})]
        if algorithm == "sm2":  # damaged: the SM3 check fails
            damaged = bytearray(openssl_encrypt(image.envelope_certificate or b"", b"msg",
                                                tmp_path))
            damaged[-1] ^= 1
            bad.append(("SpcRSADecrypt", {"inData": b64(bytes(damaged))}))
        for method, args in bad:
            error = failed(client.call(method, args), "51500")
            assert PIN not in " ".join(error) and WRONG_PIN not in " ".join(error)
        assert env.status().session_active
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "still signs"}))
        assert openssl_verifies(image, b"still signs", base64.b64decode(signature), tmp_path)
    assert PIN not in gateway.log() and WRONG_PIN not in gateway.log()


NO_ARGUMENT_METHODS = (
    "SpcInitEnvEx", "SpcClearEnv", "SpcGetCardAttachInfo", "SpcGetCardAttachInfoAsPEM",
    "SpcGetCardID", "SpcGetCertNo", "SpcGetUName", "SpcGetEntID", "SpcGetEntName",
    "SpcGetEntMode", "SpcGetCardUserInfo", "SpcGetSignCert", "SpcGetSignCertAsPEM",
    "SpcGetEnvCert", "SpcGetEnvCertAsPEM")


def test_methods_without_arguments(env: Env, gateway: Gateway, cards: dict[str, CardImage]
                                   ) -> None:
    """Unknown keys in args are ignored; args that are not an object get 51500."""
    env.put(cards["sm2"])
    with connect(gateway) as client:
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        for method in NO_ARGUMENT_METHODS:
            if method == "SpcClearEnv":
                continue
            assert ok(client.call(method, {"passwd": WRONG_PIN, "inData": 5})) == \
                ok(client.call(method)), method
            future = client.send_json({"_method": "cus-sec_" + method, "_id": method,
                                       "args": ["not", "an", "object"]},
                                      expect_id=method, method="cus-sec_" + method)
            assert future is not None
            failed(future.result(30), "51500")
        status = env.status()
        assert status.session_active and status.pin_tries_left in (3, -1)


# ---- data-centre envelopes, stored PINs ----

def _envelope_forms() -> list[bytes]:
    envelope = datacenter_envelope()
    value = json.loads(envelope)
    return [envelope, json.dumps(value, indent=2).encode(),
            json.dumps(dict(sorted(value.items(), reverse=True))).encode(),
            json.dumps(value, ensure_ascii=True).encode()]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_datacenter_envelopes_are_not_signed_for_pages(
        env: Env, gateway: Gateway, stack: CardStack, cards: dict[str, CardImage],
        algorithm: str, tmp_path: Path) -> None:
    image = cards[algorithm]
    env.put(image)
    with connect(gateway) as client:
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        for data in _envelope_forms():
            for method, args in (
                    ("SpcSignData", {"inData": data.decode()}),
                    ("SpcSignDataAsPEM", {"inData": data.decode(), "passwd": PIN}),
                    ("SpcSignPemDataAsPem", {"inData": b64(data)}),
                    ("SpcSignRandom", {"random": b64(data), "passwd": PIN})):
                error = failed(client.call(method, args), "51500")
                assert "--allow-envelope-signing" in error[0] and \
                    "--allow-envelope-signing" in error[2], error
                assert "data-centre" in error[2]
        assert env.status().session_active
        # Ordinary JSON is signed.
        ok(client.call("SpcSignData", {"inData": json.dumps({"orderNo": "T1", "v": 1})}))
    envelope = datacenter_envelope("GrantEnterprise")
    with running_gateway(stack.socket, "--allow-envelope-signing") as allowing, \
            GatewayClient.connect(allowing.url) as client:
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": envelope.decode()}))
        assert openssl_verifies(image, envelope, base64.b64decode(signature), tmp_path)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_stored_pin_is_not_used_for_the_gateway(
        env: Env, gateway: Gateway, stack: CardStack, cards: dict[str, CardImage],
        algorithm: str, tmp_path: Path) -> None:
    image = cards[algorithm]
    assert image.envelope_certificate is not None
    env.put(image)
    daemon = stack.running().stub()
    selector = pb.CardSelector(reader=READER0)
    daemon.EnableUnattended(pb.EnableUnattendedRequest(card=selector, pin=PIN))
    daemon.Logout(selector)
    sealed = b64(openssl_encrypt(image.envelope_certificate, b"stored", tmp_path))
    try:
        assert daemon.Sign(pb.SignRequest(card=selector, data=b"eportd itself")).signature
        daemon.Logout(selector)
        with connect(gateway) as client:
            failed(client.call("SpcSignDataAsPEM", {"inData": "no pin"}), "0A00002D")
            failed(client.call("SpcSignDataNoHash", {"inData": "00" * (
                20 if algorithm == "rsa2048" else 32)}), "0A00002D")
            failed(client.call("SpcRSADecrypt", {"inData": sealed}), "0A00002D")
        with running_gateway(stack.socket, "--allow-stored-pin") as allowing, \
                GatewayClient.connect(allowing.url) as client:
            signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "stored pin"}))
            assert openssl_verifies(image, b"stored pin", base64.b64decode(signature),
                                    tmp_path)
            daemon.Logout(selector)
            assert ok(client.call("SpcRSADecrypt", {"inData": sealed})) == [b64(b"stored")]
    finally:
        daemon.DisableUnattended(selector)
    assert env.status().pin_tries_left in (3, -1)
