"""The `eport` CLI through eportd's PKCS#11 backend on OpenSC's module, on the simulated card:
a PIV card behind the real pcscd, seen as a PKCS#11 token. Card info, PIN status, the last-try
guard (OpenSC's CKF_USER_PIN_FINAL_TRY), signatures and decryption that OpenSSL checks, and
pcscd restarting under OpenSC and eportd, after which the next call works.

The card runs in a process of its own: OpenSC, loaded by eportd, talks to pcscd, which talks to
the card; nothing here shares an interpreter with OpenSC. Run under `flock /tmp/eport-pcsc.lock`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage, read_image
from tests.support.cards import provision_test_card
from tests.support.daemon_stack import Daemon, running_daemon
from tests.support.eport_cli import (
    Result,
    assert_no_secret,
    describe,
    error_json,
    ok_json,
    pin_lines,
    run_eport,
)
from tests.support.pcsc_stack import OPENSC_MODULE, Pcscd, SimProcessSlot, wait_for_presence
from tests.support.softhsm import RSA_LABEL, SOFTHSM_MODULE, USER_PIN, build_softhsm, run
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pcsc

PIN = "88888888"
WRONG_PIN = "11112222"
READER_PREFIX = "pkcs11:opensc-pkcs11.so:"
MESSAGE = "<CEBMessage>signed through OpenSC's PKCS#11 module</CEBMessage>"


def eport(daemon: Daemon, *args: str | Path, stdin: str | None = None) -> Result:
    return run_eport(*map(str, args), socket_path=daemon.socket, stdin=stdin)


def wait_for_token(daemon: Daemon, card_id: str, timeout: float = 30) -> str:
    """The OpenSC token's reader once eportd lists it with our card in it."""
    def token_reader() -> str | None:
        listed = eport(daemon, "readers", "--json")
        if listed.returncode != 0:
            return None
        for reader in json.loads(listed.stdout)["result"]["readers"]:
            if reader["name"].startswith(READER_PREFIX) and reader.get("card_id") == card_id:
                return str(reader["name"])
        return None

    found: str = wait_until(token_reader, timeout=timeout,
                            what=f"eportd lists the OpenSC token with card {card_id}")
    return found


@pytest.fixture
def card_process(pcscd: Pcscd, tmp_path: Path) -> Iterator[SimProcessSlot]:
    cards = SimProcessSlot(tmp_path)
    yield cards
    cards.pull()


@pytest.fixture
def card(card_process: SimProcessSlot, test_ca: TestCA) -> CardImage:
    """An RSA-2048 card with an envelope key."""
    return read_image(card_process.insert(provision_test_card(test_ca, "rsa2048")))


@pytest.fixture
def daemon(card: CardImage, test_ca: TestCA, tmp_path: Path) -> Iterator[Daemon]:
    if not Path(OPENSC_MODULE).exists():
        pytest.fail("these tests need OpenSC's PKCS#11 module (apt-get install opensc)")
    with running_daemon(tmp_path / "eportd", "--pkcs11-module", OPENSC_MODULE,
                        "--trust-anchor", str(test_ca.trust_bundle)) as running:
        yield running


def logged_in(daemon: Daemon, reader: str) -> Result:
    """`eport pin verify` with the test card's PIN on `reader`, which must succeed."""
    verified = eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin",
                     stdin=pin_lines(PIN))
    assert verified.returncode == 0, describe(verified)
    return verified


def public_key(image: CardImage, tmp_path: Path, envelope: bool = False) -> Path:
    der = tmp_path / ("envelope.der" if envelope else "signing.der")
    der.write_bytes((image.envelope_certificate if envelope else image.certificate) or b"")
    pem = der.with_suffix(".pub.pem")
    run("openssl", "x509", "-inform", "DER", "-in", str(der), "-pubkey", "-noout",
        "-out", str(pem))
    return pem


def sign_and_check(daemon: Daemon, reader: str, image: CardImage, tmp_path: Path,
                   name: str) -> Result:
    message = tmp_path / f"{name}.xml"
    message.write_text(MESSAGE, "utf-8")
    signature = tmp_path / f"{name}.sig"
    signed = eport(daemon, "sign", message, "--reader", reader, "--algorithm", "sha256-rsa",
                   "--format", "raw", "-o", signature)
    assert signed.returncode == 0, describe(signed)
    checked = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public_key(image, tmp_path)),
         "-signature", str(signature), str(message)],
        capture_output=True, text=True, check=False)
    assert "Verified OK" in checked.stdout, checked.stdout + checked.stderr
    return signed


