"""Reader and card presence, event-driven: SCardGetStatusChange on every reader plus the PnP
notification reader, blocking with no timeout until pcscd reports a change (no busy loop, no
fixed sleeps). stop() wakes it with SCardCancel.

When pcscd is not running (it auto-exits when idle on some systems) or exits, the monitor
reports the service down and tries to establish a context again with a backoff that grows to
one second: pcscd gives no notification of its own start to wait on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from eport.cardlib.pcsc.transport import (
    INFINITE,
    PNP_NOTIFICATION,
    STATE_CHANGED,
    STATE_EXCLUSIVE,
    STATE_PRESENT,
    STATE_UNAWARE,
    STATE_UNKNOWN,
    PcscContext,
    PcscError,
)
from eport.cardlib.token import PresenceListener, ReaderPresence

logger = logging.getLogger(__name__)
_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 1.0


# ReaderPresence.card_events: pcsc-lite's per-reader card event counter (upper 16 bits).
MonitorListener = PresenceListener


def _presence(name: str, state: int, atr: bytes) -> ReaderPresence:
    present = bool(state & STATE_PRESENT)
    return ReaderPresence(name, present, atr if present else b"", bool(state & STATE_EXCLUSIVE),
                          (state >> 16) & 0xFFFF)


class ReaderMonitor:
    def __init__(self, listener: MonitorListener,
                 ignored: Callable[[str], bool] = lambda _name: False) -> None:
        self._listener = listener
        self._ignored = ignored
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._context: PcscContext | None = None
        self._thread = threading.Thread(target=self._run, name="reader-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            if self._context is not None:
                self._context.cancel()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        service_known_up: bool | None = None
        while not self._stop.is_set():
            try:
                context = PcscContext()
            except PcscError as exc:
                if service_known_up is not False:
                    logger.warning("pcscd unavailable: %s", exc)
                    self._listener.service_down(str(exc), exc.native_code)
                    service_known_up = False
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            with self._lock:
                self._context = context
            backoff = _BACKOFF_START_S
            try:
                self._watch(context, announce_up=service_known_up is not True)
                service_known_up = True
            except PcscError as exc:
                if exc.reason == "CANCELLED" and self._stop.is_set():
                    break
                logger.warning("pcscd went away: %s", exc)
                self._listener.service_down(str(exc), exc.native_code)
                service_known_up = False
            finally:
                with self._lock:
                    self._context = None
                context.close()

    def _watch(self, context: PcscContext, *, announce_up: bool) -> None:
        """Follow changes until pcscd fails; raises PcscError then."""
        readers = [r for r in context.list_readers() if not self._ignored(r)]
        states: dict[str, int] = dict.fromkeys(readers, STATE_UNAWARE)
        # pcsc-lite: the PnP reader's current state is what we last saw of it.
        pnp_state = 0
        if announce_up:
            self._listener.service_up()
        first = True
        known: dict[str, ReaderPresence] = {}
        while not self._stop.is_set():
            query = [(name, state & ~STATE_CHANGED) for name, state in states.items()]
            query.append((PNP_NOTIFICATION, pnp_state))
            timeout = 0 if first else INFINITE
            try:
                results = context.get_status_change(query, timeout)
            except PcscError as exc:
                if exc.reason == "CARD_TIMEOUT":  # the first, non-blocking round
                    results = []
                else:
                    raise
            first = False
            reader_list_changed = False
            for status in results:
                if status.name == PNP_NOTIFICATION:
                    if status.event_state & STATE_CHANGED:
                        reader_list_changed = True
                    pnp_state = status.event_state & ~STATE_CHANGED
                    continue
                if status.event_state & STATE_UNKNOWN:
                    reader_list_changed = True
                    continue
                states[status.name] = status.event_state
                presence = _presence(status.name, status.event_state, status.atr)
                before = known.get(status.name)
                known[status.name] = presence
                if before is None:
                    self._listener.reader_added(presence)
                elif (before.present != presence.present
                      or before.card_events != presence.card_events
                      or before.exclusive != presence.exclusive):
                    # Same presence but another event count: removed and inserted between
                    # two of our waits; the card may be a different one.
                    reinserted = (before.present and presence.present
                                  and before.card_events != presence.card_events)
                    self._listener.presence_changed(presence, reinserted=reinserted)
            if reader_list_changed or not results:
                current = [r for r in context.list_readers() if not self._ignored(r)]
                for gone in [r for r in states if r not in current]:
                    del states[gone]
                    known.pop(gone, None)
                    self._listener.reader_removed(gone)
                for new in [r for r in current if r not in states]:
                    states[new] = STATE_UNAWARE
            if not any(s == STATE_UNAWARE for s in states.values()):
                self._listener.scan_complete()
