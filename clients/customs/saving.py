"""Save (暂存), declare (申报) and waiting for the review: the steps `save`, `declare` and
`batch-declare` share."""

from __future__ import annotations

import json
import time
from typing import Any

from eport.clients.datacenter.context import call_signed
from eport.clients.datacenter.signer import CardSigner
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.common.customs.numbers import is_temporary_number
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

MODIFIABLE = (dc.SAVED, dc.STORED, dc.REJECTED)
# A review result is waited for by reading the document again at this pace.
_POLL_SECONDS = 0.2


def _without_agent(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the client wrote it: the data centre fills the declaring agent."""
    header = dict(document.get("header") or {})
    header.pop("declaring_agent", None)
    return {**document, "header": header}


def save(card: CardSigner, document: dict[str, Any], number: str | None = None
         ) -> dc.DocumentRecord:
    """暂存. Saving is idempotent on the document's client_reference: a file saved before (a
    retry after a lost answer, or `save` run twice) gets its old number back, and is sent
    again as a modification only if its content changed since."""
    body: dict[str, Any] = {"document": document}
    if number and not is_temporary_number(number):
        # Modification names the document by its temporary number; a person may well give
        # the unified or entry number they see on the receipt.
        known: dc.DocumentRecord = call_signed(card, "GetDocument", {"number": number})
        number = known.temporary_number
    if number:
        body["temporary_number"] = number
    record: dc.DocumentRecord = call_signed(card, "Save", body)
    if number or not record.already_saved:
        return record
    stored = json.loads(record.document_json) if record.document_json else {}
    if _without_agent(stored) == _without_agent(document) or record.status not in MODIFIABLE:
        return record
    body["temporary_number"] = record.temporary_number
    modified: dc.DocumentRecord = call_signed(card, "Save", body)
    return modified


def declared_already(record: dc.DocumentRecord) -> CliError:
    return CliError(
        "WRONG_STATE",
        Bilingual(f"该报关单已申报 ({record.unified_number}), 不能再修改",
                  f"This document was declared already ({record.unified_number}) and can no "
                  "longer be changed"),
        Bilingual("用 eport customs show 查看状态; 如需新报关单, 用 eport customs copy 复制",
                  "see its state with `eport customs show`; for a new document, copy it with "
                  "`eport customs copy`"),
        ExitCode.DOCUMENT_STATE, {"unified_number": record.unified_number})


def declare(card: CardSigner, number: str) -> dc.DocumentRecord:
    record: dc.DocumentRecord = call_signed(card, "Declare", {"number": number})
    return record


def wait_for_review(card: CardSigner, number: str, seconds: float) -> dc.DocumentRecord:
    """The document once reviewed (审结 or 退单), or as it is when `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        record: dc.DocumentRecord = call_signed(card, "GetDocument", {"number": number})
        if record.status != dc.DECLARED or time.monotonic() >= deadline:
            return record
        time.sleep(_POLL_SECONDS)
