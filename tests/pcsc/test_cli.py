"""`eport` as its users run it (CLI acceptance): the installed console script in a subprocess,
talking to a real eportd over its Unix socket, the real pcscd with vpcd and simulated cards.

Each test checks what a person or a script looks at: the text (English and Chinese), the one
JSON document of --json, the exit code, and that no PIN and no traceback ever shows. One eportd
and one simulator runner serve the module; a test puts fresh copies of the cards it needs into
the vpcd slots (`eport.put`), and the readers are emptied after it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eport.cardlib.pcsc.transport import PcscContext
from eport.common.profile import CardKind
from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage, read_image
from tests.support.card_stack import CardStack as Stack
from tests.support.card_stack import running_card_stack
from tests.support.cards import provision_test_card
from tests.support.daemon_stack import start_daemon, wait_for_card
from tests.support.eport_cli import (
    ANSI,
    EPORT,
    NEW_PIN,
    PIN,
    PUK,
    READER0,
    READER1,
    WRONG_PIN,
    WRONG_PUK,
    Eport,
    Result,
    assert_no_secret,
    command_line,
    describe,
    eport_env,
    error_json,
    human_error,
    ok_json,
    pin_lines,
    run_eport,
)
from tests.support.pcsc_stack import Pcscd
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pcsc

SIGN_AND_VERIFY = Path(__file__).with_name("sign_and_verify.sh")


# ---- the stack: pcscd, one eportd, two vpcd slots ----

@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    with running_card_stack(tmp_path_factory.mktemp("cli-stack"), test_ca.trust_bundle) as stack:
        yield stack


@pytest.fixture
def eport(stack: Stack, tmp_path: Path) -> Iterator[Eport]:
    yield Eport(stack, tmp_path)
    if stack.daemon is None or stack.daemon.process.poll() is not None:
        stack.start_daemon()  # a test that stopped it failed half-way
    for slot in (0, 1):
        stack.remove(slot)


@pytest.fixture(scope="module")
def cards(card_images: dict[str, CardImage], test_ca: TestCA) -> dict[str, CardImage]:
    """The session's cards by algorithm, and P-256 cards in the states the tests need."""
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        **card_images,
        "declarant": provision_test_card(test_ca, "p256", kind=CardKind.DECLARANT,
                                         holder_name="李四", enterprise_name="测试报关行有限公司"),
        "expiring": provision_test_card(test_ca, "p256", not_before=now - timedelta(days=700),
                                        days=710),
        "expired": provision_test_card(test_ca, "p256", not_before=now - timedelta(days=400),
                                       days=365),
        "not_yet_valid": provision_test_card(test_ca, "p256",
                                             not_before=now + timedelta(days=5), days=365),
        "last_try": provision_test_card(test_ca, "p256", pin_tries_left=1),
        "blocked": provision_test_card(test_ca, "p256", pin_tries_left=0),
    }


def tries_on_card(path: Path) -> int:
    """The PIN tries left as the card itself stores them (no PC/SC, no daemon)."""
    return read_image(path).pin.tries_left


# ---- readers and card info ----

def test_readers_human_and_json(eport: Eport, cards: dict[str, CardImage]) -> None:
    card_id = cards["p256"].profile.card_id
    eport.put(cards["p256"])
    human = eport("readers")
    assert human.returncode == 0 and human.stderr == "", describe(human)
    assert human.stdout.splitlines() == [f"pcsc    {READER0}: IC card {card_id}",
                                         f"pcsc    {READER1}: no card"]
    chinese = eport("readers", lang="zh")
    assert chinese.stdout.splitlines() == [f"pcsc    {READER0}: IC卡 {card_id}",
                                           f"pcsc    {READER1}: 无卡"]
    assert readers_backends(eport) == {READER0: "pcsc", READER1: "pcsc"}

    result = ok_json(eport("readers", "--json"), "readers")
    assert result["pcsc_state"] == "SERVICE_RUNNING"
    readers = {reader["name"]: reader for reader in result["readers"]}
    assert readers[READER0]["card_present"] and readers[READER0]["card_id"] == card_id
    assert readers[READER0]["form"] == "IC_CARD" and readers[READER0]["atr"]
    assert readers[READER0]["error"] is None and not readers[READER0]["exclusive_elsewhere"]
    assert not readers[READER1]["card_present"]
    assert readers[READER1]["card_id"] is None and readers[READER1]["atr"] is None
    # --json before the command works as well.
    assert ok_json(eport("--json", "readers"), "readers") == result


def readers_backends(eport: Eport) -> dict[str, str]:
    result = ok_json(eport("readers", "--json"), "readers")
    return {reader["name"]: reader["backend"] for reader in result["readers"]}


def test_card_info_human_json_and_chinese(eport: Eport, cards: dict[str, CardImage]) -> None:
    profile = cards["declarant"].profile
    eport.put(cards["declarant"])
    human = eport("card", "info")
    assert human.returncode == 0 and human.stderr == "", describe(human)
    lines = human.stdout.splitlines()
    assert lines[0] == f"Card: {profile.card_id} (declarant card, IC card, {READER0})"
    assert "Holder: 李四" in lines and "Enterprise: 测试报关行有限公司" in lines
    assert f"Customs code / credit code: {profile.customs_code} / {profile.credit_code}" in lines
    assert f"Certificate: {profile.cert_number} (EC_P256)" in lines
    assert "PIN tries left: 3" in lines
    assert any(line.startswith("Valid until: ") and "days)" in line for line in lines)

    chinese = eport("card", "info", lang="zh")
    assert chinese.returncode == 0, describe(chinese)
    assert f"卡号: {profile.card_id} (报关员卡, IC卡, {READER0})" in chinese.stdout
    for expected in ("持卡人: 李四", "企业: 测试报关行有限公司", "海关编码 / 统一社会信用代码",
                     "证书号", "有效期至", "口令剩余次数: 3"):
        assert expected in chinese.stdout, chinese.stdout

    result = ok_json(eport("card", "info", "--json"), "card info")
    assert set(result) == {"card", "certificate", "pin"}
    card = result["card"]
    assert {"card_id", "kind", "form", "holder_name", "enterprise_name", "customs_code",
            "credit_code", "certificate_number", "key_algorithm", "sign_algorithms", "reader",
            "atr", "label", "not_before", "not_after"} <= set(card)
    assert (card["card_id"], card["kind"], card["form"], card["holder_name"],
            card["enterprise_name"], card["reader"]) == (
        profile.card_id, "DECLARANT", "IC_CARD", "李四", "测试报关行有限公司", READER0)
    assert card["key_algorithm"] == "EC_P256" and card["sign_algorithms"] == ["ECDSA_P256_SHA256"]
    check = result["certificate"]["check"]
    assert (check["state"], check["chain"]) == ("VALID", "TRUSTED") and check["days_left"] > 700
    assert result["pin"]["pin_tries_left"] == 3 and result["pin"]["session_active"] is False
    # Both languages are always in JSON: the language setting changes nothing there.
    assert ok_json(eport("card", "info", "--json", lang="zh"), "card info") == result


