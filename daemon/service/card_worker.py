"""One worker thread and one FIFO queue per reader: the only path to that reader's card.

Jobs run one at a time, each inside the backend's transaction (PC/SC: SCardBeginTransaction),
so no two commands are ever interleaved on the card, ours or another program's. A caller that
finds nothing queued and nothing on the card runs its job in its own thread (call()): the card
lock keeps the order, and a signature saves two thread hand-offs (about 0.1 ms when idle). A
job whose caller has gone (deadline passed, cancelled) is dropped before it reaches the card. A
backend's TokenUnavailable becomes an EportError; after a removal the connection is dropped and
the next job connects afresh, so reinsertion needs no restart.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eport.cardlib.errors import CardError, NotPivCardError, TokenUnavailable, Unavailable
from eport.cardlib.token import Backend, Token, TokenConnection
from eport.common.failure import EportFailure
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.messages import backend_variant

logger = logging.getLogger(__name__)

_UNAVAILABLE_REASONS = {
    Unavailable.SERVICE_NOT_RUNNING: Reason.SERVICE_NOT_RUNNING,
    Unavailable.NO_READER: Reason.NO_READER,
    Unavailable.NO_CARD: Reason.NO_CARD,
    Unavailable.CARD_REMOVED: Reason.CARD_REMOVED,
    Unavailable.CARD_TIMEOUT: Reason.CARD_TIMEOUT,
    Unavailable.SHARING_VIOLATION: Reason.SHARING_VIOLATION,
    Unavailable.UNSUPPORTED_CARD: Reason.UNSUPPORTED_CARD,
}


# pcscd polls a reader every 400 ms; a pulled card is reported within one period.
_REMOVAL_NOTICE_S = 0.5


# What a job meets when its handle died without the command reaching the card.
_RECONNECT_AND_RETRY = {
    Unavailable.CARD_RESET: "card reset by another program",
    Unavailable.INVALID_HANDLE: "the backend restarted under the card handle",
}


class CallerGone(EportFailure):
    """The caller cancelled or its deadline passed before the job reached the card."""

    code = "CALLER_GONE"


@dataclass(frozen=True)
class CardAccess:
    """What a job gets: the card's token, for the insertion it was connected for."""

    token: Token
    reader: str
    insertion: int
    atr: bytes


class WorkerOwner(Protocol):
    def current_insertion(self, reader: str) -> int: ...
    def seconds_until_idle_expiry(self, reader: str) -> float | None: ...
    def expire_idle_session(
        self, reader: str, run_on_card: Callable[[Callable[[CardAccess], None]], None]
    ) -> None: ...
    def card_was_reset(self, reader: str) -> None: ...


@dataclass
class _Job:
    run: Callable[[CardAccess], Any]
    future: concurrent.futures.Future[Any]
    caller_active: Callable[[], bool]
    needs_card: bool = True
    final: bool = False  # the shutdown logout: runs although the worker is stopping


_STOP = object()


def _without_card(job: _Job) -> Any:
    return job.run(None)  # type: ignore[arg-type]


def unavailable_error(exc: TokenUnavailable, reader: str) -> EportError:
    if exc.reason == Unavailable.CARD_RESET:
        return EportError(Reason.CARD_ERROR, "the card was reset by another program",
                          reader=reader)
    reason = _UNAVAILABLE_REASONS.get(exc.reason, Reason.CARD_ERROR)
    variant = backend_variant(reader) if reason is Reason.SERVICE_NOT_RUNNING else ""
    return EportError(reason, str(exc), reader=reader, variant=variant)


