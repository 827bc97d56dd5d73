"""The `eport` CLI through the real eportd socket on the PKCS#11 backend with SoftHSM2
(acceptance): readers with their backend named, card info, PIN status, a wrong PIN refused, a
login, signatures OpenSSL verifies (RSA and P-256), logout.

SoftHSM2 keeps no PIN counter (it never locks a token and sets none of the CKF_USER_PIN_*
flags), so the last-try guard on PKCS#11 is tested where the flags are real: OpenSC's module on
the simulated card (tests/pcsc/test_pkcs11_opensc.py). No pcscd is needed: eportd runs only the
backend it is given.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_stack import Daemon, running_daemon
from tests.support.eport_cli import assert_no_secret, error_json, ok_json, pin_lines, run_eport
from tests.support.softhsm import (
    P256_LABEL,
    RSA_LABEL,
    SOFTHSM_MODULE,
    USER_PIN,
    SoftHsm,
    build_softhsm,
)

WRONG_PIN = "11112222"


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return build_softhsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def daemon(tmp_path: Path, softhsm: SoftHsm) -> Iterator[Daemon]:
    hsm = softhsm.copy_to(tmp_path / "hsm")
    with running_daemon(tmp_path / "d", "--pkcs11-module", SOFTHSM_MODULE,
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as running:
        yield running


def eport(daemon: Daemon, *args: str, stdin: str | None = None) -> Any:
    return run_eport(*args, socket_path=daemon.socket, stdin=stdin)


def reader_of(daemon: Daemon, label: str) -> str:
    readers = ok_json(eport(daemon, "readers", "--json"), "readers")["readers"]
    named = [r for r in readers if r["name"].endswith(label)]
    assert len(named) == 1, readers
    assert named[0]["backend"] == "pkcs11", named[0]
    return str(named[0]["name"])


@pytest.mark.parametrize(("label", "key", "algorithm", "digest"), [
    (RSA_LABEL, "signing", "sha256-rsa", "-sha256"),
    (RSA_LABEL, "signing", "sha1-rsa", "-sha1"),
    (P256_LABEL, "p256-signing", "ecdsa-p256", "-sha256")])
def test_card_info_pin_and_signatures_openssl_verifies(
        daemon: Daemon, softhsm: SoftHsm, tmp_path: Path, label: str, key: str,
        algorithm: str, digest: str) -> None:
    reader = reader_of(daemon, label)
    info = ok_json(eport(daemon, "card", "info", "--reader", reader, "--json"), "card info")
    assert info["card"]["card_id"], info
    status = ok_json(eport(daemon, "pin", "status", "--reader", reader, "--json"),
                     "pin status")
    assert status, status

    wrong = eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin", "--json",
                  stdin=pin_lines(WRONG_PIN))
    refused = error_json(wrong, "PIN_INCORRECT", 7)
    # SoftHSM2 does not count: no made-up number, and the message says so.
    assert refused["tries_left"] is None
    assert "does not say how many tries" in refused["message"]["en"]
    assert "不报告剩余重试次数" in refused["message"]["zh"]
    logged_in = eport(daemon, "pin", "verify", "--reader", reader, "--pin-stdin", "--json",
                      stdin=pin_lines(USER_PIN))
    ok_json(logged_in, "pin verify")

    message = tmp_path / "declaration.xml"
    message.write_text(f"<CEBMessage>{algorithm} through SoftHSM2</CEBMessage>", "utf-8")
    signature = tmp_path / "declaration.sig"
    signed = eport(daemon, "sign", str(message), "--reader", reader, "--algorithm", algorithm,
                   "--format", "raw", "-o", str(signature), "--json")
    ok_json(signed, "sign")
    checked = subprocess.run(
        ["openssl", "dgst", digest, "-verify", str(softhsm.keys[key].public_pem),
         "-signature", str(signature), str(message)], capture_output=True, text=True,
        check=False)
    assert "Verified OK" in checked.stdout, checked.stdout + checked.stderr
    ok_json(eport(daemon, "pin", "logout", "--reader", reader, "--json"), "pin logout")
    assert_no_secret(wrong, logged_in, signed)


def test_the_backend_from_a_config_file(tmp_path: Path, softhsm: SoftHsm) -> None:
    """`eportd --config FILE` runs what the file names (docs/backends.md), here SoftHSM2."""
    hsm = softhsm.copy_to(tmp_path / "hsm")
    config = tmp_path / "eportd.toml"
    config.write_text(f'[[backend]]\nkind = "pkcs11"\nmodule = "{SOFTHSM_MODULE}"\n',
                      encoding="utf-8")
    with running_daemon(tmp_path / "d", "--config", str(config),
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as running:
        assert reader_of(running, RSA_LABEL).startswith("pkcs11:")
        assert reader_of(running, P256_LABEL).startswith("pkcs11:")
