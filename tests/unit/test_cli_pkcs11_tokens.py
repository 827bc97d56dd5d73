"""The `eport` CLI through eportd's PKCS#11 backend on SoftHSM2 while tokens come and go: a
token pulled (its directory moved away: SoftHSM2 then reports the slot without a token), put
back, swapped for another token, and the envelope key decrypting what OpenSSL encrypted.

A pulled token ends its PIN session, so a token put back needs the PIN again; another token in
its place is another card (its own card id and keys). No pcscd is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_stack import Daemon, running_daemon
from tests.support.eport_cli import (
    Result,
    assert_no_secret,
    describe,
    error_json,
    ok_json,
    pin_lines,
    run_eport,
)
from tests.support.softhsm import (
    RSA_LABEL,
    SOFTHSM_MODULE,
    USER_PIN,
    SoftHsm,
    build_softhsm,
    run,
)
from tests.support.waiting import wait_until

NOTICE_SECONDS = 20  # the backend polls the slots; a change shows within a few polls


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return build_softhsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="module")
def other_softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """Tokens with the same labels but keys, certificates and serials of their own."""
    return build_softhsm(tmp_path_factory.mktemp("other-softhsm"))


@dataclass
class Stack:
    daemon: Daemon
    hsm: SoftHsm

    def eport(self, *args: str | Path, stdin: str | None = None) -> Result:
        return run_eport(*map(str, args), socket_path=self.daemon.socket, stdin=stdin)

    def readers(self) -> list[dict[str, Any]]:
        listed = self.eport("readers", "--json")
        assert listed.returncode == 0, describe(listed)
        readers: list[dict[str, Any]] = json.loads(listed.stdout)["result"]["readers"]
        return readers

    def rsa_reader(self, *, card_id: str | None = None, other_than: str | None = None
                   ) -> dict[str, Any]:
        """The RSA token's reader with a card in it (that card id, or another than one)."""
        def matching() -> dict[str, Any] | None:
            for reader in self.readers():
                seen = reader.get("card_id")
                if reader["name"].endswith(RSA_LABEL) and seen and (
                        card_id is None or seen == card_id) and seen != other_than:
                    return reader
            return None

        found: dict[str, Any] = wait_until(
            matching, timeout=NOTICE_SECONDS,
            what=f"eportd lists the RSA token (card {card_id or 'any'}, not {other_than})")
        return found

    def rsa_token_dir(self) -> Path:
        for directory in self.hsm.token_dirs():
            if (directory / "token.object").exists() and RSA_LABEL.encode() in (
                    directory / "token.object").read_bytes():
                return directory
        raise AssertionError(f"no RSA token directory in {self.hsm.tokendir}")


@pytest.fixture
def stack(tmp_path: Path, softhsm: SoftHsm) -> Iterator[Stack]:
    hsm = softhsm.copy_to(tmp_path / "hsm")
    with running_daemon(tmp_path / "d", "--pkcs11-module", SOFTHSM_MODULE,
                        env={"SOFTHSM2_CONF": str(hsm.config)}) as daemon:
        yield Stack(daemon, hsm)


def signs_and_openssl_verifies(stack: Stack, reader: str, public_pem: Path, tmp_path: Path,
                               name: str, *, pin: bool) -> Result:
    message = tmp_path / f"{name}.xml"
    message.write_text(f"<CEBMessage>{name}</CEBMessage>", "utf-8")
    signature = tmp_path / f"{name}.sig"
    extra: tuple[str, ...] = ("--pin-stdin",) if pin else ()
    signed = stack.eport("sign", message, "--reader", reader, "--algorithm", "sha256-rsa",
                         "--format", "raw", "-o", signature, *extra,
                         stdin=pin_lines(USER_PIN) if pin else None)
    assert signed.returncode == 0, describe(signed)
    checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public_pem),
                              "-signature", str(signature), str(message)],
                             capture_output=True, text=True, check=False)
    assert "Verified OK" in checked.stdout, checked.stdout + checked.stderr
    return signed


