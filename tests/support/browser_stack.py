"""The browser tier's stack: headless Chromium (Debian's chromium) with its own HOME and NSS
database, a local web server that serves the test page as https://www.singlewindow.cn (and as
other origins), and the real eport-gateway on its fixed ports 61231 (wss) and 61232 (ws).

Chromium reaches the page server and the gateway through --host-resolver-rules: every name the
tests use is mapped to 127.0.0.1, the page origins with the page server's port (the origin the
page sees keeps the default port, so `https://www.singlewindow.cn` is exactly the origin the
gateway checks), and every other name to nothing, so the browser never leaves the machine.

The page's certificates come from a test CA made here and trusted (certutil) in the same
`$HOME/.pki/nssdb` that `eport-gateway tls install` writes its own CA into: Chromium on Linux
reads that database. When the stack cannot be had (no chromium, no certutil), browser tests
skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.gateway_stack import GATEWAY, Gateway
from tests.support.waiting import wait_until

PAGES = Path(__file__).resolve().parent.parent / "browser" / "pages"
WS_PORT, WSS_PORT = 61232, 61231
WSS_HOST = "wss.singlewindow.cn"
SINGLE_WINDOW = "www.singlewindow.cn"

# Chromium misbehaves in a closed network without these (update checks, sync, QUIC probes,
# the GPU process in a container); --no-sandbox because the tests may run as root.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # CI containers often have a small /dev/shm; its messages go to stderr for diagnosis.
    "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
)


def browser_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the browser test stack cannot start (CI=true): {reason}")
    pytest.skip(f"browser test stack unavailable: {reason}")


def chromium_executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        browser_unavailable("chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


def certutil_executable() -> str:
    found = shutil.which("certutil")
    if found is None:
        browser_unavailable("certutil is not installed (apt-get install libnss3-tools)")
    assert found is not None
    return found


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# ---- the page certificates ----

@dataclass
class PageCA:
    """A CA of the test's own for the page server's certificates (one per host name)."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def certificate_path(self) -> Path:
        return self.directory / "page-ca.pem"

    @classmethod
    def create(cls, directory: Path) -> PageCA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eport browser tier page CA")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
        ca = cls(directory, key, certificate)
        ca.certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return ca

    def issue(self, host: str) -> tuple[Path, Path]:
        """A serverAuth certificate for `host`: (certificate chain PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        chain = self.directory / f"{host}.pem"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM)
                          + self.certificate.public_bytes(serialization.Encoding.PEM))
        key_path = self.directory / f"{host}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return chain, key_path


# ---- the browser's home: HOME, the XDG directories, the NSS database ----

@dataclass
class BrowserHome:
    """A temporary HOME for Chromium and for `eport-gateway tls` (both use $HOME/.pki/nssdb;
    the gateway's TLS key goes under $XDG_CONFIG_HOME)."""

    path: Path

    @property
    def nssdb(self) -> Path:
        return self.path / ".pki" / "nssdb"

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.path),
            "XDG_CONFIG_HOME": str(self.path / ".config"),
            "XDG_CACHE_HOME": str(self.path / ".cache"),
            "XDG_DATA_HOME": str(self.path / ".local" / "share"),
        }

    @classmethod
    def create(cls, path: Path) -> BrowserHome:
        home = cls(path)
        for directory in (home.nssdb, path / ".config", path / ".cache",
                          path / ".local" / "share"):
            directory.mkdir(parents=True, exist_ok=True)
        home.certutil("-N", "--empty-password")
        return home

    def certutil(self, *args: str) -> str:
        result = subprocess.run(
            [certutil_executable(), "-d", f"sql:{self.nssdb}", *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **self.env})
        assert result.returncode == 0, f"certutil {args}: {result.stdout}{result.stderr}"
        return result.stdout

    def trust_ca(self, nickname: str, certificate: Path) -> None:
        """Trust `certificate` for TLS servers in the NSS database (as a user's CA would be)."""
        self.certutil("-A", "-n", nickname, "-t", "C,,", "-i", str(certificate))

    def nss_listing(self) -> str:
        return self.certutil("-L")


# ---- the page server ----

@dataclass
class PageRun:
    """One page load: the call script the page fetches and the reports it posts back."""

    script: dict[str, Any]
    reports: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # the Origin header of each report
    done: threading.Event = field(default_factory=threading.Event)


