"""gRPC unary calls to eportd without grpcio: HTTP/2 on its Unix socket, one stream per call.

Why this exists: `eport sign` runs once per signature in scripts, and importing grpcio costs
about 40 ms of a process that should take at most 2.5 × `pkcs11-tool --sign`
(benchmarks/eport_sign_startup.py measures both). A unary call uses a small part of gRPC's
HTTP/2 mapping (gRPC over HTTP/2 and RFC 9113, named in docs/sources.md): a HEADERS frame, the
request as one length-prefixed message in DATA frames, then the reply and the status in
trailers. That part is here; event streams (`eport watch`) still use grpcio, which DaemonClient
imports only for them. The wire is the same gRPC that every other client speaks, on the same
socket, so eportd cannot tell the two apart.

Kept small on purpose: no TLS, no compression (eportd never compresses unless asked, and this
client never asks), one call at a time on one connection, which is all a console command does.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import hpack
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from eport.common.failure import EportFailure
from eport.common.text import Bilingual

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">I B I")  # the 24-bit length rides in the first word's top bits
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, \
    SETTINGS_MAX_FRAME_SIZE = 1, 2, 4, 5
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
# What we let eportd send before it must wait for us: more than the largest reply (4 MiB, the
# gRPC default limit), so a call never stalls on our side; the connection's share is given
# back after each call.
RECEIVE_WINDOW = 8 * 1024 * 1024
MAX_WINDOW = 2**31 - 1
READ_SIZE = 64 * 1024


class StatusCode(IntEnum):
    """gRPC's status codes, by the numbers the protocol sends (grpc.StatusCode's names)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# An HTTP/2 reset names why the stream ended; gRPC over HTTP/2 says which status each means.
_RESET_STATUS = {7: StatusCode.UNAVAILABLE, 8: StatusCode.CANCELLED,
                 11: StatusCode.RESOURCE_EXHAUSTED, 12: StatusCode.PERMISSION_DENIED}
# A reply that is not gRPC at all (a proxy, another program): the mapping gRPC specifies.
_HTTP_STATUS = {400: StatusCode.INTERNAL, 401: StatusCode.UNAUTHENTICATED,
                403: StatusCode.PERMISSION_DENIED, 404: StatusCode.UNIMPLEMENTED,
                429: StatusCode.UNAVAILABLE, 502: StatusCode.UNAVAILABLE,
                503: StatusCode.UNAVAILABLE, 504: StatusCode.UNAVAILABLE}


class UnaryCallError(EportFailure):
    """A call that did not succeed: the gRPC status, its text and the trailing metadata (where
    eportd puts its ErrorDetail). kit.errors reads this and grpcio's RpcError alike."""

    def __init__(self, status: StatusCode, details: str,
                 trailing: Sequence[tuple[str, str | bytes]] = ()) -> None:
        super().__init__(f"{status.name}: {details}")
        self.status = status
        self.details = details
        self.trailing = tuple(trailing)
        self.code = status.name
        self.message = Bilingual(f"eportd 调用失败 ({status.name}): {details}",
                                 f"The call to eportd failed ({status.name}): {details}")
        self.remedy = Bilingual("运行 eport doctor 查看详情", "`eport doctor` tells more")


