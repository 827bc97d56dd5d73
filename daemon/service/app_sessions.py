"""PIN sessions: opened by a verified PIN, for one insertion and (in --system mode) one
uid; ended by logout, removal, a wrong PIN, the idle timeout or shutdown (docs/backends.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from eport.daemon.service.app_core import (
    ServiceCore,
)
from eport.daemon.service.card_state import (
    ReaderSlot,
    Session,
)
from eport.daemon.service.card_worker import CardAccess
from eport.daemon.service.events import Event, EventKind

logger = logging.getLogger(__name__)


class SessionHandling(ServiceCore):
    def _foreign_session(self, session: Session | None, uid: int | None) -> bool:
        """Whether `session` belongs to another user than `uid` (only --system mode has
        several users; in user mode only our own uid and root may call)."""
        return (self.settings.mode == "system" and session is not None
                and session.uid is not None and uid is not None and session.uid != uid)


    def _shutdown_logout(self, access: CardAccess) -> None:
        with self._lock:
            slot = self._slots.get(access.reader)
            if slot is None or slot.session is None \
                    or slot.session.insertion != access.insertion:
                return  # another card now: it has no session of ours
            self._close_session(slot, "eportd stopped")
        access.token.logout()
        logger.info("logged the card out at shutdown", extra={"reader": access.reader})


    def seconds_until_idle_expiry(self, reader: str) -> float | None:
        with self._lock:
            slot = self._slots.get(reader)
            if slot is None or slot.session is None:
                return None
            return max(0.0, self.settings.session_idle_timeout_s - slot.session.idle_seconds())

    def expire_idle_session(
        self, reader: str, run_on_card: Callable[[Callable[[CardAccess], None]], None]
    ) -> None:
        with self._lock:
            slot = self._slots.get(reader)
            if slot is None or slot.session is None:
                return
            if slot.session.idle_seconds() < self.settings.session_idle_timeout_s:
                return
            self._close_session(slot, "idle")
        # The session timed out: reset the card's security status too, so nothing else can
        # sign with it either.
        run_on_card(lambda access: access.token.logout())

    def card_was_reset(self, reader: str) -> None:
        with self._lock:
            slot = self._slots.get(reader)
            if slot is not None:
                self._close_session(slot, "card reset")

    # ---- sessions ----

    def _open_session(self, slot: ReaderSlot, card_id: str, uid: int | None = None
                      ) -> Session:
        if slot.session is not None and slot.session.uid != uid:
            # Another user's PIN was verified: the card's verified state is now theirs, and
            # the previous owner's session ends (they give their PIN again).
            self._close_session(slot, "another user verified the PIN")
        session = Session(slot.insertion, card_id, uid=uid)
        slot.session, slot.session_end_reason = session, ""
        self.events.publish(Event(EventKind.SESSION_OPENED, slot.name))
        slot.worker.wake()
        return session

    def _close_session(self, slot: ReaderSlot, reason: str) -> bool:
        if slot.session is None:
            return False
        slot.session, slot.session_end_reason = None, reason
        self.events.publish(Event(EventKind.SESSION_CLOSED, slot.name, detail=reason))
        logger.info("session closed", extra={"reader": slot.name, "why": reason})
        return True

    def _session_for(self, reader: str, insertion: int) -> Session | None:
        """The open session of this insertion, after expiring it if it has idled too long."""
        slot = self._slots.get(reader)
        if slot is None or slot.insertion != insertion or slot.session is None:
            return None
        if slot.session.idle_seconds() >= self.settings.session_idle_timeout_s:
            self._close_session(slot, "idle")
            return None
        return slot.session

    def session_expiry(self, session: Session | None) -> datetime | None:
        if session is None:
            return None
        remaining = self.settings.session_idle_timeout_s - session.idle_seconds()
        return datetime.fromtimestamp(time.time() + max(0.0, remaining), UTC)

