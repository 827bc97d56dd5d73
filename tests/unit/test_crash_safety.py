"""kill -9 at random moments during VERIFY never gives a spent PIN try back and never leaves
an unreadable image (the card image is written before the card answers).

Each round starts a card process, lets it run one VERIFY with a wrong PIN and kills it after
a random delay of 0 to 4 ms (a VERIFY takes about that long, fsyncs included), so some kills
land before the try is spent, some in the middle and some after the answer.
EPORT_KILL_ROUNDS sets the number of rounds (default 60).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from eport.firmware_sim.card_os import load_card
from eport.firmware_sim.image import CardImage, read_image
from tests.support.cards import write_card

_WORKER = """
import sys
from pathlib import Path
from eport.firmware_sim.card_os import load_card
card = load_card(Path(sys.argv[1]))
card.execute(bytes.fromhex("00A4040005A000000308"))
print("ready", flush=True)
sys.stdin.readline()
response = card.execute(bytes.fromhex("00200080083131313131313131"))
print(response[-2:].hex(), flush=True)
sys.stdin.readline()
"""


def _refill(path: Path) -> None:
    """Give the card its tries back the legitimate way: the PUK."""
    card = load_card(path)
    try:
        assert card.execute(bytes.fromhex("002C008010" + b"12345678".hex() + b"88888888".hex())
                            )[-2:] == b"\x90\x00"
    finally:
        card.close()


def test_kill_9_during_verify_never_restores_a_try(
    card_images: dict[str, CardImage], tmp_path: Path
) -> None:
    rounds = int(os.environ.get("EPORT_KILL_ROUNDS", "60"))
    path = write_card(card_images["p256"], tmp_path)
    rng = random.Random(7)
    outcomes = {"before": 0, "spent_unanswered": 0, "answered": 0}
    for _ in range(rounds):
        tries_before = read_image(path).pin.tries_left
        if tries_before <= 1:
            _refill(path)
            tries_before = read_image(path).pin.tries_left
        worker = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline().strip() == "ready"
        worker.stdin.write("go\n")
        worker.stdin.flush()
        time.sleep(rng.uniform(0, 0.004))  # not a wait: a random moment to kill the worker at
        worker.send_signal(signal.SIGKILL)
        remaining_output = worker.communicate()[0].strip()
        image = read_image(path)  # raises if the kill left a damaged image
        tries_after = image.pin.tries_left
        assert tries_after in (tries_before, tries_before - 1), "a try was given back"
        if remaining_output:  # the card answered before it died: the answer is the truth
            assert remaining_output == f"63c{tries_after}"
            outcomes["answered"] += 1
        elif tries_after == tries_before:
            outcomes["before"] += 1
        else:
            outcomes["spent_unanswered"] += 1
    print("kill -9 outcomes:", outcomes)
    # The delays must actually have hit the VERIFY, not only before or after it.
    assert outcomes["answered"] + outcomes["spent_unanswered"] > 0
