"""Who signs for a recipe: a `CardSigner`, usually a `GatewaySigner` that asks the E-port
client's websocket API (our eport-gateway, or the official client on Windows) to sign on the
card. Tests use a software signer with the same interface.

GatewaySigner uses only what every E-port client has: the greeting, SpcGetSignCertAsPEM,
SpcGetCertNo and SpcSignDataAsPEM. The PIN, when given, travels in each signing request's
`passwd` (the client verifies it and signs as one step); without it the client's open PIN
session is used. The PIN is never put into an exception, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from types import TracebackType
from typing import Any, Literal, Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from eport.clients.gateway.recipes.certificates import KeyType, certificate_key
from eport.clients.gateway.recipes.errors import GatewayReplyError, RecipeError
from eport.common.text import Bilingual

__all__ = ["DEFAULT_URL", "CardSigner", "GatewayReplyError", "GatewaySigner"]

DEFAULT_URL = "ws://127.0.0.1:61232"
# Replies are small (a certificate, a signature); requests carry what is signed, which the
# recipes keep small (a SignedInfo, a 179 string). The gateway's own limit is 8 MiB.
_MAX_FRAME = 16 * 1024 * 1024


class CardSigner(Protocol):
    def certificate_der(self) -> bytes:
        """The card's signing certificate (DER)."""
        ...

    def certificate_number(self) -> str:
        """The E-port certificate number (证书编号), as SpcGetCertNo gives it."""
        ...

    def key_type(self) -> Literal["rsa", "sm2"]:
        """From the certificate: "rsa" (SHA1withRSA) or "sm2" (SM2 with SM3)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The card's signature over `data` (UTF-8 text), as the E-port client returns it
        decoded from base64: PKCS#1 v1.5 SHA1withRSA bytes, or SM2 r || s (64 bytes)."""
        ...


