"""The data centre off loopback: TLS (server certificate, optional client certificates) or
refusal ("off loopback"). Certificates are made by the openssl command, the server is
the real one (run_server, and the console command for the refusal), the client is the one the
customs, bonded and auth commands use."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eport.clients.datacenter.channel import ClientTls
from eport.clients.datacenter.client import DataCenterClient
from eport.clients.kit.errors import CliError
from eport.datacenter.server import (
    DataCenterSettings,
    RunningDataCenter,
    ServerConfigError,
    run_server,
)
from eport.datacenter.tls import ServerTls
from eport.firmware_sim.ca import TestCA
from tests.support.datacenter_db import new_database
from tests.support.openssl_tool import openssl_command, run_checked

# Each test runs on SQLite and on PostgreSQL (tests/support/datacenter_db.py).
pytestmark = pytest.mark.usefixtures("datacenter_db")



@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def _ca(openssl: str, pki: Pki, name: str) -> None:
    run_checked(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(pki.path(f"{name}.key")), "-out",
                str(pki.path(f"{name}.pem")), "-days", "2", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(openssl: str, pki: Pki, name: str, ca: str, extensions: str) -> None:
    key, request = pki.path(f"{name}.key"), pki.path(f"{name}.csr")
    run_checked(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(request),
                "-subj", f"/CN={name}")
    extension_file = pki.path(f"{name}.ext")
    extension_file.write_text(extensions)
    run_checked(openssl, "x509", "-req", "-in", str(request), "-CA", str(pki.path(f"{ca}.pem")),
                "-CAkey", str(pki.path(f"{ca}.key")), "-CAcreateserial", "-days", "1",
                "-out", str(pki.path(f"{name}.pem")), "-extfile", str(extension_file))


def _interface_address() -> str | None:
    """An IPv4 address of this host's own interfaces that is not loopback (hostname -I)."""
    command = shutil.which("hostname")
    if command is None:
        return None
    listed = subprocess.run([command, "-I"], capture_output=True, text=True, timeout=10,
                            check=False).stdout.split()
    for candidate in listed:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(candidate)
            if address.version == 4 and not address.is_loopback:
                return candidate
    return None


