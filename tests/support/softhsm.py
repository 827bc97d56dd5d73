"""SoftHSM2 tokens for the PKCS#11 backend's tests: a private configuration and token
directory, tokens initialised with softhsm2-util, keys and certificates made by OpenSSL and
written onto the tokens with OpenSC's pkcs11-tool (independent tools, not our code)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "88888888"
SO_PIN = "12345678"
RSA_LABEL = "eport rsa"
P256_LABEL = "eport p256"


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, timeout=120, env=env)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def require_softhsm() -> None:
    """Fail (never skip) without the tools: the tier is worthless without its real module."""
    missing = [tool for tool in ("softhsm2-util", "pkcs11-tool", "openssl")
               if shutil.which(tool) is None]
    if missing or not Path(SOFTHSM_MODULE).exists():
        pytest.fail(f"the PKCS#11 tests need softhsm2 and opensc (apt-get install softhsm2 "
                    f"opensc openssl); missing: {missing or [SOFTHSM_MODULE]}")


@dataclass(frozen=True)
class KeyFiles:
    certificate_der: Path
    public_pem: Path


@dataclass
class SoftHsm:
    """A token directory with two tokens: RSA (signing id 01 + envelope id 02) and P-256 (id 01)."""

    root: Path
    keys: dict[str, KeyFiles]

    @property
    def config(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def tokendir(self) -> Path:
        return self.root / "tokens"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.config)}

    def tool(self, label: str, *args: str) -> str:
        return run("pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, *args,
                   env=self.env())

    def token_dirs(self) -> list[Path]:
        return sorted(p for p in self.tokendir.iterdir() if p.is_dir())

    def copy_to(self, root: Path) -> SoftHsm:
        """A copy with its own token directory (tests that change tokens take one each)."""
        shutil.copytree(self.tokendir, root / "tokens")
        write_config(root)
        return SoftHsm(root, self.keys)


def write_config(root: Path) -> None:
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    (root / "softhsm2.conf").write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = true\n")


def _certificate(root: Path, name: str, key_args: list[str], usage: str) -> tuple[Path, KeyFiles]:
    key_pem, cert_der = root / f"{name}.pem", root / f"{name}.crt"
    run("openssl", "req", "-x509", *key_args, "-nodes", "-keyout", str(key_pem),
        "-subj", f"/CN=E-port PKCS#11 test {name}/O=eport tests", "-days", "30",
        "-addext", f"keyUsage=critical,{usage}", "-outform", "DER", "-out", str(cert_der))
    key_der = root / f"{name}.key.der"
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(key_pem), "-outform", "DER",
        "-out", str(key_der))
    public = root / f"{name}.pub.pem"
    run("openssl", "x509", "-inform", "DER", "-in", str(cert_der), "-pubkey", "-noout",
        "-out", str(public))
    return key_der, KeyFiles(cert_der, public)


def build_softhsm(root: Path) -> SoftHsm:
    require_softhsm()
    write_config(root)
    hsm = SoftHsm(root, {})
    for label in (RSA_LABEL, P256_LABEL):
        run("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN,
            "--pin", USER_PIN, env=hsm.env())
    rsa = ["-newkey", "rsa:2048"]
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    for name, label, key_id, key_args, usage, tool_usage in (
            ("signing", RSA_LABEL, "01", rsa, "digitalSignature,nonRepudiation", "--usage-sign"),
            ("encryption", RSA_LABEL, "02", rsa, "keyEncipherment,dataEncipherment",
             "--usage-decrypt"),
            ("p256-signing", P256_LABEL, "01", ec, "digitalSignature", "--usage-sign")):
        key_der, files = _certificate(root, name, key_args, usage)
        hsm.keys[name] = files
        common = ("--login", "--pin", USER_PIN, "--id", key_id, "--label", name)
        hsm.tool(label, *common, "--write-object", str(key_der), "--type", "privkey", tool_usage)
        hsm.tool(label, *common, "--write-object", str(files.certificate_der), "--type", "cert")
        key_der.unlink()
    return hsm
