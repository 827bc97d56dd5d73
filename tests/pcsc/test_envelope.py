"""The envelope key (加密证书) through the real stack: pcscd + vpcd + the simulated card, the
real eportd process on its socket, and OpenSSL 3 as the independent implementation.

Both directions are checked: what `openssl pkeyutl -encrypt` makes with the envelope
certificate's key, eportd's Decrypt opens; what encrypt_to_certificate makes, `openssl pkeyutl
-decrypt` opens with the private key taken from the card image this test created.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eport.common import sm2
from eport.common.envelope_crypto import encrypt_to_certificate
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage, read_image
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import (
    Daemon,
    expect_error,
    running_daemon,
    wait_for_card,
)
from tests.support.eport_cli import (
    Result,
    assert_no_secret,
    describe,
    error_json,
    human_error,
    ok_json,
    run_eport,
)
from tests.support.openssl_tool import run_checked as run
from tests.support.pcsc_stack import OPENSC_MODULE, Pcscd, SimSlots, reader_for_slot

from eport.protos.v1 import eportd_pb2 as pb  # isort: skip

pytestmark = pytest.mark.pcsc
PIN = "88888888"
READER0 = reader_for_slot(0)
MESSAGE = "报关单加密 session key K-ABCDEF".encode()
FORM = {"rsa2048": pb.RSA_PKCS1_V15, "sm2": pb.SM2_ASN1}


@pytest.fixture
def daemon(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> Iterator[Daemon]:
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle)) as d:
        yield d


def insert(sim_slots: Callable[..., SimSlots], daemon: Daemon, image: CardImage,
           tmp_path: Path) -> tuple[Path, SimSlots]:
    path = write_card(image, tmp_path, "card.json")
    slots = sim_slots([(0, path)])
    wait_for_card(daemon.stub(), READER0)
    return path, slots


def private_key_pem(image: CardImage) -> bytes:
    """The envelope private key of a card image, as a PEM file OpenSSL reads."""
    assert image.envelope_private_key is not None
    if image.profile.algorithm == "sm2":
        return sm2.private_key_pem(int.from_bytes(image.envelope_private_key, "big"))
    key = serialization.load_der_private_key(image.envelope_private_key, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def c1c3c2_from_openssl_asn1(asn1: bytes) -> bytes:
    """OpenSSL's SEQUENCE {x, y, hash, ciphertext} rewritten as 04 || x || y || C3 || C2 with
    a generic ASN.1 parser (not the code under test)."""
    fields = asn1_core.Sequence.load(asn1)  # children parsed by their universal tags
    assert [type(fields[i]) for i in range(4)] == [asn1_core.Integer, asn1_core.Integer,
                                                   asn1_core.OctetString, asn1_core.OctetString]
    x, y = int(fields[0].native), int(fields[1].native)
    c3, c2 = bytes(fields[2].native), bytes(fields[3].native)
    assert len(c3) == 32
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big") + c3 + c2


# ---- both directions against OpenSSL ----

@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_openssl_encrypts_to_the_envelope_certificate_and_eportd_decrypts(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        tmp_path: Path, openssl: str, algorithm: str) -> None:
    image = card_images[algorithm]
    insert(sim_slots, daemon, image, tmp_path)
    stub = daemon.stub()
    envelope = stub.GetEnvelopeCertificate(pb.CardSelector())
    assert envelope.der == image.envelope_certificate != image.certificate
    assert envelope.check.chain == pb.TRUSTED and envelope.check.state == pb.VALID
    assert envelope.card_id == image.profile.card_id
    serial = format(x509.load_der_x509_certificate(envelope.der).serial_number, "x")
    assert envelope.certificate_number == serial != image.profile.cert_number

    (tmp_path / "envelope.pem").write_text(envelope.pem)
    (tmp_path / "message").write_bytes(MESSAGE)
    # OpenSSL 3.0 takes a key on the SM2 curve as an SM2 key ("ASN1 OID: SM2" in
    # `openssl pkey -text`), so -certin needs no -pkeyopt to do SM2 encryption; it writes the
    # GM/T 0009 ASN.1 form.
    run(openssl, "pkeyutl", "-encrypt", "-certin", "-inkey", str(tmp_path / "envelope.pem"),
        "-in", str(tmp_path / "message"), "-out", str(tmp_path / "ciphertext"))
    ciphertext = (tmp_path / "ciphertext").read_bytes()

    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)),
                 "NOT_AUTHENTICATED")
    answer = stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, pin=PIN))
    assert answer.plaintext == MESSAGE and answer.form == FORM[algorithm]
    assert answer.certificate_number == serial and answer.card_id == image.profile.card_id
    assert stub.GetPinStatus(pb.CardSelector()).session_active  # as Sign with a PIN does
    # Within the session no PIN is needed, and the same key signs as before.
    assert stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)).plaintext == MESSAGE
    if algorithm == "sm2":
        raw = c1c3c2_from_openssl_asn1(ciphertext)
        converted = stub.Decrypt(pb.DecryptRequest(ciphertext=raw))
        assert converted.plaintext == MESSAGE and converted.form == pb.SM2_C1C3C2
    assert stub.Sign(pb.SignRequest(data=b"still signs")).signature
    assert PIN not in daemon.log()


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_encrypt_to_certificate_opens_with_openssl_and_the_card_key(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        tmp_path: Path, openssl: str, algorithm: str) -> None:
    image = card_images[algorithm]
    insert(sim_slots, daemon, image, tmp_path)
    envelope = daemon.stub().GetEnvelopeCertificate(pb.CardSelector())
    (tmp_path / "ciphertext").write_bytes(encrypt_to_certificate(envelope.der, MESSAGE))
    (tmp_path / "key.pem").write_bytes(private_key_pem(image))
    if algorithm == "sm2":
        assert b"ASN1 OID: SM2" in run(openssl, "pkey", "-in", str(tmp_path / "key.pem"),
                                       "-text", "-noout")
    plaintext = run(openssl, "pkeyutl", "-decrypt", "-inkey", str(tmp_path / "key.pem"),
                    "-in", str(tmp_path / "ciphertext"))
    assert plaintext == MESSAGE


def test_opensc_decrypts_with_the_rsa_envelope_key(
        pcscd: Pcscd, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        tmp_path: Path, openssl: str) -> None:
    """OpenSC's PIV driver as an independent client of the card's 9D operation: it lists
    the key management certificate as id 03 and decrypts PKCS#1 v1.5 with it."""
    image = card_images["rsa2048"]
    sim_slots([(0, write_card(image, tmp_path))])
    pkcs11 = ("pkcs11-tool", "--module", OPENSC_MODULE)
    run(*pkcs11, "--read-object", "--type", "cert", "--id", "03",
        "--output-file", str(tmp_path / "envelope.der"))
    assert (tmp_path / "envelope.der").read_bytes() == image.envelope_certificate
    run(openssl, "pkeyutl", "-encrypt", "-certin", "-keyform", "DER",
        "-inkey", str(tmp_path / "envelope.der"),
        "-in", str(write_bytes(tmp_path / "message", MESSAGE)), "-out", str(tmp_path / "ct"))
    plaintext = run(*pkcs11, "--login", "--pin", PIN, "--id", "03", "--decrypt",
                    "--mechanism", "RSA-PKCS", "--input-file", str(tmp_path / "ct"))
    assert MESSAGE in plaintext


