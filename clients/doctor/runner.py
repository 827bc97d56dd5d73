"""The ordered run: host first (pcscd, polkit, drivers), then the daemon, USB, readers, cards
and the clock, the way a support desk works down from the service to the card; last the
browser path (the gateway's certificate, the browser's trust, the gateway's ports), which
sits on top of all of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eport.clients.doctor import (
    checks_backends,
    checks_browser,
    checks_daemon,
    checks_host,
    checks_profile,
)
from eport.clients.doctor.facts import Facts
from eport.clients.doctor.findings import Finding, Status
from eport.clients.kit.exit_codes import ExitCode


@dataclass
class Report:
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == Status.FAIL]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == Status.WARN]

    @property
    def exit_code(self) -> ExitCode:
        if self.failures:
            return ExitCode.DOCTOR_FAILURES
        return ExitCode.DOCTOR_WARNINGS if self.warnings else ExitCode.OK

    def codes(self, status: Status | None = None) -> list[str]:
        return [f.code for f in self.findings if status is None or f.status == status]

    def as_json(self) -> dict[str, Any]:
        return {"summary": {"ok": len(self.codes(Status.OK)), "warn": len(self.warnings),
                            "fail": len(self.failures), "skip": len(self.codes(Status.SKIP))},
                "findings": [finding.as_json() for finding in self.findings]}


def run_checks(facts: Facts) -> Report:
    findings: list[Finding] = [
        checks_host.pcscd_installed(facts),
        checks_host.pcscd_running(facts),
        checks_host.polkit(facts),
        *checks_daemon.daemon_reachable(facts),
        checks_daemon.socket_permissions(facts),
        checks_daemon.pcscd_from_daemon(facts),
        *checks_backends.backends(facts),
        *checks_host.reader_drivers(facts),
        *checks_daemon.usb_devices(facts),
        checks_host.udev_rules(facts),
        *checks_daemon.readers(facts),
        *checks_daemon.cards(facts),
        *checks_profile.real_profile_cards(facts),
        checks_host.clock(facts),
        *checks_browser.browser_path(facts),
    ]
    return Report(findings)
