"""One worker thread and one FIFO queue per reader: the only path to that reader's card.

Jobs run one at a time, each inside a PC/SC transaction, so no two commands are ever
interleaved on the card, ours or another program's. A job whose caller has gone (deadline
passed, cancelled) is dropped before it reaches the card. PC/SC failures become EportErrors;
after a removal the connection is dropped (disconnect with LEAVE, as the simulator's notes ask)
and the next job connects afresh, so reinsertion needs no restart.
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

from eport.daemon.card.errors import CardError, NotPivCardError
from eport.daemon.card.piv_session import PivSession
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.transport.pcsc import (
    PcscConnection,
    PcscContext,
    PcscError,
    card_removed_error,
)

logger = logging.getLogger(__name__)

_PCSC_REASONS = {
    "SERVICE_NOT_RUNNING": Reason.SERVICE_NOT_RUNNING,
    "NO_READER": Reason.NO_READER,
    "NO_CARD": Reason.NO_CARD,
    "CARD_REMOVED": Reason.CARD_REMOVED,
    "CARD_TIMEOUT": Reason.CARD_TIMEOUT,
    "SHARING_VIOLATION": Reason.SHARING_VIOLATION,
    "UNSUPPORTED_CARD": Reason.UNSUPPORTED_CARD,
}


# pcscd polls a reader every 400 ms; a pulled card is reported within one period.
_REMOVAL_NOTICE_S = 0.5


class CallerGone(Exception):
    """The caller cancelled or its deadline passed before the job reached the card."""


@dataclass(frozen=True)
class CardAccess:
    """What a job gets: the card's PIV session, for the insertion it was connected for."""

    piv: PivSession
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


_STOP = object()


def pcsc_error(exc: PcscError, reader: str) -> EportError:
    if exc.reason == "CARD_RESET":
        return EportError(Reason.CARD_ERROR, "the card was reset by another program",
                          reader=reader)
    return EportError(_PCSC_REASONS.get(exc.reason, Reason.CARD_ERROR), str(exc), reader=reader)


