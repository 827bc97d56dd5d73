"""The real PC/SC stack for the pcsc test tier: pcscd with the vpcd driver, simulated cards.

pcscd is started when it is not running (and stopped at the end if we started it). When the
stack cannot be had, pcsc tests skip, except with CI=true, where they fail.

More than two vpcd slots: `more_vpcd_slots(pcscd, count, workdir)` restarts the pcscd the tests
started with a reader configuration of its own (pcscd -c DIR: the packaged entries plus one
entry per two further slots, each with its own copy of the driver, see
eport.firmware_sim.vpcd.reader_name) and restarts it with the packaged configuration
afterwards. /etc is never edited.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eport.cardlib.pcsc.transport import PcscContext, PcscError
from eport.firmware_sim.image import CardImage, load_card
from eport.firmware_sim.runner import CardFactory, SimulatorRunner, SlotRunner
from eport.firmware_sim.vpcd import SLOTS_PER_READER_ENTRY, port_for_slot, reader_name
from tests.support.cards import write_card
from tests.support.waiting import wait_until

VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
PACKAGED_READER_CONF = Path("/etc/reader.conf.d")
# OpenSC's PKCS#11 module as Debian's opensc package installs it (an independent client of
# the simulated PIV card, through pcscd).
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

reader_for_slot = reader_name


def stack_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the pcsc test stack cannot start (CI=true): {reason}")
    pytest.skip(f"pcsc test stack unavailable: {reason}")


def vpcd_readers_present(readers: tuple[str, ...] = VPCD_READERS) -> bool:
    try:
        with PcscContext() as context:
            return all(r in context.list_readers() for r in readers)
    except PcscError:
        return False


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

    def restart(self, config: Path | None = None,
                readers: tuple[str, ...] = VPCD_READERS) -> None:
        """Stop and start again, with the reader configuration directory `config` (None: the
        packaged one); returns once `readers` are listed."""
        self.stop()
        self.process = _spawn_pcscd(config)
        wait_until(lambda: vpcd_readers_present(readers), timeout=15,
                   what=f"pcscd is back and lists the vpcd readers {readers}")


def _spawn_pcscd(config: Path | None = None) -> subprocess.Popen[bytes]:
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    extra = [] if config is None else ["--config", str(config)]
    return subprocess.Popen([pcscd, "--foreground", *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _write_reader_conf(count: int, workdir: Path) -> Path:
    """A reader.conf.d for `count` vpcd slots: the packaged files, and for every two slots
    past the first two an entry with its own copy of the driver (outside the directory:
    pcscd parses every file in it)."""
    conf, drivers = workdir / "reader.conf.d", workdir / "drivers"
    conf.mkdir(parents=True)
    drivers.mkdir()
    for packaged in sorted(PACKAGED_READER_CONF.iterdir()):
        if packaged.is_file():
            shutil.copyfile(packaged, conf / packaged.name)
    entries = -(-count // SLOTS_PER_READER_ENTRY)
    for entry in range(1, entries):
        driver = drivers / f"libifdvpcd-{entry:02d}.so"
        shutil.copyfile(VPCD_DRIVER, driver)
        first_port = port_for_slot(entry * SLOTS_PER_READER_ENTRY)
        (conf / f"vpcd-eport-test-{entry:02d}").write_text(
            f'FRIENDLYNAME "Virtual PCD {entry:02d}"\n'
            f"DEVICENAME   /dev/null:{first_port}\n"
            f"LIBPATH      {driver}\n", encoding="ascii")
    return conf


@contextlib.contextmanager
def more_vpcd_slots(pcscd: Pcscd, count: int, workdir: Path) -> Iterator[tuple[str, ...]]:
    """pcscd with `count` vpcd slots (ports 35963 + slot) while the block runs; yields the
    reader names. Only a pcscd the tests started can be restarted: with one that was running
    before (the system's), the test is skipped, since it is not ours to stop."""
    if not pcscd.restartable:
        pytest.skip("pcscd was already running when the tests started, so it is not ours to "
                    "restart with more vpcd slots (stop it first to run this test)")
    if not VPCD_DRIVER.exists():
        stack_unavailable(f"the vpcd driver {VPCD_DRIVER} is missing")
    readers = tuple(reader_for_slot(slot) for slot in range(count))
    conf = _write_reader_conf(count, workdir)
    try:
        pcscd.restart(conf, readers)
        yield readers
    finally:
        pcscd.restart()  # the packaged configuration again


def start_pcscd_if_needed() -> Pcscd:
    if vpcd_readers_present():
        return Pcscd(None)
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not Path(pcscd).exists():
        stack_unavailable("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    if not Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so").exists():
        stack_unavailable("the vpcd driver is not installed (apt-get install vsmartcard-vpcd)")
    process = _spawn_pcscd()
    try:
        wait_until(vpcd_readers_present, timeout=15, what="pcscd lists the vpcd readers")
    except AssertionError:
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


@dataclass
class SimProcessSlot:
    """Cards in one vpcd slot, each in an `eport-sim run` process of its own; a card is pulled
    by ending its process. For clients that block in C holding the GIL (PyKCS11 with OpenSC's
    module): a card simulated in their own interpreter could not answer them."""

    directory: Path
    slot: int = 0
    process: subprocess.Popen[bytes] | None = None
    inserted: int = 0

    @property
    def reader(self) -> str:
        return reader_for_slot(self.slot)

    def insert(self, image: CardImage) -> Path:
        """The card in the slot, once pcscd sees it; returns its image file."""
        wait_until_empty(self.reader)
        self.inserted += 1
        path = write_card(image, self.directory, f"slot{self.slot}-card{self.inserted}.json")
        self.process = start_sim_process(path, self.slot,
                                         self.directory / f"control-{self.inserted}")
        return path

    def pull(self) -> None:
        """The card out, once pcscd has seen it go."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            wait_for_presence(self.reader, False, timeout=10)


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
