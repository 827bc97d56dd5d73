"""eportd's server bootstrap as a user meets it: where the socket goes, which directories and
sockets it refuses, who may call, what it logs, and how it starts and stops.

Real Unix sockets in temporary directories and real grpc channels throughout. Tests that
switch to another uid need root (they are skipped otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eport.daemon.config import DaemonSettings
from eport.daemon.main import main
from eport.daemon.server.bootstrap import (
    CARD_SERVICE_NAME,
    RunningServer,
    run_server,
    sd_notify,
    take_activated_socket,
)
from eport.daemon.server.logging_setup import (
    PCSC_LOGGER,
    TRAFFIC,
    JsonFormatter,
    configure_logging,
)
from eport.daemon.server.peer_proxy import PeerCred, PeerPolicy
from eport.daemon.server.socket_path import (
    SOCKET_ENV,
    ServerConfigError,
    claim_socket_path,
    lock_path_of,
    resolve_socket_path,
)
from tests.support.waiting import wait_until
from tests.unit.fake_eportd_app import EVENTS_ENV, PROBE_SERVICE, FakeApp, register_probe

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="switching uid needs root")


# --- helpers -------------------------------------------------------------------------------

@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (sun_path holds 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="epd-", dir="/tmp"))
    yield directory
    subprocess.run(["rm", "-rf", str(directory)], check=False)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that call main() in-process: it installs a root handler on (captured) stderr."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    for handler in list(root.handlers):
        if handler not in saved[1]:
            root.removeHandler(handler)
    root.setLevel(saved[0])
    logging.getLogger(PCSC_LOGGER).setLevel(logging.NOTSET)


def user_settings(socket_path: Path, **changes: Any) -> DaemonSettings:
    return replace(DaemonSettings(socket_path=socket_path, systemd_activation=False), **changes)


def health_check(path: Path, service: str = "", timeout: float = 5.0) -> int:
    with grpc.insecure_channel(f"unix:{path}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(reply.status)


def probe(channel: grpc.Channel, method: str, request: bytes = b"", timeout: float = 5.0
          ) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{PROBE_SERVICE}/{method}")
    reply: bytes = call(request, timeout=timeout)
    return reply


def rpc_records(caplog: pytest.LogCaptureFixture, method: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "eport.daemon.server.interceptor" and getattr(r, "method", "") == method]


# A grpc client as another user. The interpreter lives under /root (unreadable for nobody),
# so it imports everything and makes the channel first, then drops to uid/gid, then calls.
_AS_OTHER_USER = textwrap.dedent("""
    import os, sys
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    channel = grpc.insecure_channel("unix:" + path)
    stub = health_pb2_grpc.HealthStub(channel)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        print("FAILED", exc.code().name, exc.details())
        sys.exit(3)
    print("OK", reply.status)
