"""The eport-customs/1 document model: validation (every rule, with its seed 003 section),
templates, copies, the printed-form helpers and the clock check."""

from __future__ import annotations

from datetime import date

from eport.common.customs.document import FORMAT, new_document, validate
from tests.support.customs_documents import valid_declaration, valid_filing_list

TODAY = date(2026, 12, 1)


def test_samples_are_valid_for_declaring() -> None:
    for direction in ("import", "export"):
        assert validate(valid_declaration(direction, items=3, containers=9), declaring=True) == []
        assert validate(valid_filing_list(direction, items=2), declaring=True) == []


def test_new_document_saves_but_does_not_declare() -> None:
    document = new_document(today=TODAY)
    assert document["format"] == FORMAT
    assert validate(document, declaring=False, today=TODAY) == []
    assert any(p.code == "required" for p in validate(document, declaring=True, today=TODAY))