class CardWorker:
    def __init__(self, reader: str, owner: WorkerOwner, backend: Backend) -> None:
        self.reader = reader
        self._owner = owner
        self._backend = backend
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._connection: TokenConnection | None = None
        self._connected_insertion = -1
        self._atr = b""
        self._thread = threading.Thread(target=self._loop, name=f"card:{reader}", daemon=True)
        # Held by whoever has the card: the worker thread, or a caller running its job itself.
        # Reentrant, because _execute takes it too.
        self._card_lock = threading.RLock()
        # Card jobs submitted and not yet holding the card; a caller may run its own job only
        # when this is 0, so nobody overtakes a job that is already waiting.
        self._order = threading.Lock()
        self._waiting = 0
        self._stopping = False
        # Set by the service when the backend went away (pcscd stopped): every handle is dead.
        self._context_stale = threading.Event()

    @property
    def backend_name(self) -> str:
        return self._backend.name

    def start(self) -> None:
        self._thread.start()

    def submit(self, run: Callable[[CardAccess], Any], caller_active: Callable[[], bool]
               = lambda: True) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._stopping:
            future.set_exception(EportError(Reason.DAEMON_SHUTTING_DOWN, reader=self.reader))
            return future
        self._enqueue(_Job(run, future, caller_active))
        return future

    def _enqueue(self, job: _Job) -> None:
        with self._order:
            self._waiting += 1
            self._queue.put(job)

    def call(self, run: Callable[[CardAccess], Any], caller_active: Callable[[], bool]
             = lambda: True) -> Any:
        """Run `run` on the card and answer its result (or raise its error), in FIFO order
        with submit()'s jobs. With nothing queued and the card free, the calling thread runs
        it itself; otherwise it waits its turn in the queue."""
        with self._order:
            mine = (not self._stopping and self._waiting == 0
                    and self._card_lock.acquire(blocking=False))
        if not mine:
            return self.submit(run, caller_active).result()
        try:
            if not caller_active():
                raise CallerGone()
            return self._execute(_Job(run, concurrent.futures.Future(), caller_active))
        finally:
            self._card_lock.release()

    def pending(self) -> int:
        """Card jobs waiting for their turn (not counting the one on the card)."""
        with self._order:
            return self._waiting

    def drop_context(self) -> None:
        """The backend stopped: the worker connects afresh before its next command."""
        self._context_stale.set()

    def wake(self) -> None:
        """Re-evaluate the idle timer (a session opened or closed)."""
        self._queue.put(_Job(lambda _access: None, concurrent.futures.Future(), lambda: True,
                             needs_card=False))

    def stop(self, timeout: float,
             last: Callable[[CardAccess], None] | None = None) -> None:
        """Finish the job in progress; fail the queued ones; run `last` on the card (the
        shutdown logout), then close the connection."""
        self._stopping = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                if item.needs_card:
                    with self._order:
                        self._waiting -= 1
                self._refuse_for_shutdown(item)
        if last is not None:
            self._enqueue(_Job(last, concurrent.futures.Future(), lambda: True, final=True))
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ---- the worker thread ----

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._owner.seconds_until_idle_expiry(self.reader))
            except queue.Empty:
                self._owner.expire_idle_session(self.reader, self._run_housekeeping)
                continue
            if item is _STOP:
                break
            assert isinstance(item, _Job)
            if not item.needs_card:
                self._run_job(item, _without_card)
                continue
            # A caller running its own job may have the card: wait for it, in turn.
            with self._card_lock:
                with self._order:
                    self._waiting -= 1
                if self._stopping and not item.final:
                    self._refuse_for_shutdown(item)
                    continue
                self._run_job(item, self._execute)
        with self._card_lock:
            self._disconnect()

    def _run_job(self, job: _Job, run: Callable[[_Job], Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        if not job.caller_active():
            job.future.set_exception(CallerGone())
            return
        try:
            job.future.set_result(run(job))
        except BaseException as exc:  # the caller receives it; the worker goes on
            job.future.set_exception(exc)

    def _refuse_for_shutdown(self, job: _Job) -> None:
        if job.future.set_running_or_notify_cancel():
            job.future.set_exception(EportError(Reason.DAEMON_SHUTTING_DOWN,
                                                reader=self.reader))

    def _run_housekeeping(self, run: Callable[[CardAccess], None]) -> None:
        """Run `run` on the card (idle logout); failures are logged, not raised: a card that
        is gone has lost its security status anyway."""
        try:
            self._execute(_Job(run, concurrent.futures.Future(), lambda: True))
        except (EportError, CardError) as exc:
            logger.info("housekeeping on the card failed: %s", exc,
                        extra={"reader": self.reader})

    def _execute(self, job: _Job) -> Any:
        with self._card_lock:
            return self._execute_holding_card(job)

    def _execute_holding_card(self, job: _Job) -> Any:
        for attempt in (1, 2):
            access = self._connect()
            assert self._connection is not None
            try:
                with self._connection.transaction():
                    return job.run(access)
            except TokenUnavailable as exc:
                if exc.reason in _RECONNECT_AND_RETRY and attempt == 1:
                    # Another program reset the card, or the backend restarted under our
                    # handle (pcscd restarted; a PKCS#11 module reinitialised, which SoftHSM2
                    # needs to see a token come back). Either way the command never reached the
                    # card, and its security status is gone: reconnect and run the job once
                    # more; the session layer sees no session.
                    logger.info("%s; reconnecting", _RECONNECT_AND_RETRY[exc.reason],
                                extra={"reader": self.reader})
                    self._owner.card_was_reset(self.reader)
                    self._disconnect()
                    continue
                error = self._explain(exc)
                self._after_failure(exc if error is None else error)
                raise unavailable_error(exc if error is None else error,
                                        self.reader) from None
            except CardError as exc:
                raise card_error(exc, self.reader) from None
        raise AssertionError("unreachable")

    def _explain(self, exc: TokenUnavailable) -> TokenUnavailable | None:
        """A command that broke off (no status word, a communication error) is most often a
        card pulled mid-command. Ask the backend to wait up to one polling period for the card
        to be seen gone (event-driven for PC/SC); CARD_REMOVED if so, else None."""
        if exc.reason not in (Unavailable.CARD_ERROR, Unavailable.CARD_TIMEOUT):
            return None
        if not self._backend.card_gone(self.reader, _REMOVAL_NOTICE_S):
            return None
        return TokenUnavailable(Unavailable.CARD_REMOVED, "the card was removed during the "
                                "command")

    def _after_failure(self, exc: TokenUnavailable) -> None:
        if exc.reason in (Unavailable.CARD_REMOVED, Unavailable.NO_CARD,
                          Unavailable.CARD_TIMEOUT, Unavailable.CARD_ERROR,
                          Unavailable.SERVICE_NOT_RUNNING, Unavailable.NO_READER,
                          Unavailable.INVALID_HANDLE):
            self._disconnect()

    def _connect(self) -> CardAccess:
        insertion = self._owner.current_insertion(self.reader)
        if insertion < 0:
            raise EportError(Reason.NO_CARD, reader=self.reader)
        if self._context_stale.is_set():
            self._context_stale.clear()
            self._disconnect()
        if self._connection is not None and self._connected_insertion == insertion:
            return CardAccess(self._connection.token, self.reader, insertion, self._atr)
        self._disconnect()
        try:
            connection = self._backend.connect(self.reader)
        except TokenUnavailable as exc:
            self._after_failure(exc)
            raise unavailable_error(exc, self.reader) from None
        except NotPivCardError as exc:
            raise EportError(Reason.UNSUPPORTED_CARD, "no PIV application",
                             status_word=exc.sw, reader=self.reader) from None
        except CardError as exc:
            raise card_error(exc, self.reader) from None
        self._connection, self._atr = connection, connection.token.atr
        self._connected_insertion = insertion
        return CardAccess(connection.token, self.reader, insertion, self._atr)

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(TokenUnavailable):
                self._connection.close()
        self._connection = None
        self._connected_insertion = -1


def card_error(exc: CardError, reader: str) -> EportError:
    """A status word the card layer could not place: CARD_ERROR with the status word."""
    return EportError(Reason.CARD_ERROR, exc.operation, status_word=exc.sw, reader=reader)
