"""Asking for a PIN or PUK: hidden on the terminal, or one line per secret on stdin
(--pin-stdin); never as a command-line argument, where `ps` and shell history would keep it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import click

from eport.clients.kit.errors import CliError, usage_error
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.output import Output
from eport.common.text import Bilingual

PIN = Bilingual("口令(PIN)", "PIN")
PUK = Bilingual("解锁码(PUK)", "PUK")


def _terminal_available() -> bool:
    with contextlib.suppress(OSError):
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        return True
    return False


@dataclass
class SecretReader:
    output: Output
    from_stdin: bool
    allow_last_attempt: bool = False

    @property
    def interactive(self) -> bool:
        return not self.from_stdin

    def read(self, what: Bilingual, new: bool = False) -> str:
        if self.from_stdin:
            return self._from_stdin(what)
        if not _terminal_available():
            raise usage_error(
                Bilingual(f"没有终端可以输入{what.zh}", f"No terminal to ask for the {what.en}"),
                Bilingual(f"在脚本中请用 --pin-stdin 从标准输入提供{what.zh}",
                          f"in scripts, give the {what.en} on standard input with --pin-stdin"))
        label = self.output.text(
            Bilingual(f"请输入新的{what.zh}", f"New {what.en}") if new else
            Bilingual(f"请输入{what.zh}", f"{what.en}"))
        # getpass (used by click for hidden input) reads from /dev/tty with echo off.
        value: str = click.prompt(label, hide_input=True, confirmation_prompt=(
            self.output.text(Bilingual("请再次输入", "Repeat for confirmation")) if new
            else False), err=True)
        return value

    def _from_stdin(self, what: Bilingual) -> str:
        line = sys.stdin.readline()
        if not line:
            raise usage_error(
                Bilingual(f"标准输入中没有{what.zh}", f"No {what.en} on standard input"),
                Bilingual("每个口令占一行, 例如: printf '%s\\n' \"$PIN\" | eport ... --pin-stdin",
                          "give one secret per line, e.g. printf '%s\\n' \"$PIN\" | eport ... "
                          "--pin-stdin"))
        return line.rstrip("\r\n")

    def confirm_last_try(self, what: Bilingual) -> None:
        """Say that only one try is left and get an explicit yes, or raise LAST_TRY_DECLINED."""
        warning = Bilingual(
            f"{what.zh}只剩最后1次重试机会: 再输错一次卡片将被锁定, 只能到电子口岸制卡中心解锁",
            f"Only one {what.en} try is left: one more wrong entry blocks the card until the "
            "E-port card centre unblocks it")
        if self.allow_last_attempt:
            self.output.warn(warning)
            return
        if self.interactive and _terminal_available():
            self.output.warn(warning)
            question = self.output.text(Bilingual("确定要提交吗?", "Send it anyway?"))
            if click.confirm(question, default=False, err=True):
                return
            raise declined(what, interactive=True)
        raise declined(what, interactive=False)


def declined(what: Bilingual, interactive: bool) -> CliError:
    remedy = (Bilingual("未提交, 未消耗重试次数。请核对后重试, 或到制卡中心咨询",
                        "nothing was sent and no try was spent; check it and run the command "
                        "again, or ask the card centre") if interactive else
              Bilingual("未提交, 未消耗重试次数。确认无误后加 --allow-last-attempt 重试",
                        "nothing was sent and no try was spent; when you are sure, run it again "
                        "with --allow-last-attempt"))
    return CliError("PIN_LAST_ATTEMPT_GUARD",
                    Bilingual(f"{what.zh}只剩最后1次重试机会, 未确认", f"One {what.en} try left "
                              "and it was not confirmed"),
                    remedy, ExitCode.LAST_TRY_DECLINED, {"tries_left": 1})
