"""A presence listener that records what a backend's monitor announced, for tests to wait on."""

from __future__ import annotations

import threading
from collections.abc import Callable

from eport.cardlib.token import ReaderPresence
from tests.support.waiting import wait_until


class PresenceRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # (kind, reader name or cause)
        self.readers: dict[str, ReaderPresence] = {}
        self.up: bool | None = None
        self._changed = threading.Condition()

    def _record(self, kind: str, what: str) -> None:
        with self._changed:
            self.events.append((kind, what))
            self._changed.notify_all()

    def service_up(self) -> None:
        self.up = True
        self._record("service_up", "")

    def service_down(self, cause: str = "", code: int = 0) -> None:
        self.up = False
        self.readers.clear()
        self._record("service_down", cause)

    def reader_added(self, presence: ReaderPresence) -> None:
        self.readers[presence.name] = presence
        self._record("reader_added", presence.name)

    def reader_removed(self, name: str) -> None:
        self.readers.pop(name, None)
        self._record("reader_removed", name)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None:
        self.readers[presence.name] = presence
        self._record("presence_changed", presence.name)

    def scan_complete(self) -> None:
        self._record("scan_complete", "")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        try:
            wait_until(condition, timeout=timeout, interval=0.01, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; events: {self.events[-12:]}") from None
