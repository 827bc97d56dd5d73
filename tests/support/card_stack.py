"""The pcsc tier's usual module stack: one real eportd (trusting the test CA) and simulated cards
in vpcd slots that tests insert and remove."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eport.firmware_sim.image import CardImage, load_card
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.cards import write_card
from tests.support.daemon_stack import Daemon, start_daemon, wait_for_card
from tests.support.pcsc_stack import SimSlots, reader_for_slot

_image_numbers = itertools.count()


@dataclass
class CardStack:
    directory: Path
    trust_anchor: Path
    slots: SimSlots
    daemon: Daemon | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "eportd.sock"

    def running(self) -> Daemon:
        assert self.daemon is not None and self.daemon.process.poll() is None, \
            "eportd is not running"
        return self.daemon

    def start_daemon(self) -> None:
        self.daemon = start_daemon(self.directory / "run", "--trust-anchor",
                                   str(self.trust_anchor))

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def has_card(self, slot: int) -> bool:
        return slot in self.slots.runner.slots and self.slots.slot(slot).status().inserted

    def insert(self, slot: int, path: Path | None = None) -> None:
        """Put a card into the slot: `path`'s image, or the slot's last one back in."""
        if slot in self.slots.runner.slots:
            self.slots.insert(slot, path)
        else:
            assert path is not None, f"slot {slot} never had a card: give an image"
            self.slots.add(slot, path)

    def remove(self, slot: int) -> None:
        if self.has_card(slot):
            self.slots.remove(slot)

    def put(self, image: CardImage, workdir: Path, slot: int = 0, *, wait: bool = True
            ) -> Path:
        """A fresh copy of `image` (in `workdir`, so its PIN state is the caller's own) in
        `slot`, replacing what was there; unless `wait` is False, once eportd sees it."""
        path = write_card(image, workdir, f"card-{next(_image_numbers)}.json")
        self.remove(slot)
        self.insert(slot, path)
        if wait:
            wait_for_card(self.running().stub(), reader_for_slot(slot))
        return path

    def pull(self, slot: int = 0) -> None:
        """Take the card out of `slot`, once eportd sees it gone."""
        self.remove(slot)
        wait_for_card(self.running().stub(), reader_for_slot(slot), present=False)

    def pin_tries_left(self, reader: str = reader_for_slot(0)) -> int:
        status = self.running().stub().GetPinStatus(pb.CardSelector(reader=reader))
        return status.pin_tries_left


@contextlib.contextmanager
def running_card_stack(directory: Path, trust_anchor: Path) -> Iterator[CardStack]:
    slots = SimSlots(load_card)
    stack = CardStack(directory, trust_anchor, slots)
    try:
        stack.start_daemon()
        yield stack
    finally:
        stack.stop_daemon()
        slots.close()
