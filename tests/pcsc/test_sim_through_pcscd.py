"""The simulator as pcscd sees it: hotplug, faults, restarts, the control interface, and the
PIN lockout surviving restarts and kill -9 (acceptance)."""

from __future__ import annotations

import contextlib
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from smartcard.Exceptions import CardConnectionException
from smartcard.System import readers

from eport.cardlib.errors import InvalidPinError, ReferenceBlockedError
from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscConnection, PcscContext, PcscError
from eport.firmware_sim.control import ControlServer, control_request
from eport.firmware_sim.image import CardImage, read_image
from tests.support.cards import write_card
from tests.support.fake_card import FAKE_ATR, FakeCardFactory, write_fake_image
from tests.support.pcsc_stack import (
    Pcscd,
    SimCard,
    SimSlots,
    reader_for_slot,
    start_sim_process,
    wait_for_presence,
)

pytestmark = pytest.mark.pcsc
SELECT = bytes.fromhex("00A4040005A000000308")
STATUS = bytes.fromhex("00200080")


def connect(reader: str) -> tuple[PcscContext, PcscConnection]:
    context = PcscContext()
    return context, context.connect(reader)


def test_removal_and_insertion_are_seen_within_a_second(
    sim_card: Callable[..., SimCard],
) -> None:
    card = sim_card("p256")
    latencies = []
    for _ in range(3):
        card.runner.remove()
        latencies.append(wait_for_presence(card.reader, False, timeout=3))
        card.runner.insert()
        latencies.append(wait_for_presence(card.reader, True, timeout=3))
    print("removal/insertion seen after (s):", [round(x, 3) for x in latencies])
    assert max(latencies) < 1.0


def test_two_cards_in_two_slots(sim_card: Callable[..., SimCard]) -> None:
    first, second = sim_card("p256", slot=0), sim_card("rsa2048", slot=1)
    for card in (first, second):
        context, connection = connect(card.reader)
        try:
            piv = PivSession(connection)
            piv.select()
            assert piv.read_card_id() == card.image.profile.card_id
        finally:
            connection.close()
            context.close()


def test_a_different_card_can_be_inserted(sim_card: Callable[..., SimCard],
                                          card_images: dict[str, CardImage],
                                          tmp_path: Path) -> None:
    card = sim_card("p256")
    other = write_card(card_images["sm2"], tmp_path, "other.json")
    card.runner.remove()
    wait_for_presence(card.reader, False)
    card.runner.insert(other)
    wait_for_presence(card.reader, True)
    context, connection = connect(card.reader)
    try:
        piv = PivSession(connection)
        piv.select()
        assert piv.read_card_id() == card_images["sm2"].profile.card_id
    finally:
        connection.close()
        context.close()


def test_slow_card_delays_every_answer(sim_card: Callable[..., SimCard]) -> None:
    card = sim_card("p256")
    context, connection = connect(card.reader)
    try:
        card.runner.set_delay(150)
        started = time.monotonic()
        assert connection.send_and_receive(SELECT)[1] == 0x9000
        assert time.monotonic() - started >= 0.15
        card.runner.set_delay(0)
        started = time.monotonic()
        assert connection.send_and_receive(SELECT)[1] == 0x9000
        assert time.monotonic() - started < 0.1
    finally:
        connection.close()
        context.close()


@pytest.mark.parametrize("after_execute", [False, True])
def test_card_pulled_during_an_apdu(sim_card: Callable[..., SimCard], after_execute: bool
                                    ) -> None:
    card = sim_card("p256")
    context, connection = connect(card.reader)
    try:
        card.runner.pull_during_next_apdu(after_execute=after_execute)
        with pytest.raises(PcscError):
            connection.send_and_receive(SELECT)
    finally:
        connection.close()
        context.close()
    wait_for_presence(card.reader, False)
    card.runner.insert()
    wait_for_presence(card.reader, True)
    context, connection = connect(card.reader)
    try:
        assert connection.send_and_receive(SELECT)[1] == 0x9000  # works again, no restart
    finally:
        connection.close()
        context.close()


