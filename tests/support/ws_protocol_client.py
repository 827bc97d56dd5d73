"""An independent client of the E-port client websocket protocol, written only from
docs/gateway.md (and the page library in docs/sources.md): nothing here comes from, or is
shared with, the gateway.

It waits for the greeting, sends requests with the caller's `_id`s, matches replies by `_id`
(many requests in flight per connection), and sends raw frames: malformed JSON, binary frames,
oversized frames, and BLOCKTXT block transfers with the documented check code.

    with GatewayClient.connect(url) as client:
        reply = client.call("SpcGetCardID")
        assert reply.ok, reply.describe()
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import ssl
import threading
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

PREFIX = "cus-sec_"
GREETING = {"_id": 0, "_method": "open", "_status": "00"}
NEXT_BLOCK = "_nextBlock"
HEADER_LENGTH = 128
BLOCK_MAGIC = "BLOCKTXT"
_CODE = re.compile(r"^Err:Custom([0-9A-Fa-f]+)$")
# The page library's 35 card methods (group cus-sec_), as docs/gateway.md lists them.
PAGE_LIBRARY_METHODS = frozenset({
    "SpcSetInitEnvPriority", "SpcInitEnvEx", "SpcClearEnv", "SpcGetCardAttachInfo",
    "SpcGetCardAttachInfoAsPEM", "SpcGetCardID", "SpcGetCertNo", "SpcGetUName", "SpcGetEntID",
    "SpcGetEntName", "SpcGetEntMode", "SpcGetCardUserInfo", "SpcGetSignCert",
    "SpcGetSignCertAsPEM", "SpcGetEnvCert", "SpcGetEnvCertAsPEM", "SpcGetValidTimeFromCert",
    "SpcVerifyPIN", "SpcVerifyPINAll", "SpcChangePIN", "SpcEncodePEM", "SpcDecodePEM",
    "SpcDecodePEMAsString", "SpcSignData", "SpcSignDataAsPEM", "SpcSignPemDataAsPem",
    "SpcVerifySignData", "SpcSHA1Digest", "SpcSHA1DigestAsPEM", "SpcSignDataNoHash",
    "SpcSignDataNoHashAsPEM", "SpcVerifySignDataNoHash", "SpcSignRandom", "SpcRSAEncrypt",
    "SpcRSADecrypt",
})


class ProtocolViolation(AssertionError):
    """The server sent something the protocol does not allow."""


# ---- the check code of block transfers ----

def crc16_modbus(data: bytes | Iterable[int]) -> int:
    """CRC-16/MODBUS: reflected polynomial 0xA001, initial value 0xFFFF, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte & 0xFF
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def utf16_units(text: str) -> list[int]:
    """The UTF-16 code units of `text` (a character outside the BMP is two)."""
    raw = text.encode("utf-16-le", "surrogatepass")
    return [raw[i] | raw[i + 1] << 8 for i in range(0, len(raw), 2)]


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_code(text: str) -> str:
    """The documented check code: CRC-16/MODBUS over the low byte of each UTF-16 code unit,
    written high byte first in uppercase hex, i.e. the CRC value with its two bytes swapped
    (`123456789` -> CRC 0x4B37 -> "374B")."""
    crc = crc16_modbus(unit & 0xFF for unit in utf16_units(text))
    return f"{crc & 0xFF:02X}{crc >> 8:02X}"


def split_blocks(text: str, block_units: int) -> list[str]:
    """`text` in pieces of at most `block_units` UTF-16 code units, never splitting a
    surrogate pair (a lone surrogate cannot travel in a text frame)."""
    if block_units < 2:
        raise ValueError("blocks must hold at least 2 UTF-16 code units")
    blocks: list[str] = []
    current: list[str] = []
    length = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if length + width > block_units:
            blocks.append("".join(current))
            current, length = [], 0
        current.append(char)
        length += width
    if current or not blocks:
        blocks.append("".join(current))
    return blocks


