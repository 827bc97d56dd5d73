"""The vpcd link against a fake vpcd on loopback: framing, control bytes, reconnection and
faults, and the control interface's answers to bad requests."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eport.firmware_sim.card_os import load_card
from eport.firmware_sim.cli_run import ctl_group, run_command
from eport.firmware_sim.control import (
    ControlServer,
    control_request,
    default_control_path,
    handle_request,
)
from eport.firmware_sim.image import CardImage
from eport.firmware_sim.runner import SimulatorRunner, SlotRunner
from eport.firmware_sim.vpcd import VpcdLink, VpcdProtocolError, execute_apdu
from tests.support.cards import write_card
from tests.support.fake_card import FAKE_ATR, FakeCard, FakeCardFactory, write_fake_image
from tests.support.waiting import wait_until

SELECT = bytes.fromhex("00A4040005A000000308")


class Driver:
    """The driver's side of vpcd: listens on one port, accepts the card, speaks first."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(1)
        self.server.settimeout(5)
        self.port: int = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> socket.socket:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)
        return self.conn

    def send_raw(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def send(self, payload: bytes, *, split: bool = False) -> None:
        frame = len(payload).to_bytes(2, "big") + payload
        if split:  # one byte at a time: the card must reassemble
            for byte in frame:
                self.send_raw(bytes([byte]))
        else:
            self.send_raw(frame)

    def receive(self) -> bytes:
        header = self._exact(2)
        return self._exact(int.from_bytes(header, "big"))

    def transmit(self, payload: bytes, *, split: bool = False) -> bytes:
        self.send(payload, split=split)
        return self.receive()

    def closed_by_card(self, timeout: float = 2.0) -> bool:
        """True when the card side closed the connection (removal) without sending more."""
        assert self.conn is not None
        self.conn.settimeout(timeout)
        try:
            return self.conn.recv(1) == b""
        except TimeoutError:
            return False
        finally:
            self.conn.settimeout(5)

    def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives and the connection stays open for `seconds`."""
        assert self.conn is not None
        self.conn.settimeout(seconds)
        try:
            self.conn.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.conn.settimeout(5)
        return False

    def _exact(self, size: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < size:
            chunk = self.conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the card closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def driver() -> Iterator[Driver]:
    side = Driver()
    yield side
    side.close()


@pytest.fixture
def slot(driver: Driver, card_images: dict[str, CardImage], tmp_path: Path
         ) -> Iterator[SlotRunner]:
    runner = SlotRunner(0, write_card(card_images["p256"], tmp_path), load_card, port=driver.port)
    runner.start()
    driver.accept()
    yield runner
    runner.stop()


def test_control_bytes_atr_and_apdus(driver: Driver, slot: SlotRunner,
                                     card_images: dict[str, CardImage]) -> None:
    driver.send(b"\x01")  # power on: no reply
    driver.send(b"\x04")
    assert driver.receive() == bytes.fromhex("3b88014550 4f52542d4943f2".replace(" ", ""))
    assert driver.transmit(SELECT)[-2:] == b"\x90\x00"
    assert driver.transmit(SELECT, split=True)[-2:] == b"\x90\x00"
    assert slot.status().apdus == 2


def test_power_off_clears_the_verified_pin(driver: Driver, slot: SlotRunner) -> None:
    assert driver.transmit(bytes.fromhex("002000800838383838383838 38".replace(" ", "")))[-2:] == (
        b"\x90\x00")
    assert driver.transmit(bytes.fromhex("00200080")) == b"\x90\x00"
    driver.send(b"\x00")
    driver.send(b"\x01")
    assert driver.transmit(bytes.fromhex("00200080")) == b"\x63\xc3"


def test_removal_closes_and_insertion_reconnects(driver: Driver, slot: SlotRunner) -> None:
    slot.remove()
    assert driver.conn is not None
    assert driver.conn.recv(1) == b""  # removal is a closed connection
    assert not slot.status().inserted
    with pytest.raises(ValueError, match="no card"):
        slot.pull_during_next_apdu()
    slot.insert()
    driver.accept()
    assert driver.transmit(SELECT)[-2:] == b"\x90\x00"
    with pytest.raises(ValueError, match="already holds a card"):
        slot.insert()


def test_reconnects_when_the_driver_goes_away_and_comes_back(
    card_images: dict[str, CardImage], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = Driver()
    port = fake.port
    runner = SlotRunner(0, write_card(card_images["p256"], tmp_path), load_card, port=port)
    runner.start()
    try:
        fake.accept()
        fake.close()  # pcscd exits: the listening port disappears
        wait_until(lambda: any("not reachable" in r.getMessage() for r in caplog.records),
                   timeout=10, what="the slot has failed to reconnect and said so")
        fake = Driver(port)  # pcscd is back
        fake.accept()
        assert fake.transmit(SELECT)[-2:] == b"\x90\x00"
        unreachable = [r for r in caplog.records if "not reachable" in r.getMessage()]
        assert len(unreachable) == 1  # one log line per outage, not per attempt
    finally:
        runner.stop()
        fake.close()


def test_pull_before_execute_leaves_the_card_untouched(driver: Driver, slot: SlotRunner,
                                                      tmp_path: Path) -> None:
    slot.pull_during_next_apdu(after_execute=False)
    driver.send(bytes.fromhex("00200080083131313131313131"))  # a wrong PIN
    assert driver.conn is not None
    assert driver.conn.recv(2) == b""
    from eport.firmware_sim.image import read_image

    assert read_image(Path(slot.status().image)).pin.tries_left == 3


def test_pull_after_execute_lets_the_card_act_but_not_answer(driver: Driver,
                                                              slot: SlotRunner) -> None:
    slot.pull_during_next_apdu(after_execute=True)
    driver.send(bytes.fromhex("00200080083131313131313131"))
    assert driver.conn is not None
    assert driver.conn.recv(2) == b""
    from eport.firmware_sim.image import read_image

    assert read_image(Path(slot.status().image)).pin.tries_left == 2


def test_control_requests_and_their_errors(card_images: dict[str, CardImage],
                                           tmp_path: Path) -> None:
    runner = SimulatorRunner(load_card, base_port=1)  # never started: no connection needed
    runner.add_slot(0, write_card(card_images["p256"], tmp_path))
    try:
        assert handle_request(runner, {"command": "status"})["slots"][0]["inserted"] is True
        assert handle_request(runner, {"command": "delay", "slot": 0, "ms": 25}) == {"ok": True}
        assert runner.slot(0).status().delay_ms == 25
        bad = [
            ([1, 2], "JSON object"),
            ({"command": "explode"}, "unknown command"),
            ({"command": "remove", "slot": "0"}, "integer"),
            ({"command": "remove", "slot": 3}, "no card slot 3"),
            ({"command": "delay", "slot": 0, "ms": "fast"}, "number"),
            ({"command": "delay", "slot": 0, "ms": -1}, "negative"),
            ({"command": "delay", "slot": 0, "ms": 5, "ins": "87"}, "instruction byte"),
            ({"command": "delay", "slot": 0, "ms": 5, "ins": 300}, "one byte"),
            ({"command": "insert", "slot": 0}, "already holds"),
        ]
        for request, message in bad:
            reply = handle_request(runner, request)
            assert reply["ok"] is False and message in reply["error"], (request, reply)
        assert handle_request(runner, {"command": "remove", "slot": 0}) == {"ok": True}
        missing = handle_request(runner, {"command": "insert", "slot": 0,
                                          "image": str(tmp_path / "nope.json")})
        assert missing["ok"] is False and "does not exist" in missing["error"]
        assert handle_request(runner, {"command": "insert", "slot": 0}) == {"ok": True}
    finally:
        runner.stop()


def test_control_socket_is_private_and_answers_garbage(card_images: dict[str, CardImage],
                                                       tmp_path: Path) -> None:
    runner = SimulatorRunner(load_card, base_port=1)
    runner.add_slot(0, write_card(card_images["p256"], tmp_path))
    path = tmp_path / "ctl" / "control.sock"
    server = ControlServer(runner, path)
    server.start()
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(path))
            raw.sendall(b"{not json\n")
            assert b"not JSON" in raw.makefile("rb").readline()
        assert control_request(path, {"command": "status"})["ok"] is True
        with pytest.raises(RuntimeError, match="already serves"):
            ControlServer(runner, path)
    finally:
        server.stop()
        runner.stop()
    assert not path.exists()


# -- the link and the runner with the fake card (tests/support/fake_card.py) ----------------


@pytest.fixture
def linked(driver: Driver) -> Iterator[tuple[VpcdLink, FakeCard, threading.Thread,
                                              list[BaseException]]]:
    """A VpcdLink serving a FakeCard in a thread, connected to `driver`."""
    card = FakeCard()
    link = VpcdLink.connect("127.0.0.1", driver.port)
    driver.accept()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            link.serve(card)
        except (OSError, VpcdProtocolError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield link, card, thread, errors
    link.close()
    thread.join(5)


ECHO = bytes.fromhex("00EE000003010203")
GET_DATA = bytes.fromhex("00CA000000")
VERIFY = bytes.fromhex("0020008000")


def test_link_control_bytes_atr_and_apdu(driver: Driver, linked: Any) -> None:
    link, card, _thread, _errors = linked
    driver.send(b"\x01")  # power on: no reply
    assert driver.transmit(b"\x04") == FAKE_ATR
    assert driver.transmit(ECHO) == bytes.fromhex("0102039000")
    driver.send(b"\x02")  # reset: no reply
    driver.send(b"\x00")  # power off: no reply
    assert driver.transmit(b"\x04") == FAKE_ATR  # GET ATR is answered even unpowered
    assert card.events == ["on", ECHO.hex(), "reset", "off"]
    assert link.frames_received == 6


def test_link_sets_nodelay(driver: Driver) -> None:
    with VpcdLink.connect("127.0.0.1", driver.port) as link:
        assert link._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_link_reassembles_frames_however_tcp_cuts_them(driver: Driver, linked: Any) -> None:
    frame = len(ECHO).to_bytes(2, "big") + ECHO
    for piece in (frame[:1], frame[1:2], frame[2:5], frame[5:]):
        driver.send_raw(piece)
        time.sleep(0.01)  # not a wait: separate TCP segments, the link must wait for the rest
    assert driver.receive() == bytes.fromhex("0102039000")
    # and the other way round: three frames in one segment
    driver.send_raw(b"\x00\x01\x04" + frame + b"\x00\x01\x04")
    assert driver.receive() == FAKE_ATR
    assert driver.receive() == bytes.fromhex("0102039000")
    assert driver.receive() == FAKE_ATR


def test_link_returns_when_the_peer_closes(driver: Driver, linked: Any) -> None:
    _link, _card, thread, errors = linked
    assert driver.transmit(b"\x04") == FAKE_ATR
    assert driver.conn is not None
    driver.conn.close()
    thread.join(2)
    assert not thread.is_alive() and errors == []  # a clean close is not an error


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x00\x00", "empty frame"),
    (b"\x00\x05\x00\xa4", "middle of a frame"),
    (b"\x00", "middle of a frame"),
])
def test_link_reports_broken_frames(driver: Driver, linked: Any, raw: bytes, message: str
                                    ) -> None:
    _link, _card, thread, errors = linked
    driver.send_raw(raw)
    if message == "middle of a frame":
        assert driver.conn is not None
        driver.conn.shutdown(socket.SHUT_WR)  # the peer goes away mid-frame
    thread.join(2)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], VpcdProtocolError)
    assert message in str(errors[0])


def test_a_one_byte_apdu_is_answered_6700_and_the_link_goes_on(driver: Driver, linked: Any
                                                                ) -> None:
    """vpcd passes a 1-byte APDU from any PC/SC program on as a 1-byte message: every byte
    that is not a control code gets 6700, and the card still answers afterwards."""
    _link, _card, thread, errors = linked
    for byte in sorted(set(range(256)) - {0x00, 0x01, 0x02, 0x04}):
        assert driver.transmit(bytes([byte])) == b"\x67\x00", f"{byte:02X}"
    assert driver.transmit(b"\x04") == FAKE_ATR  # still a card, no stray reply in between
    assert driver.transmit(SELECT)[-2:] == b"\x90\x00"
    assert thread.is_alive() and not errors


def test_unframeable_or_failed_answers_become_6f00(driver: Driver, linked: Any) -> None:
    _link, card, thread, _errors = linked
    card.answer_override = b""  # vpcd would eject the card on an empty reply
    assert driver.transmit(ECHO) == b"\x6f\x00"
    card.answer_override = b"\x01" * 70_000  # over the 2-byte length
    assert driver.transmit(ECHO) == b"\x6f\x00"
    card.answer_override = None
    card.raise_on_execute = RuntimeError("card bug")
    assert driver.transmit(ECHO) == b"\x6f\x00"
    card.raise_on_execute = None
    assert driver.transmit(ECHO) == bytes.fromhex("0102039000")  # still serving
    assert thread.is_alive()


def test_largest_answer_that_fits_a_frame(driver: Driver, linked: Any) -> None:
    assert len(driver.transmit(bytes.fromhex("00E0FFFD"))) == 0xFFFF
    assert driver.transmit(bytes.fromhex("00E0FFFE")) == b"\x6f\x00"


def test_shutdown_from_another_thread_ends_serve(driver: Driver, linked: Any) -> None:
    link, _card, thread, errors = linked
    link.shutdown()
    thread.join(2)
    assert not thread.is_alive() and errors == []
    assert driver.closed_by_card()


def test_execute_apdu_helper_passes_good_answers_through() -> None:
    assert execute_apdu(FakeCard(), ECHO) == bytes.fromhex("0102039000")


# -- slot runner with the fake card --------------------------------------------------------


@pytest.fixture
def fake_factory() -> FakeCardFactory:
    return FakeCardFactory()


@pytest.fixture
def fake_slot(driver: Driver, fake_factory: FakeCardFactory, tmp_path: Path
              ) -> Iterator[SlotRunner]:
    runner = SlotRunner(0, write_fake_image(tmp_path, "alpha"), fake_factory, port=driver.port)
    runner.start()
    driver.accept()
    yield runner
    runner.stop()


def test_status_reports_the_slot(driver: Driver, fake_slot: SlotRunner, tmp_path: Path) -> None:
    assert driver.transmit(ECHO)[-2:] == b"\x90\x00"
    fake_slot.set_delay(5)
    fake_slot.set_mute(False)
    fake_slot.pull_during_next_apdu(after_execute=True)
    wait_until(lambda: fake_slot.status().connected, timeout=2, interval=0.005,
               what="the slot is connected")
    status = fake_slot.status().to_json()
    assert status == {"slot": 0, "port": driver.port, "image": str(tmp_path / "alpha.fake.json"),
                      "inserted": True, "connected": True, "delay_ms": 5.0, "delay_ins": None,
                      "mute": False,
                      "pending_pull": "after", "apdus": 1}


def test_losing_the_connection_powers_the_card_off(driver: Driver, fake_slot: SlotRunner,
                                                   fake_factory: FakeCardFactory) -> None:
    card = fake_factory.latest("alpha")
    assert driver.transmit(VERIFY)[-2:] == b"\x90\x00"
    assert card.verified
    assert driver.conn is not None
    driver.conn.close()  # pcscd goes away
    wait_until(lambda: not card.verified and card.events[-1] == "off", timeout=2,
               interval=0.005, what="the card is powered off")
    driver.accept()  # and comes back: the slot reconnects by itself
    assert driver.transmit(GET_DATA) == b"alpha\x00\x90\x00"


def test_backoff_starts_short_doubles_and_is_capped(monkeypatch: pytest.MonkeyPatch,
                                                    fake_factory: FakeCardFactory,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[float] = []

    def refuse(*_args: object, **_kwargs: object) -> VpcdLink:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(VpcdLink, "connect", refuse)
    caplog.set_level(logging.INFO, logger="eport.firmware_sim.runner")
    runner = SlotRunner(0, write_fake_image(tmp_path, "alpha"), fake_factory, port=1)
    runner.start()
    try:
        wait_until(lambda: len(attempts) >= 8, timeout=6, interval=0.005,
                   what="eight connection attempts")
    finally:
        runner.stop()
    gaps = [b - a for a, b in itertools.pairwise(attempts[:8])]
    assert 0.04 <= gaps[0] <= 0.15  # starts at ~50 ms
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(gaps[:5]))
    assert max(gaps) <= 1.2  # capped at ~1 s
    assert gaps[-1] >= 0.9
    outage_lines = [r for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(outage_lines) == 1  # once per outage, not per attempt


def test_a_port_that_accepts_and_closes_does_not_cause_a_tight_loop(
        driver: Driver, fake_factory: FakeCardFactory, tmp_path: Path) -> None:
    runner = SlotRunner(0, write_fake_image(tmp_path, "alpha"), fake_factory, port=driver.port)
    runner.start()
    accepted = 0
    deadline = time.monotonic() + 1.0  # not a wait: counting attempts in a one-second window
    try:
        driver.server.settimeout(0.1)
        while time.monotonic() < deadline:  # not a wait: the window above
            try:
                conn, _ = driver.server.accept()
            except TimeoutError:
                continue
            accepted += 1
            conn.close()  # like a pcscd that is shutting down
    finally:
        runner.stop()
    assert 2 <= accepted <= 8  # backing off: 0, 50, 150, 350, 750 ms


def test_outage_is_logged_once_and_the_recovery_too(fake_factory: FakeCardFactory,
                                                   tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eport.firmware_sim.runner")
    first = Driver()
    port = first.port
    first.close()  # nothing listens: pcscd is not running yet
    runner = SlotRunner(0, write_fake_image(tmp_path, "alpha"), fake_factory, port=port)
    runner.start()
    try:
        wait_until(lambda: any("not reachable" in r.getMessage() for r in caplog.records),
                   timeout=10, what="the outage is logged")
        back = Driver(port)
        try:
            back.accept()
            assert back.transmit(GET_DATA) == b"alpha\x00\x90\x00"
            # Stopped while the driver is still there: closing it first is a second outage,
            # which the runner (rightly) logs as well if it notices before it is stopped.
            runner.stop()
        finally:
            back.close()
    finally:
        runner.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not reachable" in m for m in messages) == 1
    assert sum("connected to vpcd again" in m for m in messages) == 1


def test_slow_card_and_removal_cuts_a_long_delay_short(driver: Driver,
                                                      fake_slot: SlotRunner) -> None:
    fake_slot.set_delay(120)
    started = time.monotonic()
    assert driver.transmit(ECHO)[-2:] == b"\x90\x00"
    assert time.monotonic() - started >= 0.12
    fake_slot.set_delay(10_000)
    answered = fake_slot.status().apdus
    driver.send(ECHO)
    wait_until(lambda: fake_slot.status().apdus > answered, timeout=5, interval=0.005,
               what="the card is inside its long delay")
    started = time.monotonic()
    fake_slot.remove()
    assert driver.closed_by_card()
    assert time.monotonic() - started < 0.5


def test_a_delay_for_one_instruction_slows_only_that_instruction(driver: Driver,
                                                                fake_slot: SlotRunner) -> None:
    general_authenticate = bytes.fromhex("0087119C047C028100")
    chained = bytes.fromhex("1087119C047C028100")  # not the last APDU of its chain
    fake_slot.set_delay(800, ins=0x87)
    assert fake_slot.status().to_json()["delay_ins"] == 0x87
    started = time.monotonic()
    driver.transmit(general_authenticate)
    assert time.monotonic() - started >= 0.8
    for apdu in (ECHO, VERIFY, chained):
        started = time.monotonic()
        driver.transmit(apdu)
        assert time.monotonic() - started < 0.4, apdu.hex()  # well under the 800 ms delay
    fake_slot.set_delay(0)
    assert fake_slot.status().to_json()["delay_ins"] is None
    with pytest.raises(ValueError, match="one byte"):
        fake_slot.set_delay(10, ins=0x100)


def test_mute_card_holds_the_answer_until_unmuted(driver: Driver, fake_slot: SlotRunner,
                                                  fake_factory: FakeCardFactory) -> None:
    fake_slot.set_mute(True)
    driver.send(ECHO)
    assert driver.silent_for(0.3)  # received, not answered, connection open
    assert fake_slot.status().connected and fake_slot.status().apdus == 1
    assert fake_factory.latest("alpha").executed == 0
    fake_slot.set_mute(False)
    assert driver.receive() == bytes.fromhex("0102039000")


def test_mute_card_removed_never_answers(driver: Driver, fake_slot: SlotRunner,
                                         fake_factory: FakeCardFactory) -> None:
    fake_slot.set_mute(True)
    driver.send(ECHO)
    assert driver.silent_for(0.2)
    fake_slot.remove()
    assert driver.closed_by_card()
    assert fake_factory.latest("alpha").executed == 0


@pytest.mark.parametrize("after_execute", [False, True])
def test_pull_during_the_next_apdu(driver: Driver, fake_slot: SlotRunner,
                                   fake_factory: FakeCardFactory, after_execute: bool) -> None:
    card = fake_factory.latest("alpha")
    assert driver.transmit(b"\x04") == FAKE_ATR  # control bytes do not trigger the pull
    fake_slot.pull_during_next_apdu(after_execute=after_execute)
    assert driver.transmit(b"\x04") == FAKE_ATR
    driver.send(ECHO)
    assert driver.closed_by_card()
    assert card.executed == (1 if after_execute else 0)
    status = fake_slot.status()
    assert not status.inserted and status.pending_pull is None
    # it stays out: nobody connects until insert()
    driver.server.settimeout(0.3)
    with pytest.raises(TimeoutError):
        driver.server.accept()
    driver.server.settimeout(5)
    fake_slot.insert()
    driver.accept()
    assert driver.transmit(ECHO) == bytes.fromhex("0102039000")


def test_insert_a_different_card_releases_the_old_one(driver: Driver, fake_slot: SlotRunner,
                                                      fake_factory: FakeCardFactory,
                                                      tmp_path: Path) -> None:
    old = fake_factory.latest("alpha")
    fake_slot.remove()
    assert driver.closed_by_card()
    with pytest.raises(FileNotFoundError):
        fake_slot.insert(tmp_path / "missing.json")  # the old card stays
    assert not old.closed and not fake_slot.status().inserted
    fake_slot.insert(write_fake_image(tmp_path, "beta"))
    assert old.closed
    driver.accept()
    assert driver.transmit(GET_DATA) == b"beta\x00\x90\x00"
    assert fake_slot.status().image.endswith("beta.fake.json")


def test_stop_is_safe_before_start_and_twice(fake_factory: FakeCardFactory,
                                             tmp_path: Path) -> None:
    runner = SlotRunner(0, write_fake_image(tmp_path, "alpha"), fake_factory, port=1)
    runner.stop()
    runner.stop()
    assert fake_factory.latest("alpha").closed


def consecutive_drivers() -> tuple[Driver, Driver]:
    """Drivers on ports P and P+1, as pcscd's vpcd listens for slots 0 and 1."""
    for _ in range(20):
        first = Driver()
        try:
            return first, Driver(first.port + 1)
        except OSError:
            first.close()
    pytest.skip("no two consecutive free ports on loopback")


def test_simulator_runner_holds_several_slots(fake_factory: FakeCardFactory,
                                              tmp_path: Path) -> None:
    first, second = consecutive_drivers()
    try:
        with SimulatorRunner(fake_factory, base_port=first.port) as runner:
            runner.add_slot(0, write_fake_image(tmp_path, "alpha"))
            first.accept()
            # a slot added to a running simulator starts at once
            runner.add_slot(1, write_fake_image(tmp_path, "beta"))
            second.accept()
            assert first.transmit(GET_DATA) == b"alpha\x00\x90\x00"
            assert second.transmit(GET_DATA) == b"beta\x00\x90\x00"
            assert [s.slot for s in runner.status()] == [0, 1]
            with pytest.raises(ValueError, match="already in use"):
                runner.add_slot(0, write_fake_image(tmp_path, "gamma"))
        assert first.closed_by_card() and second.closed_by_card()
        assert all(card.closed for card in fake_factory.cards)
    finally:
        first.close()
        second.close()


# -- control interface with the fake card --------------------------------------------------


@pytest.fixture
def fake_runner(fake_factory: FakeCardFactory, tmp_path: Path) -> Iterator[SimulatorRunner]:
    runner = SimulatorRunner(fake_factory, base_port=1)  # never started: no connection needed
    runner.add_slot(0, write_fake_image(tmp_path, "alpha"))
    yield runner
    runner.stop()


@pytest.mark.parametrize(("request_", "message"), [
    ({"command": "mute", "slot": 0, "on": "false"}, "'on' must be true or false"),
    ({"command": "pull", "slot": 0, "after_execute": 1}, "'after_execute' must be true or"),
    ({"command": "insert", "slot": 0, "image": 5}, "'image' must be"),
    ({"command": "delay", "slot": 0, "ms": True}, "'ms' must be a number"),
    ({"command": "mute", "slot": 9, "on": True}, "no card slot 9; slots: [0]"),
    ({"command": "remove"}, "'slot' must be an integer"),
    ({"slot": 0}, "unknown command None"),
])
def test_control_rejects_bad_arguments(fake_runner: SimulatorRunner, request_: dict[str, Any],
                                       message: str) -> None:
    reply = handle_request(fake_runner, request_)
    assert reply["ok"] is False and message in reply["error"], reply
    assert fake_runner.slot(0).status().mute is False  # nothing was changed


def test_control_commands_reach_the_slot(fake_runner: SimulatorRunner, tmp_path: Path) -> None:
    slot = fake_runner.slot(0)
    assert handle_request(fake_runner, {"command": "mute", "slot": 0, "on": True})["ok"]
    assert slot.status().mute
    assert handle_request(fake_runner, {"command": "mute", "slot": 0, "on": False})["ok"]
    assert handle_request(fake_runner, {"command": "pull", "slot": 0, "after_execute": True}
                          )["ok"]
    assert slot.status().pending_pull == "after"
    assert handle_request(fake_runner, {"command": "remove", "slot": 0})["ok"]
    bad_image = tmp_path / "bad.json"
    bad_image.write_text("[]")
    reply = handle_request(fake_runner, {"command": "insert", "slot": 0,
                                         "image": str(bad_image)})
    assert not reply["ok"] and "not a fake card image" in reply["error"]
    missing = handle_request(fake_runner, {"command": "insert", "slot": 0,
                                           "image": str(tmp_path / "nope")})
    assert not missing["ok"] and "cannot load the card image" in missing["error"]
    other = write_fake_image(tmp_path, "beta")
    assert handle_request(fake_runner, {"command": "insert", "slot": 0, "image": str(other)}
                          )["ok"]
    assert slot.status().image == str(other) and slot.status().inserted


def test_control_socket_survives_bad_requests(fake_runner: SimulatorRunner, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ctl" / "control.sock"
    with ControlServer(fake_runner, path), socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(path))
        replies = raw.makefile("rb")
        raw.sendall(b'\n{"command": "status"}\n[1]\n')  # blank line skipped; two replies
        assert json.loads(replies.readline())["ok"] is True
        assert "JSON object" in json.loads(replies.readline())["error"]

        def broken() -> list[Any]:
            raise KeyError("bug")

        monkeypatch.setattr(fake_runner, "status", broken)
        raw.sendall(b'{"command": "status"}\n')
        assert "internal error" in json.loads(replies.readline())["error"]
        monkeypatch.undo()
        raw.sendall(b'{"command": "remove", "slot": 0}\n')  # the same connection still works
        assert json.loads(replies.readline()) == {"ok": True}
        raw.sendall(b"x" * (70 * 1024) + b"\n")
        assert "too long" in json.loads(replies.readline())["error"]
        assert control_request(path, {"command": "status"})["slots"][0]["inserted"] is False


def test_control_directory_is_made_private(fake_runner: SimulatorRunner, tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with ControlServer(fake_runner, directory / "control.sock"):
        assert directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another user")
def test_control_refuses_a_directory_owned_by_someone_else(fake_runner: SimulatorRunner,
                                                           tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(RuntimeError, match="not a directory owned by this user"):
        ControlServer(fake_runner, directory / "control.sock")


def test_control_request_reports_a_silent_server(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(ConnectionError, match="without a reply"):
            control_request(path, {"command": "status"})
        thread.join(2)
    with pytest.raises(OSError):
        control_request(tmp_path / "nobody.sock", {"command": "status"})


def test_default_control_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_control_path() == Path("/run/user/1000/eport-sim/control.sock")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_control_path() == Path(f"/tmp/eport-sim-{os.getuid()}/control.sock")


# -- eport-sim run / ctl with the fake card -------------------------------------------------


def test_ctl_commands_against_a_running_control_server(fake_runner: SimulatorRunner,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    cli = CliRunner()
    with ControlServer(fake_runner, path):
        result = cli.invoke(ctl_group, ["--control", str(path), "status"])
        assert result.exit_code == 0 and "slot 0: waiting for pcscd" in result.output
        assert cli.invoke(ctl_group, ["--control", str(path), "delay", "--slot", "0",
                                      "--ms", "30"]).exit_code == 0
        assert cli.invoke(ctl_group, ["--control", str(path), "mute", "--slot", "0"]
                          ).exit_code == 0
        status = cli.invoke(ctl_group, ["--control", str(path), "status", "--json"])
        assert json.loads(status.output)[0]["delay_ms"] == 30 and '"mute": true' in status.output
        assert cli.invoke(ctl_group, ["--control", str(path), "delay", "--slot", "0",
                                      "--ms", "250", "--ins", "87"]).exit_code == 0
        assert json.loads(cli.invoke(ctl_group, ["--control", str(path), "status", "--json"]
                                     ).output)[0]["delay_ins"] == 0x87
        assert "delay 250 ms for INS 87" in cli.invoke(
            ctl_group, ["--control", str(path), "status"]).output
        for wrong in ("GA", "1FF", ""):
            refused = cli.invoke(ctl_group, ["--control", str(path), "delay", "--ms", "5",
                                             "--ins", wrong])
            assert refused.exit_code == 2 and "instruction byte in hex" in refused.output
        bad = cli.invoke(ctl_group, ["--control", str(path), "remove", "--slot", "4"])
        assert bad.exit_code != 0 and "no card slot 4" in bad.output
    gone = cli.invoke(ctl_group, ["--control", str(path), "status"])
    assert gone.exit_code != 0 and "eport-sim run" in gone.output


def test_run_serves_cards_until_sigterm(monkeypatch: pytest.MonkeyPatch,
                                        fake_factory: FakeCardFactory, tmp_path: Path) -> None:
    monkeypatch.setattr("eport.firmware_sim.image.load_card", fake_factory)
    first, second = consecutive_drivers()
    cards = [write_fake_image(tmp_path, "alpha"), write_fake_image(tmp_path, "beta")]
    control = tmp_path / "control.sock"
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    answers: list[bytes] = []

    def drive() -> None:
        try:
            first.accept()
            second.accept()
            answers.extend([first.transmit(GET_DATA), second.transmit(GET_DATA)])
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # always, or run would wait forever

    driver_thread = threading.Thread(target=drive, daemon=True)
    driver_thread.start()
    try:
        result = CliRunner().invoke(run_command, [*map(str, cards), "--slot", "0", "--port",
                                                  str(first.port), "--control", str(control)])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        driver_thread.join(5)
        first.close()
        second.close()
    assert result.exit_code == 0, result.output
    assert answers == [b"alpha\x00\x90\x00", b"beta\x00\x90\x00"]
    assert f"slot 0: {cards[0]} -> Virtual PCD 00 00 (vpcd 127.0.0.1:{first.port})" in (
        result.output)
    assert "slot 1:" in result.output and "Virtual PCD 00 01" in result.output
    assert not control.exists()  # removed on the way out
    assert all(card.closed for card in fake_factory.cards)


def test_run_reports_a_card_that_cannot_be_loaded(monkeypatch: pytest.MonkeyPatch,
                                                  fake_factory: FakeCardFactory,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr("eport.firmware_sim.image.load_card", fake_factory)
    good = write_fake_image(tmp_path, "alpha")
    bad = tmp_path / "bad.json"
    bad.write_text('{"label": 1}')
    result = CliRunner().invoke(run_command, [str(good), str(bad), "--control",
                                              str(tmp_path / "c.sock")])
    assert result.exit_code != 0 and "not a fake card image" in result.output
    assert fake_factory.latest("alpha").closed  # the card loaded first was released
