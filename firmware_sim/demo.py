"""`eport-sim demo`: a simulated E-port card used through the real pcscd, end to end.

It plays the part of any PC/SC program (later the daemon takes that part): it puts an SM2
declarant card into a vpcd reader, then selects the card, reads its E-port data and
certificate, checks the PIN tries, verifies the PIN, signs a declaration and has OpenSSL, an
independent implementation, verify the signature and the certificate chain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext, PcscError
from eport.common import sm2
from eport.common.piv import Algorithm
from eport.common.profile import CardForm, CardKind
from eport.firmware_sim.ca import CaError, init_ca, load_ca
from eport.firmware_sim.provision import ProvisionRequest, provision_card, save_new_card
from eport.firmware_sim.sm2_x509 import certificate_public_point

DEMO_PIN = b"88888888"
SM2_DISTID = "distid:1234567812345678"


def vpcd_reader_name(slot: int) -> str:
    return f"Virtual PCD 00 {slot:02d}"


def ensure_pcscd(reader: str, timeout: float = 10.0) -> None:
    """Make sure pcscd runs with the vpcd reader; start it when we are allowed to."""
    deadline = time.monotonic() + timeout
    started = False
    while True:
        try:
            with PcscContext() as context:
                if reader in context.list_readers():
                    return
                problem = f"pcscd runs but has no reader {reader!r}"
        except PcscError as exc:
            problem = str(exc)
            if exc.reason == "SERVICE_NOT_RUNNING" and not started:
                started = _start_pcscd()
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"读卡器服务不可用 / the PC/SC service is not usable: {problem}. Remedy: install "
                "pcscd and vsmartcard-vpcd (scripts/setup.sh) and start pcscd as root "
                "(`pcscd` or `systemctl start pcscd.socket`)."
            )
        time.sleep(0.1)


def _start_pcscd() -> bool:
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if os.geteuid() != 0 or not Path(pcscd).exists():
        return False
    click.echo("starting pcscd ...")
    subprocess.run([pcscd], check=False)  # daemonizes itself
    return True


@contextmanager
def card_in_slot(card_path: Path, slot: int) -> Iterator[None]:
    from eport.firmware_sim.image import load_card
    from eport.firmware_sim.runner import SimulatorRunner

    runner = SimulatorRunner(load_card)
    runner.add_slot(slot, card_path)
    runner.start()
    try:
        yield
    finally:
        runner.stop()


def _prepare_card(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    ca_dir = workdir / "ca"
    try:
        test_ca = load_ca(ca_dir)
    except CaError:
        test_ca = init_ca(ca_dir)
        click.echo(f"created a TEST CA in {ca_dir}")
    card_path = workdir / "declarant-sm2.card"
    if not card_path.exists():
        now = datetime.now(UTC).replace(microsecond=0)
        image = provision_card(test_ca, ProvisionRequest(
            kind=CardKind.DECLARANT, form=CardForm.IC, algorithm="sm2",
            not_before=now - timedelta(days=1), not_after=now + timedelta(days=730),
            holder_name="李四", enterprise_name="示例报关有限公司",
        ))
        save_new_card(image, card_path)
        click.echo(f"provisioned {card_path}")
    return card_path


def _openssl_verifies(certificate: bytes, ca_certificate: bytes, message: bytes,
                      signature: bytes) -> tuple[bool, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "cert.der").write_bytes(certificate)
        (d / "ca.der").write_bytes(ca_certificate)
        (d / "msg").write_bytes(message)
        (d / "sig").write_bytes(signature)
        for name in ("cert", "ca"):
            subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(d / f"{name}.der"),
                            "-out", str(d / f"{name}.pem")], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-in", str(d / "cert.pem"), "-pubkey", "-noout",
                        "-out", str(d / "pub.pem")], check=True, capture_output=True)
        signature_ok = subprocess.run(
            ["openssl", "dgst", "-sm3", "-verify", str(d / "pub.pem"), "-sigopt", SM2_DISTID,
             "-signature", str(d / "sig"), str(d / "msg")], capture_output=True
        ).returncode == 0
        chain_ok = subprocess.run(
            ["openssl", "verify", "-vfyopt", SM2_DISTID, "-CAfile", str(d / "ca.pem"),
             str(d / "cert.pem")], capture_output=True
        ).returncode == 0
    return signature_ok, chain_ok


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-cards"), show_default=True,
              help="Where the demo keeps its test CA and card.")
@click.option("--slot", type=int, default=0, show_default=True, help="vpcd slot to use.")
def demo_command(workdir: Path, slot: int) -> None:
    """Run an SM2 declarant card through pcscd and sign a declaration with it."""
    reader = vpcd_reader_name(slot)
    ensure_pcscd(reader)
    card_path = _prepare_card(workdir)
    with card_in_slot(card_path, slot), PcscContext() as context:
        waited = context.wait_for_presence(reader, present=True, timeout=5.0)
        click.echo(f"[1] card inserted in {reader!r}; pcscd saw it after {waited * 1000:.0f} ms")
        connection = context.connect(reader)
        try:
            click.echo(f"    ATR {connection.atr.hex(' ').upper()}")
            piv = PivSession(connection)
            info = piv.select()
            click.echo(f"[2] SELECT PIV: {info.label}, algorithms "
                       + ", ".join(f"{a:02X}" for a in info.algorithms))
            profile = piv.read_profile()
            click.echo(f"[3] {profile.kind.label_zh} ({profile.kind.value}) card {profile.card_id}"
                       f", holder {profile.holder_name}, {profile.enterprise_name}")
            click.echo(f"    customs code {profile.customs_code}, credit code "
                       f"{profile.credit_code}, certificate number {profile.cert_number}")
            certificate = piv.read_certificate()
            click.echo(f"    certificate valid {profile.not_before:%Y-%m-%d} to "
                       f"{profile.not_after:%Y-%m-%d}")
            status = piv.reference_status()
            click.echo(f"[4] PIN tries left: {status.tries_left} (asked without spending one)")
            piv.verify_pin(DEMO_PIN)
            click.echo("[5] PIN verified (test PIN 88888888)")
            message = b"<DecHead><SeqNo>Z202611220000000001</SeqNo></DecHead>"
            point = certificate_public_point(certificate)
            signature = piv.sign(Algorithm.SM2_SM3, sm2.message_digest(point, message))
            r, s = sm2.decode_der_signature(signature)
            click.echo("[6] signed a declaration with SM2/SM3 on the card: "
                       f"{sm2.encode_raw_signature(r, s).hex()[:32]}...")
            piv.logout()
        finally:
            connection.close()
    image_ca = load_ca(workdir / "ca").certificate_for("sm2")
    signature_ok, chain_ok = _openssl_verifies(certificate, image_ca, message, signature)
    click.echo(f"[7] OpenSSL: signature {'Verified OK' if signature_ok else 'FAILED'}, "
               f"certificate chain {'OK' if chain_ok else 'FAILED'}")
    if not (signature_ok and chain_ok):
        raise click.ClickException("OpenSSL could not verify what the card signed")
    click.echo("demo finished: the card was removed from the reader.")
