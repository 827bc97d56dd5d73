"""Receipts written by another data-centre process on the same database reach this one's
WatchReceipts streams.

Polling, not LISTEN/NOTIFY: one small query per interval per process (the newest receipt's
sequence, an index lookup) wakes the ReceiptHub when it grew. Polling was chosen because
  - it needs nothing of the writer: every backend, every process (also a second process on one
    SQLite file, or an admin command) is seen, with no trigger or NOTIFY to keep in step;
  - it survives a database restart by itself: a LISTEN connection that drops loses the
    notifications sent meanwhile, and catching up would need this same query anyway;
  - NOTIFY takes a database-wide lock at commit, serialising every writing transaction.
The price: a receipt saved through another process shows up to one interval (0.1 s) later;
one saved through this process wakes its streams at once (ReceiptHub.published()).

Order: a stream resumes after the last sequence it sent, so a receipt must never become
visible after one with a larger sequence. Writes are serial on both stores (SQLite's BEGIN
IMMEDIATE; on PostgreSQL the advisory lock every write transaction takes first, see
storage_postgres), so receipts commit in sequence order.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # receipts.py imports this module
    from eport.datacenter.receipts import ReceiptHub

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.1
_NEWEST = "SELECT COALESCE(MAX(sequence), 0) FROM receipts"


ReadConnection = Callable[[], contextlib.AbstractContextManager[Any]]


class ReceiptFeed:
    """A thread that wakes `hub` when the receipts table's newest sequence grows."""

    def __init__(self, read: ReadConnection, hub: ReceiptHub,
                 interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self._read = read
        self._hub = hub
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eport-receipt-feed",
                                        daemon=True)
        self._newest = -1

    def start(self) -> None:
        self._newest = self._poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _poll(self) -> int:
        try:
            with self._read() as connection:
                row = connection.execute(_NEWEST).fetchone()
        except Exception as error:  # a restarting database: try at the next interval
            logger.debug("receipt feed: cannot read the newest receipt (%s)", error)
            return self._newest
        return int(row[0])

    def _run(self) -> None:
        # The hub closes first when the server stops, before the store does.
        while not self._stop.wait(self._interval) and not self._hub.closed:
            newest = self._poll()
            if newest > self._newest:
                self._newest = newest
                self._hub.published()
