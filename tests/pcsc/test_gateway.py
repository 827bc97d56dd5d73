"""eport-gateway acceptance: the installed `eport-gateway` in its own process, in front of a
real eportd, the real pcscd with vpcd and simulated cards, driven by an independent websocket
client (tests/support/ws_protocol_client.py) written only from docs/gateway.md.

Nothing here imports or reads the gateway's code: what is checked is what an integrator of the
official E-port client protocol would check (greeting, replies matched by `_id`, the Data of each
method, the error codes, block transfers, concurrency, Origin), and signatures are verified
independently (the openssl command line, or the `cryptography` package).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.exceptions import InvalidStatus

from eport.cardlib.pcsc.transport import PcscContext
from eport.common.profile import CardKind
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.card_stack import CardStack as Stack
from tests.support.card_stack import running_card_stack
from tests.support.cards import provision_test_card
from tests.support.daemon_stack import wait_for_card
from tests.support.gateway_stack import GATEWAY, Gateway, running_gateway, start_gateway
from tests.support.pcsc_stack import Pcscd, reader_for_slot
from tests.support.waiting import wait_until
from tests.support.ws_protocol_client import (
    GatewayClient,
    Reply,
    block_frame,
    check_code,
    crc16_modbus,
    split_blocks,
    utf16_length,
    wrong_check,
)

pytestmark = pytest.mark.pcsc

PIN, PUK, NEW_PIN, WRONG_PIN = "88888888", "12345678", "24682468", "11111111"
SECRETS = (PIN, PUK, NEW_PIN, WRONG_PIN)
READER0, READER1 = reader_for_slot(0), reader_for_slot(1)
SM2_ID = "1234567812345678"
# The default allow-list of docs/gateway.md: https only (plain-http pages are refused).
SINGLE_WINDOW_ORIGINS = (
    "https://www.singlewindow.cn", "https://app.singlewindow.cn", "https://swapp.singlewindow.cn",
)
SMALL_LIMIT = 65536  # --max-message-bytes of the `small_gateway`
CST = timedelta(hours=8)

# The Error[0] beginnings of docs/gateway.md, by code.
ZH = {
    "50200": "[读卡器底层库]打开读卡器失败",
    "50070": "[读卡器底层库]复位读卡器失败",
    "51590": "[智能卡应用模块]卡片无效,请插入IC卡或者Key",
    "51500": "输入参数错误",
    "0A000024": "口令不正确,还可以重试",
    "0A000025": "口令已锁定",
    "0A000026": "口令格式不正确",
    "0A00002D": "尚未验证口令",
    "51610": "您的IC卡已过期",
    "51611": "您的IC卡证书尚未生效",
    "51612": "证书不受信任",
    "51620": "验证签名失败",
}


# ---- replies ----

def ok(reply: Reply) -> list[Any]:
    """The Data of a successful reply (after checking the reply's documented shape)."""
    reply.check_shape()
    assert reply.ok, f"expected success: {reply.describe()}"
    return reply.data


def failed(reply: Reply, code: str) -> list[Any]:
    """The Error of a failed reply with this code; Error[0] begins as docs/gateway.md says."""
    reply.check_shape()
    assert not reply.ok, f"expected error {code}: {reply.describe()}"
    assert reply.code == code, f"expected error {code}: {reply.describe()}"
    zh = ZH[code]
    if code == "0A000024":  # also the last-try refusal, which says so instead
        assert reply.error[0].startswith(zh) or "口令只剩最后1次重试机会" in reply.error[0], \
            reply.describe()
    else:
        assert reply.error[0].startswith(zh), reply.describe()
    assert re.match(r"[A-Za-z]", reply.error[2]) and re.search(r"[A-Za-z]+ [A-Za-z]+",
                                                                reply.error[2]), \
        f"Error[2] is not the English message: {reply.describe()}"
    return reply.error


def unmatched_reply(client: GatewayClient, timeout: float = 10.0) -> Reply:
    """The reply to a frame that carried no usable `_id`."""
    item = client.next_unmatched(timeout)
    assert isinstance(item, Reply), f"not a JSON reply: {item!r}"
    return item


def still_works(client: GatewayClient, *, card: CardImage | None = None) -> None:
    """The same connection still answers a good request (and the card, when one is in)."""
    text = f"still works {secrets.token_hex(4)}"
    assert ok(client.call("SpcSHA1Digest", {"szInfo": text})) == \
        [hashlib.sha1(text.encode()).hexdigest().upper()]
    if card is not None:
        assert ok(client.call("SpcGetCardID")) == [card.profile.card_id]


def connect(gateway: Gateway, origin: str | None = None) -> GatewayClient:
    return GatewayClient.connect(gateway.url, origin=origin)


# ---- independent verification ----

def run(*args: str | Path, cwd: Path | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                            timeout=60)
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result


_files = itertools.count()


def is_sm2(image: CardImage) -> bool:
    return image.profile.algorithm == "sm2"


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
    while len(body) > 1 and body[0] == 0 and body[1] < 0x80:
        body = body[1:]
    return b"\x02" + der_length(len(body)) + body


def rs_to_der(signature: bytes) -> bytes:
    """r || s (64 bytes) as DER SEQUENCE { INTEGER r, INTEGER s }."""
    assert len(signature) == 64, len(signature)
    body = der_integer(int.from_bytes(signature[:32], "big")) + \
        der_integer(int.from_bytes(signature[32:], "big"))
    return b"\x30" + der_length(len(body)) + body


def public_key_pem(certificate: bytes, workdir: Path) -> Path:
    cert = workdir / f"cert-{next(_files)}.der"
    cert.write_bytes(certificate)
    pub = workdir / f"pub-{next(_files)}.pem"
    pub.write_text(run("openssl", "x509", "-inform", "DER", "-in", cert, "-pubkey",
                       "-noout").stdout)
    return pub


def openssl_verifies(image: CardImage, data: bytes, signature: bytes, workdir: Path,
                     certificate: bytes | None = None) -> bool:
    """`openssl dgst -verify` of a signature as the gateway returns it: SHA1withRSA
    (PKCS#1 v1.5), or SM2-SM3 r || s with the default user id (converted to DER for openssl)."""
    pub = public_key_pem(certificate or image.certificate, workdir)
    data_file = workdir / f"data-{next(_files)}"
    data_file.write_bytes(data)
    sig_file = workdir / f"sig-{next(_files)}"
    if is_sm2(image):
        assert len(signature) == 64, f"SM2 signature is not r||s: {len(signature)} bytes"
        sig_file.write_bytes(rs_to_der(signature))
        result = run("openssl", "dgst", "-sm3", "-verify", pub, "-sigopt", f"distid:{SM2_ID}",
                     "-signature", sig_file, data_file, check=False)
    else:
        sig_file.write_bytes(signature)
        result = run("openssl", "dgst", "-sha1", "-verify", pub, "-signature", sig_file,
                     data_file, check=False)
    return result.returncode == 0 and "Verified OK" in result.stdout


def certificate_serial(certificate: bytes, workdir: Path) -> int:
    cert = workdir / f"cert-{next(_files)}.der"
    cert.write_bytes(certificate)
    line = run("openssl", "x509", "-inform", "DER", "-in", cert, "-noout", "-serial").stdout
    return int(line.strip().split("=", 1)[1], 16)


def certificate_validity(certificate: bytes, workdir: Path) -> tuple[datetime, datetime]:
    cert = workdir / f"cert-{next(_files)}.der"
    cert.write_bytes(certificate)
    out = run("openssl", "x509", "-inform", "DER", "-in", cert, "-noout", "-startdate",
              "-enddate").stdout
    found = dict(line.split("=", 1) for line in out.strip().splitlines())

    def parse(text: str) -> datetime:
        return datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)

    return parse(found["notBefore"]), parse(found["notAfter"])


# SM2 curve parameters (GM/T 0003.5), public constants, for Z = SM3(ENTL || ID || a || b ||
# xG || yG || xA || yA).
_SM2_A = bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC")
_SM2_B = bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93")
_SM2_GX = bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7")
_SM2_GY = bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")


def sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def sm2_e(image: CardImage, message: bytes, workdir: Path) -> bytes:
    """e = SM3(Z || M) for the card's public key and the default user id."""
    pem = public_key_pem(image.certificate, workdir).read_text()
    der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
    point = der[-65:]  # the SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y
    assert point[0] == 4, der.hex()
    user_id = SM2_ID.encode()
    z = sm3((len(user_id) * 8).to_bytes(2, "big") + user_id + _SM2_A + _SM2_B + _SM2_GX
            + _SM2_GY + point[1:])
    return sm3(z + message)


def rsa_verifies(public_key: rsa.RSAPublicKey, data: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
    except Exception:  # any failure is a bad signature
        return False
    return True


# ---- the stack: pcscd, one eportd, two vpcd slots, gateways ----

@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("gateway-stack")
    with running_card_stack(directory, test_ca.trust_bundle) as stack:
        yield stack


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[Gateway]:
    """The gateway with its defaults (the Single Window origins, 8 MiB, 64 in flight)."""
    with running_gateway(stack.socket) as started:
        yield started


@pytest.fixture(scope="module")
def small_gateway(stack: Stack) -> Iterator[Gateway]:
    with running_gateway(stack.socket, "--max-message-bytes", str(SMALL_LIMIT)) as started:
        yield started


@dataclass
class Env:
    """`put` inserts a fresh copy of a card image (its PIN state is the test's own)."""

    stack: Stack
    workdir: Path
    ca: TestCA
    gateways: list[Gateway] = field(default_factory=list)

    def put(self, image: CardImage, slot: int = 0) -> Path:
        return self.stack.put(image, self.workdir, slot)

    def pull(self, slot: int = 0) -> None:
        self.stack.pull(slot)

    def card(self, algorithm: str = "rsa2048", **kwargs: Any) -> CardImage:
        return provision_test_card(self.ca, algorithm, **kwargs)


@pytest.fixture
def env(stack: Stack, gateway: Gateway, tmp_path: Path, test_ca: TestCA) -> Iterator[Env]:
    yield Env(stack, tmp_path, test_ca)
    # After every test: eportd and the shared gateway are alive; the readers are emptied.
    assert stack.daemon is not None and stack.daemon.process.poll() is None, \
        "eportd died:\n" + stack.daemon.log()[-5000:] if stack.daemon else ""
    assert gateway.alive(), "the gateway died:\n" + gateway.log()[-5000:]
    for slot in (0, 1):
        if slot in stack.slots.runner.slots:
            stack.slots.slot(slot).set_delay(0)
        stack.remove(slot)


@pytest.fixture(scope="module")
def rsa_card(test_ca: TestCA) -> CardImage:
    return provision_test_card(test_ca, "rsa2048", card_id="3100000000012345")


@pytest.fixture(scope="module")
def sm2_card(test_ca: TestCA) -> CardImage:
    return provision_test_card(test_ca, "sm2", card_id="3100000000067890")


def card_for(algorithm: str, rsa_card: CardImage, sm2_card: CardImage) -> CardImage:
    return {"rsa2048": rsa_card, "sm2": sm2_card}[algorithm]


# ---- the check code (no card needed) ----

def test_check_code_matches_the_documented_example() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37
    assert check_code("123456789") == "374B"
    # Only the low byte of each UTF-16 code unit counts: 中 is U+4E2D, so it counts as 0x2D.
    assert check_code("中") == check_code("-")
    assert split_blocks("ab\U0001F600cd", 2) == ["ab", "\U0001F600", "cd"]
    assert utf16_length("a\U0001F600") == 3


# ---- a. the typical integration flow ----

@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_typical_integration_flow(env: Env, gateway: Gateway, algorithm: str,
                                  rsa_card: CardImage, sm2_card: CardImage, tmp_path: Path
                                  ) -> None:
    image = card_for(algorithm, rsa_card, sm2_card)
    env.put(image)
    with connect(gateway, origin="https://www.singlewindow.cn") as client:
        assert client.greeting == {"_id": 0, "_method": "open", "_status": "00"}
        assert ok(client.call("SpcGetCardID", request_id=1)) == [image.profile.card_id]
        cert_no = ok(client.call("SpcGetCertNo", request_id=2))
        assert len(cert_no) == 1 and isinstance(cert_no[0], str)
        [cert_b64] = ok(client.call("SpcGetSignCertAsPEM", request_id=3))
        assert "-----" not in cert_b64 and "\n" not in cert_b64 and "\r" not in cert_b64
        certificate = base64.b64decode(cert_b64, validate=True)
        assert certificate == image.certificate
        assert int(cert_no[0], 16) == certificate_serial(certificate, tmp_path), \
            f"the certificate number {cert_no[0]} is not the certificate's serial"
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN}, request_id=4)) == []
        text = f"<CEBMessage>报关单 {algorithm} 进口 1 项 / declaration {secrets.token_hex(8)}" \
            "</CEBMessage>"
        signed = ok(client.call("SpcSignDataAsPEM", {"inData": text}, request_id=5))
        assert len(signed) == 2 and signed[1] == cert_no[0], signed
        signature = base64.b64decode(signed[0], validate=True)
        if is_sm2(image):
            assert len(signature) == 64, "SM2 signatures are the 64 bytes r || s"
        else:
            assert len(signature) == 256
        assert openssl_verifies(image, text.encode(), signature, tmp_path)
        assert not openssl_verifies(image, text.encode() + b"x", signature, tmp_path)


# ---- b. every method and its Data ----

def test_ids_are_echoed_unchanged(env: Env, gateway: Gateway) -> None:
    with connect(gateway) as client:
        for request_id in ("abc", "报关-1", 12345678901, 2.5, -7, "0"):
            reply = client.send_request("SpcEncodePEM", {"inData": "x"},
                                        request_id=request_id).result(30)
            assert reply.raw["_id"] == request_id and type(reply.raw["_id"]) is type(request_id)
            assert reply.raw["_method"] == "cus-sec_SpcEncodePEM"
            ok(reply)
        # args may be omitted when a method takes none; unknown keys in args are ignored.
        text = "unknown keys"
        assert ok(client.call("SpcSHA1Digest", {"szInfo": text, "colour": "blue", "n": 3})) \
            == [hashlib.sha1(text.encode()).hexdigest().upper()]
        assert client.drain_unmatched() == []


