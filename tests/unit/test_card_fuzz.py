"""Random and mutated APDUs never crash the card and, when refused, change nothing.

CI runs EPORT_FUZZ_COUNT APDUs (default 20,000); the long campaign of 100,000 or more is
`python -m tests.support.apdu_fuzz --count 100000`.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eport.common.apdu import ApduFormatError, CommandApdu
from eport.common.tlv import TlvError, iter_tlv, tlv
from eport.firmware_sim.card_os import CardOS
from eport.firmware_sim.image import CardImage
from tests.support.apdu_fuzz import run_fuzz


def test_mutational_fuzz_finds_no_violation(card_images: dict[str, CardImage]) -> None:
    count = int(os.environ.get("EPORT_FUZZ_COUNT", "20000"))
    report = run_fuzz(card_images["p256"], count=count, seed=20261122)
    assert report.sent == count
    assert report.violations == []
    # The campaign reached the interesting paths, not only "wrong length".
    assert {0x9000, 0x6A80, 0x6A82, 0x6D00, 0x6E00, 0x6700} <= set(report.status_words)


@pytest.mark.parametrize("algorithm", ["sm2", "rsa1024"])
def test_fuzz_of_the_envelope_key_finds_no_violation(
    card_images: dict[str, CardImage], algorithm: str
) -> None:
    # Cards with an envelope key in 9D: mutated decryption inputs (points off the curve,
    # blocks of the wrong length) get a status word and change nothing.
    count = int(os.environ.get("EPORT_FUZZ_COUNT", "20000")) // 4
    report = run_fuzz(card_images[algorithm], count=count, seed=20261202)
    assert report.violations == []
    assert {0x9000, 0x6A80, 0x6A88, 0x6982} <= set(report.status_words)


_cards: dict[str, CardOS] = {}


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_any_bytes_get_a_status_word(card_images: dict[str, CardImage], raw: bytes) -> None:
    # One card for all examples: loading an RSA key per example would dominate the run.
    if "rsa2048" not in _cards:
        _cards["rsa2048"] = CardOS(card_images["rsa2048"])
    card = _cards["rsa2048"]
    card.power_off()
    before = card.image
    response = card.execute(raw)
    assert len(response) >= 2
    assert response[-2:] != b"\x6f\x00"
    if response[-2:] != b"\x90\x00" and response[-2] != 0x61:
        assert card.image == before
        assert not card.pin_verified


@given(
    st.integers(0, 0xFF), st.integers(0, 0xFF), st.integers(0, 0xFF), st.integers(0, 0xFF),
    st.binary(max_size=600), st.one_of(st.none(), st.integers(1, 256)), st.booleans(),
)
def test_command_apdu_round_trips(cla: int, ins: int, p1: int, p2: int, data: bytes,
                                  le: int | None, extended: bool) -> None:
    # a case-1 APDU (no data, no Le) has no extended form
    extended = (extended and (bool(data) or le is not None)) or len(data) > 255
    command = CommandApdu(cla, ins, p1, p2, data, le, extended)
    assert CommandApdu.parse(command.to_bytes()) == command


@given(st.lists(st.tuples(st.sampled_from([0x4F, 0x53, 0x5FC10A, 0x7C, 0x81]),
                          st.binary(max_size=400)), max_size=5))
def test_tlv_round_trips(items: list[tuple[int, bytes]]) -> None:
    encoded = b"".join(tlv(tag, value) for tag, value in items)
    assert list(iter_tlv(encoded)) == items


@given(st.binary(max_size=64))
def test_tlv_parser_raises_only_tlv_errors(raw: bytes) -> None:
    with contextlib.suppress(TlvError):
        list(iter_tlv(raw))


@given(st.binary(max_size=64))
def test_apdu_parser_raises_only_format_errors(raw: bytes) -> None:
    with contextlib.suppress(ApduFormatError):
        CommandApdu.parse(raw)