@pytest.mark.parametrize("args,env,chinese", [
    ((), {"EPORT_LANG": "zh"}, True),
    ((), {"LANG": "zh_CN.UTF-8"}, True),           # the locale, when EPORT_LANG is unset
    ((), {"LANG": "zh_CN.UTF-8", "EPORT_LANG": "en"}, False),
    (("--lang", "en"), {"EPORT_LANG": "zh"}, False),  # the option wins
    (("--lang", "zh"), {}, True),
], ids=["EPORT_LANG", "LANG", "EPORT_LANG-over-LANG", "option-over-env", "option"])
def test_language_choice(eport: Eport, args: tuple[str, ...], env: dict[str, str],
                         chinese: bool) -> None:
    result = run_eport(*args, "readers", socket_path=eport.stack.socket, lang=None, env=env)
    assert result.returncode == 0, describe(result)
    assert (f"{READER1}: 无卡" in result.stdout) is chinese
    assert (f"{READER1}: no card" in result.stdout) is not chinese


def test_card_selection_by_reader_and_card_id(eport: Eport, cards: dict[str, CardImage]
                                              ) -> None:
    eport.put(cards["p256"], slot=0)
    eport.put(cards["sm2"], slot=1)
    # Two IC cards and no choice: say so, and how to choose.
    error = error_json(eport("card", "info", "--json"), "AMBIGUOUS_CARD", 5)
    assert "reader" in error["remedy"]["en"]
    human_error(eport("card", "info"), "AMBIGUOUS_CARD", 5)
    by_reader = ok_json(eport("card", "info", "--reader", READER1, "--json"), "card info")
    assert by_reader["card"]["card_id"] == cards["sm2"].profile.card_id
    assert by_reader["card"]["key_algorithm"] == "SM2"
    by_id = ok_json(eport("pin", "status", "--card", cards["p256"].profile.card_id, "--json"),
                    "pin status")
    assert by_id["card_id"] == cards["p256"].profile.card_id
    error_json(eport("card", "info", "--card", "0000000000000000", "--json"), "NO_CARD", 5)
    error_json(eport("card", "info", "--reader", "No Such Reader", "--json"), "NO_READER", 5)


# ---- certificate validity: warnings, colours, cert check ----

RED, YELLOW = "31", "33"


def validity_line(stdout: str, label: str = "Valid until") -> str:
    return next(line for line in stdout.splitlines() if label in line)


def coloured(line: str, colour: str) -> bool:
    return re.search(rf"\x1b\[(?:\d+;)*{colour}m", line) is not None


