"""eport-gateway's defences, through the real gateway process in front of the real eportd,
pcscd, vpcd and simulated cards: wss and ws with one protocol, only the gateway's own user
(a process running as uid 65534 gets nothing on either port), the https-only default
origins, the stored PIN only with --allow-stored-pin, block transfer limits and timeouts, the
connection cap, and strict JSON.

Like test_gateway.py, nothing here imports the gateway: the wss certificate comes from the
installed `eport-gateway tls install` run with HOME in a temporary directory, the other
user's program is a child process with only the standard library, and signatures are checked
with the `cryptography` package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as ws_connect

from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage
from eport.protos.v1 import eportd_pb2 as pb
from tests.support.card_stack import CardStack, running_card_stack
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import start_daemon, wait_for_card
from tests.support.gateway_stack import GATEWAY, Gateway, running_gateway
from tests.support.pcsc_stack import Pcscd, reader_for_slot, stack_unavailable
from tests.support.waiting import wait_until
from tests.support.ws_protocol_client import GatewayClient, Reply, block_frame, check_code

pytestmark = pytest.mark.pcsc

PIN = "88888888"
OTHER_UID = 65534  # nobody
WSS_NAME = "wss.singlewindow.cn"
SMALL_LIMIT = 65536


# ---- the stack ----

@pytest.fixture(scope="module")
def stack(pcscd: Pcscd, test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CardStack]:
    with running_card_stack(tmp_path_factory.mktemp("gateway-security"),
                            test_ca.trust_bundle) as started:
        yield started


@dataclass(frozen=True)
class TlsHome:
    """A HOME where `eport-gateway tls install` has put its CA and server certificate."""

    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config")}

    @property
    def ca(self) -> Path:
        return self.home / ".config" / "eport" / "gateway-tls" / "ca.pem"

    def client_context(self) -> ssl.SSLContext:
        """What a browser that trusts the installed CA checks: the chain and the name."""
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def tls_home(tmp_path_factory: pytest.TempPathFactory) -> TlsHome:
    home = TlsHome(tmp_path_factory.mktemp("tls-home"))
    environment = {**os.environ, **home.env}
    result = subprocess.run([GATEWAY, "tls", "install"], capture_output=True, text=True,
                            timeout=120, env=environment)
    # It may also say that wss.singlewindow.cn does not resolve here (not needed for tests).
    assert home.ca.is_file(), f"tls install made no CA:\n{result.stdout}{result.stderr}"
    return home


@pytest.fixture(scope="module")
def card(test_ca: TestCA) -> CardImage:
    return provision_test_card(test_ca, "rsa2048", card_id="3100000000055501")


@pytest.fixture
def card_in(stack: CardStack, card: CardImage, tmp_path: Path) -> Iterator[CardImage]:
    """A fresh copy of `card` in slot 0 (its PIN tries are this test's own)."""
    stack.remove(0)
    stack.insert(0, write_card(card, tmp_path, f"card-{secrets.token_hex(4)}.json"))
    wait_for_card(stack.running().stub(), reader_for_slot(0))
    yield card
    stack.remove(0)


@pytest.fixture(scope="module")
def tls_gateway(stack: CardStack, tls_home: TlsHome) -> Iterator[Gateway]:
    with running_gateway(stack.socket, env=tls_home.env) as started:
        assert started.wss_url is not None, started.log()
        yield started


def wss_client(gateway: Gateway, home: TlsHome, origin: str | None = None) -> GatewayClient:
    assert gateway.wss_url is not None
    return GatewayClient.connect(gateway.wss_url, origin=origin,
                                 ssl_context=home.client_context(), server_hostname=WSS_NAME)


def ok(reply: Reply) -> list[Any]:
    reply.check_shape()
    assert reply.ok, reply.describe()
    return reply.data


def failed(reply: Reply, code: str) -> list[Any]:
    reply.check_shape()
    assert not reply.ok and reply.code == code, f"expected {code}: {reply.describe()}"
    return reply.error


def still_works(client: GatewayClient) -> None:
    text = f"still works {secrets.token_hex(4)}"
    assert ok(client.call("SpcSHA1Digest", {"szInfo": text})) == \
        [hashlib.sha1(text.encode()).hexdigest().upper()]


def rsa_signature_verifies(image: CardImage, data: bytes, signature_b64: str) -> bool:
    key = x509.load_der_x509_certificate(image.certificate).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(signature_b64), data, padding.PKCS1v15(), hashes.SHA1())
    except Exception:  # any failure is a bad signature
        return False
    return True


