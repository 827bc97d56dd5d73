"""`eport-sim`: make a test CA, provision simulated E-port cards, run them for pcscd.

Its errors go through the shared funnel (eport.common.funnel); exit codes: SimExit, listed in
docs/exit-codes.md.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path

import click
from cryptography import x509

from eport.common.funnel import run_console
from eport.common.profile import CardForm, CardKind
from eport.firmware_sim.ca import CaError, default_ca_dir, init_ca, load_ca
from eport.firmware_sim.image import CardImage, CardImageError, read_image
from eport.firmware_sim.provision import (
    DEFAULT_PIN,
    DEFAULT_PUK,
    ProvisionError,
    ProvisionRequest,
    provision_card,
    save_new_card,
)
from eport.firmware_sim.timespec import parse_moment

_CA_OPTION = click.option(
    "--ca",
    "ca_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Test CA directory (default: $XDG_DATA_HOME/eport-sim/ca).",
)


def _moment(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
@click.version_option(package_name="eport-middleware")
def cli() -> None:
    """A virtual E-port card (PIV card edge, E-port profile) that real PC/SC software uses."""


@cli.group()
def ca() -> None:
    """The test certificate authority that signs simulated cards."""


@ca.command("init")
@_CA_OPTION
@click.option("--force", is_flag=True, help="Replace an existing CA.")
def ca_init(ca_dir: Path | None, force: bool) -> None:
    """Create a TEST certificate authority (RSA-2048 and SM2 keys)."""
    directory = ca_dir or default_ca_dir()
    try:
        test_ca = init_ca(directory, force=force)
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"test CA created in {test_ca.directory}")
    click.echo(f"trust anchors (RSA and SM2): {test_ca.trust_bundle}")


@ca.command("show")
@_CA_OPTION
def ca_show(ca_dir: Path | None) -> None:
    """Show the test CA's certificates."""
    try:
        test_ca = load_ca(ca_dir or default_ca_dir())
    except CaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"directory: {test_ca.directory}")
    click.echo(f"RSA CA: {test_ca.rsa_certificate.subject.rfc4514_string()}")
    click.echo(f"trust anchors: {test_ca.trust_bundle}")


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@_CA_OPTION
@click.option("--kind", type=click.Choice([k.value for k in CardKind]), default="operator",
              show_default=True, help="法人卡 legal-person, 操作员卡 operator, 报关员卡 declarant.")
@click.option("--form", type=click.Choice([f.value for f in CardForm]), default="ic",
              show_default=True, help="IC card or IKEY (USB key): a different ATR and label.")
@click.option("--algorithm", type=click.Choice(["sm2", "rsa2048", "rsa1024", "p256"]),
              default="sm2", show_default=True)
@click.option("--holder", default="张三", show_default=True, help="Holder name.")
@click.option("--enterprise", default="测试进出口贸易有限公司", show_default=True)
@click.option("--customs-code", default=None, help="10-digit customs code (random if omitted).")
@click.option("--credit-code", default=None,
              help="18-character unified social credit code (random valid one if omitted).")
@click.option("--card-id", default=None, help="Card id, up to 16 letters or digits.")
@click.option("--pin", default=DEFAULT_PIN, show_default=True,
              help="Test PIN (simulated cards only).")
@click.option("--puk", default=DEFAULT_PUK, show_default=True,
              help="Test PUK (stands for the card centre's unlock code).")
@click.option("--not-before", callback=_moment, default="now", show_default=True,
              help="Validity start: now, -400d, +10d or a date.")
@click.option("--days", type=int, default=None, help="Validity length in days (default 730).")
@click.option("--not-after", callback=_moment, default=None,
              help="Validity end (instead of --days).")
@click.option("--pin-tries", type=int, default=3, show_default=True)
@click.option("--puk-tries", type=int, default=3, show_default=True)
@click.option("--pin-tries-left", type=int, default=None,
              help="Start with fewer PIN tries left (for testing the last-try guard).")
@click.option("--no-envelope-key", is_flag=True,
              help="No envelope (encryption) key in slot 9D, like cards made before it "
                   "existed. RSA and SM2 cards get one otherwise; P-256 cards never do.")
@click.option("--profile", "certificate_profile", type=click.Choice(["sim", "real"]),
              default="sim", show_default=True,
              help="real: certificates in the real E-port profile (GBK extensions) and no "
                   "E-port data object, like a real card.")
