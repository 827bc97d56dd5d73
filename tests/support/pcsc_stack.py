"""The real PC/SC stack for the pcsc test tier: pcscd with the vpcd driver, simulated cards.

pcscd is started when it is not running (and stopped at the end if we started it). When the
stack cannot be had, pcsc tests skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from eport.daemon.transport.pcsc import PcscContext, PcscError
from eport.firmware_sim.demo import vpcd_reader_name
from eport.firmware_sim.image import CardImage, load_card
from eport.firmware_sim.runner import CardFactory, SimulatorRunner, SlotRunner

VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")


reader_for_slot = vpcd_reader_name


def stack_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the pcsc test stack cannot start (CI=true): {reason}")
    pytest.skip(f"pcsc test stack unavailable: {reason}")


def vpcd_readers_present() -> bool:
    try:
        with PcscContext() as context:
            return all(r in context.list_readers() for r in VPCD_READERS)
    except PcscError:
        return False


def wait_for(condition: object, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(interval)
    return bool(callable(condition) and condition())


@dataclass
class Pcscd:
    """pcscd as the tests found or started it."""

    process: subprocess.Popen[bytes] | None  # None: it was already running

    @property
    def restartable(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.process = _spawn_pcscd()
        if not wait_for(vpcd_readers_present, 15):
            raise RuntimeError("pcscd did not come back with the vpcd readers")


def _spawn_pcscd() -> subprocess.Popen[bytes]:
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    return subprocess.Popen([pcscd, "--foreground"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_pcscd_if_needed() -> Pcscd:
    if vpcd_readers_present():
        return Pcscd(None)
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not Path(pcscd).exists():
        stack_unavailable("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    if not Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists():
        stack_unavailable("the vpcd driver is not installed (apt-get install vsmartcard-vpcd)")
    process = _spawn_pcscd()
    if not wait_for(vpcd_readers_present, 15):
        process.kill()
        stack_unavailable("pcscd started but the vpcd readers did not appear")
    return Pcscd(process)


@dataclass
class SimCard:
    """A simulated card in a vpcd slot of an in-process runner."""

    image_path: Path
    slot: int
    runner: SlotRunner

    @property
    def reader(self) -> str:
        return reader_for_slot(self.slot)

    @property
    def image(self) -> CardImage:
        from eport.firmware_sim.image import read_image

        return read_image(self.image_path)


def wait_for_presence(reader: str, present: bool, timeout: float = 5.0) -> float:
    with PcscContext() as context:
        return context.wait_for_presence(reader, present=present, timeout=timeout)


def wait_until_empty(reader: str, timeout: float = 5.0) -> None:
    """Before a test inserts its card: the card of an earlier test or program (eport-demo's
    simulator just stopped) may still be shown by pcscd, and would be taken for the new one."""
    try:
        wait_for_presence(reader, False, timeout)
    except PcscError as exc:
        raise AssertionError(f"{reader!r} still holds a card no test put there: {exc}") from None


class SimCards:
    """Puts cards into slots for one test and takes them out afterwards."""

    def __init__(self) -> None:
        self._runner = SimulatorRunner(load_card)
        self._cards: list[SimCard] = []

    def insert(self, image_path: Path, slot: int = 0) -> SimCard:
        wait_until_empty(reader_for_slot(slot))
        runner = self._runner.add_slot(slot, image_path)
        runner.start()
        card = SimCard(image_path, slot, runner)
        self._cards.append(card)
        wait_for_presence(card.reader, True)
        return card

    def close(self) -> None:
        self._runner.stop()
        for card in self._cards:
            with contextlib.suppress(PcscError):
                wait_for_presence(card.reader, False, timeout=3)


def start_sim_process(image_path: Path, slot: int, control: Path) -> subprocess.Popen[bytes]:
    """`eport-sim run` in its own process (for kill -9), returned once pcscd sees the card."""
    process = subprocess.Popen(
        [sys.executable, "-m", "eport.firmware_sim", "run", str(image_path), "--slot", str(slot),
         "--control", str(control)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_presence(reader_for_slot(slot), True, timeout=10)
    except PcscError:
        process.kill()
        _, err = process.communicate()
        raise RuntimeError(f"eport-sim run did not insert the card: {err.decode()}") from None
    return process


class SimSlots:
    """Cards from any factory (the fake card, or the real one) in vpcd slots of one in-process
    SimulatorRunner; insertion and removal return once pcscd has seen them."""

    def __init__(self, factory: CardFactory) -> None:
        self.runner = SimulatorRunner(factory)
        self.runner.start()  # slots added later start at once

    def add(self, slot: int, image_path: Path, *, timeout: float = 5.0) -> SlotRunner:
        wait_until_empty(reader_for_slot(slot))
        runner = self.runner.add_slot(slot, image_path)
        wait_for_presence(reader_for_slot(slot), True, timeout)
        return runner

    def slot(self, slot: int) -> SlotRunner:
        """The slot's runner, for faults: set_delay, set_mute, pull_during_next_apdu."""
        return self.runner.slot(slot)

    def reader(self, slot: int) -> str:
        return reader_for_slot(slot)

    def remove(self, slot: int, *, timeout: float = 5.0) -> float:
        """Take the card out; returns the seconds until pcscd reported it gone."""
        with PcscContext() as context:
            context.card_present(self.reader(slot))  # settle the context before timing
            started = time.monotonic()
            self.slot(slot).remove()
            context.wait_for_presence(self.reader(slot), present=False, timeout=timeout)
            return time.monotonic() - started

    def insert(self, slot: int, image_path: Path | None = None, *, timeout: float = 5.0
               ) -> float:
        """Put the card (or another image) back; returns the seconds until pcscd saw it."""
        with PcscContext() as context:
            context.card_present(self.reader(slot))
            started = time.monotonic()
            self.slot(slot).insert(image_path)
            context.wait_for_presence(self.reader(slot), present=True, timeout=timeout)
            return time.monotonic() - started

    def close(self) -> None:
        slots = list(self.runner.slots)
        self.runner.stop()
        for slot in slots:  # leave the readers empty for the next test
            with contextlib.suppress(PcscError):
                wait_for_presence(reader_for_slot(slot), False, timeout=3)