def test_card_information_methods(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("rsa2048", holder_name="王五", enterprise_name="深圳测试供应链有限公司",
                     customs_code="4403960ABC", card_id="2200000000000777")
    env.put(image)
    profile = image.profile
    with connect(gateway) as client:
        assert ok(client.call("SpcGetUName")) == ["王五"]
        assert ok(client.call("SpcGetEntID")) == ["4403960ABC"]
        assert ok(client.call("SpcGetEntName")) == ["深圳测试供应链有限公司"]
        assert ok(client.call("SpcGetEntMode")) == ["2"]  # an operator card
        [cert_no] = ok(client.call("SpcGetCertNo"))
        [info] = ok(client.call("SpcGetCardUserInfo"))
        assert info == {
            "szCardID": "2200000000000777", "szUserName": "王五", "szEntID": "4403960ABC",
            "szEntName": "深圳测试供应链有限公司", "szCreditCode": profile.credit_code,
            "szCertNo": cert_no, "szCardType": "2",
        }
        [plain] = ok(client.call("SpcGetSignCert"))
        [as_pem] = ok(client.call("SpcGetSignCertAsPEM"))
        assert plain == as_pem
        assert base64.b64decode(plain, validate=True) == image.certificate
        [validity] = ok(client.call("SpcGetValidTimeFromCert"))
        assert set(validity) == {"szStartTime", "szEndTime"}
        not_before, not_after = certificate_validity(image.certificate, tmp_path)
        for key, when in (("szStartTime", not_before), ("szEndTime", not_after)):
            assert re.fullmatch(r"\d{14}", validity[key]), validity
            assert validity[key] == (when + CST).strftime("%Y%m%d%H%M%S"), (validity, when)


def test_ent_mode_by_card_kind(env: Env, gateway: Gateway) -> None:
    with connect(gateway) as client:
        for kind, mode in ((CardKind.LEGAL_PERSON, "1"), (CardKind.OPERATOR, "2"),
                           (CardKind.DECLARANT, "3")):
            env.put(env.card("sm2", kind=kind))
            assert ok(client.call("SpcGetEntMode")) == [mode], kind
            [info] = ok(client.call("SpcGetCardUserInfo"))
            assert info["szCardType"] == mode


def test_init_env(env: Env, gateway: Gateway) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with connect(gateway) as client:
        failed(client.call("SpcInitEnvEx"), "51590")  # no card
        env.put(env.card("sm2"))
        assert ok(client.call("SpcInitEnvEx")) == []
        # Expiring in 10 days (the certificate ends at now + 10 days).
        env.put(env.card("sm2", not_before=now - timedelta(days=700), days=710))
        data = ok(client.call("SpcInitEnvEx"))
        assert len(data) == 1, data
        match = re.fullmatch(r"您的IC卡还有(\d+)天到期", data[0])
        assert match and int(match.group(1)) in (9, 10), data


def test_digest_and_pem_methods(env: Env, gateway: Gateway) -> None:
    text = "报关单 declaration ✓ 𠀀 " + secrets.token_hex(8)
    digest = hashlib.sha1(text.encode()).digest()
    with connect(gateway) as client:  # no card is needed for these
        assert ok(client.call("SpcSHA1Digest", {"szInfo": text})) == [digest.hex().upper()]
        assert ok(client.call("SpcSHA1Digest", {"inData": text})) == [digest.hex().upper()]
        assert ok(client.call("SpcSHA1DigestAsPEM", {"szInfo": text})) == \
            [base64.b64encode(digest).decode()]
        assert ok(client.call("SpcSHA1DigestAsPEM", {"inData": text})) == \
            [base64.b64encode(digest).decode()]
        assert ok(client.call("SpcSHA1Digest", {"szInfo": ""})) == \
            [hashlib.sha1(b"").hexdigest().upper()]
        [encoded] = ok(client.call("SpcEncodePEM", {"inData": text}))
        assert encoded == base64.b64encode(text.encode()).decode()
        assert ok(client.call("SpcDecodePEM", {"inData": encoded})) == [text]


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_signing_variants(env: Env, gateway: Gateway, algorithm: str, rsa_card: CardImage,
                          sm2_card: CardImage, tmp_path: Path) -> None:
    image = card_for(algorithm, rsa_card, sm2_card)
    env.put(image)
    text = f"签名 {algorithm} 😀 {secrets.token_hex(8)}"
    message = text.encode()
    digest = (sm2_e(image, message, tmp_path) if is_sm2(image)
              else hashlib.sha1(message).digest())
    with connect(gateway) as client:
        [cert_no] = ok(client.call("SpcGetCertNo"))
        # With passwd: verify and sign as one step.
        for method in ("SpcSignData", "SpcSignDataAsPEM"):
            signature, number = ok(client.call(method, {"inData": text, "passwd": PIN}))
            assert number == cert_no
            assert openssl_verifies(image, message, base64.b64decode(signature), tmp_path), \
                method
        # NoHash: the digest computed here, as hex (either case) and as base64.
        for method in ("SpcSignDataNoHash", "SpcSignDataNoHashAsPEM"):
            for encoded in (digest.hex(), digest.hex().upper(),
                            base64.b64encode(digest).decode()):
                signature, number = ok(client.call(method, {"inData": encoded,
                                                            "passwd": PIN}))
                assert number == cert_no
                assert openssl_verifies(image, message, base64.b64decode(signature),
                                        tmp_path), (method, encoded)
        # A digest of the wrong length is an argument error.
        wrong = (hashlib.sha1(message).digest() if is_sm2(image)
                 else hashlib.sha256(message).digest())
        failed(client.call("SpcSignDataNoHash", {"inData": wrong.hex(), "passwd": PIN}),
               "51500")
        still_works(client, card=image)


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_verify_sign_data(env: Env, gateway: Gateway, algorithm: str, rsa_card: CardImage,
                          sm2_card: CardImage, tmp_path: Path) -> None:
    image = card_for(algorithm, rsa_card, sm2_card)
    other = env.card(algorithm)
    env.put(image)
    text = f"验签 {algorithm} {secrets.token_hex(8)}"
    cert_b64 = base64.b64encode(image.certificate).decode()
    cert_pem = ("-----BEGIN CERTIFICATE-----\n"
                + "\n".join(cert_b64[i:i + 64] for i in range(0, len(cert_b64), 64))
                + "\n-----END CERTIFICATE-----\n")
    other_b64 = base64.b64encode(other.certificate).decode()
    with connect(gateway) as client:
        [signature, _] = ok(client.call("SpcSignDataAsPEM", {"inData": text, "passwd": PIN}))
        raw = base64.b64decode(signature)
        forms = [signature]
        if is_sm2(image):
            forms.append(base64.b64encode(rs_to_der(raw)).decode())  # DER is accepted too
        for sig in forms:
            # Valid: with the inserted card's certificate, and with certDataPEM (bare base64
            # DER, and PEM with its header).
            assert ok(client.call("SpcVerifySignData", {"inData": text, "signData": sig})) == []
            for cert in (cert_b64, cert_pem):
                assert ok(client.call("SpcVerifySignData", {
                    "inData": text, "signData": sig, "certDataPEM": cert})) == []
            # Invalid: other data, or another card's certificate.
            failed(client.call("SpcVerifySignData", {"inData": text + "x", "signData": sig}),
                   "51620")
            failed(client.call("SpcVerifySignData", {
                "inData": text + "x", "signData": sig, "certDataPEM": cert_b64}), "51620")
            failed(client.call("SpcVerifySignData", {
                "inData": text, "signData": sig, "certDataPEM": other_b64}), "51620")
        # A signature of the wrong data (same length) is invalid too.
        [other_sig, _] = ok(client.call("SpcSignDataAsPEM", {"inData": text + "y",
                                                            "passwd": PIN}))
        failed(client.call("SpcVerifySignData", {"inData": text, "signData": other_sig}),
               "51620")
        # NoHash: the digest instead of the data.
        digest = (sm2_e(image, text.encode(), tmp_path) if is_sm2(image)
                  else hashlib.sha1(text.encode()).digest())
        bad_digest = bytes([digest[0] ^ 1]) + digest[1:]
        assert ok(client.call("SpcVerifySignDataNoHash", {
            "inData": digest.hex(), "signData": signature})) == []
        assert ok(client.call("SpcVerifySignDataNoHash", {
            "inData": base64.b64encode(digest).decode(), "signData": signature,
            "certDataPEM": cert_b64})) == []
        failed(client.call("SpcVerifySignDataNoHash", {
            "inData": bad_digest.hex(), "signData": signature}), "51620")
        failed(client.call("SpcVerifySignDataNoHash", {
            "inData": digest.hex(), "signData": signature, "certDataPEM": other_b64}), "51620")
        still_works(client, card=image)


def test_verify_with_a_given_certificate_needs_no_card(env: Env, gateway: Gateway,
                                                        sm2_card: CardImage) -> None:
    env.put(sm2_card)
    text = f"验签 {secrets.token_hex(8)}"
    cert_b64 = base64.b64encode(sm2_card.certificate).decode()
    with connect(gateway) as client:
        [signature, _] = ok(client.call("SpcSignDataAsPEM", {"inData": text, "passwd": PIN}))
        env.pull()
        assert ok(client.call("SpcVerifySignData", {
            "inData": text, "signData": signature, "certDataPEM": cert_b64})) == []
        failed(client.call("SpcVerifySignData", {
            "inData": text + "x", "signData": signature, "certDataPEM": cert_b64}), "51620")
        still_works(client)


def test_change_pin_and_back(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with connect(gateway) as client:
        assert ok(client.call("SpcChangePIN", {"oldPin": PIN, "newPin": NEW_PIN})) == []
        failed(client.call("SpcVerifyPIN", {"passwd": PIN}), "0A000024")  # the old one
        assert ok(client.call("SpcVerifyPIN", {"passwd": NEW_PIN})) == []
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "new pin",
                                                            "passwd": NEW_PIN}))
        assert openssl_verifies(image, b"new pin", base64.b64decode(signature), tmp_path)
        assert ok(client.call("SpcChangePIN", {"oldPin": NEW_PIN, "newPin": PIN})) == []
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        assert env.stack.pin_tries_left() in (3, -1)
        # A wrong old PIN costs a try and says how many are left.
        error = failed(client.call("SpcChangePIN", {"oldPin": WRONG_PIN, "newPin": NEW_PIN}),
                       "0A000024")
        assert "还可以重试2次" in error[0], error
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []


