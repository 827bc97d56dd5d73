"""The browser tier: a Single Window page in headless Chromium, served as
https://www.singlewindow.cn, against the real eport-gateway on its fixed ports, the real eportd
and a simulated card through the real pcscd.

The page (tests/browser/pages/) is our own, written from docs/gateway.md: it connects the way
Single Window page scripts do (wss://wss.singlewindow.cn:61231 on https pages,
ws://127.0.0.1:61232 on plain-http ones), runs a script of calls the test gives it and reports
every reply. The test then checks each reply for what a user would check: the card's own data,
signatures verified by the openssl command line against the certificate the page read, a text
encrypted to the envelope certificate coming back from the card, and ciphertexts that openssl
decrypts with the envelope key the card was provisioned with.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eport.common import sm2 as sm2_keys
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from tests.support.browser_stack import (
    SINGLE_WINDOW,
    WS_PORT,
    WSS_PORT,
    BrowserStack,
    PageResult,
    running_browser_stack,
    start_fixed_port_gateway,
    tls_install,
)
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card
from tests.support.gateway_stack import Gateway
from tests.support.pcsc_stack import Pcscd
from tests.support.ws_protocol_client import PAGE_LIBRARY_METHODS

pytestmark = [pytest.mark.browser, pytest.mark.pcsc]

PIN, NEW_PIN, WRONG_PIN = "88888888", "24682468", "11111111"
SM2_ID = "1234567812345678"
CST = timedelta(hours=8)
EVIL = "evil.example"
INTRANET = "intranet.example"  # a plain-http origin the gateway is told to allow
SINGLE_WINDOW_ORIGIN = f"https://{SINGLE_WINDOW}"
INTRANET_ORIGIN = f"http://{INTRANET}"



# ---- independent checks (the openssl command line) ----

_files = itertools.count()


def run(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in args], capture_output=True, input=stdin, timeout=60,
                          check=False)


def write(workdir: Path, data: bytes, suffix: str = "") -> Path:
    path = workdir / f"f{next(_files)}{suffix}"
    path.write_bytes(data)
    return path


def public_key_pem(certificate: bytes, workdir: Path) -> Path:
    cert = write(workdir, certificate, ".der")
    result = run("openssl", "x509", "-inform", "DER", "-in", cert, "-pubkey", "-noout")
    assert result.returncode == 0, result.stderr.decode()
    return write(workdir, result.stdout, ".pem")


def openssl_verifies(certificate: bytes, sm2: bool, data: bytes, signature: bytes,
                     workdir: Path) -> bool:
    """SHA1withRSA, or SM2-SM3 r || s with the default user id, checked by `openssl dgst`."""
    pub = public_key_pem(certificate, workdir)
    if sm2:
        if len(signature) != 64:
            return False
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                   int.from_bytes(signature[32:], "big"))
        result = run("openssl", "dgst", "-sm3", "-verify", pub, "-sigopt", f"distid:{SM2_ID}",
                     "-signature", write(workdir, der), write(workdir, data))
    else:
        result = run("openssl", "dgst", "-sha1", "-verify", pub, "-signature",
                     write(workdir, signature), write(workdir, data))
    return result.returncode == 0 and b"Verified OK" in result.stdout


def openssl_decrypts(image: CardImage, ciphertext: bytes, workdir: Path) -> bytes | None:
    """`openssl pkeyutl -decrypt` with the envelope key the card was provisioned with."""
    assert image.envelope_private_key is not None
    if image.profile.algorithm == "sm2":
        d = int.from_bytes(image.envelope_private_key, "big")
        key = write(workdir, sm2_keys.private_key_pem(d), ".pem")
        result = run("openssl", "pkeyutl", "-decrypt", "-inkey", key, "-in",
                     write(workdir, ciphertext))
    else:
        key = write(workdir, image.envelope_private_key, ".der")
        result = run("openssl", "pkeyutl", "-decrypt", "-keyform", "DER", "-inkey", key,
                     "-pkeyopt", "rsa_padding_mode:pkcs1", "-in", write(workdir, ciphertext))
    return result.stdout if result.returncode == 0 else None


def openssl_encrypts(certificate: bytes, sm2: bool, plaintext: bytes, workdir: Path) -> bytes:
    """`openssl pkeyutl -encrypt` to a certificate's key: PKCS#1 v1.5, or SM2 (its ASN.1 form)."""
    pub = public_key_pem(certificate, workdir)
    options = [] if sm2 else ["-pkeyopt", "rsa_padding_mode:pkcs1"]
    result = run("openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in",
                 write(workdir, plaintext), *options)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