# ---- PIN rules, as for Sign ----

def test_decrypt_follows_the_pin_guard_of_sign(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        tmp_path: Path) -> None:
    path, _ = insert(sim_slots, daemon, card_images["sm2"], tmp_path)
    stub = daemon.stub()
    ciphertext = encrypt_to_certificate(stub.GetEnvelopeCertificate(pb.CardSelector()).der,
                                        MESSAGE)
    for tries_left in (2, 1):
        detail = expect_error(lambda: stub.Decrypt(pb.DecryptRequest(
            ciphertext=ciphertext, pin="11111111")), "PIN_INCORRECT")
        assert detail.tries_left == tries_left
    # One try left: the PIN is not sent unless the caller allows the last attempt.
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, pin=PIN)),
                 "PIN_LAST_ATTEMPT_GUARD")
    assert read_image(path).pin.tries_left == 1
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, pin="1234")),
                 "PIN_FORMAT")
    assert read_image(path).pin.tries_left == 1
    answer = stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, pin=PIN,
                                            allow_last_attempt=True))
    assert answer.plaintext == MESSAGE
    assert read_image(path).pin.tries_left == 3
    # A wrong PIN ends the session, as it does for Sign.
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext,
                                                        pin="11111111")), "PIN_INCORRECT")
    assert not stub.GetPinStatus(pb.CardSelector()).session_active
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)),
                 "NOT_AUTHENTICATED")


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_a_ciphertext_that_does_not_decrypt_costs_nothing(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        test_ca: TestCA, tmp_path: Path, algorithm: str) -> None:
    path, slots = insert(sim_slots, daemon, card_images[algorithm], tmp_path)
    stub = daemon.stub()
    other = provision_test_card(test_ca, algorithm)
    assert other.envelope_certificate is not None
    foreign = encrypt_to_certificate(other.envelope_certificate, MESSAGE)
    if algorithm == "rsa2048":
        # Below this card's modulus, so that the card is asked and the padding check fails.
        n = x509.load_der_x509_certificate(card_images[algorithm].envelope_certificate or b""
                                           ).public_key().public_numbers().n  # type: ignore[union-attr]
        foreign = (int.from_bytes(foreign, "big") % n).to_bytes(256, "big")
    not_a_ciphertext = b"\x04" + bytes(100)

    # Without a session, with the PIN in the request: refused, no try spent, and the session
    # this request's PIN opened is closed again (as it was: none).
    detail = expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=foreign, pin=PIN)),
                          "INVALID_ARGUMENT")
    assert "does not decrypt with this card's envelope key" in detail.message_en
    assert "无法用本卡的加密密钥解密" in detail.message_zh
    status = stub.GetPinStatus(pb.CardSelector())
    assert not status.session_active and status.pin_tries_left == 3
    # A shape that cannot be this key's never reaches the card (no APDU at all).
    before = slots.slot(0).status().apdus
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=not_a_ciphertext,
                                                        pin="11111111")), "INVALID_ARGUMENT")
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=b"")), "INVALID_ARGUMENT")
    assert slots.slot(0).status().apdus == before
    # With a session open, it stays open.
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=foreign)), "INVALID_ARGUMENT")
    assert stub.GetPinStatus(pb.CardSelector()).session_active
    assert read_image(path).pin.tries_left == 3


