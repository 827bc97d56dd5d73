"""eportd --system on a real socket: a session serves only the uid that opened it.

Two real users call the same daemon through `eport`: root, and nobody in the group `eport`
(the system socket's group). The kernel's SO_PEERCRED names each; the daemon-core tier checks
the rule with made-up uids, this one through the socket, the peer proxy and the CLI.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eport.common.socket_location import SYSTEM_GROUP
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from tests.support.cards import write_card
from tests.support.daemon_stack import Daemon, start_daemon, wait_for_card
from tests.support.pcsc_stack import Pcscd, SimSlots, reader_for_slot

PIN = "88888888"  # the PIN of the card this test provisions (and of no other card)
NOBODY = 65534
EPORT = str(Path(sys.executable).with_name("eport"))
SYSTEM_PYTHON = "/usr/bin/python3"
REPOSITORY = Path(__file__).resolve().parents[2]
READER = reader_for_slot(0)
PIN_REFUSED_EXIT = 7  # ExitCode.PIN_REFUSED (docs/cli.md)


def _group_gid() -> int:
    """The system socket's group, created when this machine has none (a fresh CI machine;
    the udev rules and service units expect it on a workstation anyway)."""
    try:
        return grp.getgrnam(SYSTEM_GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", SYSTEM_GROUP], check=True)
        return grp.getgrnam(SYSTEM_GROUP).gr_gid


@pytest.fixture
def system_daemon(test_ca: TestCA, pcscd: Pcscd) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root: eportd --system, and a second user to call it")
    gid = _group_gid()
    # /tmp, not pytest's tmp_path: every directory on the way to the socket must be one the
    # other user can pass through.
    top = Path(tempfile.mkdtemp(prefix="eportd-system-"))
    os.chmod(top, 0o755)
    daemon = start_daemon(top / "run", "--system", "--trust-anchor", str(test_ca.trust_bundle))
    os.chmod(top / "run", 0o755)  # root's and not group-writable, as --system requires
    assert os.stat(daemon.socket).st_gid == gid
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(top, ignore_errors=True)


def _as_other_user(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """`eport ARGS` for a user who cannot reach this venv's interpreter (it lives under
    /root): the system's Python of the same version, with the repository and the venv's
    packages on its path, as an installed eport would run."""
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=False).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.fail(f"{SYSTEM_PYTHON} is Python {version}, the venv's is "
                    f"{sys.version_info[:2]}: the other user cannot run eport")
    command = [SYSTEM_PYTHON, "-c", "import sys; from eport.clients.cli.main import main; "
               "sys.exit(main())", *args]
    return command, {"PYTHONPATH": f"{REPOSITORY}:{sysconfig.get_paths()['purelib']}"}


def _eport(daemon: Daemon, *args: str, stdin: str | None = None, as_nobody: bool = False
           ) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
                   "EPORT_LANG": "en"}
    command = [EPORT, "--socket", str(daemon.socket), *args]
    if not as_nobody:
        return subprocess.run(command, input=stdin, capture_output=True, text=True,
                              timeout=60, env=environment, cwd="/tmp")
    command, extra = _as_other_user(command[1:])
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60,
                          env={**environment, **extra}, cwd="/tmp", user=NOBODY,
                          group=_group_gid(), extra_groups=[])


def test_a_session_serves_only_the_uid_that_opened_it(
        system_daemon: Daemon, sim_slots: Callable[..., SimSlots],
        card_images: dict[str, CardImage]) -> None:
    card_dir = Path(tempfile.mkdtemp(prefix="eport-card-"))
    sim_slots([(0, write_card(card_images["p256"], card_dir, "card.json"))])
    wait_for_card(system_daemon.stub(), READER)
    message = Path(tempfile.mkdtemp(prefix="eport-msg-")) / "message.xml"
    message.write_text("<CEBMessage>system mode</CEBMessage>")
    os.chmod(message.parent, 0o755)
    os.chmod(message, 0o644)

    opened = _eport(system_daemon, "pin", "verify", "--pin-stdin", stdin=PIN + "\n")
    assert opened.returncode == 0, opened.stderr
    assert _eport(system_daemon, "sign", str(message)).returncode == 0  # root's session

    # nobody may call the daemon (group eport) but not sign in root's session.
    status = _eport(system_daemon, "--json", "pin", "status", as_nobody=True)
    assert status.returncode == 0, status.stdout + status.stderr
    refused = _eport(system_daemon, "--json", "sign", str(message), as_nobody=True)
    assert refused.returncode == PIN_REFUSED_EXIT, refused.stdout + refused.stderr
    assert '"NOT_AUTHENTICATED"' in refused.stdout
    assert "another user" in refused.stdout
    assert PIN not in refused.stdout + refused.stderr

    # With its own PIN, nobody's call opens nobody's session, which ends root's.
    own = _eport(system_daemon, "sign", str(message), "--pin-stdin", stdin=PIN + "\n",
                 as_nobody=True)
    assert own.returncode == 0, own.stderr
    assert _eport(system_daemon, "sign", str(message), as_nobody=True).returncode == 0
    root_again = _eport(system_daemon, "--json", "sign", str(message))
    assert root_again.returncode == PIN_REFUSED_EXIT, root_again.stdout
    assert '"NOT_AUTHENTICATED"' in root_again.stdout


def test_a_user_outside_the_group_is_refused_at_the_socket(system_daemon: Daemon) -> None:
    command, extra = _as_other_user(["--socket", str(system_daemon.socket), "--json",
                                     "readers"])
    outsider = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
                                   **extra}, cwd="/tmp", user=NOBODY, group=NOBODY,
                              extra_groups=[])
    assert outsider.returncode != 0
    assert "DAEMON_PERMISSION_DENIED" in outsider.stdout or \
        "DAEMON_UNAVAILABLE" in outsider.stdout, outsider.stdout + outsider.stderr
