"""`eport-gateway tls install | status | uninstall` with HOME and XDG_CONFIG_HOME in a temporary
directory, checked with the real certutil (the user's NSS database) and the real openssl."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from eport.clients.gateway.tls_setup import (
    TlsNotInstalled,
    TlsPaths,
    TlsSetupError,
    default_paths,
    install,
    server_ssl_context,
    status,
    uninstall,
)
from eport.clients.gateway.tls_trust import HOSTS_LINE, NSS_NICKNAME

GATEWAY = str(Path(sys.executable).with_name("eport-gateway"))
NAME = "wss.singlewindow.cn"
NOBODY = 65534

pytestmark = pytest.mark.skipif(shutil.which("certutil") is None or
                                shutil.which("openssl") is None,
                                reason="needs certutil (libnss3-tools) and openssl")


@dataclass
class Home:
    root: Path
    env: dict[str, str]

    @property
    def tls_dir(self) -> Path:
        return self.root / "xdg" / "eport" / "gateway-tls"

    @property
    def nssdb(self) -> Path:
        return self.root / "home" / ".pki" / "nssdb"

    def paths(self, **changes: object) -> TlsPaths:
        return replace(TlsPaths(self.tls_dir, self.nssdb), **changes)  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    (tmp_path / "home").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUDO_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               EPORT_LANG="en", LC_ALL="C")
    for key in [key for key in os.environ if key.startswith("SUDO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", env["HOME"])
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    return Home(tmp_path, env)


def tls(home: Home, *args: str, prefix: tuple[str, ...] = (), both_languages: bool = False
        ) -> subprocess.CompletedProcess[str]:
    """`eport-gateway tls ARGS`; both_languages: without EPORT_LANG, as most people run it
    (a failure is then said in Chinese and in English)."""
    env = {key: value for key, value in home.env.items()
           if key != "EPORT_LANG" or not both_languages}
    done = subprocess.run([*prefix, GATEWAY, "tls", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def installed(home: Home, *args: str, prefix: tuple[str, ...] = ()) -> dict[str, object]:
    done = tls(home, "install", "--json", *args, prefix=prefix)
    document = json.loads(done.stdout)
    assert document["ok"] is True, done.stdout + done.stderr
    name_local = document["result"]["status"]["name"]["loopback"]
    # 0: ready; 9: installed, but the name does not point here (no hosts line on this machine)
    assert done.returncode == (0 if name_local else 9), done.stdout + done.stderr
    result: dict[str, object] = document["result"]
    return result


def actions(result: dict[str, object]) -> dict[str, str]:
    steps = result["steps"]
    assert isinstance(steps, list)
    return {step["part"]: step["action"] for step in steps}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=60,
                          check=False)


def nss_listing(db: Path) -> str:
    done = run("certutil", "-L", "-d", f"sql:{db}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mode & 0o777)
            for path in sorted(directory.iterdir())}


def sign_with_the_ca(home: Home, tmp_path: Path, subject_alt_name: str) -> Path:
    """A certificate for another name, made with openssl and signed by the gateway's CA."""
    key, request, cert = (tmp_path / "other-key.pem", tmp_path / "other.csr",
                          tmp_path / "other.pem")
    extensions = tmp_path / "other.ext"
    extensions.write_text(f"subjectAltName={subject_alt_name}\nextendedKeyUsage=serverAuth\n")
    done = run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=other", "-keyout", str(key),
               "-out", str(request))
    assert done.returncode == 0, done.stderr
    done = run("openssl", "x509", "-req", "-in", str(request), "-CA",
               str(home.tls_dir / "ca.pem"), "-CAkey", str(home.tls_dir / "ca-key.pem"),
               "-CAcreateserial", "-days", "30", "-extfile", str(extensions), "-out", str(cert))
    assert done.returncode == 0, done.stderr
    return cert


def test_the_ca_vouches_for_wss_singlewindow_cn_only(home: Home, tmp_path: Path) -> None:
    installed(home)
    text = run("openssl", "x509", "-in", str(home.tls_dir / "ca.pem"), "-noout", "-text").stdout
    constraints = text.split("X509v3 Name Constraints: critical", 1)
    assert len(constraints) == 2, text
    assert "Permitted:" in constraints[1] and f"DNS:{NAME}" in constraints[1].split("X509v3")[0]
    assert "CA:TRUE, pathlen:0" in text and "Certificate Sign" in text
    verified = run("openssl", "verify", "-CAfile", str(home.tls_dir / "ca.pem"),
                   "-verify_hostname", NAME, "-purpose", "sslserver",
                   str(home.tls_dir / "server.pem"))
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": OK"), verified
    server = run("openssl", "x509", "-in", str(home.tls_dir / "server.pem"), "-noout", "-text")
    assert f"DNS:{NAME}" in server.stdout and "TLS Web Server Authentication" in server.stdout
    certificate = x509.load_pem_x509_certificate((home.tls_dir / "server.pem").read_bytes())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime <= timedelta(days=397)

    for other, violation in (("DNS:www.example.com", "permitted subtree violation"),
                             ("DNS:evil.singlewindow.cn", "permitted subtree violation"),
                             ("IP:127.0.0.1", "excluded subtree violation")):
        forged = sign_with_the_ca(home, tmp_path, other)
        for strict in ((), ("-x509_strict",)):
            refused = run("openssl", "verify", *strict, "-CAfile",
                          str(home.tls_dir / "ca.pem"), str(forged))
            assert refused.returncode != 0, (other, refused.stdout)
            assert violation in refused.stdout + refused.stderr, (other, refused)


