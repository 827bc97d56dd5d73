"""`eport doctor` against the real stack (acceptance): for each fault a user meets,
the finding code, its status and a remedy; nothing in doctor spends a try or changes state;
the support bundle holds no secret."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eport.cardlib.pcsc.transport import PcscContext
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage, read_image
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import Daemon, running_daemon, wait_for_card
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot
from tests.support.waiting import wait_until

from eport.protos.v1 import eportd_pb2 as pb  # isort: skip

pytestmark = pytest.mark.pcsc
READER0, READER1 = reader_for_slot(0), reader_for_slot(1)
EPORT = [sys.executable, "-m", "eport.clients.cli.main"]


@pytest.fixture
def daemon(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> Iterator[Daemon]:
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle)) as d:
        yield d


def doctor(socket: Path, *args: str, lang: str = "en") -> tuple[int, dict[str, Any]]:
    # A HOME of its own: the browser-path findings (EP-B) must not depend on whether this
    # machine's user ran `eport-gateway tls install`.
    home = socket.parent / "doctor-home"
    home.mkdir(exist_ok=True)
    done = subprocess.run([*EPORT, "--socket", str(socket), "doctor", "--json", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EPORT_LANG": lang, "HOME": str(home),
                               "XDG_CONFIG_HOME": str(home / ".config")})
    assert "Traceback" not in done.stderr, done.stderr
    document = json.loads(done.stdout)
    assert document["command"] == "doctor" and document["ok"] is True
    return done.returncode, document["result"]


def findings(result: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in result["findings"] if f["code"] == code]


def the_finding(result: dict[str, Any], code: str, status: str) -> dict[str, Any]:
    """The one finding with this code and status; it has a cause and a remedy in both
    languages unless it is OK."""
    matching = [f for f in findings(result, code) if f["status"] == status]
    seen = [(f["code"], f["status"]) for f in result["findings"]]
    assert matching, f"no {status} {code} in {seen}"
    finding = matching[0]
    if status != "OK":
        for part in ("cause", "remedy") if status != "SKIP" else ("cause",):
            assert finding[part]["zh"] and finding[part]["en"], finding
    return finding


def insert(sim_slots: Callable[..., SimSlots], daemon: Daemon, image: CardImage, tmp_path: Path,
           name: str = "card.json") -> Path:
    path = write_card(image, tmp_path, name)
    sim_slots([(0, path)])
    wait_for_card(daemon.stub(), READER0)
    return path


def test_a_healthy_card_reports_no_failure(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                                           card_images: dict[str, CardImage],
                                           tmp_path: Path) -> None:
    insert(sim_slots, daemon, card_images["sm2"], tmp_path)
    code, result = doctor(daemon.socket)
    assert result["summary"]["fail"] == 0, result
    assert code == (20 if result["summary"]["warn"] else 0)
    for ok_code in ("EP-P01", "EP-P02", "EP-P03", "EP-E01", "EP-E02", "EP-R01", "EP-R04",
                    "EP-R05", "EP-C01", "EP-K01", "EP-K02", "EP-C02", "EP-C06", "EP-T01"):
        the_finding(result, ok_code, "OK")
    version = the_finding(result, "EP-E01", "OK")["details"]
    assert version["pid"] == daemon.process.pid and version["version"]
    assert the_finding(result, "EP-E02", "OK")["details"]["mode"] == "0600"
    assert the_finding(result, "EP-R04", "OK")["title"]["en"].startswith("ATR recognised")
    assert the_finding(result, "EP-D02", "OK")  # the vpcd readers
    # The empty second slot beside a card in use is fine.
    assert the_finding(result, "EP-R02", "OK")["subject"] == READER1


def test_human_report_in_chinese_and_english(daemon: Daemon,
                                             sim_slots: Callable[..., SimSlots],
                                             test_ca: TestCA, tmp_path: Path) -> None:
    insert(sim_slots, daemon, provision_test_card(test_ca, "p256", pin_tries_left=0), tmp_path)
    done = subprocess.run([*EPORT, "--socket", str(daemon.socket), "doctor"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LANG": "zh_CN.UTF-8", "EPORT_LANG": ""})
    assert done.returncode == 21
    text = done.stdout
    assert "[FAIL] EP-K01  口令已锁定" in text
    # Problem, cause and remedy, in the user's language first and then the other one.
    assert "原因: 连续输错3次口令" in text and "Cause: three wrong PINs" in text
    assert "解决办法:" in text and "制卡中心" in text and "card centre" in text
    assert "项失败" in text


def test_doctor_spends_no_try_and_keeps_the_session(daemon: Daemon,
                                                    sim_slots: Callable[..., SimSlots],
                                                    test_ca: TestCA, tmp_path: Path) -> None:
    image = provision_test_card(test_ca, "rsa2048", pin_tries_left=2)
    path = insert(sim_slots, daemon, image, tmp_path)
    _, result = doctor(daemon.socket)
    finding = the_finding(result, "EP-K01", "WARN")
    assert finding["details"]["pin_tries_left"] == 2
    assert read_image(path).pin.tries_left == 2
    stub = daemon.stub()
    stub.VerifyPin(pb.VerifyPinRequest(pin="88888888"))
    doctor(daemon.socket)
    status = stub.GetPinStatus(pb.CardSelector())
    assert status.session_active
    assert read_image(path).pin.tries_left == 3 and read_image(path).puk.tries_left == 3


def test_blocked_pin(daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
                     tmp_path: Path) -> None:
    insert(sim_slots, daemon, provision_test_card(test_ca, "p256", pin_tries_left=0), tmp_path)
    code, result = doctor(daemon.socket)
    assert code == 21
    finding = the_finding(result, "EP-K01", "FAIL")
    assert "制卡中心" in finding["remedy"]["zh"] and "eport pin unblock" in finding["remedy"]["en"]
    the_finding(result, "EP-K02", "OK")


def test_blocked_puk(daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
                     tmp_path: Path) -> None:
    image = provision_test_card(test_ca, "p256", pin_tries_left=0)
    image = image.with_puk(replace(image.puk, tries_left=0))
    insert(sim_slots, daemon, image, tmp_path)
    code, result = doctor(daemon.socket)
    assert code == 21
    assert "制卡中心" in the_finding(result, "EP-K02", "FAIL")["remedy"]["zh"]
    the_finding(result, "EP-K01", "FAIL")


@pytest.mark.parametrize("not_before,days,code,status", [
    (-400, 365, "EP-C03", "FAIL"),
    (-700, 710, "EP-C04", "WARN"),
    (+5, 365, "EP-C05", "FAIL")])
def test_certificate_states(daemon: Daemon, sim_slots: Callable[..., SimSlots], test_ca: TestCA,
                            tmp_path: Path, not_before: int, days: int, code: str,
                            status: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=not_before)
    insert(sim_slots, daemon, provision_test_card(test_ca, "p256", not_before=start, days=days),
           tmp_path)
    exit_code, result = doctor(daemon.socket)
    finding = the_finding(result, code, status)
    assert exit_code == (21 if status == "FAIL" else 20)
    if code == "EP-C04":
        assert "您的IC卡还有" in finding["cause"]["zh"]
        assert 9 <= finding["details"]["days_left"] <= 11
    if code == "EP-C05":
        # A certificate from the future points at the clock (QP FAQ §十三(十三)).
        clock = the_finding(result, "EP-T01", "FAIL")
        assert "not valid yet" in clock["cause"]["en"] and "timedatectl" in clock["remedy"]["en"]
    else:
        the_finding(result, "EP-T01", "OK")


def test_untrusted_chain(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                         tmp_path: Path) -> None:
    insert(sim_slots, daemon, provision_test_card(init_ca(tmp_path / "other-ca"), "p256"),
           tmp_path)
    code, result = doctor(daemon.socket)
    assert code == 21
    assert "trust-anchor" in the_finding(result, "EP-C06", "FAIL")["remedy"]["en"]


def test_reader_without_card(daemon: Daemon) -> None:
    code, result = doctor(daemon.socket)
    assert code == 21
    assert {f["subject"] for f in findings(result, "EP-R02")} == {READER0, READER1}
    the_finding(result, "EP-C01", "FAIL")


def test_card_pulled(daemon: Daemon, sim_slots: Callable[..., SimSlots],
                     card_images: dict[str, CardImage], tmp_path: Path) -> None:
    slots = sim_slots([(0, write_card(card_images["p256"], tmp_path))])
    wait_for_card(daemon.stub(), READER0)
    slots.remove(0)
    wait_for_card(daemon.stub(), READER0, present=False)
    _, result = doctor(daemon.socket)
    finding = the_finding(result, "EP-R03", "WARN")
    assert finding["subject"] == READER0 and "insert the card again" in finding["remedy"]["en"]
    assert findings(result, "EP-R02")[0]["subject"] == READER1  # never had a card


def test_no_reader(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> None:
    with running_daemon(tmp_path / "run", "--ignore-reader", READER0,
                        "--ignore-reader", READER1) as daemon:
        code, result = doctor(daemon.socket)
    assert code == 21
    the_finding(result, "EP-R01", "FAIL")


def test_card_held_exclusively(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                               sim_slots: Callable[..., SimSlots],
                               card_images: dict[str, CardImage]) -> None:
    sim_slots([(0, write_card(card_images["p256"], tmp_path))])
    with PcscContext() as context:
        holder = context.connect(READER0, exclusive=True)
        try:
            with running_daemon(tmp_path / "run", "--trust-anchor",
                                str(test_ca.trust_bundle)) as daemon:
                wait_until(lambda: any(
                    r.exclusive_elsewhere for r in daemon.stub().ListReaders(
                        pb.ListReadersRequest()).readers), timeout=5,
                    what="eportd sees the reader held exclusively elsewhere")
                code, result = doctor(daemon.socket)
        finally:
            holder.close()
    assert code == 21
    finding = the_finding(result, "EP-R06", "FAIL")
    assert finding["subject"] == READER0 and "close the other program" in finding["remedy"]["en"]


def test_daemon_down(tmp_path: Path) -> None:
    code, result = doctor(tmp_path / "nobody-here.sock")
    assert code == 21
    finding = the_finding(result, "EP-E01", "FAIL")
    assert "systemctl --user start eportd.socket" in finding["remedy"]["en"]
    assert the_finding(result, "EP-R01", "SKIP")


@pytest.mark.parametrize("mode", [0o666, 0o644])
def test_socket_with_wrong_permissions(daemon: Daemon, mode: int) -> None:
    daemon.socket.chmod(mode)
    code, result = doctor(daemon.socket)
    assert code == 21
    finding = the_finding(result, "EP-E02", "FAIL")
    assert finding["details"]["mode"] == f"{mode:04o}"
    if mode & 0o002:
        assert "every local user" in finding["cause"]["en"]


def test_pcscd_stopped(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd) -> None:
    if not pcscd.restartable:
        pytest.skip("pcscd was started outside the tests; not ours to stop")
    with running_daemon(tmp_path / "run") as daemon:
        pcscd.stop()
        try:
            wait_until(lambda: daemon.stub().GetDaemonInfo(
                pb.GetDaemonInfoRequest()).pcsc_state != pb.SERVICE_RUNNING, timeout=5,
                what="eportd notices pcscd is gone")
            code, result = doctor(daemon.socket)
        finally:
            pcscd.restart()
    assert code == 21
    assert "systemctl enable --now pcscd.socket" in the_finding(
        result, "EP-P02", "FAIL")["remedy"]["en"]
    finding = the_finding(result, "EP-P03", "FAIL")
    assert finding["details"]["pcsc_error"]  # what pcsc-lite said
    the_finding(result, "EP-R01", "SKIP")


def test_support_bundle_holds_no_secret(tmp_path: Path, test_ca: TestCA, pcscd: Pcscd,
                                        sim_slots: Callable[..., SimSlots]) -> None:
    pin, puk, new_pin, wrong = "57391846", "20481937", "64028137", "91827364"
    image = provision_test_card(test_ca, "rsa2048", pin=pin, puk=puk)
    sim_slots([(0, write_card(image, tmp_path))])
    bundle = tmp_path / "support.tar.gz"
    with running_daemon(tmp_path / "run", "--trust-anchor", str(test_ca.trust_bundle),
                        "--apdu-trace", "--log-level", "DEBUG") as daemon:
        stub = daemon.stub()
        wait_for_card(stub, READER0)
        # Every kind of secret goes through the daemon first, so that its log has seen them.
        for secrets in ([wrong], [pin], [pin, new_pin], [puk, pin]):
            command = {1: ["pin", "verify"], 2: ["pin", "change"]}[min(len(secrets), 2)]
            if secrets[0] == puk:
                command = ["pin", "unblock"]
            subprocess.run([*EPORT, "--socket", str(daemon.socket), *command, "--pin-stdin"],
                           input="".join(f"{s}\n" for s in secrets), capture_output=True,
                           text=True, timeout=60, check=False)
        data = tmp_path / "data.bin"
        data.write_bytes(b"declaration")
        subprocess.run([*EPORT, "--socket", str(daemon.socket), "sign", str(data), "--pin-stdin",
                        "-o", str(tmp_path / "sig")], input=f"{pin}\n", text=True, check=True,
                       capture_output=True, timeout=60)
        _, result = doctor(daemon.socket, "--bundle", str(bundle), "--daemon-log",
                              str(daemon.log_path))
    assert result["bundle"]["path"] == str(bundle)
    assert "SEND" in daemon.log()  # the APDU trace was on: the log is worth searching
    assert bundle.stat().st_mode & 0o077 == 0
    with tarfile.open(bundle) as tar:
        names = sorted(member.name for member in tar.getmembers())
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert names == sorted(f"eport-doctor/{n}" for n in (
        "report.txt", "report.json", "cards.json", "versions.txt", "pcsc-state.txt",
        "eportd.log"))
    assert b"EP-K01" in contents["eport-doctor/report.txt"]
    assert b"verify" in contents["eport-doctor/eportd.log"].lower()  # the log is really there
    everything = b"\n".join(contents.values())
    key = image.private_key
    forbidden = {"PIN": pin, "PUK": puk, "new PIN": new_pin, "wrong PIN": wrong}
    for label, secret in forbidden.items():
        for form in (secret.encode(), secret.encode().hex().encode(),
                     secret.encode().hex().upper().encode()):
            assert form not in everything, f"the {label} is in the bundle as {form!r}"
    for form in (key, key.hex().encode(), key.hex().upper().encode(),
                 base64.b64encode(key), base64.b64encode(key)[16:80]):
        assert form not in everything, "private-key material is in the bundle"
    assert b"PRIVATE KEY" not in everything
    certificate = image.certificate
    for form in (certificate, base64.b64encode(certificate)[:64], certificate.hex().encode()):
        assert form not in everything, "a whole certificate is in the bundle"
    cards = json.loads(contents["eport-doctor/cards.json"])
    assert cards[0]["card"]["holder_name"] == "张*"
    assert cards[0]["certificate"]["certificate_number"] == image.profile.cert_number
