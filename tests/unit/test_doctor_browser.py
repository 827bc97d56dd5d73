"""Doctor's browser-path findings (EP-B01 … EP-B06) from real `tls install` states in a
temporary HOME, and the port listeners read from a /proc tree laid out as the kernel does."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eport.clients.doctor import checks_browser
from eport.clients.doctor.browser_facts import BrowserFacts, Listener, port_listeners
from eport.clients.doctor.facts import Facts
from eport.clients.doctor.findings import Finding, Status
from eport.clients.gateway.tls_setup import TlsPaths, install, status
from eport.clients.gateway.tls_trust import HOSTS_LINE, NSS_NICKNAME, Resolution

pytestmark = pytest.mark.skipif(shutil.which("certutil") is None, reason="needs certutil")
UID = 1000
LOOPBACK = Resolution(["127.0.0.1"])
ELSEWHERE = Resolution(["203.0.113.7"])


@pytest.fixture
def paths(tmp_path: Path) -> TlsPaths:
    return TlsPaths(tmp_path / "config" / "eport" / "gateway-tls", tmp_path / ".pki" / "nssdb")


def gateway(port: int, uid: int = UID, pid: int = 4321) -> Listener:
    return Listener(port, "127.0.0.1", uid, [pid], "/usr/bin/python3 /usr/local/bin/eport-gateway "
                    "serve", True)


def browser(paths: TlsPaths, resolution: Resolution = LOOPBACK,
            listeners: dict[int, list[Listener]] | None = None) -> BrowserFacts:
    tls = status(paths)
    tls.resolution = resolution
    return BrowserFacts(tls, None, True, UID, listeners or {61231: [], 61232: []})


def by_code(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.code: finding for finding in findings}


def run_browser_checks(facts: BrowserFacts) -> dict[str, Finding]:
    report = Facts(now=datetime.now(UTC), browser=facts)
    return by_code(checks_browser.browser_path(report))


def assert_explained(finding: Finding) -> None:
    assert finding.cause is not None and finding.cause.zh and finding.cause.en
    if finding.status != Status.SKIP:
        assert finding.remedy is not None and finding.remedy.zh and finding.remedy.en


def test_a_machine_never_set_up_gets_warnings_and_skips_not_failures(paths: TlsPaths) -> None:
    found = run_browser_checks(browser(paths, ELSEWHERE))
    assert {code: f.status for code, f in found.items()} == {
        "EP-B01": Status.WARN, "EP-B02": Status.SKIP, "EP-B03": Status.SKIP,
        "EP-B04": Status.WARN, "EP-B05": Status.SKIP}
    for finding in found.values():
        assert_explained(finding)
    remedy = found["EP-B01"].remedy
    assert remedy is not None and "eport-gateway tls install" in remedy.en
    assert found["EP-B04"].remedy is not None and "eport-gateway serve" in found["EP-B04"].remedy.en


def test_a_complete_setup_is_all_ok(paths: TlsPaths) -> None:
    install(paths)
    found = run_browser_checks(browser(paths, LOOPBACK, {61231: [gateway(61231)],
                                                         61232: [gateway(61232)]}))
    assert {code: f.status for code, f in found.items()} == {
        code: Status.OK for code in ("EP-B01", "EP-B02", "EP-B03", "EP-B04", "EP-B05")}
    assert "396 days left" in found["EP-B01"].title.en or "397 days" in found["EP-B01"].title.en
    assert "4321" in found["EP-B05"].title.en


def test_the_name_pointing_elsewhere_fails_with_the_hosts_line(paths: TlsPaths) -> None:
    install(paths)
    finding = run_browser_checks(browser(paths, ELSEWHERE))["EP-B03"]
    assert finding.status == Status.FAIL and finding.remedy is not None
    assert HOSTS_LINE in finding.remedy.en and HOSTS_LINE in finding.remedy.zh
    assert finding.cause is not None and "203.0.113.7" in finding.cause.en
    unresolved = run_browser_checks(browser(paths, Resolution([], "Name or service not known")))
    assert unresolved["EP-B03"].status == Status.FAIL


def test_a_ca_removed_from_the_browser_database_fails(paths: TlsPaths) -> None:
    install(paths)
    subprocess.run(["certutil", "-D", "-d", f"sql:{paths.nss_db}", "-n", NSS_NICKNAME],
                   check=True, capture_output=True)
    finding = run_browser_checks(browser(paths))["EP-B02"]
    assert finding.status == Status.FAIL and finding.cause is not None
    assert "does not hold the gateway's CA" in finding.cause.en
    assert finding.remedy is not None and "tls install" in finding.remedy.en


def test_expired_and_nearly_expired_certificates(paths: TlsPaths) -> None:
    install(paths, now=datetime.now(UTC) - timedelta(days=400))
    expired = run_browser_checks(browser(paths))["EP-B01"]
    assert expired.status == Status.FAIL and expired.cause is not None
    assert "expired on" in expired.cause.en
    install(paths, server_validity=timedelta(days=12))
    soon = run_browser_checks(browser(paths))["EP-B01"]
    assert soon.status == Status.WARN and "expires in 11 days" in soon.title.en
    install(paths)  # renews the certificate
    os.chmod(paths.tls_dir / "server-key.pem", 0o644)
    loose = run_browser_checks(browser(paths))["EP-B01"]
    assert loose.status == Status.WARN and "readable by other users" in loose.title.en


def test_another_program_on_a_port_is_named(paths: TlsPaths) -> None:
    install(paths)
    official = Listener(61231, "0.0.0.0", UID, [777], "wine C:\\EportClient\\client.exe", False)
    other_users_gateway = gateway(61232, uid=1001, pid=888)
    found = checks_browser.browser_path(Facts(now=datetime.now(UTC), browser=browser(
        paths, LOOPBACK, {61231: [official], 61232: [other_users_gateway]})))
    conflicts = [f for f in found if f.code == "EP-B06"]
    assert [f.status for f in conflicts] == [Status.FAIL, Status.FAIL]
    assert "client.exe (pid 777" in conflicts[1].title.en + conflicts[0].title.en
    user_conflict = next(f for f in conflicts if f.subject == "port 61232")
    assert user_conflict.cause is not None and "another user's eport-gateway" in \
        user_conflict.cause.en
    for finding in conflicts:
        assert_explained(finding)
    unnamed = Listener(61231, "127.0.0.1", 1002, [], "", False)
    hidden = checks_browser.browser_path(Facts(now=datetime.now(UTC), browser=browser(
        paths, LOOPBACK, {61231: [unnamed], 61232: []})))
    assert "run eport doctor as root" in next(f for f in hidden if f.code == "EP-B06").title.en


def test_a_gateway_without_wss(paths: TlsPaths) -> None:
    install(paths)
    found = run_browser_checks(browser(paths, LOOPBACK, {61231: [], 61232: [gateway(61232)]}))
    assert found["EP-B04"].status == Status.OK
    assert found["EP-B05"].status == Status.WARN and "without wss" in found["EP-B05"].title.en


def test_listeners_from_the_kernel_tables(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
              "  timeout inode\n")
    # 127.0.0.1:61231 listening (inode 4242, uid 1000); 127.0.0.1:61232 in TIME_WAIT (06).
    (proc / "net" / "tcp").write_text(
        header
        + "   0: 0100007F:EF2F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 "
          "       0 4242 1 0000000000000000 100 0 0 10 0\n"
        + "   1: 0100007F:EF30 0100007F:9C40 06 00000000:00000000 03:00001770 00000000     0 "
          "       0 0 3 0000000000000000\n")
    # [::]:61232 listening (inode 5151, uid 1001), held by nobody we may see.
    (proc / "net" / "tcp6").write_text(
        header
        + "   0: 00000000000000000000000000000000:EF30 00000000000000000000000000000000:0000 0A "
          "00000000:00000000 00:00000000 00000000  1001        0 5151 1 0000000000000000 100 0 "
          "0 10 0\n")
    fd = proc / "321" / "fd"
    fd.mkdir(parents=True)
    (fd / "0").symlink_to("/dev/null")
    (fd / "7").symlink_to("socket:[4242]")
    (proc / "321" / "cmdline").write_bytes(b"/usr/bin/python3\0/usr/local/bin/eport-gateway\0"
                                            b"serve\0")
    found = port_listeners(proc=proc)
    assert found[61231] == [Listener(61231, "127.0.0.1", 1000, [321],
                                     "/usr/bin/python3 /usr/local/bin/eport-gateway serve", True)]
    assert found[61232] == [Listener(61232, "::", 1001, [], "", False)]
