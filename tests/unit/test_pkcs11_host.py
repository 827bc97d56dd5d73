"""eportd runs each PKCS#11 module in a host process (cardlib/pkcs11/hosted.py): a module that
stops answering stops only its host, which eportd kills and starts again; a host that dies is
started again; the next call works. Real eportd, real SoftHSM2, the `eport` CLI.

A stopped host (SIGSTOP) is what a module call that never returns looks like from eportd: no
reply, no presence report. With the in-process backend this froze all of eportd (PyKCS11 keeps
the interpreter lock); here every other call goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eport.cardlib.errors import InvalidPinError, TokenUnavailable, Unavailable
from eport.cardlib.pkcs11.host_wire import EncodedError, decode_error, encode_error
from tests.support.daemon_stack import Daemon, running_daemon
from tests.support.eport_cli import Result, describe, pin_lines, run_eport
from tests.support.softhsm import RSA_LABEL, SOFTHSM_MODULE, USER_PIN, SoftHsm, build_softhsm
from tests.support.waiting import wait_until

CALL_TIMEOUT_S = 3  # the config's call_timeout: short, so that a hang is noticed in the test
EXIT_CARD_UNAVAILABLE = (4, 5)  # card service down / no card (docs/cli.md)


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return build_softhsm(tmp_path_factory.mktemp("softhsm"))


@dataclass
class Stack:
    daemon: Daemon
    hsm: SoftHsm
    workdir: Path

    def eport(self, *args: str | Path, stdin: str | None = None, timeout: float = 60
              ) -> Result:
        return run_eport(*map(str, args), socket_path=self.daemon.socket, stdin=stdin,
                         timeout=timeout)

    def host_pid(self) -> int:
        """The module host: eportd's child running eport.cardlib.pkcs11.host."""
        def find() -> int | None:
            listed = subprocess.run(["pgrep", "-P", str(self.daemon.process.pid), "-f",
                                     "eport.cardlib.pkcs11.host"],
                                    capture_output=True, text=True, check=False)
            pids = [int(pid) for pid in listed.stdout.split()]
            return pids[0] if len(pids) == 1 else None
        pid: int = wait_until(find, timeout=20, what="eportd's PKCS#11 module host runs")
        return pid

    def rsa_reader(self) -> dict[str, Any]:
        def listed() -> dict[str, Any] | None:
            result = self.eport("readers", "--json")
            if result.returncode != 0:
                return None
            for reader in json.loads(result.stdout)["result"]["readers"]:
                if reader["name"].endswith(RSA_LABEL) and reader.get("card_id"):
                    return dict(reader)
            return None
        found: dict[str, Any] = wait_until(listed, timeout=30,
                                           what="eportd lists the SoftHSM2 RSA token")
        return found

    def sign(self, reader: str, name: str, *, pin: bool) -> Result:
        message = self.workdir / f"{name}.xml"
        message.write_text(f"<CEBMessage>{name}</CEBMessage>", "utf-8")
        signature = self.workdir / f"{name}.sig"
        extra: tuple[str, ...] = ("--pin-stdin",) if pin else ()
        result = self.eport("sign", message, "--reader", reader, "--algorithm", "sha256-rsa",
                            "--format", "raw", "-o", signature, *extra,
                            stdin=pin_lines(USER_PIN) if pin else None)
        if result.returncode == 0:
            public = self.hsm.keys["signing"].public_pem
            checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public),
                                      "-signature", str(signature), str(message)],
                                     capture_output=True, text=True, check=False)
            assert "Verified OK" in checked.stdout, checked.stdout + checked.stderr
        return result