def test_a_tls_handshake_with_the_context_the_gateway_serves(home: Home) -> None:
    with pytest.raises(TlsNotInstalled) as missing:
        server_ssl_context(home.tls_dir)
    assert missing.value.code == "NOT_INSTALLED" and "tls install" in missing.value.remedy.en
    assert missing.value.message.zh and missing.value.message.en
    installed(home)
    context = server_ssl_context()  # the default directory: $XDG_CONFIG_HOME/eport/...
    client = ssl.create_default_context(cafile=str(home.tls_dir / "ca.pem"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_one() -> None:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True) as tls_socket:
                tls_socket.sendall(b"hello")

        server = threading.Thread(target=serve_one)
        server.start()
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client.wrap_socket(raw, server_hostname=NAME) as tls_socket:
            assert tls_socket.recv(5) == b"hello"
            assert tls_socket.version() in ("TLSv1.2", "TLSv1.3")
        server.join(10)


def test_an_expired_server_certificate_is_refused_and_then_renewed(home: Home) -> None:
    install(home.paths(), now=datetime.now(UTC) - timedelta(days=400))
    with pytest.raises(TlsNotInstalled) as expired:
        server_ssl_context(home.tls_dir)
    assert expired.value.code == "EXPIRED"
    steps = {step.part: step.action for step in install(home.paths())}
    assert steps["server"] == "renewed" and steps["ca"] == "kept"
    server_ssl_context(home.tls_dir)


def test_install_twice_changes_nothing(home: Home) -> None:
    first = installed(home)
    assert actions(first) == {"ca": "created", "server": "created", "nss": "added"}
    files, listing = snapshot(home.tls_dir), nss_listing(home.nssdb)
    held = run("certutil", "-L", "-d", f"sql:{home.nssdb}", "-n", NSS_NICKNAME, "-a").stdout
    assert NSS_NICKNAME in listing and "C,," in listing
    second = installed(home)
    assert actions(second) == {"ca": "kept", "server": "kept", "nss": "kept"}
    assert snapshot(home.tls_dir) == files
    assert nss_listing(home.nssdb) == listing
    assert run("certutil", "-L", "-d", f"sql:{home.nssdb}", "-n", NSS_NICKNAME,
               "-a").stdout == held
    assert held.count("BEGIN CERTIFICATE") == 1


def test_keys_are_private(home: Home) -> None:
    installed(home)
    assert home.tls_dir.stat().st_mode & 0o777 == 0o700
    for name in ("ca-key.pem", "server-key.pem"):
        assert (home.tls_dir / name).stat().st_mode & 0o777 == 0o600
    for name in ("ca.pem", "server.pem"):
        assert (home.tls_dir / name).stat().st_mode & 0o077 in (0o044, 0o000)


def test_uninstall_restores_an_existing_database(home: Home, tmp_path: Path) -> None:
    home.nssdb.mkdir(parents=True)
    assert run("certutil", "-N", "-d", f"sql:{home.nssdb}", "--empty-password").returncode == 0
    other = tmp_path / "other-ca.pem"
    made = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=Some other CA", "-days", "30",
               "-keyout", str(tmp_path / "other-ca-key.pem"), "-out", str(other))
    assert made.returncode == 0, made.stderr
    assert run("certutil", "-A", "-d", f"sql:{home.nssdb}", "-n", "Some other CA", "-t",
               "CT,C,C", "-i", str(other)).returncode == 0
    before = nss_listing(home.nssdb)
    installed(home)
    assert NSS_NICKNAME in nss_listing(home.nssdb)
    done = tls(home, "uninstall")
    assert done.returncode == 0, done.stderr
    assert nss_listing(home.nssdb) == before
    assert not (home.root / "xdg" / "eport").exists()