def block_frame(*, whole_check: str, block_check: str, whole_length: int, block: str,
                block_length: int | None = None, count: int, guid: str, number: int) -> str:
    """One block: the 128-character header of docs/gateway.md, then the block's data."""
    header = (BLOCK_MAGIC + whole_check + block_check + f"{whole_length:016d}"
              + f"{utf16_length(block) if block_length is None else block_length:08d}"
              + f"{count:04d}" + guid + f"{number:04d}")
    if len(guid) != 36 or len(whole_check) != 4 or len(block_check) != 4:
        raise ValueError("guid must be 36 characters and check codes 4")
    header += "0" * (HEADER_LENGTH - len(header))
    assert len(header) == HEADER_LENGTH, header
    return header + block


def wrong_check(code: str) -> str:
    """A check code that is certainly not `code`."""
    return f"{(int(code, 16) ^ 0x5A5A):04X}"


# ---- replies ----

@dataclass(frozen=True)
class Reply:
    """One reply frame, as parsed JSON."""

    raw: dict[str, Any]

    @property
    def id(self) -> Any:
        return self.raw.get("_id")

    @property
    def method(self) -> Any:
        return self.raw.get("_method")

    @property
    def args(self) -> dict[str, Any]:
        args = self.raw.get("_args")
        if not isinstance(args, dict):
            raise ProtocolViolation(f"reply without an _args object: {self.raw}")
        return args

    @property
    def ok(self) -> bool:
        return self.args.get("Result") is True

    @property
    def data(self) -> list[Any]:
        data = self.args.get("Data")
        if not isinstance(data, list):
            raise ProtocolViolation(f"Data is not a list: {self.raw}")
        return data

    @property
    def error(self) -> list[Any]:
        error = self.args.get("Error")
        if not isinstance(error, list):
            raise ProtocolViolation(f"Error is not a list: {self.raw}")
        return error

    @property
    def code(self) -> str | None:
        """The code of `Err:Custom<code>` (uppercase), or None on success."""
        if len(self.error) < 2 or not isinstance(self.error[1], str):
            return None
        match = _CODE.match(self.error[1])
        return match.group(1).upper() if match else None

    def describe(self) -> str:
        return json.dumps(self.raw, ensure_ascii=False)[:2000]

    def check_shape(self) -> None:
        """What every reply must look like (docs/gateway.md, "Reply")."""
        raw = self.raw
        if raw.get("_status") != "00":
            raise ProtocolViolation(f"_status is not \"00\": {self.describe()}")
        if not isinstance(raw.get("_method"), str):
            raise ProtocolViolation(f"_method missing: {self.describe()}")
        args = self.args
        if not isinstance(args.get("Result"), bool):
            raise ProtocolViolation(f"Result is not a boolean: {self.describe()}")
        data, error = self.data, self.error
        if args["Result"]:
            if error:
                raise ProtocolViolation(f"success with an Error: {self.describe()}")
        else:
            if data:
                raise ProtocolViolation(f"failure with Data: {self.describe()}")
            if len(error) != 3 or not all(isinstance(part, str) and part for part in error):
                raise ProtocolViolation(
                    f"Error is not [中文, Err:Custom<code>, English]: {self.describe()}")
            if self.code is None:
                raise ProtocolViolation(f"Error[1] is not Err:Custom<code>: {self.describe()}")


def _key(request_id: Any) -> str:
    """Replies are matched on the exact JSON value of `_id` (1 and "1" differ)."""
    return json.dumps(request_id, sort_keys=True)


@dataclass
class BlockTransfer:
    """What happened in one block transfer: the blocks sent and the `_nextBlock` replies."""

    guid: str
    blocks: list[str]
    sent: list[int] = field(default_factory=list)       # block numbers, in sending order
    replies: list[Reply] = field(default_factory=list)  # the _nextBlock replies, in order

    @property
    def finished(self) -> Reply | None:
        for reply in self.replies:
            if _next_block_data(reply).get("finish") is True:
                return reply
        return None