def test_clear_env_ends_the_pin_session(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("sm2")
    env.put(image)
    with connect(gateway) as client:
        # No session yet: signing without passwd is refused, and no try is spent.
        failed(client.call("SpcSignDataAsPEM", {"inData": "x"}), "0A00002D")
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "in session"}))
        assert openssl_verifies(image, b"in session", base64.b64decode(signature), tmp_path)
        assert ok(client.call("SpcClearEnv")) == []
        failed(client.call("SpcSignDataAsPEM", {"inData": "after logout"}), "0A00002D")
        failed(client.call("SpcSignDataNoHash", {"inData": "00" * 32}), "0A00002D")
        assert env.stack.pin_tries_left() == 3
        # The session is the card's: one connection's SpcVerifyPIN serves another.
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        with connect(gateway) as second:
            ok(second.call("SpcSignDataAsPEM", {"inData": "other connection"}))
        still_works(client, card=image)


# ---- c. error paths ----

def test_malformed_frames(env: Env, gateway: Gateway) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with connect(gateway) as client:
        # Frames without a usable _id: the error reply cannot be matched by _id.
        for frame in ("{not json", "", "[1, 2, 3]", '"a string"', "42", "null",
                      '[{"_method": "cus-sec_SpcGetCardID", "_id": 1}]'):
            client.send_text(frame)
            failed(unmatched_reply(client), "51500")
            still_works(client, card=image)
        client.send_binary(b'{"_method":"cus-sec_SpcGetCardID","_id":77}')
        failed(unmatched_reply(client), "51500")
        still_works(client, card=image)
        # Objects with an _id: the reply carries it.
        bad: list[tuple[dict[str, Any], str]] = [
            ({"_id": 101}, "missing _method"),
            ({"_id": 102, "_method": "cus-sec_SpcDoesNotExist"}, "unknown method"),
            ({"_id": 103, "_method": "SpcGetCardID"}, "no cus-sec_ prefix"),
            ({"_id": 104, "_method": 7}, "_method not a string"),
            ({"_id": 105, "_method": "cus-sec_SpcSignDataAsPEM", "args": {"inData": 123,
                                                                        "passwd": PIN}},
             "number for inData"),
            ({"_id": 106, "_method": "cus-sec_SpcSignDataAsPEM", "args": {"inData": "x",
                                                                        "passwd": 88888888}},
             "number for passwd"),
            ({"_id": 107, "_method": "cus-sec_SpcSignDataAsPEM",
              "args": {"inData": ["x"], "passwd": PIN}}, "list for inData"),
            ({"_id": 108, "_method": "cus-sec_SpcSignDataAsPEM", "args": {"passwd": PIN}},
             "missing inData"),
            ({"_id": 109, "_method": "cus-sec_SpcSignDataAsPEM"}, "no args at all"),
            ({"_id": 110, "_method": "cus-sec_SpcVerifyPIN", "args": {}}, "missing passwd"),
            ({"_id": 111, "_method": "cus-sec_SpcChangePIN", "args": {"oldPin": PIN}},
             "missing newPin"),
            ({"_id": 112, "_method": "cus-sec_SpcVerifySignData", "args": {"inData": "x"}},
             "missing signData"),
            ({"_id": 113, "_method": "cus-sec_SpcSHA1Digest", "args": {}}, "missing szInfo"),
            ({"_id": 114, "_method": "cus-sec_SpcGetCardID", "args": "text"},
             "args not an object"),
            ({"_id": 115, "_method": "cus-sec_SpcSHA1Digest", "args": {"szInfo": None}},
             "null for szInfo"),
            ({"_id": 116, "_method": "cus-sec_SpcDecodePEM", "args": {"inData": "@@not b64"}},
             "inData not base64"),
        ]
        for request, why in bad:
            future = client.send_json(request, expect_id=request["_id"])
            assert future is not None
            reply = future.result(30)
            assert reply.raw["_id"] == request["_id"], why
            reply.check_shape()
            assert not reply.ok and reply.code == "51500", f"{why}: {reply.describe()}"
            assert reply.error[0].startswith(ZH["51500"]), f"{why}: {reply.describe()}"
            still_works(client, card=image)
        assert client.drain_unmatched() == []
    # The mistyped PIN (a number) was not sent to the card.
    assert env.stack.pin_tries_left() == 3


def test_oversized_frames(env: Env, small_gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with connect(small_gateway) as client:
        # Just under the limit: handled.
        text = "a" * (SMALL_LIMIT - 200)
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": text, "passwd": PIN}))
        assert openssl_verifies(image, text.encode(), base64.b64decode(signature), tmp_path)
        # Above the limit (but under twice it): an error reply, the connection stays open.
        client.send_text(json.dumps({"_method": "cus-sec_SpcSignDataAsPEM", "_id": 201,
                                     "args": {"inData": "b" * (SMALL_LIMIT + 1000),
                                              "passwd": PIN}}))
        failed(unmatched_reply(client), "51500")
        still_works(client, card=image)
        client.send_binary(b"\x00" * (SMALL_LIMIT + 1000))
        failed(unmatched_reply(client), "51500")
        still_works(client, card=image)
        assert client.drain_unmatched() == []
    # Above twice the limit: the connection is closed with 1009 (message too big).
    with connect(small_gateway) as client:
        client.send_text(json.dumps({"_method": "cus-sec_SpcSHA1Digest", "_id": 202,
                                     "args": {"szInfo": "c" * (3 * SMALL_LIMIT)}}))
        assert client.closed.wait(10), "the connection was not closed"
        assert client.close_code == 1009
    with connect(small_gateway) as client:
        still_works(client, card=image)


def test_frame_limit_is_in_bytes(env: Env, small_gateway: Gateway) -> None:
    """--max-message-bytes counts bytes: 30,000 Chinese characters are 90,000 bytes of
    UTF-8, above the 65,536 of `small_gateway` (but under twice it)."""
    text = "报" * 30_000
    request = json.dumps({"_method": "cus-sec_SpcSHA1Digest", "_id": 251,
                          "args": {"szInfo": text}}, ensure_ascii=False)
    assert SMALL_LIMIT < len(request.encode()) < 2 * SMALL_LIMIT
    with connect(small_gateway) as client:
        client.send_text(request)
        failed(unmatched_reply(client), "51500")
        still_works(client)


def test_wrong_pin_and_the_last_try(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with connect(gateway) as client:
        error = failed(client.call("SpcVerifyPIN", {"passwd": WRONG_PIN}), "0A000024")
        assert "还可以重试2次" in error[0] and "2" in error[2], error
        assert env.stack.pin_tries_left() == 2
        error = failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": WRONG_PIN}),
                       "0A000024")
        assert "还可以重试1次" in error[0] and "1" in error[2], error
        assert env.stack.pin_tries_left() == 1
        # One try left: the gateway sends no PIN at all, right or wrong.
        for pin in (WRONG_PIN, PIN):
            for method, args in (("SpcVerifyPIN", {"passwd": pin}),
                                 ("SpcSignDataAsPEM", {"inData": "x", "passwd": pin}),
                                 ("SpcChangePIN", {"oldPin": pin, "newPin": NEW_PIN})):
                error = failed(client.call(method, args), "0A000024")
                assert "口令只剩最后1次重试机会" in error[0], error
                assert env.stack.pin_tries_left() == 1, f"{method} spent the last try"
        # Confirmed on the workstation (eportd with allow_last_attempt, as `eport pin verify`).
        env.stack.running().stub().VerifyPin(pb.VerifyPinRequest(
            card=pb.CardSelector(reader=READER0), pin=PIN, allow_last_attempt=True))
        assert ok(client.call("SpcVerifyPIN", {"passwd": PIN})) == []
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "after", "passwd": PIN}))
        assert openssl_verifies(image, b"after", base64.b64decode(signature), tmp_path)
        still_works(client, card=image)


