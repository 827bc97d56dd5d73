"""The remote E-port client backend against a real eport-gateway on top of another eportd with
simulated cards (pcscd, vpcd): identity, PIN tries read from the client's messages, signatures
and decryption checked with openssl, the gateway killed and restarted, cards pulled and swapped.

Run under the machine's pcscd lock: flock /tmp/eport-pcsc.lock .venv/bin/python -m pytest
tests/pcsc/test_remote_backend.py
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from eport.cardlib.errors import InvalidPinError, SecurityStatusError
from eport.cardlib.remote.backend import RemoteClientBackend
from eport.cardlib.remote.channel import RemoteConfigError
from eport.cardlib.remote.errors import LastTryRefusedError
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.token import CertificateRole
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import eportd_pb2 as pb
from tests.pcsc.test_gateway_methods import openssl_encrypt, public_key_pem, sm2_e, write
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card
from tests.support.daemon_stack import running_daemon, wait_for_card
from tests.support.eport_cli import describe, ok_json, run_eport
from tests.support.gateway_stack import Gateway, start_gateway
from tests.support.pcsc_stack import Pcscd, reader_for_slot
from tests.support.presence_recorder import PresenceRecorder
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pcsc

PIN, WRONG_PIN = bytearray(b"88888888"), bytearray(b"11111111")
READER0 = reader_for_slot(0)


@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CardStack]:
    with running_card_stack(tmp_path_factory.mktemp("remote"), test_ca.trust_bundle) as stack:
        yield stack


@pytest.fixture(scope="module")
def cards(test_ca: TestCA) -> dict[str, CardImage]:
    return {alg: provision_test_card(test_ca, alg) for alg in ("rsa2048", "sm2")}


@pytest.fixture
def gateway(stack: CardStack) -> Iterator[Gateway]:
    started = start_gateway(stack.socket, "--no-tls")
    yield started
    started.stop()
    stack.remove(0)


@pytest.fixture
def backend(gateway: Gateway) -> Iterator[tuple[RemoteClientBackend, PresenceRecorder]]:
    remote = RemoteClientBackend(gateway.url, poll_interval=0.2)
    recorder = PresenceRecorder()
    monitor = remote.monitor(recorder)
    monitor.start()
    yield remote, recorder
    monitor.stop()
    remote.close()


def present_id(recorder: PresenceRecorder, reader: str) -> str:
    presence = recorder.readers.get(reader)
    return presence.atr.decode() if presence is not None and presence.present else ""


def openssl_verifies_digest(image: CardImage, digest: bytes, signature: bytes, workdir: Path,
                            *, sm2: bool) -> bool:
    """openssl pkeyutl -verify on the digest: SHA-1 PKCS#1 for RSA, raw e for SM2."""
    pub = public_key_pem(image.certificate, workdir)
    args = ["-pkeyopt", "digest:sha1"] if not sm2 else []
    result = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), *args,
         "-in", str(write(workdir, digest, "digest")),
         "-sigfile", str(write(workdir, signature, "sig"))],
        capture_output=True, text=True, timeout=60, check=False)
    return result.returncode == 0 and "Signature Verified Successfully" in result.stdout


def test_plain_ws_to_another_host_is_refused_unless_allowed() -> None:
    with pytest.raises(RemoteConfigError) as refused:
        RemoteClientBackend("ws://192.0.2.7:61232")
    assert "wss://" in str(refused.value) and "明文" in str(refused.value)
    assert RemoteClientBackend("ws://192.0.2.7:61232", allow_insecure=True).reader_name \
        == "remote:192.0.2.7:61232"


