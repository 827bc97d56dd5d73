"""The root of every error this project raises on purpose, and what the console funnel needs.

Whatever a person may see carries a stable code (the name of a member of a layer's reason
enum), a message and a remedy, both in Chinese and English. Subclasses set these as attributes
(a dataclass's fields do). They are only declared here, not given values: a class-level value
would become a default of every dataclass field of the same name.
"""

from __future__ import annotations

from eport.common.text import Bilingual

UNEXPECTED_MESSAGE = Bilingual("意外错误", "Unexpected error")
UNEXPECTED_REMEDY = Bilingual("请用 --debug 重试并报告输出",
                              "retry with --debug and report the output")


class EportFailure(Exception):
    code: str
    message: Bilingual
    remedy: Bilingual


class ConfigFailure(EportFailure):
    """A problem the person who started a program must fix (a path, an option, a file).

    `text` says it as one sentence per language, the message followed by its remedy; str() is
    the Chinese line, then the English one, for a log or a wrapping click error.
    """

    def __init__(self, message: Bilingual, remedy: Bilingual) -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(f"{self.text.zh}\n{self.text.en}")

    @property
    def text(self) -> Bilingual:
        return Bilingual(f"{self.message.zh}。解决办法: {self.remedy.zh}",
                         f"{self.message.en}. Remedy: {self.remedy.en}")
