"""Simulated cards in vpcd slots: connection, reconnection, removal/insertion and faults.

One thread per slot keeps its card connected to pcscd's vpcd driver. When pcscd is not
running or restarts, the slot reconnects with a short backoff and logs once per outage. A card
can be removed and inserted at run time, and faults can be injected: a slow card (a delay per
APDU), a mute card (holds its answer until unmuted or removed) and a card pulled during an
APDU (before or after the card executed it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eport.firmware_sim.vpcd import (
    VirtualCard,
    VpcdProtocolError,
    answer_control,
    port_for_slot,
    read_frame,
    tune_socket,
    write_frame,
)

logger = logging.getLogger(__name__)

CardFactory = Callable[[Path], VirtualCard]
_BACKOFF_START = 0.05
_BACKOFF_CAP = 1.0


@dataclass(frozen=True)
class SlotStatus:
    slot: int
    port: int
    image: str
    inserted: bool
    connected: bool
    delay_ms: float
    mute: bool
    pending_pull: str | None
    apdus: int

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class SlotRunner:
    """One vpcd slot and the card in it."""

    def __init__(self, slot: int, image_path: Path, factory: CardFactory, *,
                 host: str = "127.0.0.1", port: int | None = None) -> None:
        self.slot = slot
        self.host = host
        self.port = port if port is not None else port_for_slot(slot)
        self._factory = factory
        self._image_path = Path(image_path)
        self._card: VirtualCard | None = factory(self._image_path)
        self._lock = threading.Condition()
        self._inserted = True
        self._stopping = False
        self._sock: socket.socket | None = None
        self._delay_ms = 0.0
        self._mute = False
        self._pending_pull: str | None = None  # "before" or "after" executing the next APDU
        self._apdus = 0
        self._thread = threading.Thread(target=self._run, name=f"vpcd-slot-{slot}", daemon=True)

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._close_socket()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)
        with self._lock:
            if self._card is not None:
                self._card.close()
                self._card = None

    def remove(self) -> None:
        """Take the card out of the reader (closing the connection is removal for vpcd)."""
        with self._lock:
            self._inserted = False
            self._pending_pull = None
            self._lock.notify_all()
        self._close_socket()

    def insert(self, image_path: Path | None = None) -> None:
        """Put the card back, or a different card when `image_path` is given."""
        with self._lock:
            if self._inserted:
                raise ValueError(f"slot {self.slot} already holds a card: remove it first")
            if image_path is not None and Path(image_path) != self._image_path:
                new_card = self._factory(Path(image_path))  # may raise: the old card stays
                if self._card is not None:
                    self._card.close()
                self._card, self._image_path = new_card, Path(image_path)
            self._inserted = True
            self._lock.notify_all()

    def set_delay(self, milliseconds: float) -> None:
        if milliseconds < 0:
            raise ValueError("delay must not be negative")
        with self._lock:
            self._delay_ms = milliseconds

    def set_mute(self, mute: bool) -> None:
        with self._lock:
            self._mute = mute
            self._lock.notify_all()

    def pull_during_next_apdu(self, *, after_execute: bool = False) -> None:
        with self._lock:
            if not self._inserted:
                raise ValueError(f"slot {self.slot} has no card")
            self._pending_pull = "after" if after_execute else "before"

    def status(self) -> SlotStatus:
        with self._lock:
            return SlotStatus(self.slot, self.port, str(self._image_path), self._inserted,
                              self._sock is not None, self._delay_ms, self._mute,
                              self._pending_pull, self._apdus)

    # -- the connection loop -------------------------------------------------------------

    def _close_socket(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)

    def _wait_until_inserted(self) -> bool:
        with self._lock:
            while not self._inserted and not self._stopping:
                self._lock.wait()
            return not self._stopping

    def _run(self) -> None:
        backoff = _BACKOFF_START
        outage_logged = False
        while self._wait_until_inserted():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2)
            except OSError as exc:
                if not outage_logged:
                    logger.warning("slot %d: vpcd at %s:%d not reachable (%s); retrying",
                                   self.slot, self.host, self.port, exc)
                    outage_logged = True
                with self._lock:
                    self._lock.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            sock.settimeout(None)
            tune_socket(sock)
            backoff = _BACKOFF_START
            if outage_logged:
                logger.info("slot %d: connected to vpcd again", self.slot)
                outage_logged = False
            with self._lock:
                self._sock = sock
            try:
                self._serve(sock)
            except (OSError, VpcdProtocolError) as exc:
                logger.info("slot %d: connection ended: %s", self.slot, exc)
            finally:
                with self._lock:
                    self._sock = None
                    if self._card is not None:
                        self._card.power_off()  # removal or a lost reader cuts the power
                sock.close()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            frame = read_frame(sock)
            if frame is None:
                return
            with self._lock:
                card = self._card
                if card is None or not self._inserted:
                    return
            if len(frame) == 1:
                reply = answer_control(card, frame[0])
                if reply is not None:
                    write_frame(sock, reply)
                continue
            if not self._answer_apdu(sock, card, frame):
                return

    def _answer_apdu(self, sock: socket.socket, card: VirtualCard, apdu: bytes) -> bool:
        with self._lock:
            self._apdus += 1
            pull, self._pending_pull = self._pending_pull, None
            while self._mute and self._inserted and not self._stopping:
                self._lock.wait()
            if not self._inserted or self._stopping:
                return False  # removed while mute: the APDU is never answered
            delay = self._delay_ms
        if pull == "before":
            self._pulled()
            return False
        if delay:
            time.sleep(delay / 1000)
        response = card.execute(apdu)
        if pull == "after":
            self._pulled()
            return False
        with self._lock:
            if not self._inserted:
                return False
        write_frame(sock, response)
        return True

    def _pulled(self) -> None:
        with self._lock:
            self._inserted = False
        logger.info("slot %d: card pulled during an APDU (fault injected)", self.slot)


class SimulatorRunner:
    """Several cards in several slots of one process."""

    def __init__(self, factory: CardFactory, *, host: str = "127.0.0.1",
                 base_port: int | None = None) -> None:
        self._factory = factory
        self._host = host
        self._base_port = base_port
        self.slots: dict[int, SlotRunner] = {}

    def add_slot(self, slot: int, image_path: Path) -> SlotRunner:
        if slot in self.slots:
            raise ValueError(f"slot {slot} is already in use")
        port = None if self._base_port is None else self._base_port + slot
        runner = SlotRunner(slot, image_path, self._factory, host=self._host, port=port)
        self.slots[slot] = runner
        return runner

    def slot(self, slot: int) -> SlotRunner:
        try:
            return self.slots[slot]
        except KeyError:
            raise ValueError(f"no card slot {slot}; slots: {sorted(self.slots)}") from None

    def start(self) -> None:
        for runner in self.slots.values():
            runner.start()

    def stop(self) -> None:
        for runner in self.slots.values():
            runner.stop()

    def status(self) -> list[SlotStatus]:
        return [self.slots[s].status() for s in sorted(self.slots)]