""")


def health_check_as(path: Path, uid: int, gid: int) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-c", _AS_OTHER_USER, str(path), str(uid), str(gid)],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    return result.returncode, result.stdout + result.stderr


# --- socket path resolution ----------------------------------------------------------------

def test_default_path_is_in_xdg_runtime_dir() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert resolve_socket_path(environ=env) == Path("/run/user/1000/eportd/eportd.sock")


def test_without_xdg_runtime_dir_falls_back_to_run_user(tmp_path: Path) -> None:
    (tmp_path / "1000").mkdir()
    path = resolve_socket_path(environ={}, uid=1000, run_user_root=tmp_path)
    assert path == tmp_path / "1000" / "eportd" / "eportd.sock"


def test_without_any_runtime_dir_the_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError) as caught:
        resolve_socket_path(environ={}, uid=1000, run_user_root=tmp_path)
    message = str(caught.value)
    assert "XDG_RUNTIME_DIR" in message and "--socket" in message and "Remedy" in message
    assert "解决办法" in message
    assert caught.value.exit_code == 2


def test_relative_xdg_runtime_dir_is_refused() -> None:
    with pytest.raises(ServerConfigError, match="not an absolute path"):
        resolve_socket_path(environ={"XDG_RUNTIME_DIR": "run/me"})


def test_environment_overrides_default_and_flag_overrides_environment() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", SOCKET_ENV: "/srv/e/env.sock"}
    assert resolve_socket_path(environ=env) == Path("/srv/e/env.sock")
    assert resolve_socket_path(environ=env, system=True) == Path("/srv/e/env.sock")
    assert resolve_socket_path("/srv/e/flag.sock", environ=env) == Path("/srv/e/flag.sock")
    assert resolve_socket_path(environ={SOCKET_ENV: ""}, system=True) == Path(
        "/run/eportd/eportd.sock")


def test_system_default_path() -> None:
    assert resolve_socket_path(system=True, environ={"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        "/run/eportd/eportd.sock")


# --- directory safety ----------------------------------------------------------------------

def test_missing_user_directory_is_created_private(short_dir: Path) -> None:
    path = short_dir / "eportd" / "eportd.sock"
    claim = claim_socket_path(path, "user")
    try:
        info = path.parent.lstat()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    finally:
        claim.release()


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o720, 0o702])
def test_group_or_world_writable_directory_is_refused(short_dir: Path, mode: int) -> None:
    directory = short_dir / "eportd"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ServerConfigError) as caught:
        claim_socket_path(directory / "eportd.sock", "user")
    message = str(caught.value)
    assert "Unsafe socket directory" in message and "套接字目录不安全" in message
    if mode & 0o002:  # shared like /tmp: the remedy is another directory, not a chmod
        assert "directory of your own" in message and f"chmod 700 {directory}" not in message
    else:
        assert f"chmod 700 {directory}" in message
    assert not (directory / "eportd.sock").exists()


@needs_root
def test_directory_of_another_user_is_refused(short_dir: Path) -> None:
    directory = short_dir / "eportd"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(ServerConfigError, match=f"belongs to uid {NOBODY}"):
        claim_socket_path(directory / "eportd.sock", "user")


def test_symlinked_directory_is_refused(short_dir: Path) -> None:
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    (short_dir / "link").symlink_to(real)
    with pytest.raises(ServerConfigError, match="symbolic link"):
        claim_socket_path(short_dir / "link" / "eportd.sock", "user")


def test_system_directory_must_belong_to_root_and_not_be_world_writable(short_dir: Path
                                                                         ) -> None:
    directory = short_dir / "run"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(ServerConfigError, match="world-writable"):
        claim_socket_path(directory / "eportd.sock", "system")
    if os.getuid() == 0:
        directory.chmod(0o755)
        os.chown(directory, NOBODY, 0)
        with pytest.raises(ServerConfigError, match="owned by root"):
            claim_socket_path(directory / "eportd.sock", "system")


@pytest.mark.parametrize("mode", [0o775, 0o770, 0o1775])
def test_system_mode_refuses_a_group_writable_directory(short_dir: Path, mode: int) -> None:
    directory = short_dir / "run"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ServerConfigError) as caught:
        claim_socket_path(directory / "eportd.sock", "system")
    message = str(caught.value)
    assert "可被用户组写入" in message and f"is group-writable (mode {mode:04o})" in message
    assert f"chmod 755 {directory}" in message
    assert not (directory / "eportd.sock").exists() and not lock_path_of(
        directory / "eportd.sock").exists()
    directory.chmod(0o755)
    claim_socket_path(directory / "eportd.sock", "system").release()  # then it is accepted


def test_a_file_that_is_not_a_socket_is_not_removed(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    path.write_text("precious")
    with pytest.raises(ServerConfigError, match="is not a socket"):
        claim_socket_path(path, "user")
    assert path.read_text() == "precious"


@pytest.mark.usefixtures("restore_logging")
def test_unsafe_directory_makes_main_exit_2(short_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    directory = short_dir / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    code = main(["--socket", str(directory / "eportd.sock"), "--no-systemd-activation",
                 "--log-format", "text"], app_factory=FakeApp)
    err = capsys.readouterr().err
    assert code == 2
    assert "Unsafe socket directory" in err and "Remedy" in err and "解决办法" in err


@pytest.mark.usefixtures("restore_logging")
def test_bad_flags_exit_2_and_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--idle-timeout", "-3"], app_factory=FakeApp) == 2
    assert main(["--trust-anchor", "/nonexistent/ca.pem", "--socket", "/tmp/x.sock"],
                app_factory=FakeApp) == 2
    assert "Trust anchor not found" in capsys.readouterr().err
    assert main(["--version"], app_factory=FakeApp) == 0
    assert capsys.readouterr().out.startswith("eportd ")


# --- stale and live sockets ----------------------------------------------------------------

def test_stale_socket_is_removed_and_served_again(short_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eport.daemon.server")
    path = short_dir / "eportd.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a daemon killed with -9
    with run_server(user_settings(path), register_probe) as running:
        assert health_check(running.socket_path) == health_pb2.HealthCheckResponse.SERVING
    assert f"removed stale socket {path}" in caplog.messages


def test_second_server_on_the_same_path_is_refused(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    with run_server(user_settings(path), register_probe):
        with pytest.raises(ServerConfigError) as caught, \
                run_server(user_settings(path), register_probe):
            pass
        message = str(caught.value)
        assert f"another eportd is already serving {path} (pid {os.getpid()})" in message
        assert "另一个 eportd" in message
        # The refused attempt left the first one alone.
        assert health_check(path) == health_pb2.HealthCheckResponse.SERVING


def test_live_socket_without_the_lock_is_refused(short_dir: Path) -> None:
    # E.g. an older daemon that did not take the lock: the connect probe still finds it.
    path = short_dir / "eportd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        with pytest.raises(ServerConfigError,
                           match=f"already serving .* \\(pid {os.getpid()}\\)"):
            claim_socket_path(path, "user")
        assert path.exists()


def test_clean_exit_removes_the_socket_and_private_directory(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    with run_server(user_settings(path), register_probe):
        private = [p for p in short_dir.iterdir() if p.name.startswith(".eportd.sock.private-")]
        assert len(private) == 1 and stat.S_IMODE(private[0].stat().st_mode) == 0o700
        assert (private[0] / "grpc.sock").exists()
    assert not path.exists()
    assert sorted(p.name for p in short_dir.iterdir()) == [lock_path_of(path).name]
    # And the path can be served again right away.
    with run_server(user_settings(path), register_probe) as running:
        assert health_check(running.socket_path) == health_pb2.HealthCheckResponse.SERVING


# --- the served socket ---------------------------------------------------------------------

def test_user_socket_is_0600(short_dir: Path) -> None:
    path = short_dir / "eportd" / "eportd.sock"
    with run_server(user_settings(path), register_probe):
        info = path.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
        assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700


def test_health_and_reflection_are_served(short_dir: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    caplog.set_level(logging.INFO, logger="eport.daemon.server")
    path = short_dir / "eportd.sock"
    with run_server(user_settings(path), register_probe) as running:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_check(path, "") == serving
        assert health_check(path, CARD_SERVICE_NAME) == serving
        running.health.set(CARD_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert health_check(path, CARD_SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(f"unix:{path}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=CARD_SERVICE_NAME), timeout=5)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            running.health.set(CARD_SERVICE_NAME, serving)
            assert next(watch).status == serving
            watch.cancel()
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
            names = {s.name for r in replies for s in r.list_services_response.service}
    assert {CARD_SERVICE_NAME, "grpc.health.v1.Health"} <= names
    [watch_call] = rpc_records(caplog, "/grpc.health.v1.Health/Watch")
    assert vars(watch_call)["code"] == "CANCELLED"


def test_call_reports_our_pid_and_uid_and_is_logged(short_dir: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eport.daemon.server")
    path = short_dir / "eportd.sock"
    with run_server(user_settings(path), register_probe) as running, \
            grpc.insecure_channel(f"unix:{path}") as channel:
        who = json.loads(probe(channel, "WhoAmI"))
        expected = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
        assert who["cred"] == expected
        assert running.peers.lookup(who["peer"]) == PeerCred(**expected)
        stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            f"/{PROBE_SERVICE}/WhoAmIStream")
        assert [json.loads(m)["cred"] for m in stream(b"", timeout=5)] == [expected] * 3
        with pytest.raises(grpc.RpcError) as failed:
            probe(channel, "Fail")
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        channel.close()
        # The registry forgets a connection when it ends.
        wait_until(lambda: len(running.peers) == 0 and running.connection_count == 0,
                   timeout=10, what="the registry has forgotten the closed connection")

    [call] = rpc_records(caplog, f"/{PROBE_SERVICE}/WhoAmI")
    fields = vars(call)
    assert (fields["uid"], fields["pid"], fields["code"]) == (os.getuid(), os.getpid(), "OK")
    assert call.levelno == logging.INFO and fields["duration_ms"] >= 0
    assert f"pid={os.getpid()}" in call.getMessage()
    [streamed] = rpc_records(caplog, f"/{PROBE_SERVICE}/WhoAmIStream")
    assert vars(streamed)["code"] == "OK"
    [failed_call] = rpc_records(caplog, f"/{PROBE_SERVICE}/Fail")
    assert vars(failed_call)["code"] == "NOT_FOUND"


def test_large_messages_and_concurrent_calls_cross_the_proxy_intact(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    payload = os.urandom(3 * 1024 * 1024 + 17)  # many 64 KiB reads each way
    with run_server(user_settings(path), register_probe), \
            grpc.insecure_channel(f"unix:{path}") as channel:
        assert probe(channel, "Echo", payload, timeout=20) == payload[::-1]
        results: list[bool] = []

        def call(index: int) -> None:
            data = index.to_bytes(4, "big") * 5000
            results.append(probe(channel, "Echo", data) == data[::-1])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert results == [True] * 16


def test_peer_of_is_none_outside_a_call() -> None:
    from eport.daemon.server.peer_proxy import peer_of

    class Context:
        def peer(self) -> str:
            return "unix:/x"

    assert peer_of(Context()) is None  # type: ignore[arg-type]


@needs_root
def test_another_user_cannot_reach_the_user_socket(short_dir: Path) -> None:
    path = short_dir / "eportd" / "eportd.sock"
    with run_server(user_settings(path), register_probe):
        code, output = health_check_as(path, NOBODY, NOBODY)
        assert code == 3, output
        assert "FAILED UNAVAILABLE" in output  # the 0700 directory: permission denied
        # Control: the same script as root gets through, so the failure above is the uid's.
        code, output = health_check_as(path, 0, 0)
        assert code == 0 and "OK 1" in output, output


@needs_root
def test_proxy_refuses_another_uid_even_if_file_modes_are_loosened(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eport.daemon.server")
    path = short_dir / "eportd" / "eportd.sock"
    with run_server(user_settings(path), register_probe) as running:
        # An admin's chmod mistake: the file modes no longer protect the socket.
        short_dir.chmod(0o755)
        path.parent.chmod(0o755)
        path.chmod(0o666)
        code, output = health_check_as(path, NOBODY, NOBODY)
        assert code == 3 and "FAILED UNAVAILABLE" in output, output
        assert len(running.peers) == 0
    refused = [r for r in caplog.records if "refused connection" in r.getMessage()]
    assert refused and vars(refused[0])["uid"] == NOBODY


@needs_root
def test_system_mode_admits_group_members_only(short_dir: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eport.daemon.server")
    short_dir.chmod(0o755)
    path = short_dir / "run" / "eportd.sock"
    (short_dir / "run").mkdir(mode=0o755)
    settings = user_settings(path, mode="system", socket_group="nogroup")
    with run_server(settings, register_probe):
        info = path.lstat()
        assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == NOBODY
        code, output = health_check_as(path, NOBODY, NOBODY)  # a member of the group
        assert code == 0 and "OK 1" in output, output
        member = [r for r in rpc_records(caplog, "/grpc.health.v1.Health/Check")
                  if vars(r)["uid"] == NOBODY]
        assert member, "the member's call is logged with its uid"
        # Not a member: refused by the file mode, and by the proxy when the mode is loosened.
        code, output = health_check_as(path, NOBODY, 12345)
        assert code == 3 and "UNAVAILABLE" in output, output
        path.chmod(0o666)
        code, output = health_check_as(path, NOBODY, 12345)
        assert code == 3 and "UNAVAILABLE" in output, output
    assert any("refused connection from uid 65534" in r.getMessage() for r in caplog.records)


def test_system_mode_without_the_group_is_a_clear_error(short_dir: Path) -> None:
    settings = user_settings(short_dir / "eportd.sock", mode="system",
                             socket_group="eport-no-such-group")
    with pytest.raises(ServerConfigError, match="groupadd --system eport-no-such-group"), \
            run_server(settings, register_probe):
        pass


def test_peer_policy() -> None:
    user = PeerPolicy(server_uid=1000)
    assert user.allows(PeerCred(1, 1000, 1000)) and user.allows(PeerCred(1, 0, 0))
    assert not user.allows(PeerCred(1, 1001, 1000), groups=[1000])
    system = PeerPolicy(server_uid=0, group_gid=990)
    assert system.allows(PeerCred(1, 1001, 990))
    assert system.allows(PeerCred(1, 1001, 100), groups=[27, 990])
    assert not system.allows(PeerCred(1, 1001, 100), groups=[27])


# --- systemd -------------------------------------------------------------------------------

def test_activation_variables_for_another_process_are_ignored() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert take_activated_socket(env) is None
    assert env["LISTEN_FDS"] == "1"  # not ours to consume
    assert take_activated_socket({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) is None
    assert take_activated_socket({}) is None


def test_sd_notify_reaches_path_and_abstract_sockets(short_dir: Path) -> None:
    assert sd_notify("READY=1", {}) is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(short_dir / "notify"))
        receiver.settimeout(5)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(short_dir / "notify")})
        assert receiver.recv(100) == b"READY=1"
    name = f"eportd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert receiver.recv(100) == b"STOPPING=1"


# --- eportd as a process -------------------------------------------------------------------

@contextlib.contextmanager
def eportd_process(args: list[str], *, pass_fds: tuple[int, ...] = (),
                   prefix: list[str] | None = None, env: dict[str, str] | None = None
                   ) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "tests.unit.fake_eportd_app", *(prefix or []), "--",
               *args]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, pass_fds=pass_fds,
                               env={**os.environ, **(env or {})})
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def wait_serving(process: subprocess.Popen[str], path: Path) -> None:
    def serving() -> bool:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(grpc.RpcError):
            return bool(health_check(path, timeout=1) == health_pb2.HealthCheckResponse.SERVING)
        return False

    wait_until(serving, timeout=20, interval=0.02, what="eportd serves")


def test_eportd_serves_until_sigterm_and_lets_a_call_finish(short_dir: Path) -> None:
    path = short_dir / "eportd" / "eportd.sock"
    events = short_dir / "events"
    with eportd_process(["--socket", str(path), "--no-systemd-activation"],
                        env={EVENTS_ENV: str(events), "NOTIFY_SOCKET": ""}) as process:
        wait_serving(process, path)
        result: dict[str, Any] = {}
        with grpc.insecure_channel(f"unix:{path}") as channel:
            slow = threading.Thread(
                target=lambda: result.update(reply=probe(channel, "Sleep", b"1.0", timeout=10)))
            slow.start()
            wait_until(lambda: events.exists() and "sleep-started" in events.read_text(),
                       timeout=10, what="the slow call is in flight")
            process.send_signal(signal.SIGTERM)
            slow.join(15)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
    assert result.get("reply") == b"slept"  # finished within the grace period
    assert out == ""  # nothing but logs, and those go to stderr
    lines = [json.loads(line) for line in err.splitlines()]
    [ready] = [line for line in lines if line["msg"].startswith("eportd ready")]
    assert ready["path"] == str(path) and ready["level"] == "INFO"
    assert ready["pid"] == process.pid and {"ts", "logger"} <= set(ready)
    assert any(line.get("code") == "OK" and line.get("method", "").endswith("/Sleep")
               for line in lines)
    assert events.read_text().split() == ["register", "start", "attach_health", "sleep-started",
                                          "shutdown"]
    assert not path.exists()


def test_eportd_uses_the_socket_systemd_passes(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    path.chmod(0o600)
    try:
        # --socket names another path: the passed socket must win over it.
        unused = short_dir / "unused.sock"
        with eportd_process(["--socket", str(unused), "--log-format", "text"],
                            prefix=["--activate-fd", str(listener.fileno())],
                            pass_fds=(listener.fileno(),)) as process:
            wait_serving(process, path)
            assert not unused.exists()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
            assert process.returncode == 0, err
            assert f"using the socket systemd passed: {path}" in err
        # systemd's socket stays, still listening (systemd would start us again on demand).
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert not lock_path_of(path).exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    finally:
        listener.close()


@pytest.mark.skipif(importlib.util.find_spec("eport.daemon.service.app") is None,
                    reason="eport.daemon.service.app (build_service) is not written yet")
def test_real_eportd_starts_and_stops_with_the_card_service(short_dir: Path) -> None:
    path = short_dir / "eportd" / "eportd.sock"
    # pcsc-lite's client finds pcscd through this variable: pointing it nowhere keeps the unit
    # tier away from the shared pcscd (and shows the daemon starts without one).
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(short_dir / "no-pcscd.comm")}
    process = subprocess.Popen(
        [sys.executable, "-m", "eport.daemon.main", "--socket", str(path),
         "--no-systemd-activation"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env)
    try:
        wait_serving(process, path)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert out == "", "stdout is for nothing but --version and --help"
        assert not path.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# --- logging -------------------------------------------------------------------------------

def test_json_log_lines_carry_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("eport.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("card %s gone", "A1", extra={"reader": "Virtual PCD 00 00", "slot": 0})
    finally:
        log.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "card A1 gone" and entry["level"] == "WARNING"
    assert entry["logger"] == "eport.test.json" and entry["ts"].endswith("+00:00")
    assert entry["reader"] == "Virtual PCD 00 00" and entry["slot"] == 0
    assert "args" not in entry and "levelno" not in entry


@pytest.mark.usefixtures("restore_logging")
def test_apdu_trace_lets_traffic_records_through() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json_format=False, apdu_trace=True, stream=stream)
    logging.getLogger(PCSC_LOGGER).log(TRAFFIC, "SEND 00A40400")
    logging.getLogger("eport.daemon.other").debug("not shown")
    configure_logging("INFO", json_format=False, apdu_trace=False, stream=stream)
    logging.getLogger(PCSC_LOGGER).log(TRAFFIC, "SEND hidden")
    text = stream.getvalue()
    assert "TRAFFIC eport.cardlib.pcsc.transport: SEND 00A40400" in text
    assert "not shown" not in text and "hidden" not in text


def test_running_server_stop_is_idempotent(short_dir: Path) -> None:
    path = short_dir / "eportd.sock"
    with run_server(user_settings(path), register_probe) as running:
        assert isinstance(running, RunningServer)
        running.stop(grace=0)
        running.stop(grace=0)
        with pytest.raises(grpc.RpcError):
            health_check(path, timeout=1)
    assert not path.exists()