def wait_for_log(gateway: Gateway, pattern: str, timeout: float = 10.0) -> str:
    try:
        found = wait_until(lambda: re.search(pattern, gateway.log()), timeout=timeout,
                           what=f"a log line matching {pattern!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{gateway.log()[-3000:]}") from None
    return found.group(0)


# ---- a. wss and ws: one gateway, one protocol ----

def test_wss_and_ws_serve_the_same_protocol(tls_gateway: Gateway, tls_home: TlsHome,
                                            card_in: CardImage) -> None:
    line = wait_for_log(tls_gateway, r"eport-gateway listening on wss://127\.0\.0\.1:\d+ and "
                                     r"ws://127\.0\.0\.1:\d+")
    assert str(tls_gateway.tls_port) in line and str(tls_gateway.port) in line
    with wss_client(tls_gateway, tls_home, origin="https://www.singlewindow.cn") as secure, \
            GatewayClient.connect(tls_gateway.url) as plain:
        for scheme, client in (("wss", secure), ("ws", plain)):
            assert ok(client.call("SpcGetCardID")) == [card_in.profile.card_id]
            data = f"signed over {scheme}"
            signature, cert_no = ok(client.call("SpcSignDataAsPEM",
                                                {"inData": data, "passwd": PIN}))
            assert rsa_signature_verifies(card_in, data.encode(), signature)
            assert cert_no == ok(client.call("SpcGetCertNo"))[0]
            failed(client.call("SpcNoSuchMethod"), "51500")
        # One gateway behind both: a PIN session opened on wss is the one ws signs with.
        ok(secure.call("SpcClearEnv"))
        failed(plain.call("SpcSignDataAsPEM", {"inData": "no session"}), "0A00002D")
        ok(secure.call("SpcVerifyPIN", {"passwd": PIN}))
        ok(plain.call("SpcSignDataAsPEM", {"inData": "the session of wss"}))
        ok(plain.call("SpcClearEnv"))
    # The certificate is for wss.singlewindow.cn only, and the wss port speaks nothing else.
    with pytest.raises(ssl.SSLCertVerificationError):
        wss_client_for_name(tls_gateway, tls_home, "www.singlewindow.cn")
    with pytest.raises((InvalidHandshake, ConnectionClosed, OSError, EOFError)):
        GatewayClient.connect(f"ws://127.0.0.1:{tls_gateway.tls_port}", greeting_timeout=5)


def wss_client_for_name(gateway: Gateway, home: TlsHome, name: str) -> GatewayClient:
    assert gateway.wss_url is not None
    return GatewayClient.connect(gateway.wss_url, ssl_context=home.client_context(),
                                 server_hostname=name)


def test_no_tls_and_tls_never_installed(stack: CardStack, tls_home: TlsHome,
                                        tmp_path: Path) -> None:
    with running_gateway(stack.socket, "--no-tls", env=tls_home.env) as ws_only:
        assert ws_only.wss_url is None
        assert "wss://" not in ws_only.log() and "tls install" not in ws_only.log()
        with GatewayClient.connect(ws_only.url) as client:
            still_works(client)
    empty = tmp_path / "home"
    empty.mkdir()
    with running_gateway(stack.socket, env={"HOME": str(empty),
                                           "XDG_CONFIG_HOME": str(empty / ".config")}) as bare:
        assert bare.wss_url is None
        log = bare.log()
        said = [line for line in log.splitlines() if "eport-gateway tls install" in line]
        assert len(said) == 2, log  # once, in Chinese and in English
        assert any("https" in line and re.search("[\u4e00-\u9fff]", line) for line in said)
        assert any("Single Window https pages need" in line for line in said), log
        with GatewayClient.connect(bare.url) as client:
            still_works(client)


def test_a_port_in_use_is_named(stack: CardStack, tls_home: TlsHome) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        for option, scheme in (("--tls-port", "wss"), ("--port", "ws")):
            result = subprocess.run(
                [GATEWAY, "serve", "--port", "0", "--tls-port", "0", option, str(taken),
                 "--socket", str(stack.socket)], capture_output=True, text=True, timeout=30,
                env={**os.environ, **tls_home.env}, stdin=subprocess.DEVNULL)
            assert result.returncode == 4, result
            lines = result.stderr.strip().splitlines()
            assert any(re.search("[\u4e00-\u9fff]", line) and f":{taken}" in line
                       for line in lines), result.stderr
            assert any(f"cannot listen for {scheme} on 127.0.0.1:{taken}" in line
                       and option in line for line in lines), result.stderr
            assert "Traceback" not in result.stderr
    finally:
        holder.close()


