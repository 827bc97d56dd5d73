"""The recipes on the command line: `eport-gateway ceb-sign | ceb-verify | pay179-sign`.

Exit codes (GatewayExit, docs/exit-codes.md): 0 done (ceb-verify: valid), 1 ceb-verify: not
valid, 2 bad input or usage, 3 the gateway or the card failed. Every failure, the recipes'
own (RecipeError, GatewayReplyError: exit code and bilingual message and remedy) included,
reaches eport-gateway's funnel (eport.common.funnel): both languages with a remedy on standard
error, or one JSON document with --json, never a traceback; the PIN is never shown.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from eport.clients.gateway.exit_codes import GatewayExit
from eport.clients.gateway.recipes.ceb_xml import check_ceb_input, sign_ceb_xml, verify_ceb_xml
from eport.clients.gateway.recipes.certificates import read_certificate
from eport.clients.gateway.recipes.errors import RecipeError
from eport.clients.gateway.recipes.payment179 import parse_request, sign_payment179
from eport.clients.gateway.recipes.signer import DEFAULT_URL, GatewaySigner
from eport.clients.gateway.recipes.verify_views import human_result, json_result
from eport.common.text import Bilingual

P = ParamSpec("P")
R = TypeVar("R")


def _read_input(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise RecipeError(
            Bilingual(f"无法读取 {path}: {exc.strerror or exc}",
                      f"cannot read {path}: {exc.strerror or exc}"),
            Bilingual("请检查文件路径和权限", "check the path and its permissions")) from None


def _write_output(output: str | None, data: bytes) -> None:
    if output is None or output == "-":
        stream = sys.stdout.buffer
        stream.write(data)
        stream.flush()
        return
    target = Path(output)
    try:
        # Written beside the target and renamed over it, so a failure never leaves half a
        # document (and signing a file in place is safe).
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".eport-",
                                         suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise RecipeError(
            Bilingual(f"无法写入 {output}: {exc.strerror or exc}",
                      f"cannot write {output}: {exc.strerror or exc}"),
            Bilingual("请检查输出路径和权限",
                      "check the output path and its permissions")) from None


def _read_pin(pin_stdin: bool) -> str | None:
    """The PIN: one line of stdin with --pin-stdin, else asked on a terminal; None (use the
    gateway's open PIN session) when not given."""
    if pin_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise RecipeError(
                Bilingual("--pin-stdin: 标准输入中没有口令", "--pin-stdin: no PIN on stdin"),
                Bilingual("请在标准输入的第一行提供口令",
                          "put the PIN on the first line of stdin"))
        return line
    if not sys.stdin.isatty():
        return None
    try:
        pin = getpass.getpass("口令 / PIN (直接回车: 使用已验证的口令会话 / Enter: use the open "
                              "PIN session): ")
    except (EOFError, KeyboardInterrupt):
        click.echo("", err=True)
        raise RecipeError(Bilingual("未输入口令", "no PIN entered"), Bilingual("", "")) from None
    return pin or None


def _check_stdin_use(file: str, pin_stdin: bool) -> None:
    if file == "-" and pin_stdin:
        raise click.UsageError("FILE '-' and --pin-stdin both need standard input / "
                               "FILE 为 '-' 时不能同时使用 --pin-stdin")


@contextlib.contextmanager
def _gateway(url: str, pin_stdin: bool, origin: str | None, timeout: float
             ) -> Iterator[GatewaySigner]:
    with GatewaySigner(url, pin=_read_pin(pin_stdin), origin=origin, timeout=timeout) as signer:
        yield signer


def _gateway_options(command: Callable[P, R]) -> Callable[P, R]:
    for option in reversed((
        click.option("--url", default=DEFAULT_URL, show_default=True,
                     help="The E-port client's websocket address / 客户端控件地址."),
        click.option("--pin-stdin", is_flag=True,
                     help="Read the PIN from the first line of stdin / 从标准输入读取口令. "
                          "Without it the PIN is asked on a terminal; with no PIN the "
                          "gateway's open PIN session is used."),
        click.option("--origin", metavar="ORIGIN",
                     help="Origin header to send (as a web page would) / 发送的 Origin."),
        click.option("--timeout", type=click.FloatRange(min=1), default=30, show_default=True,
                     help="Seconds to wait for each answer / 每个应答的等待秒数."),
    )):
        command = option(command)
    return command


_FILE = click.Path(dir_okay=False, allow_dash=True)


@click.command("ceb-sign")
@click.argument("file", type=_FILE)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the signed message (default: stdout) / 输出文件.")
@_gateway_options
@click.option("--any-root", is_flag=True,
              help="Also sign XML whose root is not in the CEB namespace / 允许非 CEB 根元素.")
@click.option("--resign", is_flag=True,
              help="Replace an existing ds:Signature / 替换已有签名.")
def ceb_sign_command(file: str, output: str | None, url: str, pin_stdin: bool,
                     origin: str | None, timeout: float, any_root: bool, resign: bool) -> None:
    """Sign a CEB XML message on the card (enveloped XML-DSig) / 为 CEB 报文加签.

    Exit codes: 0 signed, 2 bad input, 3 gateway or card error."""
    _check_stdin_use(file, pin_stdin)
    data = _read_input(file)
    # Input problems are reported before the PIN is asked for.
    check_ceb_input(data, any_root=any_root, resign=resign)
    with _gateway(url, pin_stdin, origin, timeout) as signer:
        signed = sign_ceb_xml(data, signer, any_root=any_root, resign=resign)
        number = signer.certificate_number()
    _write_output(output, signed)
    where = output if output and output != "-" else "stdout"
    click.echo(f"已签名, 证书号 {number}, 输出到 {where}\n"
               f"signed with certificate {number}, written to {where}", err=True)


@click.command("ceb-verify")
@click.argument("file", type=_FILE)
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False),
              help="Check with this certificate (PEM or DER) instead of the embedded one / "
                   "用此证书验证.")