class GatewaySigner:
    """A synchronous client of the E-port client's websocket API; one connection, opened on
    first use. Use it as a context manager (or call close())."""

    def __init__(self, url: str = DEFAULT_URL, pin: str | None = None,
                 origin: str | None = None, timeout: float = 30) -> None:
        self.url = url
        self.origin = origin
        self.timeout = timeout
        self._pin = pin or None
        self._connection: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._certificate: bytes | None = None
        self._certificate_number: str | None = None

    def __repr__(self) -> str:  # the default repr would show the PIN
        return f"GatewaySigner(url={self.url!r}, origin={self.origin!r})"

    def __enter__(self) -> GatewaySigner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---- CardSigner ----

    def certificate_der(self) -> bytes:
        if self._certificate is None:
            text = self._first_text(self.call("cus-sec_SpcGetSignCertAsPEM"))
            der = _decode_base64(_strip_pem(text), "SpcGetSignCertAsPEM")
            try:
                certificate_key(der)
            except RecipeError as exc:
                raise GatewayReplyError(
                    "protocol",
                    Bilingual(f"网关返回的证书无效: {exc.message.zh}",
                              f"the gateway's certificate is unusable: {exc.message.en}")) from None
            self._certificate = der
        return self._certificate

    def certificate_number(self) -> str:
        if self._certificate_number is None:
            self._certificate_number = self._first_text(self.call("cus-sec_SpcGetCertNo"))
        return self._certificate_number

    def key_type(self) -> KeyType:
        return certificate_key(self.certificate_der()).key_type

    def sign(self, data: bytes) -> bytes:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RecipeError(
                Bilingual("待签名数据不是 UTF-8 文本", "the data to sign is not UTF-8 text"),
                Bilingual("E-port 客户端只签名文本", "the E-port client signs text only")) from None
        args: dict[str, str] = {"inData": text}
        if self._pin is not None:
            args["passwd"] = self._pin
        data_list = self.call("cus-sec_SpcSignDataAsPEM", args)
        signature = _decode_base64(self._first_text(data_list), "SpcSignDataAsPEM")
        # The reply names the certificate it signed with. If it is not the one fetched before,
        # the card was swapped in between, and the signature would not match the certificate
        # the recipe embeds: refuse rather than produce a document that fails verification.
        if len(data_list) > 1 and isinstance(data_list[1], str) and data_list[1]:
            expected = self.certificate_number()
            if data_list[1] != expected:
                raise GatewayReplyError(
                    "card-changed",
                    Bilingual(f"签名所用证书 ({data_list[1]}) 不是先前读取的证书 ({expected}): "
                              "卡片可能已更换, 请重新执行",
                              f"the signature was made with certificate {data_list[1]}, not "
                              f"{expected} read before: the card was probably swapped; run the "
                              "command again"))
        return signature

    # ---- the protocol ----

    def call(self, method: str, args: dict[str, str] | None = None) -> list[Any]:
        """Send one request and return its reply's Data; GatewayReplyError for an error reply."""
        connection = self._connect()
        request_id = next(self._ids)
        request: dict[str, Any] = {"_method": method, "_id": request_id}
        if args is not None:
            request["args"] = args
        try:
            connection.send(json.dumps(request, ensure_ascii=False))
            while True:
                reply = self._receive(connection)
                # Other frames (another request's reply, a stray notice) are not ours to read.
                if reply.get("_id") == request_id:
                    return self._data_of(reply)
        except TimeoutError:
            self.close()
            raise GatewayReplyError(
                "timeout",
                Bilingual(f"网关 {self.timeout} 秒内未应答 ({method})",
                          f"no answer from the gateway within {self.timeout} s "
                          f"({method})")) from None
        except ConnectionClosed as exc:
            self._connection = None
            raise GatewayReplyError(
                "closed",
                Bilingual(f"网关关闭了连接 ({exc})",
                          f"the gateway closed the connection ({exc})")) from None

    def _connect(self) -> ClientConnection:
        if self._connection is not None:
            return self._connection
        try:
            # No proxy: the E-port client is on this machine, and a proxy would see the PIN.
            # No compression and no pings: small frames, short sessions, and the official
            # client's support for either is unknown.
            connection = connect(
                self.url, origin=Origin(self.origin) if self.origin else None,
                proxy=None, compression=None, ping_interval=None,
                open_timeout=self.timeout, max_size=_MAX_FRAME,
                # The connection outlives this call (several requests); close() ends it.
                legacy=True)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise GatewayReplyError(
                "refused",
                Bilingual(f"网关拒绝连接 (HTTP {status})。若为 403, 来源 (Origin) "
                          "不在网关的允许列表中: 不加 --origin 连接, 或用 --allow-origin 启动网关",
                          f"the gateway refused the connection (HTTP {status}). 403 means the "
                          "Origin is not on its allow-list: connect without --origin, or start "
                          "the gateway with --allow-origin")) from None
        except (OSError, InvalidHandshake, TimeoutError, ValueError) as exc:
            raise GatewayReplyError(
                "unreachable",
                Bilingual(f"无法连接电子口岸客户端控件 {self.url} ({exc}): 请启动 eport-gateway "
                          "(或官方客户端控件), 或用 --url 指定地址",
                          f"cannot connect to the E-port client at {self.url} ({exc}): start "
                          "eport-gateway (or the official client), or give its address with "
                          "--url")) from None
        try:
            greeting = self._receive(connection)
        except (TimeoutError, ConnectionClosed, GatewayReplyError):
            connection.close()
            raise GatewayReplyError(
                "protocol",
                Bilingual(f"{self.url} 未发送问候消息",
                          f"{self.url} sent no greeting: is it an E-port client?")) from None
        if greeting.get("_method") != "open":
            connection.close()
            raise GatewayReplyError(
                "protocol",
                Bilingual(f"{self.url} 的问候消息不符合协议",
                          f"{self.url} greeted with something else than \"open\""))
        self._connection = connection
        return connection

    def _receive(self, connection: ClientConnection) -> dict[str, Any]:
        frame = connection.recv(timeout=self.timeout)
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise GatewayReplyError(
                "protocol",
                Bilingual("网关的应答不是 JSON 对象",
                          "the gateway answered with something else than a JSON object"))
        return message

    def _data_of(self, reply: dict[str, Any]) -> list[Any]:
        body = reply.get("_args")
        if not isinstance(body, dict) or not isinstance(body.get("Result"), bool):
            raise GatewayReplyError(
                "protocol",
                Bilingual("网关的应答缺少 _args.Result",
                          "the gateway's reply has no _args.Result"))
        if body["Result"]:
            data = body.get("Data")
            if not isinstance(data, list):
                raise GatewayReplyError(
                    "protocol",
                    Bilingual("网关的应答缺少 Data", "the reply has no Data list"))
            return data
        raise self._error_of(body.get("Error"))

    def _error_of(self, error: object) -> GatewayReplyError:
        parts = [str(part) for part in error] if isinstance(error, list) else []
        message_zh = parts[0] if parts else "网关返回错误但未说明原因"
        code = "unknown"
        if len(parts) > 1 and parts[1].startswith("Err:Custom"):
            code = parts[1].removeprefix("Err:Custom")
        # The official client sends two elements; our gateway adds the English third.
        message_en = parts[2] if len(parts) > 2 else "the E-port client reported an error"
        return GatewayReplyError(
            code,
            Bilingual(self._scrub(message_zh), self._scrub(message_en)))

    def _scrub(self, text: str) -> str:
        # A server that echoes its arguments must not get the PIN into our error texts.
        return text.replace(self._pin, "******") if self._pin else text

    @staticmethod
    def _first_text(data: list[Any]) -> str:
        if not data or not isinstance(data[0], str) or not data[0]:
            raise GatewayReplyError(
                "protocol",
                Bilingual("网关的应答 Data 为空", "the reply's Data is empty"))
        return data[0]


def _strip_pem(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("-----")]
    return "".join(lines)


def _decode_base64(text: str, method: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayReplyError(
            "protocol",
            Bilingual(f"{method} 的应答不是 base64", f"the {method} reply is not base64")) from None
