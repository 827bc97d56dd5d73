"""The remote E-port client backend: the official client's websocket API at a configured URL
(on Windows, ws://HOST:61232 or wss://HOST:61231; in tests eport-gateway stands in for it).

One reader per remote client, `remote:<host>:<port>`. Presence comes from polling
SpcGetCardID every `poll_interval` seconds: a new card id is a reinsertion, an error 51590 (or
an empty id) is no card. A swap is never detected by PIN. A card pulled and put back between
two polls is not seen (the card id is the same; the client's PIN session has ended, which the
next signature's 0A00002D shows). The monitor reconnects with exponential backoff up to 5 s.
"""

from __future__ import annotations

import logging
import threading
import time

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.remote.channel import RemoteChannel, RemoteReply, parse_url
from eport.cardlib.remote.errors import CARD_INVALID, raise_for
from eport.cardlib.remote.token import RemoteConnection, RemoteToken
from eport.cardlib.token import PresenceListener, ReaderPresence

logger = logging.getLogger(__name__)

BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
POLL_INTERVAL_S = 1.0


class RemoteClientBackend:
    name = "remote"

    def __init__(self, url: str, allow_insecure: bool = False, *, ca_file: str | None = None,
                 poll_interval: float = POLL_INTERVAL_S) -> None:
        self.address = parse_url(url, allow_insecure)  # RemoteConfigError: bilingual
        self.reader_name = self.address.reader_name
        self.channel = RemoteChannel(self.address, ca_file=ca_file)
        self.poll_interval = poll_interval
        self.last_error = ""  # why the client is unreachable, "" when it answers
        self.last_code = 0  # TokenUnavailable.native_code of last_error (channel.WRONG_PROTOCOL)

    def owns(self, reader: str) -> bool:
        return reader == self.reader_name

    def monitor(self, listener: PresenceListener) -> RemoteMonitor:
        return RemoteMonitor(self, listener)

    def card_id(self) -> str:
        """The card id the client reports now, "" when it has no card; TokenUnavailable when
        it cannot be reached."""
        reply: RemoteReply = self.channel.call("SpcGetCardID")
        if not reply.ok and reply.code in CARD_INVALID:
            return ""
        raise_for(reply, "SpcGetCardID")
        value = reply.data[0] if reply.data else ""
        return value if isinstance(value, str) else ""

    def connect(self, reader: str) -> RemoteConnection:
        if not self.owns(reader):
            raise TokenUnavailable(Unavailable.NO_READER, f"{reader!r} is not {self.reader_name}")
        card_id = self.card_id()
        if not card_id:
            raise TokenUnavailable(Unavailable.NO_CARD,
                                   f"远程客户端没有卡片; the remote client has no card "
                                   f"({self.reader_name})")
        return RemoteConnection(RemoteToken(self.channel, card_id))

    def card_gone(self, reader: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self.card_id():
                    return True
            except TokenUnavailable:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self.channel.close()


class RemoteMonitor:
    def __init__(self, backend: RemoteClientBackend, listener: PresenceListener) -> None:
        self._backend = backend
        self._listener = listener
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"remote-monitor {backend.reader_name}")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _presence(self, card_id: str, events: int) -> ReaderPresence:
        return ReaderPresence(self._backend.reader_name, bool(card_id),
                              card_id.encode("utf-8"), False, events)

    def _run(self) -> None:
        backend, listener = self._backend, self._listener
        backoff = BACKOFF_START_S
        up: bool | None = None
        added = False
        card_id = ""
        events = 0
        while not self._stop.is_set():
            try:
                now = backend.card_id()
            except TokenUnavailable as exc:
                if exc.reason == Unavailable.SERVICE_NOT_RUNNING:
                    if up is not False or str(exc) != backend.last_error:
                        logger.warning("%s", exc)
                        backend.last_error = str(exc)
                        backend.last_code = exc.native_code
                        listener.service_down(str(exc), exc.native_code)
                    # Readers are gone with the service (as pcscd's are): announced again.
                    up, card_id, added = False, "", False
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                # The client answered but could not read its reader: no card for us.
                logger.info("remote client: %s", exc)
                now = ""
            backoff = BACKOFF_START_S
            if up is not True:
                backend.last_error, backend.last_code = "", 0
                listener.service_up()
                up = True
                if not added:
                    if now:
                        events += 1
                    listener.reader_added(self._presence(now, events))
                    added = True
                    card_id = now
                    listener.scan_complete()
            if now != card_id:
                reinserted = bool(now) and bool(card_id)
                if now:
                    events += 1
                card_id = now
                listener.presence_changed(self._presence(now, events), reinserted=reinserted)
            self._stop.wait(backend.poll_interval)
        if added:
            listener.reader_removed(backend.reader_name)