def test_card_provisioned_with_one_try_left(env: Env, gateway: Gateway) -> None:
    image = env.card("sm2", pin_tries_left=1)
    env.put(image)
    with connect(gateway) as client:
        error = failed(client.call("SpcVerifyPIN", {"passwd": PIN}), "0A000024")
        assert "口令只剩最后1次重试机会" in error[0], error
        error = failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": WRONG_PIN}),
                       "0A000024")
        assert "口令只剩最后1次重试机会" in error[0], error
        # Had the right PIN been sent, the counter would be back at 3; a wrong one: blocked.
        assert env.stack.pin_tries_left() == 1
        still_works(client, card=image)


def test_pin_blocked(env: Env, gateway: Gateway) -> None:
    image = env.card("sm2", pin_tries_left=0)
    env.put(image)
    with connect(gateway) as client:
        failed(client.call("SpcVerifyPIN", {"passwd": PIN}), "0A000025")
        failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": PIN}), "0A000025")
        failed(client.call("SpcChangePIN", {"oldPin": PIN, "newPin": NEW_PIN}), "0A000025")
        still_works(client, card=image)


def test_pin_format(env: Env, gateway: Gateway) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with connect(gateway) as client:
        for pin in ("1234", "12345", "123456789", "1234567890123"):
            failed(client.call("SpcVerifyPIN", {"passwd": pin}), "0A000026")
            failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": pin}), "0A000026")
        failed(client.call("SpcVerifyPIN", {"passwd": ""}), "0A000026")
        failed(client.call("SpcChangePIN", {"oldPin": PIN, "newPin": "123"}), "0A000026")
        assert env.stack.pin_tries_left() == 3, "a badly formed PIN spent a try"
        still_works(client, card=image)


def test_no_card(env: Env, gateway: Gateway) -> None:
    with connect(gateway) as client:
        for method, args in (("SpcGetCardID", None), ("SpcGetCertNo", None),
                             ("SpcGetSignCertAsPEM", None), ("SpcVerifyPIN", {"passwd": PIN}),
                             ("SpcSignDataAsPEM", {"inData": "x", "passwd": PIN}),
                             ("SpcSignDataAsPEM", {"inData": "x"})):
            failed(client.call(method, args), "51590")
        still_works(client)
        image = env.card("sm2")
        env.put(image)
        still_works(client, card=image)


