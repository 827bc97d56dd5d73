"""The card service: reader state from the monitor, one worker per reader, and the operations
the gRPC servicer calls (card info, PIN, sessions, certificates, signing, decryption).

Lock order: `self._lock` (reader state) before the event bus's lock; events are published
while the state lock is held so that a subscriber's snapshot and the changes after it agree.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from eport.common.piv import KeyRef
from eport.daemon.card.errors import InvalidPinError, ReferenceBlockedError, SecurityStatusError
from eport.daemon.card.piv_session import ReferenceStatus
from eport.daemon.config import DaemonSettings
from eport.daemon.service import pin_policy
from eport.daemon.service.card_state import (
    IDENTIFY_RETRY_DELAYS_S,
    CardSnapshot,
    ReaderSlot,
    Session,
    may_pass,
    read_card,
)
from eport.daemon.service.card_worker import CardAccess, CardWorker
from eport.daemon.service.certificates import (
    CardCertificate,
    CertCheck,
    ChainState,
    chain_of,
    check_certificate,
    load_trust_anchors,
    refuse_unusable,
)
from eport.daemon.service.decryption import (
    Decryption,
    envelope_certificate_of,
    plan_decryption,
)
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.events import Event, EventBus, EventKind, Subscription
from eport.daemon.service.keyring_store import UnattendedPins
from eport.daemon.service.reader_monitor import ReaderMonitor, ReaderPresence
from eport.daemon.service.signing import (
    PIV_ALGORITHM,
    SignAlgorithm,
    Signature,
    SignInput,
    card_challenge,
    choose_algorithm,
    digest_of,
    shape_signature,
    verify_signature,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
_FIRST_SCAN_TIMEOUT_S = 5.0
CallerActive = Callable[[], bool]


@dataclass(frozen=True)
class CardSelector:
    reader: str = ""
    card_id: str = ""


@dataclass(frozen=True)
class PinState:
    card_id: str
    pin: ReferenceStatus
    puk: ReferenceStatus
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


class CardServiceApp:
    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
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
        self._monitor = ReaderMonitor(self, lambda name: name in settings.ignored_readers)

    # ---- lifecycle (used by eport.daemon.main) ----

    def register(self, server: grpc.Server) -> None:
        from eport.daemon.service.servicer import add_to_server

        add_to_server(self, server)

    def attach_health(self, health_servicer: Any) -> None:
        self._health = health_servicer
        self._update_health()

    def start(self) -> None:
        """Start the reader monitor and return once it has taken its first view of pcscd
        (readers and cards, or the service down), so that the first call after start-up is
        answered from real state, not a premature SERVICE_NOT_RUNNING."""
        self._monitor.start()
        if not self._scanned.wait(_FIRST_SCAN_TIMEOUT_S):
            logger.warning("no first view of pcscd after %.0f s", _FIRST_SCAN_TIMEOUT_S)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._shutting_down = True
        self._monitor.stop(timeout)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop(timeout)

    def _update_health(self) -> None:
        if self._health is None:
            return
        from grpc_health.v1 import health_pb2

        status = (health_pb2.HealthCheckResponse.SERVING if self.service_running
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        self._health.set("eport.v1.CardService", status)

    # ---- monitor callbacks (the monitor thread) ----

    def service_up(self) -> None:
        with self._lock:
            self.service_running = True
            self.service_error, self.service_error_code = "", 0
            self.events.publish(Event(EventKind.SERVICE_UP))
        self._update_health()
        logger.info("pcscd is running")

    def service_down(self, cause: str = "", code: int = 0) -> None:
        with self._lock:
            self.service_running = False
            self.service_error, self.service_error_code = cause, code
            self._scanned.set()
            for name in list(self._slots):
                self._reader_gone(name)
            for worker in self._workers.values():
                worker.drop_context()
            self.events.publish(Event(EventKind.SERVICE_DOWN))
        self._update_health()

    def reader_added(self, presence: ReaderPresence) -> None:
        with self._lock:
            worker = self._workers.get(presence.name)
            if worker is None:
                worker = CardWorker(presence.name, self)
                worker.start()
                self._workers[presence.name] = worker
            self._slots[presence.name] = ReaderSlot(presence.name, worker)
            self.events.publish(Event(EventKind.READER_ADDED, presence.name))
            logger.info("reader added", extra={"reader": presence.name})
            self._apply_presence(presence, reinserted=False)

    def scan_complete(self) -> None:
        self._scanned.set()

    def reader_removed(self, name: str) -> None:
        with self._lock:
            self._reader_gone(name)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None:
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
        run_on_card(lambda access: access.piv.logout())

    def card_was_reset(self, reader: str) -> None:
        with self._lock:
            slot = self._slots.get(reader)
            if slot is not None:
                self._close_session(slot, "card reset")

    # ---- sessions ----

    def _open_session(self, slot: ReaderSlot, card_id: str) -> Session:
        session = Session(slot.insertion, card_id)
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

    # ---- reading state ----

    def readers(self) -> list[ReaderView]:
        with self._lock:
            return [ReaderView(s.name, s.present, s.atr, s.exclusive_elsewhere, s.insertion,
                               s.card, s.card_error.reason.value if s.card_error else "",
                               s.removed_at, s.removed_card_id)
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

    def _select_slot(self, selector: CardSelector) -> ReaderSlot:
        with self._lock:
            if self._shutting_down:
                raise EportError(Reason.DAEMON_SHUTTING_DOWN)
            if not self.service_running:
                raise EportError(Reason.SERVICE_NOT_RUNNING)
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
            # Seed 000, 1.1: with an IC card and an IKEY both present, the IC card is used.
            ic_cards = [s for s in usable if s.looks_like_ic_card]
            if len(ic_cards) == 1:
                return ic_cards[0]
            raise EportError(Reason.AMBIGUOUS_CARD,
                             "cards in " + ", ".join(repr(s.name) for s in usable))

    def _run(self, slot: ReaderSlot, job: Callable[[CardAccess], T],
             caller_active: CallerActive) -> T:
        future = slot.worker.submit(job, caller_active)
        result: T = future.result()
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

    # ---- PIN ----

    @staticmethod
    def _statuses(access: CardAccess) -> tuple[ReferenceStatus, ReferenceStatus]:
        """The PIN's and the PUK's tries left, read without spending one."""
        return (access.piv.reference_status(KeyRef.PIN),
                access.piv.reference_status(KeyRef.PUK))

    @staticmethod
    def _same_insertion(snapshot: CardSnapshot, access: CardAccess) -> None:
        if access.insertion != snapshot.insertion:
            # The card was swapped between the request and its turn: never send a PIN meant
            # for one card to another.
            raise EportError(Reason.CARD_REMOVED, "the card was replaced", reader=access.reader)

    @contextlib.contextmanager
    def _card_refusal(self, slot: ReaderSlot, snapshot: CardSnapshot, *, puk: bool = False
                      ) -> Iterator[None]:
        """A PIN or PUK the card refused, as our error. A refused PIN also ends the session:
        the card has dropped its verified state."""
        try:
            yield
        except InvalidPinError as exc:
            if not puk:
                with self._lock:
                    self._close_session(slot, "wrong PIN")
            raise EportError(Reason.PUK_INCORRECT if puk else Reason.PIN_INCORRECT,
                             tries_left=exc.tries_left, reader=slot.name,
                             card_id=snapshot.card_id) from None
        except ReferenceBlockedError:
            if not puk:
                with self._lock:
                    self._close_session(slot, "PIN blocked")
            raise EportError(Reason.PUK_BLOCKED if puk else Reason.PIN_BLOCKED, tries_left=0,
                             reader=slot.name, card_id=snapshot.card_id) from None

    def _verify_on_card(self, slot: ReaderSlot, snapshot: CardSnapshot, access: CardAccess,
                        pin: bytearray, *, allow_last_attempt: bool) -> Session:
        pin_policy.guard(access.piv.reference_status(KeyRef.PIN),
                         allow_last_attempt=allow_last_attempt)
        with self._card_refusal(slot, snapshot):
            access.piv.verify_pin(pin)
        with self._lock:
            return self._open_session(slot, snapshot.card_id)

    def _pin_job(self, slot: ReaderSlot, snapshot: CardSnapshot,
                 on_card: Callable[[CardAccess], None], secrets: tuple[bytearray, ...],
                 caller_active: CallerActive, *, forget_stored_pin: bool = False) -> PinState:
        """Run `on_card` on this insertion, wipe the secrets whatever happens, and answer with
        the PIN and PUK state read afterwards. `forget_stored_pin`: the PIN was changed, so
        a PIN kept for unattended signing is now wrong (deleted off the card's thread)."""

        def job(access: CardAccess) -> tuple[ReferenceStatus, ReferenceStatus]:
            self._same_insertion(snapshot, access)
            on_card(access)
            return self._statuses(access)

        try:
            pin, puk = self._run(slot, job, caller_active)
        finally:
            for secret in secrets:
                pin_policy.wipe(secret)
        if forget_stored_pin and self.unattended.allowed:
            self.unattended.delete(snapshot.card_id)
        with self._lock:
            session = self._session_for(slot.name, snapshot.insertion)
        return PinState(snapshot.card_id, pin, puk, session, self.session_expiry(session),
                        self.unattended.enabled(snapshot.card_id))

    def pin_status(self, selector: CardSelector, caller_active: CallerActive = lambda: True
                   ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        return self._pin_job(slot, snapshot, lambda _access: None, (), caller_active)

    def verify_pin(self, selector: CardSelector, pin: str, *, allow_last_attempt: bool,
                   caller_active: CallerActive = lambda: True) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        secret = pin_policy.secret_bytes(pin, what="PIN", eport_card=snapshot.is_eport)

        def on_card(access: CardAccess) -> None:
            self._verify_on_card(slot, snapshot, access, secret,
                                 allow_last_attempt=allow_last_attempt)

        return self._pin_job(slot, snapshot, on_card, (secret,), caller_active)

    def change_pin(self, selector: CardSelector, old_pin: str, new_pin: str, *,
                   allow_last_attempt: bool, caller_active: CallerActive = lambda: True
                   ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        old = pin_policy.secret_bytes(old_pin, what="current PIN", eport_card=snapshot.is_eport)
        new = pin_policy.secret_bytes(new_pin, what="new PIN", eport_card=snapshot.is_eport)

        def on_card(access: CardAccess) -> None:
            pin_policy.guard(access.piv.reference_status(KeyRef.PIN),
                             allow_last_attempt=allow_last_attempt)
            with self._card_refusal(slot, snapshot):
                access.piv.change_reference(KeyRef.PIN, old, new)

        return self._pin_job(slot, snapshot, on_card, (old, new), caller_active,
                             forget_stored_pin=True)

    def unblock_pin(self, selector: CardSelector, puk: str, new_pin: str, *,
                    allow_last_attempt: bool, caller_active: CallerActive = lambda: True
                    ) -> PinState:
        slot, snapshot = self.card(selector, caller_active)
        puk_secret = pin_policy.secret_bytes(puk, what="PUK", eport_card=snapshot.is_eport)
        new = pin_policy.secret_bytes(new_pin, what="new PIN", eport_card=snapshot.is_eport)

        def on_card(access: CardAccess) -> None:
            pin_policy.guard(access.piv.reference_status(KeyRef.PUK),
                             allow_last_attempt=allow_last_attempt, puk=True)
            with self._card_refusal(slot, snapshot, puk=True):
                access.piv.unblock_pin(puk_secret, new)
            with self._lock:
                self._close_session(slot, "PIN reset")

        return self._pin_job(slot, snapshot, on_card, (puk_secret, new), caller_active,
                             forget_stored_pin=True)

    def logout(self, selector: CardSelector, caller_active: CallerActive = lambda: True
               ) -> bool:
        slot, snapshot = self.card(selector, caller_active)

        def job(access: CardAccess) -> bool:
            self._same_insertion(snapshot, access)
            access.piv.logout()
            with self._lock:
                return self._close_session(slot, "logout")

        return self._run(slot, job, caller_active)

    # ---- unattended signing ----

    def enable_unattended(self, selector: CardSelector, pin: str,
                          caller_active: CallerActive = lambda: True) -> str:
        if not self.unattended.allowed:
            raise EportError(Reason.UNATTENDED_DISABLED,
                             "eportd was started without --allow-unattended")
        self.verify_pin(selector, pin, allow_last_attempt=False, caller_active=caller_active)
        _, snapshot = self.card(selector, caller_active)
        self.unattended.store(snapshot.card_id, pin)
        return snapshot.card_id

    def disable_unattended(self, selector: CardSelector) -> str:
        _, snapshot = self.card(selector)
        self.unattended.delete(snapshot.card_id)
        return snapshot.card_id

    def _unattended_verify(self, slot: ReaderSlot, snapshot: CardSnapshot,
                           access: CardAccess) -> Session | None:
        stored = self.unattended.load(snapshot.card_id)
        if stored is None:
            return None
        secret = bytearray(stored.encode("ascii"))
        try:
            # Never the last try with a stored PIN: a person must decide that.
            return self._verify_on_card(slot, snapshot, access, secret, allow_last_attempt=False)
        except EportError as exc:
            if exc.reason is Reason.PIN_INCORRECT:
                self.unattended.delete(snapshot.card_id)
            raise
        finally:
            pin_policy.wipe(secret)

    # ---- certificates and signing ----

    def _run_authorised(self, slot: ReaderSlot, snapshot: CardSnapshot,
                        operation: Callable[[CardAccess], T], *, pin: str,
                        allow_last_attempt: bool, refuse_stored_pin: bool,
                        caller_active: CallerActive) -> tuple[T, bool]:
        """Run a private-key `operation` under the PIN rules of signing and decryption: the
        request's PIN (with the last-try guard) if given, else the open session, else the PIN
        stored for unattended use unless `refuse_stored_pin`. Answers the operation's result
        and whether this call opened the session (none was open before it)."""
        secret = (pin_policy.secret_bytes(pin, what="PIN", eport_card=snapshot.is_eport)
                  if pin else None)

        def job(access: CardAccess) -> tuple[T, bool]:
            self._same_insertion(snapshot, access)
            with self._lock:
                session = self._session_for(slot.name, snapshot.insertion)
                ended = slot.session_end_reason
            opened = session is None
            if secret is not None:
                session = self._verify_on_card(slot, snapshot, access, secret,
                                               allow_last_attempt=allow_last_attempt)
            if session is None and not refuse_stored_pin:
                session = self._unattended_verify(slot, snapshot, access)
            if session is None:
                if ended == "idle":
                    raise EportError(Reason.SESSION_EXPIRED, reader=slot.name,
                                     card_id=snapshot.card_id)
                raise EportError(Reason.NOT_AUTHENTICATED, reader=slot.name,
                                 card_id=snapshot.card_id)
            try:
                result = operation(access)
            except SecurityStatusError:
                # Something reset the card's security status behind our back.
                with self._lock:
                    self._close_session(slot, "card lost its verified state")
                raise EportError(Reason.NOT_AUTHENTICATED, "the card is no longer verified",
                                 reader=slot.name, card_id=snapshot.card_id) from None
            session.last_used = time.monotonic()
            return result, opened

        try:
            return self._run(slot, job, caller_active)
        finally:
            if secret is not None:
                pin_policy.wipe(secret)

    def sign(self, selector: CardSelector, request: SignInput,
             algorithm: SignAlgorithm | None, *, pin: str = "", allow_last_attempt: bool = False,
             refuse_stored_pin: bool = False, caller_active: CallerActive = lambda: True
             ) -> tuple[Signature, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        check = self.check(snapshot.certificate)
        refuse_unusable(check)
        if check.chain is ChainState.UNTRUSTED:
            raise EportError(Reason.CERT_UNTRUSTED, check.chain_detail, reader=slot.name,
                             card_id=snapshot.card_id)
        chosen = choose_algorithm(snapshot.key_kind, algorithm)
        digest = digest_of(chosen, snapshot.certificate, request)
        challenge = card_challenge(chosen, snapshot.certificate, digest)
        raw, _opened = self._run_authorised(
            slot, snapshot,
            lambda access: access.piv.sign(PIV_ALGORITHM[snapshot.key_kind], challenge),
            pin=pin, allow_last_attempt=allow_last_attempt,
            refuse_stored_pin=refuse_stored_pin, caller_active=caller_active)
        signature = shape_signature(chosen, raw)
        # A faulty card must never yield a bad signature.
        if not verify_signature(chosen, snapshot.certificate, digest, signature.der_or_pkcs1):
            raise EportError(Reason.CARD_ERROR, "the card returned a signature that does not "
                             "verify with its certificate", reader=slot.name,
                             card_id=snapshot.card_id)
        return signature, snapshot

    # ---- the envelope key ----

    def envelope_certificate(self, selector: CardSelector,
                             caller_active: CallerActive = lambda: True
                             ) -> tuple[CardCertificate, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        return envelope_certificate_of(snapshot, slot.name), snapshot

    def decrypt(self, selector: CardSelector, ciphertext: bytes, *, pin: str = "",
                allow_last_attempt: bool = False, refuse_stored_pin: bool = False,
                caller_active: CallerActive = lambda: True
                ) -> tuple[Decryption, CardSnapshot]:
        slot, snapshot = self.card(selector, caller_active)
        # Everything that can be refused without the card is, so a ciphertext that is not
        # this key's costs neither a PIN try nor a card operation.
        plan = plan_decryption(snapshot, ciphertext, slot.name)
        raw, opened = self._run_authorised(
            slot, snapshot, plan.card_step, pin=pin, allow_last_attempt=allow_last_attempt,
            refuse_stored_pin=refuse_stored_pin, caller_active=caller_active)
        try:
            return plan.finish(raw), snapshot
        except EportError:
            if opened:
                # A ciphertext that does not decrypt leaves the session as it was: end the one
                # that this call's PIN opened.
                self._end_session(slot, snapshot, "decryption failed")
            raise

    def _end_session(self, slot: ReaderSlot, snapshot: CardSnapshot, reason: str) -> None:
        """Log the card out and close its session, even if the caller has gone: this undoes
        what the caller's own request did. A failure here is logged, never raised over the
        error being answered."""
        def job(access: CardAccess) -> None:
            if access.insertion != snapshot.insertion:
                return  # another card now: it has no session of ours
            with self._lock:
                self._close_session(slot, reason)
            access.piv.logout()

        try:
            self._run(slot, job, lambda: True)
        except Exception as exc:  # the card was pulled, pcscd went away: no session is left
            logger.warning("ending the session failed: %s", exc, extra={"reader": slot.name})


def build_service(settings: DaemonSettings) -> CardServiceApp:
    return CardServiceApp(settings)