def test_refuse_stored_pin_is_honoured_by_decrypt_and_sign(
        tmp_path: Path, test_ca: TestCA, pcscd: Pcscd, sim_slots: Callable[..., SimSlots],
        card_images: dict[str, CardImage]) -> None:
    sim_slots([(0, write_card(card_images["rsa2048"], tmp_path))])
    env = {"PYTHON_KEYRING_BACKEND": "tests.support.memory_keyring.MemoryKeyring"}
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                        "--allow-unattended", env=env) as daemon:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        ciphertext = encrypt_to_certificate(
            stub.GetEnvelopeCertificate(pb.CardSelector()).der, MESSAGE)
        stub.EnableUnattended(pb.EnableUnattendedRequest(pin=PIN))
        stub.Logout(pb.CardSelector())
        expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext,
                                                            refuse_stored_pin=True)),
                     "NOT_AUTHENTICATED")
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x", refuse_stored_pin=True)),
                     "NOT_AUTHENTICATED")
        assert not stub.GetPinStatus(pb.CardSelector()).session_active
        # Without the flag the stored PIN opens the session, for Decrypt as for Sign.
        assert stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext)).plaintext == MESSAGE
        stub.Logout(pb.CardSelector())
        assert stub.Sign(pb.SignRequest(data=b"unattended")).signature
        # An open session is used even with the flag: only the stored PIN is refused.
        assert stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext,
                                              refuse_stored_pin=True)).plaintext == MESSAGE
    assert PIN not in daemon.log()


@pytest.mark.parametrize("algorithm", ["sm2", "p256"])
def test_a_card_without_an_envelope_key_is_unsupported_for_decryption(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA, tmp_path: Path,
        card_images: dict[str, CardImage], algorithm: str) -> None:
    image = (provision_test_card(test_ca, "sm2", envelope_key=False) if algorithm == "sm2"
             else card_images["p256"])
    assert image.envelope_certificate is None
    insert(sim_slots, daemon, image, tmp_path)
    stub = daemon.stub()
    detail = expect_error(lambda: stub.GetEnvelopeCertificate(pb.CardSelector()),
                          "UNSUPPORTED_CARD")
    assert "envelope" in detail.message_en and "加密证书" in detail.message_zh
    sm2_ciphertext = encrypt_to_certificate(card_images["sm2"].envelope_certificate or b"",
                                            MESSAGE)
    expect_error(lambda: stub.Decrypt(pb.DecryptRequest(ciphertext=sm2_ciphertext, pin=PIN)),
                 "UNSUPPORTED_CARD")
    assert not stub.GetPinStatus(pb.CardSelector()).session_active  # no PIN was sent
    # Signing is not affected.
    assert stub.Sign(pb.SignRequest(data=b"signs", pin=PIN)).signature


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_the_apdu_trace_never_shows_a_decryption_result(
        tmp_path: Path, test_ca: TestCA, pcscd: Pcscd, sim_slots: Callable[..., SimSlots],
        card_images: dict[str, CardImage], algorithm: str) -> None:
    sim_slots([(0, write_card(card_images[algorithm], tmp_path))])
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                        "--apdu-trace", "--log-level", "DEBUG") as daemon:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        ciphertext = encrypt_to_certificate(
            stub.GetEnvelopeCertificate(pb.CardSelector()).der, MESSAGE)
        assert stub.Decrypt(pb.DecryptRequest(ciphertext=ciphertext, pin=PIN)).plaintext \
            == MESSAGE
    log = daemon.log()
    # The trace was on and shows the request; the reply (RSA-2048: 260 bytes, so a GET
    # RESPONSE continuation too) carries the padded plaintext, or for SM2 d·C1, which opens
    # this ciphertext: neither is written.
    redacted = {"rsa2048": "<redacted 256 bytes>", "sm2": "<redacted 69 bytes>"}[algorithm]
    assert re.search(r"SEND [01]087(07|e8)9d", log) and redacted in log
    assert MESSAGE.hex() not in log and MESSAGE[-8:].hex() not in log
    if algorithm == "sm2":
        image = card_images["sm2"]
        d = int.from_bytes(image.envelope_private_key or b"", "big")
        c1 = sm2.decode_point(b"\x04" + c1c3c2_from_openssl_asn1(ciphertext)[1:65])
        shared = sm2.scalar_mult(d, c1)
        assert shared is not None
        assert format(shared[0], "064x") not in log


