"""What the `eport customs` commands share: the document files and the local checks before
anything is signed or sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eport.clients.datacenter.context import datacenter
from eport.clients.datacenter.errors import validation_failed
from eport.clients.kit.context import state
from eport.clients.kit.errors import CliError, file_error
from eport.clients.kit.exit_codes import ExitCode
from eport.common.customs.document import DocumentError, clock_warning, validate
from eport.common.customs.importing import load_document_file
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc


def read_document(path: str) -> dict[str, Any]:
    """A document file (JSON or CSV), or a CliError listing every problem in it."""
    try:
        document: dict[str, Any] = load_document_file(Path(path))
    except DocumentError as error:
        raise validation_failed(error.problems, Bilingual(f"文件 {path} ", f"{path}")) from None
    except OSError as problem:
        raise file_error(path, problem) from None
    return document


def check_locally(document: dict[str, Any], *, declaring: bool, where: str) -> None:
    """The data centre's own rules, checked before a card signs anything."""
    problems = validate(document, declaring=declaring)
    if problems:
        raise validation_failed(problems, Bilingual(f"{where} ", where))


def warn_about_clock() -> tuple[str, str] | None:
    """QP FAQ §十三(十三): a wrong clock prints wrong dates on the declaration; compare it
    with the data centre's before saving."""
    info = datacenter().info()
    reference = info.server_time.ToDatetime(tzinfo=UTC) if info.HasField("server_time") \
        else None
    warning = clock_warning(datetime.now(UTC), reference)
    if warning is not None:
        state().output.warn(Bilingual(*warning))
    return warning


def is_file_argument(target: str) -> bool:
    return Path(target).is_file() or target.lower().endswith((".json", ".csv"))


def stored_document(record: dc.DocumentRecord) -> dict[str, Any]:
    if not record.document_json:
        raise CliError("DOCUMENT_EMPTY",
                       Bilingual("数据中心没有返回报关单内容", "The data centre sent no document"),
                       Bilingual("请用 eport customs show 重试", "retry with eport customs show"),
                       ExitCode.DOCUMENT_STATE)
    document = json.loads(record.document_json)
    assert isinstance(document, dict)
    return document