# ---- b. only the gateway's own user ----

# The other user's program: the standard library only. It sends a websocket upgrade and,
# without waiting, a request frame, then reports every byte it got back and how it ended.
_CLIENT = r'''
import base64, json, os, socket, ssl, sys, time
host, port, use_tls, origin, tag = sys.argv[1:6]
raw = socket.create_connection((host, int(port)), timeout=10)
local_port = raw.getsockname()[1]
conn = raw
if use_tls == "tls":
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = context.wrap_socket(raw, server_hostname="wss.singlewindow.cn")
headers = ["GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
           "Connection: Upgrade", "Sec-WebSocket-Version: 13",
           "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]
if origin != "-":
    headers.append("Origin: " + origin)
payload = json.dumps({"_id": tag, "_method": "cus-sec_SpcGetCardID"}).encode()
mask = os.urandom(4)
frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
    b ^ mask[i % 4] for i, b in enumerate(payload))
received, ended = b"", "timeout"
try:
    conn.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + frame)
    deadline = time.monotonic() + 10  # not a wait: a read loop, recv() blocks until data comes
    while time.monotonic() < deadline and tag.encode() not in received:  # not a wait: as above
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            ended = "closed"
            break
        received += chunk
    else:
        ended = "answered" if tag.encode() in received else "timeout"
except socket.timeout:
    ended = "timeout"
except (OSError, ssl.SSLError) as error:
    ended = "reset: " + type(error).__name__
print(json.dumps({"uid": os.getuid(), "port": local_port, "ended": ended,
                  "received": received.decode("latin-1")}))
'''


