"""A card in the real E-port certificate profile (acceptance "a real-profile card"):
provisioned with `eport-sim provision --profile real` (no E-port data object, GBK extensions,
E-port certificate profile), read through pcscd and the real eportd socket with the `eport` CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eport.firmware_sim.ca import TestCA
from tests.pcsc.test_doctor import doctor, the_finding
from tests.support.cards import TEST_KDF_ITERATIONS
from tests.support.daemon_stack import Daemon, running_daemon, wait_for_card
from tests.support.eport_cli import ok_json, run_eport
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot

pytestmark = pytest.mark.pcsc
READER0 = reader_for_slot(0)
HOLDER = "李四"
ENTERPRISE = "宁波某某国际物流有限公司"


@pytest.fixture
def daemon(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> Iterator[Daemon]:
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle)) as d:
        yield d


@pytest.fixture
def real_card(daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
              tmp_path: Path) -> Path:
    """Provisioned by the simulator's own command line, as a user would."""
    image = tmp_path / "real.card"
    done = subprocess.run(
        [sys.executable, "-m", "eport.firmware_sim", "provision", str(image),
         "--ca", str(test_ca.directory), "--profile", "real", "--algorithm", "rsa2048",
         "--holder", HOLDER, "--enterprise", ENTERPRISE,
         "--kdf-iterations", str(TEST_KDF_ITERATIONS)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sim_slots([(0, image)])
    wait_for_card(daemon.stub(), READER0)
    return image


def test_card_info_json_decodes_gbk_and_marks_the_rest_unknown(daemon: Daemon,
                                                              real_card: Path) -> None:
    card = ok_json(run_eport("card", "info", "--json", socket_path=daemon.socket),
                   "card info")["card"]
    assert card["holder_name"] == HOLDER
    assert card["enterprise_name"] == ENTERPRISE
    assert card["eport_data_source"] == "EPORT_CERTIFICATE_PROFILE"
    assert set(card["unknown_fields"]) == {"kind", "customs_code", "credit_code"}
    assert card["kind"] is None and card["customs_code"] is None and card["credit_code"] is None


@pytest.mark.parametrize(("lang", "unknown"), [("en", "unknown"), ("zh", "未知")])
def test_card_info_text_shows_holder_enterprise_and_unknown(daemon: Daemon, real_card: Path,
                                                            lang: str, unknown: str) -> None:
    result = run_eport("card", "info", socket_path=daemon.socket, lang=lang)
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    assert HOLDER in text and ENTERPRISE in text
    assert f"{unknown} / {unknown}" in text  # customs code / credit code


def test_doctor_explains_the_real_profile(daemon: Daemon, real_card: Path) -> None:
    _, result = doctor(daemon.socket)
    finding = the_finding(result, "EP-C10", "WARN")
    assert finding["details"]["holder"] == HOLDER
    assert finding["details"]["enterprise"] == ENTERPRISE
    assert "kind" in finding["details"]["unknown_fields"]