class _Reply:
    """What came back on one stream: headers, the message bytes, trailers."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.body = bytearray()
        self.reset: StatusCode | None = None
        self.ended = False


class UnaryConnection:
    """One HTTP/2 connection to a Unix socket, opened at the first call and reopened after a
    failure. Calls take turns (a console command makes them one after another anyway)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self._next_stream = 1
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW  # the connection's
        self._stream_window = 0
        self._stream = 0
        self._received_unacknowledged = 0
        self._going_away = False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, path: str, request: bytes, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._lock:
                return self._call(path, request, deadline)
        except UnaryCallError:
            raise
        except TimeoutError:
            self.close()
            raise UnaryCallError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except OSError as error:
            self.close()
            raise UnaryCallError(StatusCode.UNAVAILABLE,
                                 f"unix:{self.path}: {error.strerror or error}") from None

    # --- one call -------------------------------------------------------------------------

    def _call(self, path: str, request: bytes, deadline: float | None) -> bytes:
        if self._sock is None or self._going_away:
            self._connect(deadline)
        stream = self._next_stream
        self._next_stream += 2
        self._stream, self._stream_window = stream, self._peer_initial_window
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                   (":authority", "localhost"), ("te", "trailers"),
                   ("content-type", "application/grpc"), ("user-agent", "eport-kit")]
        if deadline is not None:
            headers.append(("grpc-timeout", _timeout_header(deadline)))
        self._send_headers(stream, self._encoder.encode(headers), deadline)
        reply = _Reply()
        self._send_body(stream, b"\x00" + struct.pack(">I", len(request)) + request, reply,
                        deadline)
        while not reply.ended:
            self._read_one(reply, deadline)
        self._give_back_window()
        return _message_of(reply)

    def _connect(self, deadline: float | None) -> None:
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = sock
        self._set_timeout(deadline)
        sock.connect(str(self.path))
        self._buffer.clear()
        self._encoder, self._decoder = hpack.Encoder(), hpack.Decoder()
        self._next_stream, self._going_away = 1, False
        self._peer_initial_window, self._peer_max_frame = DEFAULT_WINDOW, DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW
        settings = struct.pack(">HIHI", SETTINGS_ENABLE_PUSH, 0,
                               SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW)
        sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, settings)
                     + _frame(WINDOW_UPDATE, 0, 0,
                              struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW)))

    def _send_headers(self, stream: int, block: bytes, deadline: float | None) -> None:
        first, rest = block[:self._peer_max_frame], block[self._peer_max_frame:]
        frames = [_frame(HEADERS, END_HEADERS if not rest else 0, stream, first)]
        while rest:
            piece, rest = rest[:self._peer_max_frame], rest[self._peer_max_frame:]
            frames.append(_frame(CONTINUATION, END_HEADERS if not rest else 0, stream, piece))
        self._send(b"".join(frames), deadline)

    def _send_body(self, stream: int, body: bytes, reply: _Reply,
                   deadline: float | None) -> None:
        """DATA within eportd's flow-control windows; an early end of the stream (eportd
        refused the call before reading it all) stops sending."""
        sent = 0
        while sent < len(body) and not reply.ended:
            room = min(self._send_window, self._stream_window, self._peer_max_frame)
            if room <= 0:
                self._read_one(reply, deadline)  # a WINDOW_UPDATE, or the reply
                continue
            piece = body[sent:sent + room]
            sent += len(piece)
            self._send_window -= len(piece)
            self._stream_window -= len(piece)
            self._send(_frame(DATA, END_STREAM if sent == len(body) else 0, stream, piece),
                       deadline)

    def _give_back_window(self) -> None:
        if self._received_unacknowledged and self._sock is not None:
            increment, self._received_unacknowledged = self._received_unacknowledged, 0
            self._sock.sendall(_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", increment)))

    # --- frames in --------------------------------------------------------------------------

    def _read_one(self, reply: _Reply, deadline: float | None) -> None:
        kind, flags, stream, payload = self._read_frame(deadline)
        if stream == 0:
            self._connection_frame(kind, flags, payload, reply)
        elif stream != self._stream:
            return  # an earlier stream's leftovers
        elif kind == DATA:
            self._received_unacknowledged += len(payload)
            reply.body += _unpadded(flags, payload)
            reply.ended = bool(flags & END_STREAM)
        elif kind == HEADERS:
            fields = self._header_block(flags, payload, deadline)
            if reply.headers is None:
                reply.headers = fields
            else:
                reply.trailers = fields
            if flags & END_STREAM:
                reply.ended = True
                if reply.trailers is None:  # "Trailers-Only": the status is in the headers
                    reply.trailers = fields
        elif kind == RST_STREAM:
            (code,) = struct.unpack(">I", payload[:4])
            reply.reset = _RESET_STATUS.get(code, StatusCode.INTERNAL)
            reply.ended = True
        elif kind == WINDOW_UPDATE:
            self._stream_window += struct.unpack(">I", payload[:4])[0] & MAX_WINDOW

    def _connection_frame(self, kind: int, flags: int, payload: bytes, reply: _Reply) -> None:
        if kind == SETTINGS and not flags & ACK:
            for offset in range(0, len(payload) - len(payload) % 6, 6):
                key, value = struct.unpack(">HI", payload[offset:offset + 6])
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    self._stream_window += value - self._peer_initial_window
                    self._peer_initial_window = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    self._peer_max_frame = value
                elif key == SETTINGS_HEADER_TABLE_SIZE:
                    self._encoder.header_table_size = min(value, 4096)
            self._send(_frame(SETTINGS, ACK, 0, b""), None)
        elif kind == PING and not flags & ACK:
            self._send(_frame(PING, ACK, 0, payload), None)
        elif kind == WINDOW_UPDATE:
            self._send_window += struct.unpack(">I", payload[:4])[0] & MAX_WINDOW
        elif kind == GOAWAY:
            self._going_away = True
            last_stream = struct.unpack(">I", payload[:4])[0] & MAX_WINDOW
            if last_stream < self._stream:  # ours will never be answered
                reply.reset, reply.ended = StatusCode.UNAVAILABLE, True

    def _header_block(self, flags: int, payload: bytes, deadline: float | None
                      ) -> list[tuple[str, str]]:
        block = bytearray(_unpadded(flags, payload))
        if flags & PRIORITY_FLAG:
            del block[:5]
        while not flags & END_HEADERS:
            kind, flags, _stream, more = self._read_frame(deadline)
            if kind != CONTINUATION:
                raise UnaryCallError(StatusCode.INTERNAL, "HTTP/2: a header block was cut")
            block += more
        try:
            return [(str(name), str(value))
                    for name, value in self._decoder.decode(bytes(block), raw=False)]
        except hpack.HPACKError as error:
            raise UnaryCallError(StatusCode.INTERNAL, f"HTTP/2: bad header block ({error})"
                                 ) from None

    def _read_frame(self, deadline: float | None) -> tuple[int, int, int, bytes]:
        header = self._read_exactly(9, deadline)
        word, flags, stream = FRAME_HEADER.unpack(header)
        length, kind = word >> 8, word & 0xFF
        return kind, flags, stream & MAX_WINDOW, self._read_exactly(length, deadline)

    def _read_exactly(self, count: int, deadline: float | None) -> bytes:
        assert self._sock is not None
        while len(self._buffer) < count:
            self._set_timeout(deadline)
            chunk = self._sock.recv(READ_SIZE)
            if not chunk:
                self.close()
                raise UnaryCallError(StatusCode.UNAVAILABLE,
                                     f"unix:{self.path}: the connection was closed")
            self._buffer += chunk
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken

    def _send(self, data: bytes, deadline: float | None) -> None:
        assert self._sock is not None
        self._set_timeout(deadline)
        self._sock.sendall(data)

    def _set_timeout(self, deadline: float | None) -> None:
        assert self._sock is not None
        if deadline is None:
            self._sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self._sock.settimeout(left)


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload) << 8 | kind, flags, stream) + payload


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    padding = payload[0]
    return payload[1:len(payload) - padding]