@pytest.mark.parametrize("name,state,colour,warning_en,warning_zh,problem", [
    pytest.param("expiring", "EXPIRING", YELLOW, "Your card's certificate expires in {days} days",
                 "您的IC卡还有{days}天到期", None, id="expiring"),
    pytest.param("expired", "EXPIRED", RED, "has expired: renew it at the card centre",
                 "您的IC卡已过期, 请尽快到制卡中心办理证书更新", "CERT_EXPIRED", id="expired"),
    pytest.param("not_yet_valid", "NOT_YET_VALID", RED, "The certificate is not valid yet",
                 "证书尚未生效", "CERT_NOT_YET_VALID", id="not-yet-valid"),
])
def test_certificate_validity_warnings(eport: Eport, cards: dict[str, CardImage], name: str,
                                       state: str, colour: str, warning_en: str,
                                       warning_zh: str, problem: str | None) -> None:
    eport.put(cards[name])
    check = ok_json(eport("card", "info", "--json"), "card info")["certificate"]["check"]
    assert check["state"] == state
    days = check["days_left"]
    if name == "expiring":
        assert 9 <= days <= 11
    english, chinese = eport("card", "info"), eport("card", "info", lang="zh")
    assert english.returncode == chinese.returncode == 0
    assert warning_en.format(days=days) in english.stderr, describe(english)
    assert warning_zh.format(days=days) in chinese.stderr, describe(chinese)
    if name == "expired":
        assert "EXPIRED" in validity_line(english.stdout)
        assert "已过期" in validity_line(chinese.stdout, "有效期至")
    # No colour codes into a pipe; rich honours FORCE_COLOR=1, as a terminal would get them.
    assert "\x1b[" not in english.stdout + english.stderr
    forced = eport("card", "info", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    line = validity_line(forced.stdout)
    assert coloured(line, colour), repr(line)
    other = YELLOW if colour == RED else RED
    assert not coloured(line, other), repr(line)

    # `cert check` fails (exit 10) for a certificate a signature cannot rely on; a merely
    # expiring one is still valid. A signature is refused just the same.
    data = eport.file("data.txt", "报关单")
    checked, signed = eport("cert", "check"), eport("sign", data, "--pin-stdin", stdin=PIN + "\n")
    if problem is None:
        assert checked.returncode == 0, describe(checked)
        assert signed.returncode == 0 and signed.stdout.strip(), describe(signed)
        ok_json(eport("cert", "check", "--json"), "cert check")
    else:
        assert "Valid until" in checked.stdout  # the report, then the verdict
        human_error(checked, problem, 10)
        error = error_json(eport("cert", "check", "--json"), problem, 10)
        assert error["check"]["state"] == state
        human_error(signed, problem, 10)
    assert_no_secret(signed)


def test_valid_certificate_line_is_not_coloured(eport: Eport, cards: dict[str, CardImage]
                                                ) -> None:
    eport.put(cards["p256"])
    result = eport("card", "info", env={"FORCE_COLOR": "1"})
    assert result.stderr == ""
    line = validity_line(result.stdout)
    assert not coloured(line, RED) and not coloured(line, YELLOW), repr(line)


# ---- PIN: status, verify, the last try, blocked ----

def test_pin_status(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["p256"])
    human = eport("pin", "status")
    assert human.returncode == 0, describe(human)
    assert human.stdout.splitlines() == ["PIN tries left: 3", "PUK tries left: 3",
                                         "Not logged in"]
    chinese = eport("pin", "status", lang="zh")
    assert chinese.stdout.splitlines() == ["口令剩余次数: 3", "解锁码剩余次数: 3", "未登录"]
    status = ok_json(eport("pin", "status", "--json"), "pin status")
    assert status == {"card_id": cards["p256"].profile.card_id, "pin_tries_left": 3,
                      "pin_blocked": False, "puk_tries_left": 3, "puk_blocked": False,
                      "session_active": False, "session_expires_at": None,
                      "unattended_enabled": False}


def test_pin_verify_right_pin_opens_a_session(eport: Eport, cards: dict[str, CardImage]
                                              ) -> None:
    eport.put(cards["p256"])
    verified = ok_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
                       "pin verify")
    assert verified["session_active"] is True and verified["pin_tries_left"] in (3, None)
    expires = datetime.fromisoformat(verified["session_expires_at"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC)
    assert ok_json(eport("pin", "status", "--json"), "pin status")["session_active"] is True
    human = eport("pin", "verify", "--pin-stdin", stdin=PIN + "\n")
    assert human.returncode == 0 and "PIN accepted: logged in" in human.stdout
    assert "Logged in until" in human.stdout
    # Logged in, `eport sign` needs no PIN: not even a terminal to ask for one.
    data = eport.file("data.txt", "报关单")
    assert eport("sign", data).returncode == 0
    assert ok_json(eport("pin", "logout", "--json"), "pin logout") == {"session_was_active": True}
    assert eport("pin", "logout").stdout.strip() == "Was not logged in"
    # Logged out and no terminal: nothing to ask the PIN with.
    error = error_json(eport("sign", data, "--json"), "USAGE", 2)
    assert "--pin-stdin" in error["remedy"]["en"]
    assert_no_secret(human)


def test_wrong_pin_format_and_the_guard(eport: Eport, cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["p256"])
    wrong = eport("pin", "verify", "--pin-stdin", "--json", stdin=WRONG_PIN + "\n")
    assert error_json(wrong, "PIN_INCORRECT", 7)["tries_left"] == 2
    assert tries_on_card(path) == 2
    # A PIN of the wrong format never reaches the card: no try spent.
    for text in ("1234", "123456789", "8888888a"):
        error = error_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=text + "\n"),
                           "PIN_FORMAT", 7)
        assert text not in json.dumps(error, ensure_ascii=False)
    human = eport("pin", "verify", "--pin-stdin", stdin="1234\n")
    assert "no try was spent" in human_error(human, "PIN_FORMAT", 7)
    assert tries_on_card(path) == 2
    # The second wrong PIN, as a person reads it: how many tries are left and what to do.
    chinese = eport("pin", "verify", "--pin-stdin", stdin=WRONG_PIN + "\n", lang="zh")
    stderr = human_error(chinese, "PIN_INCORRECT", 7)
    assert "还可以重试1次" in stderr and "请核对口令" in stderr
    assert tries_on_card(path) == 1
    # One try left: a script must allow the last attempt explicitly, else nothing is sent.
    guarded = eport("pin", "verify", "--pin-stdin", stdin=PIN + "\n")
    assert "--allow-last-attempt" in human_error(guarded, "PIN_LAST_ATTEMPT_GUARD", 9)
    assert error_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
                      "PIN_LAST_ATTEMPT_GUARD", 9)["tries_left"] == 1
    assert tries_on_card(path) == 1
    allowed = eport("pin", "verify", "--pin-stdin", "--allow-last-attempt", stdin=PIN + "\n")
    assert allowed.returncode == 0, describe(allowed)
    assert "Only one PIN try is left" in allowed.stderr  # said, even when allowed
    assert tries_on_card(path) == 3
    assert_no_secret(wrong, human, chinese, guarded, allowed)


def test_last_try_card_sends_nothing_without_permission(eport: Eport,
                                                        cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["last_try"])
    assert "PIN tries left: 1" in eport("card", "info").stdout
    data = eport.file("data.txt", "报关单")
    runs = [eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
            eport("pin", "change", "--pin-stdin", "--json", stdin=pin_lines(PIN, NEW_PIN)),
            eport("sign", data, "--pin-stdin", "--json", stdin=PIN + "\n")]
    for run in runs:
        error = error_json(run, "PIN_LAST_ATTEMPT_GUARD", 9)
        assert "--allow-last-attempt" in error["remedy"]["en"]
    assert tries_on_card(path) == 1
    signed = eport("sign", data, "--pin-stdin", "--allow-last-attempt", "--json",
                   stdin=PIN + "\n")
    assert ok_json(signed, "sign")["signature_base64"]
    assert tries_on_card(path) == 3
    assert_no_secret(*runs, signed)


def test_blocked_pin(eport: Eport, cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["blocked"])
    data = eport.file("data.txt", "报关单")
    for args in (("pin", "verify", "--pin-stdin"),
                 ("pin", "verify", "--pin-stdin", "--allow-last-attempt"),
                 ("pin", "change", "--pin-stdin"),
                 ("sign", str(data), "--pin-stdin")):
        error = error_json(eport(*args, "--json", stdin=pin_lines(PIN, NEW_PIN)),
                           "PIN_BLOCKED", 8)
        assert "制卡中心" in error["remedy"]["zh"] and "eport pin unblock" in error["remedy"]["en"]
    chinese = eport("pin", "verify", "--pin-stdin", stdin=PIN + "\n", lang="zh")
    assert "制卡中心" in human_error(chinese, "PIN_BLOCKED", 8)
    assert "PIN: blocked" in eport("pin", "status").stdout
    assert "blocked" in eport("card", "info").stdout
    assert tries_on_card(path) == 0
    assert_no_secret(chinese)


# ---- PIN change and unblock ----

