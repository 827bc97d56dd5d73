"""One simulated card seen through two backends: PC/SC PIV directly, and OpenSC's
PKCS#11 module through our PKCS#11 backend. Same certificates, same card id, valid signatures
(OpenSSL checks), and the PIN tries OpenSC's token flags report follow the card's counter.

Run under `flock /tmp/eport-pcsc.lock` (pcscd and the vpcd slots are shared)."""

from __future__ import annotations

import faulthandler
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eport.cardlib.errors import InvalidPinError, ReferenceBlockedError
from eport.cardlib.pcsc.backend import PcscBackend
from eport.cardlib.pkcs11.backend import Pkcs11Backend
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.token import CertificateRole
from eport.firmware_sim.image import CardImage, read_image
from tests.support.pcsc_stack import OPENSC_MODULE, Pcscd, SimProcessSlot
from tests.support.softhsm import run

pytestmark = pytest.mark.pcsc

PIN = "88888888"
WRONG_PIN = "11112222"
STEP_SECONDS = 30
InsertCard = Callable[[str], tuple[str, CardImage]]


@contextmanager
def step_deadline(seconds: float = STEP_SECONDS) -> Iterator[None]:
    """Abort the run (with every thread's stack) if a step overruns. OpenSC's and pcsc-lite's
    calls block inside C while holding the GIL, so pytest-timeout's Python timer cannot fire;
    faulthandler's watchdog is a C thread and can."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def read_through_piv(reader: str) -> tuple[bytes | None, bytes | None, str, int]:
    """Signing and envelope certificates, card id and PIN counter through PC/SC PIV. The PC/SC
    handle is closed before OpenSC touches the card: with it open, OpenSC's C_Initialize waited
    on the reader forever (the hang seen before)."""
    with step_deadline():
        pcsc = PcscBackend().connect(reader)
        try:
            piv = pcsc.token
            return (piv.read_certificate(), piv.read_certificate(CertificateRole.ENVELOPE),
                    piv.read_card_id(), piv.credential_status().tries_left)
        finally:
            pcsc.close()


@pytest.fixture
def sim_card(pcscd: Pcscd, card_images: dict[str, CardImage], tmp_path: Path
             ) -> Iterator[Callable[[str], tuple[str, CardImage]]]:
    """The simulated card in a process of its own. Run in-process (the suite's sim_card), it
    deadlocked: PyKCS11 keeps the GIL while OpenSC's C_Initialize waits on pcscd, and pcscd
    waits on the card thread, which needs the GIL to answer."""
    cards = SimProcessSlot(tmp_path)

    def insert(algorithm: str) -> tuple[str, CardImage]:
        return cards.reader, read_image(cards.insert(card_images[algorithm]))

    yield insert
    cards.pull()


@pytest.fixture
def opensc() -> Iterator[Pkcs11Backend]:
    if not Path(OPENSC_MODULE).exists():
        pytest.fail("these tests need OpenSC's PKCS#11 module (apt-get install opensc)")
    backend = Pkcs11Backend(OPENSC_MODULE)
    yield backend
    with step_deadline():
        backend.close()


def opensc_reader(backend: Pkcs11Backend) -> str:
    with step_deadline():
        names = list(backend.scan()[0])
    assert len(names) == 1, f"expected one token (the simulated card): {names}"
    return names[0]


@pytest.mark.parametrize(("algorithm", "mechanism"), [
    ("rsa2048", SignMechanism.RSA_PKCS1_SHA256), ("p256", SignMechanism.ECDSA_P256)])
def test_one_card_through_two_backends(sim_card: InsertCard, opensc: Pkcs11Backend,
                                       tmp_path: Path, algorithm: str,
                                       mechanism: SignMechanism) -> None:
    reader, image = sim_card(algorithm)
    piv_signing, piv_envelope, piv_card_id, _ = read_through_piv(reader)
    name = opensc_reader(opensc)
    assert name.startswith("pkcs11:opensc-pkcs11.so:")
    message = f"<CEBMessage>{algorithm} through OpenSC</CEBMessage>".encode()
    with step_deadline():
        p11 = opensc.connect(name).token
        assert p11.read_certificate() == piv_signing == image.certificate
        assert p11.read_certificate(CertificateRole.ENVELOPE) == piv_envelope
        p11_card_id = p11.read_card_id()
        p11.verify_pin(bytearray(PIN.encode()))
        signature = p11.sign_digest(mechanism, hashlib.sha256(message).digest())
    (tmp_path / "cert.der").write_bytes(image.certificate)
    run("openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "cert.der"), "-pubkey",
        "-noout", "-out", str(tmp_path / "pub.pem"))
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig").write_bytes(signature)
    out = run("openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
              "-signature", str(tmp_path / "sig"), str(tmp_path / "msg"))
    assert "Verified OK" in out
    # OpenSC's token serial is only the card number's last digits: the backend takes the
    # number from the certificate's subject (cardlib/pkcs11/connection.py).
    assert p11_card_id == piv_card_id == image.profile.card_id


def test_opensc_tries_follow_the_card_counter_and_the_final_try_guard(
        sim_card: InsertCard, opensc: Pkcs11Backend) -> None:
    reader, _ = sim_card("rsa2048")
    p11_name = opensc_reader(opensc)
    with step_deadline():
        p11 = opensc.connect(p11_name).token
    seen = []
    for _ in range(3):
        with step_deadline():
            status = p11.credential_status()
        counter = read_through_piv(reader)[3]
        seen.append((counter, status.tries_left, status.on_last_try, status.blocked))
        with step_deadline(), pytest.raises((InvalidPinError, ReferenceBlockedError)):
            p11.verify_pin(bytearray(WRONG_PIN.encode()))
    with step_deadline():
        final = p11.credential_status()
    seen.append((0, final.tries_left, final.on_last_try, final.blocked))
    # Counter 3 and 2: flags say nothing exact (-1); 1: FINAL_TRY, the guard's cue; 0: locked.
    assert seen == [(3, -1, False, False), (2, -1, False, False), (1, 1, True, False),
                    (0, 0, False, True)]