def test_uninstall_removes_a_database_it_created(home: Home) -> None:
    assert not (home.root / "home" / ".pki").exists()
    installed(home)
    assert "C,," in nss_listing(home.nssdb)
    done = tls(home, "uninstall", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["result"]["complete"] is True
    assert not (home.root / "home" / ".pki").exists()
    assert not (home.root / "xdg").exists()
    assert tls(home, "uninstall").returncode == 0  # nothing left to remove: still fine


def test_a_certificate_near_its_end_is_renewed(home: Home) -> None:
    install(home.paths(), server_validity=timedelta(days=20))
    ca_before = (home.tls_dir / "ca.pem").read_bytes()
    server_before = (home.tls_dir / "server.pem").read_bytes()
    listing = nss_listing(home.nssdb)
    steps = {step.part: step.action for step in install(home.paths())}
    assert steps == {"ca": "kept", "server": "renewed", "nss": "kept"}
    assert (home.tls_dir / "ca.pem").read_bytes() == ca_before
    assert (home.tls_dir / "server.pem").read_bytes() != server_before
    assert nss_listing(home.nssdb) == listing


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime (libfaketime)")
def test_renewal_a_year_later_with_faketime(home: Home) -> None:
    installed(home)
    server_before = (home.tls_dir / "server.pem").read_bytes()
    ca_before = (home.tls_dir / "ca.pem").read_bytes()
    listing = nss_listing(home.nssdb)
    later = installed(home, prefix=("faketime", "+380 days"))
    assert actions(later) == {"ca": "kept", "server": "renewed", "nss": "kept"}
    assert (home.tls_dir / "ca.pem").read_bytes() == ca_before
    renewed = x509.load_pem_x509_certificate((home.tls_dir / "server.pem").read_bytes())
    assert (home.tls_dir / "server.pem").read_bytes() != server_before
    assert renewed.not_valid_before_utc > datetime.now(UTC) + timedelta(days=379)
    assert nss_listing(home.nssdb) == listing


def test_a_ca_that_no_longer_matches_is_replaced_everywhere(home: Home) -> None:
    installed(home)
    old_ca = (home.tls_dir / "ca.pem").read_bytes()
    made = run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-out", str(home.tls_dir / "ca-key.pem"))
    assert made.returncode == 0, made.stderr
    assert status(home.paths()).ca.problem == "unreadable or does not match its key"
    assert status(home.paths()).server.problem == "no usable CA"
    result = installed(home)
    assert actions(result) == {"ca": "renewed", "server": "renewed", "nss": "replaced"}
    assert (home.tls_dir / "ca.pem").read_bytes() != old_ca
    held = run("certutil", "-L", "-d", f"sql:{home.nssdb}", "-n", NSS_NICKNAME, "-a").stdout
    assert held.count("BEGIN CERTIFICATE") == 1
    assert x509.load_pem_x509_certificate(held.encode()) == x509.load_pem_x509_certificate(
        (home.tls_dir / "ca.pem").read_bytes())
    assert status(home.paths()).nss_trusted


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as another user")
@pytest.mark.parametrize("option", ["--system", "--hosts"])
def test_root_options_are_refused_for_other_users(home: Home, option: str) -> None:
    as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    done = tls(home, "install", option, prefix=as_nobody, both_languages=True)
    assert done.returncode == 5, done.stdout + done.stderr
    assert "needs root" in done.stderr and "需要 root 权限" in done.stderr
    assert "sudo" in done.stderr
    assert not (home.root / "xdg").exists() and not (home.root / "home" / ".pki").exists()
    done = tls(home, "install", option, "--json", prefix=as_nobody)
    assert done.returncode == 5
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "NEEDS_ROOT" and error["remedy"]["zh"] and error["remedy"]["en"]


def test_system_store_and_hosts_line_as_root(home: Home, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    original = "127.0.0.1 localhost\n::1 localhost ip6-localhost"  # no final newline
    hosts.write_text(original)
    paths = home.paths(hosts_file=hosts, system_ca_dir=tmp_path / "ca-certificates",
                       update_command=("true",))
    with pytest.raises(TlsSetupError) as refused:
        install(paths, system=True, hosts=True, euid=NOBODY)
    assert refused.value.code == "NEEDS_ROOT" and not home.tls_dir.exists()
    steps = {step.part: step.action for step in install(paths, system=True, hosts=True, euid=0)}
    assert steps["system"] == "added" and steps["hosts"] == "added"
    system_file = tmp_path / "ca-certificates" / "eport-gateway-wss.singlewindow.cn.crt"
    assert system_file.read_bytes() == (home.tls_dir / "ca.pem").read_bytes()
    assert hosts.read_text().splitlines()[-1] == HOSTS_LINE
    assert HOSTS_LINE.startswith(f"127.0.0.1 {NAME} #")
    again = {step.part: step.action for step in install(paths, system=True, hosts=True, euid=0)}
    assert again["system"] == "kept" and again["hosts"] == "kept"
    assert hosts.read_text().count(HOSTS_LINE) == 1
    found = status(paths)
    assert found.system_matches and found.hosts_line

    # Another user cannot undo root's parts: they stay, and so does what records them.
    steps_left, complete = uninstall(paths, euid=NOBODY)
    assert not complete and {(s.part, s.action) for s in steps_left} >= {
        ("system", "refused"), ("hosts", "refused"), ("nss", "removed")}
    assert system_file.exists() and HOSTS_LINE in hosts.read_text()
    steps_done, complete = uninstall(paths, euid=0)
    assert complete and ("system", "removed") in {(s.part, s.action) for s in steps_done}
    assert not system_file.exists()
    assert hosts.read_text() == original + "\n"
    assert not (home.root / "home" / ".pki").exists()


def test_status_json(home: Home) -> None:
    before = tls(home, "status", "--json")
    assert before.returncode == 8
    document = json.loads(before.stdout)["result"]
    assert document["ready"] is False and document["server"]["present"] is False
    assert document["nss"]["trusted"] is False
    installed(home)
    after = tls(home, "status", "--json")
    document = json.loads(after.stdout)["result"]
    assert after.returncode == (0 if document["name"]["loopback"] else 8)
    assert document["server"]["present"] and document["server"]["days_left"] >= 390
    assert document["server"]["problem"] is None and document["ca"]["problem"] is None
    assert document["key_modes"] == {"ca-key.pem": "0600", "server-key.pem": "0600"}
    assert document["nss"] | {"error": None} == {
        "db": str(home.nssdb), "exists": True, "nickname": NSS_NICKNAME, "trust": "C,,",
        "matches_ca": True, "trusted": True, "error": None}
    assert document["name"]["hosts_line"] == HOSTS_LINE
    human = tls(home, "status")
    assert "trusts the local CA" in human.stdout and "valid until" in human.stdout


@contextlib.contextmanager
def https_page(cert: Path, key: Path) -> Iterator[int]:
    """A one-page https server on a free loopback port."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>served-by-the-test</body></html>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def chromium_loads(home: Home, url: str) -> tuple[str, str]:
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--host-resolver-rules=MAP * 127.0.0.1", f"--user-data-dir={home.root / 'profile'}",
         "--dump-dom", url],
        capture_output=True, text=True, env=home.env, timeout=90, check=False)
    return done.stdout, done.stderr


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None and os.environ.get("CI") != "true",
                    reason="needs Debian's chromium")
def test_chromium_trusts_the_ca_for_its_name_only(home: Home, tmp_path: Path) -> None:
    """Chromium reads the NSS database install wrote ($HOME/.pki/nssdb), accepts the gateway's
    certificate for wss.singlewindow.cn and refuses one the same CA signed for another site."""
    installed(home)
    with https_page(home.tls_dir / "server.pem", home.tls_dir / "server-key.pem") as port:
        page, log = chromium_loads(home, f"https://{NAME}:{port}/")
    assert "served-by-the-test" in page, log
    forged = sign_with_the_ca(home, tmp_path, "DNS:www.example.com")
    with https_page(forged, tmp_path / "other-key.pem") as port:
        page, log = chromium_loads(home, f"https://www.example.com:{port}/")
    assert "served-by-the-test" not in page
    assert "ERR_CERT" in log, log


def test_a_failed_step_is_explained_and_uninstall_still_cleans_up(home: Home) -> None:
    home.nssdb.parent.mkdir(parents=True)
    home.nssdb.write_text("not a database\n")  # a file where the NSS directory should be
    done = tls(home, "install", both_languages=True)
    assert done.returncode == 7, done.stdout + done.stderr
    assert f"cannot write {home.nssdb}" in done.stderr and "无法写入" in done.stderr
    assert "Remedy:" in done.stderr and "解决办法:" in done.stderr
    home.nssdb.unlink()
    installed(home)
    assert tls(home, "uninstall").returncode == 0
    assert not (home.root / "xdg").exists() and not home.nssdb.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="sudo's case: root acting for the user")
def test_under_sudo_the_invoking_users_directories_are_used(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwuid(NOBODY)
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    paths = default_paths()
    assert paths.tls_dir == Path(nobody.pw_dir) / ".config" / "eport" / "gateway-tls"
    assert paths.nss_db == Path(nobody.pw_dir) / ".pki" / "nssdb"
    assert paths.owner == (NOBODY, nobody.pw_gid)
    # What install creates belongs to that user, so that user's gateway can read its key.
    target = home.paths(owner=paths.owner)
    install(target)
    for path in (home.tls_dir, home.tls_dir / "server-key.pem", home.nssdb / "cert9.db"):
        assert path.stat().st_uid == NOBODY, path
    monkeypatch.delenv("SUDO_UID")
    assert default_paths().tls_dir == home.tls_dir