@pytest.mark.parametrize("algorithm", ["rsa2048", "sm2"])
def test_identity_pin_sign_decrypt(stack: CardStack, cards: dict[str, CardImage],
                                   backend: tuple[RemoteClientBackend, PresenceRecorder],
                                   tmp_path: Path, algorithm: str) -> None:
    remote, recorder = backend
    image = cards[algorithm]
    stack.put(image, tmp_path)
    recorder.wait_for(lambda: present_id(recorder, remote.reader_name) == image.profile.card_id,
                      "the card id through the remote client")
    connection = remote.connect(remote.reader_name)
    token = connection.token
    assert token.read_card_id() == image.profile.card_id
    assert token.read_certificate() == image.certificate
    assert token.read_certificate(CertificateRole.ENVELOPE) == image.envelope_certificate
    profile = token.read_profile()
    assert profile is not None and profile.cert_number == image.profile.cert_number
    assert token.credential_status().tries_left == -1  # nothing said yet: unknown

    # Wrong PINs count down, read from the client's messages; at 1 the guard data says so.
    for expected in (2, 1):
        with pytest.raises(InvalidPinError) as wrong:
            token.verify_pin(WRONG_PIN)
        assert wrong.value.tries_left == expected
        assert "11111111" not in str(wrong.value)
        assert token.credential_status().tries_left == expected
    assert token.credential_status().on_last_try
    assert stack.pin_tries_left() == 1  # the card itself agrees
    # eport-gateway refuses to send a PIN on the last try: confirm it beside the card.
    with pytest.raises(LastTryRefusedError):
        token.verify_pin(PIN)
    assert token.credential_status().tries_left == 1
    stub = stack.running().stub()
    stub.VerifyPin(pb.VerifyPinRequest(card=pb.CardSelector(reader=READER0), pin="88888888",
                                       allow_last_attempt=True))
    stub.Logout(pb.CardSelector(reader=READER0))

    message = b"remote backend test"
    mechanism = SignMechanism.SM2 if algorithm == "sm2" else SignMechanism.RSA_PKCS1_SHA1
    digest = sm2_e(image, message) if algorithm == "sm2" else hashlib.sha1(message).digest()
    with pytest.raises(SecurityStatusError):
        token.sign_digest(mechanism, digest)
    token.verify_pin(PIN)
    assert token.credential_status().verified
    signature = token.sign_digest(mechanism, digest)
    if algorithm == "sm2":
        decode_dss_signature(signature)  # DER (r, s), as the interface promises
    assert openssl_verifies_digest(image, digest, signature, tmp_path, sm2=algorithm == "sm2")

    assert image.envelope_certificate is not None
    secret = "报关单 remote".encode()
    ciphertext = openssl_encrypt(image.envelope_certificate, secret, tmp_path)
    assert token.decrypt(ciphertext) == secret
    with pytest.raises(NotImplementedError):
        token.private_step(CertificateRole.ENVELOPE, ciphertext, sm2=algorithm == "sm2")
    token.logout()
    assert not token.credential_status().verified
    with pytest.raises(SecurityStatusError):
        token.sign_digest(mechanism, digest)


def test_restart_pull_and_swap(stack: CardStack, cards: dict[str, CardImage], gateway: Gateway,
                               backend: tuple[RemoteClientBackend, PresenceRecorder],
                               tmp_path: Path) -> None:
    remote, recorder = backend
    first, second = cards["rsa2048"], cards["sm2"]
    stack.put(first, tmp_path)
    reader = remote.reader_name
    recorder.wait_for(lambda: present_id(recorder, reader) == first.profile.card_id, "card 1")
    events_before = recorder.readers[reader].card_events

    # The client restarts (same port): the backend reports it down, reconnects, calls work.
    port = gateway.port
    gateway.stop()
    recorder.wait_for(lambda: recorder.up is False, "the remote client seen down")
    restarted = start_gateway(stack.socket, "--no-tls", "--port", str(port))
    try:
        recorder.wait_for(lambda: recorder.up is True
                          and present_id(recorder, reader) == first.profile.card_id,
                          "the remote client seen back", timeout=15)
        assert remote.connect(reader).token.read_certificate() == first.certificate

        # Pulled: absent. Swapped: the new card id, as a new insertion.
        stack.pull(0)
        recorder.wait_for(lambda: reader in recorder.readers
                          and not recorder.readers[reader].present, "the card seen gone")
        stack.put(second, tmp_path)
        recorder.wait_for(lambda: present_id(recorder, reader) == second.profile.card_id,
                          "card 2")
        assert recorder.readers[reader].card_events > events_before
        assert remote.connect(reader).token.read_card_id() == second.profile.card_id
    finally:
        restarted.stop()