def test_certificate_validity_errors(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    stranger_ca = init_ca(tmp_path / "stranger-ca")
    cases = (
        (env.card("sm2", not_before=now - timedelta(days=400), days=365), "51610"),
        (env.card("sm2", not_before=now + timedelta(days=5), days=365), "51611"),
        (provision_test_card(stranger_ca, "sm2"), "51612"),
    )
    with connect(gateway) as client:
        for image, code in cases:
            env.put(image)
            failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": PIN}), code)
            assert env.stack.pin_tries_left() == 3
            still_works(client, card=image)


def test_two_cards_and_reader_choice(env: Env, gateway: Gateway, stack: Stack) -> None:
    first, second = env.card("sm2"), env.card("sm2")
    env.put(first, 0)
    env.put(second, 1)
    with connect(gateway) as client:
        failed(client.call("SpcGetCardID"), "51590")  # several cards and no --reader
        still_works(client)
    with running_gateway(stack.socket, "--reader", READER1) as chosen, connect(chosen) as client:
        assert ok(client.call("SpcGetCardID")) == [second.profile.card_id]
        ok(client.call("SpcSignDataAsPEM", {"inData": "slot 1", "passwd": PIN}))
        assert stack.pin_tries_left(READER0) == 3


def test_too_many_requests_in_flight(env: Env, stack: Stack) -> None:
    image = env.card("rsa2048")
    env.put(image)
    with running_gateway(stack.socket, "--max-in-flight", "4") as limited, \
            connect(limited) as client:
        ok(client.call("SpcVerifyPIN", {"passwd": PIN}))
        stack.slots.slot(0).set_delay(150)  # a slow card keeps the first ones in progress
        try:
            futures = [client.send_request("SpcSignDataAsPEM", {"inData": f"n{i}"},
                                           request_id=i) for i in range(1, 7)]
            refused = [futures[4].result(30), futures[5].result(30)]
            assert not all(f.done() for f in futures[:4]), \
                "the refusals were not immediate"
            for reply in refused:
                failed(reply, "51500")
            for future in futures[:4]:
                ok(future.result(60))
        finally:
            stack.slots.slot(0).set_delay(0)
        still_works(client, card=image)


def test_eportd_unreachable_and_card_held_elsewhere(env: Env, gateway: Gateway, stack: Stack
                                                    ) -> None:
    """eportd down: 50200, and the gateway carries on; the card held exclusively by another
    program: 50070; each time the same connection works again once the cause is gone."""
    image = env.card("sm2")
    with connect(gateway) as client:
        stack.stop_daemon()
        try:
            failed(client.call("SpcGetCardID"), "50200")
            failed(client.call("SpcSignDataAsPEM", {"inData": "x", "passwd": PIN}), "50200")
            still_works(client)  # what needs no card still works
            assert gateway.alive()
            # Another program takes the card exclusively before eportd is back.
            stack.put(image, env.workdir, wait=False)
            with PcscContext() as context:
                held = context.connect(READER0, exclusive=True)
                try:
                    stack.start_daemon()
                    stub = stack.running().stub()
                    wait_until(lambda: any(
                        r.name == READER0 and r.exclusive_elsewhere
                        for r in stub.ListReaders(pb.ListReadersRequest()).readers),
                        timeout=15, interval=0.1, what="eportd sees the card held elsewhere")
                    failed(client.call("SpcGetCardID"), "50070")
                    failed(client.call("SpcVerifyPIN", {"passwd": PIN}), "50070")
                finally:
                    held.close()
        finally:
            if stack.daemon is None or stack.daemon.process.poll() is not None:
                stack.start_daemon()
        wait_until(lambda: client.call("SpcGetCardID").ok, timeout=15, interval=0.1,
                   what="the gateway reads the card again")
        still_works(client, card=image)
        ok(client.call("SpcSignDataAsPEM", {"inData": "back", "passwd": PIN}))
        assert stack.pin_tries_left() in (3, -1)


def test_sigint_stops_the_gateway_cleanly(env: Env, stack: Stack) -> None:
    started = start_gateway(stack.socket)
    try:
        with connect(started) as client:
            still_works(client)
        started.process.send_signal(signal.SIGINT)
        assert started.process.wait(15) == 0, started.log()
        assert "Traceback" not in started.log(), started.log()
    finally:
        started.stop()


# ---- d. block transfer ----

def _big_text(units: int) -> str:
    line = "报关单 第{:06d}行 declaration line, 进口 1 项 / ASCII and 中文\n"
    parts: list[str] = []
    total = 0
    for number in itertools.count():
        piece = line.format(number)
        parts.append(piece)
        total += len(piece)
        if total >= units:
            return "".join(parts)
    raise AssertionError("unreachable")


def _next_block(reply: Reply) -> dict[str, Any]:
    assert reply.raw.get("_status") == "00" and reply.method == "_nextBlock", reply.describe()
    [answer] = reply.data
    assert set(answer) >= {"guid", "next", "finish"}, reply.describe()
    return dict(answer)


def test_block_transfer_of_a_large_request(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("rsa2048")
    env.put(image)
    text = _big_text(300_000)
    request = json.dumps({"_method": "cus-sec_SpcSignDataAsPEM", "_id": "big-1",
                          "args": {"inData": text, "passwd": PIN}}, ensure_ascii=False)
    assert utf16_length(request) > 120 * 1024
    with connect(gateway) as client:
        reply_future = client.expect("big-1", "cus-sec_SpcSignDataAsPEM")
        transfer = client.transfer_blocks(request, block_units=64 * 1024)
        count = len(transfer.blocks)
        assert count >= 5
        assert transfer.sent == list(range(count))
        answers = [_next_block(reply) for reply in transfer.replies]
        for reply in transfer.replies:
            assert reply.id == transfer.guid and reply.ok, reply.describe()
            assert reply.error == []
        assert [a["next"] for a in answers[:-1]] == list(range(1, count))
        assert [a["finish"] for a in answers] == [False] * (count - 1) + [True]
        assert all(a["guid"] == transfer.guid for a in answers)
        reply = reply_future.result(60)
        assert reply.id == "big-1"
        signature, _ = ok(reply)
        assert openssl_verifies(image, text.encode(), base64.b64decode(signature), tmp_path)
        still_works(client, card=image)


def test_block_with_a_bad_check_code_is_asked_again(env: Env, gateway: Gateway) -> None:
    text = _big_text(200_000)
    request = json.dumps({"_method": "cus-sec_SpcSHA1Digest", "_id": 301,
                          "args": {"szInfo": text}}, ensure_ascii=False)
    with connect(gateway) as client:
        reply_future = client.expect(301, "cus-sec_SpcSHA1Digest")
        transfer = client.transfer_blocks(request, block_units=50_000, corrupt_once=[0, 2])
        count = len(transfer.blocks)
        assert transfer.sent == [0, 0, 1, 2, 2, *range(3, count)], transfer.sent
        first = transfer.replies[0]
        assert not first.ok and _next_block(first)["next"] == 0, first.describe()
        assert not _next_block(first)["finish"]
        again = transfer.replies[3]
        assert not again.ok and _next_block(again)["next"] == 2, again.describe()
        assert transfer.replies[-1].ok and _next_block(transfer.replies[-1])["finish"]
        assert ok(reply_future.result(60)) == [hashlib.sha1(text.encode()).hexdigest().upper()]
        still_works(client)


def test_refused_block_transfers(env: Env, gateway: Gateway, small_gateway: Gateway) -> None:
    big = json.dumps({"_method": "cus-sec_SpcSHA1Digest", "_id": 401,
                      "args": {"szInfo": _big_text(100_000)}}, ensure_ascii=False)
    # Declaring more than --max-message-bytes: refused at once, finish:true, 51500.
    with connect(small_gateway) as client:
        reply_future = client.expect(401, "cus-sec_SpcSHA1Digest")
        transfer = client.transfer_blocks(big, block_units=30_000)
        assert transfer.sent == [0]
        [reply] = transfer.replies
        answer = _next_block(reply)
        assert answer["finish"] is True and not reply.ok, reply.describe()
        assert reply.error and reply.error[1] == "Err:Custom51500", reply.describe()
        time.sleep(1)  # not a wait: time in which no reply must come
        assert not reply_future.done(), "a refused transfer was handled"
        client.forget(401)
        still_works(client)
    with connect(gateway) as client:
        # The whole request's check code is wrong: refused after the last block.
        reply_future = client.expect(401, "cus-sec_SpcSHA1Digest")
        transfer = client.transfer_blocks(big, block_units=30_000,
                                          whole_check=wrong_check(check_code(big)))
        last = transfer.replies[-1]
        assert _next_block(last)["finish"] is True and not last.ok, last.describe()
        assert last.error[1] == "Err:Custom51500", last.describe()
        time.sleep(1)  # not a wait: time in which no reply must come
        assert not reply_future.done(), "a transfer with a bad check code was handled"
        client.forget(401)
        still_works(client)
        # Numbers that do not add up: block 5 of 2.
        guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
        future = client.expect(guid, "_nextBlock")
        piece = "x" * 100
        client.send_text(block_frame(whole_check=check_code(piece), block_check=check_code(piece),
                                     whole_length=200, block=piece, count=2, guid=guid,
                                     number=5))
        reply = future.result(30)
        assert _next_block(reply)["finish"] is True and not reply.ok, reply.describe()
        assert reply.error[1] == "Err:Custom51500", reply.describe()
        # Blocks whose lengths do not add up to the declared whole length (300, sent 200).
        guid2 = "1f8fad5b-d9cb-469f-a165-70867728950e"
        whole = piece * 2
        for number in (0, 1):
            future = client.expect(guid2, "_nextBlock")
            client.send_text(block_frame(whole_check=check_code(whole),
                                         block_check=check_code(piece), whole_length=300,
                                         block=piece, count=2, guid=guid2, number=number))
            reply = future.result(30)
            if _next_block(reply)["finish"]:
                break
        assert _next_block(reply)["finish"] is True and not reply.ok, reply.describe()
        assert reply.error[1] == "Err:Custom51500", reply.describe()
        # A block whose declared length is not its data's (docs/gateway.md does not say
        # whether that is a bad block, asked for again, or a mixed-up transfer, refused):
        # either way it is not accepted.
        guid3 = "2f8fad5b-d9cb-469f-a165-70867728950e"
        future = client.expect(guid3, "_nextBlock")
        client.send_text(block_frame(whole_check=check_code(piece), block_check=check_code(piece),
                                     whole_length=100, block=piece, block_length=90, count=1,
                                     guid=guid3, number=0))
        reply = future.result(30)
        answer = _next_block(reply)
        assert not reply.ok and reply.error[1] == "Err:Custom51500", reply.describe()
        assert answer["finish"] is True or answer["next"] == 0, reply.describe()
        still_works(client)
        assert client.drain_unmatched() == []


def test_interleaved_block_transfers(env: Env, gateway: Gateway, tmp_path: Path) -> None:
    image = env.card("sm2")
    env.put(image)
    text_a, text_b = _big_text(150_000), "B" + _big_text(130_000)
    methods = {"A": "cus-sec_SpcSHA1DigestAsPEM", "B": "cus-sec_SpcSignDataAsPEM"}
    requests = {
        "A": json.dumps({"_method": methods["A"], "_id": "A", "args": {"inData": text_a}},
                        ensure_ascii=False),
        "B": json.dumps({"_method": methods["B"], "_id": "B",
                         "args": {"inData": text_b, "passwd": PIN}}, ensure_ascii=False),
    }
    guids = {"A": "aaaaaaaa-0000-4000-8000-000000000001",
             "B": "bbbbbbbb-0000-4000-8000-000000000002"}
    blocks = {name: split_blocks(text, 40_000) for name, text in requests.items()}
    with connect(gateway) as client:
        replies = {name: client.expect(name, methods[name]) for name in requests}
        position = {"A": 0, "B": 0}
        finished: set[str] = set()
        while len(finished) < 2:
            waiting = {}
            for name in ("A", "B"):
                if name in finished:
                    continue
                number = position[name]
                waiting[name] = client.expect(guids[name], "_nextBlock")
                client.send_text(block_frame(
                    whole_check=check_code(requests[name]),
                    block_check=check_code(blocks[name][number]),
                    whole_length=utf16_length(requests[name]), block=blocks[name][number],
                    count=len(blocks[name]), guid=guids[name], number=number))
            # An ordinary request between blocks is answered as usual.
            assert ok(client.call("SpcEncodePEM", {"inData": "between"})) == \
                [base64.b64encode(b"between").decode()]
            for name, future in waiting.items():
                reply = future.result(30)
                answer = _next_block(reply)
                assert reply.ok and answer["guid"] == guids[name], reply.describe()
                if answer["finish"]:
                    finished.add(name)
                else:
                    position[name] = answer["next"]
        assert ok(replies["A"].result(60)) == \
            [base64.b64encode(hashlib.sha1(text_a.encode()).digest()).decode()]
        signature, _ = ok(replies["B"].result(60))
        assert openssl_verifies(image, text_b.encode(), base64.b64decode(signature), tmp_path)


def test_block_transfer_counts_utf16_code_units(env: Env, gateway: Gateway, tmp_path: Path
                                               ) -> None:
    """Characters outside the BMP are two UTF-16 code units (lengths) and two low bytes
    (check codes)."""
    image = env.card("rsa2048")
    env.put(image)
    text = "".join(f"{n:05d} 😀 𠀀 报关 🚢\n" for n in range(14_000))
    assert utf16_length(text) > len(text) + 20_000
    request = json.dumps({"_method": "cus-sec_SpcSignDataAsPEM", "_id": 501,
                          "args": {"inData": text, "passwd": PIN}}, ensure_ascii=False)
    digest_request = json.dumps({"_method": "cus-sec_SpcSHA1Digest", "_id": 502,
                                 "args": {"szInfo": text}}, ensure_ascii=False)
    with connect(gateway) as client:
        signed = client.expect(501, "cus-sec_SpcSignDataAsPEM")
        transfer = client.transfer_blocks(request, block_units=40_001)
        assert len(transfer.blocks) >= 5 and transfer.sent == list(range(len(transfer.blocks)))
        assert all(reply.ok for reply in transfer.replies), transfer.replies[-1].describe()
        signature, _ = ok(signed.result(60))
        assert openssl_verifies(image, text.encode(), base64.b64decode(signature), tmp_path)
        digested = client.expect(502, "cus-sec_SpcSHA1Digest")
        client.transfer_blocks(digest_request, block_units=33_333)
        assert ok(digested.result(60)) == [hashlib.sha1(text.encode()).hexdigest().upper()]


# ---- e. concurrency ----

CONNECTIONS, SIGNATURES, WINDOW = 8, 500, 16


def test_concurrent_signing(env: Env, gateway: Gateway) -> None:
    image = env.card("rsa2048")
    env.put(image)
    public_key = x509.load_der_x509_certificate(image.certificate).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    failures: list[str] = []
    counts = [0] * CONNECTIONS
    lock = threading.Lock()
    start = threading.Barrier(CONNECTIONS)

    def worker(index: int) -> None:
        try:
            with connect(gateway) as client:
                ok(client.call("SpcVerifyPIN", {"passwd": PIN}, request_id=f"pin-{index}"))
                start.wait(30)
                in_flight: dict[Future[Reply], tuple[Any, bytes]] = {}
                for number in range(SIGNATURES):
                    # Numbers and strings, so _id types interleave too.
                    request_id: Any = index * 100_000 + number if number % 2 \
                        else f"c{index}-{number}"
                    data = f"连接{index} 报文{number} {secrets.token_hex(6)}".encode()
                    future = client.send_request("SpcSignDataAsPEM",
                                                 {"inData": data.decode()},
                                                 request_id=request_id)
                    in_flight[future] = (request_id, data)
                    while len(in_flight) >= WINDOW or (number == SIGNATURES - 1 and in_flight):
                        done, _ = wait(list(in_flight), timeout=60, return_when=FIRST_COMPLETED)
                        if not done:
                            raise AssertionError(f"connection {index}: no reply in 60 s")
                        for finished in done:
                            expected_id, expected_data = in_flight.pop(finished)
                            reply = finished.result()
                            problem = _check_signed(reply, expected_id, expected_data,
                                                    public_key)
                            with lock:
                                counts[index] += 1
                                if problem:
                                    failures.append(f"connection {index}: {problem}")
                assert client.drain_unmatched() == [], f"connection {index}: stray replies"
        except BaseException as exc:  # reported below
            with lock:
                failures.append(f"connection {index}: {exc!r}")
            start.abort()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.monotonic() - started
    total = CONNECTIONS * SIGNATURES
    print(f"\n{CONNECTIONS} connections x {SIGNATURES} signatures: {total} in {elapsed:.1f} s "
          f"({total / elapsed:.0f}/s)")
    assert not failures, "\n".join(failures[:20])
    assert counts == [SIGNATURES] * CONNECTIONS


def _check_signed(reply: Reply, expected_id: Any, data: bytes, public_key: rsa.RSAPublicKey
                  ) -> str | None:
    if reply.raw.get("_id") != expected_id or type(reply.raw["_id"]) is not type(expected_id):
        return f"reply {reply.raw.get('_id')!r} for request {expected_id!r}"
    try:
        reply.check_shape()
    except AssertionError as exc:
        return str(exc)
    if not reply.ok:
        return f"request {expected_id!r} failed: {reply.describe()}"
    signature = base64.b64decode(reply.data[0])
    if not rsa_verifies(public_key, data, signature):
        return f"request {expected_id!r}: the signature is not valid for its own data"
    return None


def test_connections_closed_with_requests_in_flight(env: Env, gateway: Gateway,
                                                    stack: Stack, tmp_path: Path) -> None:
    """Clients that go away with requests in progress harm nobody else."""
    image = env.card("rsa2048")
    env.put(image)
    stack.slots.slot(0).set_delay(20)
    try:
        for abrupt in (False, True):
            client = connect(gateway)
            ok(client.call("SpcVerifyPIN", {"passwd": PIN}))
            for n in range(16):
                client.send_request("SpcSignDataAsPEM", {"inData": f"gone {n}"})
            if abrupt:
                client.connection.socket.close()  # no close handshake
            client.close()
    finally:
        stack.slots.slot(0).set_delay(0)
    assert gateway.alive()
    with connect(gateway) as fresh:
        signature, _ = ok(fresh.call("SpcSignDataAsPEM", {"inData": "after", "passwd": PIN}))
        assert openssl_verifies(image, b"after", base64.b64decode(signature), tmp_path)
        still_works(fresh, card=image)


# ---- f. a card pulled mid-call ----

def test_card_pulled_mid_call(env: Env, gateway: Gateway, stack: Stack, tmp_path: Path) -> None:
    image = env.card("rsa2048")
    env.put(image)
    stub = stack.running().stub()
    with connect(gateway) as client, connect(gateway) as bystander:
        ok(client.call("SpcVerifyPIN", {"passwd": PIN}))
        # 1. Removed while the card is answering slowly.
        stack.slots.slot(0).set_delay(400)
        before = stack.slots.slot(0).status().apdus
        signing = client.send_request("SpcSignDataAsPEM", {"inData": "pulled"})
        other = client.send_request("SpcEncodePEM", {"inData": "same connection"})
        digest = bystander.send_request("SpcSHA1Digest", {"szInfo": "other connection"})
        # Replies come in completion order: the quick ones do not wait for the slow card.
        assert ok(other.result(5)) == [base64.b64encode(b"same connection").decode()]
        assert ok(digest.result(5)) == [hashlib.sha1(b"other connection").hexdigest().upper()]
        assert not signing.done(), "the slow signature finished before the quick requests"
        wait_until(lambda: stack.slots.slot(0).status().apdus > before, timeout=5,
                   interval=0.005, what="the signature is at the card")
        stack.slots.remove(0)
        stack.slots.slot(0).set_delay(0)
        _pulled_or_signed(signing.result(60), image, b"pulled", tmp_path)
        wait_for_card(stub, READER0, present=False)
        failed(client.call("SpcSignDataAsPEM", {"inData": "no card", "passwd": PIN}), "51590")
        # Back in: the next call on the same connection works (the PIN session ended).
        stack.slots.insert(0)
        wait_for_card(stub, READER0)
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "again", "passwd": PIN}))
        assert openssl_verifies(image, b"again", base64.b64decode(signature), tmp_path)
        # 2. Pulled during the next APDU.
        stack.slots.slot(0).pull_during_next_apdu()
        _pulled_or_signed(client.call("SpcSignDataAsPEM", {"inData": "pulled 2",
                                                            "passwd": PIN}),
                          image, b"pulled 2", tmp_path)
        wait_for_card(stub, READER0, present=False)
        stack.slots.insert(0)
        wait_for_card(stub, READER0)
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": "again 2",
                                                            "passwd": PIN}))
        assert openssl_verifies(image, b"again 2", base64.b64decode(signature), tmp_path)
        still_works(bystander, card=image)
    with connect(gateway) as fresh:
        signature, _ = ok(fresh.call("SpcSignDataAsPEM", {"inData": "new connection",
                                                           "passwd": PIN}))
        assert openssl_verifies(image, b"new connection", base64.b64decode(signature), tmp_path)
    assert stack.pin_tries_left() in (3, -1)