def openssl_serial(certificate: bytes, workdir: Path) -> int:
    result = run("openssl", "x509", "-inform", "DER", "-in", write(workdir, certificate),
                 "-noout", "-serial")
    return int(result.stdout.decode().strip().split("=", 1)[1], 16)


# SM2 curve parameters (GM/T 0003.5), public constants, for Z = SM3(ENTL || ID || a || b ||
# xG || yG || xA || yA): the digest SpcSignDataNoHash takes on SM2 cards.
_SM2_CURVE = bytes.fromhex(
    "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
    "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
    "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")


def sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def card_digest(image: CardImage, message: bytes, workdir: Path) -> bytes:
    """What the NoHash methods take: SHA-1 on RSA cards, e = SM3(Z || M) on SM2 cards."""
    if image.profile.algorithm != "sm2":
        return hashlib.sha1(message).digest()
    pem = public_key_pem(image.certificate, workdir).read_text()
    der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))
    point = der[-65:]  # the SubjectPublicKeyInfo ends with the point 04 || x || y
    user_id = SM2_ID.encode()
    z = sm3((len(user_id) * 8).to_bytes(2, "big") + user_id + _SM2_CURVE + point[1:])
    return sm3(z + message)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cst(when: datetime) -> str:
    return (when.astimezone(UTC) + CST).strftime("%Y%m%d%H%M%S")


# ---- the replies ----

class StepFailure(AssertionError):
    pass


def reply_args(entry: dict[str, Any]) -> dict[str, Any]:
    """The _args of a reply, after checking it answers the request the page sent."""
    reply = entry["reply"]
    method = "cus-sec_" + entry["method"]
    if reply.get("_method") != method or reply.get("_status") != "00":
        raise StepFailure(f"not the reply of {method}: {reply}")
    if reply.get("_id") != entry["id"]:
        raise StepFailure(f"_id {reply.get('_id')!r} is not the request's {entry['id']!r}")
    return dict(reply.get("_args") or {})


def data_of(entry: dict[str, Any]) -> list[Any]:
    """Data of a successful reply, after checking the reply has the documented shape."""
    args = reply_args(entry)
    if args.get("Result") is not True:
        raise StepFailure(f"failed: {args.get('Error')}")
    if not isinstance(args.get("Data"), list) or args.get("Error") != []:
        raise StepFailure(f"success without Data/Error lists: {args}")
    return list(args["Data"])


def error_of(entry: dict[str, Any], code: str) -> list[str]:
    args = reply_args(entry)
    if args.get("Result") is not False:
        raise StepFailure(f"expected error {code}, got {args}")
    error = args.get("Error") or []
    if len(error) < 3 or error[1] != f"Err:Custom{code}":
        raise StepFailure(f"expected error {code}, got {error}")
    if not re.search(r"[\u4e00-\u9fff]", error[0]) or not re.search(r"[A-Za-z]+ [A-Za-z]+",
                                                                    error[2]):
        raise StepFailure(f"not a Chinese and an English message: {error}")
    return [str(part) for part in error]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailure(message)


@dataclass
class Step:
    name: str
    method: str
    args: dict[str, Any] | None
    check: Callable[[dict[str, Any]], None]

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "method": self.method}
        if self.args is not None:
            body["args"] = self.args
        return body


def ref(step: str, index: int = 0) -> dict[str, Any]:
    """An argument the page takes from an earlier reply: its Data[index]."""
    return {"$reply": step, "index": index}