def test_card_info_pin_sign_and_decrypt(daemon: Daemon, card: CardImage,
                                        tmp_path: Path) -> None:
    reader = wait_for_token(daemon, card.profile.card_id)
    info = ok_json(eport(daemon, "card", "info", "--reader", reader, "--json"), "card info")
    # The same card id as through PC/SC PIV (the certificate's subject, not OpenSC's serial).
    assert info["card"]["card_id"] == card.profile.card_id, info
    status = ok_json(eport(daemon, "pin", "status", "--reader", reader, "--json"),
                     "pin status")
    assert status["pin_blocked"] is False, status
    verified = logged_in(daemon, reader)
    signed = sign_and_check(daemon, reader, card, tmp_path, "first")

    # The envelope key: what OpenSSL encrypted to the envelope certificate, eport decrypts.
    plain = tmp_path / "document-key"
    plain.write_bytes(b"the document key 0123456789abcdef")
    run("openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey",
        str(public_key(card, tmp_path, envelope=True)), "-pkeyopt", "rsa_padding_mode:pkcs1",
        "-in", str(plain), "-out", str(tmp_path / "ciphertext"))
    decrypted = eport(daemon, "decrypt", tmp_path / "ciphertext", "--reader", reader,
                      "-o", tmp_path / "decrypted")
    assert decrypted.returncode == 0, describe(decrypted)
    assert (tmp_path / "decrypted").read_bytes() == plain.read_bytes()
    assert_no_secret(verified, signed, decrypted)


def test_the_last_try_guard_on_opensc_flags(daemon: Daemon, card: CardImage) -> None:
    reader = wait_for_token(daemon, card.profile.card_id)
    wrong = [eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin", "--json",
                   stdin=pin_lines(WRONG_PIN)) for _ in range(2)]
    for result in wrong:
        error_json(result, "PIN_INCORRECT", 7)
    # OpenSC now sets CKF_USER_PIN_FINAL_TRY: one try left, so nothing is sent unasked.
    status = ok_json(eport(daemon, "pin", "status", "--reader", reader, "--json"),
                     "pin status")
    assert status["pin_tries_left"] == 1, status
    declined = eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin", "--json",
                     stdin=pin_lines(PIN))
    error_json(declined, "PIN_LAST_ATTEMPT_GUARD", 9)
    still = ok_json(eport(daemon, "pin", "status", "--reader", reader, "--json"),
                    "pin status")
    assert still["pin_tries_left"] == 1, still
    # Asked for explicitly, the right PIN goes through and the counter is back to full.
    allowed = eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin",
                    "--allow-last-attempt", stdin=pin_lines(PIN))
    assert allowed.returncode == 0, describe(allowed)
    assert_no_secret(*wrong, declined, allowed)


def test_pcscd_restarts_under_opensc_and_the_next_call_works(
        daemon: Daemon, card: CardImage, card_process: SimProcessSlot, pcscd: Pcscd,
        tmp_path: Path) -> None:
    if not pcscd.restartable:
        pytest.skip("pcscd was started outside the tests; not ours to restart")
    reader = wait_for_token(daemon, card.profile.card_id)
    logged_in(daemon, reader)
    sign_and_check(daemon, reader, card, tmp_path, "before")

    pcscd.restart()
    wait_for_presence(card_process.reader, True, timeout=20)  # the card reconnected to vpcd
    again = wait_for_token(daemon, card.profile.card_id, timeout=40)
    # The card was powered down with pcscd: its verified state is gone, and so is the session.
    unverified = eport(daemon, "sign", tmp_path / "before.xml", "--reader", again,
                       "--algorithm", "sha256-rsa", "--json")
    error_json(unverified, "USAGE", 2)  # no session, no terminal, no --pin-stdin
    logged_in(daemon, again)
    sign_and_check(daemon, again, card, tmp_path, "after")