def test_pin_change(eport: Eport, cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["sm2"])
    changed = eport("pin", "change", "--pin-stdin", stdin=pin_lines(PIN, NEW_PIN))
    assert changed.returncode == 0 and "PIN changed" in changed.stdout, describe(changed)
    assert ok_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=NEW_PIN + "\n"),
                   "pin verify")["session_active"]
    old = eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n")
    assert error_json(old, "PIN_INCORRECT", 7)["tries_left"] == 2
    # A new PIN of the wrong format: refused before anything reaches the card.
    refused = eport("pin", "change", "--pin-stdin", "--json", stdin=pin_lines(NEW_PIN, "1234"))
    error_json(refused, "PIN_FORMAT", 7)
    # A wrong current PIN: refused by the card, one try spent.
    wrong = eport("pin", "change", "--pin-stdin", "--json", stdin=pin_lines(WRONG_PIN, PIN))
    assert error_json(wrong, "PIN_INCORRECT", 7)["tries_left"] == 1
    # Only the current PIN on stdin: a usage error, nothing sent.
    short = eport("pin", "change", "--pin-stdin", stdin=NEW_PIN + "\n")
    assert "No PIN on standard input" in human_error(short, "USAGE", 2)
    assert tries_on_card(path) == 1
    back = eport("pin", "change", "--pin-stdin", "--allow-last-attempt", "--json",
                 stdin=pin_lines(NEW_PIN, PIN))
    assert ok_json(back, "pin change")["pin_tries_left"] in (3, None)
    assert eport("pin", "verify", "--pin-stdin", stdin=PIN + "\n").returncode == 0
    assert_no_secret(changed, old, refused, wrong, short, back)


def test_pin_unblock_with_the_puk(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["blocked"])
    wrong = eport("pin", "unblock", "--pin-stdin", "--json", stdin=pin_lines(WRONG_PUK, NEW_PIN))
    assert error_json(wrong, "PUK_INCORRECT", 7)["tries_left"] == 2
    human = eport("pin", "unblock", "--pin-stdin", stdin=pin_lines(PUK, NEW_PIN))
    assert human.returncode == 0, describe(human)
    assert "PIN unblocked and set to the new PIN" in human.stdout
    status = ok_json(eport("pin", "status", "--json"), "pin status")
    assert (status["pin_tries_left"], status["pin_blocked"], status["puk_tries_left"]) == \
        (3, False, 3)
    assert eport("pin", "verify", "--pin-stdin", stdin=NEW_PIN + "\n").returncode == 0
    error_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
               "PIN_INCORRECT", 7)
    assert_no_secret(wrong, human)


def test_blocked_puk(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["blocked"])
    for tries in (2, 1):
        run = eport("pin", "unblock", "--pin-stdin", "--json",
                    stdin=pin_lines(WRONG_PUK, NEW_PIN))
        assert error_json(run, "PUK_INCORRECT", 7)["tries_left"] == tries
    # The last PUK try is guarded like the PIN's.
    error_json(eport("pin", "unblock", "--pin-stdin", "--json",
                     stdin=pin_lines(WRONG_PUK, NEW_PIN)), "PIN_LAST_ATTEMPT_GUARD", 9)
    error_json(eport("pin", "unblock", "--pin-stdin", "--allow-last-attempt", "--json",
                     stdin=pin_lines(WRONG_PUK, NEW_PIN)), "PUK_BLOCKED", 8)
    # Now even the right PUK cannot help: only the card centre can.
    for lang in ("en", "zh"):
        final = eport("pin", "unblock", "--pin-stdin", "--allow-last-attempt",
                      stdin=pin_lines(PUK, NEW_PIN), lang=lang)
        stderr = human_error(final, "PUK_BLOCKED", 8)
        assert ("card centre" if lang == "en" else "制卡中心") in stderr
        assert_no_secret(final)
    error = error_json(eport("pin", "unblock", "--pin-stdin", "--json",
                             stdin=pin_lines(PUK, NEW_PIN)), "PUK_BLOCKED", 8)
    assert "制卡中心" in error["remedy"]["zh"]
    status = eport("pin", "status")
    assert "PIN: blocked" in status.stdout and "PUK: blocked" in status.stdout


# ---- the PIN typed at a terminal ----

