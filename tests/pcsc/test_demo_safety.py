"""`eport-demo` with somebody's own card in a reader: it refuses to start, or, told to ignore
that reader, runs on its own cards; either way the other card's PIN tries are untouched.

(Before, the demo took that card, sent it two wrong PINs and then 88888888 with the last try
allowed: the card was blocked, and the demo ended in a traceback.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import read_image
from tests.support.cards import provision_test_card, write_card
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot

pytestmark = pytest.mark.pcsc
FOREIGN_PIN = "12345678"  # not the demo's 88888888
FOREIGN_SLOT = 1
DEMO = str(Path(sys.executable).with_name("eport-demo"))


def _tries_left(reader: str) -> int:
    """As an independent tool reads them (VERIFY without data: no try is spent)."""
    status = subprocess.run(["yubico-piv-tool", "-r", reader, "-a", "status"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    return int(re.findall(r"PIN tries left:\s*(\d+)", status)[0])


def test_the_demo_leaves_a_foreign_card_alone(pcscd: Pcscd, tmp_path: Path, test_ca: TestCA,
                                              sim_slots: Callable[..., SimSlots]) -> None:
    foreign = write_card(provision_test_card(test_ca, "sm2", pin=FOREIGN_PIN), tmp_path,
                         "theirs.json")
    slots = sim_slots([(FOREIGN_SLOT, foreign)])
    reader = reader_for_slot(FOREIGN_SLOT)
    assert _tries_left(reader) == 3

    refused = subprocess.run([DEMO, "--workdir", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    [line] = refused.stderr.strip().splitlines()  # one line, no traceback
    assert "读卡器中有不是演示创建的卡" in line and f"another card is in '{reader}'" in line
    assert f"--ignore-reader '{reader}'" in line  # the remedy, ready to paste
    assert "PIN" not in refused.stdout  # it stopped before any PIN step
    assert _tries_left(reader) == 3 and read_image(foreign).pin.tries_left == 3

    apdus_before = slots.slot(FOREIGN_SLOT).status().apdus
    ran = subprocess.run([DEMO, "--workdir", str(tmp_path / "ran"), "--ignore-reader", reader],
                         capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Verified OK" in ran.stdout and "PIN_LAST_ATTEMPT_GUARD" in ran.stdout
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "Virtual PCD 00 00" in ran.stdout  # it used the other, empty reader
    # Nothing at all reached the foreign card while the demo ran: its eportd did not see it.
    assert slots.slot(FOREIGN_SLOT).status().apdus == apdus_before
    assert _tries_left(reader) == 3 and read_image(foreign).pin.tries_left == 3


def test_a_demo_failure_is_one_bilingual_line(tmp_path: Path) -> None:
    """No traceback even when the work directory cannot be made."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = subprocess.run([DEMO, "--workdir", str(blocker / "demo")], capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("eport-demo: 系统错误 / a system error:") and "Traceback" not in line
