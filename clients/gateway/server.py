"""The websocket server: one task per request, replies matched by `_id`, Origin checked at the
handshake. The official client answers one call at a time and keys replies by method name;
here any number of connections may each have many requests in flight.

One Gateway serves both listeners: ws on 61232 (plain-http pages and programs) and wss on
61231 (what the page library uses on every https page). Before any request is read from a TCP
connection on either (on wss: right after the TLS handshake), the owner of the peer's socket is
checked (peer_uid.py): only the gateway's own user gets an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from eport.clients.gateway.blocks import DEFAULT_IDLE_TIMEOUT, BlockAssembler, is_block
from eport.clients.gateway.daemon_access import DaemonAccess
from eport.clients.gateway.errors import GatewayError, bad_arguments, internal_error
from eport.clients.gateway.methods import CARD_SECRET_METHODS, METHODS
from eport.clients.gateway.peer_uid import admission, endpoint, is_loopback, peer_owner
from eport.clients.gateway.protocol import (
    GREETING,
    METHOD_PREFIX,
    BadRequest,
    Request,
    error_reply,
    next_block_reply,
    parse_request,
    reply,
)
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

log = logging.getLogger("eport.gateway")

DEFAULT_PORT = 61232
DEFAULT_TLS_PORT = 61231
# https only: a plain-http page can be rewritten by anyone on the network path, so letting it
# in would let the network sign. `--allow-origin` adds others deliberately.
SINGLE_WINDOW_ORIGINS = (
    "https://www.singlewindow.cn", "https://app.singlewindow.cn", "https://swapp.singlewindow.cn")
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_BLOCK_TIMEOUT = DEFAULT_IDLE_TIMEOUT


@dataclass(frozen=True)
class GatewayConfig:
    eportd_socket: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allowed_origins: Sequence[str] = SINGLE_WINDOW_ORIGINS
    allow_missing_origin: bool = True
    reader: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    tls_port: int = DEFAULT_TLS_PORT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # Seconds a block transfer may wait for its next block before it is dropped.
    block_timeout: float = DEFAULT_BLOCK_TIMEOUT
    # A PIN stored for unattended signing is used for gateway requests only with this.
    allow_stored_pin: bool = False
    # The generic signing methods sign a data centre request envelope only with this.
    allow_envelope_signing: bool = False


def origin_allowed(config: GatewayConfig, origin: str | None) -> bool:
    if origin is None:
        return config.allow_missing_origin
    return origin.rstrip("/") in {allowed.rstrip("/") for allowed in config.allowed_origins}


@dataclass
class _Connection:
    socket: ServerConnection
    origin: str | None
    peer: str
    assembler: BlockAssembler
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            async with self.send_lock:
                await self.socket.send(text)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.daemon = DaemonAccess(config.eportd_socket, config.reader,
                                   allow_stored_pin=config.allow_stored_pin,
                                   allow_envelope_signing=config.allow_envelope_signing)
        self.uid = os.geteuid()
        self.open_connections = 0

    # ---- before any request is read: who is the peer ----

    async def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether the peer of a new TCP connection is this gateway's user (see peer_uid)."""
        peer = endpoint(transport.get_extra_info("peername"))
        ours = endpoint(transport.get_extra_info("sockname"))
        if peer is None or ours is None:
            log.warning("closed a connection before the greeting: not a TCP/IP peer (%r)",
                        transport.get_extra_info("peername"))
            return False
        owner = await asyncio.to_thread(peer_owner, peer, ours)
        # Only a listener bound beyond loopback (--allow-non-loopback) accepts peers of other
        # machines, and it can only be reached at a non-loopback address.
        decision = admission(owner, peer, self.uid, remote_peers_allowed=not is_loopback(ours[0]))
        if not decision.allowed:
            log.warning("closed a connection from %s (port %d) to port %d before the greeting: %s",
                        _address(peer), peer[1], ours[1], decision.reason)
        return decision.allowed

    # ---- handshake ----

    def check_origin(self, connection: ServerConnection, request: HttpRequest
                     ) -> HttpResponse | None:
        origin = request.headers.get("Origin")
        if origin_allowed(self.config, origin):
            return None
        log.warning("refused a connection from origin %s (peer %s): not in the allow-list",
                    origin or "(none)", _peer(connection))
        return connection.respond(
            HTTPStatus.FORBIDDEN,
            f"eport-gateway: 来源 {origin or '(无 Origin)'} 不在允许列表中, 已拒绝; 如需允许, "
            "请用 --allow-origin 启动网关。\n"
            f"eport-gateway: origin {origin or '(no Origin)'} is not allowed; start the gateway "
            "with --allow-origin to allow it.\n")

    # ---- a connection ----

    async def handle(self, socket: ServerConnection) -> None:
        if self.open_connections >= self.config.max_connections:
            await self._refuse_over_cap(socket)
            return
        self.open_connections += 1
        try:
            await self._serve_connection(socket)
        finally:
            self.open_connections -= 1

    async def _refuse_over_cap(self, socket: ServerConnection) -> None:
        limit = self.config.max_connections
        log.warning("refused a connection from %s: %d connections are open "
                    "(--max-connections %d)", _peer(socket), self.open_connections, limit)
        # 1013 "try again later"; the reason is at most 123 bytes of UTF-8.
        await socket.close(CloseCode.TRY_AGAIN_LATER,
                           f"连接数已达上限 {limit}, 请稍后重试; too many connections "
                           f"({limit}), retry later")

    async def _serve_connection(self, socket: ServerConnection) -> None:
        request = socket.request
        origin = request.headers.get("Origin") if request is not None else None
        peer = _peer(socket)

        def expired(guid: str) -> None:
            log.info("block transfer %s from %s got no block for %gs: dropped", guid, peer,
                     self.config.block_timeout)

        assembler = BlockAssembler(self.config.max_message_bytes,
                                   idle_timeout=self.config.block_timeout, on_expire=expired)
        connection = _Connection(socket, origin, peer, assembler)
        sweeper = asyncio.create_task(_sweep_block_transfers(assembler))
        await connection.send(GREETING)
        try:
            async for frame in socket:
                await self._frame(connection, frame)
        except ConnectionClosed:
            pass
        finally:
            sweeper.cancel()
            # A caller that has gone cannot use its answers; cancelling tells eportd, which
            # drops queued card work for callers that are no longer there.
            for task in list(connection.tasks):
                task.cancel()

    async def _frame(self, connection: _Connection, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await connection.send(error_reply(None, "", bad_arguments(Bilingual("只接受文本帧 "
                                                                                "(JSON)",
                                                                                "only text "
                                                                                "frames (JSON) "
                                                                                "are accepted"))))
            return
        if _utf8_length(frame) > self.config.max_message_bytes:
            await self._oversized(connection, frame)
            return
        if is_block(frame):
            answer = connection.assembler.receive(frame)
            await connection.send(next_block_reply(answer.guid, answer.next_block,
                                                   answer.finish, answer.ok, answer.error))
            if answer.assembled is None:
                return
            frame = answer.assembled
            # Block headers count UTF-16 units; the limit is in UTF-8 bytes, like a frame's.
            if _utf8_length(frame) > self.config.max_message_bytes:
                await self._oversized(connection, frame)
                return
        try:
            request = parse_request(frame)
        except BadRequest as bad:
            await connection.send(error_reply(bad.request_id, bad.method, bad.error))
            return
        if len(connection.tasks) >= self.config.max_in_flight:
            await connection.send(error_reply(request.request_id, request.method, bad_arguments(
                Bilingual(f"同时进行的请求超过 {self.config.max_in_flight} 个, 请等待应答后再发",
                          f"more than {self.config.max_in_flight} requests in flight on this "
                          "connection; wait for replies"))))
            return
        task = asyncio.create_task(self._answer(connection, request))
        connection.tasks.add(task)
        task.add_done_callback(connection.tasks.discard)

    async def _oversized(self, connection: _Connection, frame: str) -> None:
        # Read what can be read of the envelope so the error still carries the caller's _id.
        try:
            request = parse_request(frame)
            request_id, method = request.request_id, request.method
        except BadRequest as unreadable:
            request_id, method = unreadable.request_id, unreadable.method
        limit, size = self.config.max_message_bytes, _utf8_length(frame)
        await connection.send(error_reply(request_id, method, bad_arguments(Bilingual(
            f"报文 {size} 字节, 超过上限 {limit} 字节; 请先计算摘要再签名 (NoHash 方法), 或用 "
            "--max-message-bytes 提高上限",
            f"the request is {size} bytes, above the limit of {limit}; sign its digest (the "
            "NoHash methods) or raise --max-message-bytes"))))

    async def _answer(self, connection: _Connection, request: Request) -> None:
        name = request.method.removeprefix(METHOD_PREFIX)
        handler = METHODS.get(name) if request.method.startswith(METHOD_PREFIX) else None
        audited = name in CARD_SECRET_METHODS
        try:
            if handler is None:
                raise bad_arguments(Bilingual(f"不支持的方法 {request.method}",
                                              f"unknown method {request.method}"))
            data = await handler(request.args, self.daemon)
            text = reply(request.request_id, request.method, data)
            outcome = "ok"
        except GatewayError as error:
            text = error_reply(request.request_id, request.method, error)
            outcome = f"Err:Custom{error.code}"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s _id=%r failed unexpectedly", request.method, request.request_id)
            text = error_reply(request.request_id, request.method, internal_error())
            outcome = "internal error"
        if audited:
            log.info("card request %s _id=%r origin=%s peer=%s: %s", request.method,
                     request.request_id, connection.origin or "(none)", connection.peer,
                     outcome)
        await connection.send(text)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


async def _sweep_block_transfers(assembler: BlockAssembler) -> None:
    """Drop the connection's stalled block transfers when they time out, freeing what they
    hold even if no block ever comes again."""
    while True:
        wait = assembler.seconds_to_next_expiry()
        # A transfer that starts while this sleeps expires after it wakes: idle_timeout at most.
        await asyncio.sleep(assembler.idle_timeout if wait is None else wait + 0.01)
        assembler.expire()


def _address(end: tuple[object, int]) -> str:
    return f"[{end[0]}]" if ":" in str(end[0]) else str(end[0])


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _peer_checked_connection(gateway: Gateway) -> type[ServerConnection]:
    class PeerCheckedConnection(ServerConnection):
        """Reads nothing from the peer until the gateway knows who owns the peer's socket: a
        refused peer gets no HTTP answer and no greeting. (On wss the TLS handshake has been
        done by then; it carries nothing of ours.)"""

        admission_task: asyncio.Task[None] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            assert isinstance(transport, asyncio.Transport)
            transport.pause_reading()
            self.admission_task = self.loop.create_task(self._admit(transport))

        async def _admit(self, transport: asyncio.Transport) -> None:
            try:
                admitted = await gateway.admit(transport)
            except Exception:  # a check that fails must not let the peer in
                log.exception("the peer check failed; connection closed")
                admitted = False
            if not admitted:
                transport.abort()
            elif not transport.is_closing():
                transport.resume_reading()

    return PeerCheckedConnection


class CannotListen(EportFailure):
    """A listener could not be opened: which one, and the system's reason."""

    code = "CANNOT_LISTEN"

    def __init__(self, scheme: str, host: str, port: int, error: OSError) -> None:
        # asyncio's text repeats the address; the system's own words are enough.
        self.reason = os.strerror(error.errno) if error.errno else str(error)
        super().__init__(f"{scheme} on {host}:{port}: {self.reason}")
        self.scheme, self.host, self.port = scheme, host, port


@dataclass(frozen=True)
class Listening:
    """The gateway's URLs, with the real ports when port 0 was asked."""

    ws_url: str
    wss_url: str | None = None


@contextlib.asynccontextmanager
async def _listener(gateway: Gateway, port: int, tls: ssl.SSLContext | None
                    ) -> AsyncIterator[str]:
    config = gateway.config
    scheme = "ws" if tls is None else "wss"
    try:
        # Frames above twice the limit are not read at all (the connection closes with 1009);
        # between the limit and twice it, the caller gets an error reply and may go on.
        server: Server = await serve(
            gateway.handle, config.host, port, process_request=gateway.check_origin,
            max_size=2 * config.max_message_bytes,
            create_connection=_peer_checked_connection(gateway), ssl=tls)
    except OSError as error:
        raise CannotListen(scheme, config.host, port, error) from error
    async with server:
        bound = next(iter(server.sockets)).getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        yield f"{scheme}://{host}:{bound}"


@contextlib.asynccontextmanager
async def run_gateway(config: GatewayConfig, tls: ssl.SSLContext | None = None
                      ) -> AsyncIterator[Listening]:
    """The listening gateway: ws on config.port, and wss on config.tls_port when given a TLS
    context; one Gateway (checks, limits, eportd channel) behind both."""
    gateway = Gateway(config)
    try:
        async with contextlib.AsyncExitStack() as listeners:
            wss_url = None
            if tls is not None:
                wss_url = await listeners.enter_async_context(
                    _listener(gateway, config.tls_port, tls))
            ws_url = await listeners.enter_async_context(_listener(gateway, config.port, None))
            yield Listening(ws_url, wss_url)
    finally:
        await gateway.daemon.close()
