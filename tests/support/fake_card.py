"""A tiny stand-in card for testing the vpcd link, the slot runner and the control socket.

It implements the `VirtualCard` protocol with just enough behaviour to tell cards apart and to
see volatile state being cleared; no cryptography, so tests stay fast and independent of the
card OS. Its "image" is a small JSON file ({"label": ...}), loaded by `FakeCardFactory`.

Instructions (CLA 00):
- A4 SELECT: 9000
- 20 VERIFY: marks the "PIN" verified (volatile), 9000
- CA GET DATA: the label, then 01 if verified else 00, 9000
- EE ECHO: the command data back, 9000
- E0 BIG: P1P2 (big-endian) bytes of 0x5A, then 9000 (to make oversized answers)
anything else: 6D00.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

SW_OK = b"\x90\x00"
SW_INS_NOT_SUPPORTED = b"\x6d\x00"
SW_WRONG_LENGTH = b"\x67\x00"


def build_atr(historical: bytes) -> bytes:
    """A T=1 ATR with the given historical bytes and its check byte."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes([0x80 | len(historical), 0x01]) + historical  # T0 (TD1 follows), TD1: T=1
    check = 0
    for byte in body:
        check ^= byte
    return b"\x3b" + body + bytes([check])


FAKE_ATR = build_atr(b"FAKECARD")


class FakeCard:
    """A `VirtualCard` that records what happened to it."""

    def __init__(self, label: str = "fake", atr: bytes = FAKE_ATR) -> None:
        self.label = label
        self._atr = atr
        self.verified = False
        self.powered = False
        self.closed = False
        self.events: list[str] = []  # "on", "off", "reset", "close" and APDU hex, in order
        self.executed = 0
        self.raise_on_execute: Exception | None = None  # simulate a card bug
        self.answer_override: bytes | None = None  # answer this instead (bad lengths)
        self._lock = threading.Lock()

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> None:
        self._record("on")
        self.powered, self.verified = True, False

    def power_off(self) -> None:
        self._record("off")
        self.powered, self.verified = False, False

    def reset(self) -> None:
        self._record("reset")
        self.verified = False

    def close(self) -> None:
        self._record("close")
        self.closed = True

    def execute(self, apdu: bytes) -> bytes:
        self._record(apdu.hex())
        with self._lock:
            self.executed += 1
        if self.raise_on_execute is not None:
            raise self.raise_on_execute
        if self.answer_override is not None:
            return self.answer_override
        if len(apdu) < 4:
            return SW_WRONG_LENGTH
        ins, p1p2 = apdu[1], int.from_bytes(apdu[2:4], "big")
        data = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if ins == 0xA4:
            return SW_OK
        if ins == 0x20:
            self.verified = True
            return SW_OK
        if ins == 0xCA:
            return self.label.encode() + (b"\x01" if self.verified else b"\x00") + SW_OK
        if ins == 0xEE:
            return data + SW_OK
        if ins == 0xE0:
            return b"\x5a" * p1p2 + SW_OK
        return SW_INS_NOT_SUPPORTED

    def _record(self, event: str) -> None:
        with self._lock:
            self.events.append(event)


def write_fake_image(directory: Path, label: str, name: str | None = None) -> Path:
    path = directory / (name or f"{label}.fake.json")
    path.write_text(json.dumps({"label": label}))
    return path


class FakeCardFactory:
    """A `CardFactory` for fake images; keeps every card it made for the test to inspect."""

    def __init__(self) -> None:
        self.cards: list[FakeCard] = []

    def __call__(self, path: Path) -> FakeCard:
        # Raises FileNotFoundError / ValueError like a real factory meeting a bad image.
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
            raise ValueError(f"{path} is not a fake card image")
        card = FakeCard(raw["label"])
        self.cards.append(card)
        return card

    def latest(self, label: str) -> FakeCard:
        return next(c for c in reversed(self.cards) if c.label == label)
