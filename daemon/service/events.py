"""The event stream: sequence-numbered events, fanned out to every subscriber.

A new subscriber gets the current state first and then every change, with no gap and no
duplicate between the two: the snapshot is taken under the same lock that publishes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

logger = logging.getLogger(__name__)
SUBSCRIBER_QUEUE_LIMIT = 10_000


class EventKind(StrEnum):
    READER_ADDED = "READER_ADDED"
    READER_REMOVED = "READER_REMOVED"
    CARD_INSERTED = "CARD_INSERTED"
    CARD_REMOVED = "CARD_REMOVED"
    CARD_READY = "CARD_READY"
    SERVICE_UP = "SERVICE_UP"
    SERVICE_DOWN = "SERVICE_DOWN"
    SESSION_OPENED = "SESSION_OPENED"
    SESSION_CLOSED = "SESSION_CLOSED"
    SNAPSHOT_COMPLETE = "SNAPSHOT_COMPLETE"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    reader: str = ""
    atr: bytes = b""
    card: object | None = None  # a CardSnapshot for CARD_READY
    detail: str = ""
    sequence: int = 0
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


class Subscription:
    """A subscriber's queue. `None` in the queue ends the stream (closed or overflowed)."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.queue: queue.Queue[Event | None] = queue.Queue()
        self.overflowed = False
        self._sequence = 0  # per stream, so each subscriber sees 1, 2, 3 ... without gaps

    def put(self, event: Event) -> None:
        self._sequence += 1
        self.queue.put(replace(event, sequence=self._sequence))

    def close(self) -> None:
        self._bus.unsubscribe(self)
        self.queue.put(None)


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    def publish(self, event: Event) -> None:
        with self._lock:
            for subscriber in list(self._subscribers):
                if subscriber.queue.qsize() >= SUBSCRIBER_QUEUE_LIMIT:
                    # A subscriber that stopped reading must not grow the daemon's memory.
                    subscriber.overflowed = True
                    self._subscribers.remove(subscriber)
                    subscriber.queue.put(None)
                    continue
                subscriber.put(event)
        logger.debug("event %s %s", event.kind, event.reader)

    def subscribe(self, snapshot: Callable[[], list[Event]]) -> Subscription:
        """Register a subscriber whose queue starts with the current state."""
        subscription = Subscription(self)
        with self._lock:
            for event in [*snapshot(), Event(EventKind.SNAPSHOT_COMPLETE)]:
                subscription.put(event)
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
