"""The websocket server: one task per request, replies matched by `_id`, Origin checked at the
handshake. The official client answers one call at a time and keys replies by method name;
here any number of connections may each have many requests in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse

from eport.clients.gateway.blocks import BlockAssembler, is_block
from eport.clients.gateway.daemon_access import DaemonAccess
from eport.clients.gateway.errors import GatewayError, bad_arguments, internal_error
from eport.clients.gateway.methods import CARD_SECRET_METHODS, METHODS
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

log = logging.getLogger("eport.gateway")

DEFAULT_PORT = 61232
SINGLE_WINDOW_ORIGINS = (
    "https://www.singlewindow.cn", "https://app.singlewindow.cn", "https://swapp.singlewindow.cn",
    "http://www.singlewindow.cn", "http://app.singlewindow.cn", "http://swapp.singlewindow.cn")
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 64


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
        self.daemon = DaemonAccess(config.eportd_socket, config.reader)

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
        request = socket.request
        origin = request.headers.get("Origin") if request is not None else None
        connection = _Connection(socket, origin, _peer(socket),
                                 BlockAssembler(self.config.max_message_bytes))
        await connection.send(GREETING)
        try:
            async for frame in socket:
                await self._frame(connection, frame)
        except ConnectionClosed:
            pass
        finally:
            # A caller that has gone cannot use its answers; cancelling tells eportd, which
            # drops queued card work for callers that are no longer there.
            for task in list(connection.tasks):
                task.cancel()

    async def _frame(self, connection: _Connection, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await connection.send(error_reply(None, "", bad_arguments(
                "只接受文本帧 (JSON)", "only text frames (JSON) are accepted")))
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
                f"同时进行的请求超过 {self.config.max_in_flight} 个, 请等待应答后再发",
                f"more than {self.config.max_in_flight} requests in flight on this "
                "connection; wait for replies")))
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
        await connection.send(error_reply(request_id, method, bad_arguments(
            f"报文 {size} 字节, 超过上限 {limit} 字节; 请先计算摘要再签名 (NoHash 方法), 或用 "
            "--max-message-bytes 提高上限",
            f"the request is {size} bytes, above the limit of {limit}; sign its digest (the "
            "NoHash methods) or raise --max-message-bytes")))

    async def _answer(self, connection: _Connection, request: Request) -> None:
        name = request.method.removeprefix(METHOD_PREFIX)
        handler = METHODS.get(name) if request.method.startswith(METHOD_PREFIX) else None
        audited = name in CARD_SECRET_METHODS
        try:
            if handler is None:
                raise bad_arguments(f"不支持的方法 {request.method}",
                                    f"unknown method {request.method}")
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


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


@contextlib.asynccontextmanager
async def run_gateway(config: GatewayConfig) -> AsyncIterator[tuple[Server, str]]:
    """The listening gateway and its ws:// URL (with the real port when port 0 was asked)."""
    gateway = Gateway(config)
    # Frames above twice the limit are not read at all (the connection closes with 1009);
    # between the limit and twice it, the caller gets an error reply and may go on.
    async with serve(gateway.handle, config.host, config.port,
                     process_request=gateway.check_origin,
                     max_size=2 * config.max_message_bytes) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        try:
            yield server, f"ws://{host}:{port}"
        finally:
            await gateway.daemon.close()