def test_mute_card_holds_its_answer_until_removed(sim_card: Callable[..., SimCard]) -> None:
    card = sim_card("p256")
    context, connection = connect(card.reader)
    outcome: list[object] = []
    card.runner.set_mute(True)

    def transmit() -> None:
        try:
            outcome.append(connection.send_and_receive(SELECT))
        except PcscError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=transmit)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and not outcome  # no answer from a mute card
    card.runner.remove()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], PcscError)
    card.runner.set_mute(False)
    connection.close()
    context.close()


def test_simulator_reconnects_after_pcscd_restarts(
    pcscd: Pcscd, sim_card: Callable[..., SimCard]
) -> None:
    if not pcscd.restartable:
        pytest.skip("pcscd was already running when the tests started: not ours to restart")
    card = sim_card("p256")
    pcscd.restart()
    waited = wait_for_presence(card.reader, True, timeout=10)
    print(f"card present again {waited:.2f} s after pcscd came back")
    context, connection = connect(card.reader)
    try:
        assert connection.send_and_receive(SELECT)[1] == 0x9000
    finally:
        connection.close()
        context.close()


# -- the eport-sim process and its control socket -----------------------------------------


def eport_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eport.firmware_sim", *args],
                          capture_output=True, text=True, timeout=60)


def test_eport_sim_run_and_ctl(pcscd: Pcscd, card_images: dict[str, CardImage],
                               tmp_path: Path) -> None:
    image = write_card(card_images["p256"], tmp_path)
    control = tmp_path / "control.sock"
    process = start_sim_process(image, 0, control)
    reader = reader_for_slot(0)
    try:
        assert control.stat().st_mode & 0o777 == 0o600
        status = eport_sim("ctl", "--control", str(control), "status")
        assert "slot 0: connected" in status.stdout
        assert eport_sim("ctl", "--control", str(control), "remove", "--slot", "0").returncode == 0
        wait_for_presence(reader, False, timeout=2)
        assert "slot 0: removed" in eport_sim("ctl", "--control", str(control), "status").stdout
        assert eport_sim("ctl", "--control", str(control), "insert", "--slot", "0").returncode == 0
        wait_for_presence(reader, True, timeout=2)
        bad = eport_sim("ctl", "--control", str(control), "remove", "--slot", "7")
        assert bad.returncode != 0 and "no card slot 7" in bad.stderr
        delay = eport_sim("ctl", "--control", str(control), "delay", "--slot", "0", "--ms", "-5")
        assert delay.returncode != 0 and "negative" in delay.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    wait_for_presence(reader, False, timeout=3)
    gone = eport_sim("ctl", "--control", str(control), "status")
    assert gone.returncode != 0 and "eport-sim run" in gone.stderr


def test_a_second_simulator_cannot_take_the_same_card(pcscd: Pcscd,
                                                      card_images: dict[str, CardImage],
                                                      tmp_path: Path) -> None:
    image = write_card(card_images["p256"], tmp_path)
    process = start_sim_process(image, 0, tmp_path / "c1.sock")
    try:
        second = eport_sim("run", str(image), "--slot", "1", "--control", str(tmp_path / "c2"))
        assert second.returncode != 0 and "in use by another simulator" in second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    wait_for_presence(reader_for_slot(0), False, timeout=3)


# -- lockout ---------------------------------------------------------------------------------


def _session(reader: str) -> tuple[PcscContext, PcscConnection, PivSession]:
    context, connection = connect(reader)
    piv = PivSession(connection)
    piv.select()
    return context, connection, piv


