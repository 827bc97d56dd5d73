"""`eport customs batch-declare`: many documents, each saved and declared, with progress.

Safe to interrupt and to run again: saving is idempotent on each file's client_reference and
declaring a declared document changes nothing, so a rerun (or a retry after the data centre
went away mid-request) never numbers or charges a document twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eport.clients.customs.saving import declare, save
from eport.clients.datacenter.errors import validation_failed
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.context import command_name, state
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.output import Output
from eport.common.customs.document import DocumentError, validate
from eport.common.customs.importing import load_document_file
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

# Reasons that end the whole batch: the card or its session is gone, or the card may not
# declare at all; every later document would fail the same way.
_FATAL = {"NOT_AUTHENTICATED", "SESSION_EXPIRED", "PIN_BLOCKED", "PIN_INCORRECT",
          "CARD_REMOVED", "NO_CARD", "WRONG_CARD_KIND", "CERT_EXPIRED", "CERT_UNTRUSTED",
          "CERT_NOT_YET_VALID", "PIN_LAST_ATTEMPT_GUARD", "DAEMON_UNAVAILABLE"}
_RETRY_PAUSE_SECONDS = (0.2, 0.5, 1.0, 2.0)


@dataclass
class Outcome:
    file: str
    ok: bool
    temporary_number: str = ""
    unified_number: str = ""
    status: str = ""
    already_declared: bool = False
    error: CliError | None = None

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok,
                "temporary_number": self.temporary_number or None,
                "unified_number": self.unified_number or None, "status": self.status or None,
                "already_declared": self.already_declared,
                "error": self.error.as_json() if self.error else None}


def _checked(path: str) -> tuple[dict[str, Any] | None, Outcome | None]:
    try:
        document = load_document_file(Path(path))
    except DocumentError as error:
        problems = error.problems
    except OSError as problem:
        return None, Outcome(path, False, error=CliError(
            "FILE_ERROR", Bilingual(f"无法读取 {path}: {problem.strerror}",
                                    f"Cannot read {path}: {problem.strerror}"),
            Bilingual("请检查路径和权限", "check the path and its permissions"),
            ExitCode.INPUT_ERROR))
    else:
        problems = validate(document, declaring=True)
        if not problems:
            return document, None
    return None, Outcome(path, False, error=validation_failed(
        problems, Bilingual(f"文件 {path} ", path)))


def _declare_one(card: CardSigner, path: str, document: dict[str, Any],
                 retry_seconds: float) -> Outcome:
    deadline = time.monotonic() + retry_seconds
    attempt = 0
    while True:
        try:
            saved = save(card, document)
            record = declare(card, saved.unified_number or saved.temporary_number)
            return Outcome(path, True, record.temporary_number, record.unified_number,
                           dc.DocumentStatus.Name(record.status), record.already_declared)
        except CliError as error:
            if error.code != "DATACENTER_UNAVAILABLE" or time.monotonic() >= deadline:
                return Outcome(path, False, error=error)
            time.sleep(_RETRY_PAUSE_SECONDS[min(attempt, len(_RETRY_PAUSE_SECONDS) - 1)])
            attempt += 1


def run_batch(card: CardSigner, files: list[str], report_path: Path | None,
              retry_seconds: float) -> None:
    output = state().output
    outcomes: list[Outcome] = []
    ready: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        document, refused = _checked(path)
        if refused is not None and refused.error is not None:
            outcomes.append(refused)
            reason = refused.error.message
            output.warn(Bilingual(f"未发送 {path}: {reason.zh}", f"Not sent {path}: {reason.en}"))
        elif document is not None:
            ready.append((path, document))
    report = report_path.open("a", encoding="utf-8") if report_path else None
    stopped: CliError | None = None
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=output.err,
                      disable=output.json_mode) as progress:
            task = progress.add_task(output.text(Bilingual("申报", "Declaring")),
                                     total=len(ready))
            for path, document in ready:
                outcome = _declare_one(card, path, document, retry_seconds)
                outcomes.append(outcome)
                if report is not None:
                    report.write(json.dumps(outcome.as_json(), ensure_ascii=False) + "\n")
                    report.flush()
                progress.advance(task)
                if outcome.error is not None and outcome.error.code in _FATAL:
                    stopped = outcome.error
                    break
    finally:
        if report is not None:
            report.close()
    _summarise(output, outcomes, len(files), stopped)


def _summarise(output: Output, outcomes: list[Outcome], total: int,
               stopped: CliError | None) -> None:
    declared = sum(1 for o in outcomes if o.ok and not o.already_declared)
    before = sum(1 for o in outcomes if o.ok and o.already_declared)
    failed = [o for o in outcomes if not o.ok]
    not_tried = total - len(outcomes)
    summary = {"files": total, "declared": declared, "declared_before": before,
               "failed": len(failed), "not_tried": not_tried,
               "documents": [o.as_json() for o in outcomes]}
    if failed or not_tried:
        first = stopped or failed[0].error
        raise CliError(
            "BATCH_INCOMPLETE",
            Bilingual(f"批量申报未全部完成: 申报 {declared}, 此前已申报 {before}, 失败 "
                      f"{len(failed)}, 未处理 {not_tried}"
                      + (f"; 首个错误: {first.message.zh}" if first else ""),
                      f"Batch incomplete: {declared} declared, {before} declared before, "
                      f"{len(failed)} failed, {not_tried} not tried"
                      + (f"; first error: {first.message.en}" if first else "")),
            first.remedy if first else Bilingual("修正后重新运行同一命令",
                                                 "fix it and run the same command again"),
            first.exit_code if first else ExitCode.UNEXPECTED, summary)

    def human(out: Output) -> None:
        out.line(Bilingual(f"全部完成: 申报 {declared} 份, 此前已申报 {before} 份",
                           f"All done: {declared} declared, {before} declared before"),
                 style="green")

    output.result(command_name(), summary, human)