def _pulled_or_signed(reply: Reply, image: CardImage, data: bytes, workdir: Path) -> None:
    reply.check_shape()
    if reply.ok:  # it completed before the pull
        assert openssl_verifies(image, data, base64.b64decode(reply.data[0]), workdir)
    else:
        failed(reply, "51590")


def test_card_swapped_between_calls(env: Env, gateway: Gateway, rsa_card: CardImage,
                                   sm2_card: CardImage, tmp_path: Path) -> None:
    """Another card (another algorithm) in the reader: the very next call uses it."""
    with connect(gateway) as client:
        for round_ in range(3):
            for image in (sm2_card, rsa_card):
                env.put(image)
                data = f"swap {round_} {image.profile.algorithm}".encode()
                reply = client.call("SpcSignDataAsPEM", {"inData": data.decode(),
                                                         "passwd": PIN})
                signature, _ = ok(reply)
                assert openssl_verifies(image, data, base64.b64decode(signature), tmp_path)
                assert ok(client.call("SpcGetCardID")) == [image.profile.card_id]


def test_card_swapped_then_concurrent_calls(env: Env, gateway: Gateway, rsa_card: CardImage,
                                            sm2_card: CardImage, tmp_path: Path) -> None:
    """Right after a swap, many calls at once from several connections all use the new
    card."""
    clients = [connect(gateway) for _ in range(4)]
    try:
        for round_ in range(3):
            for image in (sm2_card, rsa_card):
                env.put(image)
                cert_no = f"{certificate_serial(image.certificate, tmp_path):x}"
                futures = [(client.send_request("SpcSignDataAsPEM", {
                    "inData": f"swap {round_} {n}", "passwd": PIN}), f"swap {round_} {n}")
                    for n, client in enumerate(clients * 4)]
                ids = [client.send_request("SpcGetCardID") for client in clients]
                problems = []
                for future, data in futures:
                    reply = future.result(60)
                    reply.check_shape()
                    if not reply.ok:
                        problems.append(reply.describe())
                    elif not openssl_verifies(image, data.encode(),
                                              base64.b64decode(reply.data[0]), tmp_path):
                        problems.append(f"bad signature for {data!r}")
                    elif int(reply.data[1], 16) != int(cert_no, 16):
                        problems.append(f"certificate number of another card: {reply.data}")
                for future in ids:
                    if (data_ := ok(future.result(60))) != [image.profile.card_id]:
                        problems.append(f"SpcGetCardID gave {data_}")
                assert not problems, (f"round {round_}, {image.profile.algorithm} card: "
                                      f"{len(problems)} of {len(futures)} failed:\n"
                                      + "\n".join(problems[:5]))
    finally:
        for client in clients:
            client.close()