@dataclass
class Scenario:
    """A script of steps (a list entry that is a list runs as one concurrent group) and the
    checks of their replies."""

    groups: list[list[Step]]

    def script(self) -> dict[str, Any]:
        steps: list[dict[str, Any]] = []
        for group in self.groups:
            if len(group) == 1:
                steps.append(group[0].as_json())
            else:
                steps.append({"parallel": [step.as_json() for step in group]})
        return {"steps": steps}

    def steps(self) -> list[Step]:
        return [step for group in self.groups for step in group]

    def methods(self) -> set[str]:
        return {step.method for step in self.steps()}

    def failures(self, result: PageResult) -> dict[str, list[str]]:
        """The failed checks, by method name (every step is checked, none stops the rest)."""
        replies = result.replies()
        failed: dict[str, list[str]] = {}
        for step in self.steps():
            entry = replies.get(step.name)
            try:
                if entry is None:
                    raise StepFailure("the page reported no reply")
                step.check(entry)
            except (StepFailure, KeyError, IndexError, TypeError, ValueError) as problem:
                failed.setdefault(step.method, []).append(f"{step.name}: {problem!r}"[:800])
        return failed


def assert_page_ran(result: PageResult, scenario: Scenario, origin: str, url: str) -> None:
    assert result.finished, result.describe()
    [page] = result.of_type("page")
    assert page["origin"] == origin and page["url"] == url, result.describe()
    assert not result.of_type("connect-failed"), result.describe()
    assert not result.of_type("page-error"), result.describe()
    [greeting] = result.of_type("greeting")
    assert greeting["message"] == {"_id": 0, "_method": "open", "_status": "00"}
    assert not result.of_type("unexpected") and not result.of_type("unparsable"), \
        result.describe()
    failed = scenario.failures(result)
    assert not failed, "methods that failed from the page:\n" + "\n".join(
        f"{method}: {problems}" for method, problems in sorted(failed.items())) + \
        "\n\n" + result.describe()


# ---- the stack ----

@pytest.fixture(scope="module")
def card_stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[CardStack]:
    with running_card_stack(tmp_path_factory.mktemp("browser-cards"), test_ca.trust_bundle
                            ) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    with running_browser_stack(tmp_path_factory.mktemp("browser"),
                               https_hosts=(SINGLE_WINDOW, EVIL), http_hosts=(INTRANET,)
                               ) as stack:
        yield stack


@pytest.fixture(scope="module")
def gateway(card_stack: CardStack, browser: BrowserStack) -> Iterator[Gateway]:
    """The real gateway on 61232 and 61231, wss with the certificate `eport-gateway tls install`
    made in the browser's HOME, allowing the Single Window and one plain-http origin."""
    before = browser.home.nss_listing()
    installed = tls_install(browser.home)
    # Exit 9: installed, but wss.singlewindow.cn does not resolve to loopback on this machine;
    # here Chromium's host mapping stands in for the /etc/hosts line it asks for.
    assert installed.returncode in (0, 9), installed.stdout + installed.stderr
    assert json.loads(installed.stdout)["ok"] is True, installed.stdout
    added = set(browser.home.nss_listing().splitlines()) - set(before.splitlines())
    assert any(line.rstrip().endswith("C,,") for line in added), \
        f"tls install trusted no CA in {browser.home.nssdb}:\n{browser.home.nss_listing()}"
    started = start_fixed_port_gateway(card_stack.socket, browser.home,
                                       (SINGLE_WINDOW_ORIGIN, INTRANET_ORIGIN), tls=True)
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Cards:
    stack: CardStack
    workdir: Path

    def insert(self, image: CardImage) -> None:
        self.stack.put(image, self.workdir)


@pytest.fixture
def cards(card_stack: CardStack, gateway: Gateway, tmp_path: Path) -> Iterator[Cards]:
    yield Cards(card_stack, tmp_path)
    assert gateway.alive(), "the gateway died:\n" + gateway.log()[-5000:]
    card_stack.remove(0)


@pytest.fixture(scope="module")
def rsa_card(test_ca: TestCA) -> CardImage:
    return provision_test_card(test_ca, "rsa2048", card_id="3100000000054321",
                               holder_name="李四", enterprise_name="上海浏览器测试贸易有限公司",
                               customs_code="3122960XYZ")


@pytest.fixture(scope="module")
def sm2_card(test_ca: TestCA) -> CardImage:
    return provision_test_card(test_ca, "sm2", card_id="3100000000098765",
                               holder_name="赵六", enterprise_name="广州国密测试物流有限公司",
                               customs_code="4401960GMS")


