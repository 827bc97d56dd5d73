from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eport.firmware_sim.card_os import CardOS, load_card
from eport.firmware_sim.image import CardImage
from tests.support.cards import write_card


@pytest.fixture
def make_card(
    card_images: dict[str, CardImage], tmp_path: Path
) -> Iterator[Callable[..., tuple[CardOS, Path]]]:
    """A fresh card backed by its own image file (changes are persisted there)."""
    opened: list[CardOS] = []

    def factory(algorithm: str = "rsa2048", image: CardImage | None = None) -> tuple[CardOS, Path]:
        name = f"{algorithm}-{len(opened)}.json"
        path = write_card(image or card_images[algorithm], tmp_path, name)
        card = load_card(path)
        opened.append(card)
        return card, path

    yield factory
    for card in opened:
        card.close()