# ---- g. origin, listening address, log ----

def _refused(url: str, origin: str | None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        GatewayClient.connect(url, origin=origin).close()
    return refused.value.response.status_code


def test_origins_with_the_default_list(env: Env, gateway: Gateway) -> None:
    for origin in (*SINGLE_WINDOW_ORIGINS, None):
        with connect(gateway, origin=origin) as client:
            still_works(client)
    for origin in ("https://evil.example", "null", "https://www.singlewindow.cn.evil.example",
                   "https://evilsinglewindow.cn", "https://www.singlewindow.cn:8443",
                   "http://localhost", "file://", "http://www.singlewindow.cn",
                   "http://app.singlewindow.cn", "http://swapp.singlewindow.cn"):
        assert _refused(gateway.url, origin) == 403, origin


def test_allow_origin_replaces_the_list(env: Env, stack: Stack) -> None:
    with running_gateway(stack.socket, "--allow-origin", "http://localhost:8080",
                         "--allow-origin", "https://erp.example.com") as custom:
        for origin in ("http://localhost:8080", "https://erp.example.com", None):
            with connect(custom, origin=origin) as client:
                still_works(client)
        for origin in ("https://www.singlewindow.cn", "http://localhost:8081"):
            assert _refused(custom.url, origin) == 403, origin
    with running_gateway(stack.socket, "--refuse-missing-origin") as strict:
        assert _refused(strict.url, None) == 403
        with connect(strict, origin="https://app.singlewindow.cn") as client:
            still_works(client)
        assert _refused(strict.url, "https://evil.example") == 403


def test_non_loopback_listen_needs_the_flag(env: Env, stack: Stack) -> None:
    result = subprocess.run([GATEWAY, "serve", "--listen", "0.0.0.0", "--port", "0",
                             "--socket", str(stack.socket)],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result
    assert "--allow-non-loopback" in result.stderr and "0.0.0.0" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    with running_gateway(stack.socket, "--listen", "0.0.0.0", "--allow-non-loopback") as open_:
        with GatewayClient.connect(f"ws://127.0.0.1:{open_.port}") as client:
            still_works(client)
        assert open_.stop() == 0


def test_gateway_stops_cleanly(env: Env, stack: Stack) -> None:
    started = start_gateway(stack.socket)
    with connect(started) as client:
        still_works(client)
    assert started.stop() == 0


def test_signing_requests_are_logged_without_secrets(env: Env, gateway: Gateway,
                                                     tmp_path: Path) -> None:
    image = env.card("sm2")
    env.put(image)
    origin = "https://swapp.singlewindow.cn"
    tag = secrets.token_hex(4)
    data = f"secret-data-{secrets.token_hex(8)}"
    digest = sm2_e(image, data.encode(), tmp_path).hex()
    requests = {f"log-{tag}-1": ("SpcSignDataAsPEM", {"inData": data, "passwd": PIN}),
                f"log-{tag}-2": ("SpcSignData", {"inData": data}),
                f"log-{tag}-3": ("SpcSignDataNoHash", {"inData": digest})}
    signatures = []
    with connect(gateway, origin=origin) as client:
        ok(client.call("SpcVerifyPIN", {"passwd": PIN}))
        for request_id, (method, args) in requests.items():
            signature, _ = ok(client.call(method, args, request_id=request_id))
            signatures.append(signature)
        failed(client.call("SpcVerifyPIN", {"passwd": WRONG_PIN}), "0A000024")
    wait_until(lambda: all(rid in gateway.log() for rid in requests), timeout=5,
               what="every signing request is in the gateway's log")
    log = gateway.log()
    for request_id, (method, _) in requests.items():
        lines = [line for line in log.splitlines() if request_id in line]
        assert lines, f"no log line for the signing request {request_id}:\n{log[-3000:]}"
        assert any(origin in line and method in line and "127.0.0.1" in line
                   for line in lines), lines
    assert data not in log and digest not in log
    for signature in signatures:
        assert signature not in log
    for secret in SECRETS:
        assert secret not in log, f"the gateway log shows {secret}"


def test_no_gateway_log_ever_shows_a_pin(gateway: Gateway, small_gateway: Gateway) -> None:
    """Last in the module: everything the shared gateways logged during all tests."""
    for started in (gateway, small_gateway):
        log = started.log()
        for secret in SECRETS:
            assert secret not in log, f"the gateway log shows {secret}"
        assert "Traceback" not in log, log[-5000:]
