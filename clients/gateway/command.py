"""`eport-gateway`: serve the E-port client's websocket API (the default), and the recipes.

Its errors go through the shared funnel (eport.common.funnel), in both languages unless
EPORT_LANG picks one; exit codes: GatewayExit, docs/exit-codes.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket as socket_module
import ssl
import sys

import click

from eport.clients.gateway.exit_codes import GatewayExit
from eport.clients.gateway.peer_uid import TCP4_TABLE
from eport.clients.gateway.recipes.commands import RECIPE_COMMANDS
from eport.clients.gateway.server import (
    DEFAULT_BLOCK_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    SINGLE_WINDOW_ORIGINS,
    CannotListen,
    GatewayConfig,
    run_gateway,
)
from eport.clients.gateway.tls_command import tls_group
from eport.clients.gateway.tls_setup import TlsNotInstalled, server_ssl_context
from eport.clients.kit.daemon_client import choose_socket
from eport.common.funnel import ConsoleFailure, run_console
from eport.common.text import Bilingual


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


def _tls_context() -> ssl.SSLContext | None:
    """The wss certificate, or None (said once, in both languages) when there is none: the
    gateway then serves ws for programs and plain-http pages, which need no certificate."""
    try:
        return server_ssl_context()
    except TlsNotInstalled as missing:
        if missing.code == "NOT_INSTALLED":
            zh = ("未安装 wss 证书, 只提供 ws。Single Window 的 https 页面需要 wss: 请运行 "
                  "eport-gateway tls install, 然后重启网关")
            en = ("no wss certificate is installed: serving ws only. Single Window https pages "
                  "need wss: run `eport-gateway tls install`, then restart the gateway")
        else:
            zh = f"{missing.message.zh}, 只提供 ws。{missing.remedy.zh}, 然后重启网关"
            en = f"{missing.message.en}: serving ws only. {missing.remedy.en}, then restart " \
                 "the gateway"
        click.echo(f"eport-gateway: {zh}\neport-gateway: {en}", err=True)
        return None


async def _serve(config: GatewayConfig, tls: ssl.SSLContext | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not os.access(TCP4_TABLE, os.R_OK):
        # The peer check needs it; without it the gateway refuses everyone (peer_uid.py).
        click.echo(f"eport-gateway: 无法读取 {TCP4_TABLE}, 无法确认连接方的用户, "
                   "所有连接都将被拒绝; 请确认 /proc 已挂载且可读\n"
                   f"eport-gateway: {TCP4_TABLE} cannot be read, so no peer's user can be "
                   "checked and every connection will be refused; make sure /proc is mounted "
                   "and readable", err=True)
    async with run_gateway(config, tls) as listening:
        urls = " and ".join(url for url in (listening.wss_url, listening.ws_url) if url)
        click.echo(f"eport-gateway listening on {urls} (eportd: {config.eportd_socket})",
                   err=True)
        await stop.wait()
    logging.getLogger("eport.gateway").info("stopped")


@click.group(invoke_without_command=True)
@click.pass_context
def main_group(context: click.Context) -> None:
    """Speak the E-port client's websocket API (wss://127.0.0.1:61231 and
    ws://127.0.0.1:61232) on top of eportd.

    Without a command: serve with the defaults (`eport-gateway serve`)."""
    if context.invoked_subcommand is None:
        context.invoke(serve_command)


@main_group.command("serve")
@click.option("--listen", "host", default="127.0.0.1", show_default=True,
              help="Address to bind. Only loopback unless --allow-non-loopback.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port for ws (0 picks a free one).")
@click.option("--tls-port", default=DEFAULT_TLS_PORT, show_default=True,
              type=click.IntRange(0, 65535),
              help="TCP port for wss, what Single Window https pages use (0 picks a free one).")
@click.option("--no-tls", is_flag=True, help="Serve ws only, even when a certificate is installed.")
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
@click.option("--max-connections", default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              type=click.IntRange(1), help="Connections open at once (both ports together).")
@click.option("--block-timeout", default=DEFAULT_BLOCK_TIMEOUT, show_default=True,
              type=click.FloatRange(0.1), metavar="SECONDS",
              help="Drop a block transfer that gets no block for this long.")
@click.option("--allow-stored-pin", is_flag=True,
              help="Let gateway requests use a PIN stored for unattended signing (any page or "
                   "program of yours could then sign without a PIN).")
@click.option("--allow-envelope-signing", is_flag=True,
              help="Let the generic signing methods sign a data centre request envelope.")
def serve_command(host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  tls_port: int = DEFAULT_TLS_PORT, no_tls: bool = False,
                  allow_non_loopback: bool = False, socket_path: str | None = None,
                  origins: tuple[str, ...] = (), refuse_missing_origin: bool = False,
                  reader: str | None = None,
                  max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                  max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                  max_connections: int = DEFAULT_MAX_CONNECTIONS,
                  block_timeout: float = DEFAULT_BLOCK_TIMEOUT,
                  allow_stored_pin: bool = False, allow_envelope_signing: bool = False) -> None:
    """Serve the E-port client's websocket API: wss (--tls-port) and ws (--port)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Every connection's open and close is noise next to the signing audit lines.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if not allow_non_loopback and not is_loopback(host):
        raise ConsoleFailure(
            "NOT_LOOPBACK",
            Bilingual(f"拒绝监听非本机地址 {host}: 其他计算机将能使用本机的卡签名",
                      f"refusing to listen on {host}, which is not a loopback address: other "
                      "machines could sign with this computer's card"),
            Bilingual("确需如此, 请加 --allow-non-loopback",
                      "add --allow-non-loopback if you mean it"), GatewayExit.USAGE)
    config = GatewayConfig(
        eportd_socket=choose_socket(socket_path), host=host, port=port,
        allowed_origins=tuple(origins) or SINGLE_WINDOW_ORIGINS,
        allow_missing_origin=not refuse_missing_origin, reader=reader,
        max_message_bytes=max_message_bytes, max_in_flight=max_in_flight, tls_port=tls_port,
        max_connections=max_connections, block_timeout=block_timeout,
        allow_stored_pin=allow_stored_pin, allow_envelope_signing=allow_envelope_signing)
    tls = None if no_tls else _tls_context()
    try:
        asyncio.run(_serve(config, tls))
    except CannotListen as failed:
        option = "--port" if failed.scheme == "ws" else "--tls-port"
        where = f"{failed.host}:{failed.port}"
        raise ConsoleFailure(
            "CANNOT_LISTEN",
            Bilingual(f"无法监听 {failed.scheme} {where} ({option}): {failed.reason}",
                      f"cannot listen for {failed.scheme} on {where} ({option}): "
                      f"{failed.reason}"),
            Bilingual(f"端口可能已被占用 (例如官方客户端控件), 请用 {option} 换一个端口",
                      "the port may be in use (for example by the official client); choose "
                      f"another with {option}"),
            GatewayExit.CANNOT_LISTEN) from None


for recipe_command in RECIPE_COMMANDS:
    main_group.add_command(recipe_command)
main_group.add_command(tls_group)


def _invoked_command(args: list[str]) -> str:
    """"tls install", "ceb-verify", "serve": the command ARGS name, for the JSON envelope of a
    failure that the command raised (the funnel knows it only for click's own errors)."""
    words = [word for word in args if not word.startswith("-")]
    first = main_group.commands.get(words[0]) if words else None
    if first is None:
        return ""
    if isinstance(first, click.Group) and len(words) > 1 and words[1] in first.commands:
        return f"{words[0]} {words[1]}"
    return words[0]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return run_console(
        "eport-gateway",
        lambda words: main_group.main(words, prog_name="eport-gateway", standalone_mode=False),
        args, exit_codes=GatewayExit, languages="both",
        command=lambda: _invoked_command(args))
