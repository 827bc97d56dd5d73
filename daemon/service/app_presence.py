"""Presence: the backends' monitors report readers and cards; one worker per reader; a
card is read once per insertion; a call's card is chosen here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from eport.cardlib.token import ReaderPresence
from eport.daemon.service.app_core import (
    FIRST_SCAN_TIMEOUT_S,
    CallerActive,
    CardSelector,
    T,
)
from eport.daemon.service.app_sessions import SessionHandling
from eport.daemon.service.backends import BackendHealth, describe_backend
from eport.daemon.service.card_state import (
    IDENTIFY_RETRY_DELAYS_S,
    CardSnapshot,
    ReaderSlot,
    may_pass,
    read_card,
)
from eport.daemon.service.card_worker import CardAccess, CardWorker
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.events import Event, EventKind
from eport.daemon.service.messages import backend_variant

logger = logging.getLogger(__name__)


class PresenceHandling(SessionHandling):
    def start(self) -> None:
        """Start the reader monitor and return once it has taken its first view of pcscd
        (readers and cards, or the service down), so that the first call after start-up is
        answered from real state, not a premature SERVICE_NOT_RUNNING."""
        self.backends.start(self)
        if not self._scanned.wait(FIRST_SCAN_TIMEOUT_S):
            logger.warning("no first view of pcscd after %.0f s", FIRST_SCAN_TIMEOUT_S)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._shutting_down = True
        self.backends.stop(timeout)
        with self._lock:
            workers = list(self._workers.values())
            # A session left open would leave the card verified for any program after us.
            with_session = {s.name for s in self._slots.values() if s.session is not None}
        for worker in workers:
            worker.stop(timeout, last=self._shutdown_logout if worker.reader in with_session
                        else None)


    # ---- monitor callbacks (the monitor thread) ----

    def backend_states(self) -> list[tuple[str, bool, str, int]]:
        """(name, up, detail, readers) of every configured backend."""
        with self._lock:
            return [(name, self._backend_up.get(name, False), self._backend_detail.get(name, ""),
                     sum(1 for s in self._slots.values() if s.backend == name))
                    for name in self.backends.names]

    def backend_health(self) -> list[BackendHealth]:
        """Every configured backend with the condition `eport doctor` reports."""
        with self._lock:
            counts = {name: (sum(1 for s in self._slots.values() if s.backend == name),
                             sum(1 for s in self._slots.values()
                                 if s.backend == name and s.present))
                      for name in self.backends.names}
            return [describe_backend(backend, self._backend_up.get(backend.name, False),
                                     self._backend_detail.get(backend.name, ""),
                                     *counts[backend.name])
                    for backend in self.backends.backends]

    def _set_backend(self, backend: str, up: bool, detail: str, code: int) -> bool:
        """Record one backend's state; answers whether the service as a whole changed (it
        runs while any backend runs)."""
        before = self.service_running
        self._backend_up[backend] = up
        self._backend_detail[backend] = detail
        self.service_running = any(self._backend_up.values())
        if up and all(self._backend_up.get(n, False) for n in self.backends.names):
            self.service_error, self.service_error_code = "", 0
        elif not up:
            self.service_error, self.service_error_code = detail, code
        return before != self.service_running

    def _check_scanned(self) -> None:
        if all(n in self._backend_scanned for n in self.backends.names):
            self._scanned.set()

    def service_up(self, *, backend: str = "") -> None:
        name = backend or self.backends.names[0]
        with self._lock:
            if self._set_backend(name, True, "", 0):
                self.events.publish(Event(EventKind.SERVICE_UP))
        self._update_health()
        logger.info("card service is running", extra={"backend": name})

    def service_down(self, cause: str = "", code: int = 0, *, backend: str = "") -> None:
        name = backend or self.backends.names[0]
        with self._lock:
            changed = self._set_backend(name, False, cause, code)
            self._backend_scanned.add(name)
            self._check_scanned()
            for slot_name in [n for n, s in self._slots.items() if s.backend == name]:
                self._reader_gone(slot_name)
            for worker in self._workers.values():
                if worker.backend_name == name:
                    worker.drop_context()
            if changed or not self.service_running:
                self.events.publish(Event(EventKind.SERVICE_DOWN))
        self._update_health()

    def reader_added(self, presence: ReaderPresence, *, backend: str = "") -> None:
        with self._lock:
            owner = (self.backends.get(backend) if backend
                     else self.backends.owner_of(presence.name))
            if owner is None:
                return
            worker = self._workers.get(presence.name)
            if worker is None or worker.backend_name != owner.name:
                if worker is not None:
                    worker.stop(0)
                worker = CardWorker(presence.name, self, owner)
                worker.start()
                self._workers[presence.name] = worker
            self._slots[presence.name] = ReaderSlot(presence.name, worker, backend=owner.name)
            self.events.publish(Event(EventKind.READER_ADDED, presence.name))
            logger.info("reader added", extra={"reader": presence.name})
            self._apply_presence(presence, reinserted=False)

    def scan_complete(self, *, backend: str = "") -> None:
        with self._lock:
            self._backend_scanned.add(backend or self.backends.names[0])
            self._check_scanned()

    def reader_removed(self, name: str, *, backend: str = "") -> None:
        with self._lock:
            self._reader_gone(name)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool,
                         backend: str = "") -> None:
        with self._lock:
            self._apply_presence(presence, reinserted=reinserted)

    def _reader_gone(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        if slot.present:
            self._card_removed(slot)
        self.events.publish(Event(EventKind.READER_REMOVED, name))
        logger.info("reader removed", extra={"reader": name})

    def _apply_presence(self, presence: ReaderPresence, *, reinserted: bool) -> None:
        slot = self._slots.get(presence.name)
        if slot is None:
            return
        released = slot.exclusive_elsewhere and not presence.exclusive
        slot.exclusive_elsewhere = presence.exclusive
        if slot.present and (reinserted or not presence.present):
            self._card_removed(slot)
        if presence.present and not slot.present:
            self._card_inserted(slot, presence.atr)
        elif released and slot.present and slot.card is None:
            # The program that held the card let it go: read it now, not at the next retry.
            self._identify(slot.name, insertion=slot.insertion, attempt=0)

    def _card_inserted(self, slot: ReaderSlot, atr: bytes) -> None:
        slot.present, slot.atr = True, atr
        slot.insertion = self._next_insertion
        self._next_insertion += 1
        slot.card, slot.card_error, slot.session, slot.session_end_reason = None, None, None, ""
        slot.removed_at, slot.removed_card_id = None, ""
        self.events.publish(Event(EventKind.CARD_INSERTED, slot.name, atr=atr))
        logger.info("card inserted", extra={"reader": slot.name, "atr": atr.hex()})
        self._identify(slot.name, insertion=slot.insertion, attempt=0)

    def _identify(self, reader: str, *, insertion: int, attempt: int) -> None:
        """Read the card of this insertion in the background, so that ListReaders shows its
        id (or why it cannot be read) without a client asking first."""
        with self._lock:
            slot = self._slots.get(reader)
            if slot is None or slot.insertion != insertion or slot.card is not None:
                return
            future = slot.worker.submit(
                lambda access: self._read_into_slot(reader, insertion, access))
        future.add_done_callback(
            lambda done: self._identified(reader, insertion, attempt, done.exception()))

    def _identified(self, reader: str, insertion: int, attempt: int,
                    error: BaseException | None) -> None:
        if error is None:
            return
        with self._lock:
            slot = self._slots.get(reader)
            if slot is None or slot.insertion != insertion or slot.card is not None:
                return  # pulled out meanwhile, or a client's read got it
            if may_pass(error) and attempt < len(IDENTIFY_RETRY_DELAYS_S) \
                    and not self._shutting_down:
                slot.card_error = None
                retry = threading.Timer(IDENTIFY_RETRY_DELAYS_S[attempt], self._identify,
                                        args=(reader,),
                                        kwargs={"insertion": insertion, "attempt": attempt + 1})
                retry.daemon = True
                retry.start()
                logger.info("reading the inserted card failed; trying again: %s", error,
                            extra={"reader": reader})
                return
            # Failures before the card was read (connecting, selecting) are kept too: without
            # them the reader would show a card with neither an id nor an error.
            slot.card_error = error if isinstance(error, EportError) else EportError(
                Reason.CARD_ERROR, str(error), reader=reader)

    def _card_removed(self, slot: ReaderSlot) -> None:
        self._close_session(slot, "removed")
        slot.removed_at = datetime.now(UTC)
        slot.removed_card_id = slot.card.card_id if slot.card is not None else ""
        slot.present, slot.atr, slot.insertion, slot.card, slot.card_error = \
            False, b"", -1, None, None
        self.events.publish(Event(EventKind.CARD_REMOVED, slot.name))
        logger.info("card removed", extra={"reader": slot.name})

    def _read_into_slot(self, reader: str, insertion: int, access: CardAccess) -> CardSnapshot:
        try:
            snapshot = read_card(access)
        except EportError as exc:
            with self._lock:
                slot = self._slots.get(reader)
                if slot is not None and slot.insertion == insertion:
                    slot.card_error = exc
            raise
        with self._lock:
            slot = self._slots.get(reader)
            if slot is not None and slot.insertion == insertion and slot.card is None:
                slot.card = snapshot
                self.events.publish(Event(EventKind.CARD_READY, reader, atr=access.atr,
                                          card=snapshot))
        return snapshot

    # ---- WorkerOwner (the worker threads) ----

    def current_insertion(self, reader: str) -> int:
        with self._lock:
            slot = self._slots.get(reader)
            return slot.insertion if slot is not None else -1


    def _select_slot(self, selector: CardSelector) -> ReaderSlot:
        with self._lock:
            if self._shutting_down:
                raise EportError(Reason.DAEMON_SHUTTING_DOWN)
            if not self.service_running:
                raise EportError(Reason.SERVICE_NOT_RUNNING,
                                 variant=backend_variant(selector.reader or ""))
            if selector.reader:
                slot = self._slots.get(selector.reader)
                if slot is None:
                    raise EportError(Reason.NO_READER, f"no reader named {selector.reader!r}")
                if not slot.present:
                    raise EportError(Reason.NO_CARD, reader=slot.name)
                if selector.card_id and (slot.card is None
                                         or slot.card.card_id != selector.card_id):
                    raise EportError(Reason.NO_CARD, f"card {selector.card_id} is not in "
                                     f"{selector.reader!r}", reader=slot.name)
                return slot
            if not self._slots:
                raise EportError(Reason.NO_READER)
            with_cards = [s for s in self._slots.values() if s.present]
            if selector.card_id:
                matching = [s for s in with_cards
                            if s.card is not None and s.card.card_id == selector.card_id]
                if not matching:
                    raise EportError(Reason.NO_CARD, f"card {selector.card_id} is not present",
                                     card_id=selector.card_id)
                return matching[0]
            usable = [s for s in with_cards if s.card_error is None] or with_cards
            if not usable:
                raise EportError(Reason.NO_CARD)
            if len(usable) == 1:
                return usable[0]
            # Bonded manual §1.1: with an IC card and an IKEY both present, the IC card is used.
            ic_cards = [s for s in usable if s.looks_like_ic_card]
            if len(ic_cards) == 1:
                return ic_cards[0]
            raise EportError(Reason.AMBIGUOUS_CARD,
                             "cards in " + ", ".join(repr(s.name) for s in usable))

    def _run(self, slot: ReaderSlot, job: Callable[[CardAccess], T],
             caller_active: CallerActive) -> T:
        result: T = slot.worker.call(job, caller_active)
        return result

    def card(self, selector: CardSelector, caller_active: CallerActive = lambda: True
             ) -> tuple[ReaderSlot, CardSnapshot]:
        """The selected card, read from the cache or (once per insertion) from the card."""
        slot = self._select_slot(selector)
        with self._lock:
            if slot.card is not None:
                return slot, slot.card
            if slot.card_error is not None and not may_pass(slot.card_error):
                raise slot.card_error
            insertion = slot.insertion  # a passing failure: the caller's call reads again

        def job(access: CardAccess) -> CardSnapshot:
            with self._lock:
                cached = slot.card if slot.insertion == insertion else None
            if cached is not None:
                return cached
            if access.insertion != insertion:
                raise EportError(Reason.CARD_REMOVED, reader=slot.name)
            return self._read_into_slot(slot.name, insertion, access)

        return slot, self._run(slot, job, caller_active)

