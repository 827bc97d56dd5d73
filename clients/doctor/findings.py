"""What `eport doctor` reports: findings, each a code, a status, and problem → cause → remedy
in Chinese and English (the FAQ style of the E-port support desk, 400 FAQs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eport.common.text import Bilingual


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # could not be checked because an earlier check failed


@dataclass
class Finding:
    code: str                 # EP-<area><number>: stable, quoted by support staff
    status: Status
    title: Bilingual          # what was checked, or what is wrong
    cause: Bilingual | None = None
    remedy: Bilingual | None = None
    subject: str = ""         # the reader or card the finding is about, if any
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "status": self.status.value,
            "title": self.title.as_json(),
            "cause": self.cause.as_json() if self.cause else None,
            "remedy": self.remedy.as_json() if self.remedy else None,
            "subject": self.subject or None,
            "details": self.details,
        }


def ok(code: str, title: Bilingual, subject: str = "", **details: Any) -> Finding:
    return Finding(code, Status.OK, title, subject=subject, details=details)


def problem(code: str, status: Status, title: Bilingual, cause: Bilingual, remedy: Bilingual,
            subject: str = "", **details: Any) -> Finding:
    return Finding(code, status, title, cause, remedy, subject, details)


def skipped(code: str, title: Bilingual, because: Bilingual, subject: str = "") -> Finding:
    return Finding(code, Status.SKIP, title, because, None, subject)

