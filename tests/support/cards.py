"""Provisioned test cards, made once per session and copied per test (key generation is slow)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eport.common.profile import CardForm, CardKind
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage, write_image_atomically
from eport.firmware_sim.provision import ProvisionRequest, provision_card

# Low PBKDF2 cost keeps thousands of VERIFYs fast in tests; the default is 20,000.
TEST_KDF_ITERATIONS = 500


def provision_test_card(
    ca: TestCA,
    algorithm: str = "rsa2048",
    *,
    kind: CardKind = CardKind.OPERATOR,
    form: CardForm = CardForm.IC,
    not_before: datetime | None = None,
    days: int = 730,
    **overrides: object,
) -> CardImage:
    """A card as `eport-sim provision` makes it: RSA and SM2 cards with an envelope key in
    slot 9D (pass envelope_key=False for one without, like cards made before it existed)."""
    start = not_before or datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    request = ProvisionRequest(
        kind=kind,
        form=form,
        algorithm=algorithm,
        not_before=start,
        not_after=start + timedelta(days=days),
        kdf_iterations=TEST_KDF_ITERATIONS,
    )
    request = replace(request, **overrides)  # type: ignore[arg-type]
    return provision_card(ca, request)


def write_card(image: CardImage, directory: Path, name: str = "card.json") -> Path:
    path = directory / name
    write_image_atomically(path, image)
    return path