def test_lockout_survives_restart_and_the_puk_unblocks(
    pcscd: Pcscd, card_images: dict[str, CardImage], tmp_path: Path
) -> None:
    image = write_card(card_images["rsa2048"], tmp_path)
    control = tmp_path / "control.sock"
    reader = reader_for_slot(0)
    process = start_sim_process(image, 0, control)
    try:
        context, connection, piv = _session(reader)
        with pytest.raises(InvalidPinError):
            piv.verify_pin(b"11111111")
        with pytest.raises(InvalidPinError):
            piv.verify_pin(b"11111111")
        with pytest.raises(ReferenceBlockedError):
            piv.verify_pin(b"11111111")
        with pytest.raises(ReferenceBlockedError):
            piv.verify_pin(b"88888888")  # the right PIN no longer helps
        connection.close()
        context.close()
    finally:
        process.kill()  # kill -9: no chance to write anything on the way out
        process.wait()
    wait_for_presence(reader, False, timeout=3)
    process = start_sim_process(image, 0, control)
    try:
        context, connection, piv = _session(reader)
        assert piv.reference_status().blocked
        with pytest.raises(ReferenceBlockedError):
            piv.verify_pin(b"88888888")
        piv.unblock_pin(b"12345678", b"13572468")
        piv.verify_pin(b"13572468")
        for _ in range(3):
            with pytest.raises((InvalidPinError, ReferenceBlockedError)):
                piv.unblock_pin(b"00000000", b"24682468")
        with pytest.raises(ReferenceBlockedError):
            piv.unblock_pin(b"12345678", b"24682468")  # a blocked PUK: card centre only
        connection.close()
        context.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    wait_for_presence(reader, False, timeout=3)
    assert read_image(image).puk.blocked


def test_kill_9_during_verify_through_pcscd(pcscd: Pcscd, card_images: dict[str, CardImage],
                                            tmp_path: Path) -> None:
    """kill -9 the simulator while VERIFY is on its way through pcscd: the counter on disk is
    never above what the card last reported."""
    image = write_card(card_images["p256"], tmp_path)
    reader = reader_for_slot(0)
    rng = random.Random(11)
    rounds = 8
    for _ in range(rounds):
        before = read_image(image).pin.tries_left
        if before <= 1:
            break
        process = start_sim_process(image, 0, tmp_path / "control.sock")
        context, connection, piv = _session(reader)
        answered: list[int] = []

        def verify(piv: PivSession = piv, answered: list[int] = answered) -> None:
            try:
                piv.verify_pin(b"11111111")
            except InvalidPinError as exc:
                answered.append(exc.tries_left)
            except (PcscError, ReferenceBlockedError):
                pass

        worker = threading.Thread(target=verify)
        worker.start()
        time.sleep(rng.uniform(0, 0.006))  # not a wait: a random moment to kill the card at
        process.kill()
        process.wait()
        worker.join(10)
        connection.close(reset=False)
        context.close()
        wait_for_presence(reader, False, timeout=3)
        after = read_image(image).pin.tries_left
        assert after in (before, before - 1)
        if answered:
            assert answered[0] == after


# -- the fake card (tests/support/fake_card.py) through pcscd, as pyscard sees it ------------

ECHO = bytes.fromhex("00EE000003010203")
GET_DATA = bytes.fromhex("00CA000000")


@pytest.fixture
def fake_slots(sim_slots: Callable[..., SimSlots], tmp_path: Path
               ) -> tuple[SimSlots, FakeCardFactory]:
    factory = FakeCardFactory()
    return sim_slots([(0, write_fake_image(tmp_path, "alpha"))], factory=factory), factory


def pyscard_connection(reader_name: str) -> Any:
    reader = next(r for r in readers() if str(r) == reader_name)
    connection = reader.createConnection()
    connection.connect()
    return connection


def test_pyscard_lists_the_reader_and_the_fake_card_answers(
        fake_slots: tuple[SimSlots, FakeCardFactory]) -> None:
    slots, _factory = fake_slots
    assert slots.reader(0) in [str(r) for r in readers()]
    connection = pyscard_connection(slots.reader(0))
    try:
        assert bytes(connection.getATR()) == FAKE_ATR
        data, sw1, sw2 = connection.transmit(list(ECHO))
        assert (bytes(data), sw1, sw2) == (b"\x01\x02\x03", 0x90, 0x00)
        data, sw1, sw2 = connection.transmit(list(GET_DATA))
        assert (bytes(data), sw1, sw2) == (b"alpha\x00", 0x90, 0x00)
    finally:
        connection.disconnect()