def wait_for_error(stack: Stack, reader: str, exit_code: int) -> Result:
    """`eport card info` on `reader` once eportd has noticed the token gone."""
    def failed() -> Result | None:
        result = stack.eport("card", "info", "--reader", reader, "--json")
        return result if result.returncode != 0 else None

    result: Result = wait_until(failed, timeout=NOTICE_SECONDS,
                                what=f"eportd reports the token in {reader} gone")
    assert result.returncode == exit_code, describe(result)
    return result


def test_token_pulled_put_back_and_swapped(stack: Stack, softhsm: SoftHsm,
                                           other_softhsm: SoftHsm, tmp_path: Path) -> None:
    first = stack.rsa_reader()
    reader, card_id = str(first["name"]), str(first["card_id"])
    verified = stack.eport("pin", "verify", "--reader", reader, "--pin-stdin",
                           stdin=pin_lines(USER_PIN))
    assert verified.returncode == 0, describe(verified)
    signs_and_openssl_verifies(stack, reader, softhsm.keys["signing"].public_pem, tmp_path,
                               "before", pin=False)

    # Pulled: every call says so (exit 5, no card), in both languages, with a remedy.
    token_dir = stack.rsa_token_dir()
    parked = tmp_path / "parked"
    shutil.move(token_dir, parked)
    gone = json.loads(wait_for_error(stack, reader, 5).stdout)["error"]
    assert gone["code"] in ("NO_CARD", "CARD_REMOVED", "NO_READER"), gone
    assert gone["message"]["zh"] and gone["message"]["en"] and gone["remedy"]["en"], gone
    refused = stack.eport("sign", tmp_path / "before.xml", "--reader", reader, "--json")
    assert refused.returncode == 5, describe(refused)

    # Put back: the same card, but its session ended with the pull: the PIN is asked again.
    shutil.move(parked, token_dir)
    back = stack.rsa_reader(card_id=card_id)
    no_session = stack.eport("sign", tmp_path / "before.xml", "--reader", back["name"],
                             "--json")
    error_json(no_session, "USAGE", 2)  # no session, no terminal and no --pin-stdin
    signs_and_openssl_verifies(stack, str(back["name"]), softhsm.keys["signing"].public_pem,
                               tmp_path, "put-back", pin=True)

    # Swapped for another token: another card id, and its signatures are its own key's.
    shutil.rmtree(stack.rsa_token_dir())
    stranger = next(d for d in other_softhsm.token_dirs()
                    if RSA_LABEL.encode() in (d / "token.object").read_bytes())
    shutil.copytree(stranger, stack.hsm.tokendir / stranger.name)
    swapped = stack.rsa_reader(other_than=card_id)
    info = ok_json(stack.eport("card", "info", "--reader", swapped["name"], "--json"),
                   "card info")
    assert info["card"]["card_id"] == swapped["card_id"], info
    signed = signs_and_openssl_verifies(stack, str(swapped["name"]),
                                        other_softhsm.keys["signing"].public_pem, tmp_path,
                                        "swapped", pin=True)
    assert_no_secret(verified, refused, no_session, signed)


def test_decrypt_what_openssl_encrypted_to_the_envelope_certificate(
        stack: Stack, softhsm: SoftHsm, tmp_path: Path) -> None:
    reader = str(stack.rsa_reader()["name"])
    exported = ok_json(stack.eport("cert", "export", "--envelope", "--reader", reader,
                                   "-o", tmp_path / "envelope.pem", "--json"), "cert export")
    assert exported["envelope"] is True
    plain = tmp_path / "document-key"
    plain.write_bytes(b"the document key 0123456789abcdef")
    run("openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", str(tmp_path / "envelope.pem"),
        "-pkeyopt", "rsa_padding_mode:pkcs1", "-in", str(plain), "-out",
        str(tmp_path / "ciphertext"))
    decrypted = stack.eport("decrypt", tmp_path / "ciphertext", "--reader", reader,
                            "--pin-stdin", "-o", tmp_path / "decrypted",
                            stdin=pin_lines(USER_PIN))
    assert decrypted.returncode == 0, describe(decrypted)
    assert (tmp_path / "decrypted").read_bytes() == plain.read_bytes()
    assert_no_secret(decrypted)