def test_acceptance_through_a_second_eportd_and_the_cli(
        stack: CardStack, cards: dict[str, CardImage], gateway: Gateway, tmp_path: Path,
        test_ca: TestCA) -> None:
    """`eportd --remote-client URL` on its own socket, used with the `eport` CLI."""
    image = cards["rsa2048"]
    stack.put(image, tmp_path)
    reader = f"remote:127.0.0.1:{gateway.port}"
    with running_daemon(tmp_path / "second", "--trust-anchor", str(test_ca.trust_bundle),
                        "--remote-client", gateway.url) as second:
        wait_for_card(second.stub(), reader, timeout=15)
        info = ok_json(run_eport("card", "info", "--reader", reader, "--json",
                                 socket_path=second.socket), "card info")
        assert image.profile.card_id in json.dumps(info, ensure_ascii=False)
        status = run_eport("pin", "status", "--reader", reader, "--json",
                           socket_path=second.socket)
        assert status.returncode == 0, describe(status)
        verified = run_eport("pin", "verify", "--reader", reader, "--pin-stdin",
                             socket_path=second.socket, stdin="88888888\n")
        assert verified.returncode == 0, describe(verified)
        data = write(tmp_path, b"declaration through the remote client", "data")
        # The E-port client signs RSA with SHA-1 only (docs/backends.md).
        signature_file = tmp_path / "signature.bin"
        signed = run_eport("sign", str(data), "--reader", reader, "--algorithm", "sha1-rsa",
                           "--format", "raw", "-o", str(signature_file),
                           socket_path=second.socket)
        assert signed.returncode == 0, describe(signed)
        signature = signature_file.read_bytes()
        digest = hashlib.sha1(data.read_bytes()).digest()
        assert openssl_verifies_digest(image, digest, signature, tmp_path, sm2=False)
        # The card's own algorithm (the default) is what the remote client can make, as
        # card info says; SHA-256 is refused with a reason, before the PIN or the card.
        assert info["card"]["sign_algorithms"] == ["SHA1_WITH_RSA"], info
        by_default = run_eport("sign", str(data), "--reader", reader, "--format", "raw",
                               "-o", str(tmp_path / "default.bin"), socket_path=second.socket)
        assert by_default.returncode == 0, describe(by_default)
        assert openssl_verifies_digest(image, digest, (tmp_path / "default.bin").read_bytes(),
                                       tmp_path, sm2=False)
        refused = run_eport("sign", str(data), "--reader", reader, "--algorithm", "sha256-rsa",
                            "--json", socket_path=second.socket)
        assert refused.returncode != 0 and "not offered by this token" in refused.stdout, \
            describe(refused)

        # The remote client restarts on its port: the next call works.
        port = gateway.port
        gateway.stop()
        # Once eportd has noticed (it polls the card id every second), the error names the
        # remote client, not pcscd (which is fine).
        def refused() -> subprocess.CompletedProcess[str] | None:
            info = run_eport("card", "info", "--reader", reader, "--json",
                             socket_path=second.socket)
            return info if info.returncode != 0 else None

        down = wait_until(refused, timeout=15, interval=0.2,
                          what="eportd reports the client gone")
        assert down.returncode != 0 and "pcscd" not in down.stdout, describe(down)
        assert "The remote E-port client cannot be reached" in down.stdout, describe(down)
        restarted = start_gateway(stack.socket, "--no-tls", "--port", str(port))
        try:
            wait_for_card(second.stub(), reader, timeout=20)
            again = run_eport("card", "info", "--reader", reader, "--json",
                              socket_path=second.socket)
            assert again.returncode == 0, describe(again)
        finally:
            restarted.stop()