class Terminal:
    """`eport` on a pseudo-terminal of its own, which is also its /dev/tty (a new session with
    the pty as controlling terminal, as a login shell has): a person typing at a terminal."""

    _LAUNCH = "import os, sys; os.login_tty(0); os.execv(sys.argv[1], sys.argv[1:])"

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", self._LAUNCH, EPORT, *args],
            stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"})
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def screen(self) -> str:
        """Everything the terminal showed, without colour codes."""
        return ANSI.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def _read(self, timeout: float) -> bool:
        """Read what is there; False once the program has gone (EIO on Linux)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 4096)
        except OSError:
            return False
        self.raw += chunk
        return bool(chunk)

    def _until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """wait_until, with what the terminal shows when it fails."""
        try:
            wait_until(condition, timeout=timeout, interval=0, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the terminal shows:\n{self.screen}") from None

    def expect(self, text: str, timeout: float = 20) -> None:
        def shown() -> bool:
            if text in self.screen:
                return True
            alive = self._read(0.05)  # select() on the terminal: returns as soon as eport writes
            assert alive or text in self.screen, \
                f"eport ended and {text!r} never appeared; the terminal shows:\n{self.screen}"
            return text in self.screen

        self._until(shown, timeout, f"{text!r} appears")

    def wait_for_hidden_input(self, timeout: float = 10) -> None:
        """Until the terminal stops echoing (the PIN prompt turned echo off)."""
        def echo_off() -> bool:
            if not termios.tcgetattr(self.master)[3] & termios.ECHO:
                return True
            self._read(0.01)
            return False

        self._until(echo_off, timeout, "the terminal stops echoing")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 30) -> int:
        self._until(lambda: not self._read(0.05), timeout, "eport ends")
        assert "Traceback" not in self.screen, self.screen
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


OpenTerminal = Callable[..., Terminal]


@pytest.fixture
def terminal(eport: Eport) -> Iterator[OpenTerminal]:
    opened: list[Terminal] = []

    def open_terminal(*args: str, lang: str = "en") -> Terminal:
        opened.append(Terminal(*args, env=eport_env(eport.stack.socket, lang)))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


@pytest.mark.parametrize("lang,prompt,accepted", [
    ("en", "PIN:", "PIN accepted: logged in"), ("zh", "请输入口令(PIN):", "口令正确, 已登录")],
    ids=["en", "zh"])
def test_pin_prompt_hides_the_pin(eport: Eport, terminal: OpenTerminal,
                                  cards: dict[str, CardImage], lang: str, prompt: str,
                                  accepted: str) -> None:
    eport.put(cards["p256"])
    term = terminal("pin", "verify", lang=lang)
    term.expect(prompt)
    term.wait_for_hidden_input()
    term.type(PIN + "\r")
    assert term.finish() == 0, term.screen
    assert accepted in term.screen
    assert_no_secret(term.screen)
    assert ok_json(eport("pin", "status", "--json"), "pin status")["session_active"]


def test_pin_prompt_asks_before_the_last_try(eport: Eport, terminal: OpenTerminal,
                                             cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["last_try"])
    declined = terminal("pin", "verify")
    declined.expect("PIN:")
    declined.wait_for_hidden_input()
    declined.type(PIN + "\r")
    declined.expect("Send it anyway? [y/N]")
    assert "Only one PIN try is left" in declined.screen
    declined.type("n\r")
    assert declined.finish() == 9, declined.screen
    assert "[PIN_LAST_ATTEMPT_GUARD]" in declined.screen and "no try was spent" in declined.screen
    assert tries_on_card(path) == 1

    confirmed = terminal("pin", "verify", lang="zh")
    confirmed.expect("请输入口令(PIN):")
    confirmed.wait_for_hidden_input()
    confirmed.type(PIN + "\r")
    confirmed.expect("确定要提交吗?")
    assert "只剩最后1次重试机会" in confirmed.screen
    confirmed.type("y\r")
    assert confirmed.finish() == 0, confirmed.screen
    assert "口令正确, 已登录" in confirmed.screen
    assert tries_on_card(path) == 3
    assert_no_secret(declined.screen, confirmed.screen)


def test_ctrl_c_at_the_pin_prompt(eport: Eport, terminal: OpenTerminal,
                                  cards: dict[str, CardImage]) -> None:
    path = eport.put(cards["p256"])
    term = terminal("pin", "verify")
    term.expect("PIN:")
    term.wait_for_hidden_input()
    term.type("8888\x03")  # half a PIN, then Ctrl-C
    assert term.finish() == 130, term.screen
    assert "Cancelled" in term.screen and "Traceback" not in term.screen
    assert "8888" not in term.screen
    assert tries_on_card(path) == 3


def test_new_pin_at_the_terminal_is_asked_twice(eport: Eport, terminal: OpenTerminal,
                                                cards: dict[str, CardImage]) -> None:
    eport.put(cards["p256"])
    term = terminal("pin", "change")
    for prompt, secret in (("PIN:", PIN), ("New PIN:", NEW_PIN),
                           ("Repeat for confirmation:", NEW_PIN)):
        term.expect(prompt)
        term.wait_for_hidden_input()
        term.type(secret + "\r")
    assert term.finish() == 0, term.screen
    assert "PIN changed" in term.screen
    assert_no_secret(term.screen)
    assert eport("pin", "verify", "--pin-stdin", stdin=NEW_PIN + "\n").returncode == 0


# ---- certificates ----

def openssl(*args: str | Path) -> bytes:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, check=True,
                          timeout=30).stdout


@pytest.fixture
def needs_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")


@pytest.mark.usefixtures("needs_openssl")
def test_cert_show_check_and_export(eport: Eport, cards: dict[str, CardImage]) -> None:
    image = cards["p256"]
    profile = image.profile
    eport.put(image)
    shown = eport("cert", "show")
    assert shown.returncode == 0, describe(shown)
    lines = shown.stdout.splitlines()
    assert lines[0] == f"Certificate: {profile.cert_number}"
    assert any(line.startswith("Subject: ") and profile.holder_name in line for line in lines)
    assert any(line.startswith("Chain: trusted") for line in lines)
    assert "证书链: 可信" in eport("cert", "show", lang="zh").stdout
    view = ok_json(eport("cert", "show", "--json"), "cert show")
    assert view["certificate_number"] == profile.cert_number
    assert (view["check"]["state"], view["check"]["chain"]) == ("VALID", "TRUSTED")
    assert ok_json(eport("cert", "check", "--json"), "cert check") == view
    assert eport("cert", "check").returncode == 0

    # Export: PEM to stdout by default, or to files; OpenSSL reads both encodings.
    pem_out = eport("cert", "export")
    assert pem_out.returncode == 0 and pem_out.stdout.startswith("-----BEGIN CERTIFICATE-----")
    pem, der = eport.workdir / "card.pem", eport.workdir / "card.der"
    written = eport("cert", "export", "-o", pem)
    assert written.returncode == 0 and f"Certificate written to {pem}" in written.stderr
    assert eport("cert", "export", "--format", "der", "-o", der).returncode == 0
    assert pem.read_text() == pem_out.stdout and der.read_bytes() == image.certificate
    assert openssl("x509", "-in", pem, "-outform", "DER") == image.certificate
    assert openssl("x509", "-in", der, "-inform", "DER", "-noout", "-fingerprint") == \
        openssl("x509", "-in", pem, "-noout", "-fingerprint")
    exported = ok_json(eport("cert", "export", "--json"), "cert export")
    assert exported["pem"] == pem_out.stdout and exported["output"] is None
    assert exported["der_base64"] and exported["format"] == "pem"

    # Checking a certificate file: no card involved.
    for path in (pem, der):
        checked = ok_json(eport("cert", "check", path, "--json"), "cert check")
        assert checked["card_id"] is None
        assert (checked["check"]["state"], checked["check"]["chain"]) == ("VALID", "TRUSTED")
        assert eport("cert", "check", path).returncode == 0
    eport.pull()
    assert eport("cert", "check", pem).returncode == 0  # no card needed
    error_json(eport("cert", "check", eport.file("junk.pem", "not a certificate"), "--json"),
               "INVALID_ARGUMENT", 12)


@pytest.mark.usefixtures("needs_openssl")
def test_untrusted_chain(eport: Eport, cards: dict[str, CardImage], tmp_path: Path) -> None:
    """An eportd that trusts another CA: the card's chain is untrusted, signing refused."""
    other_ca = init_ca(tmp_path / "other-ca")
    eport.put(cards["p256"])
    other = start_daemon(tmp_path / "other-run", "--trust-anchor", str(other_ca.trust_bundle))
    try:
        wait_for_card(other.stub(), READER0)

        def run(*args: str, **kw: Any) -> Result:
            return run_eport(*args, socket_path=other.socket, **kw)

        checked = run("cert", "check")
        assert "Chain: NOT trusted" in checked.stdout
        human_error(checked, "CERT_UNTRUSTED", 10)
        error = error_json(run("cert", "check", "--json"), "CERT_UNTRUSTED", 10)
        assert error["check"]["chain"] == "UNTRUSTED"
        assert "--trust-anchor" in error["remedy"]["en"]
        assert "证书链: 不可信" in run("cert", "show", lang="zh").stdout
        data = eport.file("data.txt", "报关单")
        signed = run("sign", str(data), "--pin-stdin", "--json", stdin=PIN + "\n")
        error_json(signed, "CERT_UNTRUSTED", 10)
        # The certificate as a file: untrusted there too; the module's eportd trusts it.
        pem = eport.file("card.pem", eport("cert", "export").stdout)
        error_json(run("cert", "check", str(pem), "--json"), "CERT_UNTRUSTED", 10)
        assert eport("cert", "check", pem).returncode == 0
        assert_no_secret(signed)
    finally:
        other.stop()


