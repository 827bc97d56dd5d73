"""Doctor's checks as pure functions of the facts it gathers: the findings a support desk
relies on for situations the pcsc tier cannot stage (polkit, a wrong clock, USB devices)."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime
from pathlib import Path

from eport.clients.doctor import checks_daemon, checks_host
from eport.clients.doctor.bundle import build_bundle, mask_name, scrub
from eport.clients.doctor.facts import Facts, SocketFacts
from eport.clients.doctor.findings import Status
from eport.clients.doctor.runner import run_checks
from eport.clients.kit.errors import daemon_not_running
from eport.protos.v1 import eportd_pb2 as pb

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeHost:
    def which(self, program: str) -> str | None:
        return None

    def exists(self, path: str) -> bool:
        return False

    def read_text(self, path: str) -> str | None:
        return None

    def list_dir(self, path: str) -> list[str]:
        return []

    def processes(self, name: str) -> list[int]:
        return []

    def run(self, *command: str, timeout: float = 5.0) -> str | None:
        return None

    def now(self) -> datetime:
        return NOW


def healthy_facts() -> Facts:
    facts = Facts(now=NOW, pcscd_path="/usr/sbin/pcscd", pcscd_pids=[42],
                  ccid_driver="/usr/lib/pcsc/drivers/ifd-ccid.bundle")
    facts.info = pb.DaemonInfo(version="0.1.0", pid=7, pcsc_state=pb.SERVICE_RUNNING)
    facts.readers = pb.ListReadersResponse(pcsc_state=pb.SERVICE_RUNNING)
    facts.usb = pb.ListUsbDevicesResponse(usb_available=True)
    facts.socket = SocketFacts(Path("/run/user/1000/eportd/eportd.sock"), True, True, 1000,
                               1000, 0o600, True)
    return facts


def test_polkit_refusal_is_recognised_from_the_daemon_or_the_journal() -> None:
    facts = healthy_facts()
    facts.polkit_policy = True
    assert checks_host.polkit(facts).status == Status.OK
    facts.info = pb.DaemonInfo(pcsc_state=pb.SERVICE_NOT_RUNNING_STATE,
                               pcsc_error="SCardEstablishContext: Access denied. (0x80100027)",
                               pcsc_error_code=0x80100027)
    finding = checks_host.polkit(facts)
    assert (finding.code, finding.status) == ("EP-P04", Status.FAIL)
    assert finding.remedy is not None and "udev/install.sh" in finding.remedy.en
    journal_only = healthy_facts()
    journal_only.pcscd_journal = (
        "pcscd[2481]: auth.c:145:IsClientAuthorized() Process 2605 (user: 987) is NOT "
        "authorized for action: access_pcsc\npcscd[2481]: winscard_svc.c:357:ContextThread() "
        "Rejected unauthorized PC/SC client")
    assert checks_host.polkit(journal_only).status == Status.FAIL


def test_a_clock_far_in_the_past_is_reported() -> None:
    facts = healthy_facts()
    facts.now = datetime(2019, 5, 1, tzinfo=UTC)
    finding = checks_host.clock(facts)
    assert (finding.code, finding.status) == ("EP-T01", Status.FAIL)
    assert finding.cause is not None and "2019-05-01" in finding.cause.en
    facts.now, facts.ntp_synchronized = NOW, False
    assert checks_host.clock(facts).status == Status.WARN


def test_pcscd_stopped_with_a_stale_socket_and_socket_activation() -> None:
    facts = healthy_facts()
    facts.pcscd_pids, facts.pcscd_socket_exists = [], True
    stale = checks_host.pcscd_running(facts)
    assert stale.status == Status.FAIL and stale.cause is not None and "died" in stale.cause.en
    facts.pcscd_socket_unit = "active"
    assert checks_host.pcscd_running(facts).status == Status.OK
    facts.pcscd_path = None
    assert checks_host.pcscd_installed(facts).status == Status.FAIL


def test_usb_device_without_permission_or_without_pcsc_reader() -> None:
    facts = healthy_facts()
    key = pb.UsbDevice(vendor_id=0x096E, product_id=0x0807, manufacturer="Feitian",
                       product="ePass2003", kind=pb.USB_EPORT_KEY, accessible=False)
    facts.usb = pb.ListUsbDevicesResponse(usb_available=True, devices=[key])
    denied = checks_daemon.usb_devices(facts)[0]
    assert denied.status == Status.FAIL and denied.remedy is not None
    assert "udev/install.sh" in denied.remedy.en and "096e:0807" in denied.subject
    key.accessible = True
    facts.usb = pb.ListUsbDevicesResponse(usb_available=True, devices=[key])
    unseen = checks_daemon.usb_devices(facts)[0]
    assert unseen.status == Status.FAIL and unseen.cause is not None
    assert "lists no reader" in unseen.cause.en
    facts.readers = pb.ListReadersResponse(pcsc_state=pb.SERVICE_RUNNING, readers=[
        pb.Reader(name="Feitian ePass2003 00 00")])
    assert checks_daemon.usb_devices(facts)[0].status == Status.OK
    facts.ccid_driver = None
    assert checks_host.reader_drivers(facts)[0].status == Status.FAIL


def test_socket_modes() -> None:
    facts = healthy_facts()
    assert facts.socket is not None
    assert checks_daemon.socket_permissions(facts).status == Status.OK
    facts.socket.mode = 0o660  # system daemon: the group must be eport
    facts.socket.gid = 0
    assert checks_daemon.socket_permissions(facts).status == Status.FAIL
    facts.socket.mode = 0o600
    facts.socket.usable_by_us = False
    assert checks_daemon.socket_permissions(facts).status == Status.FAIL


def test_ic_card_and_ikey_together_say_which_is_used() -> None:
    facts = healthy_facts()
    facts.readers = pb.ListReadersResponse(pcsc_state=pb.SERVICE_RUNNING, readers=[
        pb.Reader(name="A", card_present=True, card_id="1", form=pb.IKEY, atr=b"EPORT-KEY"),
        pb.Reader(name="B", card_present=True, card_id="2", form=pb.IC_CARD, atr=b"EPORT-IC")])
    codes = {f.code: f for f in checks_daemon.readers(facts)}
    assert codes["EP-R07"].status == Status.WARN
    assert codes["EP-R07"].cause is not None and "IC card is used first" in codes["EP-R07"].cause.en


def test_daemon_down_skips_what_needs_it_and_fails() -> None:
    facts = healthy_facts()
    facts.info = facts.readers = facts.usb = None
    facts.daemon_error = daemon_not_running(Path("/nowhere.sock"))
    report = run_checks(facts)
    assert "EP-E01" in report.codes(Status.FAIL)
    assert {"EP-P03", "EP-R01", "EP-U01"} <= set(report.codes(Status.SKIP))
    assert int(report.exit_code) == 21


def test_scrub_removes_secrets_and_key_material() -> None:
    text = ("login pin=12345678 ok\nPUK: 87654321\n"
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
            "-----END PRIVATE KEY-----\n"
            "SEND 00 87 07 9c 00 " + "ab" * 40 + "\n" + "QUJD" * 30 + "\nreader Virtual PCD 00 00")
    cleaned = scrub(text)
    for secret in ("12345678", "87654321", "MIIEvQ", "ab" * 40, "QUJD" * 30):
        assert secret not in cleaned
    assert "reader Virtual PCD 00 00" in cleaned and "[PRIVATE KEY removed]" in cleaned
    assert mask_name("张三") == "张*" and mask_name("") == ""


def test_bundle_without_a_daemon(tmp_path: Path) -> None:
    facts = healthy_facts()
    report = run_checks(facts)
    bundle = tmp_path / "b.tar.gz"
    members = build_bundle(bundle, report, facts, FakeHost(), None)
    assert "eportd.log" in members
    with tarfile.open(bundle) as tar:
        log = tar.extractfile("eport-doctor/eportd.log")
        assert log is not None and b"--daemon-log" in log.read()
