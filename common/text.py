"""Text for people: one sentence in Chinese and English (Bilingual) and the language to show.

Every layer writes its messages as Bilingual values in a catalogue of its own; JSON output is
the same in every language: both texts are always there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Language = Literal["zh", "en"]
LANGUAGE_ENV = "EPORT_LANG"


def detect_language(environ: Mapping[str, str] | None = None) -> Language:
    """EPORT_LANG if set, else the POSIX order: LC_ALL, LC_MESSAGES, LANG (first one set)."""
    env = os.environ if environ is None else environ
    forced = env.get(LANGUAGE_ENV, "").strip().lower()
    if forced in ("zh", "en"):
        return "zh" if forced == "zh" else "en"
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


@dataclass(frozen=True)
class Bilingual:
    """One sentence in both languages; `pick` chooses, `as_json` keeps both."""

    zh: str
    en: str

    def pick(self, language: Language) -> str:
        return self.zh if language == "zh" else self.en

    def as_json(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}

    def format(self, **values: object) -> Bilingual:
        return Bilingual(self.zh.format(**values), self.en.format(**values))