def test_removal_and_insertion_through_the_control_socket_within_a_second(
        fake_slots: tuple[SimSlots, FakeCardFactory], tmp_path: Path) -> None:
    slots, _factory = fake_slots
    reader, path = slots.reader(0), tmp_path / "control.sock"
    seen: dict[str, list[float]] = {"removal": [], "insertion": []}
    with ControlServer(slots.runner, path), PcscContext() as context:
        context.card_present(reader)
        for _ in range(5):
            for kind, request, present in (
                    ("removal", {"command": "remove", "slot": 0}, False),
                    ("insertion", {"command": "insert", "slot": 0}, True)):
                started = time.monotonic()
                assert control_request(path, request) == {"ok": True}
                context.wait_for_presence(reader, present=present, timeout=3)
                seen[kind].append(time.monotonic() - started)
        assert control_request(path, {"command": "remove", "slot": 0})["ok"]
        context.wait_for_presence(reader, present=False, timeout=3)
        other = write_fake_image(tmp_path, "beta")
        assert control_request(path, {"command": "insert", "slot": 0, "image": str(other)})["ok"]
        context.wait_for_presence(reader, present=True, timeout=3)
    for kind, latencies in seen.items():
        print(f"{kind} seen by pcscd after (ms): "
              + ", ".join(f"{x * 1000:.0f}" for x in latencies))
    assert max(seen["removal"] + seen["insertion"]) < 1.0
    connection = pyscard_connection(reader)
    try:
        assert bytes(connection.transmit(list(GET_DATA))[0]) == b"beta\x00"  # the other card
    finally:
        connection.disconnect()


def test_slow_fake_card_is_slow_through_pcscd(fake_slots: tuple[SimSlots, FakeCardFactory]
                                               ) -> None:
    slots, _factory = fake_slots
    connection = pyscard_connection(slots.reader(0))
    try:
        slots.slot(0).set_delay(200)
        started = time.monotonic()
        assert connection.transmit(list(ECHO))[1:] == (0x90, 0x00)
        assert time.monotonic() - started >= 0.2
        slots.slot(0).set_delay(0)
        started = time.monotonic()
        assert connection.transmit(list(ECHO))[1:] == (0x90, 0x00)
        assert time.monotonic() - started < 0.1
    finally:
        connection.disconnect()


@pytest.mark.parametrize("after_execute", [False, True])
def test_fake_card_pulled_during_an_apdu_fails_the_transmit(
        fake_slots: tuple[SimSlots, FakeCardFactory], after_execute: bool) -> None:
    slots, factory = fake_slots
    card = factory.latest("alpha")
    connection = pyscard_connection(slots.reader(0))
    try:
        executed = card.executed
        slots.slot(0).pull_during_next_apdu(after_execute=after_execute)
        with pytest.raises(CardConnectionException):
            connection.transmit(list(ECHO))
        assert card.executed == executed + (1 if after_execute else 0)
    finally:
        with contextlib.suppress(CardConnectionException):
            connection.disconnect()
    wait_for_presence(slots.reader(0), False, timeout=3)
    assert not slots.slot(0).status().inserted  # stays out until inserted again
    slots.insert(0)
    connection = pyscard_connection(slots.reader(0))
    try:
        assert connection.transmit(list(ECHO))[1:] == (0x90, 0x00)
    finally:
        connection.disconnect()


def test_apdu_round_trip_through_pcscd_is_sub_millisecond(
        fake_slots: tuple[SimSlots, FakeCardFactory]) -> None:
    slots, _factory = fake_slots
    with PcscContext() as context:
        connection = context.connect(slots.reader(0))
        try:
            for _ in range(50):
                connection.send_and_receive(ECHO)
            samples = []
            for _ in range(2000):
                started = time.perf_counter()
                connection.send_and_receive(ECHO)
                samples.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
    samples.sort()
    median, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    print(f"APDU round trip through pcscd (fake card, n=2000): median {median:.3f} ms, "
          f"p99 {p99:.3f} ms")
    # Without TCP_NODELAY/TCP_QUICKACK this is ~50 ms; the margin keeps slow CI machines green.
    assert median < 5.0