@click.option("--any-root", is_flag=True,
              help="Also accept XML whose root is not in the CEB namespace / 允许非 CEB 根元素.")
@click.option("--json", "json_output", is_flag=True,
              help="One JSON document on stdout instead of text / 以 JSON 输出.")
def ceb_verify_command(file: str, cert_path: str | None, any_root: bool,
                       json_output: bool) -> None:
    """Verify the signature of a signed CEB XML message / 验证 CEB 报文签名.

    Checks the digest and the signature value, not whether the certificate is trusted.
    Exit codes: 0 valid, 1 not valid, 2 bad input."""
    # A failure (bad input) reaches the console funnel: text, or JSON with --json.
    data = _read_input(file)
    certificate = read_certificate(_read_input(cert_path)) if cert_path else None
    result = verify_ceb_xml(data, certificate, any_root=any_root)
    if json_output:
        click.echo(json_result(result))
    else:
        click.echo(human_result(result))
    if not result.valid:
        click.get_current_context().exit(GatewayExit.SIGNATURE_INVALID)


@click.command("pay179-sign")
@click.argument("file", type=_FILE)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the signed JSON (default: stdout) / 输出文件.")
@_gateway_options
def pay179_sign_command(file: str, output: str | None, url: str, pin_stdin: bool,
                        origin: str | None, timeout: float) -> None:
    """Sign announcement-179 payment data (adds certNo and signValue) / 179 号公告支付数据加签.

    Exit codes: 0 signed, 2 bad input, 3 gateway or card error."""
    _check_stdin_use(file, pin_stdin)
    data = _read_input(file)
    parse_request(data)  # input problems before the PIN is asked for
    with _gateway(url, pin_stdin, origin, timeout) as signer:
        signed = sign_payment179(data, signer)
        number = signer.certificate_number()
    text = signed + ("\n" if output in (None, "-") and sys.stdout.isatty() else "")
    _write_output(output, text.encode("utf-8"))
    where = output if output and output != "-" else "stdout"
    click.echo(f"已签名, 证书号 {number}, 输出到 {where}\n"
               f"signed with certificate {number}, written to {where}", err=True)


RECIPE_COMMANDS: list[click.Command] = [ceb_sign_command, ceb_verify_command,
                                        pay179_sign_command]
