"""`eport doctor`: gather, check, report; optionally write a support bundle.

Read-only by design: it lists, reads counters and certificates, and never verifies a PIN,
logs out, resets or changes anything.
"""

from __future__ import annotations

from pathlib import Path

import click

from eport.clients.doctor.bundle import build_bundle
from eport.clients.doctor.facts import gather
from eport.clients.doctor.host import RealHost
from eport.clients.doctor.report_text import print_report
from eport.clients.doctor.runner import run_checks
from eport.clients.kit.context import json_option, state
from eport.clients.kit.errors import file_error
from eport.common.text import Bilingual


@click.command("doctor")
@click.option("--bundle", "bundle_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.tar.gz",
              help="Also write a support bundle (no PIN, key or certificate inside).")
@click.option("--daemon-log", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="eportd's log file for the bundle (default: the systemd journal).")
@json_option
def doctor_command(bundle_path: Path | None, daemon_log: Path | None) -> None:
    """Check pcscd, drivers, USB, eportd, readers, cards and the clock; say what is wrong
    and what to do. Exit 0: all OK, 20: warnings, 21: failures."""
    cli = state()
    host = RealHost()
    facts = gather(host, cli.client)
    report = run_checks(facts)
    data = report.as_json()
    if bundle_path is not None:
        try:
            data["bundle"] = {"path": str(bundle_path),
                              "members": build_bundle(bundle_path, report, facts, host,
                                                      daemon_log)}
        except OSError as problem:
            raise file_error(str(bundle_path), problem, writing=True) from None

    def human(out: object) -> None:
        print_report(report, cli.output.language, cli.output.out)
        if bundle_path is not None:
            cli.output.note(Bilingual(f"支持包已写入 {bundle_path}",
                                      f"Support bundle written to {bundle_path}"))

    cli.output.result("doctor", data, human)
    click.get_current_context().exit(int(report.exit_code))
