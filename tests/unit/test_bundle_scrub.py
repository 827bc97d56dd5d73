"""The support bundle's scrubber against every way a PIN or password shows up in text: log
assignments, JSON (spaced or not, quoted or not, escaped inside another JSON string), Python
reprs with single quotes, query strings, camel case names; and what it must leave alone."""

from __future__ import annotations

import json

import pytest

from eport.clients.doctor.bundle import scrub

SECRET = "31415926"

LEAKING_FORMS = [
    f"pin={SECRET}",
    f"pin = {SECRET}",
    f"PIN: {SECRET}",
    f"puk:{SECRET}",
    f'"pin": "{SECRET}"',
    f'"pin":"{SECRET}"',
    f'"pin" : "{SECRET}"',
    f'{{"pin": {SECRET}}}',
    f'"passwd":"{SECRET}"',
    f'"passwd": "{SECRET}"',
    f'"password": "{SECRET}"',
    f"pin_code={SECRET}",
    f"pin_code = '{SECRET}'",
    f'"pin_code": "{SECRET}"',
    f'"puk": "{SECRET}"',
    f"'puk': '{SECRET}'",
    f'"newPin": "{SECRET}"',
    f'"oldPin":"{SECRET}"',
    f"newPin={SECRET}",
    f"{{'oldPin': '{SECRET}', 'newPin': '{SECRET}'}}",
    f'"new_pin": "{SECRET}"',
    f"old_pin='{SECRET}'",
    f'"userPIN": "{SECRET}"',
    f"/sign?card=1&pin_code={SECRET}&x=1",
    f'"pin": "{SECRET[:4]}\\"{SECRET[4:]}"',  # an escaped quote inside the value
    f'message="{{\\"passwd\\": \\"{SECRET}\\"}}"',  # JSON inside a JSON string
    f"secret: {SECRET}",
    f'"pwd": "{SECRET}"',
]


@pytest.mark.parametrize("line", LEAKING_FORMS)
def test_every_form_of_a_secret_is_redacted(line: str) -> None:
    cleaned = scrub(f"2026-12-02 INFO gateway request {line} done")
    assert SECRET not in cleaned and SECRET[:4] not in cleaned, cleaned
    assert SECRET[4:] not in cleaned, cleaned
    assert "[redacted]" in cleaned and cleaned.endswith(" done")


def test_a_json_document_stays_json_with_its_secrets_redacted() -> None:
    document = json.dumps({"_method": "cus-sec_SpcVerifyPIN", "args": {"passwd": SECRET},
                           "pin": SECRET, "pin_tries_left": 2, "newPin": SECRET})
    cleaned = scrub(document)
    assert SECRET not in cleaned
    parsed = json.loads(cleaned)  # still valid JSON
    assert parsed["args"]["passwd"] == "[redacted]" and parsed["pin_tries_left"] == 2


@pytest.mark.parametrize("line", [
    "PIN tries left: 3",
    '"pin_tries_left": 2',
    "pin_verified=true",
    '"pin": {"tries_left": 3, "max_tries": 3}',
    "spin_count=5",
    "opinion: fine",
    "reader Virtual PCD 00 00 card 4403960001",
    "reason=PIN_INCORRECT",
])
def test_what_is_not_a_secret_is_kept(line: str) -> None:
    assert scrub(line) == line


def test_scrubbing_twice_changes_nothing_more() -> None:
    once = scrub("\n".join(LEAKING_FORMS))
    assert scrub(once) == once
