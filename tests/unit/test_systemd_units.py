"""The systemd units in udev/systemd: what an administrator relies on, and systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

UNITS = Path(__file__).resolve().parents[2] / "udev" / "systemd"
SYSTEM, USER = UNITS / "system", UNITS / "user"
INSTALLED_EPORTD = "/usr/local/bin/eportd"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of key -> values. systemd allows a key to repeat (After=, DeviceAllow=), which
    configparser would reject or collapse, hence this small parser."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"{path.name}:{number}: not a key=value line"
        assert not line.endswith("\\"), f"{path.name}:{number}: continuation lines not expected"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def value(unit: Unit, section: str, key: str) -> str:
    """The effective value of a key that must be set (the last assignment wins in systemd)."""
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is not set"
    return values[-1]


def words(unit: Unit, section: str, key: str) -> list[str]:
    return " ".join(unit.get(section, {}).get(key, [])).split()


@pytest.fixture(scope="module")
def system_socket() -> Unit:
    return parse_unit(SYSTEM / "eportd.socket")


@pytest.fixture(scope="module")
def system_service() -> Unit:
    return parse_unit(SYSTEM / "eportd.service")


@pytest.fixture(scope="module")
def user_socket() -> Unit:
    return parse_unit(USER / "eportd.socket")


@pytest.fixture(scope="module")
def user_service() -> Unit:
    return parse_unit(USER / "eportd.service")


def test_system_socket_lets_root_and_the_eport_group_call(system_socket: Unit) -> None:
    assert value(system_socket, "Socket", "ListenStream") == "/run/eportd/eportd.sock"
    assert value(system_socket, "Socket", "SocketUser") == "root"
    assert value(system_socket, "Socket", "SocketGroup") == "eport"
    assert value(system_socket, "Socket", "SocketMode") == "0660"
    # systemd creates /run/eportd as root:root, so the group needs search permission through
    # "others" to reach the socket, whose own mode is the access check.
    directory_mode = int(value(system_socket, "Socket", "DirectoryMode"), 8)
    assert directory_mode & 0o001 and not directory_mode & 0o022
    assert value(system_socket, "Socket", "Accept") == "no"
    assert value(system_socket, "Install", "WantedBy") == "sockets.target"


def test_system_service_runs_eportd_system_with_notify(system_service: Unit) -> None:
    command = value(system_service, "Service", "ExecStart").split()
    assert command[0] == INSTALLED_EPORTD
    assert command[1:] == ["--system"]
    assert value(system_service, "Service", "Type") == "notify"
    assert value(system_service, "Service", "Restart") == "on-failure"
    assert "pcscd.socket" in words(system_service, "Unit", "After")
    assert "pcscd.socket" in words(system_service, "Unit", "Wants")
    assert "eportd.socket" in words(system_service, "Unit", "Requires")


def test_system_service_is_hardened(system_service: Unit) -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "RuntimeDirectory": "eportd",
    }
    for key, wanted in expected.items():
        assert value(system_service, "Service", key) == wanted, key
    # The USB scan opens /dev/bus/usb nodes; nothing else in /dev is allowed.
    assert system_service["Service"]["DeviceAllow"] == ["char-usb_device rw"]


@pytest.mark.parametrize("kind", ["system", "user"])
def test_stopping_the_service_keeps_the_socket_node(kind: str) -> None:
    socket, service = (parse_unit(UNITS / kind / f"eportd.{s}") for s in ("socket", "service"))
    # The service's RuntimeDirectory is the socket's directory; were it removed on stop, the
    # socket node would go with it and activation would break until eportd.socket restarts.
    socket_dir = PurePosixPath(value(socket, "Socket", "ListenStream")).parent.name
    assert value(service, "Service", "RuntimeDirectory") == socket_dir
    assert value(service, "Service", "RuntimeDirectoryPreserve") == "yes"


def test_user_socket_is_private_to_the_user(user_socket: Unit) -> None:
    assert value(user_socket, "Socket", "ListenStream") == "%t/eportd/eportd.sock"
    assert value(user_socket, "Socket", "SocketMode") == "0600"
    assert value(user_socket, "Socket", "DirectoryMode") == "0700"
    assert "SocketGroup" not in user_socket["Socket"]
    assert value(user_socket, "Install", "WantedBy") == "sockets.target"


def test_user_service_runs_eportd_in_user_mode_with_notify(user_service: Unit) -> None:
    command = value(user_service, "Service", "ExecStart").split()
    assert command == [INSTALLED_EPORTD]  # user mode is the daemon's default
    assert value(user_service, "Service", "Type") == "notify"
    assert value(user_service, "Service", "Restart") == "on-failure"
    assert "eportd.socket" in words(user_service, "Unit", "Requires")


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("kind", ["system", "user"])
def test_systemd_analyze_verify_accepts_the_units(kind: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    # verify checks that ExecStart is executable; /usr/local/bin/eportd only exists once
    # installed, so point it at this venv's console script (or any executable).
    venv_eportd = Path(sys.executable).parent / "eportd"
    executable = str(venv_eportd) if os.access(venv_eportd, os.X_OK) else "/bin/true"
    units = tmp_path / kind
    units.mkdir()
    for source in sorted((UNITS / kind).glob("eportd.*")):
        text = source.read_text(encoding="utf-8").replace(INSTALLED_EPORTD, executable)
        (units / source.name).write_text(text, encoding="utf-8")

    command = [SYSTEMD_ANALYZE, *(["--user"] if kind == "user" else []), "verify",
               "./eportd.socket", "./eportd.service"]
    # The user manager needs a runtime directory to resolve %t.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    result = subprocess.run(command, cwd=units, env=env, capture_output=True, text=True,
                            timeout=120, check=False)

    # verify exits 0 on mere warnings (an unknown key, a bad value), so its output counts too;
    # lines about other units of this machine are not ours to judge.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "eportd" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_user_gateway_serves_loopback_after_eportd() -> None:
    """The per-user eport-gateway: the installed console script with its safe defaults (no
    --listen, so loopback only; no --allow-origin, so the Single Window only), ordered after
    the user's eportd socket, started at login once enabled."""
    unit = parse_unit(USER / "eport-gateway.service")
    command = value(unit, "Service", "ExecStart").split()
    assert command == ["/usr/local/bin/eport-gateway", "serve"]
    assert "eportd.socket" in words(unit, "Unit", "After")
    assert value(unit, "Service", "Restart") == "on-failure"
    assert value(unit, "Install", "WantedBy") == "default.target"
    assert not (SYSTEM / "eport-gateway.service").exists()  # never one for all users
