"""Device tier: a real reader with a real E-port (or PIV) card. Opt-in:

    EPORT_DEVICE_TESTS=1 .venv/bin/pytest tests/device

Read-only: it selects the application and reads the certificate and the PIN tries; it never
sends a PIN.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext, PcscError

pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(os.environ.get("EPORT_DEVICE_TESTS") != "1",
                       reason="device tests are opt-in: EPORT_DEVICE_TESTS=1"),
]


def test_a_real_card_answers_as_a_piv_card() -> None:
    with PcscContext() as context:
        readers = [r for r in context.list_readers() if not r.startswith("Virtual PCD")]
        with_card = [r for r in readers if context.card_present(r)]
        if not with_card:
            pytest.skip(f"no physical reader with a card (readers: {readers})")
        connection = context.connect(with_card[0])
        try:
            piv = PivSession(connection)
            piv.select()
            certificate = x509.load_der_x509_certificate(piv.read_certificate())
            assert certificate.serial_number > 0
            status = piv.reference_status()
            assert status.blocked or status.tries_left >= 0
        except PcscError as exc:
            pytest.fail(f"the card in {with_card[0]} did not answer: {exc}")
        finally:
            connection.close()