# ---- signing and verifying ----

def openssl_has_sm3() -> bool:
    if shutil.which("openssl") is None:
        return False
    listing = subprocess.run(["openssl", "list", "-digest-algorithms"], capture_output=True,
                             text=True)
    return "SM3" in listing.stdout.upper()


@pytest.mark.usefixtures("needs_openssl")
@pytest.mark.parametrize("algorithm,digest", [
    ("rsa2048", "sha256"), ("rsa1024", "sha1"), ("p256", "sha256"), ("sm2", "sm3")])
def test_sign_and_verify_shell_script(eport: Eport, cards: dict[str, CardImage],
                                      algorithm: str, digest: str) -> None:
    """tests/pcsc/sign_and_verify.sh: `eport sign --pin-stdin`, `eport cert export`, and
    OpenSSL verifying the signatures; `eport verify` of the file and of a tampered copy."""
    if digest == "sm3" and not openssl_has_sm3():
        pytest.skip("this openssl has no SM3")
    eport.put(cards[algorithm])
    workdir = eport.workdir / "shell"
    workdir.mkdir()
    result = subprocess.run(
        ["bash", str(SIGN_AND_VERIFY)], capture_output=True, text=True, timeout=120,
        start_new_session=True,
        env=eport_env(eport.stack.socket, "en", {"EPORT": EPORT, "EPORT_PIN": PIN,
                                                 "DIGEST": digest, "WORKDIR": str(workdir)}))
    transcript = result.stdout + result.stderr
    assert result.returncode == 0, transcript
    assert "all checks passed" in result.stdout
    assert result.stdout.count("Verified OK") == (2 if digest == "sm3" else 3), transcript
    assert "Verification failure" in result.stdout + result.stderr
    assert "Traceback" not in transcript
    assert_no_secret(transcript)


def test_sign_and_verify_json(eport: Eport, cards: dict[str, CardImage]) -> None:
    image = cards["sm2"]
    eport.put(image)
    data = eport.file("报关单.txt", "报关单 JSON")
    signed = ok_json(eport("sign", data, "--pin-stdin", "--json", stdin=PIN + "\n"), "sign")
    assert (signed["card_id"], signed["certificate_number"], signed["algorithm"]) == (
        image.profile.card_id, image.profile.cert_number, "SM2_WITH_SM3")
    assert signed["signature_rs_base64"] and signed["format"] == "base64"
    assert signed["output"] is None  # with --json the signature is only in the document
    signature = eport.file("sig.b64", signed["signature_base64"] + "\n")
    verified = ok_json(eport("verify", data, "-s", signature, "--json"), "verify")
    assert verified == {"valid": True, "certificate_number": image.profile.cert_number}
    assert "Signature valid" in eport("verify", data, "-s", signature).stdout
    assert "签名有效" in eport("verify", data, "-s", signature, lang="zh").stdout
    tampered = eport.file("tampered.txt", "报关单 JSON!")
    error = error_json(eport("verify", tampered, "-s", signature, "--json"),
                       "SIGNATURE_INVALID", 11)
    assert error["valid"] is False
    human_error(eport("verify", tampered, "-s", signature), "SIGNATURE_INVALID", 11)
    # A signature with an algorithm the card's key cannot make: refused, exit 12.
    error_json(eport("sign", data, "--algorithm", "sha256-rsa", "--pin-stdin", "--json",
                     stdin=PIN + "\n"), "INVALID_ARGUMENT", 12)


@pytest.mark.parametrize("algorithm", ["p256", "sm2", "rsa1024"])
def test_large_file_is_signed_and_verified(eport: Eport, cards: dict[str, CardImage],
                                           algorithm: str) -> None:
    """Over gRPC's 4 MiB message limit: eport hashes the file itself and sends the digest."""
    eport.put(cards[algorithm])
    data = eport.file("big.bin", os.urandom(5 * 1024 * 1024))
    signature = eport.workdir / "big.sig"
    signed = eport("sign", data, "--pin-stdin", "--format", "raw", "-o", signature,
                   stdin=PIN + "\n")
    assert signed.returncode == 0, describe(signed)
    verified = eport("verify", data, "-s", signature)
    assert verified.returncode == 0, describe(verified)
    pem = eport.file("card.pem", eport("cert", "export").stdout)
    assert eport("verify", data, "-s", signature, "--cert", pem).returncode == 0


# ---- errors: daemon, readers, cards, pcscd ----

@pytest.mark.parametrize("args", [
    ("readers",), ("card", "info"), ("pin", "status"), ("pin", "verify", "--pin-stdin"),
    ("cert", "show"), ("sign", "/etc/hostname", "--pin-stdin"), ("watch", "--count", "1")],
    ids=command_line)
