"""StopSignals: SIGTERM/SIGINT end wait() whenever they land, handlers are restored after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from eport.common.stop_signals import StopSignals


def test_wait_times_out_without_a_signal_and_request_ends_it_from_another_thread() -> None:
    with StopSignals.installed() as stop:
        started = time.monotonic()
        assert stop.wait(0.05) is False
        assert time.monotonic() - started >= 0.04
        threading.Timer(0.05, stop.request).start()
        assert stop.wait(5) is True
        assert stop.wait(0) and stop.received == []  # it stays requested


def test_sigterm_ends_wait_and_is_named_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals.installed() as stop:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        assert stop.wait(5) is True
        assert stop.received == ["SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) is before


# The handler runs wherever the main thread is when the signal lands, here at the last moment
# before wait() blocks. A threading.Event set from the handler deadlocks when that moment is
# inside Event.wait() (its lock held); a subprocess, so that a regression fails, not hangs.
_LATE_SIGNAL = textwrap.dedent("""
    import os, select, signal
    from eport.common import stop_signals
    real_select = select.select

    def select_after_a_signal(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        len(args)  # a call: the handler has run by now
        return real_select(*args)

    stop_signals.select.select = select_after_a_signal
    with stop_signals.StopSignals.installed() as stop:
        print(stop.wait(30), stop.received)
""")


def test_a_signal_landing_just_before_wait_blocks_still_ends_it() -> None:
    done = subprocess.run([sys.executable, "-c", _LATE_SIGNAL], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "['SIGTERM']"]