@pytest.fixture
def stack(tmp_path: Path, softhsm: SoftHsm) -> Iterator[Stack]:
    hsm = softhsm.copy_to(tmp_path / "hsm")
    config = tmp_path / "eportd.toml"
    config.write_text(f'[[backend]]\nkind = "pkcs11"\nmodule = "{SOFTHSM_MODULE}"\n'
                      f"call_timeout = {CALL_TIMEOUT_S}\n", "utf-8")
    with running_daemon(tmp_path / "d", "--config", str(config),
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as daemon:
        yield Stack(daemon, hsm, tmp_path)


def test_a_module_that_stops_answering_stops_only_its_host(stack: Stack) -> None:
    reader = str(stack.rsa_reader()["name"])
    assert stack.sign(reader, "before", pin=True).returncode == 0
    host = stack.host_pid()
    os.kill(host, signal.SIGSTOP)  # every module call from now on "never returns"
    try:
        # eportd itself answers at once: other calls do not wait on the module.
        started = time.monotonic()
        info = stack.eport("readers", "--json", timeout=10)
        assert info.returncode == 0, describe(info)
        assert time.monotonic() - started < 5
        # A call that needs the module fails within the call timeout, with a clear reason.
        started = time.monotonic()
        stuck = stack.eport("card", "info", "--reader", reader, "--json", timeout=60)
        assert stuck.returncode in EXIT_CARD_UNAVAILABLE, describe(stuck)
        assert "SERVICE_NOT_RUNNING" in stuck.stdout or "NO_CARD" in stuck.stdout
        assert time.monotonic() - started < CALL_TIMEOUT_S + 15
    finally:
        # The host may already be dead (killed by eportd); SIGCONT to a stopped survivor.
        with contextlib.suppress(ProcessLookupError):
            os.kill(host, signal.SIGCONT)
    # eportd killed it and started another; the token is back and signs again (its session
    # went with the old host, so the PIN is needed again).
    assert stack.host_pid() != host
    reader = str(stack.rsa_reader()["name"])
    assert stack.sign(reader, "after", pin=True).returncode == 0
    assert "did not answer" in stack.daemon.log() or "said nothing" in stack.daemon.log()


def test_a_host_that_dies_is_started_again(stack: Stack) -> None:
    reader = str(stack.rsa_reader()["name"])
    verified = stack.eport("pin", "verify", "--reader", reader, "--pin-stdin",
                           stdin=pin_lines(USER_PIN))
    assert verified.returncode == 0, describe(verified)
    host = stack.host_pid()
    os.kill(host, signal.SIGKILL)  # a module that crashed its process
    wait_until(lambda: stack.host_pid() != host, timeout=20, what="a new host runs")
    reader = str(stack.rsa_reader()["name"])
    # The session ended with the old host: without a PIN the call is refused, not signed.
    refused = stack.sign(reader, "no-session", pin=False)
    assert refused.returncode != 0, describe(refused)
    assert stack.sign(reader, "again", pin=True).returncode == 0


def test_the_host_ends_with_eportd(tmp_path: Path, softhsm: SoftHsm) -> None:
    hsm = softhsm.copy_to(tmp_path / "hsm")
    with running_daemon(tmp_path / "d", "--pkcs11-module", SOFTHSM_MODULE,
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as daemon:
        host = Stack(daemon, hsm, tmp_path).host_pid()
    wait_until(lambda: not Path(f"/proc/{host}").exists()
               or "Z" in Path(f"/proc/{host}/stat").read_text().split()[2],
               timeout=15, what="the module host exits with eportd")


def test_errors_cross_the_host_boundary_as_they_were() -> None:
    wrong = decode_error(encode_error(InvalidPinError(None, "verify PIN", tries_left=2)))
    assert isinstance(wrong, InvalidPinError)
    assert (wrong.tries_left, wrong.operation, str(wrong)) == (2, "verify PIN",
                                                               "verify PIN failed with an error")
    gone = decode_error(encode_error(TokenUnavailable(Unavailable.CARD_REMOVED, "pulled")))
    assert isinstance(gone, TokenUnavailable) and gone.reason is Unavailable.CARD_REMOVED
    # A class from outside the project is never imported on the host's word.
    foreign = decode_error(EncodedError("subprocess", "CalledProcessError", (1, "x"), {}))
    assert type(foreign) is RuntimeError and "CalledProcessError" in str(foreign)
