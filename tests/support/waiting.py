"""The one way tests wait for something to happen: poll a condition until it holds or a deadline
passes, then fail saying what was awaited and what was last seen.

A test never sleeps for a fixed time hoping the event has happened by then: that is slow when
the machine is fast and flaky when it is loaded. Sleeps that are part of what a test exercises
(time passing for an idle timeout, a paced load) stay, each marked "# not a wait: <why>".
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T | bool | None], *, timeout: float, what: str,
               interval: float = 0.05,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Call `condition` every `interval` seconds until it returns a truthy value, and return
    that value. After `timeout` seconds raise AssertionError naming `what` (say what is awaited:
    "the card is shown in Virtual PCD 00 00") and the last value or exception seen.

    Exceptions of the `retry_on` types mean "not yet" (a server still starting refuses
    connections); any other exception propagates at once, as it would without the wait.
    """
    deadline = time.monotonic() + timeout
    last: str = "no attempt"
    while True:
        try:
            value = condition()
        except retry_on as exc:
            last = f"last error: {type(exc).__name__}: {exc}"
        else:
            if value:
                return value  # type: ignore[return-value]  # truthy: neither None nor False
            last = f"last value: {value!r}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what} ({last})")
        time.sleep(interval)  # not a wait: the polling interval of this helper
