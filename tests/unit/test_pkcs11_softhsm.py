"""The PKCS#11 backend against SoftHSM2, a real PKCS#11 module: tokens as readers,
identity, PIN status and verify, signatures and decryption checked with OpenSSL, the token
removed and the module finalised under the backend, and the next call working."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import PyKCS11
import pytest

from eport.cardlib.errors import (
    CardError,
    InvalidPinError,
    SecurityStatusError,
    TokenUnavailable,
    Unavailable,
)
from eport.cardlib.pkcs11.backend import Pkcs11Backend
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.token import CertificateRole, Credential
from tests.support.presence_recorder import PresenceRecorder
from tests.support.softhsm import (
    P256_LABEL,
    RSA_LABEL,
    SO_PIN,
    SOFTHSM_MODULE,
    USER_PIN,
    SoftHsm,
    build_softhsm,
    run,
)

WRONG_PIN = "11112222"


@pytest.fixture(scope="session")
def softhsm_template(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return build_softhsm(tmp_path_factory.mktemp("softhsm-template"))


@pytest.fixture
def softhsm(softhsm_template: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> SoftHsm:
    hsm = softhsm_template.copy_to(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(hsm.config))  # read at C_Initialize
    return hsm


@pytest.fixture
def backend(softhsm: SoftHsm) -> Iterator[Pkcs11Backend]:
    backend = Pkcs11Backend(SOFTHSM_MODULE, poll_interval=0.05)
    yield backend
    backend.close()


def reader(backend: Pkcs11Backend, label: str) -> str:
    names = [n for n in backend.scan()[0] if n.endswith(" " + label)]
    assert len(names) == 1, names
    return names[0]


def serial_from_softhsm_util(hsm: SoftHsm, label: str) -> str:
    out = run("softhsm2-util", "--show-slots", env=hsm.env())
    for block in out.split("Slot ")[1:]:
        if f"Label:            {label}" in block:
            return block.split("Serial number:")[1].split()[0]
    raise AssertionError(f"no token {label} in:\n{out}")


def openssl_verifies(public_pem: Path, digest_name: str, message: bytes, signature: bytes,
                     tmp_path: Path) -> str:
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signature)
    return run("openssl", "dgst", f"-{digest_name}", "-verify", str(public_pem),
               "-signature", str(tmp_path / "sig"), str(tmp_path / "msg"))


def test_tokens_are_readers_named_after_module_slot_and_label(softhsm: SoftHsm) -> None:
    first = Pkcs11Backend(SOFTHSM_MODULE)
    names = sorted(first.scan()[0])
    first.close()
    again = Pkcs11Backend(SOFTHSM_MODULE)  # a restart: the same names
    try:
        assert sorted(again.scan()[0]) == names
        assert len(names) == 2  # SoftHSM2's spare uninitialised slot is not a reader
        for name in names:
            assert name.startswith("pkcs11:libsofthsm2.so:")
            assert again.owns(name)
        assert {n.split(" ", 1)[1] for n in names} == {RSA_LABEL, P256_LABEL}
        assert not again.owns("Virtual PCD 00 00")
    finally:
        again.close()


def test_identity_is_the_certificates_written_and_the_token_serial(
        backend: Pkcs11Backend, softhsm: SoftHsm) -> None:
    token = backend.connect(reader(backend, RSA_LABEL)).token
    assert token.read_certificate() == softhsm.keys["signing"].certificate_der.read_bytes()
    assert (token.read_certificate(CertificateRole.ENVELOPE)
            == softhsm.keys["encryption"].certificate_der.read_bytes())
    assert token.read_card_id() == serial_from_softhsm_util(softhsm, RSA_LABEL)
    assert token.atr == b"" and token.read_profile() is None
    p256 = backend.connect(reader(backend, P256_LABEL)).token
    assert p256.read_certificate() == softhsm.keys["p256-signing"].certificate_der.read_bytes()
    assert p256.read_certificate(CertificateRole.ENVELOPE) is None  # one key pair: no envelope


def test_pin_status_wrong_pin_and_verify(backend: Pkcs11Backend) -> None:
    """SoftHSM2 has no retry counter: a wrong PIN sets CKF_USER_PIN_COUNT_LOW and nothing else,
    so the status stays "tries unknown" and never reaches the final try or the lock."""
    token = backend.connect(reader(backend, RSA_LABEL)).token
    status = token.credential_status()
    assert (status.verified, status.tries_left, status.blocked, status.on_last_try) == (
        False, -1, False, False)
    for _ in range(4):
        with pytest.raises(InvalidPinError) as wrong:
            token.verify_pin(bytearray(WRONG_PIN.encode()))
        assert wrong.value.tries_left == -1
        assert WRONG_PIN not in str(wrong.value)
        assert not token.credential_status().on_last_try
    flags = backend.module.token_info(backend.scan()[0][reader(backend, RSA_LABEL)].slot_id,
                                      "test").flags
    assert flags & PyKCS11.CKF_USER_PIN_COUNT_LOW
    assert not flags & (PyKCS11.CKF_USER_PIN_FINAL_TRY | PyKCS11.CKF_USER_PIN_LOCKED)
    token.verify_pin(bytearray(USER_PIN.encode()))
    assert token.credential_status().verified
    token.logout()
    token.logout()  # logging out twice is not an error
    assert not token.credential_status().verified
    with pytest.raises(InvalidPinError):  # a wrong PIN after a good one does not pass
        token.verify_pin(bytearray(USER_PIN.encode()))
        token.verify_pin(bytearray(WRONG_PIN.encode()))
    assert not token.credential_status().verified


def test_change_and_unblock_with_the_so_pin(backend: Pkcs11Backend) -> None:
    token = backend.connect(reader(backend, RSA_LABEL)).token
    with pytest.raises(InvalidPinError):
        token.change_pin(bytearray(WRONG_PIN.encode()), bytearray(b"22223333"))
    token.change_pin(bytearray(USER_PIN.encode()), bytearray(b"22223333"))
    with pytest.raises(InvalidPinError):
        token.verify_pin(bytearray(USER_PIN.encode()))
    token.verify_pin(bytearray(b"22223333"))
    with pytest.raises(InvalidPinError) as wrong_puk:
        token.unblock_pin(bytearray(b"99998888"), bytearray(USER_PIN.encode()))
    assert "99998888" not in str(wrong_puk.value)
    token.unblock_pin(bytearray(SO_PIN.encode()), bytearray(USER_PIN.encode()))
    assert not token.credential_status(Credential.PUK).verified  # the SO logged out again
    token.verify_pin(bytearray(USER_PIN.encode()))
    assert token.credential_status().verified


@pytest.mark.parametrize(("mechanism", "digest_name"), [
    (SignMechanism.RSA_PKCS1_SHA1, "sha1"), (SignMechanism.RSA_PKCS1_SHA256, "sha256")])
def test_rsa_signatures_verify_with_openssl(backend: Pkcs11Backend, softhsm: SoftHsm,
                                            tmp_path: Path, mechanism: SignMechanism,
                                            digest_name: str) -> None:
    token = backend.connect(reader(backend, RSA_LABEL)).token
    message = b"<CEBMessage>signed through PKCS#11</CEBMessage>"
    digest = hashlib.new(digest_name, message).digest()
    with pytest.raises(SecurityStatusError):
        token.sign_digest(mechanism, digest)
    token.verify_pin(bytearray(USER_PIN.encode()))
    signature = token.sign_digest(mechanism, digest)
    assert len(signature) == 256
    out = openssl_verifies(softhsm.keys["signing"].public_pem, digest_name, message, signature,
                           tmp_path)
    assert "Verified OK" in out


def test_ecdsa_p256_signature_is_der_and_verifies_with_openssl(
        backend: Pkcs11Backend, softhsm: SoftHsm, tmp_path: Path) -> None:
    token = backend.connect(reader(backend, P256_LABEL)).token
    token.verify_pin(bytearray(USER_PIN.encode()))
    message = b"orderNo=20261122001&payTime=20261122120000"
    signature = token.sign_digest(SignMechanism.ECDSA_P256, hashlib.sha256(message).digest())
    assert signature[0] == 0x30
    out = openssl_verifies(softhsm.keys["p256-signing"].public_pem, "sha256", message, signature,
                           tmp_path)
    assert "Verified OK" in out
    with pytest.raises(CardError):  # an RSA mechanism on the EC key is refused, not attempted
        token.sign_digest(SignMechanism.RSA_PKCS1_SHA256, hashlib.sha256(message).digest())


def test_sm2_without_a_configured_mechanism_is_a_clear_error(backend: Pkcs11Backend) -> None:
    token = backend.connect(reader(backend, P256_LABEL)).token
    token.verify_pin(bytearray(USER_PIN.encode()))
    with pytest.raises(CardError) as refused:
        token.sign_digest(SignMechanism.SM2, bytes(32))
    assert "mechanism id" in refused.value.detail
    with pytest.raises(CardError) as short:
        token.sign_digest(SignMechanism.RSA_PKCS1_SHA256, bytes(20))
    assert "32" in short.value.detail
    with pytest.raises(NotImplementedError):
        token.private_step(CertificateRole.ENVELOPE, b"", sm2=False)


def test_rsa_decrypt_of_what_openssl_encrypted(backend: Pkcs11Backend, softhsm: SoftHsm,
                                               tmp_path: Path) -> None:
    secret = b"the document key: 0123456789abcdef"
    (tmp_path / "plain").write_bytes(secret)
    run("openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey",
        str(softhsm.keys["encryption"].public_pem), "-pkeyopt", "rsa_padding_mode:pkcs1",
        "-in", str(tmp_path / "plain"), "-out", str(tmp_path / "cipher"))
    token = backend.connect(reader(backend, RSA_LABEL)).token
    token.verify_pin(bytearray(USER_PIN.encode()))
    assert token.decrypt((tmp_path / "cipher").read_bytes()) == secret


def test_token_removed_then_back_and_the_next_call_works(
        backend: Pkcs11Backend, softhsm: SoftHsm, tmp_path: Path) -> None:
    recorder = PresenceRecorder()
    monitor = backend.monitor(recorder)
    monitor.start()
    try:
        recorder.wait_for(lambda: len(recorder.readers) == 2, "both tokens")
        name = reader(backend, RSA_LABEL)
        token = backend.connect(name).token
        token.verify_pin(bytearray(USER_PIN.encode()))
        rsa_dir = next(d for d in softhsm.token_dirs()
                       if serial_from_softhsm_util(softhsm, RSA_LABEL)[-8:] in d.name)
        parked = tmp_path / "parked"
        shutil.move(rsa_dir, parked)  # the token is pulled
        recorder.wait_for(lambda: name not in recorder.readers, "the RSA token removed")
        with pytest.raises(TokenUnavailable) as gone:
            token.sign_digest(SignMechanism.RSA_PKCS1_SHA256, bytes(32))
        assert gone.value.reason in (Unavailable.CARD_REMOVED, Unavailable.INVALID_HANDLE,
                                     Unavailable.SERVICE_NOT_RUNNING)
        assert backend.card_gone(name, 1.0)
        shutil.move(parked, rsa_dir)  # and put back
        recorder.wait_for(lambda: name in recorder.readers, "the RSA token back")
        again = backend.connect(name).token
        again.verify_pin(bytearray(USER_PIN.encode()))
        digest = hashlib.sha256(b"after the token came back").digest()
        signature = again.sign_digest(SignMechanism.RSA_PKCS1_SHA256, digest)
        out = openssl_verifies(softhsm.keys["signing"].public_pem, "sha256",
                               b"after the token came back", signature, tmp_path)
        assert "Verified OK" in out
    finally:
        monitor.stop()


def test_module_finalised_under_the_backend_is_reinitialised(backend: Pkcs11Backend) -> None:
    recorder = PresenceRecorder()
    monitor = backend.monitor(recorder)
    monitor.start()
    try:
        recorder.wait_for(lambda: len(recorder.readers) == 2, "both tokens")
        name = reader(backend, P256_LABEL)
        token = backend.connect(name).token
        other = PyKCS11.PyKCS11Lib().load(SOFTHSM_MODULE)  # another user of the same module
        assert other.lib.C_Finalize() == PyKCS11.CKR_OK
        before = len(recorder.events)
        recorder.wait_for(lambda: ("service_down" in [k for k, _ in recorder.events[before:]]
                                   and recorder.up is True and name in recorder.readers),
                          "the module down, then up again with its tokens")
        down = [c for k, c in recorder.events[before:] if k == "service_down"]
        assert "CKR_CRYPTOKI_NOT_INITIALIZED" in down[0]
        with pytest.raises(TokenUnavailable) as dead:
            token.credential_status()
        assert dead.value.reason == Unavailable.INVALID_HANDLE
        again = backend.connect(name).token
        again.verify_pin(bytearray(USER_PIN.encode()))
        assert again.sign_digest(SignMechanism.ECDSA_P256, bytes(32))[0] == 0x30
        other.unload()
    finally:
        monitor.stop()


def is_down(recorder: PresenceRecorder) -> bool:
    return recorder.up is False


def test_a_module_that_does_not_load_is_reported_with_its_cause(tmp_path: Path) -> None:
    not_a_module = tmp_path / "libnot-pkcs11.so"
    not_a_module.write_text("this is not a shared object\n")
    for path, words in ((tmp_path / "missing.so", "does not exist"),
                        (not_a_module, "did not load")):
        backend = Pkcs11Backend(str(path))
        recorder = PresenceRecorder()
        monitor = backend.monitor(recorder)
        monitor.start()
        try:
            recorder.wait_for(partial(is_down, recorder), f"service_down for {path.name}")
            cause = next(c for k, c in recorder.events if k == "service_down")
            assert words in cause and str(path) in cause
            with pytest.raises(TokenUnavailable) as down:
                backend.connect(f"pkcs11:{path.name}:0 x")
            assert down.value.reason == Unavailable.SERVICE_NOT_RUNNING
        finally:
            monitor.stop()


def test_softhsm_util_is_the_one_that_made_the_tokens(softhsm: SoftHsm) -> None:
    """The fixture is what it claims: pkcs11-tool (not our code) lists the objects."""
    objects = softhsm.tool(RSA_LABEL, "--list-objects")
    assert objects.count("Certificate Object") == 2
    assert subprocess.run(["softhsm2-util", "--show-slots"], env=softhsm.env(),
                          capture_output=True).returncode == 0