def _timeout_header(deadline: float) -> str:
    """gRPC's grpc-timeout: at most 8 digits and a unit; milliseconds are precise enough."""
    milliseconds = max(1, int((deadline - time.monotonic()) * 1000))
    if milliseconds < 100_000_000:
        return f"{milliseconds}m"
    return f"{min(milliseconds // 1000, 99_999_999)}S"


def _trailing_metadata(fields: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    """As grpcio gives it: -bin values decoded from their unpadded base64 to bytes."""
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in fields:
        if name.startswith(":") or name in ("grpc-status", "grpc-message", "content-type"):
            continue
        if name.endswith("-bin"):
            metadata.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
        else:
            metadata.append((name, value))
    return metadata


def _message_of(reply: _Reply) -> bytes:
    if reply.reset is not None:
        raise UnaryCallError(reply.reset, "the stream was reset")
    fields = dict(reply.trailers or reply.headers or [])
    http_status = dict(reply.headers or []).get(":status", "")
    if http_status != "200":
        status = _HTTP_STATUS.get(int(http_status) if http_status.isdigit() else 0,
                                  StatusCode.UNKNOWN)
        raise UnaryCallError(status, f"not a gRPC reply (HTTP status {http_status or '?'})")
    code = fields.get("grpc-status", "")
    if not code.isdigit():
        raise UnaryCallError(StatusCode.INTERNAL, "the reply carried no gRPC status")
    if int(code) != StatusCode.OK:
        status = StatusCode(int(code)) if int(code) <= 16 else StatusCode.UNKNOWN
        raise UnaryCallError(status, urllib.parse.unquote(fields.get("grpc-message", "")),
                             _trailing_metadata(reply.trailers or []))
    body = bytes(reply.body)
    if len(body) < 5:
        raise UnaryCallError(StatusCode.INTERNAL, "the reply carried no message")
    compressed, length = body[0], struct.unpack(">I", body[1:5])[0]
    if compressed:
        raise UnaryCallError(StatusCode.INTERNAL, "the reply is compressed, which was not asked")
    if len(body) != 5 + length:
        raise UnaryCallError(StatusCode.INTERNAL, "the reply is not one whole message")
    return body[5:]


class UnaryMethod:
    """One unary method, called as a grpcio stub's is: `method(request, timeout=…)`."""

    def __init__(self, connection: UnaryConnection, method: MethodDescriptor) -> None:
        self._connection = connection
        self._path = f"/{method.containing_service.full_name}/{method.name}"
        self._reply_class = message_factory.GetMessageClass(method.output_type)

    def __call__(self, request: Message, timeout: float | None = None, **options: Any
                 ) -> Message:
        if options:
            # Metadata, credentials, compression, wait_for_ready: none is sent by this
            # transport, and silently dropping one would be worse than saying so.
            raise TypeError(f"the kit's unary transport does not take {sorted(options)}")
        raw = self._connection.call(self._path, request.SerializeToString(), timeout)
        try:
            return self._reply_class.FromString(raw)
        except DecodeError:
            raise UnaryCallError(StatusCode.INTERNAL, "the reply does not parse") from None


class UnaryStub:
    """A service's methods by name: unary ones through this module, streaming ones through
    `streaming_stub()` (grpcio, made on first use)."""

    def __init__(self, connection: UnaryConnection, service: ServiceDescriptor,
                 streaming_stub: Callable[[], object]) -> None:
        self._connection = connection
        self._service = service
        self._streaming_stub = streaming_stub
        self._methods: dict[str, UnaryMethod] = {}

    def __getattr__(self, name: str) -> Any:
        method = self._service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(name)
        if method.client_streaming or method.server_streaming:
            return getattr(self._streaming_stub(), name)
        if name not in self._methods:
            self._methods[name] = UnaryMethod(self._connection, method)
        return self._methods[name]
