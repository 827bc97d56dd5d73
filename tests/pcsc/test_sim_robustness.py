"""The simulator through the real pcscd against what PC/SC programs may send: 1-byte APDUs,
random APDUs (the reader must answer throughout), and more than two vpcd slots."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext
from eport.common.piv import Algorithm
from eport.firmware_sim.image import CardImage, load_card
from tests.support.apdu_fuzz_pcscd import fuzz_through_pcscd
from tests.support.cards import write_card
from tests.support.pcsc_stack import (
    VPCD_READERS,
    Pcscd,
    SimCard,
    SimSlots,
    more_vpcd_slots,
    reader_for_slot,
    start_sim_process,
    vpcd_readers_present,
    wait_for_presence,
)

pytestmark = pytest.mark.pcsc
SELECT = bytes.fromhex("00A404000BA00000030800001000010000")
CI_FUZZ_COUNT = 2_000
PIN = b"88888888"


def test_a_one_byte_apdu_gets_6700_and_the_reader_keeps_answering(
        sim_card: Callable[..., SimCard]) -> None:
    """Before, `3B` from any program left pcscd waiting for ever on the card's answer."""
    card = sim_card("p256")
    with PcscContext() as context:
        connection = context.connect(card.reader)
        try:
            for byte in (0x3B, 0xFF, 0x80, 0x03, 0x05, 0xA4):
                assert connection.send_and_receive(bytes([byte])) == (b"", 0x6700), hex(byte)
                assert connection.send_and_receive(SELECT)[1] == 0x9000
        finally:
            connection.close()
        # Another program, after that: the reader still serves it.
        other = context.connect(card.reader)
        try:
            piv = PivSession(other)
            piv.select()
            assert piv.read_card_id() == card.image.profile.card_id
        finally:
            other.close()


def test_random_apdus_through_pcscd_leave_the_reader_answering(
        sim_card: Callable[..., SimCard]) -> None:
    """The CI share of the 100,000-APDU campaign (python -m tests.support.apdu_fuzz
    --through-pcscd --count 100000)."""
    card = sim_card("p256")
    report = fuzz_through_pcscd(card.runner, card.reader, CI_FUZZ_COUNT, seed=15, batch=250)
    print(report.summary())
    assert report.failures == []
    assert report.sent == CI_FUZZ_COUNT and report.one_byte >= 20
    assert report.status_words[0x6700] >= report.one_byte  # each 1-byte APDU got 6700
    assert report.batches_checked >= CI_FUZZ_COUNT // 250


def test_four_vpcd_slots_each_serve_their_own_card(
        pcscd: Pcscd, tmp_path: Path, card_images: dict[str, CardImage]) -> None:
    """Slots 2 and 3 through a second reader entry (ports 35965, 35966); pcscd gets its
    packaged configuration back afterwards."""
    algorithms = ("p256", "rsa2048", "sm2", "rsa1024")
    with more_vpcd_slots(pcscd, 4, tmp_path / "pcscd") as readers:
        assert readers == (*VPCD_READERS, "Virtual PCD 01 00 00", "Virtual PCD 01 00 01")
        slots = SimSlots(load_card)
        try:
            for slot, algorithm in enumerate(algorithms):
                slots.add(slot, write_card(card_images[algorithm], tmp_path,
                                           f"slot{slot}.json"))
            with PcscContext() as context:
                for slot, algorithm in enumerate(algorithms):
                    connection = context.connect(reader_for_slot(slot))
                    try:
                        piv = PivSession(connection)
                        piv.select()
                        assert piv.read_card_id() == card_images[algorithm].profile.card_id
                    finally:
                        connection.close()
        finally:
            slots.close()
    assert vpcd_readers_present()
    with PcscContext() as context:
        assert "Virtual PCD 01 00 00" not in context.list_readers()


def test_ctl_delay_for_general_authenticate_slows_signatures_only(
        pcscd: Pcscd, card_images: dict[str, CardImage], tmp_path: Path) -> None:
    """`eport-sim ctl delay --ms 400 --ins 87`: each signature takes 400 ms more, like a slow
    USB key, while reading the card stays fast."""
    control = tmp_path / "control.sock"
    process = start_sim_process(write_card(card_images["p256"], tmp_path), 0, control)
    try:
        set_delay = subprocess.run(
            [sys.executable, "-m", "eport.firmware_sim", "ctl", "--control", str(control),
             "delay", "--ms", "400", "--ins", "87"], capture_output=True, text=True, timeout=60)
        assert set_delay.returncode == 0, set_delay.stderr
        status = subprocess.run(
            [sys.executable, "-m", "eport.firmware_sim", "ctl", "--control", str(control),
             "status"], capture_output=True, text=True, timeout=60).stdout
        assert "delay 400 ms for INS 87" in status
        with PcscContext() as context:
            connection = context.connect(reader_for_slot(0))
            try:
                piv = PivSession(connection)
                started = time.monotonic()
                piv.select()
                piv.read_card_id()
                reading = time.monotonic() - started
                piv.verify_pin(PIN)
                started = time.monotonic()
                piv.sign(Algorithm.ECC_P256, bytes(32))
                signing = time.monotonic() - started
            finally:
                connection.close()
        print(f"read {reading * 1000:.1f} ms, signed {signing * 1000:.1f} ms")
        assert signing >= 0.4
        assert reading < 0.4  # several APDUs, none of them delayed
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    wait_for_presence(reader_for_slot(0), False, timeout=3)
