"""Random APDUs through the real pcscd to a simulated card: the reader must answer throughout.

    flock /tmp/eport-pcsc.lock .venv/bin/python -m tests.support.apdu_fuzz --through-pcscd \
        --count 100000

Mutated and random APDUs (1-byte ones included) go through pcscd's SCardTransmit, as any PC/SC
program would send them, to the card in a vpcd slot. After every batch a SELECT of the PIV
application must answer 9000 (a second SELECT when the first ended a command chain that a
random APDU left open). A watchdog notices an APDU that gets no answer (the reader would
be dead for every program until the card is pulled), records it, and pulls the card out and
puts it back so the run goes on. An answer of 6F00 (an internal error) is a failure too.

What pcscd itself refuses (an empty command, one longer than its buffer) never reaches the
card: those are counted, not failures, as long as the reader keeps answering. A 1-byte command
equal to a vpcd control code (00, 01, 02, 04) is never sent: vpcd's wire format cannot tell
it from power off / on / reset / get ATR (see eport.firmware_sim.vpcd).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eport.cardlib.pcsc.transport import PcscConnection, PcscContext, PcscError
from eport.common.apdu import SW
from eport.firmware_sim.image import load_card
from eport.firmware_sim.runner import SimulatorRunner, SlotRunner
from eport.firmware_sim.vpcd import CONTROL_CODES
from tests.support.apdu_fuzz import _next_apdu

SELECT_PIV = bytes.fromhex("00A404000BA00000030800001000010000")
ONE_BYTE_SHARE = 0.02
_ONE_BYTE_APDUS = [bytes([b]) for b in range(256) if b not in CONTROL_CODES]
STALL_SECONDS = 5.0  # an answer through pcscd takes well under a millisecond


@dataclass
class PcscdFuzzReport:
    sent: int = 0
    one_byte: int = 0
    batches_checked: int = 0
    seconds: float = 0.0
    status_words: Counter[int] = field(default_factory=Counter)
    refused_by_pcscd: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (f"sent {self.sent} APDUs through pcscd ({self.one_byte} of 1 byte) in "
                f"{self.seconds:.1f} s ({rate:.0f}/s); {self.batches_checked} batches each "
                f"followed by SELECT 9000; {sum(self.refused_by_pcscd.values())} refused by "
                f"pcscd itself; {len(self.failures)} failures")


def next_pcscd_apdu(rng: random.Random) -> bytes:
    if rng.random() < ONE_BYTE_SHARE:
        return rng.choice(_ONE_BYTE_APDUS)
    apdu = _next_apdu(rng)
    if len(apdu) == 1 and apdu[0] in CONTROL_CODES:
        return apdu + b"\x00"  # see the module docstring
    return apdu


class _Watchdog:
    """Pulls the card out (and puts it back) when an APDU has been waiting too long."""

    def __init__(self, slot: SlotRunner, reader: str, report: PcscdFuzzReport) -> None:
        self._slot = slot
        self._reader = reader
        self._report = report
        self._lock = threading.Lock()
        self._pending: tuple[bytes, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def sending(self, apdu: bytes) -> None:
        with self._lock:
            self._pending = (apdu, time.monotonic())

    def answered(self) -> None:
        with self._lock:
            self._pending = None

    def _run(self) -> None:
        while not self._stop.wait(0.2):  # not a wait: a watchdog timing each APDU
            with self._lock:
                pending = self._pending
                stalled = pending is not None and time.monotonic() - pending[1] > STALL_SECONDS
                if stalled:
                    self._pending = None
            if stalled and pending is not None:
                self._report.failures.append(
                    f"{pending[0].hex() or '(empty)'}: no answer within {STALL_SECONDS:g} s "
                    "(the card was pulled to free the reader)")
                self._slot.remove()
                # Put it back only once pcscd has seen it gone, or pcscd takes the reinsertion
                # for the same insertion. If pcscd cannot say, the reinsertion still goes ahead.
                with contextlib.suppress(PcscError), PcscContext() as context:
                    context.wait_for_presence(self._reader, present=False, timeout=5)
                self._slot.insert()


def _transmit(connection: PcscConnection, apdu: bytes, report: PcscdFuzzReport) -> int | None:
    """The status word, or None when pcscd refused the command or the card went away."""
    try:
        _data, sw = connection.send_and_receive(apdu)
    except PcscError as exc:
        report.refused_by_pcscd[f"0x{exc.native_code:08X} {exc.reason}"] += 1
        return None
    return sw


def _reader_answers(context: PcscContext, reader: str, connection: PcscConnection
                    ) -> tuple[PcscConnection, int | None]:
    """SELECT the PIV application, reconnecting once if the card was pulled meanwhile."""
    for _attempt in range(2):
        try:
            _data, sw = connection.send_and_receive(SELECT_PIV)
            if sw != SW.OK:
                # A random APDU left a command chain open: the SELECT ends it, refused with
                # 6883 when its header differs (ISO 7816-4) or as the chain's last part (the
                # AID then follows the random data: 6A82). The next SELECT must work.
                _data, sw = connection.send_and_receive(SELECT_PIV)
            return connection, sw
        except PcscError:
            connection.close()
            context.wait_for_presence(reader, present=True, timeout=5)
            connection = context.connect(reader)
    return connection, None


def fuzz_through_pcscd(slot: SlotRunner, reader: str, count: int, seed: int,
                       batch: int = 500) -> PcscdFuzzReport:
    rng = random.Random(seed)
    report = PcscdFuzzReport()
    started = time.perf_counter()
    with PcscContext() as context, _Watchdog(slot, reader, report) as watchdog:
        connection = context.connect(reader)
        try:
            for n in range(count):
                apdu = next_pcscd_apdu(rng)
                watchdog.sending(apdu)
                sw = _transmit(connection, apdu, report)
                watchdog.answered()
                report.sent += 1
                report.one_byte += len(apdu) == 1
                if sw is not None:
                    report.status_words[sw] += 1
                    if sw == SW.NO_PRECISE_DIAGNOSIS:
                        report.failures.append(f"{apdu.hex()}: internal error (6F00)")
                # After a refusal the card may have been pulled by the watchdog: check now.
                if sw is None or (n + 1) % batch == 0 or n + 1 == count:
                    connection, select_sw = _reader_answers(context, reader, connection)
                    report.batches_checked += 1
                    if select_sw != SW.OK:
                        shown = "no answer" if select_sw is None else f"{select_sw:04X}"
                        report.failures.append(f"after APDU {n + 1}: SELECT answered {shown}")
        finally:
            connection.close()
    report.seconds = time.perf_counter() - started
    return report


def run_on_new_card(count: int, seed: int, algorithm: str, slot: int = 0) -> PcscdFuzzReport:
    """Provision a card in a temporary directory, put it into `slot` and fuzz it."""
    import tempfile

    from eport.firmware_sim.ca import init_ca
    from tests.support.cards import provision_test_card, write_card
    from tests.support.pcsc_stack import (
        reader_for_slot,
        start_pcscd_if_needed,
        wait_for_presence,
        wait_until_empty,
    )

    pcscd = start_pcscd_if_needed()  # stopped at the end if started here
    with contextlib.ExitStack() as cleanup, tempfile.TemporaryDirectory() as tmp:
        cleanup.callback(pcscd.stop)
        image = provision_test_card(init_ca(Path(tmp) / "ca"), algorithm)
        path = write_card(image, Path(tmp))
        reader = reader_for_slot(slot)
        wait_until_empty(reader)
        runner = SimulatorRunner(load_card)
        slot_runner = runner.add_slot(slot, path)
        with runner:
            wait_for_presence(reader, True, timeout=10)
            return fuzz_through_pcscd(slot_runner, reader, count, seed)
