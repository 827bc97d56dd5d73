"""Answers-to-reset for the two E-port card forms.

T=1 only (TD1 = 01), historical bytes naming the form, and the TCK check byte that T=1
requires. The ATRs are our own and match no other OpenSC driver, so OpenSC probes the card
with SELECT and finds the PIV application.
"""

from __future__ import annotations

from functools import reduce

from eport.common.profile import CardForm

_HISTORICAL = {CardForm.IC: b"EPORT-IC", CardForm.IKEY: b"EPORT-KEY"}


def build_atr(historical: bytes) -> bytes:
    if not 0 < len(historical) <= 15:
        raise ValueError("1 to 15 historical bytes")
    body = bytes([0x80 | len(historical), 0x01]) + historical  # T0 (TD1 follows), TD1 (T=1)
    tck = reduce(lambda a, b: a ^ b, body, 0)
    return b"\x3b" + body + bytes([tck])


def atr_for_form(form: CardForm) -> bytes:
    return build_atr(_HISTORICAL[form])
