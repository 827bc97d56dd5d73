"""Which local user is at the other end of a TCP connection: the uid that owns the peer's
socket, read from the kernel's TCP tables /proc/net/tcp and /proc/net/tcp6.

An Origin header only tells web pages apart; any program can send any Origin. What a program
cannot fake is the owner of its own socket, which the kernel records when the socket is made.
For a connection on this machine both ends are in the kernel's tables: our accepted socket,
and the peer's socket, whose local address and port are our peer's and whose remote ones are
ours. That entry's uid column is the peer's user.

Why /proc/net/tcp{,6} and not sock_diag netlink (which can look up one socket by its
addresses): the /proc tables need no kernel module (inet_diag and tcp_diag are modules that a
container or a minimal kernel may not have), are readable by every user, and can be checked by
hand (`cat /proc/net/tcp`, `ss -tne`). The price is reading every TCP socket of the machine
for each new connection, which is done in a worker thread, and only once per connection.
"""

from __future__ import annotations

import enum
import ipaddress
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Endpoint = tuple[IPAddress, int]
ByteOrder = Literal["little", "big"]

TCP4_TABLE = Path("/proc/net/tcp")
TCP6_TABLE = Path("/proc/net/tcp6")


@dataclass(frozen=True)
class SocketEntry:
    """One line of /proc/net/tcp or tcp6."""

    local: Endpoint
    remote: Endpoint
    uid: int
    # 0 when no file refers to the socket any more: a socket closed by its program that the
    # kernel keeps for TCP's closing states. Such entries show uid 0 whoever owned them.
    inode: int


def parse_address(field: str, byteorder: ByteOrder = sys.byteorder) -> Endpoint:
    """`0100007F:EFD0` or a 32-digit IPv6 form: the kernel prints the address as 32-bit words
    in the machine's byte order, each as 8 hex digits, and the port as 4 hex digits."""
    address_hex, _, port_hex = field.partition(":")
    if len(address_hex) not in (8, 32) or len(port_hex) != 4:
        raise ValueError(f"not an address:port field: {field!r}")
    raw = b"".join(int(address_hex[i:i + 8], 16).to_bytes(4, byteorder)
                   for i in range(0, len(address_hex), 8))
    address: IPAddress = (ipaddress.IPv4Address(raw) if len(raw) == 4
                          else ipaddress.IPv6Address(raw))
    return address, int(port_hex, 16)


def parse_line(line: str, byteorder: ByteOrder = sys.byteorder) -> SocketEntry | None:
    """An entry, or None for the header line and anything that is not an entry."""
    fields = line.split()
    # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    if len(fields) < 10 or not fields[0].endswith(":") or not fields[0][:-1].isdigit():
        return None
    try:
        return SocketEntry(parse_address(fields[1], byteorder), parse_address(fields[2], byteorder),
                           int(fields[7]), int(fields[9]))
    except ValueError:
        return None


def unmapped(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d as a.b.c.d: an IPv6 socket talking to an IPv4 peer shows it that way."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def same_endpoint(one: Endpoint, other: Endpoint) -> bool:
    return one[1] == other[1] and unmapped(one[0]) == unmapped(other[0])


def find_peer(lines: Iterable[str], peer: Endpoint, ours: Endpoint,
              byteorder: ByteOrder = sys.byteorder) -> SocketEntry | None:
    """The peer's socket: local end `peer`, remote end `ours`."""
    port_suffix = f":{peer[1]:04X}"
    for line in lines:
        fields = line.split(maxsplit=2)
        # Most lines are other sockets: compare the port text before decoding anything.
        if len(fields) < 2 or not fields[1].endswith(port_suffix):
            continue
        entry = parse_line(line, byteorder)
        if entry is not None and same_endpoint(entry.local, peer) \
                and same_endpoint(entry.remote, ours):
            return entry
    return None


class Outcome(enum.Enum):
    FOUND = "found"
    CLOSED = "closed"          # the peer's entry exists but no program holds the socket
    NOT_FOUND = "not found"    # no local socket matches: the peer is on another machine
    UNREADABLE = "unreadable"  # the tables could not be read


@dataclass(frozen=True)
class PeerOwner:
    outcome: Outcome
    uid: int | None = None
    detail: str = ""


def _tables_for(peer: Endpoint) -> tuple[Path, ...]:
    # An IPv4 peer may also be an IPv6 socket connected to a ::ffff: address (tcp6);
    # an IPv6 peer is only in tcp6.
    return (TCP4_TABLE, TCP6_TABLE) if unmapped(peer[0]).version == 4 else (TCP6_TABLE,)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="ascii", errors="replace") as table:
        yield from table


def peer_owner(peer: Endpoint, ours: Endpoint,
               tables: tuple[Path, ...] | None = None) -> PeerOwner:
    """Who owns the socket at `peer` that is connected to `ours` (blocking: reads /proc)."""
    unreadable: list[str] = []
    for path in tables or _tables_for(peer):
        try:
            entry = find_peer(_lines(path), peer, ours)
        except OSError as error:
            # No IPv6 in the kernel means no tcp6 table, and then no IPv6 peer either.
            if path == TCP6_TABLE and not path.exists():
                continue
            unreadable.append(f"{path}: {error.strerror or error}")
            continue
        if entry is None:
            continue
        if entry.inode == 0:
            return PeerOwner(Outcome.CLOSED, detail=str(path))
        return PeerOwner(Outcome.FOUND, entry.uid, str(path))
    if unreadable:
        return PeerOwner(Outcome.UNREADABLE, detail="; ".join(unreadable))
    return PeerOwner(Outcome.NOT_FOUND)


def endpoint(address: object) -> Endpoint | None:
    """A socket address tuple from getpeername/getsockname as an Endpoint (None otherwise)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    try:
        host = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    except ValueError:
        return None
    return host, int(address[1])


def is_loopback(address: IPAddress) -> bool:
    return unmapped(address).is_loopback


@dataclass(frozen=True)
class Admission:
    allowed: bool
    # What the log says: the peer's uid and why, never anything the peer sent.
    reason: str


def admission(owner: PeerOwner, peer: Endpoint, our_uid: int, *,
              remote_peers_allowed: bool) -> Admission:
    """Whether a connection may go on, from who owns its peer socket.

    A peer whose owner cannot be established is refused: the check exists because any local
    program can connect, and "could not tell" must not let one in. The one exception is a
    peer on another machine (no local socket, a non-loopback address) when the gateway was
    told to listen beyond loopback: there is no local user to compare, and the owner asked
    for other machines to be served."""
    if owner.outcome is Outcome.FOUND:
        if owner.uid == our_uid:
            return Admission(True, f"uid {owner.uid}")
        return Admission(False, f"uid {owner.uid} is not the gateway's user (uid {our_uid})")
    if owner.outcome is Outcome.CLOSED:
        return Admission(False, "the peer's socket is already closed (no owner to check)")
    if owner.outcome is Outcome.UNREADABLE:
        return Admission(False, f"the owner cannot be read ({owner.detail})")
    if remote_peers_allowed and not is_loopback(peer[0]):
        return Admission(True, "another machine (no local uid; allowed by --allow-non-loopback)")
    return Admission(False, "no socket in the kernel's TCP tables matches the peer")
