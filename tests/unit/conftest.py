from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eport.common.profile import CardKind
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.card_os import CardOS, load_card
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import datacenter_pb2_grpc
from tests.support.cards import write_card
from tests.support.datacenter_stack import SigningCard, make_signing_card, serving


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


# ---- the data centre's unit tests: the server in-process on a socket, cards that sign ----

@pytest.fixture
def datacenter(tmp_path: Path, test_ca: TestCA, datacenter_db: str
               ) -> Iterator[tuple[Any, datacenter_pb2_grpc.DataCenterStub]]:
    with serving(tmp_path, test_ca.trust_bundle) as served:
        yield served


@pytest.fixture
def stub(datacenter: tuple[Any, datacenter_pb2_grpc.DataCenterStub]
         ) -> datacenter_pb2_grpc.DataCenterStub:
    return datacenter[1]


@pytest.fixture(scope="module")
def operator(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.OPERATOR)


@pytest.fixture(scope="module")
def declarant(test_ca: TestCA) -> SigningCard:
    return make_signing_card(test_ca, CardKind.DECLARANT)


@pytest.fixture
def trust_dir(tmp_path: Path, test_ca: TestCA) -> Path:
    """A trust directory holding the test CA's bundle; a test adds anchors or CRLs to it."""
    directory = tmp_path / "trust"
    directory.mkdir()
    shutil.copy(test_ca.trust_bundle, directory / "eport-test-ca.pem")
    return directory


@pytest.fixture
def serve(tmp_path: Path, trust_dir: Path, datacenter_db: str
          ) -> Iterator[Callable[[], datacenter_pb2_grpc.DataCenterStub]]:
    """Start the data centre on the trust directory as it is when called (so a test can change
    the directory between starts); every server started is stopped at the end."""
    started: list[Any] = []

    def start() -> datacenter_pb2_grpc.DataCenterStub:
        context = serving(tmp_path, trust_dir)
        started.append(context)
        return context.__enter__()[1]

    yield start
    for context in started:
        context.__exit__(None, None, None)