INTERFACE = _interface_address()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    openssl = openssl_command()
    made = Pki(tmp_path_factory.mktemp("datacenter-tls"))
    for ca in ("server-ca", "other-ca", "client-ca"):
        _ca(openssl, made, ca)
    _leaf(openssl, made, "server", "server-ca",
          f"subjectAltName=IP:127.0.0.1,DNS:localhost{f',IP:{INTERFACE}' if INTERFACE else ''}"
          "\nextendedKeyUsage=serverAuth\n")
    _leaf(openssl, made, "client", "client-ca", "extendedKeyUsage=clientAuth\n")
    _leaf(openssl, made, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return made


@contextlib.contextmanager
def _serving(tmp_path: Path, test_ca: TestCA, listen: str, tls: ServerTls | None
             ) -> Iterator[RunningDataCenter]:
    settings = DataCenterSettings(db_path=new_database(tmp_path), listen=listen,
                                  trust_anchors=(test_ca.trust_bundle,), tls=tls)
    with run_server(settings) as running:
        yield running
        running.stop(grace=1.0)


def _refusal(tmp_path: Path, test_ca: TestCA, listen: str, tls: ServerTls | None) -> str:
    """The ServerConfigError text of a data centre that must not start."""
    with pytest.raises(ServerConfigError) as refused, _serving(tmp_path, test_ca, listen, tls):
        pass
    return str(refused.value)


def _loopback_address(running: RunningDataCenter) -> str:
    # Bound on every interface (not loopback, so TLS is compulsory), reached on 127.0.0.1,
    # a name the server certificate holds.
    return f"127.0.0.1:{running.address.rpartition(':')[2]}"


def _info(address: str, tls: ClientTls) -> str:
    client = DataCenterClient(address, timeout=5, tls=tls)
    try:
        return client.info().audience
    finally:
        client.close()


def test_off_loopback_without_tls_is_refused_with_its_remedy(tmp_path: Path,
                                                             test_ca: TestCA) -> None:
    refused = _refusal(tmp_path, test_ca, "0.0.0.0:0", None)
    assert "--tls-cert" in refused and "不是本机回环地址" in refused
    # The console command says the same and exits 1, serving nothing.
    result = subprocess.run(
        [sys.executable, "-m", "eport.datacenter.command", "--trust-anchor",
         str(test_ca.trust_bundle), "--db", new_database(tmp_path, "cli"), "--listen",
         "0.0.0.0:0"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    assert "--tls-cert FILE --tls-key FILE" in result.stderr
    assert "ready on" not in result.stdout


def test_tls_serves_a_client_that_trusts_the_server_ca(tmp_path: Path, test_ca: TestCA,
                                                      pki: Pki) -> None:
    tls = ServerTls(pki.path("server.pem"), pki.path("server.key"))
    with _serving(tmp_path, test_ca, "0.0.0.0:0", tls) as running:
        address = _loopback_address(running)
        assert _info(address, ClientTls(ca=pki.path("server-ca.pem"))) == "eport-datacenter"
        # A client trusting another CA refuses the server: the call never reaches it.
        with pytest.raises(CliError) as wrong_ca:
            _info(address, ClientTls(ca=pki.path("other-ca.pem")))
        assert wrong_ca.value.code == "DATACENTER_UNAVAILABLE"
        # Plaintext to a TLS port gets no answer either.
        with pytest.raises(CliError):
            _info(address, ClientTls())


@pytest.mark.skipif(INTERFACE is None, reason="this host has no IPv4 address besides loopback")
def test_an_interface_address_is_served_with_tls_only(tmp_path: Path, test_ca: TestCA,
                                                      pki: Pki) -> None:
    assert INTERFACE is not None
    assert "--tls-cert" in _refusal(tmp_path, test_ca, f"{INTERFACE}:0", None)
    tls = ServerTls(pki.path("server.pem"), pki.path("server.key"))
    with _serving(tmp_path, test_ca, f"{INTERFACE}:0", tls) as running:
        assert running.address.startswith(f"{INTERFACE}:")
        assert _info(running.address, ClientTls(ca=pki.path("server-ca.pem"))) == \
            "eport-datacenter"
        with pytest.raises(CliError):
            _info(running.address, ClientTls(ca=pki.path("other-ca.pem")))


def test_client_certificates_are_required_when_configured(tmp_path: Path, test_ca: TestCA,
                                                          pki: Pki) -> None:
    tls = ServerTls(pki.path("server.pem"), pki.path("server.key"), pki.path("client-ca.pem"))
    with _serving(tmp_path, test_ca, "0.0.0.0:0", tls) as running:
        address = _loopback_address(running)
        trusted = pki.path("server-ca.pem")
        assert _info(address, ClientTls(trusted, pki.path("client.pem"),
                                        pki.path("client.key"))) == "eport-datacenter"
        with pytest.raises(CliError) as without:
            _info(address, ClientTls(ca=trusted))
        assert without.value.code == "DATACENTER_UNAVAILABLE"
        with pytest.raises(CliError) as stranger:
            _info(address, ClientTls(trusted, pki.path("stranger.pem"),
                                     pki.path("stranger.key")))
        assert stranger.value.code == "DATACENTER_UNAVAILABLE"


def test_the_client_takes_its_tls_from_the_environment(tmp_path: Path, test_ca: TestCA,
                                                       pki: Pki,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tls = ServerTls(pki.path("server.pem"), pki.path("server.key"), pki.path("client-ca.pem"))
    monkeypatch.setenv("EPORT_DATACENTER_CA", str(pki.path("server-ca.pem")))
    monkeypatch.setenv("EPORT_DATACENTER_CERT", str(pki.path("client.pem")))
    monkeypatch.setenv("EPORT_DATACENTER_KEY", str(pki.path("client.key")))
    with _serving(tmp_path, test_ca, "0.0.0.0:0", tls) as running:
        client = DataCenterClient(_loopback_address(running), timeout=5)
        try:
            assert client.info().audience == "eport-datacenter"
        finally:
            client.close()
    monkeypatch.delenv("EPORT_DATACENTER_KEY")
    half = DataCenterClient("127.0.0.1:1", timeout=5)
    with pytest.raises(CliError) as misconfigured:
        half.info()
    assert misconfigured.value.code == "DATACENTER_TLS"
    assert "EPORT_DATACENTER_KEY" in misconfigured.value.message.en


def test_loopback_stays_plaintext_and_bad_tls_files_are_said_at_start(
        tmp_path: Path, test_ca: TestCA, pki: Pki) -> None:
    with _serving(tmp_path, test_ca, "127.0.0.1:0", None) as running:
        assert _info(running.address, ClientTls()) == "eport-datacenter"
    mismatched = ServerTls(pki.path("server.pem"), pki.path("client.key"))
    assert "is not the key of the --tls-cert" in _refusal(tmp_path, test_ca, "0.0.0.0:0",
                                                          mismatched)
    not_a_certificate = ServerTls(pki.path("server.key"), pki.path("server.key"))
    assert "holds no PEM certificate" in _refusal(tmp_path, test_ca, "0.0.0.0:0",
                                                  not_a_certificate)
    on_a_socket = ServerTls(pki.path("server.pem"), pki.path("server.key"))
    assert "TLS options apply to a TCP address" in _refusal(
        tmp_path, test_ca, f"unix:{tmp_path}/dc.sock", on_a_socket)
