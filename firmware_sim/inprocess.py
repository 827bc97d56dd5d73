"""The in-process transport: the same card, for unit tests, without pcscd.

It offers the transport interface of the daemon's lowest layer (eport.cardlib.pcsc's transport):
`send_and_receive(apdu) -> (data, sw)`.
"""

from __future__ import annotations

from eport.firmware_sim.card_os import CardOS


class InProcessConnection:
    def __init__(self, card: CardOS) -> None:
        self.card = card
        self.card.power_on()

    @property
    def atr(self) -> bytes:
        return self.card.atr

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        response = self.card.execute(apdu)
        return response[:-2], int.from_bytes(response[-2:], "big")

    def reset(self) -> None:
        self.card.reset()

    def close(self) -> None:
        self.card.power_off()