# ---- the command line ----

def test_eport_exports_the_envelope_certificate_and_decrypts(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], card_images: dict[str, CardImage],
        test_ca: TestCA, tmp_path: Path, openssl: str) -> None:
    insert(sim_slots, daemon, card_images["sm2"], tmp_path)

    def eport(*args: str | Path, stdin: str | None = None) -> Result:
        return run_eport(*map(str, args), socket_path=daemon.socket, stdin=stdin)

    exported = ok_json(eport("cert", "export", "--envelope", "-o", tmp_path / "env.pem",
                             "--json"), "cert export")
    assert exported["envelope"] is True
    assert exported["der_base64"] == base64.b64encode(
        card_images["sm2"].envelope_certificate or b"").decode()
    run(openssl, "pkeyutl", "-encrypt", "-certin", "-inkey", str(tmp_path / "env.pem"),
        "-in", str(write_bytes(tmp_path / "message", MESSAGE)), "-out", str(tmp_path / "ct"))

    # Not logged in, no terminal and no --pin-stdin: as for `eport sign`, a usage error.
    error = error_json(eport("decrypt", tmp_path / "ct", "--json"), "USAGE", 2)
    assert "--pin-stdin" in error["remedy"]["en"]
    decrypted = eport("decrypt", tmp_path / "ct", "-o", tmp_path / "out", "--pin-stdin",
                      stdin=PIN + "\n")
    assert decrypted.returncode == 0, describe(decrypted)
    assert (tmp_path / "out").read_bytes() == MESSAGE
    # Logged in now; the ciphertext as base64 text, the plaintext on stdout.
    base64_file = write_bytes(tmp_path / "ct.b64",
                              base64.b64encode((tmp_path / "ct").read_bytes()) + b"\n")
    to_stdout = eport("decrypt", base64_file)
    assert to_stdout.returncode == 0 and to_stdout.stdout == MESSAGE.decode()
    as_json = ok_json(eport("decrypt", tmp_path / "ct", "--json"), "decrypt")
    assert as_json["form"] == "SM2_ASN1"
    assert base64.b64decode(as_json["plaintext_base64"]) == MESSAGE

    other = provision_test_card(test_ca, "sm2")
    foreign = write_bytes(tmp_path / "foreign",
                          encrypt_to_certificate(other.envelope_certificate or b"", MESSAGE))
    error = error_json(eport("decrypt", foreign, "--json"), "INVALID_ARGUMENT", 12)
    assert "does not decrypt with this card's envelope key" in error["message"]["en"]
    human_error(eport("decrypt", foreign), "INVALID_ARGUMENT", 12)
    assert_no_secret(decrypted, to_stdout)


def test_eport_says_a_card_has_no_envelope_key(
        daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
        card_images: dict[str, CardImage], tmp_path: Path) -> None:
    path, _ = insert(sim_slots, daemon, provision_test_card(test_ca, "rsa2048",
                                                            envelope_key=False), tmp_path)
    ciphertext = write_bytes(tmp_path / "ct", encrypt_to_certificate(
        card_images["rsa2048"].envelope_certificate or b"", MESSAGE))
    for args in (("cert", "export", "--envelope"), ("cert", "show", "--envelope"),
                 ("decrypt", str(ciphertext), "--pin-stdin")):
        result = run_eport(*args, "--json", socket_path=daemon.socket, stdin=PIN + "\n")
        error = error_json(result, "UNSUPPORTED_CARD", 6)
        assert "envelope" in error["message"]["en"] and "加密证书" in error["message"]["zh"]
    # The PIN was never sent: no session, all tries left.
    assert not daemon.stub().GetPinStatus(pb.CardSelector()).session_active
    assert read_image(path).pin.tries_left == 3


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
