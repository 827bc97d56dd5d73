"""The daemon core (CardServiceApp) against an in-process backend: no pcscd, no socket.

Sessions, the last-try guard, card swaps, queue deadlines, the idle timeout and the logout at
shutdown, each checked on the simulated card itself (its counters, its verified state, the
APDUs it received).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from eport.cardlib.token import CredentialStatus
from eport.common.piv import KeyRef
from eport.daemon.config import DaemonSettings
from eport.daemon.service import pin_policy
from eport.daemon.service.app import CardSelector, CardServiceApp
from eport.daemon.service.backends import BackendRegistry
from eport.daemon.service.card_state import CardSnapshot
from eport.daemon.service.card_worker import CallerGone
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.signing import (
    SignAlgorithm,
    Signature,
    SignInput,
    digest_of,
    verify_signature,
)
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.card_os import CardOS, load_card
from tests.support.cards import provision_test_card, write_card
from tests.support.in_process_backend import InProcessBackend
from tests.support.in_process_card import session as piv_session
from tests.support.waiting import wait_until

READER = "Sim Reader 0"
PIN = "88888888"
WRONG = "12345678"
AppFactory = Callable[..., CardServiceApp]


@pytest.fixture
def card_factory(test_ca: TestCA, tmp_path: Path) -> Iterator[Callable[..., CardOS]]:
    opened: list[CardOS] = []

    def make(algorithm: str = "p256", **overrides: Any) -> CardOS:
        image = provision_test_card(test_ca, algorithm, envelope_key=False, **overrides)
        card = load_card(write_card(image, tmp_path, f"card-{len(opened)}.json"))
        opened.append(card)
        return card

    yield make
    for card in opened:
        card.close()


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend((READER,))


@pytest.fixture
def make_app(backend: InProcessBackend, tmp_path: Path) -> Iterator[AppFactory]:
    apps: list[CardServiceApp] = []

    def make(**settings: object) -> CardServiceApp:
        app = CardServiceApp(DaemonSettings(socket_path=tmp_path / "s", **settings),  # type: ignore[arg-type]
                             BackendRegistry([backend]))
        app.start()
        apps.append(app)
        return app

    yield make
    backend.release()
    for app in apps:
        app.shutdown(2.0)


def ready(app: CardServiceApp, card_id: str = "") -> None:
    def seen() -> bool:
        views = [v for v in app.readers() if v.name == READER]
        return bool(views) and views[0].card is not None and (
            not card_id or views[0].card.card_id == card_id)
    wait_until(seen, timeout=10, interval=0.005,
               what="the card read")


def card_pin(card: CardOS) -> tuple[bool, int]:
    status = piv_session(card).reference_status(KeyRef.PIN)
    return status.verified, status.tries_left


def sign(app: CardServiceApp, **kwargs: Any) -> tuple[Signature, CardSnapshot]:
    return app.sign(CardSelector(READER), SignInput(data=b"declaration"),
                    SignAlgorithm.ECDSA_P256_SHA256, **kwargs)


def test_a_verified_pin_opens_a_session_that_signs_until_logout(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    state = app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    assert state.session is not None and state.pin.verified
    verifications = backend.log_of(card).pin_verifications()
    for _ in range(3):  # the session is reused: no PIN again
        signature, snapshot = sign(app)
        assert verify_signature(SignAlgorithm.ECDSA_P256_SHA256, snapshot.certificate,
                                _digest(snapshot), signature.der_or_pkcs1)
    assert backend.log_of(card).pin_verifications() == verifications
    assert app.logout(CardSelector(READER)) is True
    assert card.pin_verified is False
    with pytest.raises(EportError) as refused:
        sign(app)
    assert refused.value.reason is Reason.NOT_AUTHENTICATED


def _digest(snapshot: CardSnapshot) -> bytes:
    return digest_of(SignAlgorithm.ECDSA_P256_SHA256, snapshot.certificate,
                     SignInput(data=b"declaration"))


def test_the_last_try_is_not_spent_without_allow_last_attempt(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory(pin_tries_left=1)
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    for call in (lambda: app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False),
                 lambda: sign(app, pin=PIN)):
        with pytest.raises(EportError) as refused:
            call()
        assert refused.value.reason is Reason.PIN_LAST_ATTEMPT_GUARD
    assert backend.log_of(card).pin_verifications() == 0
    assert card_pin(card) == (False, 1)
    state = app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=True)
    assert state.session is not None


@pytest.mark.parametrize("status", [CredentialStatus(False, 1, False),
                                    CredentialStatus(False, -1, False, final_try=True)])
def test_the_guard_holds_on_the_final_try_whether_or_not_the_token_counts(
        status: CredentialStatus) -> None:
    with pytest.raises(EportError) as refused:
        pin_policy.guard(status, allow_last_attempt=False)
    assert refused.value.reason is Reason.PIN_LAST_ATTEMPT_GUARD
    pin_policy.guard(status, allow_last_attempt=True)
    pin_policy.guard(CredentialStatus(False, -1, False), allow_last_attempt=False)


def test_a_card_swapped_while_a_pin_waits_in_the_queue_never_gets_the_pin(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    first, second = card_factory(), card_factory()
    backend.insert(READER, first)
    app = make_app()
    ready(app)
    first_id = app.readers()[0].card.card_id  # type: ignore[union-attr]
    worker = app._slots[READER].worker
    backend.hold()
    blocker = _in_thread(lambda: app.pin_status(CardSelector(READER)))
    wait_until(lambda: backend.waiting == 1, timeout=10, interval=0.005,
               what="the first job on the card")
    verify = _in_thread(lambda: app.verify_pin(CardSelector(READER), PIN,
                                               allow_last_attempt=False))
    wait_until(lambda: worker.pending() == 1, timeout=10, interval=0.005,
               what="the verification queued")
    backend.swap(READER, second)
    backend.release()
    with pytest.raises(EportError) as refused:
        verify.result(10)
    assert refused.value.reason is Reason.CARD_REMOVED
    with pytest.raises(EportError):
        blocker.result(10)  # it was on the first card's connection
    assert backend.log_of(second).pin_verifications() == 0
    assert backend.log_of(first).pin_verifications() == 0
    ready(app)
    assert app.readers()[0].card.card_id != first_id  # type: ignore[union-attr]
    assert card_pin(second) == (False, 3)


def test_a_caller_gone_before_its_turn_sends_nothing_to_the_card(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    worker = app._slots[READER].worker
    backend.hold()
    blocker = _in_thread(lambda: app.pin_status(CardSelector(READER)))
    wait_until(lambda: backend.waiting == 1, timeout=10, interval=0.005,
               what="the first job on the card")
    gone = threading.Event()
    verify = _in_thread(lambda: app.verify_pin(CardSelector(READER), PIN,
                                               allow_last_attempt=False,
                                               caller_active=lambda: not gone.is_set()))
    wait_until(lambda: worker.pending() == 1, timeout=10, interval=0.005,
               what="the verification queued")
    gone.set()  # its deadline passed
    sent_before = len(backend.log_of(card).commands)
    backend.release()
    blocker.result(10)
    with pytest.raises(CallerGone):
        verify.result(10)
    after = backend.log_of(card).commands[sent_before:]
    assert all(ins != 0x20 or not data for ins, _p2, data in after)  # no PIN went
    assert card_pin(card) == (False, 3)


def test_an_idle_session_expires_and_logs_the_card_out(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app(session_idle_timeout_s=0.3)
    ready(app)
    app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    assert card.pin_verified
    wait_until(lambda: not card.pin_verified, timeout=10, interval=0.005,
               what="the idle logout on the card")
    with pytest.raises(EportError) as refused:
        sign(app)
    assert refused.value.reason is Reason.SESSION_EXPIRED


def test_stopping_the_daemon_logs_out_the_card_of_an_open_session(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    assert card.pin_verified  # leaving the connection does not log out by itself
    app.shutdown(5.0)
    assert not card.pin_verified
    fresh = make_app()
    ready(fresh)
    state = fresh.pin_status(CardSelector(READER))
    assert state.session is None and not state.pin.verified


def _in_thread(call: Callable[[], object]) -> Future[object]:
    future: Future[object] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def test_in_system_mode_a_session_serves_only_the_uid_that_opened_it(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app(mode="system")
    ready(app)
    with app.caller(1000):
        app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
        sign(app)
    with app.caller(1001), pytest.raises(EportError) as refused:
        sign(app)
    assert refused.value.reason is Reason.NOT_AUTHENTICATED
    assert "belongs to another user" in str(refused.value)
    with app.caller(1001):  # its own PIN: the session is now 1001's
        sign(app, pin=PIN)
        sign(app)
    with app.caller(1000), pytest.raises(EportError) as ended:
        sign(app)
    assert ended.value.reason is Reason.NOT_AUTHENTICATED


def test_in_user_mode_the_session_is_the_one_users(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    with app.caller(1000):
        app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    with app.caller(0):  # root may call a user's eportd, and uses its session
        sign(app)


def test_the_backend_restarting_under_a_session_ends_it_and_the_next_call_works(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    sign(app)
    backend.restart()  # pcscd restarted, or the PKCS#11 module reinitialised
    # The next call meets a dead handle, reconnects and runs once more: not a card error,
    # but the card's verified state went with the restart, and the session with it.
    assert app.pin_status(CardSelector(READER)).pin.verified is False
    with pytest.raises(EportError) as refused:
        sign(app)
    assert refused.value.reason is Reason.NOT_AUTHENTICATED
    backend.restart()
    verifications = backend.log_of(card).pin_verifications()
    signature, snapshot = sign(app, pin=PIN)  # a PIN with the call: sent once, on the new handle
    assert backend.log_of(card).pin_verifications() == verifications + 1
    assert verify_signature(SignAlgorithm.ECDSA_P256_SHA256, snapshot.certificate,
                            _digest(snapshot), signature.der_or_pkcs1)


def test_a_call_on_a_free_card_runs_in_the_callers_thread_and_waiting_calls_keep_their_order(
        backend: InProcessBackend, make_app: AppFactory, card_factory: Callable[..., CardOS]
) -> None:
    card = card_factory()
    backend.insert(READER, card)
    app = make_app()
    ready(app)
    worker = app._slots[READER].worker
    # Nothing queued, nothing on the card: the job runs here, with no hand-off.
    assert worker.call(lambda access: threading.current_thread()) is threading.current_thread()
    order: list[str] = []

    def job(name: str) -> Callable[[object], str]:
        def run(access: object) -> str:
            order.append(name)
            return name
        return run

    backend.hold()
    first = _in_thread(lambda: worker.call(job("first")))
    wait_until(lambda: backend.waiting == 1, timeout=10, interval=0.005,
               what="the first job on the card")
    second = _in_thread(lambda: worker.call(job("second")))
    wait_until(lambda: worker.pending() == 1, timeout=10, interval=0.005,
               what="the second job waiting")
    third = _in_thread(lambda: worker.call(job("third")))
    wait_until(lambda: worker.pending() == 2, timeout=10, interval=0.005,
               what="the third job waiting")
    backend.release()
    assert [f.result(10) for f in (first, second, third)] == ["first", "second", "third"]
    assert order == ["first", "second", "third"]
    assert worker.pending() == 0
    # The card is free again: a signature runs in the caller's thread and verifies.
    app.verify_pin(CardSelector(READER), PIN, allow_last_attempt=False)
    signature, snapshot = sign(app)
    assert verify_signature(SignAlgorithm.ECDSA_P256_SHA256, snapshot.certificate,
                            _digest(snapshot), signature.der_or_pkcs1)
