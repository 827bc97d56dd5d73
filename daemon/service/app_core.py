"""The card service's state: readers, their cards and sessions, the event bus; what the
servicer reads without touching a card (the layers above build on it: app_sessions,
app_presence, app_pin, app_crypto, app).

Lock order: `self._lock` (reader state) before the event bus's lock; events are published
while the state lock is held so that a subscriber's snapshot and the changes after it agree.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from eport.cardlib.certificates import CardCertificate, ChainState, chain_of, load_trust_anchors
from eport.cardlib.token import CredentialStatus
from eport.daemon.config import DaemonSettings
from eport.daemon.service.backends import BackendRegistry, build_registry
from eport.daemon.service.card_state import (
    CardSnapshot,
    ReaderSlot,
    Session,
)
from eport.daemon.service.card_worker import CardWorker
from eport.daemon.service.certificates import CertCheck, check_certificate
from eport.daemon.service.events import Event, EventBus, EventKind, Subscription
from eport.daemon.service.keyring_store import UnattendedPins

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The uid of the process making the current call, set by the servicer around each call.
CALLER_UID: contextvars.ContextVar[int | None] = contextvars.ContextVar("eportdCALLER_UID",
                                                                       default=None)
FIRST_SCAN_TIMEOUT_S = 5.0
CallerActive = Callable[[], bool]


@dataclass(frozen=True)
class CardSelector:
    reader: str = ""
    card_id: str = ""


@dataclass(frozen=True)
class PinState:
    card_id: str
    pin: CredentialStatus
    puk: CredentialStatus
    session: Session | None
    session_expires_at: datetime | None
    unattended: bool


@dataclass(frozen=True)
class ReaderView:
    name: str
    present: bool
    atr: bytes
    exclusive_elsewhere: bool
    insertion: int
    card: CardSnapshot | None
    error: str
    removed_at: datetime | None = None
    removed_card_id: str = ""
    backend: str = ""


class ServiceCore:
    """The service's state, its event bus and the reads of it that touch no card."""

    def __init__(self, settings: DaemonSettings,
                 backends: BackendRegistry | None = None) -> None:
        self.settings = settings
        self.backends = backends if backends is not None else build_registry(
            settings.backends, settings.ignored_readers)
        self.started_at = datetime.now(UTC)
        self.anchors: list[CardCertificate] = load_trust_anchors(settings.trust_anchors)
        self.unattended = UnattendedPins(settings.allow_unattended)
        self.events = EventBus()
        self._lock = threading.RLock()
        self._slots: dict[str, ReaderSlot] = {}
        self._workers: dict[str, CardWorker] = {}
        self._next_insertion = 1
        self.service_running = False
        # What the last failed attempt to reach pcscd said (for `eport doctor`).
        self.service_error = ""
        self.service_error_code = 0
        self._shutting_down = False
        self._health: Any = None
        self._scanned = threading.Event()
        self._chains: dict[bytes, tuple[ChainState, str]] = {}
        # Per backend: True up, False down, absent before its monitor's first word.
        self._backend_up: dict[str, bool] = {}
        self._backend_detail: dict[str, str] = {}
        self._backend_scanned: set[str] = set()

    @staticmethod
    @contextlib.contextmanager
    def caller(uid: int | None) -> Iterator[None]:
        """Run a call on behalf of `uid` (the peer's uid the servicer read from the socket)."""
        token = CALLER_UID.set(uid)
        try:
            yield
        finally:
            CALLER_UID.reset(token)


    def _update_health(self) -> None:
        if self._health is None:
            return
        from grpc_health.v1 import health_pb2

        status = (health_pb2.HealthCheckResponse.SERVING if self.service_running
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        self._health.set("eport.v1.CardService", status)

    # ---- reading state ----

    def readers(self) -> list[ReaderView]:
        with self._lock:
            return [ReaderView(s.name, s.present, s.atr, s.exclusive_elsewhere, s.insertion,
                               s.card, s.card_error.reason.value if s.card_error else "",
                               s.removed_at, s.removed_card_id, s.backend)
                    for s in self._slots.values()]

    def subscribe(self) -> Subscription:
        with self._lock:
            return self.events.subscribe(self._snapshot_events)

    def _snapshot_events(self) -> list[Event]:
        events = [Event(EventKind.SERVICE_UP if self.service_running
                        else EventKind.SERVICE_DOWN)]
        for slot in self._slots.values():
            events.append(Event(EventKind.READER_ADDED, slot.name))
            if slot.present:
                events.append(Event(EventKind.CARD_INSERTED, slot.name, atr=slot.atr))
                if slot.card is not None:
                    events.append(Event(EventKind.CARD_READY, slot.name, atr=slot.atr,
                                        card=slot.card))
                if slot.session is not None:
                    events.append(Event(EventKind.SESSION_OPENED, slot.name))
        return events

    def check(self, certificate: CardCertificate) -> CertCheck:
        # The chain of a certificate never changes while the daemon runs; the clock does, so
        # the validity window is checked at every call.
        with self._lock:
            chain = self._chains.get(certificate.der)
        if chain is None:
            chain = chain_of(certificate, self.anchors)
            with self._lock:
                if len(self._chains) > 256:
                    self._chains.clear()
                self._chains[certificate.der] = chain
        return check_certificate(certificate, self.anchors, chain=chain,
                                 warning_days=self.settings.expiry_warning_days)

