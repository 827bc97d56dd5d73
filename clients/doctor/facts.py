"""Everything doctor looks at, gathered once (read-only) before any check runs, so that the
checks are pure functions of these facts and the support bundle holds exactly what was seen.

Reading the daemon spends no PIN try: GetPinStatus asks the card for its counters only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from eport.clients.doctor.browser_facts import BrowserFacts, gather_browser
from eport.clients.doctor.host import Host
from eport.clients.kit.daemon_client import DaemonClient
from eport.clients.kit.errors import CliError
from eport.protos.v1 import eportd_pb2 as pb

PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
DRIVER_DIRECTORIES = ("/usr/lib/pcsc/drivers", "/usr/local/lib/pcsc/drivers",
                      "/usr/lib64/pcsc/drivers")
READER_CONF_DIRECTORIES = ("/etc/reader.conf.d", "/usr/local/etc/reader.conf.d")
UDEV_RULES = ("/etc/udev/rules.d/70-eport.rules", "/usr/lib/udev/rules.d/70-eport.rules",
              "/lib/udev/rules.d/70-eport.rules")
POLKIT_PCSC_POLICY = "/usr/share/polkit-1/actions/org.debian.pcsc-lite.policy"
EPORT_POLKIT_RULE = "/etc/polkit-1/rules.d/60-eport.rules"


@dataclass
class SocketFacts:
    path: Path
    exists: bool
    is_socket: bool = False
    uid: int = -1
    gid: int = -1
    mode: int = 0
    usable_by_us: bool = False


@dataclass
class CardFacts:
    reader: str
    card_id: str
    info: pb.CardInfo | None = None
    pins: pb.PinStatus | None = None
    certificate: pb.Certificate | None = None
    errors: dict[str, CliError] = field(default_factory=dict)


@dataclass
class Facts:
    now: datetime
    # pcscd on this host
    pcscd_path: str | None = None
    pcscd_version: str | None = None
    pcscd_pids: list[int] = field(default_factory=list)
    pcscd_socket_exists: bool = False
    pcscd_socket_unit: str | None = None   # `systemctl is-active pcscd.socket`, if any
    pcscd_journal: str | None = None
    polkit_policy: bool = False
    eport_polkit_rule: bool = False
    # drivers and rules
    ccid_driver: str | None = None
    vpcd_driver: str | None = None
    vpcd_configured: bool = False
    udev_rules: str | None = None
    ntp_synchronized: bool | None = None
    # eportd
    socket: SocketFacts | None = None
    daemon_error: CliError | None = None
    info: pb.DaemonInfo | None = None
    readers: pb.ListReadersResponse | None = None
    usb: pb.ListUsbDevicesResponse | None = None
    cards: list[CardFacts] = field(default_factory=list)
    # the browser path: the gateway's wss certificate, the browser's trust, the ports
    browser: BrowserFacts | None = None


def _first_existing(host: Host, candidates: list[str]) -> str | None:
    return next((path for path in candidates if host.exists(path)), None)


def gather_host(host: Host, facts: Facts) -> None:
    facts.pcscd_path = host.which("pcscd")
    if facts.pcscd_path:
        version = host.run(facts.pcscd_path, "--version")
        facts.pcscd_version = version.splitlines()[0] if version else None
    facts.pcscd_pids = host.processes("pcscd")
    facts.pcscd_socket_exists = host.exists(PCSCD_SOCKET)
    if host.exists("/run/systemd/system"):  # systemd is the init: its answers mean something
        facts.pcscd_socket_unit = host.run("systemctl", "is-active", "pcscd.socket")
        facts.pcscd_journal = host.run("journalctl", "-u", "pcscd.service", "-n", "200",
                                       "--no-pager", "-q")
        synced = host.run("timedatectl", "show", "-p", "NTPSynchronized", "--value")
        facts.ntp_synchronized = None if synced is None else synced.strip() == "yes"
    facts.polkit_policy = host.exists(POLKIT_PCSC_POLICY)
    facts.eport_polkit_rule = host.exists(EPORT_POLKIT_RULE)
    facts.ccid_driver = _first_existing(
        host, [f"{d}/ifd-ccid.bundle" for d in DRIVER_DIRECTORIES])
    facts.vpcd_driver = _first_existing(
        host, [f"{d}/serial/libifdvpcd.so" for d in DRIVER_DIRECTORIES])
    facts.vpcd_configured = any("vpcd" in name for d in READER_CONF_DIRECTORIES
                                for name in host.list_dir(d))
    facts.udev_rules = _first_existing(host, list(UDEV_RULES))


def socket_facts(path: Path) -> SocketFacts:
    try:
        info = path.stat()
    except OSError:
        return SocketFacts(path, exists=False)
    return SocketFacts(path, True, stat.S_ISSOCK(info.st_mode), info.st_uid, info.st_gid,
                       stat.S_IMODE(info.st_mode), os.access(path, os.R_OK | os.W_OK))


def gather_daemon(client: DaemonClient, facts: Facts) -> None:
    facts.socket = socket_facts(client.socket)
    try:
        facts.info = client.daemon_info()
        facts.readers = client.readers()
        facts.usb = client.usb_devices()
    except CliError as error:
        facts.daemon_error = error
        return
    for reader in facts.readers.readers:
        if reader.card_id:
            facts.cards.append(gather_card(client, reader))


def gather_card(client: DaemonClient, reader: pb.Reader) -> CardFacts:
    card = CardFacts(reader.name, reader.card_id)
    chosen = pb.CardSelector(card_id=reader.card_id)
    for name, read in (("info", client.card_info), ("pins", client.pin_status),
                       ("certificate", client.certificate)):
        try:
            setattr(card, name, read(chosen))
        except CliError as error:
            card.errors[name] = error
    return card


def gather(host: Host, client: DaemonClient) -> Facts:
    facts = Facts(now=host.now())
    gather_host(host, facts)
    gather_daemon(client, facts)
    facts.browser = gather_browser(host.which("certutil"))
    return facts
