"""eportd as its clients see it (acceptance): the real daemon process on a real Unix
socket, the real pcscd with vpcd, simulated cards, and every RPC through a real gRPC channel."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext
from eport.common import sm2
from eport.common.profile import CardForm
from eport.common.sm2_cert import certificate_public_point
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage, load_card, read_image
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import (
    Daemon,
    expect_error,
    running_daemon,
    start_daemon,
    wait_for_card,
)
from tests.support.fake_card import FakeCardFactory, write_fake_image
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot
from tests.support.waiting import wait_until

from eport.protos.v1 import eportd_pb2 as pb  # isort: skip

pytestmark = pytest.mark.pcsc
PIN, PUK, OTHER_PIN = "88888888", "12345678", "24682468"
READER0, READER1 = reader_for_slot(0), reader_for_slot(1)


@pytest.fixture
def daemon(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> Iterator[Daemon]:
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle)) as d:
        yield d


def card_file(images: dict[str, CardImage], algorithm: str, tmp_path: Path,
              name: str = "card.json") -> Path:
    return write_card(images[algorithm], tmp_path, name)


def verifies_independently(cert_der: bytes, algorithm: int, data: bytes, signature: bytes
                              ) -> bool:
    """Independent check with `cryptography` (RSA, P-256) or our SM2 code."""
    certificate = x509.load_der_x509_certificate(cert_der)
    if algorithm == pb.SM2_WITH_SM3:
        point = certificate_public_point(cert_der)
        r, s = sm2.decode_der_signature(signature)
        return sm2.verify_message(point, data, r, s)
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            hash_algorithm: hashes.HashAlgorithm = (
                hashes.SHA1() if algorithm == pb.SHA1_WITH_RSA else hashes.SHA256())
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


# ---- every RPC ----

@pytest.mark.parametrize("algorithm,expected", [
    ("rsa2048", pb.SHA256_WITH_RSA), ("rsa1024", pb.SHA1_WITH_RSA),
    ("p256", pb.ECDSA_P256_SHA256), ("sm2", pb.SM2_WITH_SM3)])
def test_card_info_pin_sign_and_verify(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                       card_images: dict[str, CardImage], tmp_path: Path,
                                       algorithm: str, expected: int) -> None:
    image = card_images[algorithm]
    sim_slots([(0, card_file(card_images, algorithm, tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    info = stub.GetCardInfo(pb.CardSelector())
    profile = image.profile
    assert (info.card_id, info.holder_name, info.enterprise_name, info.customs_code,
            info.credit_code) == (profile.card_id, profile.holder_name, profile.enterprise_name,
                                  profile.customs_code, profile.credit_code)
    assert info.certificate_number == profile.cert_number
    assert info.kind == pb.OPERATOR and info.form == pb.IC_CARD and info.reader == READER0
    assert expected in info.sign_algorithms

    status = stub.GetPinStatus(pb.CardSelector())
    assert (status.pin_tries_left, status.puk_tries_left, status.session_active) == (3, 3, False)
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "NOT_AUTHENTICATED")
    verified = stub.VerifyPin(pb.VerifyPinRequest(pin=PIN)).status
    assert verified.session_active and verified.session_expires_at.seconds > time.time()

    data = f"报关单 {algorithm}".encode()
    answer = stub.Sign(pb.SignRequest(data=data))
    assert answer.algorithm == expected and answer.certificate_number == profile.cert_number
    assert verifies_independently(image.certificate, expected, data, answer.signature)
    if algorithm in ("p256", "sm2"):
        assert len(answer.signature_raw_rs) == 64
    assert stub.Verify(pb.VerifyRequest(card=pb.CardSelector(), data=data,
                                        signature=answer.signature)).valid
    assert not stub.Verify(pb.VerifyRequest(card=pb.CardSelector(), data=data + b"!",
                                            signature=answer.signature)).valid
    # A precomputed digest gives a signature over the same hash.
    if algorithm in ("rsa2048", "p256"):
        digest = hashlib.sha256(data).digest()
        by_digest = stub.Sign(pb.SignRequest(digest=digest))
        assert verifies_independently(image.certificate, expected, data, by_digest.signature)
    certificate = stub.GetCertificate(pb.CardSelector())
    assert certificate.der == image.certificate and "BEGIN CERTIFICATE" in certificate.pem
    assert certificate.check.state == pb.VALID and certificate.check.chain == pb.TRUSTED
    assert stub.CheckCertificate(pb.CheckCertificateRequest(
        certificate=certificate.pem.encode())).chain == pb.TRUSTED
    assert stub.Logout(pb.CardSelector()).session_was_active
    expect_error(lambda: stub.Sign(pb.SignRequest(data=data)), "NOT_AUTHENTICATED")


def test_daemon_info_health_and_reflection(daemon: Daemon, test_ca: TestCA) -> None:
    stub = daemon.stub()
    info = stub.GetDaemonInfo(pb.GetDaemonInfoRequest())
    assert info.socket_path == str(daemon.socket) and info.pid == daemon.process.pid
    assert info.pcsc_state == pb.SERVICE_RUNNING and info.session_idle_timeout_seconds == 900
    assert any("TEST CA" in subject for subject in info.trust_anchor_subjects)
    health = health_pb2_grpc.HealthStub(daemon.channel())
    assert health.Check(health_pb2.HealthCheckRequest(service="eport.v1.CardService")).status \
        == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(daemon.channel())
    answers = reflection.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"eport.v1.CardService", "grpc.health.v1.Health"} <= names
    usb = stub.ListUsbDevices(pb.ListUsbDevicesRequest())
    assert usb.usb_available or usb.unavailable_reason


def test_card_info_is_cached_per_insertion(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                           card_images: dict[str, CardImage],
                                           tmp_path: Path) -> None:
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.GetCardInfo(pb.CardSelector())
    before = slots.slot(0).status().apdus
    for _ in range(20):
        stub.GetCardInfo(pb.CardSelector())
        stub.GetCertificate(pb.CardSelector())
    assert slots.slot(0).status().apdus == before


# ---- PIN guard, lockout, unblock ----

def test_lockout_guard_and_unblock(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                   card_images: dict[str, CardImage], tmp_path: Path) -> None:
    path = card_file(card_images, "sm2", tmp_path)
    sim_slots([(0, path)])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    # A typo of the wrong length never costs a try.
    for bad in ("1234", "123456789", "8888888a", ""):
        expect_error(lambda bad=bad: stub.VerifyPin(pb.VerifyPinRequest(pin=bad)), "PIN_FORMAT")
    assert stub.GetPinStatus(pb.CardSelector()).pin_tries_left == 3
    assert read_image(path).pin.tries_left == 3
    assert expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin="11111111")),
                        "PIN_INCORRECT").tries_left == 2
    detail = expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin="22222222")),
                          "PIN_INCORRECT")
    assert detail.tries_left == 1 and "还可以重试1次" in detail.message_zh
    # The guard: with one try left nothing is sent unless the caller allows the last attempt.
    for _ in range(3):
        expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin=PIN)),
                     "PIN_LAST_ATTEMPT_GUARD")
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x", pin=PIN)),
                     "PIN_LAST_ATTEMPT_GUARD")
    assert read_image(path).pin.tries_left == 1
    expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin="33333333",
                                                            allow_last_attempt=True)),
                 "PIN_BLOCKED")
    status = stub.GetPinStatus(pb.CardSelector())
    assert status.pin_blocked and status.pin_tries_left == 0
    expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin=PIN, allow_last_attempt=True)),
                 "PIN_BLOCKED")
    expect_error(lambda: stub.ChangePin(pb.ChangePinRequest(old_pin=PIN, new_pin="12121212",
                                                            allow_last_attempt=True)),
                 "PIN_BLOCKED")
    # Unblock with the PUK; a wrong PUK first.
    assert expect_error(lambda: stub.UnblockPin(pb.UnblockPinRequest(puk="00000000",
                                                                     new_pin="13572468")),
                        "PUK_INCORRECT").tries_left == 2
    status = stub.UnblockPin(pb.UnblockPinRequest(puk=PUK, new_pin="13572468"))
    assert (status.pin_tries_left, status.pin_blocked, status.puk_tries_left) == (3, False, 3)
    stub.VerifyPin(pb.VerifyPinRequest(pin="13572468"))
    changed = stub.ChangePin(pb.ChangePinRequest(old_pin="13572468", new_pin=PIN))
    assert changed.pin_tries_left in (3, -1)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    assert stub.Sign(pb.SignRequest(data=b"after unblock")).signature


def test_blocked_puk(daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
                     tmp_path: Path) -> None:
    image = provision_test_card(test_ca, "p256", pin_tries_left=0)
    sim_slots([(0, write_card(image, tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    for tries in (2, 1):
        assert expect_error(lambda: stub.UnblockPin(pb.UnblockPinRequest(
            puk="00000000", new_pin="11223344", allow_last_attempt=True)),
            "PUK_INCORRECT").tries_left == tries
    expect_error(lambda: stub.UnblockPin(pb.UnblockPinRequest(puk="00000000",
                                                              new_pin="11223344")),
                 "PIN_LAST_ATTEMPT_GUARD")
    expect_error(lambda: stub.UnblockPin(pb.UnblockPinRequest(
        puk="00000000", new_pin="11223344", allow_last_attempt=True)), "PUK_BLOCKED")
    detail = expect_error(lambda: stub.UnblockPin(pb.UnblockPinRequest(
        puk=PUK, new_pin="11223344", allow_last_attempt=True)), "PUK_BLOCKED")
    assert "制卡中心" in detail.remedy_zh
    status = stub.GetPinStatus(pb.CardSelector())
    assert status.puk_blocked and status.pin_blocked


def test_status_calls_never_spend_a_try(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                        card_images: dict[str, CardImage],
                                        tmp_path: Path) -> None:
    path = card_file(card_images, "p256", tmp_path)
    slots = sim_slots([(0, path)])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin="11111111")), "PIN_INCORRECT")
    for _ in range(10):
        stub.GetPinStatus(pb.CardSelector())
        stub.GetCardInfo(pb.CardSelector())
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "NOT_AUTHENTICATED")
    slots.remove(0)
    slots.insert(0)
    wait_for_card(stub, READER0)
    assert stub.GetPinStatus(pb.CardSelector()).pin_tries_left == 2
    assert read_image(path).pin.tries_left == 2


# ---- errors of selection, certificates and arguments ----

def test_reader_and_card_selection_errors(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                          card_images: dict[str, CardImage], test_ca: TestCA,
                                          tmp_path: Path) -> None:
    stub = daemon.stub()
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector()), "NO_CARD")
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector(reader="No Such Reader")), "NO_READER")
    ikey = provision_test_card(test_ca, "p256", form=CardForm.IKEY)
    sim_slots([(0, write_card(ikey, tmp_path, "ikey.json")),
               (1, card_file(card_images, "sm2", tmp_path, "ic.json"))])
    wait_for_card(stub, READER0)
    wait_for_card(stub, READER1)
    # Bonded manual §1.1: with an IC card and an IKEY both present, the IC card is used.
    assert stub.GetCardInfo(pb.CardSelector()).reader == READER1
    assert stub.GetCardInfo(pb.CardSelector(card_id=ikey.profile.card_id)).form == pb.IKEY
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector(card_id="0000000000000000")),
                 "NO_CARD")
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector(
        reader=READER0, card_id=card_images["sm2"].profile.card_id)), "NO_CARD")


def test_two_ic_cards_are_ambiguous(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                    card_images: dict[str, CardImage], tmp_path: Path) -> None:
    sim_slots([(0, card_file(card_images, "p256", tmp_path, "a.json")),
               (1, card_file(card_images, "sm2", tmp_path, "b.json"))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    wait_for_card(stub, READER1)
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector()), "AMBIGUOUS_CARD")
    assert stub.GetCardInfo(pb.CardSelector(reader=READER1)).key_algorithm == pb.SM2


def test_unsupported_card(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                          tmp_path: Path) -> None:
    sim_slots([(0, write_fake_image(tmp_path, "not an eport card"))],
              factory=FakeCardFactory())
    stub = daemon.stub()
    entry = wait_for_card(stub, READER0)
    assert entry.error == "UNSUPPORTED_CARD"
    expect_error(lambda: stub.GetCardInfo(pb.CardSelector(reader=READER0)), "UNSUPPORTED_CARD")


@pytest.mark.parametrize("not_before,days,state,reason", [
    (-400, 365, pb.EXPIRED, "CERT_EXPIRED"),
    (+5, 365, pb.NOT_YET_VALID, "CERT_NOT_YET_VALID"),
    (-700, 710, pb.EXPIRING, None)])
def test_certificate_states(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                            test_ca: TestCA, tmp_path: Path, not_before: int, days: int,
                            state: int, reason: str | None) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=not_before)
    image = provision_test_card(test_ca, "p256", not_before=start, days=days)
    sim_slots([(0, write_card(image, tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    check = stub.GetCertificate(pb.CardSelector()).check
    assert check.state == state
    if reason is None:
        assert check.message_zh == f"您的IC卡还有{check.days_left}天到期"
        assert 9 <= check.days_left <= 11
        stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
        assert stub.Sign(pb.SignRequest(data=b"still allowed")).signature
    else:
        stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"refused")), reason)
        if reason == "CERT_EXPIRED":
            assert check.message_zh == "您的IC卡已过期"


def test_untrusted_chain_refuses_signing(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                         tmp_path: Path) -> None:
    other_ca = init_ca(tmp_path / "other-ca")
    image = provision_test_card(other_ca, "p256")
    sim_slots([(0, write_card(image, tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    assert stub.GetCertificate(pb.CardSelector()).check.chain == pb.UNTRUSTED
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "CERT_UNTRUSTED")


def test_invalid_arguments_change_nothing(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                          card_images: dict[str, CardImage],
                                          tmp_path: Path) -> None:
    path = card_file(card_images, "p256", tmp_path)
    sim_slots([(0, path)])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    expect_error(lambda: stub.Sign(pb.SignRequest(digest=b"short")), "INVALID_ARGUMENT")
    expect_error(lambda: stub.Sign(pb.SignRequest()), "INVALID_ARGUMENT")
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x", algorithm=pb.SM2_WITH_SM3)),
                 "INVALID_ARGUMENT")
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x", algorithm=99)), "INVALID_ARGUMENT")
    expect_error(lambda: stub.CheckCertificate(pb.CheckCertificateRequest(certificate=b"junk")),
                 "INVALID_ARGUMENT")
    expect_error(lambda: stub.EnableUnattended(pb.EnableUnattendedRequest(pin=PIN)),
                 "UNATTENDED_DISABLED")
    status = stub.GetPinStatus(pb.CardSelector())
    assert status.session_active and read_image(path).pin.tries_left == 3


# ---- sessions ----

def test_session_idle_timeout_logs_the_card_out(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                                sim_slots: Callable[..., SimSlots],
                                                card_images: dict[str, CardImage]) -> None:
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                        "--idle-timeout", "1") as daemon:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
        stub.Sign(pb.SignRequest(data=b"in time"))
        events = stub.WatchEvents(pb.WatchEventsRequest(), timeout=10)
        closed = next(e for e in events if e.kind == pb.SESSION_CLOSED)
        assert closed.detail == "idle"
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"late")), "SESSION_EXPIRED")
        # The daemon reset the card's security status too: another program can't sign now.
        with PcscContext() as context:
            connection = context.connect(READER0)
            try:
                assert not PivSession(connection).reference_status().verified
            finally:
                connection.close()
        assert slots.slot(0).status().inserted


def test_a_card_swap_ends_the_session(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                      card_images: dict[str, CardImage],
                                      tmp_path: Path) -> None:
    first = card_file(card_images, "p256", tmp_path, "first.json")
    second = card_file(card_images, "sm2", tmp_path, "second.json")
    slots = sim_slots([(0, first)])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    slots.remove(0)
    slots.insert(0, second)
    entry = wait_for_card(stub, READER0)
    assert entry.card_id == card_images["sm2"].profile.card_id
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "NOT_AUTHENTICATED")
    assert not stub.GetPinStatus(pb.CardSelector()).session_active


# ---- hotplug and events ----

def test_hotplug_events_in_order(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                 card_images: dict[str, CardImage], tmp_path: Path) -> None:
    stub = daemon.stub()
    stream = stub.WatchEvents(pb.WatchEventsRequest(), timeout=30)
    received: list[pb.Event] = []
    ready = threading.Event()

    def collect() -> None:
        try:
            for event in stream:
                received.append(event)
                if event.kind == pb.SNAPSHOT_COMPLETE:
                    ready.set()
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=collect)
    thread.start()
    assert ready.wait(5)
    snapshot = list(received)
    assert snapshot[0].kind == pb.SERVICE_UP
    assert {e.reader for e in snapshot if e.kind == pb.READER_ADDED} >= {READER0, READER1}
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path, "a.json"))])
    wait_for_card(stub, READER0)
    slots.add(1, card_file(card_images, "sm2", tmp_path, "b.json"))
    wait_for_card(stub, READER1)
    latency = slots.remove(0)
    slots.remove(1)
    wait_until(lambda: sum(e.kind == pb.CARD_REMOVED_EVENT for e in received) >= 2,
               timeout=5, interval=0.02, what="both removals are streamed")
    stream.cancel()
    thread.join(5)
    changes = [(pb.EventKind.Name(e.kind), e.reader) for e in received[len(snapshot):]]
    assert changes == [
        ("CARD_INSERTED", READER0), ("CARD_READY", READER0),
        ("CARD_INSERTED", READER1), ("CARD_READY", READER1),
        ("CARD_REMOVED_EVENT", READER0), ("CARD_REMOVED_EVENT", READER1)], changes
    sequences = [e.sequence for e in received]
    assert sequences == list(range(1, len(received) + 1))
    ready_events = [e for e in received if e.kind == pb.CARD_READY]
    assert ready_events[1].card.card_id == card_images["sm2"].profile.card_id
    assert ready_events[1].card.key_algorithm == pb.SM2
    print(f"pcscd saw the removal after {latency:.3f} s")


def test_insert_to_event_latency_within_one_poll(daemon: Daemon,
                                                 sim_slots: Callable[..., SimSlots],
                                                 card_images: dict[str, CardImage],
                                                 tmp_path: Path) -> None:
    stub = daemon.stub()
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    wait_for_card(stub, READER0)
    latencies = []
    for _ in range(3):
        stream = stub.WatchEvents(pb.WatchEventsRequest(), timeout=10)
        for event in stream:
            if event.kind == pb.SNAPSHOT_COMPLETE:
                break
        started = time.monotonic()
        slots.slot(0).remove()
        for event in stream:
            if event.kind == pb.CARD_REMOVED_EVENT:
                break
        slots.slot(0).insert()
        removed_at = time.monotonic()
        for event in stream:
            if event.kind == pb.CARD_INSERTED:
                break
        latencies.append(time.monotonic() - removed_at)
        stream.cancel()
        assert time.monotonic() - started < 5
    print("insert-to-event latencies (s):", [round(x, 3) for x in latencies])
    # pcscd polls vpcd every 400 ms; the event must follow within that period (plus slack
    # for a loaded 2-core machine).
    assert max(latencies) < 0.4 + 0.3


# ---- faults ----

def test_card_pulled_during_a_signature(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                        card_images: dict[str, CardImage],
                                        tmp_path: Path) -> None:
    slots = sim_slots([(0, card_file(card_images, "rsa2048", tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    slots.slot(0).pull_during_next_apdu()
    expect_error(lambda: stub.Sign(pb.SignRequest(data=b"pulled")), "CARD_REMOVED")
    wait_for_card(stub, READER0, present=False)
    slots.insert(0)
    wait_for_card(stub, READER0)
    answer = stub.Sign(pb.SignRequest(data=b"again", pin=PIN))
    assert verifies_independently(card_images["rsa2048"].certificate, pb.SHA256_WITH_RSA,
                                     b"again", answer.signature)


def test_pcscd_killed_then_back(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                card_images: dict[str, CardImage]) -> None:
    if not pcscd.restartable:
        pytest.skip("pcscd was started outside the tests; not ours to kill")
    slots = SimSlots(load_card)
    try:
        slots.add(0, card_file(card_images, "p256", tmp_path))
        with running_daemon(tmp_path / "run", "--trust-anchor",
                            str(test_ca.trust_bundle)) as daemon:
            stub = daemon.stub()
            wait_for_card(stub, READER0)
            stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
            pcscd.stop()
            wait_until(lambda: stub.ListReaders(pb.ListReadersRequest()).pcsc_state
                       != pb.SERVICE_RUNNING, timeout=5, what="eportd notices pcscd is gone")
            expect_error(lambda: stub.GetCardInfo(pb.CardSelector()), "SERVICE_NOT_RUNNING")
            expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "SERVICE_NOT_RUNNING")
            health = health_pb2_grpc.HealthStub(daemon.channel())
            assert health.Check(health_pb2.HealthCheckRequest(
                service="eport.v1.CardService")).status \
                == health_pb2.HealthCheckResponse.NOT_SERVING
            pcscd.restart()
            entry = wait_for_card(stub, READER0, timeout=15)
            assert entry.card_id == card_images["p256"].profile.card_id
            answer = stub.Sign(pb.SignRequest(data=b"recovered", pin=PIN))
            assert answer.signature
            assert daemon.process.poll() is None
    finally:
        slots.close()


# ---- concurrency ----

def test_32_clients_sign_100_messages_each(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                           card_images: dict[str, CardImage],
                                           tmp_path: Path) -> None:
    image = card_images["p256"]
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    before = slots.slot(0).status().apdus
    failures: list[str] = []
    results: dict[bytes, bytes] = {}
    lock = threading.Lock()

    def client(number: int) -> None:
        own = daemon.stub()
        for index in range(100):
            message = f"client {number} message {index}".encode()
            try:
                answer = own.Sign(pb.SignRequest(data=message), timeout=120)
            except grpc.RpcError as exc:
                failures.append(f"{number}/{index}: {exc.code()}")
                continue
            with lock:
                results[message] = answer.signature

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(results) == 3200
    for message, signature in results.items():
        assert verifies_independently(image.certificate, pb.ECDSA_P256_SHA256, message,
                                         signature), message
    # One GENERAL AUTHENTICATE per signature and nothing else: no retries, no re-verification.
    assert slots.slot(0).status().apdus - before == 3200


def test_a_cancelled_call_never_reaches_the_card(daemon: Daemon,
                                                 sim_slots: Callable[..., SimSlots],
                                                 card_images: dict[str, CardImage],
                                                 tmp_path: Path) -> None:
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    slots.slot(0).set_delay(300)
    before = slots.slot(0).status().apdus
    # The first call occupies the card; the others' deadlines pass while they wait in line.
    first = stub.Sign.future(pb.SignRequest(data=b"slow"), timeout=10)
    wait_until(lambda: slots.slot(0).status().apdus > before, timeout=5, interval=0.005,
               what="the first call is at the card")
    late = [stub.Sign.future(pb.SignRequest(data=f"late {i}".encode()), timeout=0.1)
            for i in range(5)]
    for call in late:
        with pytest.raises(grpc.RpcError) as caught:
            call.result()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first.result()
    slots.slot(0).set_delay(0)
    stub.GetPinStatus(pb.CardSelector())  # runs after anything still queued
    # The slow signature and the two status VERIFYs only: the late ones never reached the card.
    assert slots.slot(0).status().apdus - before == 3


# ---- socket and secrets ----

def test_second_daemon_refuses_and_other_uid_cannot_connect(daemon: Daemon) -> None:
    result = subprocess.run(
        [*daemon.process.args[:3], "--socket", str(daemon.socket), "--no-systemd-activation"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "already" in (result.stdout + result.stderr)
    # Debian's own python3: the venv's interpreter lives under /root, out of nobody's reach.
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             f"    s.connect({str(daemon.socket)!r})\n"
             "except OSError as e:\n"
             "    print('refused', e.errno); sys.exit(3)\n"
             "print('connected')\n")
    other = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True,
                           timeout=30, user=65534, group=65534)
    assert other.returncode == 3, other.stdout + other.stderr
    # The daemon itself still answers its own user.
    assert daemon.stub().GetDaemonInfo(pb.GetDaemonInfoRequest()).pid == daemon.process.pid


def test_no_pin_in_any_log_or_trace(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                    sim_slots: Callable[..., SimSlots],
                                    card_images: dict[str, CardImage]) -> None:
    sim_slots([(0, card_file(card_images, "sm2", tmp_path))])
    daemon = start_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                          "--apdu-trace", "--log-level", "DEBUG")
    try:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        wrong, new = "31415926", "27182818"
        expect_error(lambda: stub.VerifyPin(pb.VerifyPinRequest(pin=wrong)), "PIN_INCORRECT")
        stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
        stub.ChangePin(pb.ChangePinRequest(old_pin=PIN, new_pin=new))
        stub.UnblockPin(pb.UnblockPinRequest(puk=PUK, new_pin=PIN))
        stub.Sign(pb.SignRequest(data=b"traced", pin=PIN))
    finally:
        daemon.stop()
    log = daemon.log()
    assert "SEND" in log and "<redacted>" in log  # the trace was on
    for secret in (PIN, PUK, wrong, new):
        for form in (secret, secret.encode().hex(), secret.encode().hex().upper()):
            assert form not in log, f"a secret appears in the log as {form!r}"


def test_sigterm_lets_the_call_in_flight_finish(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                                sim_slots: Callable[..., SimSlots],
                                                card_images: dict[str, CardImage]) -> None:
    slots = sim_slots([(0, card_file(card_images, "p256", tmp_path))])
    daemon = start_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle))
    stub = daemon.stub()
    wait_for_card(stub, READER0)
    stub.VerifyPin(pb.VerifyPinRequest(pin=PIN))
    slots.slot(0).set_delay(500)
    before = slots.slot(0).status().apdus
    call = stub.Sign.future(pb.SignRequest(data=b"in flight"), timeout=10)
    wait_until(lambda: slots.slot(0).status().apdus > before, timeout=5, interval=0.005,
               what="the signature is in flight at the card")
    daemon.process.terminate()
    assert call.result().signature
    assert daemon.process.wait(10) == 0
    assert not daemon.socket.exists()


def test_unattended_signing_with_the_keyring(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                             sim_slots: Callable[..., SimSlots],
                                             card_images: dict[str, CardImage]) -> None:
    path = card_file(card_images, "sm2", tmp_path)
    sim_slots([(0, path)])
    env = {"PYTHON_KEYRING_BACKEND": "tests.support.memory_keyring.MemoryKeyring"}
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                        "--allow-unattended", env=env) as daemon:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        expect_error(lambda: stub.EnableUnattended(pb.EnableUnattendedRequest(pin="11111111")),
                     "PIN_INCORRECT")  # a wrong PIN is never stored
        assert not stub.GetPinStatus(pb.CardSelector()).unattended_enabled
        enabled = stub.EnableUnattended(pb.EnableUnattendedRequest(pin=PIN))
        assert enabled.enabled and enabled.card_id == card_images["sm2"].profile.card_id
        stub.Logout(pb.CardSelector())
        # No session, no PIN in the request: the daemon verifies with the stored PIN.
        assert stub.Sign(pb.SignRequest(data=b"unattended")).signature
        assert stub.GetPinStatus(pb.CardSelector()).unattended_enabled
        # A changed PIN makes the stored one wrong: the daemon forgets it.
        assert not stub.ChangePin(pb.ChangePinRequest(old_pin=PIN, new_pin=OTHER_PIN)
                                  ).unattended_enabled
        stub.ChangePin(pb.ChangePinRequest(old_pin=OTHER_PIN, new_pin=PIN))
        stub.EnableUnattended(pb.EnableUnattendedRequest(pin=PIN))
        stub.DisableUnattended(pb.CardSelector())
        stub.Logout(pb.CardSelector())
        expect_error(lambda: stub.Sign(pb.SignRequest(data=b"x")), "NOT_AUTHENTICATED")
        assert read_image(path).pin.tries_left == 3
    assert PIN not in daemon.log() and OTHER_PIN not in daemon.log()


def test_the_readme_demo_runs(pcscd: Pcscd, tmp_path: Path) -> None:
    """`eport-demo`, the README's main command, end to end: OpenSSL verifies its signature."""
    result = subprocess.run([str(Path(sys.executable).with_name("eport-demo")), "--workdir",
                             str(tmp_path / "demo")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified OK" in result.stdout and "PIN_LAST_ATTEMPT_GUARD" in result.stdout
    # The subsystems: customs cleared, the operator card refused a grant and the legal-person
    # card granting, the stock-taking document approved.
    assert re.search(r"review CLEARED: entry number \d{18}", result.stdout), result.stdout
    assert "operator card: 非法人卡，不允许操作!" in result.stdout
    assert re.search(r"legal-person card: G\d{12} lets 深圳演示报关有限公司", result.stdout)
    assert re.search(r"unified number B\d{17}, BONDED_APPROVED", result.stdout)
    # The Single Window path: tls install (twice: the second changes nothing), a page's calls
    # over wss with the certificate checked, the envelope key, ws, a foreign origin refused.
    assert "local CA: created" in result.stdout and "local CA: unchanged" in result.stdout
    assert "wss: the certificate of wss.singlewindow.cn checks against the local CA" in \
        result.stdout
    assert "decrypted on the card: 加密证书 demo / envelope demo" in result.stdout
    assert "a page from https://attacker.example is refused: HTTP 403" in result.stdout


def test_a_card_another_program_holds_at_start_is_read_once_it_lets_go(
        tmp_path: Path, test_ca: TestCA, pcscd: Pcscd, sim_slots: Callable[..., SimSlots],
        card_images: dict[str, CardImage]) -> None:
    """The first read of a card fails while another program holds it exclusively; the
    daemon reads it again by itself, so the reader shows the card's id with no client call."""
    sim_slots([(0, card_file(card_images, "sm2", tmp_path))])
    with PcscContext() as other:
        held = other.connect(READER0, exclusive=True)
        with running_daemon(tmp_path / "run", "--trust-anchor",
                            str(test_ca.trust_bundle)) as daemon:
            stub = daemon.stub()
            wait_until(lambda: "trying again" in daemon.log(), timeout=5,
                       what="eportd logs it will try the held card again")
            [entry] = [r for r in stub.ListReaders(pb.ListReadersRequest()).readers
                       if r.name == READER0]
            assert entry.card_present and entry.exclusive_elsewhere and not entry.card_id
            held.close()
            entry = wait_for_card(stub, READER0, timeout=8)
            assert entry.card_id == card_images["sm2"].profile.card_id and not entry.error
