"""`eport doctor --json` against the real eportd on a real socket with each non-PC/SC backend
in trouble and healthy: a PKCS#11 module path that does not exist, a library that is not a
PKCS#11 module, SoftHSM2 without and with a token; a remote E-port client at a closed port, at
a plain HTTP server, and at a real eport-gateway (on a second eportd) that has no card.

No pcscd is needed (eportd runs only the backends named), so this lives in the unit tier, like
the SoftHSM2 backend tests.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_stack import running_daemon
from tests.support.eport_cli import describe, run_eport
from tests.support.gateway_stack import running_gateway
from tests.support.softhsm import SOFTHSM_MODULE, SoftHsm, build_softhsm, write_config
from tests.support.waiting import wait_until

NOT_PKCS11 = "/lib/x86_64-linux-gnu/libz.so.1"  # a real shared library without C_GetFunctionList
CONDITION_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return build_softhsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def empty_softhsm(tmp_path: Path) -> dict[str, str]:
    """SoftHSM2 with a token directory that holds no token."""
    write_config(tmp_path / "empty-hsm")
    return {"SOFTHSM2_CONF": str(tmp_path / "empty-hsm" / "softhsm2.conf")}


def doctor(socket_path: Path) -> dict[str, Any]:
    result = run_eport("doctor", "--json", socket_path=socket_path)
    assert result.returncode in (0, 20, 21), describe(result)  # OK, warnings, failures
    try:
        report: dict[str, Any] = json.loads(result.stdout)["result"]
    except (ValueError, KeyError):
        pytest.fail(f"doctor --json printed no report:\n{describe(result)}")
    return report


def statuses(report: dict[str, Any], prefix: str) -> dict[str, str]:
    return {f["code"]: f["status"] for f in report["findings"] if f["code"].startswith(prefix)}


def doctor_until(socket_path: Path, prefix: str, expected: dict[str, str]) -> dict[str, Any]:
    """Doctor's report once the backend's findings are `expected` (a remote backend's monitor
    may need a moment to look again after a start-up hiccup); fails with the last report."""
    last: list[dict[str, Any]] = []

    def reported() -> dict[str, Any] | None:
        report = doctor(socket_path)
        last[:] = [report]
        return report if statuses(report, prefix) == expected else None

    try:
        found: dict[str, Any] = wait_until(reported, timeout=CONDITION_TIMEOUT_S, interval=0.2,
                                           what=f"doctor reports {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n" + json.dumps(last[0] if last else None,
                                                        ensure_ascii=False, indent=1)) from None
    return found


def finding(report: dict[str, Any], code: str) -> dict[str, Any]:
    [found] = [f for f in report["findings"] if f["code"] == code]
    return found


def explained(found: dict[str, Any]) -> None:
    assert found["cause"]["zh"] and found["cause"]["en"]
    assert found["remedy"]["zh"] and found["remedy"]["en"]


# ---- PKCS#11 ----

def test_missing_module(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-module.so")
    with running_daemon(tmp_path / "d", "--pkcs11-module", missing) as daemon:
        report = doctor_until(daemon.socket, "EP-H", {"EP-H01": "FAIL", "EP-H02": "SKIP"})
    h01 = finding(report, "EP-H01")
    explained(h01)
    assert h01["details"]["condition"] == "PKCS11_MODULE_MISSING"
    assert missing in h01["cause"]["en"] and "--pkcs11-module" in h01["remedy"]["en"]


def test_library_that_is_not_a_pkcs11_module(tmp_path: Path) -> None:
    assert Path(NOT_PKCS11).exists(), "zlib is part of every Debian system"
    with running_daemon(tmp_path / "d", "--pkcs11-module", NOT_PKCS11) as daemon:
        report = doctor_until(daemon.socket, "EP-H", {"EP-H01": "FAIL", "EP-H02": "SKIP"})
    h01 = finding(report, "EP-H01")
    explained(h01)
    assert h01["details"]["condition"] == "PKCS11_MODULE_NOT_LOADED"
    assert f"pkcs11-tool --module {NOT_PKCS11} -L" in h01["remedy"]["en"]


def test_softhsm_without_token(tmp_path: Path, empty_softhsm: dict[str, str]) -> None:
    with running_daemon(tmp_path / "d", "--pkcs11-module", SOFTHSM_MODULE,
                        env=empty_softhsm) as daemon:
        report = doctor_until(daemon.socket, "EP-H", {"EP-H01": "OK", "EP-H02": "FAIL"})
    explained(finding(report, "EP-H02"))
    assert finding(report, "EP-H02")["details"]["condition"] == "PKCS11_NO_TOKEN"


def test_softhsm_with_tokens(tmp_path: Path, softhsm: SoftHsm) -> None:
    hsm = softhsm.copy_to(tmp_path / "hsm")
    with running_daemon(tmp_path / "d", "--pkcs11-module", SOFTHSM_MODULE,
                        "--pkcs11-sm2-mechanism", "0x80000001",
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as daemon:
        report = doctor_until(daemon.socket, "EP-H",
                              {"EP-H01": "OK", "EP-H02": "OK", "EP-H03": "OK"})
    assert finding(report, "EP-H02")["details"]["readers"] == 2  # the RSA and P-256 tokens


# ---- remote E-port client ----

def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nobody listens once the probe is closed


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_remote_client_unreachable(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    with running_daemon(tmp_path / "d", "--remote-client", url) as daemon:
        report = doctor_until(daemon.socket, "EP-W",
                              {"EP-W01": "FAIL", "EP-W02": "SKIP", "EP-W03": "SKIP"})
    w01 = finding(report, "EP-W01")
    explained(w01)
    assert w01["details"]["condition"] == "REMOTE_UNREACHABLE"
    assert url in w01["cause"]["en"] and "61232" in w01["remedy"]["en"]


def test_remote_client_that_is_a_plain_http_server(tmp_path: Path, http_server: str) -> None:
    with running_daemon(tmp_path / "d", "--remote-client", http_server) as daemon:
        report = doctor_until(daemon.socket, "EP-W",
                              {"EP-W01": "OK", "EP-W02": "FAIL", "EP-W03": "SKIP"})
    w02 = finding(report, "EP-W02")
    explained(w02)
    assert w02["details"]["condition"] == "REMOTE_WRONG_PROTOCOL"


def test_remote_client_without_card(tmp_path: Path, empty_softhsm: dict[str, str]) -> None:
    # The stand-in for the official client: eport-gateway on an eportd whose only backend (a
    # SoftHSM2 module without tokens) shows no card; no pcscd needed.
    with running_daemon(tmp_path / "under", "--pkcs11-module", SOFTHSM_MODULE,
                        env=empty_softhsm) as under, \
            running_gateway(under.socket, "--no-tls") as gateway, \
            running_daemon(tmp_path / "d", "--remote-client", gateway.url) as daemon:
        report = doctor_until(daemon.socket, "EP-W",
                              {"EP-W01": "OK", "EP-W02": "OK", "EP-W03": "WARN"})
    w03 = finding(report, "EP-W03")
    explained(w03)
    assert w03["details"]["condition"] == "REMOTE_NO_CARD"