def test_card_pulled_and_swapped_under_opensc(card: CardImage, card_process: SimProcessSlot,
                                              test_ca: TestCA, tmp_path: Path) -> None:
    """The case that once froze eportd: OpenSC can wait forever inside a module call when the
    card goes. The module now runs in a host process (cardlib/pkcs11/hosted.py) that eportd
    restarts when a call or its presence reports stop for call_timeout seconds."""
    config = tmp_path / "eportd.toml"
    config.write_text(f'[[backend]]\nkind = "pkcs11"\nmodule = "{OPENSC_MODULE}"\n'
                      "call_timeout = 5\n", "utf-8")
    with running_daemon(tmp_path / "eportd", "--config", str(config),
                        "--trust-anchor", str(test_ca.trust_bundle)) as daemon:
        reader = wait_for_token(daemon, card.profile.card_id)
        logged_in(daemon, reader)
        sign_and_check(daemon, reader, card, tmp_path, "first-card")

        card_process.pull()

        def first_card_gone() -> bool:
            listed = eport(daemon, "readers", "--json")
            return listed.returncode == 0 and all(
                r.get("card_id") != card.profile.card_id
                for r in json.loads(listed.stdout)["result"]["readers"])
        wait_until(first_card_gone, timeout=60, what="eportd sees the first card gone")
        gone = eport(daemon, "card", "info", "--reader", reader, "--json")
        assert gone.returncode in (4, 5), describe(gone)  # module restarting, or no card

        other = read_image(card_process.insert(provision_test_card(test_ca, "rsa2048")))
        assert other.profile.card_id != card.profile.card_id
        swapped = wait_for_token(daemon, other.profile.card_id, timeout=60)
        info = ok_json(eport(daemon, "card", "info", "--reader", swapped, "--json"),
                       "card info")
        assert info["card"]["card_id"] == other.profile.card_id, info
        # Another card is not the session's card: nothing is signed without its PIN.
        unverified = eport(daemon, "sign", tmp_path / "first-card.xml", "--reader", swapped,
                           "--algorithm", "sha256-rsa", "--json")
        error_json(unverified, "USAGE", 2)  # no session, no terminal, no --pin-stdin
        verified = logged_in(daemon, swapped)
        sign_and_check(daemon, swapped, other, tmp_path, "second-card")
        assert_no_secret(verified)


def test_two_pkcs11_modules_at_once(card: CardImage, test_ca: TestCA, tmp_path: Path) -> None:
    """OpenSC on the simulated card and SoftHSM2 beside it: each module in its own host, each
    backend named by its module, each token signing what OpenSSL verifies; doctor speaks of
    both modules."""
    hsm = build_softhsm(tmp_path / "softhsm")
    # SoftHSM2's certificate is its own issuer: trusted beside the simulated card's CA.
    hsm_anchor = tmp_path / "softhsm-signing.pem"
    run("openssl", "x509", "-inform", "DER", "-in", str(hsm.keys["signing"].certificate_der),
        "-out", str(hsm_anchor))
    with running_daemon(tmp_path / "eportd", "--pkcs11-module", OPENSC_MODULE,
                        "--pkcs11-module", SOFTHSM_MODULE,
                        "--trust-anchor", str(test_ca.trust_bundle),
                        "--trust-anchor", str(hsm_anchor),
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as daemon:
        opensc_reader = wait_for_token(daemon, card.profile.card_id)

        def softhsm_reader() -> dict[str, Any] | None:
            listed = eport(daemon, "readers", "--json")
            readers = json.loads(listed.stdout)["result"]["readers"] if \
                listed.returncode == 0 else []
            return next((r for r in readers if r["name"].endswith(RSA_LABEL)
                         and r.get("card_id")), None)
        hsm_reader: dict[str, Any] = wait_until(softhsm_reader, timeout=30,
                                                what="eportd lists the SoftHSM2 RSA token")
        listed = json.loads(eport(daemon, "readers", "--json").stdout)["result"]["readers"]
        backends = {r["name"]: r["backend"] for r in listed}
        assert backends[opensc_reader] == "pkcs11:opensc-pkcs11.so", backends
        assert backends[hsm_reader["name"]] == "pkcs11:libsofthsm2.so", backends

        verified = logged_in(daemon, opensc_reader)
        sign_and_check(daemon, opensc_reader, card, tmp_path, "opensc")
        message = tmp_path / "softhsm.xml"
        message.write_text(MESSAGE, "utf-8")
        signature = tmp_path / "softhsm.sig"
        signed = eport(daemon, "sign", message, "--reader", hsm_reader["name"], "--algorithm",
                       "sha256-rsa", "--format", "raw", "-o", signature, "--pin-stdin",
                       stdin=pin_lines(USER_PIN))
        assert signed.returncode == 0, describe(signed)
        checked = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(hsm.keys["signing"].public_pem),
             "-signature", str(signature), str(message)],
            capture_output=True, text=True, check=False)
        assert "Verified OK" in checked.stdout, checked.stdout + checked.stderr

        doctor = eport(daemon, "doctor", "--json")
        findings = json.loads(doctor.stdout)["result"]["findings"]
        modules = [f for f in findings if f["code"] == "EP-H01"]
        assert len(modules) == 2 and all(f["status"] == "OK" for f in modules), modules
        assert_no_secret(verified, signed)