# ---- the scenarios ----

def whole_api(image: CardImage, recipient: CardImage, workdir: Path) -> Scenario:
    """Every one of the 35 methods, in the order a page would use them, with what a user
    would check of each reply. `recipient` is another card of the same algorithm: the page
    encrypts to its envelope certificate too."""
    profile = image.profile
    sm2 = profile.algorithm == "sm2"
    assert image.envelope_certificate is not None, "the test card has no envelope key"
    assert recipient.envelope_certificate is not None
    certificate, envelope = image.certificate, image.envelope_certificate
    assert envelope != certificate
    cert_no = profile.cert_number
    text = f"<CEBMessage>进口申报 {profile.algorithm} {secrets.token_hex(6)}</CEBMessage>"
    other_text = f"第二段报文 {secrets.token_hex(6)}"
    binary = secrets.token_bytes(48) + "报关单".encode()
    secret_text = f"信封加密 envelope {secrets.token_hex(8)}"
    challenge = secrets.token_bytes(32)  # a login server's random
    digest = card_digest(image, text.encode(), workdir)
    validity = x509.load_der_x509_certificate(certificate)
    # A certificate whose validity is not the card's, so that a `cert` argument that is
    # ignored shows.
    ca_validity = x509.load_der_x509_certificate(image.ca_certificate)
    assert ca_validity.not_valid_after_utc != validity.not_valid_after_utc
    from_openssl = openssl_encrypts(envelope, sm2, secret_text.encode(), workdir)

    def equals(expected: list[Any]) -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            data = data_of(entry)
            expect(data == expected, f"Data {data!r}, expected {expected!r}")
        return check

    # The certificate as the page read it (SpcGetSignCertAsPEM): signatures are checked
    # against it.
    page_read: dict[str, bytes] = {}

    def certificate_is(der: bytes, keep: bool = False) -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            [value] = data_of(entry)
            expect(isinstance(value, str) and "-----" not in value and "\n" not in value,
                   f"not bare base64: {value!r}")
            read = base64.b64decode(value, validate=True)
            expect(read == der, "not the certificate the card was provisioned with")
            if keep:
                page_read["certificate"] = read
        return check

    def cert_no_check(entry: dict[str, Any]) -> None:
        [number] = data_of(entry)
        expect(number == cert_no, f"{number!r} is not the card's certificate number")
        expect(int(number, 16) == openssl_serial(certificate, workdir),
               "the certificate number is not the certificate's serial")

    def user_info_check(entry: dict[str, Any]) -> None:
        [info] = data_of(entry)
        expect(info == {"szCardID": profile.card_id, "szUserName": profile.holder_name,
                        "szEntID": profile.customs_code, "szEntName": profile.enterprise_name,
                        "szCreditCode": profile.credit_code, "szCertNo": cert_no,
                        "szCardType": "2"}, f"{info!r}")

    def validity_of(cert: x509.Certificate) -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            [value] = data_of(entry)
            expect(value == {"szStartTime": cst(cert.not_valid_before_utc),
                             "szEndTime": cst(cert.not_valid_after_utc)}, f"{value!r}")
        return check

    def signature_over(data: bytes) -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            signed = data_of(entry)
            expect(len(signed) == 2 and signed[1] == cert_no, f"Data {signed!r}")
            signature = base64.b64decode(signed[0], validate=True)
            expect(len(signature) == (64 if sm2 else 256), f"{len(signature)} byte signature")
            read = page_read.get("certificate")
            expect(read is not None, "the page did not read the signing certificate")
            assert read is not None
            expect(openssl_verifies(read, sm2, data, signature, workdir),
                   "openssl does not verify the signature with the certificate the page read")
            expect(not openssl_verifies(read, sm2, data + b"x", signature, workdir),
                   "openssl verifies the signature over other data too")
        return check

    def signature_over_text(entry: dict[str, Any]) -> None:
        signature_over(text.encode())(entry)

    def fails_with(code: str, needle: str = "") -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            error = error_of(entry, code)
            expect(needle in error[0], f"{error[0]!r} does not say {needle!r}")
        return check

    def sha1_hex(entry: dict[str, Any]) -> None:
        expected = hashlib.sha1(text.encode()).hexdigest().upper()
        expect(data_of(entry) == [expected], f"{data_of(entry)} != {expected}")

    def ciphertext_for(der_key_image: CardImage) -> Callable[[dict[str, Any]], None]:
        def check(entry: dict[str, Any]) -> None:
            [value] = data_of(entry)
            ciphertext = base64.b64decode(value, validate=True)
            expect(secret_text.encode() not in ciphertext, "the plaintext shows")
            plain = openssl_decrypts(der_key_image, ciphertext, workdir)
            expect(plain == secret_text.encode(),
                   f"openssl pkeyutl with the envelope key gives {plain!r}")
        return check

    def attach_fields(text: str) -> None:
        fields = json.loads(text)
        expected = {"szCardID": profile.card_id, "szCertNo": cert_no,
                    "szEntID": profile.customs_code, "szEntName": profile.enterprise_name,
                    "szCreditCode": profile.credit_code, "szUserName": profile.holder_name,
                    "szCardType": "2", "szStartTime": cst(validity.not_valid_before_utc),
                    "szEndTime": cst(validity.not_valid_after_utc)}
        wrong = {key: fields.get(key) for key, value in expected.items()
                 if fields.get(key) != value}
        expect(not wrong, f"attach info {fields!r} differs from the card in {wrong!r}")

    def attach_info(entry: dict[str, Any]) -> None:
        [text] = data_of(entry)
        attach_fields(text)

    def attach_info_base64(entry: dict[str, Any]) -> None:
        [value] = data_of(entry)
        attach_fields(base64.b64decode(value, validate=True).decode("utf-8"))

    def plaintext_base64(entry: dict[str, Any]) -> None:
        [value] = data_of(entry)
        expect(base64.b64decode(value, validate=True) == secret_text.encode(),
               f"{value!r} is not the base64 of the text that was encrypted")

    s = Step
    return Scenario([
        [s("priority", "SpcSetInitEnvPriority", {"szInitEnvPriority": "1"}, equals([]))],
        [s("init", "SpcInitEnvEx", None, equals([]))],
        # A page reads everything at once: different methods in flight together, the two
        # SpcSHA1Digest calls one after the other (the page's rule), replies by _method.
        [s("cardId", "SpcGetCardID", None, equals([profile.card_id])),
         s("certNo", "SpcGetCertNo", None, cert_no_check),
         s("uname", "SpcGetUName", None, equals([profile.holder_name])),
         s("entId", "SpcGetEntID", None, equals([profile.customs_code])),
         s("entName", "SpcGetEntName", None, equals([profile.enterprise_name])),
         s("entMode", "SpcGetEntMode", None, equals(["2"])),
         s("userInfo", "SpcGetCardUserInfo", None, user_info_check),
         s("signCert", "SpcGetSignCert", None, certificate_is(certificate)),
         s("signCertPem", "SpcGetSignCertAsPEM", None, certificate_is(certificate, keep=True)),
         s("envCert", "SpcGetEnvCert", None, certificate_is(envelope)),
         s("envCertPem", "SpcGetEnvCertAsPEM", None, certificate_is(envelope)),
         s("attach", "SpcGetCardAttachInfo", None, attach_info),
         s("attachPem", "SpcGetCardAttachInfoAsPEM", None, attach_info_base64),
         s("sha1", "SpcSHA1Digest", {"szInfo": text}, sha1_hex),
         s("sha1Other", "SpcSHA1Digest", {"szInfo": other_text},
           equals([hashlib.sha1(other_text.encode()).hexdigest().upper()])),
         s("sha1Pem", "SpcSHA1DigestAsPEM", {"szInfo": text},
           equals([b64(hashlib.sha1(text.encode()).digest())])),
         s("encode", "SpcEncodePEM", {"inData": text}, equals([b64(text.encode())]))],
        [s("validity", "SpcGetValidTimeFromCert", None, validity_of(validity))],
        [s("caValidity", "SpcGetValidTimeFromCert", {"cert": b64(image.ca_certificate)},
           validity_of(ca_validity))],
        [s("caValidityPem", "SpcGetValidTimeFromCert", {"cert": pem(image.ca_certificate)},
           validity_of(ca_validity))],
        [s("decode", "SpcDecodePEM", {"inData": ref("encode")}, equals([text]))],
        [s("decodeString", "SpcDecodePEMAsString", {"inData": ref("encode")}, equals([text]))],
        # The PIN: a wrong one costs a try and says how many are left; the right one opens
        # the session the signing calls without passwd use.
        [s("wrongPin", "SpcVerifyPIN", {"passwd": WRONG_PIN},
           fails_with("0A000024", "还可以重试2次"))],
        [s("verify", "SpcVerifyPIN", {"passwd": PIN}, equals([]))],
        [s("signSession", "SpcSignDataAsPEM", {"inData": text}, signature_over_text)],
        [s("sign", "SpcSignData", {"inData": text, "passwd": PIN}, signature_over_text)],
        [s("verifySign", "SpcVerifySignData", {"inData": text, "signData": ref("sign")},
           equals([]))],
        [s("verifyWithCert", "SpcVerifySignData",
           {"inData": text, "signData": ref("signSession"), "certDataPEM": ref("signCertPem")},
           equals([]))],
        [s("verifyTampered", "SpcVerifySignData",
           {"inData": text + "改", "signData": ref("sign")}, fails_with("51620"))],
        [s("signBase64", "SpcSignPemDataAsPem", {"inData": b64(binary)},
           signature_over(binary))],
        [s("noHash", "SpcSignDataNoHash", {"inData": digest.hex()},
           signature_over_text)],
        [s("noHashPem", "SpcSignDataNoHashAsPEM", {"inData": b64(digest), "passwd": PIN},
           signature_over_text)],
        [s("verifyNoHash", "SpcVerifySignDataNoHash",
           {"inData": digest.hex(), "signData": ref("noHash")}, equals([]))],
        [s("verifyNoHashOther", "SpcVerifySignDataNoHash",
           {"inData": card_digest(image, b"other", workdir).hex(), "signData": ref("noHash")},
           fails_with("51620"))],
        [s("signRandom", "SpcSignRandom", {"random": b64(challenge), "passwd": PIN},
           signature_over(challenge))],
        # The envelope: encrypt on the host to the card's envelope certificate (openssl
        # decrypts it with the card's envelope key), decrypt on the card; encrypt to another
        # card's certificate the page passes (the card cannot decrypt that one); a signing
        # certificate cannot be encrypted to.
        [s("encrypt", "SpcRSAEncrypt", {"inData": secret_text}, ciphertext_for(image))],
        [s("encryptToOther", "SpcRSAEncrypt",
           {"inData": secret_text, "certData": pem(recipient.envelope_certificate)},
           ciphertext_for(recipient))],
        [s("encryptToSigningCert", "SpcRSAEncrypt",
           {"inData": secret_text, "certData": ref("signCertPem")}, fails_with("51500"))],
        # The plaintext comes back base64 (it is bytes); SpcDecodePEMAsString makes it text.
        [s("decrypt", "SpcRSADecrypt", {"inData": ref("encrypt")}, plaintext_base64)],
        [s("decryptedText", "SpcDecodePEMAsString", {"inData": ref("decrypt")},
           equals([secret_text]))],
        [s("decryptOpenssl", "SpcRSADecrypt", {"inData": b64(from_openssl), "passwd": PIN},
           plaintext_base64)],
        [s("decryptOther", "SpcRSADecrypt", {"inData": ref("encryptToOther")},
           fails_with("51500"))],
        # SpcVerifyPINAll opens a session as SpcVerifyPIN does: after a logout, signing
        # without passwd works again.
        [s("logout", "SpcClearEnv", None, equals([]))],
        [s("verifyAll", "SpcVerifyPINAll", {"passwd": PIN}, equals([]))],
        [s("signAfterVerifyAll", "SpcSignDataAsPEM", {"inData": text},
           signature_over_text)],
        # Changing the PIN: the old one stops working, the new one works, and back.
        [s("change", "SpcChangePIN", {"oldPin": PIN, "newPin": NEW_PIN}, equals([]))],
        [s("oldPinRefused", "SpcVerifyPIN", {"passwd": PIN}, fails_with("0A000024"))],
        [s("newPin", "SpcVerifyPIN", {"passwd": NEW_PIN}, equals([]))],
        [s("changeBack", "SpcChangePIN", {"oldPin": NEW_PIN, "newPin": PIN}, equals([]))],
        # Logging out ends the session: signing without passwd is refused.
        [s("clear", "SpcClearEnv", None, equals([]))],
        [s("signAfterClear", "SpcSignDataAsPEM", {"inData": text}, fails_with("0A00002D"))],
    ])


