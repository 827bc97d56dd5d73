"""A card backend in this process: PivTokens over the simulator's card OS, no pcscd.

Readers hold CardOS objects; the test inserts, removes and swaps cards, and the backend's
monitor reports that as pcscd would. Like PC/SC with SCARD_LEAVE_CARD, closing a connection
leaves the card powered, so a verified PIN stays verified until a logout, a removal or a reset.
Every APDU that reaches a card is recorded with the card (`sent`), so a test can assert what a
card never received. `hold()` makes the next transactions wait, to line jobs up in a queue.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.pcsc.backend import PivToken
from eport.cardlib.token import PresenceListener, ReaderPresence, Token
from eport.common.piv import Ins
from eport.firmware_sim.card_os import CardOS


@dataclass
class _Reader:
    card: CardOS | None = None
    events: int = 0


@dataclass
class CardLog:
    """The APDUs one card received, as (INS, P2, has data)."""

    commands: list[tuple[int, int, bool]] = field(default_factory=list)

    def pin_verifications(self) -> int:
        """VERIFY with a PIN in it (a status query carries none)."""
        return sum(1 for ins, _p2, data in self.commands if ins == Ins.VERIFY and data)

    def count(self, ins: int) -> int:
        return sum(1 for i, _p2, _data in self.commands if i == ins)


class _CardLink:
    """One connection to the card that was in the reader when it was made."""

    def __init__(self, backend: InProcessBackend, reader: str, card: CardOS) -> None:
        self._backend = backend
        self._reader = reader
        self._card = card
        self._generation = backend.generation

    def send_and_receive(self, apdu: bytes) -> tuple[bytes, int]:
        if self._backend.generation != self._generation:
            # As after a pcscd restart or a PKCS#11 module reinitialised: the handle is dead
            # and the command does not reach the card.
            raise TokenUnavailable(Unavailable.INVALID_HANDLE, "the backend restarted")
        if self._backend.card_in(self._reader) is not self._card:
            raise TokenUnavailable(Unavailable.CARD_REMOVED, "the card was removed")
        self._backend.log_of(self._card).commands.append((apdu[1], apdu[3], len(apdu) > 5))
        response = self._card.execute(apdu)
        return response[:-2], int.from_bytes(response[-2:], "big")


class _Connection:
    def __init__(self, backend: InProcessBackend, token: PivToken) -> None:
        self._backend = backend
        self.token: Token = token

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._backend.wait_while_held()
        yield

    def close(self) -> None:
        pass  # the card stays powered, as with SCARD_LEAVE_CARD


class _Monitor:
    def __init__(self, backend: InProcessBackend, listener: PresenceListener) -> None:
        self._backend = backend
        self._listener = listener

    def start(self) -> None:
        self._backend.attach(self._listener)

    def stop(self, timeout: float = 5.0) -> None:
        self._backend.detach()


class InProcessBackend:
    def __init__(self, readers: tuple[str, ...] = ("Sim Reader 0",), name: str = "inproc"
                 ) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._readers = {reader: _Reader() for reader in readers}
        self._logs: dict[int, CardLog] = {}
        self._listener: PresenceListener | None = None
        self._released = threading.Event()
        self._released.set()
        self.waiting = 0  # transactions waiting in hold()
        self.generation = 0  # bumped by restart(): connections made before are dead

    # ---- controls for the test ----

    def insert(self, reader: str, card: CardOS) -> None:
        with self._lock:
            slot = self._readers[reader]
            card.power_on()
            slot.card, slot.events = card, slot.events + 1
            presence = self._presence(reader)
            listener = self._listener
        if listener is not None:
            listener.presence_changed(presence, reinserted=False)

    def remove(self, reader: str) -> None:
        with self._lock:
            slot = self._readers[reader]
            if slot.card is not None:
                slot.card.power_off()
            slot.card, slot.events = None, slot.events + 1
            presence = self._presence(reader)
            listener = self._listener
        if listener is not None:
            listener.presence_changed(presence, reinserted=False)

    def swap(self, reader: str, card: CardOS) -> None:
        """Another card in the reader between two of the monitor's looks (removed and inserted
        too quickly to be seen apart)."""
        with self._lock:
            slot = self._readers[reader]
            if slot.card is not None:
                slot.card.power_off()
            card.power_on()
            slot.card, slot.events = card, slot.events + 2
            presence = self._presence(reader)
            listener = self._listener
        if listener is not None:
            listener.presence_changed(presence, reinserted=True)

    def restart(self) -> None:
        """The backend restarts under every open connection (pcscd restarted, a PKCS#11 module
        reinitialised): their handles die and the cards are reset, so nothing stays verified.
        The cards stay in their readers."""
        with self._lock:
            self.generation += 1
            for slot in self._readers.values():
                if slot.card is not None:
                    slot.card.reset()

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def log_of(self, card: CardOS) -> CardLog:
        return self._logs.setdefault(id(card), CardLog())

    def card_in(self, reader: str) -> CardOS | None:
        with self._lock:
            return self._readers[reader].card

    # ---- Backend ----

    def owns(self, reader: str) -> bool:
        return reader in self._readers

    def monitor(self, listener: PresenceListener) -> _Monitor:
        return _Monitor(self, listener)

    def connect(self, reader: str) -> _Connection:
        card = self.card_in(reader)
        if card is None:
            raise TokenUnavailable(Unavailable.NO_CARD, f"no card in {reader!r}")
        token = PivToken(_CardLink(self, reader, card), card.atr)
        token.select()
        return _Connection(self, token)

    def card_gone(self, reader: str, timeout: float) -> bool:
        return self.card_in(reader) is None

    # ---- the monitor ----

    def attach(self, listener: PresenceListener) -> None:
        with self._lock:
            self._listener = listener
            presences = [self._presence(reader) for reader in self._readers]
        listener.service_up()
        for presence in presences:
            listener.reader_added(presence)
        listener.scan_complete()

    def detach(self) -> None:
        with self._lock:
            self._listener = None

    def wait_while_held(self) -> None:
        with self._lock:
            self.waiting += 1
        try:
            self._released.wait(30)
        finally:
            with self._lock:
                self.waiting -= 1

    def _presence(self, reader: str) -> ReaderPresence:
        slot = self._readers[reader]
        present = slot.card is not None
        return ReaderPresence(reader, present, slot.card.atr if slot.card is not None else b"",
                              False, slot.events)
