"""Simulated cards in vpcd slots: connection, reconnection, removal/insertion and faults.

One thread per slot keeps its card connected to pcscd's vpcd driver. When pcscd is not
running or restarts, the slot reconnects with a short backoff and logs once per outage. A card
can be removed and inserted at run time, and faults can be injected: a slow card (a delay per
APDU, or only for one instruction, e.g. GENERAL AUTHENTICATE), a mute card (receives the APDU
and holds its answer until unmuted or removed) and a card pulled during an APDU (before or
after the card executed it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from eport.firmware_sim.vpcd import (
    ClosableCard,
    VirtualCard,
    VpcdLink,
    VpcdProtocolError,
    execute_apdu,
    port_for_slot,
)

logger = logging.getLogger(__name__)

CardFactory = Callable[[Path], VirtualCard]
_BACKOFF_START = 0.05
_BACKOFF_CAP = 1.0
# pcscd notices a removal only when one of its presence polls (every 400 ms) falls inside the
# absence; a card put back sooner can go unseen, and pcscd then keeps reporting it absent
# (seen after SCardDisconnect with SCARD_RESET_CARD/UNPOWER_CARD of a pulled card). A card that
# was taken out therefore stays out at least this long, as a real one would.
MIN_ABSENCE = 0.45
_CONNECT_TIMEOUT = 2.0
_PULL_BEFORE = "before"
_PULL_AFTER = "after"


@dataclass(frozen=True)
class SlotStatus:
    slot: int
    port: int
    image: str
    inserted: bool
    connected: bool
    delay_ms: float
    delay_ins: int | None  # the delay applies to this instruction only; None: to every APDU
    mute: bool
    pending_pull: str | None  # "before" or "after" executing the next APDU
    apdus: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _release(card: VirtualCard | None) -> None:
    if isinstance(card, ClosableCard):
        card.close()  # the real card unlocks its image file


class SlotRunner:
    """One vpcd slot and the card in it, served by a background thread."""

    def __init__(self, slot: int, image_path: Path, factory: CardFactory, *,
                 host: str = "127.0.0.1", port: int | None = None) -> None:
        self.slot = slot
        self.host = host
        self.port = port if port is not None else port_for_slot(slot)
        self._factory = factory
        self._image_path = Path(image_path)
        self._card: VirtualCard | None = factory(self._image_path)
        # One condition guards all state below; waiting on it (delay, mute, backoff, removed)
        # lets remove(), insert(), set_mute() and stop() wake the slot thread at once.
        self._lock = threading.Condition()
        self._inserted = True
        self._stopping = False
        self._link: VpcdLink | None = None
        self._serving = False  # a connection is being served (the card may be executing)
        self._delay_ms = 0.0
        self._delay_ins: int | None = None
        self._mute = False
        self._pending_pull: str | None = None
        self._apdus = 0
        self._out_since: float | None = None  # when the card last left the reader
        self._thread = threading.Thread(target=self._run, name=f"vpcd-slot-{slot}", daemon=True)

    # -- control (any thread) ------------------------------------------------------------

    def start(self) -> None:
        if self._thread.ident is None:  # starting twice is harmless
            self._thread.start()

    def stop(self) -> None:
        """Remove the card for good and end the thread; safe to call more than once."""
        with self._lock:
            self._stopping = True
            link = self._link
            self._lock.notify_all()
        if link is not None:
            link.shutdown()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                logger.error("slot %d: the card thread did not stop within 5 s", self.slot)
                return  # the thread may still use the card: do not release it under it
        with self._lock:
            card, self._card = self._card, None
        _release(card)

    def remove(self) -> None:
        """Take the card out of the reader (closing the connection is removal for vpcd)."""
        with self._lock:
            self._inserted = False
            self._pending_pull = None
            link = self._link
            self._lock.notify_all()
        if link is not None:
            link.shutdown()

    def insert(self, image_path: Path | None = None) -> None:
        """Put the card back, or a different card when `image_path` is given."""
        new_path = None if image_path is None else Path(image_path)
        with self._lock:
            if self._stopping:
                raise ValueError(f"slot {self.slot} is stopped")
            if self._inserted:
                raise ValueError(f"slot {self.slot} already holds a card: remove it first")
        replacement: tuple[VirtualCard, Path] | None = None
        if new_path is not None and new_path != self._image_path:
            # May raise (a missing, damaged or locked image): then the old card stays.
            replacement = (self._factory(new_path), new_path)
        with self._lock:
            if self._inserted or self._stopping:
                _release(replacement[0] if replacement else None)
                raise ValueError(f"slot {self.slot} already holds a card: remove it first")
            old_card = None
            if replacement is not None:
                # The thread may still be inside the old card's execute (removal only closes
                # the socket): wait for it to let go before closing the old card.
                if not self._lock.wait_for(lambda: not self._serving, timeout=5):
                    logger.warning("slot %d: the old card is still busy; replacing it anyway",
                                   self.slot)
                old_card = self._card
                self._card, self._image_path = replacement
            self._inserted = True
            self._lock.notify_all()
        _release(old_card)

    def set_delay(self, milliseconds: float, ins: int | None = None) -> None:
        """Delay each answer by `milliseconds`; with `ins`, only answers to that instruction
        (the last APDU of a command chain, so one signature costs one delay)."""
        if milliseconds < 0:
            raise ValueError("delay must not be negative")
        if ins is not None and not 0 <= ins <= 0xFF:
            raise ValueError("the instruction must be one byte (00 to FF)")
        with self._lock:
            self._delay_ms = float(milliseconds)
            self._delay_ins = ins
            self._lock.notify_all()

    def set_mute(self, mute: bool) -> None:
        with self._lock:
            self._mute = mute
            self._lock.notify_all()

    def pull_during_next_apdu(self, after_execute: bool = False) -> None:
        with self._lock:
            if not self._inserted:
                raise ValueError(f"slot {self.slot} has no card")
            self._pending_pull = _PULL_AFTER if after_execute else _PULL_BEFORE

    def status(self) -> SlotStatus:
        with self._lock:
            return SlotStatus(self.slot, self.port, str(self._image_path), self._inserted,
                              self._link is not None, self._delay_ms, self._delay_ins,
                              self._mute,
                              self._pending_pull, self._apdus)

    # -- the slot thread -----------------------------------------------------------------

    def _wait_until_inserted(self) -> bool:
        with self._lock:
            while True:
                self._lock.wait_for(lambda: self._inserted or self._stopping)
                if self._stopping:
                    return False
                out_since = self._out_since
                remaining = 0.0 if out_since is None else out_since + MIN_ABSENCE - \
                    time.monotonic()
                if remaining <= 0:
                    return True
                self._lock.wait(remaining)  # wakes early for stop() or remove()

    def _run(self) -> None:
        backoff = _BACKOFF_START
        # An outage lasts from the first failed attempt to the first connection vpcd talks
        # on; it gets one warning and one recovery line however many attempts it takes.
        outage_since: float | None = None
        recovery_logged = False
        while self._wait_until_inserted():
            try:
                link = VpcdLink.connect(self.host, self.port, timeout=_CONNECT_TIMEOUT)
            except OSError as exc:
                if outage_since is None:
                    outage_since, recovery_logged = time.monotonic(), False
                    logger.warning("slot %d: vpcd at %s:%d not reachable (%s); retrying until "
                                   "pcscd is back", self.slot, self.host, self.port, exc)
                self._back_off(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
                continue
            if outage_since is not None and not recovery_logged:
                recovery_logged = True
                logger.info("slot %d: connected to vpcd again after %.1f s", self.slot,
                            time.monotonic() - outage_since)
            talked = self._serve(link)
            with self._lock:
                ended_by_us = self._stopping or not self._inserted  # removal, pull, stop
                if ended_by_us:
                    self._out_since = time.monotonic()
            if talked or ended_by_us:
                backoff, outage_since = _BACKOFF_START, None
            else:
                # Accepted and closed before vpcd said anything: pcscd starting or stopping.
                # Keep backing off, or this would be a busy loop.
                if outage_since is None:
                    outage_since, recovery_logged = time.monotonic(), False
                    logger.warning("slot %d: vpcd at %s:%d not reachable (it closed the "
                                   "connection before speaking); retrying until pcscd is back",
                                   self.slot, self.host, self.port)
                self._back_off(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)

    def _back_off(self, seconds: float) -> None:
        with self._lock:  # remove() and stop() cut the wait short
            self._lock.wait_for(lambda: self._stopping or not self._inserted, seconds)

    def _serve(self, link: VpcdLink) -> bool:
        """Serve one connection; True if vpcd spoke on it."""
        with self._lock:
            card = self._card
            if card is None or not self._inserted or self._stopping:
                link.close()
                return False
            self._link, self._serving = link, True
        try:
            link.serve(card, self._answer_apdu)
        except (OSError, VpcdProtocolError) as exc:
            logger.info("slot %d: connection to vpcd ended: %s", self.slot, exc)
        finally:
            link.close()
            card.power_off()  # removal or a lost reader cuts the power: volatile state goes
            with self._lock:
                self._link, self._serving = None, False
                self._lock.notify_all()
        return link.frames_received > 0

    def _answer_apdu(self, card: VirtualCard, apdu: bytes) -> bytes | None:
        """The R-APDU, after any injected delay or mute; None drops the connection."""
        with self._lock:
            self._apdus += 1
            pull, self._pending_pull = self._pending_pull, None
            if pull == _PULL_BEFORE:
                self._pulled()
                return None
            self._lock.wait_for(lambda: not self._mute or not self._inserted or self._stopping)
            deadline = time.monotonic() + self._delay_for(apdu) / 1000
            while self._inserted and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)  # a slow card; removal cuts the wait short
            if not self._inserted or self._stopping:
                return None  # removed while mute or slow: the APDU is never answered
        response = execute_apdu(card, apdu)
        with self._lock:
            if pull == _PULL_AFTER:
                self._pulled()
                return None
            if not self._inserted or self._stopping:
                return None
        return response

    def _delay_for(self, apdu: bytes) -> float:
        # Called with the lock held.
        if self._delay_ins is None:
            return self._delay_ms
        chained = len(apdu) > 0 and apdu[0] & 0x10  # not the last APDU of a chain
        if len(apdu) > 1 and apdu[1] == self._delay_ins and not chained:
            return self._delay_ms
        return 0.0

    def _pulled(self) -> None:
        # Called with the lock held: the card stays out until insert().
        self._inserted = False
        logger.info("slot %d: card pulled during an APDU (fault injected)", self.slot)


class SimulatorRunner:
    """Several cards in several slots of one process."""

    def __init__(self, factory: CardFactory, *, host: str = "127.0.0.1",
                 base_port: int | None = None) -> None:
        self._factory = factory
        self._host = host
        self._base_port = base_port
        self._started = False
        self.slots: dict[int, SlotRunner] = {}

    def add_slot(self, slot: int, image_path: Path) -> SlotRunner:
        """Load the card for `slot` (the factory may raise); started if the runner runs."""
        if slot in self.slots:
            raise ValueError(f"slot {slot} is already in use")
        port = None if self._base_port is None else self._base_port + slot
        runner = SlotRunner(slot, image_path, self._factory, host=self._host, port=port)
        self.slots[slot] = runner
        if self._started:
            runner.start()
        return runner

    def slot(self, slot: int) -> SlotRunner:
        try:
            return self.slots[slot]
        except KeyError:
            raise ValueError(f"no card slot {slot}; slots: {sorted(self.slots)}") from None

    def start(self) -> None:
        self._started = True
        for runner in self.slots.values():
            runner.start()

    def stop(self) -> None:
        self._started = False
        for runner in self.slots.values():
            runner.stop()

    def status(self) -> list[SlotStatus]:
        return [self.slots[s].status() for s in sorted(self.slots)]

    def __enter__(self) -> SimulatorRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