def test_daemon_not_running(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "no-such-dir" / "eportd.sock"
    error = error_json(run_eport(*args, "--json", socket_path=missing, stdin=PIN + "\n"),
                       "DAEMON_UNAVAILABLE", 3)
    assert error["socket"] == str(missing)


def test_daemon_not_running_as_a_person_sees_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "eportd.sock"
    human = run_eport("pin", "verify", "--pin-stdin", socket_path=missing, stdin=PIN + "\n")
    stderr = human_error(human, "DAEMON_UNAVAILABLE", 3)
    assert str(missing) in stderr and "systemctl --user start eportd.socket" in stderr
    assert human.stdout == ""
    chinese = run_eport("card", "info", socket_path=missing, lang="zh")
    assert "无法连接 eportd" in human_error(chinese, "DAEMON_UNAVAILABLE", 3)
    # --debug adds no traceback to an expected failure.
    debug = run_eport("--debug", "card", "info", socket_path=missing)
    assert debug.returncode == 3 and "Traceback" not in debug.stderr
    assert_no_secret(human, chinese, debug)


def test_daemon_socket_without_a_daemon(eport: Eport, tmp_path: Path) -> None:
    """A socket file left behind by a daemon that died: nobody answers."""
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()
    error_json(run_eport("readers", "--json", socket_path=stale), "DAEMON_UNAVAILABLE", 3)
    # --socket wins over EPORTD_SOCKET, either way round.
    assert run_eport("--socket", str(eport.stack.socket), "readers",
                     socket_path=stale).returncode == 0
    assert run_eport("--socket", str(stale), "readers",
                     socket_path=eport.stack.socket).returncode == 3


@pytest.mark.parametrize("args", [
    ("card", "info"), ("pin", "status"), ("pin", "verify", "--pin-stdin"), ("cert", "show"),
    ("cert", "export"), ("sign", "/etc/hostname", "--pin-stdin")], ids=command_line)
def test_no_card(eport: Eport, args: tuple[str, ...]) -> None:
    error_json(eport(*args, "--json", stdin=PIN + "\n"), "NO_CARD", 5)
    if args == ("card", "info"):
        assert "insert the IC card" in human_error(eport(*args), "NO_CARD", 5)
        chinese = eport(*args, lang="zh")
        assert "请插入IC卡或者Key" in human_error(chinese, "NO_CARD", 5)


def test_empty_reader_chosen(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["p256"], slot=0)
    human_error(eport("card", "info", "--reader", READER1), "NO_CARD", 5)
    error = error_json(eport("pin", "status", "--reader", READER1, "--json"), "NO_CARD", 5)
    assert error["reader"] == READER1


def test_card_pulled(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["rsa2048"])
    assert eport("card", "info").returncode == 0
    eport.pull()
    human_error(eport("card", "info"), "NO_CARD", 5)
    # Pulled in the middle of a signature.
    eport.put(cards["rsa2048"])
    eport.stack.slots.slot(0).pull_during_next_apdu()
    data = eport.file("data.txt", "报关单")
    error = error_json(eport("sign", data, "--pin-stdin", "--json", stdin=PIN + "\n"),
                       "CARD_REMOVED", 5)
    assert "insert the card again" in error["remedy"]["en"]


def test_card_held_exclusively_by_another_program(eport: Eport, cards: dict[str, CardImage]
                                                  ) -> None:
    stack = eport.stack
    stack.stop_daemon()  # eportd holds every card it has read: insert this one behind its back
    eport.put(cards["p256"], wait=False)
    with PcscContext() as context:
        held = context.connect(READER0, exclusive=True)
        try:
            stack.start_daemon()
            wait_until(lambda: '"exclusive_elsewhere": true' in eport("readers", "--json").stdout,
                       timeout=10, interval=0.1, what="eportd shows the card held elsewhere")
            stderr = human_error(eport("card", "info"), "SHARING_VIOLATION", 6)
            assert "close the other program" in stderr
            error_json(eport("card", "info", "--json"), "SHARING_VIOLATION", 6)
            error_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
                       "SHARING_VIOLATION", 6)
            readers = eport("readers")
            assert f"{READER0}: card held exclusively by another program" in readers.stdout
            listing = ok_json(eport("readers", "--json"), "readers")["readers"]
            assert listing[0]["exclusive_elsewhere"] is True
        finally:
            held.close()
    # The other program let go: the card works again, without being re-inserted.
    wait_until(lambda: eport("card", "info").returncode == 0, timeout=10, interval=0.1,
               what="the card works again")


@pytest.mark.parametrize("args", [
    ("bogus",), ("card", "info", "--bogus"), ("sign",), ("sign", "x", "--format", "xml"),
    ("verify", "x"), ("watch", "--count", "0"), ("cert", "export", "--format", "txt"),
    ("pin",), ("card", "info", "--reader"), ("sign", "-", "--pin-stdin")], ids=command_line)
def test_usage_errors(eport: Eport, args: tuple[str, ...]) -> None:
    human = eport(*args)
    assert human.returncode == 2 and human.stdout == "", describe(human)
    assert "Usage:" in human.stderr or "Error" in human.stderr, describe(human)
    error = error_json(eport("--json", *args), "USAGE", 2)
    assert error["message"]["en"]


@pytest.mark.parametrize("args", [
    ("pin", "verify", PIN), ("pin", "verify", "--pin", PIN), ("pin", "verify", f"--pin={PIN}"),
    ("pin", "change", PIN, NEW_PIN), ("pin", "unblock", PUK, NEW_PIN),
    ("sign", "/etc/hostname", PIN), ("pin", "verify", "--pin-stdin", PIN)], ids=command_line)
def test_a_pin_given_as_an_argument_is_refused_and_not_echoed(
        eport: Eport, args: tuple[str, ...]) -> None:
    # No card: exit 2, not 5, shows the command stopped before it asked eportd anything.
    human = eport(*args, stdin=PIN + "\n")
    assert human.returncode == 2 and human.stdout == "", describe(human)
    assert "--pin-stdin" in human.stderr or "No such option" in human.stderr, describe(human)
    as_json = eport(*args, "--json", stdin=PIN + "\n")
    error_json(as_json, "USAGE", 2)
    assert_no_secret(human, as_json)


