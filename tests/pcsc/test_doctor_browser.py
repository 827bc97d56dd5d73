"""`eport doctor`'s browser-path findings against real listeners on the gateway's fixed ports
61231 and 61232: the real eport-gateway serving wss with the certificate of `tls install`, and
another program holding a port. Run under the shared lock (the ports are the machine's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eport.clients.gateway.tls_setup import TlsPaths, install
from tests.support.gateway_stack import running_gateway

pytestmark = pytest.mark.pcsc
EPORT = [sys.executable, "-m", "eport.clients.cli.main"]


def home_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "EPORT_LANG": "en"}


def doctor(tmp_path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The EP-B findings by code (EP-B06: by the port it is about)."""
    done = subprocess.run([*EPORT, "--socket", str(tmp_path / "no-eportd.sock"), "doctor",
                           "--json"], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert "Traceback" not in done.stderr, done.stderr
    findings = json.loads(done.stdout)["result"]["findings"]
    return {(f["subject"] if f["code"] == "EP-B06" else f["code"]): f for f in findings
            if f["code"].startswith("EP-B")}


def test_a_program_holding_the_wss_port_is_named(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 61231)):  # this test process holds the port
        found = doctor(tmp_path, home_env(tmp_path))
    held = found["port 61231"]
    assert held["status"] == "FAIL"
    assert f"pid {os.getpid()}" in held["title"]["en"] and "pytest" in held["title"]["en"]
    assert held["details"]["pids"] == [os.getpid()]
    assert held["cause"]["zh"] and held["remedy"]["en"] and held["remedy"]["zh"]
    # Never set up, nothing else listening: warnings and skips, not failures.
    assert {code: f["status"] for code, f in found.items() if code != "port 61231"} == {
        "EP-B01": "WARN", "EP-B02": "SKIP", "EP-B03": found["EP-B03"]["status"],
        "EP-B04": "WARN"}
    assert found["EP-B03"]["status"] in ("SKIP", "OK")


def test_the_real_gateway_on_both_ports(tmp_path: Path) -> None:
    env = home_env(tmp_path)
    home = Path(env["HOME"])
    install(TlsPaths(home / ".config" / "eport" / "gateway-tls", home / ".pki" / "nssdb"))
    with running_gateway(tmp_path / "no-eportd.sock", "--port", "61232", "--tls-port", "61231",
                         env=env) as gateway:
        assert gateway.wss_url is not None, gateway.log()
        found = doctor(tmp_path, env)
        pid = gateway.process.pid
    assert found["EP-B01"]["status"] == "OK" and found["EP-B02"]["status"] == "OK"
    for code in ("EP-B04", "EP-B05"):
        assert found[code]["status"] == "OK", found[code]
        assert f"pid {pid}" in found[code]["title"]["en"]
    assert not [key for key in found if key.startswith("port ")]
    # The name does not point here unless this machine's hosts file says so.
    assert found["EP-B03"]["status"] in ("OK", "FAIL")
    if found["EP-B03"]["status"] == "FAIL":
        assert "127.0.0.1 wss.singlewindow.cn" in found["EP-B03"]["remedy"]["en"]