class CardWorker:
    def __init__(self, reader: str, owner: WorkerOwner) -> None:
        self.reader = reader
        self._owner = owner
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._context: PcscContext | None = None
        self._connection: PcscConnection | None = None
        self._connected_insertion = -1
        self._piv: PivSession | None = None
        self._atr = b""
        self._thread = threading.Thread(target=self._loop, name=f"card:{reader}", daemon=True)
        self._stopping = False
        # Set by the service when pcscd went away: every handle of the old pcscd is dead.
        self._context_stale = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def submit(self, run: Callable[[CardAccess], Any], caller_active: Callable[[], bool]
               = lambda: True) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._stopping:
            future.set_exception(EportError(Reason.DAEMON_SHUTTING_DOWN, reader=self.reader))
            return future
        self._queue.put(_Job(run, future, caller_active))
        return future

    def drop_context(self) -> None:
        """pcscd stopped: the worker opens a new context before its next command."""
        self._context_stale.set()

    def wake(self) -> None:
        """Re-evaluate the idle timer (a session opened or closed)."""
        self._queue.put(_Job(lambda _access: None, concurrent.futures.Future(), lambda: True,
                             needs_card=False))

    def stop(self, timeout: float) -> None:
        """Finish the job in progress; fail the queued ones; close the connection."""
        self._stopping = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(EportError(Reason.DAEMON_SHUTTING_DOWN,
                                                     reader=self.reader))
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
            if not item.future.set_running_or_notify_cancel():
                continue
            if not item.caller_active():
                item.future.set_exception(CallerGone())
                continue
            try:
                item.future.set_result(self._execute(item) if item.needs_card
                                       else item.run(None))  # type: ignore[arg-type]
            except BaseException as exc:  # the caller receives it; the worker goes on
                item.future.set_exception(exc)
        self._disconnect()
        if self._context is not None:
            with contextlib.suppress(PcscError):
                self._context.close()

    def _run_housekeeping(self, run: Callable[[CardAccess], None]) -> None:
        """Run `run` on the card (idle logout); failures are logged, not raised: a card that
        is gone has lost its security status anyway."""
        try:
            self._execute(_Job(run, concurrent.futures.Future(), lambda: True))
        except (EportError, CardError) as exc:
            logger.info("housekeeping on the card failed: %s", exc,
                        extra={"reader": self.reader})

    def _execute(self, job: _Job) -> Any:
        for attempt in (1, 2):
            access = self._connect()
            assert self._connection is not None
            try:
                self._connection.begin_transaction()
                try:
                    return job.run(access)
                finally:
                    with contextlib.suppress(PcscError):
                        self._connection.end_transaction()
            except PcscError as exc:
                if exc.reason == "CARD_RESET" and attempt == 1:
                    # Another program reset the card: its security status is gone. Reconnect
                    # and run the job once more; the session layer sees no session.
                    logger.info("card reset by another program", extra={"reader": self.reader})
                    self._owner.card_was_reset(self.reader)
                    self._disconnect()
                    continue
                exc = self._explain(exc)
                self._after_failure(exc)
                raise pcsc_error(exc, self.reader) from None
            except CardError as exc:
                raise card_error(exc, self.reader) from None
        raise AssertionError("unreachable")

    def _explain(self, exc: PcscError) -> PcscError:
        """A transmit that broke off (no status word, a communication error) is most often a
        card pulled mid-command. Wait up to one pcscd polling period for PC/SC to report the
        card gone (event-driven: it returns as soon as pcscd knows); CARD_REMOVED if so."""
        if exc.reason not in ("CARD_ERROR", "CARD_TIMEOUT") or self._context is None:
            return exc
        try:
            self._context.wait_for_presence(self.reader, present=False,
                                            timeout=_REMOVAL_NOTICE_S)
        except PcscError:
            return exc  # still present (or PC/SC itself failed): the first error stands
        return card_removed_error("the card was removed during the command")

    def _after_failure(self, exc: PcscError) -> None:
        if exc.reason in ("CARD_REMOVED", "NO_CARD", "CARD_TIMEOUT", "CARD_ERROR"):
            self._disconnect()
        elif exc.reason in ("SERVICE_NOT_RUNNING", "NO_READER", "INVALID_HANDLE"):
            self._forget_context()

    def _forget_context(self) -> None:
        self._disconnect()
        if self._context is not None:
            with contextlib.suppress(PcscError):
                self._context.close()
            self._context = None

    def _connect(self) -> CardAccess:
        insertion = self._owner.current_insertion(self.reader)
        if insertion < 0:
            raise EportError(Reason.NO_CARD, reader=self.reader)
        if self._context_stale.is_set():
            self._context_stale.clear()
            self._forget_context()
        if self._connection is not None and self._connected_insertion == insertion:
            assert self._piv is not None
            return CardAccess(self._piv, self.reader, insertion, self._atr)
        self._disconnect()
        try:
            if self._context is None:
                self._context = PcscContext()
            connection = self._context.connect(self.reader)
        except PcscError as exc:
            self._after_failure(exc)
            raise pcsc_error(exc, self.reader) from None
        piv = PivSession(connection)
        try:
            atr = connection.atr
            connection.begin_transaction()
            try:
                piv.select()
            finally:
                with contextlib.suppress(PcscError):
                    connection.end_transaction()
        except PcscError as exc:
            with contextlib.suppress(PcscError):
                connection.close()
            self._after_failure(exc)
            raise pcsc_error(exc, self.reader) from None
        except NotPivCardError as exc:
            with contextlib.suppress(PcscError):
                connection.close()
            raise EportError(Reason.UNSUPPORTED_CARD, "no PIV application",
                             status_word=exc.sw, reader=self.reader) from None
        self._connection, self._piv, self._atr = connection, piv, atr
        self._connected_insertion = insertion
        return CardAccess(piv, self.reader, insertion, atr)

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(PcscError):
                self._connection.close(reset=False)
        self._connection = None
        self._piv = None
        self._connected_insertion = -1


def card_error(exc: CardError, reader: str) -> EportError:
    """A status word the card layer could not place: CARD_ERROR with the status word."""
    return EportError(Reason.CARD_ERROR, exc.operation, status_word=exc.sw, reader=reader)
