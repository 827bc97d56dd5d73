"""Block transfer: how the official JavaScript library sends requests above 120 KB.

A block is a text frame: a 128-character header, then a slice of the request's JSON text.
The gateway answers each block with `_nextBlock` (which block to send next), reassembles the
request, and then handles it like any other. Lengths are JavaScript string lengths (UTF-16
code units) and the check code is CRC-16/MODBUS over the low byte of each code unit, because
that is what the library computes.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from eport.clients.gateway.errors import GatewayError, bad_arguments
from eport.common.text import Bilingual

MAGIC = "BLOCKTXT"
HEADER_LENGTH = 128
_HEADER = re.compile(
    r"BLOCKTXT(?P<total_check>[0-9A-Fa-f]{4})(?P<block_check>[0-9A-Fa-f]{4})"
    r"(?P<total_length>\d{16})(?P<block_length>\d{8})(?P<count>\d{4})"
    r"(?P<guid>[0-9A-Za-z-]{36})(?P<number>\d{4})")
# A sender that keeps failing its checks is not going to succeed: stop asking.
RETRIES_PER_BLOCK = 3
MAX_OPEN_TRANSFERS = 16
# The library sends the next block as soon as it has the answer: a transfer that stalls this
# long has been abandoned, and what it holds is freed.
DEFAULT_IDLE_TIMEOUT = 60.0
MAX_REMEMBERED_EXPIRIES = 64


def _crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def check_code(text: str) -> str:
    """The library's check code: CRC-16/MODBUS, its two bytes swapped, 4 uppercase hex digits."""
    crc = 0xFFFF
    for low_byte in text.encode("utf-16-le")[::2]:
        crc = (crc >> 8) ^ _TABLE[(crc ^ low_byte) & 0xFF]
    return f"{((crc & 0xFF) << 8) | (crc >> 8):04X}"


def js_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def is_block(frame: str) -> bool:
    return frame.startswith(MAGIC)


@dataclass(frozen=True)
class BlockHeader:
    total_check: str
    block_check: str
    total_length: int
    block_length: int
    count: int
    guid: str
    number: int


@dataclass
class BlockAnswer:
    """What to send back for one block, and the whole request once it is complete."""

    guid: str
    next_block: int
    finish: bool
    ok: bool = True
    error: GatewayError | None = None
    assembled: str | None = None


@dataclass
class _Transfer:
    header: BlockHeader
    last_block_at: float
    blocks: dict[int, str] = field(default_factory=dict)
    held: int = 0  # UTF-16 code units in `blocks`
    retries: int = 0


def _refused(guid: str, zh: str, en: str) -> BlockAnswer:
    return BlockAnswer(guid, 0, True, ok=False, error=bad_arguments(Bilingual(zh, en)))


