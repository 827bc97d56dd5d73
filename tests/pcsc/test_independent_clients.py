"""Independent PC/SC software uses the simulated card through the real pcscd: OpenSC's PKCS#11
module and tools, yubico-piv-tool, and OpenSSL verifying what the card signed
(acceptance)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext
from eport.common import sm2
from eport.common.piv import Algorithm, KeyRef
from eport.firmware_sim.image import CardImage
from eport.firmware_sim.sm2_x509 import certificate_public_point
from tests.support.pcsc_stack import OPENSC_MODULE

pytestmark = pytest.mark.pcsc

PIN = "88888888"
SM2_DISTID = "distid:1234567812345678"


def run(*args: str, input_bytes: bytes | None = None) -> str:
    result = subprocess.run(args, input=input_bytes, capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def pkcs11(*args: str) -> str:
    return run("pkcs11-tool", "--module", OPENSC_MODULE, *args)


def write_pem_public_key(certificate_der: Path, out: Path) -> Path:
    run("openssl", "x509", "-inform", "DER", "-in", str(certificate_der), "-pubkey", "-noout",
        "-out", str(out))
    return out


def test_pkcs11_tool_lists_the_slot_and_the_certificate(sim_card, tmp_path: Path) -> None:
    image: CardImage = sim_card("rsa2048").image
    slots = pkcs11("--list-slots")
    assert "Virtual PCD 00 00" in slots
    assert "token state" in slots or "token label" in slots
    objects = pkcs11("--list-objects", "--type", "cert")
    assert "Certificate Object" in objects
    cert_path = tmp_path / "cert.der"
    pkcs11("--read-object", "--type", "cert", "--id", "02", "--output-file", str(cert_path))
    assert cert_path.read_bytes() == image.certificate


def test_pkcs11_rsa2048_signature_verifies_with_openssl(sim_card, tmp_path: Path) -> None:
    sim_card("rsa2048")
    message = tmp_path / "declaration.xml"
    message.write_text("<Declaration><EntryId>123456789</EntryId></Declaration>")
    cert = tmp_path / "cert.der"
    pkcs11("--read-object", "--type", "cert", "--id", "02", "--output-file", str(cert))
    signature = tmp_path / "sig.bin"
    pkcs11("--login", "--pin", PIN, "--id", "02", "--sign", "--mechanism", "SHA256-RSA-PKCS",
           "--input-file", str(message), "--output-file", str(signature))
    public = write_pem_public_key(cert, tmp_path / "pub.pem")
    out = run("openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(signature),
              str(message))
    assert "Verified OK" in out


def test_pkcs11_p256_signature_verifies_with_openssl(sim_card, tmp_path: Path) -> None:
    sim_card("p256")
    message = tmp_path / "payment.txt"
    message.write_text("orderNo=20261122001&payTime=20261122120000")
    cert = tmp_path / "cert.der"
    pkcs11("--read-object", "--type", "cert", "--id", "02", "--output-file", str(cert))
    signature = tmp_path / "sig.der"
    pkcs11("--login", "--pin", PIN, "--id", "02", "--sign", "--mechanism", "ECDSA-SHA256",
           "--signature-format", "openssl", "--input-file", str(message),
           "--output-file", str(signature))
    public = write_pem_public_key(cert, tmp_path / "pub.pem")
    out = run("openssl", "dgst", "-sha256", "-verify", str(public), "-signature", str(signature),
              str(message))
    assert "Verified OK" in out


def test_opensc_sees_the_pins_and_the_tries_left(sim_card) -> None:
    """pkcs15-tool lists the PIN and the PUK. OpenSC 0.23's pkcs15-tool never asks a PIV card
    for its counter (it sends no status VERIFY), so the tries left are read through OpenSC's
    PKCS#11 token flags, which do ask the card, and through yubico-piv-tool."""
    sim_card("rsa2048")
    pins = run("pkcs15-tool", "--list-pins")
    assert "PIN [PIN]" in pins and "PIV PUK" in pins
    assert re.search(r"Reference\s*:\s*128", pins) and re.search(r"Reference\s*:\s*129", pins)
    flags, tries = [], []
    for _ in range(3):
        wrong = subprocess.run(
            ["pkcs11-tool", "--module", OPENSC_MODULE, "--login", "--pin", "11111111",
             "--list-objects"], capture_output=True, timeout=60)
        assert wrong.returncode != 0  # the wrong PIN is refused
        flags.append(pkcs11("--list-token-slots"))
        status = run("yubico-piv-tool", "-r", "Virtual", "-a", "status")
        tries.append(int(re.findall(r"PIN tries left:\s*(\d+)", status)[0]))
    assert tries == [2, 1, 0]
    assert "final user PIN try" not in flags[0] and "locked" not in flags[0]
    assert "final user PIN try" in flags[1]
    assert "user PIN locked" in flags[2]


def test_yubico_piv_tool_reads_the_card(sim_card) -> None:
    image: CardImage = sim_card("rsa2048").image
    out = run("yubico-piv-tool", "-r", "Virtual", "-a", "status")
    assert "Slot 9c" in out
    assert "PIN tries left:\t3" in out or re.search(r"PIN tries left:\s*3", out), out
    assert image.profile.holder_name in out or "CN=" in out


def test_sm2_signature_and_certificate_verify_with_openssl(sim_card, tmp_path: Path) -> None:
    card = sim_card("sm2")
    image: CardImage = card.image
    message = b"<CEBMessage>SM2 signed on the card</CEBMessage>"
    with PcscContext() as context:
        connection = context.connect(card.reader)
        piv = PivSession(connection)
        piv.select()
        certificate = piv.read_certificate()
        point = certificate_public_point(certificate)
        piv.verify_pin(PIN.encode())
        signature = piv.sign(Algorithm.SM2_SM3, sm2.message_digest(point, message))
        assert piv.reference_status(KeyRef.PIN).verified
        connection.close()
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig.der").write_bytes(signature)
    (tmp_path / "cert.der").write_bytes(certificate)
    public = write_pem_public_key(tmp_path / "cert.der", tmp_path / "pub.pem")
    # OpenSSL 3.0 puts an empty user id into Z unless told the GM/T 0009 default.
    out = run("openssl", "dgst", "-sm3", "-verify", str(public), "-sigopt", SM2_DISTID,
              "-signature",
              str(tmp_path / "sig.der"), str(tmp_path / "msg"))
    assert "Verified OK" in out
    (tmp_path / "ca.der").write_bytes(image.ca_certificate)
    run("openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "ca.der"),
        "-out", str(tmp_path / "ca.pem"))
    run("openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "cert.der"),
        "-out", str(tmp_path / "cert.pem"))
    out = run("openssl", "verify", "-vfyopt", SM2_DISTID, "-CAfile", str(tmp_path / "ca.pem"),
              str(tmp_path / "cert.pem"))
    assert "OK" in out

