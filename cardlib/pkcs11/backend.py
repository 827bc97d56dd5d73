"""The PKCS#11 backend: any module path; every present, initialised token is a reader named
`pkcs11:<module basename>:<slot id> <token label>`.

Presence: the monitor thread polls the module every `poll_interval` seconds (C_WaitForSlotEvent
with CKF_DONT_BLOCK, then the slot list, which is what we trust; module.py says why we never
block inside the module). A module that fails to load, or is finalised under us, is reported
with service_down(cause) and loaded again with backoff; so is a module that lists a token it
can no longer describe (SoftHSM2 whose token directory was removed: it only looks again when
reinitialised).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.pkcs11.connection import Pkcs11Connection, Pkcs11Token
from eport.cardlib.pkcs11.module import ModuleUnavailable, Pkcs11Module, TokenSlot
from eport.cardlib.token import PresenceListener, ReaderPresence

logger = logging.getLogger(__name__)

_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 10.0


@dataclass
class _Known:
    slot: TokenSlot
    events: int


class Pkcs11Backend:
    name = "pkcs11"

    def __init__(self, module_path: str, sm2_mechanism: int | None = None, *,
                 sm2_decrypt_mechanism: int | None = None, poll_interval: float = 0.2) -> None:
        self.module = Pkcs11Module(module_path)
        self.sm2_mechanism = sm2_mechanism
        self.sm2_decrypt_mechanism = sm2_decrypt_mechanism
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenSlot] = {}  # the last scan, by reader name
        self.last_error = ""  # why the module is down, "" when it is up

    @property
    def reader_prefix(self) -> str:
        return self.module.reader_prefix

    def owns(self, reader: str) -> bool:
        return reader.startswith(self.module.reader_prefix)

    def monitor(self, listener: PresenceListener) -> Pkcs11Monitor:
        return Pkcs11Monitor(self, listener)

    def scan(self) -> tuple[dict[str, TokenSlot], bool]:
        """Load the module if needed and list its tokens; raises ModuleUnavailable."""
        if not self.module.loaded:
            self.module.load()
        tokens, stale = self.module.tokens()
        current = {self.module.reader_name(t): t for t in tokens}
        with self._lock:
            self._tokens = current
        return current, stale

    def connect(self, reader: str) -> Pkcs11Connection:
        with self._lock:
            slot = self._tokens.get(reader)
        if slot is None:
            try:
                current, _ = self.scan()
            except ModuleUnavailable as exc:
                raise TokenUnavailable(Unavailable.SERVICE_NOT_RUNNING, str(exc)) from None
            slot = current.get(reader)
        if slot is None:
            raise TokenUnavailable(Unavailable.NO_CARD, f"no PKCS#11 token is {reader!r} now")
        return Pkcs11Connection(Pkcs11Token(self.module, slot, self.sm2_mechanism,
                                            self.sm2_decrypt_mechanism))

    def close(self) -> None:
        """Finalise the module (after the monitor stopped and every connection closed)."""
        self.module.unload()

    def card_gone(self, reader: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                current, stale = self.scan()
            except ModuleUnavailable:
                return True
            if reader not in current or stale:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))


class Pkcs11Monitor:
    def __init__(self, backend: Pkcs11Backend, listener: PresenceListener) -> None:
        self._backend = backend
        self._listener = listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pkcs11-monitor {backend.module.basename}")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_START_S
        up: bool | None = None
        known: dict[str, _Known] = {}
        events = 0
        module = self._backend.module
        lost: set[str] = set()  # readers that went away and have not come back
        while not self._stop.is_set():
            try:
                current, stale = self._backend.scan()
            except ModuleUnavailable as exc:
                cause = str(exc)
                if up is not False or cause != self._backend.last_error:
                    logger.warning("%s", cause)
                    self._backend.last_error = cause
                    self._listener.service_down(cause)
                up, known = False, {}
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            if up is not True:
                self._backend.last_error = ""
                self._listener.service_up()
                up = True
            for name in [n for n in known if n not in current]:
                del known[name]
                lost.add(name)
                self._listener.reader_removed(name)
            lost -= current.keys()
            for name, slot in current.items():
                before = known.get(name)
                if before is None:
                    events += 1
                    known[name] = _Known(slot, events)
                    self._listener.reader_added(self._presence(name, events))
                elif before.slot.serial != slot.serial:  # another token under the same name
                    events += 1
                    known[name] = _Known(slot, events)
                    self._listener.presence_changed(self._presence(name, events), reinserted=True)
                else:
                    known[name].slot = slot
            self._listener.scan_complete()
            if stale:
                # The module shows a token it cannot describe: reinitialise it so it looks again.
                logger.info("PKCS#11 module %s lost a token; reinitialising it", module.basename)
                module.unload()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            logged_in = {t.slot_id for t in current.values()} & module.logged_in
            if lost and not module.events_seen and not logged_in:
                # A module that never reports slot events (SoftHSM2) sees a token added or put
                # back only when reinitialised; do that, with backoff, while one is missing and
                # no token of the module is logged in (a reinitialisation logs every token out).
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                if not self._stop.is_set() and not module.logged_in & {
                        t.slot_id for t in current.values()}:
                    module.unload()
                continue
            backoff = _BACKOFF_START_S
            self._stop.wait(self._backend.poll_interval)

    @staticmethod
    def _presence(name: str, events: int) -> ReaderPresence:
        return ReaderPresence(name=name, present=True, atr=b"", exclusive=False,
                              card_events=events)