class BlockAssembler:
    """The transfers of one connection. Blocks of several transfers may interleave.

    What a connection can make the gateway hold is bounded: each transfer holds at most the
    length its first block declared (at most `max_length`), all of the connection's unfinished
    transfers together at most `max_held`, and a transfer that gets no block for
    `idle_timeout` seconds is dropped (see `expire`). Lengths are UTF-16 code units, as in
    the headers."""

    def __init__(self, max_length: int, *, max_held: int | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 on_expire: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_length = max_length
        self.max_held = max_length if max_held is None else max_held
        self.idle_timeout = idle_timeout
        self._on_expire = on_expire
        self._clock = clock
        self._transfers: dict[str, _Transfer] = {}
        # Transfers dropped for idleness, so that their next block is told why.
        self._expired: OrderedDict[str, None] = OrderedDict()

    @property
    def held(self) -> int:
        return sum(transfer.held for transfer in self._transfers.values())

    @property
    def open_transfers(self) -> int:
        return len(self._transfers)

    def receive(self, frame: str) -> BlockAnswer:
        self.expire()
        match = _HEADER.match(frame)
        if match is None or len(frame) < HEADER_LENGTH:
            return _refused("", "分块报头格式不正确", "malformed block header")
        header = BlockHeader(
            match["total_check"].upper(), match["block_check"].upper(),
            int(match["total_length"]), int(match["block_length"]), int(match["count"]),
            match["guid"], int(match["number"]))
        data = frame[HEADER_LENGTH:]
        if header.guid in self._expired:
            del self._expired[header.guid]
            return _refused(
                header.guid,
                f"分块传输超过 {self.idle_timeout:g} 秒没有收到下一块, 已丢弃; 请重新发送整个请求",
                f"the block transfer got no block for {self.idle_timeout:g} seconds and was "
                "dropped; send the whole request again")
        transfer = self._transfers.get(header.guid)
        if transfer is None:
            refusal = self._refuse_new(header)
            if refusal is not None:
                return refusal
            transfer = self._transfers[header.guid] = _Transfer(header, self._clock())
        elif (header.total_length, header.count, header.total_check) != (
                transfer.header.total_length, transfer.header.count,
                transfer.header.total_check):
            return self._fail(header.guid, "分块的总长度、块数或校验码与首块不一致",
                              "a block disagrees with the first block on length, count or check")
        transfer.last_block_at = self._clock()
        if header.number >= header.count:
            return self._fail(header.guid, "块号超出块数", "block number beyond the block count")
        units = js_length(data)
        if units != header.block_length or check_code(data) != header.block_check:
            transfer.retries += 1
            if transfer.retries > RETRIES_PER_BLOCK * header.count:
                return self._fail(header.guid, "分块校验多次失败", "too many failed block checks")
            return BlockAnswer(header.guid, header.number, False, ok=False,
                               error=bad_arguments(Bilingual("分块校验失败,请重发",
                                                             "block check failed")))
        previous = js_length(transfer.blocks.get(header.number, ""))
        if transfer.held - previous + units > header.total_length:
            return self._fail(header.guid, "分块数据超过首块声明的总长度",
                              "the blocks add up to more than the declared length")
        if self.held - previous + units > self.max_held:
            return self._fail(
                header.guid,
                f"本连接未完成的分块传输合计超过 {self.max_held} 个字符, 已丢弃此传输; "
                "请等其他传输完成后再发",
                f"this connection's unfinished block transfers would hold more than "
                f"{self.max_held} characters; this transfer was dropped: send it again once "
                "the others are done")
        transfer.blocks[header.number] = data
        transfer.held += units - previous
        missing = [n for n in range(header.count) if n not in transfer.blocks]
        if missing:
            return BlockAnswer(header.guid, missing[0], False)
        del self._transfers[header.guid]
        whole = "".join(transfer.blocks[n] for n in range(header.count))
        if js_length(whole) != header.total_length or check_code(whole) != header.total_check:
            return _refused(header.guid, "分块数据总校验失败",
                            "the assembled request failed its check")
        return BlockAnswer(header.guid, header.count, True, assembled=whole)

    def expire(self) -> list[str]:
        """Drop the transfers that have had no block for `idle_timeout`; their guids."""
        now = self._clock()
        idle = [guid for guid, transfer in self._transfers.items()
                if now - transfer.last_block_at >= self.idle_timeout]
        for guid in idle:
            del self._transfers[guid]
            self._expired[guid] = None
            while len(self._expired) > MAX_REMEMBERED_EXPIRIES:
                self._expired.popitem(last=False)
            if self._on_expire is not None:
                self._on_expire(guid)
        return idle

    def seconds_to_next_expiry(self) -> float | None:
        if not self._transfers:
            return None
        oldest = min(transfer.last_block_at for transfer in self._transfers.values())
        return max(0.0, oldest + self.idle_timeout - self._clock())

    def _refuse_new(self, header: BlockHeader) -> BlockAnswer | None:
        if header.total_length > self.max_length:
            return _refused(header.guid,
                            f"报文长度 {header.total_length} 超过上限 {self.max_length}",
                            f"request of {header.total_length} characters is above the limit "
                            f"of {self.max_length}")
        if header.count == 0 or header.block_length > header.total_length:
            return _refused(header.guid, "分块报头数值不正确", "inconsistent block header")
        if len(self._transfers) >= MAX_OPEN_TRANSFERS:
            return _refused(header.guid, "同时进行的分块传输过多",
                            "too many block transfers at once on this connection")
        return None

    def _fail(self, guid: str, zh: str, en: str) -> BlockAnswer:
        self._transfers.pop(guid, None)
        return _refused(guid, zh, en)