def run_client(host: str, port: int, *, tls: bool, origin: str | None, as_other_user: bool
               ) -> dict[str, Any]:
    tag = f"probe-{secrets.token_hex(6)}"
    as_user: list[str] = []
    if as_other_user:
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or setpriv is None:
            stack_unavailable("running a program as uid 65534 needs root and setpriv")
        assert setpriv is not None
        as_user = [setpriv, "--reuid", str(OTHER_UID), "--regid", str(OTHER_UID),
                   "--clear-groups"]
    result = subprocess.run(
        [*as_user, sys.executable, "-I", "-S", "-c", _CLIENT, host, str(port),
         "tls" if tls else "plain", origin or "-", tag],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    report["tag"] = tag
    return report


def assert_refused(gateway: Gateway, report: dict[str, Any]) -> None:
    assert report["uid"] == OTHER_UID
    assert report["received"] == "", f"uid {OTHER_UID} got an answer: {report}"
    assert report["ended"] != "timeout", f"the connection was not closed: {report}"
    line = wait_for_log(gateway, rf".*closed a connection from \S+ \(port {report['port']}\).*")
    assert f"uid {OTHER_UID}" in line, line
    assert report["tag"] not in gateway.log()  # nothing the peer sent is logged


def assert_answered(report: dict[str, Any], card: CardImage) -> None:
    received = report["received"]
    assert received.startswith("HTTP/1.1 101"), report
    assert '{"_id": 0, "_method": "open", "_status": "00"}' in received or \
        '{"_id":0,"_method":"open","_status":"00"}' in received, report
    assert card.profile.card_id in received, report


@pytest.mark.parametrize("origin", [None, "https://www.singlewindow.cn"])
def test_another_user_gets_nothing_on_either_port(tls_gateway: Gateway, card_in: CardImage,
                                                  origin: str | None) -> None:
    for port, tls in ((tls_gateway.port, False), (tls_gateway.tls_port, True)):
        refused = run_client("127.0.0.1", port, tls=tls, origin=origin, as_other_user=True)
        assert_refused(tls_gateway, refused)
        # The same program as the gateway's own user is answered: the check is the uid.
        answered = run_client("127.0.0.1", port, tls=tls, origin=origin, as_other_user=False)
        assert_answered(answered, card_in)
    assert tls_gateway.alive()


def test_another_user_gets_nothing_over_ipv6(stack: CardStack, tls_home: TlsHome,
                                             card_in: CardImage) -> None:
    if not socket.has_ipv6 or not Path("/proc/net/tcp6").exists():
        stack_unavailable("no IPv6 on this machine")
    with running_gateway(stack.socket, "--listen", "::1", env=tls_home.env) as gateway:
        assert gateway.url.startswith("ws://[::1]:") and gateway.wss_url is not None
        for port, tls in ((gateway.port, False), (gateway.tls_port, True)):
            assert_refused(gateway, run_client("::1", port, tls=tls, origin=None,
                                               as_other_user=True))
            assert_answered(run_client("::1", port, tls=tls, origin=None,
                                       as_other_user=False), card_in)


def test_an_ipv6_socket_with_a_mapped_address_is_checked(tls_gateway: Gateway,
                                                         card_in: CardImage) -> None:
    """An IPv6 socket connected to ::ffff:127.0.0.1 reaches the IPv4 listener; the kernel
    keeps it in tcp6 with mapped addresses, and its owner is still found."""
    if not socket.has_ipv6 or not Path("/proc/net/tcp6").exists():
        stack_unavailable("no IPv6 on this machine")
    for port, tls in ((tls_gateway.port, False), (tls_gateway.tls_port, True)):
        assert_refused(tls_gateway, run_client("::ffff:127.0.0.1", port, tls=tls, origin=None,
                                               as_other_user=True))
        assert_answered(run_client("::ffff:127.0.0.1", port, tls=tls, origin=None,
                                   as_other_user=False), card_in)


# ---- c. safer defaults: origins, the stored PIN ----

def test_plain_http_single_window_pages_are_refused_by_default(stack: CardStack,
                                                               tls_gateway: Gateway,
                                                               tls_home: TlsHome) -> None:
    for host in ("www", "app", "swapp"):
        for url in (tls_gateway.url, tls_gateway.wss_url):
            assert url is not None
            context = tls_home.client_context() if url.startswith("wss") else None
            with pytest.raises(InvalidStatus) as refused:
                GatewayClient.connect(url, origin=f"http://{host}.singlewindow.cn",
                                      ssl_context=context, server_hostname=WSS_NAME)
            assert refused.value.response.status_code == 403
        with wss_client(tls_gateway, tls_home, origin=f"https://{host}.singlewindow.cn") as ok_:
            still_works(ok_)
    with running_gateway(stack.socket, "--no-tls", "--allow-origin",
                         "http://www.singlewindow.cn") as opted_in, \
            GatewayClient.connect(opted_in.url, origin="http://www.singlewindow.cn") as client:
        still_works(client)


@pytest.fixture
def unattended_daemon(stack: CardStack) -> Iterator[CardStack]:
    """The module's eportd replaced, for one test, by one that allows unattended signing (the
    PIN kept in a keyring: an in-memory one, headless CI has no Secret Service)."""
    stack.stop_daemon()
    stack.daemon = start_daemon(
        stack.directory / "run", "--trust-anchor", str(stack.trust_anchor), "--allow-unattended",
        env={"PYTHON_KEYRING_BACKEND": "tests.support.memory_keyring.MemoryKeyring"})
    try:
        yield stack
    finally:
        stack.stop_daemon()
        stack.start_daemon()


def test_a_stored_pin_signs_for_the_gateway_only_when_allowed(
        unattended_daemon: CardStack, card_in: CardImage) -> None:
    stub = unattended_daemon.running().stub()
    enabled = stub.EnableUnattended(pb.EnableUnattendedRequest(pin=PIN))
    assert enabled.enabled
    stub.Logout(pb.CardSelector())
    # eportd itself would sign now, with the stored PIN:
    assert stub.Sign(pb.SignRequest(data=b"local script")).signature
    stub.Logout(pb.CardSelector())
    with running_gateway(unattended_daemon.socket, "--no-tls") as default, \
            GatewayClient.connect(default.url) as client:
        for method in ("SpcSignDataAsPEM", "SpcSignData"):
            failed(client.call(method, {"inData": "a page, no PIN"}), "0A00002D")
        failed(client.call("SpcSignDataAsPEM", {"inData": "empty PIN", "passwd": ""}),
               "0A00002D")
    assert unattended_daemon.pin_tries_left() == 3
    with running_gateway(unattended_daemon.socket, "--no-tls", "--allow-stored-pin") as allowed, \
            GatewayClient.connect(allowed.url) as client:
        data = "signed with the stored PIN"
        signature, _ = ok(client.call("SpcSignDataAsPEM", {"inData": data}))
        assert rsa_signature_verifies(card_in, data.encode(), signature)
    stub.DisableUnattended(pb.CardSelector())


# ---- d. block transfers: held bytes, timeouts ----

def _request(units: int, request_id: str) -> str:
    head = json.dumps({"_id": request_id, "_method": "cus-sec_SpcSHA1Digest",
                       "args": {"szInfo": ""}})
    return head.replace('"szInfo": ""', '"szInfo": "' + "z" * (units - len(head)) + '"')


def _blocks(text: str, count: int, guid: str) -> list[str]:
    size = -(-len(text) // count)
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    return [block_frame(whole_check=check_code(text), block_check=check_code(piece),
                        whole_length=len(text), block=piece, count=len(pieces), guid=guid,
                        number=number) for number, piece in enumerate(pieces)]


def _send_block(client: GatewayClient, frame: str, guid: str) -> dict[str, Any]:
    future = client.expect(guid, "_nextBlock")
    client.send_text(frame)
    reply = future.result(30)
    [answer] = reply.data
    return {"ok": reply.ok, "error": reply.error, **answer}


@pytest.fixture(scope="module")
def block_gateway(stack: CardStack) -> Iterator[Gateway]:
    with running_gateway(stack.socket, "--no-tls", "--max-message-bytes", str(SMALL_LIMIT),
                         "--block-timeout", "2") as started:
        yield started


def test_a_connections_transfers_share_one_cap(block_gateway: Gateway) -> None:
    """--max-message-bytes 65536: each of two 50,000-character requests fits, both held at
    once do not; the one that would go over is dropped, the other goes through."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    text_a, text_b = _request(50_000, "cap-a"), _request(50_000, "cap-b")
    blocks_a, blocks_b = _blocks(text_a, 2, a), _blocks(text_b, 2, b)
    with GatewayClient.connect(block_gateway.url) as client:
        reply_b = client.expect("cap-b", "cus-sec_SpcSHA1Digest")
        assert _send_block(client, blocks_a[0], a)["ok"]
        assert _send_block(client, blocks_b[0], b)["ok"]
        over = _send_block(client, blocks_a[1], a)
        assert not over["ok"] and over["finish"] is True, over
        assert over["error"][1] == "Err:Custom51500" and "would hold more than" in \
            over["error"][2], over
        last = _send_block(client, blocks_b[1], b)
        assert last["ok"] and last["finish"] is True, last
        digest = hashlib.sha1(json.loads(text_b)["args"]["szInfo"].encode()).hexdigest()
        assert ok(reply_b.result(30)) == [digest.upper()]
        # Blocks that add up to more than their first block declared: refused at once.
        guid = str(uuid.uuid4())
        piece = "q" * 600
        frames = [block_frame(whole_check=check_code(piece * 2), block_check=check_code(piece),
                              whole_length=1000, block=piece, count=3, guid=guid,
                              number=number) for number in range(3)]
        assert _send_block(client, frames[0], guid)["ok"]
        beyond = _send_block(client, frames[1], guid)
        assert not beyond["ok"] and beyond["finish"] is True, beyond
        still_works(client)


def test_a_stalled_transfer_times_out_and_frees_what_it_held(block_gateway: Gateway) -> None:
    stalled, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    blocks_stalled = _blocks(_request(40_000, "stalled"), 2, stalled)
    text_fresh = _request(60_000, "fresh")
    with GatewayClient.connect(block_gateway.url) as client:
        assert _send_block(client, blocks_stalled[0], stalled)["ok"]  # 20,000 held
        wait_for_log(block_gateway, rf"block transfer {stalled} .*dropped", timeout=10)
        # 60,000 more fits under 65,536 only because the stalled 20,000 were freed.
        reply = client.expect("fresh", "cus-sec_SpcSHA1Digest")
        for frame in _blocks(text_fresh, 2, fresh):
            answer = _send_block(client, frame, fresh)
            assert answer["ok"], answer
        ok(reply.result(30))
        late = _send_block(client, blocks_stalled[1], stalled)
        assert not late["ok"] and late["finish"] is True, late
        assert late["error"][1] == "Err:Custom51500"
        assert "got no block for 2 seconds" in late["error"][2], late
        assert "请重新发送整个请求" in late["error"][0], late
        still_works(client)


# ---- e. the connection cap ----

def test_connections_over_the_cap_are_refused(stack: CardStack, tls_home: TlsHome) -> None:
    with running_gateway(stack.socket, "--max-connections", "2", env=tls_home.env) as capped:
        first = GatewayClient.connect(capped.url)
        second = wss_client(capped, tls_home)
        try:
            # The cap counts both ports together: a third on either is refused.
            for url, context in ((capped.url, None), (capped.wss_url, tls_home.client_context())):
                assert url is not None
                tls: dict[str, Any] = {} if context is None else {
                    "ssl": context, "server_hostname": WSS_NAME}
                with ws_connect(url, proxy=None, open_timeout=10, **tls) as third:
                    with pytest.raises(ConnectionClosed) as closed:
                        third.recv(timeout=10)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 1013
                    assert "too many connections" in closed.value.rcvd.reason
                    assert re.search("[\u4e00-\u9fff]", closed.value.rcvd.reason)
            wait_for_log(capped, r"refused a connection from \S+: 2 connections are open")
            still_works(first)
            still_works(second)
        finally:
            second.close()
        # Once the gateway has seen the close, the freed place takes a new connection.
        def connected_again() -> bool:
            with GatewayClient.connect(capped.url) as again:
                still_works(again)
            return True

        wait_until(connected_again, timeout=10,
                   retry_on=(ConnectionClosed, AssertionError),  # still counted: try again
                   what="the closed connection's place is free")
        first.close()


# ---- f. strict JSON ----

@pytest.fixture(scope="module")
def plain_gateway(stack: CardStack) -> Iterator[Gateway]:
    with running_gateway(stack.socket, "--no-tls") as started:
        yield started


@pytest.mark.parametrize(("frame", "echoed_id"), [
    ('{"_id": NaN, "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": Infinity, "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": -Infinity, "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": 1e999, "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": ' + "4" * 5000 + ', "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": "\\udead", "_method": "cus-sec_SpcGetCardID"}', None),
    ('{"_id": 601, "_method": "cus-sec_SpcSHA1Digest", "args": {"szInfo": NaN}}', 601),
    ('{"_id": 602, "_method": "cus-sec_SpcSHA1Digest", "args": {"szInfo": "a",'
     ' "n": ' + "9" * 5000 + '}}', 602),
    ('{"_id": "603", "_method": "cus-sec_SpcSHA1Digest", "args": {"szInfo": "\\ud800"}}',
     "603"),
    ('{"_id": 604, "_method": "cus-sec_SpcSignDataAsPEM", "args": {"inData": "\\udfff"}}',
     604),
    ("[NaN]", None),
    ("-" + "1" * 5000, None),
])
def test_malformed_json_gets_51500_and_the_connection_stays(plain_gateway: Gateway, frame: str,
                                                            echoed_id: Any) -> None:
    with ws_connect(plain_gateway.url, proxy=None, open_timeout=10) as raw:
        assert json.loads(raw.recv(timeout=10)) == {"_id": 0, "_method": "open",
                                                     "_status": "00"}
        raw.send(frame)
        text = raw.recv(timeout=10)
        assert isinstance(text, str)
        # The reply is strict JSON: no NaN or Infinity anywhere.
        answer = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name}: {text}"))
        assert answer["_id"] == echoed_id, text
        reply = Reply(answer)
        failed(reply, "51500")
        assert "not valid JSON" in reply.error[2], text
        raw.send(json.dumps({"_id": 700, "_method": "cus-sec_SpcSHA1Digest",
                             "args": {"szInfo": "after"}}))
        after = json.loads(raw.recv(timeout=10))
        assert after["_id"] == 700 and after["_args"]["Result"] is True, after
    assert plain_gateway.alive() and "Traceback" not in plain_gateway.log()


def test_integer_ids_are_echoed_digit_for_digit(plain_gateway: Gateway) -> None:
    """Up to 64 digits (docs/gateway.md): beyond 2**53, which a JavaScript client cannot hold
    exactly, the reply still carries the very digits sent."""
    with ws_connect(plain_gateway.url, proxy=None, open_timeout=10) as raw:
        raw.recv(timeout=10)
        for digits in ("9007199254740993", "1" * 64):
            raw.send('{"_id": ' + digits + ', "_method": "cus-sec_SpcSHA1Digest", '
                     '"args": {"szInfo": "x"}}')
            text = raw.recv(timeout=10)
            assert isinstance(text, str) and text.startswith(f'{{"_id":{digits},'), text
        raw.send('{"_id": ' + "1" * 65 + ', "_method": "cus-sec_SpcSHA1Digest"}')
        refused = json.loads(raw.recv(timeout=10))
        assert refused["_id"] is None and "64 digits" in refused["_args"]["Error"][2]
