"""One websocket connection to an E-port client (the official one, or eport-gateway), used one
call at a time: the official client matches replies by method name, so a second call in flight
could take the first one's answer. docs/gateway.md, "The protocol", describes the framing.

A call that times out or breaks the connection closes it: a late reply can then never be taken
for the answer to the next call. The next call (or the backend's monitor) connects again.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.remote.blocks import BLOCK_ABOVE_UNITS, block_frames, utf16_length
from eport.common.failure import EportFailure

logger = logging.getLogger(__name__)

PREFIX = "cus-sec_"
GREETING = {"_id": 0, "_method": "open", "_status": "00"}
NEXT_BLOCK = "_nextBlock"
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0
SIGN_TIMEOUT_S = 30.0
# TokenUnavailable.native_code when something answers at the URL but not as the E-port client does
# (an HTTP server, a websocket that does not greet): eport doctor tells that from unreachable.
WRONG_PROTOCOL = 1


class RemoteConfigError(EportFailure, ValueError):
    """The URL cannot be used (bilingual message)."""

    code = "REMOTE_CONFIG"


@dataclass(frozen=True)
class RemoteReply:
    method: str
    ok: bool
    data: list[Any]
    error: list[str]

    @property
    def code(self) -> str:
        """The code of "Err:Custom<code>" in Error[1] (uppercase), "" when there is none."""
        if len(self.error) >= 2 and self.error[1].startswith("Err:Custom"):
            return self.error[1][len("Err:Custom"):].upper()
        return ""

    @property
    def message(self) -> str:
        """Error[0] (the client's Chinese text) and Error[2] when the client adds English."""
        return " / ".join(part for part in self.error[:1] + self.error[2:3] if part)


@dataclass(frozen=True)
class RemoteAddress:
    url: str
    host: str
    port: int
    secure: bool

    @property
    def reader_name(self) -> str:
        return f"remote:{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str, allow_insecure: bool = False) -> RemoteAddress:
    """ws://HOST:PORT or wss://HOST:PORT; plain ws only to loopback unless allow_insecure."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise RemoteConfigError(
            f"远程客户端地址应为 ws://主机:端口 或 wss://主机:端口, 而不是 {url!r}; "
            f"the remote client URL must be ws://HOST:PORT or wss://HOST:PORT, not {url!r}")
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (61231 if secure else 61232)
    except ValueError:
        raise RemoteConfigError(f"端口无效 / invalid port in {url!r}") from None
    if not secure and not _is_loopback(parts.hostname) and not allow_insecure:
        raise RemoteConfigError(
            f"拒绝以明文 ws 连接非本机地址 {parts.hostname}: 口令和签名会在网络上明文传输。请使用 "
            "wss://, 或在确认网络可信时显式允许明文连接 (allow_insecure); "
            f"refusing plain ws to the non-loopback host {parts.hostname}: the PIN and the "
            "signatures would cross the network unencrypted. Use wss://, or allow plain ws "
            "explicitly (allow_insecure) on a network you trust")
    return RemoteAddress(url, parts.hostname, port, secure)


class RemoteChannel:
    """The connection to one remote client; `call` holds a lock for the whole exchange."""

    def __init__(self, address: RemoteAddress, *, ca_file: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._ssl: ssl.SSLContext | None = None
        if address.secure:
            # Certificate and host name checked: the default context, with the given CA.
            self._ssl = ssl.create_default_context(cafile=ca_file)
        self._lock = threading.Lock()
        self._connection: ClientConnection | None = None
        self._ids = itertools.count(1)
        self.connections_made = 0

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # closing a broken socket must not hide why it broke
                logger.debug("closing the remote connection failed", exc_info=True)
            self._connection = None

    def _unreachable(self, why: str) -> TokenUnavailable:
        return TokenUnavailable(
            Unavailable.SERVICE_NOT_RUNNING,
            f"远程电子口岸客户端 {self.address.url} 无法连接 ({why}): 请确认它已启动且网络可达; "
            f"the remote E-port client {self.address.url} cannot be reached ({why}): check "
            "that it is running and reachable")

    def _open(self) -> ClientConnection:
        if self._connection is not None:
            return self._connection
        tls: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        try:
            connection: ClientConnection = connect(
                self.address.url, open_timeout=self.connect_timeout, close_timeout=1,
                ping_interval=None, proxy=None, max_size=64 * 1024 * 1024, legacy=True,
                **tls)
        except InvalidHandshake as exc:  # it answered, but not as a websocket server
            raise TokenUnavailable(
                Unavailable.SERVICE_NOT_RUNNING,
                f"{self.address.url} 的应答不是 websocket (不是电子口岸客户端?); "
                f"{self.address.url} did not answer as a websocket server (another program "
                f"on that port?): {type(exc).__name__}: {exc}", code=WRONG_PROTOCOL) from None
        except (OSError, InvalidURI, TimeoutError) as exc:
            raise self._unreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            first = connection.recv(timeout=self.connect_timeout)
            greeting = json.loads(first) if isinstance(first, str) else None
        except (TimeoutError, ConnectionClosed, ValueError):
            greeting = None
        if greeting != GREETING:
            connection.close()
            raise TokenUnavailable(
                Unavailable.SERVICE_NOT_RUNNING,
                f"{self.address.url} 没有按电子口岸客户端协议问候 (不是电子口岸客户端?); "
                f"{self.address.url} did not greet as the E-port client does (another "
                "program on that port?)", code=WRONG_PROTOCOL)
        self._connection = connection
        self.connections_made += 1
        return connection

    def ensure_connected(self) -> None:
        with self._lock:
            self._open()

    def call(self, method: str, args: dict[str, Any] | None = None, *,
             timeout: float = CALL_TIMEOUT_S) -> RemoteReply:
        """Send `cus-sec_<method>` and wait for its reply; raises TokenUnavailable when the
        client cannot be reached or does not answer in time."""
        name = PREFIX + method
        with self._lock:
            connection = self._open()
            request_id = next(self._ids)
            request: dict[str, Any] = {"_method": name, "_id": request_id}
            if args is not None:
                request["args"] = args
            text = json.dumps(request, ensure_ascii=False)
            deadline = time.monotonic() + timeout
            try:
                try:
                    connection.ping()  # raises at once when the client closed it meanwhile
                except ConnectionClosed:
                    # The client restarted since the last call: nothing of this request was
                    # sent, so connecting again and sending it once is safe.
                    self._drop()
                    connection = self._open()
                if utf16_length(text) > BLOCK_ABOVE_UNITS:
                    self._send_blocks(connection, text, deadline)
                else:
                    connection.send(text)
                return self._await_reply(connection, name, request_id, deadline)
            except TimeoutError:
                self._drop()
                raise TokenUnavailable(
                    Unavailable.CARD_TIMEOUT,
                    f"远程客户端 {timeout:g} 秒内未回复 {method}; the remote client did not "
                    f"answer {method} within {timeout:g} s") from None
            except (ConnectionClosed, OSError) as exc:
                self._drop()
                raise self._unreachable(f"connection lost: {type(exc).__name__}") from None

    def _receive(self, connection: ClientConnection, deadline: float) -> dict[str, Any] | None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        message = connection.recv(timeout=left)
        try:
            value = json.loads(message) if isinstance(message, str) else None
        except ValueError:
            value = None
        return value if isinstance(value, dict) else None

    def _await_reply(self, connection: ClientConnection, name: str, request_id: int,
                     deadline: float) -> RemoteReply:
        while True:
            value = self._receive(connection, deadline)
            if value is None or value.get("_method") != name:
                continue  # not ours (the protocol sends nothing unasked; be lenient)
            reply_id = value.get("_id")
            if reply_id not in (request_id, str(request_id), None):
                continue  # a stale reply of the same method
            return _reply_of(name, value)

    def _send_blocks(self, connection: ClientConnection, text: str, deadline: float) -> None:
        frames, guid = block_frames(text)
        number = 0
        for _ in range(4 * len(frames) + 8):
            connection.send(frames[number])
            while True:
                value = self._receive(connection, deadline)
                if value is not None and value.get("_method") == NEXT_BLOCK \
                        and value.get("_id") == guid:
                    break
            data = (value.get("_args") or {}).get("Data") or [{}]
            answer = data[0] if isinstance(data[0], dict) else {}
            if answer.get("finish") is True:
                if (value.get("_args") or {}).get("Result") is False:
                    raise TokenUnavailable(Unavailable.CARD_ERROR,
                                           "远程客户端拒绝了分块请求; the remote client refused "
                                           "the block transfer")
                return
            number = int(answer.get("next", number + 1))
            if not 0 <= number < len(frames):
                raise TokenUnavailable(Unavailable.CARD_ERROR,
                                       "远程客户端请求了不存在的分块; the remote client asked "
                                       "for a block that does not exist")
        raise TokenUnavailable(Unavailable.CARD_ERROR, "分块传输未完成; the block transfer "
                               "did not finish")


def _reply_of(name: str, value: dict[str, Any]) -> RemoteReply:
    args = value.get("_args")
    if not isinstance(args, dict):
        args = {}
    data = args.get("Data")
    error = args.get("Error")
    return RemoteReply(name, args.get("Result") is True,
                       data if isinstance(data, list) else [],
                       [str(part) for part in error] if isinstance(error, list) else [])