def _next_block_data(reply: Reply) -> dict[str, Any]:
    data = reply.data
    if len(data) != 1 or not isinstance(data[0], dict):
        raise ProtocolViolation(f"_nextBlock Data is not [{{guid, next, finish}}]: "
                                f"{reply.describe()}")
    return data[0]


# ---- the client ----

class GatewayClient:
    """One websocket connection. A reader thread matches replies to requests by `_id`;
    frames that match no request in flight go to `unmatched`."""

    def __init__(self, connection: ClientConnection, greeting: dict[str, Any]) -> None:
        self.connection = connection
        self.greeting = greeting
        self.unmatched: queue.Queue[Reply | bytes | str] = queue.Queue()
        self.closed = threading.Event()
        self.close_code: int | None = None
        self.reader_error: Exception | None = None
        self._pending: dict[str, tuple[Future[Reply], str | None]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, name="ws-protocol-reader",
                                        daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, url: str, *, origin: str | None = None, greeting_timeout: float = 10.0,
                compression: str | None = None, max_size: int | None = 64 * 1024 * 1024,
                ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None
                ) -> GatewayClient:
        """Open the websocket (with `Origin: origin` when given, none otherwise) and wait for
        the greeting, which must be exactly {"_id":0,"_method":"open","_status":"00"}.
        For wss:// URLs, `ssl_context` says whom to trust and `server_hostname` which name
        the certificate must carry (a page's wss://wss.singlewindow.cn:61231)."""
        tls: dict[str, Any] = {} if ssl_context is None else {
            "ssl": ssl_context, "server_hostname": server_hostname}
        connection = connect(url, origin=Origin(origin) if origin is not None else None,
                             compression=compression, max_size=max_size, proxy=None,
                             open_timeout=greeting_timeout, ping_interval=None, legacy=True,
                             **tls)
        try:
            first = connection.recv(timeout=greeting_timeout)
        except BaseException:
            connection.close()
            raise
        try:
            greeting = json.loads(first) if isinstance(first, str) else None
        except ValueError:
            greeting = None
        if greeting != GREETING:
            connection.close()
            raise ProtocolViolation(f"the greeting is not {GREETING}: {first!r}")
        return cls(connection, greeting)

    # -- context manager --

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()
        self._reader.join(timeout=10)

    # -- requests --

    def new_id(self) -> int:
        return next(self._ids)

    def expect(self, request_id: Any, method: str | None) -> Future[Reply]:
        """A future for the reply carrying `_id` == request_id (register before sending)."""
        future: Future[Reply] = Future()
        key = _key(request_id)
        with self._lock:
            if key in self._pending:
                raise ValueError(f"_id {request_id!r} is already in flight")
            if self.closed.is_set():
                future.set_exception(ConnectionClosed(None, None))
                return future
            self._pending[key] = (future, method)
        return future

    def forget(self, request_id: Any) -> None:
        with self._lock:
            self._pending.pop(_key(request_id), None)

    def send_request(self, method: str, args: dict[str, Any] | None = None, *,
                     request_id: Any = None, full_name: bool = False) -> Future[Reply]:
        """Send one request; `method` without the cus-sec_ prefix unless full_name. The
        reply's _method must be the request's."""
        name = method if full_name else PREFIX + method
        request_id = self.new_id() if request_id is None else request_id
        request: dict[str, Any] = {"_method": name, "_id": request_id}
        if args is not None:
            request["args"] = args
        future = self.expect(request_id, name)
        self.send_text(json.dumps(request, ensure_ascii=False))
        return future

    def call(self, method: str, args: dict[str, Any] | None = None, *,
             request_id: Any = None, timeout: float = 60.0) -> Reply:
        return self.send_request(method, args, request_id=request_id).result(timeout)

    def send_text(self, text: str) -> None:
        self.connection.send(text)

    def send_binary(self, data: bytes) -> None:
        self.connection.send(data)

    def send_json(self, value: Any, *, expect_id: Any = None, method: str | None = None
                  ) -> Future[Reply] | None:
        """Send any JSON value; with expect_id, a future for the reply with that _id."""
        future = self.expect(expect_id, method) if expect_id is not None else None
        self.send_text(json.dumps(value, ensure_ascii=False))
        return future

    def next_unmatched(self, timeout: float = 10.0) -> Reply | bytes | str:
        """The next frame that matched no request in flight (for replies to frames that
        carried no usable `_id`)."""
        return self.unmatched.get(timeout=timeout)

    def drain_unmatched(self) -> list[Reply | bytes | str]:
        items: list[Reply | bytes | str] = []
        while True:
            try:
                items.append(self.unmatched.get_nowait())
            except queue.Empty:
                return items

    # -- block transfer --

    def transfer_blocks(self, text: str, *, block_units: int = 64 * 1024,
                        guid: str | None = None, corrupt_once: Sequence[int] = (),
                        whole_check: str | None = None, timeout: float = 60.0,
                        max_steps: int = 1000) -> BlockTransfer:
        """Send `text` (a whole request) in BLOCKTXT blocks, lock-step: send block 0, then
        whichever block each `_nextBlock` reply asks for, until one says finish:true.
        Blocks in `corrupt_once` go out once with a wrong block check code (then correctly
        when asked again); `whole_check` overrides the whole request's check code."""
        guid = guid or str(uuid.uuid4())
        blocks = split_blocks(text, block_units)
        transfer = BlockTransfer(guid, blocks)
        whole = whole_check if whole_check is not None else check_code(text)
        total = utf16_length(text)
        corrupt = set(corrupt_once)
        number = 0
        for _ in range(max_steps):
            if not 0 <= number < len(blocks):
                raise ProtocolViolation(f"_nextBlock asked for block {number} of {len(blocks)}")
            code = check_code(blocks[number])
            if number in corrupt:
                corrupt.discard(number)
                code = wrong_check(code)
            frame = block_frame(whole_check=whole, block_check=code, whole_length=total,
                                block=blocks[number], count=len(blocks), guid=guid,
                                number=number)
            future = self.expect(guid, NEXT_BLOCK)
            self.send_text(frame)
            transfer.sent.append(number)
            reply = future.result(timeout)
            transfer.replies.append(reply)
            if reply.method != NEXT_BLOCK:
                raise ProtocolViolation(f"a block got a reply that is not _nextBlock: "
                                        f"{reply.describe()}")
            answer = _next_block_data(reply)
            if answer.get("guid") != guid:
                raise ProtocolViolation(f"_nextBlock for another guid: {reply.describe()}")
            if answer.get("finish") is True:
                return transfer
            if not isinstance(answer.get("next"), int):
                raise ProtocolViolation(f"_nextBlock without a next number: "
                                        f"{reply.describe()}")
            number = answer["next"]
        raise ProtocolViolation(f"block transfer did not finish in {max_steps} steps")

    # -- the reader thread --

    def _read(self) -> None:
        try:
            while True:
                message = self.connection.recv()
                self._dispatch(message)
        except ConnectionClosed as closed:
            received = closed.rcvd
            self.close_code = received.code if received is not None else None
        except Exception as exc:  # a bug here must fail the waiting requests, not hang them
            self.reader_error = exc
        finally:
            self.closed.set()
            with self._lock:
                pending, self._pending = self._pending, {}
            for future, _ in pending.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(None, None))

    def _dispatch(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.unmatched.put(message)  # the protocol never sends binary frames
            return
        try:
            value = json.loads(message)
        except ValueError:
            self.unmatched.put(message)
            return
        if not isinstance(value, dict) or "_id" not in value:
            self.unmatched.put(message)
            return
        reply = Reply(value)
        with self._lock:
            entry = self._pending.pop(_key(value["_id"]), None)
        if entry is None:
            self.unmatched.put(reply)
            return
        future, method = entry
        if method is not None and reply.method != method:
            future.set_exception(ProtocolViolation(
                f"reply to {method} carries _method {reply.method!r}: {reply.describe()}"))
            return
        future.set_result(reply)