class _PageHandler(BaseHTTPRequestHandler):
    server: _PageHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read the reports, not an access log

    def _run(self) -> PageRun | None:
        token = parse_qs(urlsplit(self.path).query).get("run", [""])[0]
        return self.server.runs.get(token)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/script":
            run = self._run()
            if run is None:
                self._send(HTTPStatus.NOT_FOUND, b"{}", "application/json")
                return
            self._send(HTTPStatus.OK, json.dumps(run.script).encode(), "application/json")
            return
        files = {"/": "single_window.html", "/single_window.html": "single_window.html",
                 "/single_window.js": "single_window.js"}
        if path not in files:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        name = files[path]
        content_type = "text/html; charset=utf-8" if name.endswith(".html") \
            else "text/javascript; charset=utf-8"
        self._send(HTTPStatus.OK, (PAGES / name).read_bytes(), content_type)

    def do_POST(self) -> None:
        run = self._run()
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if run is None or urlsplit(self.path).path != "/report":
            self._send(HTTPStatus.NOT_FOUND, b"", "text/plain")
            return
        entry = json.loads(body)
        run.reports.append(entry)
        run.origins.append(self.headers.get("Origin", ""))
        if entry.get("type") == "done":
            run.done.set()
        self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")


class _PageHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, runs: dict[str, PageRun]) -> None:
        super().__init__(("127.0.0.1", 0), _PageHandler)
        self.runs = runs

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class PageServer:
    """The test page over https (a certificate per host name, chosen by SNI) and over plain
    http, on free ports of 127.0.0.1; the browser reaches them through its host mapping."""

    def __init__(self, ca: PageCA, https_hosts: Sequence[str]) -> None:
        self.runs: dict[str, PageRun] = {}
        self.https = _PageHTTPServer(self.runs)
        self.http = _PageHTTPServer(self.runs)
        contexts: dict[str, ssl.SSLContext] = {}
        for host in https_hosts:
            chain, key = ca.issue(host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(chain, key)
            contexts[host] = context
        default = contexts[https_hosts[0]]

        def choose(connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
            if name in contexts:
                connection.context = contexts[name]

        default.sni_callback = choose
        self.https.socket = default.wrap_socket(self.https.socket, server_side=True)
        self._threads = [threading.Thread(target=server.serve_forever, daemon=True)
                         for server in (self.https, self.http)]
        for thread in self._threads:
            thread.start()

    def new_run(self, script: dict[str, Any]) -> tuple[str, PageRun]:
        token = secrets.token_hex(8)
        run = PageRun(script)
        self.runs[token] = run
        return token, run

    def close(self) -> None:
        for server in (self.https, self.http):
            server.shutdown()
            server.server_close()


# ---- Chromium ----

@dataclass
class PageResult:
    """What one page load reported, in order, and Chromium's own log for diagnosis."""

    url: str
    reports: list[dict[str, Any]]
    report_origins: list[str]
    finished: bool
    browser_log: str

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [entry for entry in self.reports if entry.get("type") == kind]

    def replies(self) -> dict[str, dict[str, Any]]:
        """The reply reports by step name."""
        return {entry["name"]: entry for entry in self.of_type("reply")}

    def describe(self) -> str:
        lines = [json.dumps(entry, ensure_ascii=False)[:600] for entry in self.reports]
        # Without a D-Bus session Chromium complains on every start: not what went wrong.
        browser = [line for line in self.browser_log.splitlines() if "dbus" not in line]
        return (f"page {self.url} (finished: {self.finished})\n" + "\n".join(lines)
                + "\n--- chromium log (tail) ---\n" + "\n".join(browser[-40:]))


class BrowserStack:
    """Chromium + the page server + the temporary HOME; `open_page` is one Chromium start."""

    def __init__(self, directory: Path, https_hosts: Sequence[str], http_hosts: Sequence[str]
                 ) -> None:
        self.directory = directory
        self.chromium = chromium_executable()
        self.home = BrowserHome.create(directory / "home")
        self.page_ca = PageCA.create(directory / "page-ca")
        self.home.trust_ca("eport browser tier page CA", self.page_ca.certificate_path)
        self.server = PageServer(self.page_ca, https_hosts)
        self.https_hosts = tuple(https_hosts)
        self.http_hosts = tuple(http_hosts)
        self._starts = 0

    def host_rules(self) -> str:
        rules = [f"MAP {host} 127.0.0.1:{self.server.https.port}" for host in self.https_hosts]
        rules += [f"MAP {host} 127.0.0.1:{self.server.http.port}" for host in self.http_hosts]
        rules.append(f"MAP {WSS_HOST} 127.0.0.1")  # keeps the port the page asks for: 61231
        # ws://127.0.0.1 stays as it is; no other name resolves (no traffic off the machine).
        rules += ["EXCLUDE 127.0.0.1", "MAP * ~NOTFOUND"]
        return ", ".join(rules)

    def open_page(self, origin: str, script: dict[str, Any], timeout: float = 120.0
                  ) -> PageResult:
        """Load the test page from `origin` in a fresh headless Chromium, let it run `script`,
        and return its reports once it says it is done (or Chromium exits, or time is up)."""
        token, run = self.server.new_run(script)
        url = f"{origin}/single_window.html?run={token}"
        self._starts += 1
        profile = self.directory / f"chromium-profile-{self._starts}"
        log_path = self.directory / f"chromium-{self._starts}.log"
        command = [self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--host-resolver-rules={self.host_rules()}", url]
        environment = {**os.environ, **self.home.env}
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       env=environment, start_new_session=True)
        try:
            with contextlib.suppress(AssertionError):  # time is up: the result says not done
                wait_until(lambda: run.done.is_set() or process.poll() is not None,
                           timeout=timeout, interval=0.1, what="the page says it is done")
        finally:
            _stop_process_group(process)
        return PageResult(url, list(run.reports), list(run.origins), run.done.is_set(),
                          log_path.read_text(encoding="utf-8", errors="replace"))

    def close(self) -> None:
        self.server.close()


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Chromium forks its renderer and utility processes into the session it leads."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_browser_stack(directory: Path, https_hosts: Sequence[str],
                          http_hosts: Sequence[str]) -> Iterator[BrowserStack]:
    stack = BrowserStack(directory, https_hosts, http_hosts)
    try:
        yield stack
    finally:
        stack.close()


# ---- the gateway on its fixed ports ----

def tls_install(home: BrowserHome) -> subprocess.CompletedProcess[str]:
    """`eport-gateway tls install` for the temporary HOME (its CA into the NSS database, the
    server key under XDG_CONFIG_HOME)."""
    return subprocess.run([GATEWAY, "tls", "install", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **home.env})


def start_fixed_port_gateway(eportd_socket: Path, home: BrowserHome, origins: Sequence[str],
                             *, tls: bool, timeout: float = 20.0) -> Gateway:
    """The real gateway on 61232 (and with `tls` on 61231), as a Single Window page expects it,
    with HOME (and so the certificate `tls install` made) the browser's. The ports are shared
    by the machine: callers hold the pcsc lock."""
    ports = (WS_PORT, WSS_PORT) if tls else (WS_PORT,)
    for port in ports:
        if not port_is_free(port):
            raise AssertionError(
                f"port {port} is taken by another program (an eport-gateway or the official "
                "client?): the browser tier needs it; stop that program")
    command = [GATEWAY, "serve", "--port", str(WS_PORT), "--socket", str(eportd_socket)]
    command += ["--tls-port", str(WSS_PORT)] if tls else ["--no-tls"]
    for origin in origins:
        command += ["--allow-origin", origin]
    environment = {**os.environ, **home.env}
    environment.pop("EPORTD_SOCKET", None)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", env=environment)
    log: list[str] = []
    listening = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()  # it exited: stop waiting

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    gateway = Gateway(process, f"ws://127.0.0.1:{WS_PORT}",
                      wss_url=f"wss://{WSS_HOST}:{WSS_PORT}" if tls else None,
                      _log=log, _reader=reader)
    ready = listening.wait(timeout) and gateway.alive()
    if ready:
        try:
            wait_until(lambda: all(is_listening(port) for port in ports), timeout=timeout,
                       what=f"eport-gateway accepts connections on {ports}")
        except AssertionError:
            ready = False
    if not ready:
        gateway.stop()
        raise AssertionError(f"eport-gateway did not listen on {ports}:\n" + gateway.log())
    return gateway