@click.option("--kdf-iterations", type=int, default=None, hidden=True)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
def provision(output: Path, ca_dir: Path | None, kind: str, form: str, algorithm: str,
              holder: str, enterprise: str, customs_code: str | None, credit_code: str | None,
              card_id: str | None, pin: str, puk: str, not_before: datetime, days: int | None,
              not_after: datetime | None, pin_tries: int, puk_tries: int,
              pin_tries_left: int | None, no_envelope_key: bool, certificate_profile: str,
              kdf_iterations: int | None, force: bool) -> None:
    """Issue a simulated card into the image file OUTPUT.

    \b
    Examples:
      eport-sim provision op.card                        # SM2 operator IC card
      eport-sim provision lp.card --kind legal-person --form ikey --algorithm rsa2048
      eport-sim provision old.card --not-before -400d --days 365      # expired
      eport-sim provision soon.card --not-before -700d --days 710     # expires in 10 days
      eport-sim provision later.card --not-before +5d                 # not yet valid
    """
    if days is not None and not_after is not None:
        raise click.UsageError("give --days or --not-after, not both")
    end = not_after or not_before + timedelta(days=730 if days is None else days)
    request = ProvisionRequest(
        kind=CardKind(kind), form=CardForm(form), algorithm=algorithm,
        not_before=not_before, not_after=end, holder_name=holder, enterprise_name=enterprise,
        customs_code=customs_code, credit_code=credit_code, card_id=card_id, pin=pin, puk=puk,
        pin_tries=pin_tries, puk_tries=puk_tries, pin_tries_left=pin_tries_left,
        envelope_key=not no_envelope_key, certificate_profile=certificate_profile,
        **({"kdf_iterations": kdf_iterations} if kdf_iterations else {}),
    )
    try:
        test_ca = load_ca(ca_dir or default_ca_dir())
        image = provision_card(test_ca, request)
        save_new_card(image, output, force=force)
    except (CaError, ProvisionError, CardImageError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_card(image, output)


def card_summary(image: CardImage) -> dict[str, object]:
    """What `show` prints: the card's public data and counters, never a secret."""
    profile = image.profile
    now = datetime.now(UTC)
    if now < profile.not_before:
        validity = "not yet valid"
    elif now > profile.not_after:
        validity = "expired"
    elif profile.not_after - now <= timedelta(days=30):
        validity = f"expiring in {(profile.not_after - now).days} days"
    else:
        validity = "valid"
    return {
        **profile.to_json_dict(),
        "kind_zh": profile.kind.label_zh,
        "form_label": profile.form.label,
        "validity": validity,
        "pin_tries_left": image.pin.tries_left,
        "pin_max_tries": image.pin.max_tries,
        "puk_tries_left": image.puk.tries_left,
        "puk_max_tries": image.puk.max_tries,
        "envelope_cert_number": _envelope_cert_number(image),
    }


def _envelope_cert_number(image: CardImage) -> str | None:
    if image.envelope_certificate is None:
        return None
    return format(x509.load_der_x509_certificate(image.envelope_certificate).serial_number, "x")


def _print_card(image: CardImage, path: Path) -> None:
    summary = card_summary(image)
    click.echo(f"card image: {path}")
    click.echo(f"  {summary['kind_zh']} {summary['kind']} / {summary['form_label']} / "
               f"{summary['algorithm']}")
    for key in ("card_id", "cert_number", "holder_name", "enterprise_name", "customs_code",
                "credit_code", "not_before", "not_after", "validity"):
        click.echo(f"  {key:16} {summary[key]}")
    click.echo(f"  {'PIN tries left':16} {summary['pin_tries_left']}/{summary['pin_max_tries']}")
    click.echo(f"  {'PUK tries left':16} {summary['puk_tries_left']}/{summary['puk_max_tries']}")
    envelope = summary["envelope_cert_number"]
    click.echo(f"  {'envelope key':16} "
               + (f"slot 9D, certificate {envelope}" if envelope else "none"))


@cli.command()
@click.argument("card", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(card: Path, as_json: bool) -> None:
    """Show a card image's data and PIN/PUK counters (no secrets)."""
    try:
        image = read_image(card)
    except CardImageError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(card_summary(image), ensure_ascii=False, indent=2))
    else:
        _print_card(image, card)


def _register_optional_commands() -> None:
    from eport.firmware_sim.cli_run import ctl_group, run_command

    cli.add_command(run_command)
    cli.add_command(ctl_group)
    from eport.firmware_sim.demo import demo_command

    cli.add_command(demo_command)


_register_optional_commands()


class SimExit(IntEnum):
    OK = 0
    UNEXPECTED = 1
    FAILED = 1       # the command could not do it (no CA, CA exists, bad image): the text says
    USAGE = 2
    INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    return run_console(
        "eport-sim", lambda args: cli.main(args, prog_name="eport-sim", standalone_mode=False),
        argv, exit_codes=SimExit)


if __name__ == "__main__":
    sys.exit(main())