def basic_flow(image: CardImage, workdir: Path) -> Scenario:
    """What a Single Window page does for a declaration: read, verify the PIN, sign, and the
    envelope round trip."""
    full = {step.name: step for step in whole_api(image, image, workdir).steps()}
    names = ("init", "cardId", "certNo", "signCertPem", "verify", "sign", "encrypt", "decrypt")
    return Scenario([[full[name]] for name in names])


# ---- the tests ----

@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_https_single_window_page_uses_every_card_method_over_wss(
        browser: BrowserStack, gateway: Gateway, cards: Cards, test_ca: TestCA,
        rsa_card: CardImage, sm2_card: CardImage, algorithm: str, tmp_path: Path) -> None:
    image = {"rsa2048": rsa_card, "sm2": sm2_card}[algorithm]
    recipient = provision_test_card(test_ca, algorithm, card_id="3100000000011111")
    cards.insert(image)
    scenario = whole_api(image, recipient, tmp_path)
    assert scenario.methods() == PAGE_LIBRARY_METHODS, \
        PAGE_LIBRARY_METHODS ^ scenario.methods()
    result = browser.open_page(SINGLE_WINDOW_ORIGIN, scenario.script())
    assert_page_ran(result, scenario, SINGLE_WINDOW_ORIGIN,
                    f"wss://wss.singlewindow.cn:{WSS_PORT}")
    # The page's own server saw the page's origin as https://www.singlewindow.cn (the host
    # mapping moved only the port), and so did the gateway, whose audit names it.
    assert set(result.report_origins) == {SINGLE_WINDOW_ORIGIN}
    assert f"origin={SINGLE_WINDOW_ORIGIN}" in gateway.log()


