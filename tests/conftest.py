from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from eport.firmware_sim.ca import TestCA, init_ca
from eport.firmware_sim.image import CardImage, load_card
from eport.firmware_sim.runner import CardFactory
from tests.support import datacenter_db as database_choice
from tests.support.cards import provision_test_card, write_card
from tests.support.openssl_tool import openssl_command
from tests.support.pcsc_stack import Pcscd, SimCard, SimCards, SimSlots, start_pcscd_if_needed


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return init_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def card_images(test_ca: TestCA) -> dict[str, CardImage]:
    """One provisioned card per algorithm; tests copy them (key generation is slow)."""
    return {alg: provision_test_card(test_ca, alg) for alg in ("rsa2048", "rsa1024", "p256", "sm2")}


@pytest.fixture(scope="session")
def openssl() -> str:
    """The openssl 3 command (the test fails without it)."""
    return openssl_command()


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    handle = start_pcscd_if_needed()
    yield handle
    handle.stop()


@pytest.fixture
def sim_cards(pcscd: Pcscd) -> Iterator[SimCards]:
    cards = SimCards()
    yield cards
    cards.close()


@pytest.fixture
def sim_card(
    sim_cards: SimCards, card_images: dict[str, CardImage], tmp_path: Path
) -> Callable[..., SimCard]:
    """Insert a simulated card (by algorithm, or a given image) into a vpcd slot."""

    def insert(algorithm: str = "rsa2048", *, slot: int = 0, image: CardImage | None = None
               ) -> SimCard:
        path = write_card(image or card_images[algorithm], tmp_path, f"slot{slot}.json")
        return sim_cards.insert(path, slot)

    return insert


@pytest.fixture
def sim_slots(pcscd: Pcscd) -> Iterator[Callable[..., SimSlots]]:
    """Start cards in vpcd slots, each seen present by pcscd before this returns:
    `sim_slots([(0, image_path)], factory=FakeCardFactory())` (default: the real card)."""
    started: list[SimSlots] = []

    def start(cards: Iterable[tuple[int, Path]], factory: CardFactory = load_card
              ) -> SimSlots:
        slots = SimSlots(factory)
        started.append(slots)
        for slot, image_path in cards:
            slots.add(slot, image_path)
        return slots

    yield start
    for slots in started:
        slots.close()


@pytest.fixture(params=[database_choice.SQLITE, database_choice.POSTGRESQL])
def datacenter_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on SQLite, then on PostgreSQL (tests/support/database_choice.py)."""
    kind = str(request.param)
    if kind == database_choice.POSTGRESQL:
        database_choice.postgres_server()
    database_choice.use(kind)
    try:
        yield kind
    finally:
        database_choice.use(database_choice.SQLITE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    database_choice.stop_postgres()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked sqlite_only is about the SQLite file itself: its PostgreSQL run is
    deselected (not skipped: there is nothing to run there)."""
    dropped = [item for item in items if item.get_closest_marker("sqlite_only") is not None
               and getattr(item, "callspec", None) is not None
               and item.callspec.params.get("datacenter_db") == database_choice.POSTGRESQL]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in set(dropped)]
