"""The gateway's security layers that need no card: who owns a TCP peer (the kernel's TCP
tables), strict JSON, block transfer limits and timeouts, the default origins. The whole
gateway process against other users' programs is tests/pcsc/test_gateway_security.py."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eport.clients.gateway import errors
from eport.clients.gateway.blocks import HEADER_LENGTH, BlockAssembler, check_code, js_length
from eport.clients.gateway.peer_uid import (
    Outcome,
    PeerOwner,
    admission,
    endpoint,
    find_peer,
    parse_address,
    parse_line,
    peer_owner,
)
from eport.clients.gateway.protocol import MAX_NUMBER_DIGITS, BadRequest, parse_request, reply
from eport.clients.gateway.server import GatewayConfig, origin_allowed

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

# Lines as Linux prints them (x86, little-endian), from a real /proc/net/tcp and tcp6.
TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
              "  timeout inode")
TCP6_HEADER = ("  sl  local_address                         remote_address                        "
               "st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode")


def tcp_line(number: int, local: str, remote: str, uid: int, inode: int, state: str = "01"
             ) -> str:
    return (f"{number:4d}: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 "
            f"{uid:5d}        0 {inode} 1 0000000000000000 20 4 30 10 -1")


# ---- the kernel's address format ----

def test_ipv4_addresses_are_words_in_machine_order() -> None:
    assert parse_address("0100007F:EFD0", "little") == (V4("127.0.0.1"), 0xEFD0)
    assert parse_address("7F000001:EFD0", "big") == (V4("127.0.0.1"), 0xEFD0)
    assert parse_address("0A01A8C0:F0AF", "little") == (V4("192.168.1.10"), 61615)


def test_ipv6_and_ipv4_mapped_addresses() -> None:
    assert parse_address("00000000000000000000000001000000:EFD0", "little") == \
        (V6("::1"), 0xEFD0)
    assert parse_address("0000000000000000FFFF00000100007F:EFD0", "little") == \
        (V6("::ffff:127.0.0.1"), 0xEFD0)
    assert parse_address("B80D0120000000000000000001000000:0050", "little") == \
        (V6("2001:db8::1"), 80)
    assert parse_address("20010DB8000000000000000000000001:0050", "big") == \
        (V6("2001:db8::1"), 80)


@pytest.mark.parametrize("field", ["0100007F", "0100007F:EF", "01007F:EFD0", "XYZ0007F:EFD0",
                                   ""])
def test_bad_address_fields(field: str) -> None:
    with pytest.raises(ValueError):
        parse_address(field, "little")


def test_lines_give_uid_and_inode_and_headers_give_nothing() -> None:
    assert parse_line(TCP_HEADER) is None
    assert parse_line(TCP6_HEADER) is None
    assert parse_line("") is None
    entry = parse_line(tcp_line(3, "0100007F:B5A2", "0100007F:EFD0", 65534, 812345), "little")
    assert entry is not None
    assert entry.local == (V4("127.0.0.1"), 0xB5A2)
    assert entry.remote == (V4("127.0.0.1"), 0xEFD0)
    assert (entry.uid, entry.inode) == (65534, 812345)
    assert parse_line("   0: garbage here and more fields x y z w v u") is None


def test_the_peer_is_the_entry_pointing_back_at_us() -> None:
    us, peer = (V4("127.0.0.1"), 61232), (V4("127.0.0.1"), 46530)
    lines = [
        TCP_HEADER,
        tcp_line(0, "0100007F:EF30", "00000000:0000", 0, 100, state="0A"),  # our listener
        tcp_line(1, "0100007F:EF30", "0100007F:B5C2", 0, 101),  # our end of it
        tcp_line(2, "0200007F:B5C2", "0100007F:EF30", 1000, 102),  # 127.0.0.2, same port
        tcp_line(3, "0100007F:B5C2", "0100007F:EF31", 1001, 103),  # to another port
        tcp_line(4, "0100007F:B5C2", "0100007F:EF30", 65534, 104),  # the peer
    ]
    entry = find_peer(lines, peer, us, "little")
    assert entry is not None and (entry.uid, entry.inode) == (65534, 104)
    assert find_peer(lines, (V4("127.0.0.1"), 1), us, "little") is None


def test_ipv4_mapped_peers_match_either_table() -> None:
    # An IPv6 listener sees an IPv4 peer as ::ffff:127.0.0.1; the peer's socket is in tcp.
    lines = [tcp_line(0, "0100007F:B5C2", "0100007F:EF30", 1000, 7)]
    entry = find_peer(lines, (V6("::ffff:127.0.0.1"), 0xB5C2), (V6("::ffff:127.0.0.1"), 61232),
                      "little")
    assert entry is not None and entry.uid == 1000
    # An IPv6 socket connected to ::ffff:127.0.0.1 is in tcp6 with mapped addresses.
    lines6 = [tcp_line(0, "0000000000000000FFFF00000100007F:B5C2",
                       "0000000000000000FFFF00000100007F:EF30", 1001, 8)]
    entry = find_peer(lines6, (V4("127.0.0.1"), 0xB5C2), (V4("127.0.0.1"), 61232), "little")
    assert entry is not None and entry.uid == 1001


# ---- the decision ----

LOCAL_PEER = (V4("127.0.0.1"), 40000)
REMOTE_PEER = (V4("192.168.1.20"), 40000)


@pytest.mark.parametrize(("owner", "peer", "remote_ok", "allowed", "says"), [
    (PeerOwner(Outcome.FOUND, 1000), LOCAL_PEER, False, True, "uid 1000"),
    (PeerOwner(Outcome.FOUND, 65534), LOCAL_PEER, False, False, "uid 65534 is not"),
    (PeerOwner(Outcome.FOUND, 65534), REMOTE_PEER, True, False, "uid 65534 is not"),
    (PeerOwner(Outcome.CLOSED), LOCAL_PEER, False, False, "closed"),
    (PeerOwner(Outcome.UNREADABLE, detail="/proc/net/tcp: denied"), LOCAL_PEER, True, False,
     "/proc/net/tcp: denied"),
    (PeerOwner(Outcome.NOT_FOUND), LOCAL_PEER, False, False, "no socket"),
    (PeerOwner(Outcome.NOT_FOUND), LOCAL_PEER, True, False, "no socket"),
    (PeerOwner(Outcome.NOT_FOUND), (V6("::ffff:127.0.0.1"), 1), True, False, "no socket"),
    (PeerOwner(Outcome.NOT_FOUND), REMOTE_PEER, False, False, "no socket"),
    (PeerOwner(Outcome.NOT_FOUND), REMOTE_PEER, True, True, "another machine"),
])
def test_only_the_gateways_own_uid_is_admitted(owner: PeerOwner, peer: tuple[V4 | V6, int],
                                               remote_ok: bool, allowed: bool, says: str
                                               ) -> None:
    decision = admission(owner, peer, 1000, remote_peers_allowed=remote_ok)
    assert decision.allowed is allowed
    assert says in decision.reason


def test_unreadable_tables_are_reported(tmp_path: Path) -> None:
    missing = tmp_path / "tcp"
    owner = peer_owner(LOCAL_PEER, (V4("127.0.0.1"), 61232), tables=(missing,))
    assert owner.outcome is Outcome.UNREADABLE and str(missing) in owner.detail
    table = tmp_path / "tcp-copy"
    table.write_text("\n".join([TCP_HEADER, tcp_line(0, "0100007F:9C40", "0100007F:EF30", 1,
                                                     0)]) + "\n")
    closed = peer_owner(LOCAL_PEER, (V4("127.0.0.1"), 61232), tables=(table,))
    assert closed.outcome is Outcome.CLOSED  # inode 0: no program holds the socket


# ---- the real kernel ----

@pytest.fixture
def connected_pairs() -> Iterator[list[tuple[str, socket.socket]]]:
    """Accepted sockets of real loopback connections: IPv4, IPv6, IPv4 on a dual-stack
    listener, IPv6-mapped onto an IPv4 listener."""
    keep: list[socket.socket] = []
    accepted: list[tuple[str, socket.socket]] = []

    def connect(name: str, listen_family: int, listen_at: str, client_family: int,
                client_to: str, dual: bool = False) -> None:
        listener = socket.socket(listen_family)
        if dual:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((listen_at, 0))
        listener.listen()
        client = socket.socket(client_family)
        client.connect((client_to, listener.getsockname()[1]))
        server_end, _ = listener.accept()
        keep.extend([listener, client, server_end])
        accepted.append((name, server_end))

    connect("ipv4", socket.AF_INET, "127.0.0.1", socket.AF_INET, "127.0.0.1")
    if socket.has_ipv6 and Path("/proc/net/tcp6").exists():
        connect("ipv6", socket.AF_INET6, "::1", socket.AF_INET6, "::1")
        connect("ipv4 on dual stack", socket.AF_INET6, "::", socket.AF_INET, "127.0.0.1",
                dual=True)
        connect("mapped to ipv4", socket.AF_INET, "127.0.0.1", socket.AF_INET6,
                "::ffff:127.0.0.1")
    yield accepted
    for sock in keep:
        sock.close()


def test_the_kernel_names_our_own_uid(connected_pairs: list[tuple[str, socket.socket]]) -> None:
    for name, server_end in connected_pairs:
        peer, ours = endpoint(server_end.getpeername()), endpoint(server_end.getsockname())
        assert peer is not None and ours is not None
        owner = peer_owner(peer, ours)
        assert owner == PeerOwner(Outcome.FOUND, os.geteuid(), owner.detail), (name, owner)


# ---- strict JSON ----

@pytest.mark.parametrize(("frame", "request_id", "method"), [
    ('{"_id": NaN, "_method": "cus-sec_SpcGetCardID"}', None, "cus-sec_SpcGetCardID"),
    ('{"_id": Infinity, "_method": "m"}', None, "m"),
    ('{"_id": -Infinity, "_method": "m"}', None, "m"),
    ('{"_id": 1e400, "_method": "m"}', None, "m"),
    ('{"_id": ' + "7" * 5000 + ', "_method": "m"}', None, "m"),
    ('{"_id": -' + "7" * 5000 + ', "_method": "m"}', None, "m"),
    ('{"_id": "\\ud800", "_method": "m"}', None, "m"),
    ('{"_id": 8, "_method": "m", "args": {"inData": NaN}}', 8, "m"),
    ('{"_id": 9, "_method": "m", "args": {"inData": "x", "n": ' + "1" * 5000 + '}}', 9, "m"),
    ('{"_id": "a", "_method": "m", "args": {"inData": "ok \\udc00 then"}}', "a", "m"),
    ('{"_id": "b", "_method": "m", "args": {"\\ud83d": "a key"}}', "b", "m"),
    ('{"_id": 10, "_method": "m\\udfff"}', 10, ""),
    ('{"_id": 11, "_method": "m", "extra": [1, [2, [Infinity]]]}', 11, "m"),
    ("NaN", None, ""),
    ("[Infinity]", None, ""),
    ("1" * 5000, None, ""),
])
def test_what_json_does_not_allow_is_refused(frame: str, request_id: object, method: str
                                             ) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(frame)
    assert refused.value.error.code == errors.BAD_ARGUMENTS
    assert "not valid JSON" in refused.value.error.text.en
    assert (refused.value.request_id, refused.value.method) == (request_id, method)
    # What is echoed is always valid JSON.
    json.loads(reply(refused.value.request_id, refused.value.method, []),
               parse_constant=lambda name: pytest.fail(f"{name} in a reply"))


def test_long_but_usable_numbers_and_ids_are_echoed_exactly() -> None:
    huge = int("9" * MAX_NUMBER_DIGITS)
    request = parse_request(json.dumps({"_id": huge, "_method": "m"}))
    assert request.request_id == huge
    assert f'"_id":{"9" * MAX_NUMBER_DIGITS},' in reply(request.request_id, "m", [])
    assert parse_request('{"_id": 1.5e300, "_method": "m"}').request_id == 1.5e300
    assert parse_request('{"_id": "😀 ok", "_method": "m"}').request_id == "😀 ok"
    assert parse_request('{"_id": "\\ud83d\\ude00", "_method": "m"}').request_id == "😀"
    assert parse_request('{"_id": 0.' + "1" * 5000 + ', "_method": "m"}').request_id == \
        pytest.approx(0.1111111)


# ---- block transfer limits ----

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def blocks_of(text: str, count: int, guid: str | None = None) -> list[str]:
    guid = guid or str(uuid.uuid4())
    size = -(-len(text) // count)
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    return [(f"BLOCKTXT{check_code(text)}{check_code(chunk)}{js_length(text):016d}"
             f"{js_length(chunk):08d}{len(chunks):04d}{guid}{number:04d}"
             ).ljust(HEADER_LENGTH, "0") + chunk for number, chunk in enumerate(chunks)]


def request_of(units: int, request_id: int = 1) -> str:
    head = json.dumps({"_id": request_id, "_method": "m", "args": {"inData": ""}})
    return head.replace('"inData": ""', '"inData": "' + "x" * (units - len(head)) + '"')


def test_unfinished_transfers_of_a_connection_share_one_cap() -> None:
    assembler = BlockAssembler(max_length=10_000)
    a, b = blocks_of(request_of(8000, 1), 2), blocks_of(request_of(8000, 2), 2)
    assert assembler.receive(a[0]).ok
    assert assembler.receive(b[0]).ok
    assert assembler.held == 8000
    refused = assembler.receive(a[1])  # 12,000 held would be above 10,000
    assert (refused.ok, refused.finish) == (False, True)
    assert refused.error is not None and "would hold more than 10000" in refused.error.text.en
    assert assembler.held == 4000 and assembler.open_transfers == 1  # a was dropped
    assert assembler.receive(b[1]).assembled == request_of(8000, 2)
    assert assembler.held == 0


def test_blocks_never_hold_more_than_the_declared_length() -> None:
    assembler = BlockAssembler(max_length=100_000)
    text = request_of(1000)
    guid = str(uuid.uuid4())
    # Declares 1000 units in 3 blocks, then sends blocks of 600 each.
    frames = [(f"BLOCKTXT{check_code(text)}{check_code(piece)}{1000:016d}{600:08d}0003{guid}"
               f"{number:04d}").ljust(HEADER_LENGTH, "0") + piece
              for number, piece in enumerate(["y" * 600] * 3)]
    assert assembler.receive(frames[0]).ok
    refused = assembler.receive(frames[1])
    assert (refused.ok, refused.finish) == (False, True)
    assert refused.error is not None and "more than the declared length" in refused.error.text.en
    assert assembler.held == 0


def test_stalled_transfers_time_out_and_free_what_they_hold() -> None:
    clock = Clock()
    expired: list[str] = []
    assembler = BlockAssembler(max_length=100_000, idle_timeout=60, clock=clock,
                               on_expire=expired.append)
    guid = str(uuid.uuid4())
    frames = blocks_of(request_of(9000), 3, guid)
    assert assembler.seconds_to_next_expiry() is None
    assert assembler.receive(frames[0]).ok
    clock.now += 59
    assert assembler.receive(frames[1]).ok  # each block restarts the wait
    assert assembler.seconds_to_next_expiry() == 60
    clock.now += 30
    assert assembler.expire() == [] and assembler.held == 6000
    clock.now += 30
    assert assembler.expire() == [guid] and expired == [guid]
    assert assembler.held == 0 and assembler.open_transfers == 0
    late = assembler.receive(frames[2])
    assert (late.ok, late.finish, late.assembled) == (False, True, None)
    assert late.error is not None and "got no block for 60 seconds" in late.error.text.en
    assert "请重新发送整个请求" in late.error.text.zh
    # Told once; sent again from the start, the same request goes through.
    assert [assembler.receive(frame).finish for frame in frames][-1]


# ---- origins ----

def test_plain_http_single_window_pages_are_not_allowed_by_default() -> None:
    config = GatewayConfig(eportd_socket=Path("/nonexistent"))
    for host in ("www", "app", "swapp"):
        assert origin_allowed(config, f"https://{host}.singlewindow.cn")
        assert not origin_allowed(config, f"http://{host}.singlewindow.cn")