def test_plain_http_page_of_an_allowed_origin_uses_ws(
        browser: BrowserStack, gateway: Gateway, cards: Cards, rsa_card: CardImage,
        tmp_path: Path) -> None:
    cards.insert(rsa_card)
    scenario = basic_flow(rsa_card, tmp_path)
    result = browser.open_page(INTRANET_ORIGIN, scenario.script())
    assert_page_ran(result, scenario, INTRANET_ORIGIN, f"ws://127.0.0.1:{WS_PORT}")
    assert f"origin={INTRANET_ORIGIN}" in gateway.log()


def test_page_of_a_foreign_https_origin_is_refused(
        browser: BrowserStack, gateway: Gateway, cards: Cards, rsa_card: CardImage,
        tmp_path: Path) -> None:
    cards.insert(rsa_card)
    scenario = basic_flow(rsa_card, tmp_path)
    evil_origin = f"https://{EVIL}"
    # What the page's scheme calls for, and what a hostile https page may try as well (the
    # browser lets https pages open ws://127.0.0.1).
    urls = [f"wss://wss.singlewindow.cn:{WSS_PORT}", f"ws://127.0.0.1:{WS_PORT}"]
    before = len(gateway.log())
    result = browser.open_page(evil_origin, {**scenario.script(), "urls": urls}, timeout=60)
    assert result.finished, result.describe()
    # The page itself loaded over https (its certificate is trusted): only the gateway
    # refused it, on both ports, before any greeting.
    [page] = result.of_type("page")
    assert page["origin"] == evil_origin, result.describe()
    assert [failure["url"] for failure in result.of_type("connect-failed")] == urls, \
        result.describe()
    assert not result.of_type("greeting") and not result.of_type("reply"), result.describe()
    refusals = [line for line in gateway.log()[before:].splitlines()
                if EVIL in line and "refus" in line.lower()]
    assert len(refusals) >= len(urls), "the gateway did not log the refusals:\n" + \
        gateway.log()[before:]
