"""The one-method connection interface every transport offers."""

from __future__ import annotations

from typing import Protocol


class SmartCardConnection(Protocol):
    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU; return the response data and the status word."""
        ...
