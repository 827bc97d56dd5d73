"""The gateway recipes through the real stack: `eport-gateway ceb-sign | ceb-verify |
pay179-sign` as users run them (the installed console script in a subprocess), talking to a
real `eport-gateway serve` process, which calls a real eportd, which signs on a simulated
card behind the real pcscd.

Results are checked by implementations that share nothing with ours: signxml for RSA XML-DSig,
lxml's C14N and OpenSSL (`openssl dgst -sm3` for the digest; `openssl dgst -verify`, the
public key taken from the certificate in KeyInfo by `openssl x509`) for SM2 and for the 179
signatures; our own verifier too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.verifier import SignatureConfiguration, XMLVerifier

from eport.clients.gateway.recipes.ceb_xml import DS_NS, verify_ceb_xml
from eport.clients.gateway.recipes.signer import GatewaySigner
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage, load_card
from tests.support.cards import write_card
from tests.support.daemon_stack import Daemon, start_daemon, wait_for_card
from tests.support.gateway_stack import Gateway, running_gateway
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot
from tests.unit.test_recipes import CEB311, PAY179, PAY179_STRING, wrapper_signed

pytestmark = pytest.mark.pcsc

GATEWAY = str(Path(sys.executable).with_name("eport-gateway"))
PIN, WRONG_PIN = "88888888", "11111111"
DISTID = "distid:1234567812345678"
DS = {"ds": DS_NS}
# §6 of the CEB message specification (202205 edition), written out rather than imported.
CHINAPORT = "http://www.chinaport.gov.cn/2022/04/xmldsig#"
OLD_SM2 = "http://www.w3.org/2000/09/xmldsig#sm2-sm3"  # what older wrappers wrote
Result = subprocess.CompletedProcess[str]


@dataclass
class Stack:
    slots: SimSlots
    daemon: Daemon
    gateway: Gateway
    workdir: Path

    def put(self, image: CardImage, name: str) -> None:
        """A fresh copy of the card in slot 0, seen by eportd."""
        path = write_card(image, self.workdir, f"{name}.json")
        if 0 in self.slots.runner.slots:
            self.slots.insert(0, path)
        else:
            self.slots.add(0, path)
        wait_for_card(self.daemon.stub(), reader_for_slot(0))

    def pull(self) -> None:
        if 0 in self.slots.runner.slots and self.slots.slot(0).status().inserted:
            self.slots.remove(0)
            wait_for_card(self.daemon.stub(), reader_for_slot(0), present=False)


@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("recipes-stack")
    slots = SimSlots(load_card)
    daemon = start_daemon(directory / "run", "--trust-anchor", str(test_ca.trust_bundle))
    try:
        with running_gateway(daemon.socket) as gateway:
            yield Stack(slots, daemon, gateway, directory)
    finally:
        daemon.stop()
        slots.close()


@pytest.fixture
def card(stack: Stack, card_images: dict[str, CardImage], request: pytest.FixtureRequest
         ) -> Iterator[Callable[[str], CardImage]]:
    def put(algorithm: str) -> CardImage:
        image = card_images[algorithm]
        stack.put(image, f"{request.node.name}-{algorithm}".replace("[", "-").replace("]", ""))
        return image

    yield put
    stack.pull()


def eport_gateway(*args: str | Path, stdin: str | None = None) -> Result:
    environment = {k: v for k, v in os.environ.items() if k != "EPORTD_SOCKET"}
    environment["LANG"] = "C.UTF-8"
    result = subprocess.run(
        [GATEWAY, *map(str, args)], input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True,
        text=True, encoding="utf-8", timeout=120, env=environment, start_new_session=True)
    shown = result.stdout + result.stderr
    assert "Traceback" not in shown, describe(result)
    for secret in (PIN, WRONG_PIN):
        assert secret not in shown, describe(result)
    return result


def describe(result: Result) -> str:
    return (f"$ eport-gateway {' '.join(map(str, result.args[1:]))}\nexit {result.returncode}\n"
            f"--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}")


def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("openssl")
    assert binary is not None, "openssl is needed by the pcsc tier"
    return subprocess.run([binary, *map(str, args)], capture_output=True, check=False)


def openssl_verify(workdir: Path, image: CardImage, data: bytes, signature: bytes,
                   certificate: bytes | None = None) -> bool:
    """`openssl dgst -verify` with the public key OpenSSL itself takes out of the certificate
    (the card's unless another is given): SHA1withRSA, or SM2-with-SM3 and the default user id
    (r || s turned into the DER that OpenSSL reads)."""
    (workdir / "card.der").write_bytes(certificate or image.certificate)
    extracted = openssl("x509", "-inform", "DER", "-in", workdir / "card.der", "-pubkey",
                        "-noout")
    assert extracted.returncode == 0, extracted.stderr
    (workdir / "card-pub.pem").write_bytes(extracted.stdout)
    (workdir / "data.bin").write_bytes(data)
    if image.profile.algorithm == "sm2":
        assert len(signature) == 64
        signature = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                         int.from_bytes(signature[32:], "big"))
        options = ["-sm3", "-sigopt", DISTID]
    else:
        options = ["-sha1"]
    (workdir / "sig.der").write_bytes(signature)
    result = openssl("dgst", *options, "-verify", workdir / "card-pub.pem", "-signature",
                     workdir / "sig.der", workdir / "data.bin")
    return result.returncode == 0 and b"Verified OK" in result.stdout


def certificate_pem(image: CardImage) -> str:
    return x509.load_der_x509_certificate(image.certificate).public_bytes(
        serialization.Encoding.PEM).decode()


def signed_info_and_value(document: bytes) -> tuple[bytes, bytes]:
    signature = etree.fromstring(document).find("ds:Signature", DS)
    assert signature is not None
    signed_info = signature.find("ds:SignedInfo", DS)
    value = signature.findtext("ds:SignatureValue", namespaces=DS)
    assert signed_info is not None and value
    c14n: bytes = etree.tostring(signed_info, method="c14n", exclusive=False,
                                 with_comments=False)
    return c14n, base64.b64decode(value)


def openssl_sm3(workdir: Path, data: bytes) -> bytes:
    (workdir / "c14n.xml").write_bytes(data)
    result = openssl("dgst", "-sm3", "-binary", workdir / "c14n.xml")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 32
    return result.stdout


def c14n_without_signature(document: bytes) -> bytes:
    """What the enveloped-signature transform gives a verifier: the C14N 1.0 (no comments) of
    the document with its ds:Signature taken out, by lxml alone."""
    root = etree.fromstring(document)
    signature = root.find("ds:Signature", DS)
    assert signature is not None and not signature.tail
    root.remove(signature)
    c14n: bytes = etree.tostring(root.getroottree(), method="c14n", exclusive=False,
                                 with_comments=False)
    return c14n


def key_info_certificate(document: bytes) -> bytes:
    text = etree.fromstring(document).findtext("ds:Signature/ds:KeyInfo/ds:X509Data/"
                                               "ds:X509Certificate", namespaces=DS)
    assert text
    return base64.b64decode(text)


def algorithm_uris(document: bytes) -> tuple[str | None, str | None]:
    signed_info = etree.fromstring(document).find("ds:Signature/ds:SignedInfo", DS)
    assert signed_info is not None
    method = signed_info.find("ds:SignatureMethod", DS)
    digest_method = signed_info.find("ds:Reference/ds:DigestMethod", DS)
    assert method is not None and digest_method is not None
    return method.get("Algorithm"), digest_method.get("Algorithm")


def sign_ceb(stack: Stack, tmp_path: Path, *extra: str, stdin: str | None = f"{PIN}\n"
             ) -> tuple[Result, Path]:
    message = tmp_path / "CEB311.xml"
    message.write_text(CEB311, encoding="utf-8")
    out = tmp_path / "CEB311.signed.xml"
    pin = ["--pin-stdin"] if stdin is not None else []
    result = eport_gateway("ceb-sign", message, "-o", out, "--url", stack.gateway.url, *pin,
                           *extra, stdin=stdin)
    return result, out


# ---- CEB XML ----

def test_ceb_sign_rsa2048(stack: Stack, card: Callable[[str], CardImage],
                          tmp_path: Path) -> None:
    image = card("rsa2048")
    result, out = sign_ceb(stack, tmp_path)
    assert result.returncode == 0, describe(result)
    number = image.profile.cert_number
    assert f"signed with certificate {number}" in result.stderr
    signed = out.read_bytes()

    config = SignatureConfiguration(signature_methods=frozenset({SignatureMethod.RSA_SHA1}),
                                    digest_algorithms=frozenset({DigestAlgorithm.SHA1}))
    XMLVerifier().verify(signed, x509_cert=certificate_pem(image), expect_config=config)
    ours = verify_ceb_xml(signed)
    assert ours.valid, ours
    assert (ours.certificate_number, ours.key_type) == (number, "rsa")
    assert ours.certificate_der == image.certificate
    assert openssl_verify(tmp_path, image, *signed_info_and_value(signed))

    verified = eport_gateway("ceb-verify", out)
    assert verified.returncode == 0, describe(verified)
    assert "signature valid" in verified.stdout and number in verified.stdout


def test_ceb_sign_sm2(stack: Stack, card: Callable[[str], CardImage], tmp_path: Path) -> None:
    """The 202205 form: the chinaport URIs, an SM3 DigestValue, the SignatureValue r || s of
    SM2-with-SM3 over SignedInfo, all checked with lxml and OpenSSL."""
    image = card("sm2")
    result, out = sign_ceb(stack, tmp_path)
    assert result.returncode == 0, describe(result)
    signed = out.read_bytes()
    assert algorithm_uris(signed) == (f"{CHINAPORT}sm2-sm3", f"{CHINAPORT}sm3")
    assert b"xmldsig#sha1" not in signed and OLD_SM2.encode() not in signed

    # DigestValue = SM3 of the C14N document after the enveloped-signature transform, which is
    # also the C14N of the unsigned input.
    c14n = c14n_without_signature(signed)
    assert c14n == etree.tostring(etree.fromstring(CEB311.encode()).getroottree(),
                                  method="c14n")
    digest = etree.fromstring(signed).findtext(".//ds:DigestValue", namespaces=DS)
    assert digest and base64.b64decode(digest) == openssl_sm3(tmp_path, c14n)

    # The SignatureValue: 64 bytes r || s that OpenSSL verifies over the C14N SignedInfo with
    # the public key of the certificate in KeyInfo, which is the card's.
    certificate = key_info_certificate(signed)
    assert certificate == image.certificate
    signed_info, value = signed_info_and_value(signed)
    assert len(value) == 64
    assert openssl_verify(tmp_path, image, signed_info, value, certificate)

    ours = verify_ceb_xml(signed)
    assert ours.valid, ours
    assert (ours.certificate_number, ours.key_type) == (image.profile.cert_number, "sm2")
    assert ours.signature_method_form == "chinaport-2022"
    (tmp_path / "card.der").write_bytes(image.certificate)
    verified = eport_gateway("ceb-verify", out, "--cert", tmp_path / "card.der")
    assert verified.returncode == 0, describe(verified)
    assert f"signature method: {CHINAPORT}sm2-sm3" in verified.stdout
    assert f"digest method: {CHINAPORT}sm3" in verified.stdout

    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.replace("张三".encode(), "张四".encode(), 1))
    rejected = eport_gateway("ceb-verify", tampered)
    assert rejected.returncode == 1, describe(rejected)
    assert "digest mismatch" in rejected.stdout


def test_ceb_verify_reads_the_old_w3_style_sm2_uri(stack: Stack,
                                                   card: Callable[[str], CardImage],
                                                   tmp_path: Path) -> None:
    """A message signed on the card the way wrappers did before the 202205 edition
    (w3.org-style sm2-sm3, SHA-1 digest): ceb-verify accepts it and says which URI it saw."""
    image = card("sm2")
    with GatewaySigner(stack.gateway.url, pin=PIN, timeout=30) as signer:
        old = wrapper_signed(signer, OLD_SM2, "http://www.w3.org/2000/09/xmldsig#sha1")
    assert algorithm_uris(old) == (OLD_SM2, "http://www.w3.org/2000/09/xmldsig#sha1")
    signed_info, value = signed_info_and_value(old)
    assert openssl_verify(tmp_path, image, signed_info, value)
    path = tmp_path / "old.xml"
    path.write_bytes(old)

    verified = eport_gateway("ceb-verify", path)
    assert verified.returncode == 0, describe(verified)
    assert "signature valid" in verified.stdout
    assert f"signature method: {OLD_SM2} (" in verified.stdout
    assert "older w3.org-style SM2 URI" in verified.stdout
    as_json = eport_gateway("ceb-verify", path, "--json")
    assert as_json.returncode == 0, describe(as_json)
    report = json.loads(as_json.stdout)["result"]
    assert (report["valid"], report["signature_method"], report["signature_method_form"]) == (
        True, OLD_SM2, "w3.org-legacy")
    assert report["certificate_number"] == image.profile.cert_number

    tampered = tmp_path / "old-tampered.xml"
    tampered.write_bytes(old.replace(b"199.00", b"1.00", 1))
    rejected = eport_gateway("ceb-verify", tampered, "--json")
    assert rejected.returncode == 1, describe(rejected)
    error = json.loads(rejected.stdout)["error"]
    assert (error["valid"], error["digest_ok"], error["signature_method_form"]) == (
        False, False, "w3.org-legacy")


def test_ceb_sign_with_the_gateways_pin_session(stack: Stack, card: Callable[[str], CardImage],
                                                tmp_path: Path) -> None:
    """Without a PIN the recipe relies on a PIN session opened before (SpcVerifyPIN)."""
    card("rsa2048")
    refused, _ = sign_ceb(stack, tmp_path, stdin=None)
    assert refused.returncode == 3, describe(refused)
    assert "[0A00002D]" in refused.stderr
    with GatewaySigner(stack.gateway.url, timeout=30) as session:
        session.call("cus-sec_SpcVerifyPIN", {"passwd": PIN})
        result, out = sign_ceb(stack, tmp_path, stdin=None)
        session.call("cus-sec_SpcClearEnv")
    assert result.returncode == 0, describe(result)
    assert verify_ceb_xml(out.read_bytes()).valid


def test_ceb_sign_wrong_pin_and_no_card(stack: Stack, card: Callable[[str], CardImage],
                                        tmp_path: Path) -> None:
    card("sm2")
    wrong, out = sign_ceb(stack, tmp_path, stdin=f"{WRONG_PIN}\n")
    assert wrong.returncode == 3, describe(wrong)
    assert "[0A000024]" in wrong.stderr and "口令不正确" in wrong.stderr
    assert not out.exists()
    stack.pull()
    absent, _ = sign_ceb(stack, tmp_path)
    assert absent.returncode == 3, describe(absent)
    assert "[51590]" in absent.stderr


# ---- announcement 179 ----

@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_pay179_sign(stack: Stack, card: Callable[[str], CardImage], tmp_path: Path,
                     algorithm: str) -> None:
    image = card(algorithm)
    request = tmp_path / "pay.json"
    request.write_text(json.dumps(PAY179, ensure_ascii=False, indent=2), encoding="utf-8")
    out = tmp_path / "pay.signed.json"
    result = eport_gateway("pay179-sign", request, "-o", out, "--url", stack.gateway.url,
                           "--pin-stdin", stdin=f"{PIN}\n")
    assert result.returncode == 0, describe(result)
    signed: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert {k: signed[k] for k in PAY179} == PAY179
    assert signed["certNo"] == image.profile.cert_number
    assert openssl_verify(tmp_path, image, PAY179_STRING.encode("utf-8"),
                          base64.b64decode(signed["signValue"]))


def test_pay179_bad_input_needs_no_gateway(tmp_path: Path) -> None:
    request = tmp_path / "pay.json"
    request.write_text(json.dumps({**PAY179, "serviceTime": None}), encoding="utf-8")
    result = eport_gateway("pay179-sign", request, "--url", "ws://127.0.0.1:9")
    assert result.returncode == 2, describe(result)
    assert "serviceTime" in result.stderr
