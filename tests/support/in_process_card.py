"""Talking to a simulated card in this process: raw APDUs, or eportd's PIV session over it."""

from __future__ import annotations

from eport.cardlib.pcsc.piv_session import PivSession
from eport.firmware_sim.card_os import CardOS
from eport.firmware_sim.inprocess import InProcessConnection


def send(card: CardOS, hex_apdu: str) -> tuple[bytes, int]:
    """One APDU given in hex (spaces allowed); the response data and the status word."""
    response = card.execute(bytes.fromhex(hex_apdu.replace(" ", "")))
    return response[:-2], int.from_bytes(response[-2:], "big")


def session(card: CardOS) -> PivSession:
    """A PivSession on the card with the PIV application selected."""
    piv = PivSession(InProcessConnection(card))
    piv.select()
    return piv
