"""The human report: one line per finding, then cause and remedy in both languages for each
warning and failure (support staff read either; the user's language comes first)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from eport.clients.doctor.findings import Finding, Status
from eport.clients.doctor.runner import Report
from eport.common.text import Bilingual, Language

STYLES = {Status.OK: "green", Status.WARN: "bold yellow", Status.FAIL: "bold red",
          Status.SKIP: "dim"}
LABELS = {"cause": Bilingual("原因", "Cause"), "remedy": Bilingual("解决办法", "Remedy")}


def _both(text: Bilingual, language: Language) -> list[str]:
    first, second = (text.zh, text.en) if language == "zh" else (text.en, text.zh)
    return [first] if first == second else [first, second]


def render_lines(report: Report, language: Language) -> list[tuple[str, str | None]]:
    """(text, style) lines; plain text is what the support bundle keeps."""
    lines: list[tuple[str, str | None]] = []
    for finding in report.findings:
        lines.extend(_finding(finding, language))
    summary = Bilingual(
        f"共 {len(report.findings)} 项: {len(report.failures)} 项失败, "
        f"{len(report.warnings)} 项警告",
        f"{len(report.findings)} checks: {len(report.failures)} failed, "
        f"{len(report.warnings)} warnings")
    lines.append(("", None))
    lines.append((summary.pick(language), "bold red" if report.failures else
                  "bold yellow" if report.warnings else "green"))
    return lines


def _finding(finding: Finding, language: Language) -> list[tuple[str, str | None]]:
    title = finding.title.pick(language)
    subject = f"  [{finding.subject}]" if finding.subject else ""
    lines: list[tuple[str, str | None]] = [
        (f"[{finding.status.value:^4}] {finding.code}  {title}{subject}",
         STYLES[finding.status])]
    if finding.status in (Status.WARN, Status.FAIL, Status.SKIP):
        for key in ("cause", "remedy"):
            text = getattr(finding, key)
            if text is None:
                continue
            label = LABELS[key]
            for index, sentence in enumerate(_both(text, language)):
                name = label.pick(language) if index == 0 else label.pick(
                    "en" if language == "zh" else "zh")
                lines.append((f"       {name}: {sentence}", None))
    return lines


def print_report(report: Report, language: Language, console: Console) -> None:
    for text, style in render_lines(report, language):
        console.print(escape(text), style=style)


def report_text(report: Report, language: Language) -> str:
    return "\n".join(text for text, _ in render_lines(report, language)) + "\n"
