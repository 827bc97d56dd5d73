"""SIGTERM and SIGINT as a stop request that the main thread waits for.

The handler takes no lock: it records the signal's name and writes one byte to a pipe. Setting
a threading.Event from a handler looks equivalent but can deadlock: the handler runs in the
main thread, and if the signal lands while that thread is inside Event.wait() holding the
event's internal lock, Event.set() waits for that lock forever (a SIGTERM sent right as a
server became ready left eportd hanging this way). Logging from a handler has the same hazard,
so the waiting code logs what `received` holds once wait() returns.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """`with StopSignals.installed() as stop: ... stop.wait()`; request() stops from code."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self.received: list[str] = []

    @classmethod
    @contextlib.contextmanager
    def installed(cls, signums: tuple[signal.Signals, ...] = STOP_SIGNALS
                  ) -> Iterator[StopSignals]:
        """Handle `signums` inside the block; the previous handlers come back afterwards."""
        stop = cls()
        previous = {signum: signal.signal(signum, stop._on_signal) for signum in signums}
        try:
            yield stop
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
            stop.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)  # a list append takes no lock
        self.request()

    def request(self) -> None:
        """Stop as a signal would (from any thread, or from a handler)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")  # a full pipe already holds a request

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop was requested; False if `timeout` seconds passed first. Python
        retries the select after running a handler (PEP 475), which sees the byte at once."""
        readable, _, _ = select.select([self._read_fd], [], [], timeout)
        return bool(readable)

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