@pytest.mark.parametrize("args", [
    ("pin", "verify", "--pin-stdin"), ("pin", "unblock", "--pin-stdin"),
    ("sign", "/etc/hostname", "--pin-stdin")], ids=command_line)
def test_pin_stdin_with_nothing_on_stdin(eport: Eport, cards: dict[str, CardImage],
                                         args: tuple[str, ...]) -> None:
    path = eport.put(cards["p256"])
    stderr = human_error(eport(*args, stdin=""), "USAGE", 2)
    assert "on standard input" in stderr
    error = error_json(eport(*args, "--json", stdin=""), "USAGE", 2)
    assert "--pin-stdin" in error["remedy"]["en"]
    assert tries_on_card(path) == 3


def test_file_errors(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["p256"])
    missing = eport.workdir / "missing.txt"
    signed = eport("sign", missing, "--pin-stdin", stdin=PIN + "\n")
    assert str(missing) in human_error(signed, "FILE_ERROR", 13)
    error = error_json(eport("sign", missing, "--pin-stdin", "--json", stdin=PIN + "\n"),
                       "FILE_ERROR", 13)
    assert error["path"] == str(missing)
    data = eport.file("data.txt", "报关单")
    signature = eport.file("sig.b64", "AAAA\n")
    for args in (("verify", missing, "-s", signature), ("verify", data, "-s", missing),
                 ("verify", data, "-s", signature, "--cert", missing),
                 ("cert", "check", missing),
                 ("cert", "export", "-o", eport.workdir / "no-dir" / "card.pem"),
                 ("sign", data, "--pin-stdin", "-o", eport.workdir / "no-dir" / "sig")):
        error_json(eport(*args, "--json", stdin=PIN + "\n"), "FILE_ERROR", 13)
    assert_no_secret(signed)


# ---- watching ----

class Watcher:
    """`eport watch ...` in the background, its stdout lines collected as they come."""

    def __init__(self, eport: Eport, *args: str) -> None:
        self.process = subprocess.Popen(
            [EPORT, "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", start_new_session=True,
            env=eport_env(eport.stack.socket, "en"))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 10) -> None:
        try:
            wait_until(lambda: any(text in line for line in self.lines), timeout=timeout,
                       interval=0.02, what=f"a line with {text!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc} in {self.lines}") from None

    def finish(self, timeout: float = 10) -> tuple[int, str]:
        code = self.process.wait(timeout)
        self._reader.join(5)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def test_watch_json_lines(eport: Eport, cards: dict[str, CardImage]) -> None:
    eport.put(cards["p256"], slot=0)
    snapshot = eport("watch", "--count", "6", "--json")
    assert snapshot.returncode == 0, describe(snapshot)
    documents = [json.loads(line) for line in snapshot.stdout.splitlines()]
    assert all(d["command"] == "watch" and d["ok"] for d in documents)
    events = [d["result"] for d in documents]
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    assert events[0]["kind"] == "SERVICE_UP" and events[-1]["kind"] == "SNAPSHOT_COMPLETE"
    assert {(e["kind"], e["reader"]) for e in events[1:-1]} == {
        ("READER_ADDED", READER0), ("CARD_INSERTED", READER0), ("CARD_READY", READER0),
        ("READER_ADDED", READER1)}
    ready = next(e for e in events if e["kind"] == "CARD_READY")
    assert ready["card"]["card_id"] == cards["p256"].profile.card_id

    # A card inserted while watching: CARD_INSERTED, then CARD_READY once it has been read.
    watcher = Watcher(eport, "--count", "8", "--json")
    try:
        watcher.wait_for_line("SNAPSHOT_COMPLETE")
        eport.put(cards["sm2"], slot=1)
        code, stderr = watcher.finish()
    finally:
        watcher.close()
    assert code == 0 and stderr == ""
    live = [json.loads(line)["result"] for line in watcher.lines[6:]]
    assert [(e["kind"], e["reader"]) for e in live] == [
        ("CARD_INSERTED", READER1), ("CARD_READY", READER1)]
    assert live[1]["card"]["card_id"] == cards["sm2"].profile.card_id
    assert live[1]["card"]["key_algorithm"] == "SM2"


def test_watch_human_until_ctrl_c(eport: Eport, cards: dict[str, CardImage]) -> None:
    chinese = eport("watch", "--count", "4", lang="zh")
    assert chinese.returncode == 0, describe(chinese)
    assert "读卡器接入" in chinese.stdout and "当前状态已列出" in chinese.stdout
    watcher = Watcher(eport)
    try:
        watcher.wait_for_line("waiting for changes")
        eport.put(cards["p256"])
        watcher.wait_for_line(f"card ready {READER0} [{cards['p256'].profile.card_id}]")
        watcher.process.send_signal(signal.SIGINT)
        code, stderr = watcher.finish()
    finally:
        watcher.close()
    assert code == 0, stderr  # Ctrl-C is how a watch ends
    assert "Traceback" not in stderr
    assert any("card inserted" in line for line in watcher.lines)


# ---- pcscd stopped (last: it restarts pcscd under everything) ----

def test_pcscd_stopped(eport: Eport, pcscd: Pcscd, cards: dict[str, CardImage]) -> None:
    if not pcscd.restartable:
        pytest.skip("pcscd was started outside the tests; not ours to stop")
    eport.put(cards["p256"])
    pcscd.stop()
    try:
        readers = wait_until(lambda: (result := eport("readers")).returncode == 4 and result,
                             timeout=10, interval=0.1, what="eport says pcscd is not running")
        assert "pcscd" in human_error(readers, "SERVICE_NOT_RUNNING", 4)
        assert "读卡器服务(pcscd)未运行" in eport("readers", lang="zh").stderr
        error_json(eport("readers", "--json"), "SERVICE_NOT_RUNNING", 4)
        error_json(eport("card", "info", "--json"), "SERVICE_NOT_RUNNING", 4)
        error_json(eport("pin", "verify", "--pin-stdin", "--json", stdin=PIN + "\n"),
                   "SERVICE_NOT_RUNNING", 4)
    finally:
        pcscd.restart()
    wait_for_card(eport.stack.running().stub(), READER0, timeout=15)
    assert eport("card", "info").returncode == 0
