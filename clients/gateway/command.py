"""`eport-gateway`: serve the E-port client's websocket API (the default), and the recipes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket as socket_module
import sys

import click

from eport.clients.cli.daemon_client import choose_socket
from eport.clients.gateway.recipes.commands import RECIPE_COMMANDS
from eport.clients.gateway.server import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    SINGLE_WINDOW_ORIGINS,
    GatewayConfig,
    run_gateway,
)

EXIT_USAGE = 2
EXIT_CANNOT_LISTEN = 4


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket_module.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def _fail(code: int, zh: str, en: str) -> None:
    click.echo(f"eport-gateway: {zh}\neport-gateway: {en}", err=True)
    sys.exit(code)


async def _serve(config: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with run_gateway(config) as (_, url):
        click.echo(f"eport-gateway listening on {url} (eportd: {config.eportd_socket})",
                   err=True)
        await stop.wait()
    logging.getLogger("eport.gateway").info("stopped")


@click.group(invoke_without_command=True)
@click.pass_context
def main_group(context: click.Context) -> None:
    """Speak the E-port client's websocket API (ws://127.0.0.1:61232) on top of eportd.

    Without a command: serve with the defaults (`eport-gateway serve`)."""
    if context.invoked_subcommand is None:
        context.invoke(serve_command)


@main_group.command("serve")
@click.option("--listen", "host", default="127.0.0.1", show_default=True,
              help="Address to bind. Only loopback unless --allow-non-loopback.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one).")
@click.option("--allow-non-loopback", is_flag=True,
              help="Allow binding a non-loopback address (other machines could then sign).")
@click.option("--socket", "socket_path", metavar="PATH",
              help="eportd's socket (default: $EPORTD_SOCKET, the per-user, the system one).")
@click.option("--allow-origin", "origins", multiple=True, metavar="ORIGIN",
              help="A web origin allowed to connect; repeatable; replaces the default list "
                   "(the Single Window origins).")
@click.option("--refuse-missing-origin", is_flag=True,
              help="Also refuse connections without an Origin header (non-browser programs).")
@click.option("--reader", metavar="NAME", help="Use the card in this reader only.")
@click.option("--max-message-bytes", default=DEFAULT_MAX_MESSAGE_BYTES, show_default=True,
              type=click.IntRange(1024), help="Largest request (one frame or assembled blocks).")
@click.option("--max-in-flight", default=DEFAULT_MAX_IN_FLIGHT, show_default=True,
              type=click.IntRange(1), help="Requests one connection may have in progress.")
def serve_command(host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  allow_non_loopback: bool = False, socket_path: str | None = None,
                  origins: tuple[str, ...] = (), refuse_missing_origin: bool = False,
                  reader: str | None = None,
                  max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                  max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
    """Serve the E-port client's websocket API."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Every connection's open and close is noise next to the signing audit lines.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if not allow_non_loopback and not is_loopback(host):
        _fail(EXIT_USAGE,
              f"拒绝监听非本机地址 {host}: 其他计算机将能使用本机的卡签名。确需如此, 请加 "
              "--allow-non-loopback",
              f"refusing to listen on {host}, which is not a loopback address: other machines "
              "could sign with this computer's card. Add --allow-non-loopback if you mean it")
    config = GatewayConfig(
        eportd_socket=choose_socket(socket_path), host=host, port=port,
        allowed_origins=tuple(origins) or SINGLE_WINDOW_ORIGINS,
        allow_missing_origin=not refuse_missing_origin, reader=reader,
        max_message_bytes=max_message_bytes, max_in_flight=max_in_flight)
    try:
        asyncio.run(_serve(config))
    except OSError as error:
        _fail(EXIT_CANNOT_LISTEN,
              f"无法监听 {host}:{port}: {error.strerror or error}。端口可能已被占用 (例如官方客户端"
              "控件), 请用 --port 换一个端口",
              f"cannot listen on {host}:{port}: {error.strerror or error}. The port may be in use "
              "(for example by the official client); choose another with --port")


for recipe_command in RECIPE_COMMANDS:
    main_group.add_command(recipe_command)


def main() -> None:
    main_group(prog_name="eport-gateway")
