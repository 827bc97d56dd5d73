"""The vpcd link against a fake vpcd on loopback: framing, control bytes, reconnection and
faults, and the control interface's answers to bad requests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from eport.firmware_sim.card_os import load_card
from eport.firmware_sim.control import ControlServer, control_request, handle_request
from eport.firmware_sim.image import CardImage
from eport.firmware_sim.runner import SimulatorRunner, SlotRunner
from tests.support.cards import write_card

SELECT = bytes.fromhex("00A4040005A000000308")


class FakeVpcd:
    """The driver's side of the protocol: listens, accepts the card, speaks first."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(1)
        self.server.settimeout(5)
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)

    def send(self, payload: bytes, *, split: bool = False) -> None:
        assert self.conn is not None
        frame = len(payload).to_bytes(2, "big") + payload
        if split:  # one byte at a time: the card must reassemble
            for b in frame:
                self.conn.sendall(bytes([b]))
        else:
            self.conn.sendall(frame)

    def receive(self) -> bytes:
        assert self.conn is not None
        header = self._exact(2)
        return self._exact(int.from_bytes(header, "big"))

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("card closed the connection")
            data += chunk
        return data

    def transmit(self, apdu: bytes, **kw: bool) -> bytes:
        self.send(apdu, **kw)
        return self.receive()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def vpcd() -> Iterator[FakeVpcd]:
    fake = FakeVpcd()
    yield fake
    fake.close()


@pytest.fixture
def slot(vpcd: FakeVpcd, card_images: dict[str, CardImage], tmp_path: Path
         ) -> Iterator[SlotRunner]:
    runner = SlotRunner(0, write_card(card_images["p256"], tmp_path), load_card, port=vpcd.port)
    runner.start()
    vpcd.accept()
    yield runner
    runner.stop()


def test_control_bytes_atr_and_apdus(vpcd: FakeVpcd, slot: SlotRunner,
                                     card_images: dict[str, CardImage]) -> None:
    vpcd.send(b"\x01")  # power on: no reply
    vpcd.send(b"\x04")
    assert vpcd.receive() == bytes.fromhex("3b88014550 4f52542d4943f2".replace(" ", ""))
    assert vpcd.transmit(SELECT)[-2:] == b"\x90\x00"
    assert vpcd.transmit(SELECT, split=True)[-2:] == b"\x90\x00"
    assert slot.status().apdus == 2


def test_power_off_clears_the_verified_pin(vpcd: FakeVpcd, slot: SlotRunner) -> None:
    assert vpcd.transmit(bytes.fromhex("002000800838383838383838 38".replace(" ", "")))[-2:] == (
        b"\x90\x00")
    assert vpcd.transmit(bytes.fromhex("00200080")) == b"\x90\x00"
    vpcd.send(b"\x00")
    vpcd.send(b"\x01")
    assert vpcd.transmit(bytes.fromhex("00200080")) == b"\x63\xc3"


def test_removal_closes_and_insertion_reconnects(vpcd: FakeVpcd, slot: SlotRunner) -> None:
    slot.remove()
    assert vpcd.conn is not None
    assert vpcd.conn.recv(1) == b""  # removal is a closed connection
    assert not slot.status().inserted
    with pytest.raises(ValueError, match="no card"):
        slot.pull_during_next_apdu()
    slot.insert()
    vpcd.accept()
    assert vpcd.transmit(SELECT)[-2:] == b"\x90\x00"
    with pytest.raises(ValueError, match="already holds a card"):
        slot.insert()


def test_reconnects_when_the_driver_goes_away_and_comes_back(
    card_images: dict[str, CardImage], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeVpcd()
    port = fake.port
    runner = SlotRunner(0, write_card(card_images["p256"], tmp_path), load_card, port=port)
    runner.start()
    try:
        fake.accept()
        fake.close()  # pcscd exits: the listening port disappears
        import time

        time.sleep(0.6)  # several reconnection attempts fail meanwhile
        fake = FakeVpcd(port)  # pcscd is back
        fake.accept()
        assert fake.transmit(SELECT)[-2:] == b"\x90\x00"
        unreachable = [r for r in caplog.records if "not reachable" in r.getMessage()]
        assert len(unreachable) == 1  # one log line per outage, not per attempt
    finally:
        runner.stop()
        fake.close()


def test_pull_before_execute_leaves_the_card_untouched(vpcd: FakeVpcd, slot: SlotRunner,
                                                      tmp_path: Path) -> None:
    slot.pull_during_next_apdu(after_execute=False)
    vpcd.send(bytes.fromhex("00200080083131313131313131"))  # a wrong PIN
    assert vpcd.conn is not None
    assert vpcd.conn.recv(2) == b""
    from eport.firmware_sim.image import read_image

    assert read_image(Path(slot.status().image)).pin.tries_left == 3


def test_pull_after_execute_lets_the_card_act_but_not_answer(vpcd: FakeVpcd,
                                                              slot: SlotRunner) -> None:
    slot.pull_during_next_apdu(after_execute=True)
    vpcd.send(bytes.fromhex("00200080083131313131313131"))
    assert vpcd.conn is not None
    assert vpcd.conn.recv(2) == b""
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
