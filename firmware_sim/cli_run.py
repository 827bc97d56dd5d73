"""`eport-sim run` (cards into vpcd slots) and `eport-sim ctl` (remove, insert, faults)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from eport.common.stop_signals import StopSignals
from eport.firmware_sim.control import ControlServer, control_request, default_control_path
from eport.firmware_sim.image import CardImageError
from eport.firmware_sim.vpcd import VPCD_BASE_PORT, reader_name

_CONTROL_OPTION = click.option(
    "--control", "control_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Control socket (default: $XDG_RUNTIME_DIR/eport-sim/control.sock).")


@click.command("run")
@click.argument("cards", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--slot", type=click.IntRange(min=0), default=0, show_default=True,
              help="vpcd slot of the first card; further cards take the next slots.")
@click.option("--port", type=int, default=None,
              help=f"vpcd port of the first slot (default {VPCD_BASE_PORT} + slot).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where pcscd's vpcd listens.")
@_CONTROL_OPTION
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
def run_command(cards: tuple[Path, ...], slot: int, port: int | None, host: str,
                control_path: Path | None, verbose: int) -> None:
    """Insert CARDS into pcscd's vpcd reader slots and serve them until Ctrl-C."""
    from eport.firmware_sim.image import load_card
    from eport.firmware_sim.runner import SimulatorRunner

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base_port = None if port is None else port - slot
    runner = SimulatorRunner(load_card, host=host, base_port=base_port)
    try:
        for offset, card in enumerate(cards):
            runner.add_slot(slot + offset, card)
    except (CardImageError, OSError, ValueError) as exc:  # what card factories raise
        runner.stop()  # releases the cards already loaded
        raise click.ClickException(str(exc)) from None
    path = control_path or default_control_path()
    try:
        control = ControlServer(runner, path)
    except (RuntimeError, OSError) as exc:
        runner.stop()
        raise click.ClickException(f"control socket {path}: {exc}") from None
    with StopSignals.installed() as stop:
        runner.start()
        control.start()
        for status in runner.status():
            click.echo(f"slot {status.slot}: {status.image} -> {reader_name(status.slot)} "
                       f"(vpcd {host}:{status.port})")
        click.echo(f"control socket: {path}  (eport-sim ctl --help)", err=False)
        try:
            stop.wait()
        finally:
            control.stop()
            runner.stop()


def _send(control_path: Path | None, request: dict[str, Any]) -> dict[str, Any]:
    path = control_path or default_control_path()
    try:
        reply = control_request(path, request)
    except OSError as exc:
        raise click.ClickException(
            f"模拟器未运行 / no simulator answers on {path} ({exc.strerror or exc}). "
            "Remedy: start one with `eport-sim run CARD`, or pass --control."
        ) from None
    if not reply.get("ok"):
        raise click.ClickException(str(reply.get("error")))
    return reply


def _instruction(_ctx: click.Context, _param: click.Parameter, value: str | None
                 ) -> int | None:
    if value is None:
        return None
    text = value.lower().removeprefix("0x")
    try:
        ins = int(text, 16)
    except ValueError:
        ins = -1
    if not 0 <= ins <= 0xFF or not text:
        raise click.BadParameter(f"{value!r} is not an instruction byte in hex (00 to FF, "
                                 "e.g. 87)")
    return ins


@click.group("ctl")
@_CONTROL_OPTION
@click.pass_context
def ctl_group(ctx: click.Context, control_path: Path | None) -> None:
    """Control a running simulator: remove and insert cards, inject faults."""
    ctx.obj = control_path


@ctl_group.command("status")
@click.pass_obj
@click.option("--json", "as_json", is_flag=True)
def ctl_status(control_path: Path | None, as_json: bool) -> None:
    """Show each slot: card, inserted, connected, faults, APDU count."""
    reply = _send(control_path, {"command": "status"})
    if as_json:
        click.echo(json.dumps(reply["slots"], indent=2))
        return
    for s in reply["slots"]:
        state = ("connected" if s["connected"] else "waiting for pcscd") if s["inserted"] \
            else "removed"
        faults = []
        if s["delay_ms"]:
            only = "" if s.get("delay_ins") is None else f" for INS {s['delay_ins']:02X}"
            faults.append(f"delay {s['delay_ms']:g} ms{only}")
        if s["mute"]:
            faults.append("mute")
        if s["pending_pull"]:
            faults.append(f"pull {s['pending_pull']} next APDU")
        click.echo(f"slot {s['slot']}: {state}, {s['image']}, {s['apdus']} APDUs"
                   + (f", {', '.join(faults)}" if faults else ""))


@ctl_group.command("remove")
@click.pass_obj
@click.option("--slot", type=int, default=0, show_default=True)
def ctl_remove(control_path: Path | None, slot: int) -> None:
    """Take the card out of the reader."""
    _send(control_path, {"command": "remove", "slot": slot})


@ctl_group.command("insert")
@click.pass_obj
@click.option("--slot", type=int, default=0, show_default=True)
@click.argument("card", required=False, type=click.Path(dir_okay=False, path_type=Path))
def ctl_insert(control_path: Path | None, slot: int, card: Path | None) -> None:
    """Put the card back (or CARD, a different image) into the reader."""
    request: dict[str, Any] = {"command": "insert", "slot": slot}
    if card is not None:
        request["image"] = str(card.resolve())
    _send(control_path, request)


@ctl_group.command("delay")
@click.pass_obj
@click.option("--slot", type=int, default=0, show_default=True)
@click.option("--ms", type=float, required=True, help="Delay before each answer; 0 turns it off.")
@click.option("--ins", "ins", callback=_instruction, default=None, metavar="HEX",
              help="Slow only this instruction, in hex (87: GENERAL AUTHENTICATE, i.e. each "
                   "signature; the last APDU of a chain); default: every APDU.")
def ctl_delay(control_path: Path | None, slot: int, ms: float, ins: int | None) -> None:
    """Make the card slow (every APDU, or one instruction).

    \b
    Examples:
      eport-sim ctl delay --ms 200              # every answer 200 ms late
      eport-sim ctl delay --ms 250 --ins 87     # each signature takes 250 ms, like a USB key
      eport-sim ctl delay --ms 0                # back to full speed
    """
    request: dict[str, Any] = {"command": "delay", "slot": slot, "ms": ms}
    if ins is not None:
        request["ins"] = ins
    _send(control_path, request)


@ctl_group.command("mute")
@click.pass_obj
@click.option("--slot", type=int, default=0, show_default=True)
@click.option("--on/--off", default=True, show_default=True)
def ctl_mute(control_path: Path | None, slot: int, on: bool) -> None:
    """Make the card stop answering (until --off or removal)."""
    _send(control_path, {"command": "mute", "slot": slot, "on": on})


@ctl_group.command("pull")
@click.pass_obj
@click.option("--slot", type=int, default=0, show_default=True)
@click.option("--after-execute", is_flag=True,
              help="Let the card execute the APDU before it is pulled (state may change).")
def ctl_pull(control_path: Path | None, slot: int, after_execute: bool) -> None:
    """Pull the card out in the middle of the next APDU."""
    _send(control_path, {"command": "pull", "slot": slot, "after_execute": after_execute})
