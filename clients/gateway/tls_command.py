"""`eport-gateway tls install | status | uninstall`: the certificate that lets Single Window
pages (https) reach the gateway at wss://wss.singlewindow.cn:61231.

Exit codes (GatewayExit, docs/gateway.md): 0 done, 5 needs root, 6 certutil or
update-ca-certificates missing, 7 a step failed, 8 (status) not ready, 9 installed but the name
does not point to this computer yet.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from eport.clients.gateway.exit_codes import GatewayExit
from eport.clients.gateway.tls_certificates import GATEWAY_HOST_NAME
from eport.clients.gateway.tls_setup import (
    Step,
    TlsStatus,
    default_paths,
    install,
    status,
    uninstall,
)
from eport.clients.gateway.tls_trust import HOSTS_LINE
from eport.clients.kit.output import Output
from eport.common.text import Bilingual, detect_language

_PARTS = {
    "ca": Bilingual("本地 CA", "local CA"),
    "server": Bilingual("服务器证书", "server certificate"),
    "nss": Bilingual("浏览器证书库 (NSS)", "browser certificate database (NSS)"),
    "system": Bilingual("系统证书库", "system store"),
    "hosts": Bilingual("hosts 文件", "hosts file"),
    "files": Bilingual("证书文件", "certificate files"),
}
_ACTIONS = {
    "kept": Bilingual("未变", "unchanged"),
    "created": Bilingual("已创建", "created"),
    "renewed": Bilingual("已更新", "renewed"),
    "added": Bilingual("已加入", "added"),
    "replaced": Bilingual("已替换", "replaced"),
    "removed": Bilingual("已删除", "removed"),
    "absent": Bilingual("无需处理", "nothing to do"),
    "refused": Bilingual("需要 root, 保留未删 (请用 sudo 再运行)",
                         "needs root, left in place (run again with sudo)"),
    "stale": Bilingual("仍是旧的 CA", "still holds the previous CA"),
}
_HOSTS_REMEDY = Bilingual(
    f"请在 /etc/hosts 中加入这一行 (或运行 sudo eport-gateway tls install --hosts): {HOSTS_LINE}",
    f"add this line to /etc/hosts (or run `sudo eport-gateway tls install --hosts`): "
    f"{HOSTS_LINE}")

json_option = click.option("--json", "json_mode", is_flag=True,
                           help="One JSON document on stdout instead of text.")


def _output(json_mode: bool) -> Output:
    return Output(json_mode=json_mode, language=detect_language())


def _print_steps(output: Output, steps: list[Step]) -> None:
    for step in steps:
        part = output.text(_PARTS.get(step.part, Bilingual(step.part, step.part)))
        action = output.text(_ACTIONS.get(step.action, Bilingual(step.action, step.action)))
        output.line(f"{part}: {action}" + (f" ({step.detail})" if step.detail else ""))


@click.group("tls")
def tls_group() -> None:
    """The certificate for wss://wss.singlewindow.cn:61231 (Single Window pages on https)."""


@tls_group.command("install")
@click.option("--system", is_flag=True,
              help="Also add the CA to the system store (root; update-ca-certificates).")
@click.option("--hosts", is_flag=True,
              help=f"Add '127.0.0.1 {GATEWAY_HOST_NAME}' to /etc/hosts if needed (root).")
@json_option
def install_command(system: bool, hosts: bool, json_mode: bool) -> None:
    """Make a local CA that can vouch for wss.singlewindow.cn only, a server certificate for
    that name, and trust the CA in your browser's NSS database (~/.pki/nssdb). Safe to run
    again: it changes nothing unless a certificate is near its end."""
    output = _output(json_mode)
    paths = default_paths()
    # A TlsSetupError reaches eport-gateway's funnel: text in both languages, or JSON.
    steps = install(paths, system=system, hosts=hosts)
    found = status(paths)
    data: dict[str, Any] = {"steps": [step.as_json() for step in steps],
                            "status": found.as_json()}

    def human(out: Output) -> None:
        _print_steps(out, steps)
        if found.resolution.loopback:
            out.line(Bilingual(
                "完成。请启动 eport-gateway serve; 如浏览器已打开, 请重启浏览器",
                "Done. Start `eport-gateway serve`; restart the browser if it was open"))
        else:
            out.warn(Bilingual(
                f"{GATEWAY_HOST_NAME} 没有解析到本机, 网页将连不上网关。{_HOSTS_REMEDY.zh}",
                f"{GATEWAY_HOST_NAME} does not resolve to this computer, so pages cannot reach "
                f"the gateway. {_HOSTS_REMEDY.en[0].upper()}{_HOSTS_REMEDY.en[1:]}"))

    output.result("tls install", data, human)
    if not found.resolution.loopback:
        sys.exit(int(GatewayExit.NAME_NOT_LOCAL))


def _status_lines(found: TlsStatus) -> list[tuple[Bilingual, bool]]:
    server = found.server
    lines = [(Bilingual(f"证书目录: {found.tls_dir}", f"Directory: {found.tls_dir}"),
              found.tls_dir.is_dir())]
    if server.present and server.not_after is not None:
        lines.append((Bilingual(
            f"服务器证书: 有效期至 {server.not_after:%Y-%m-%d} (剩 {server.days_left} 天)"
            + (f", {server.problem}" if server.problem else ""),
            f"Server certificate: valid until {server.not_after:%Y-%m-%d} "
            f"({server.days_left} days left)" + (f", {server.problem}" if server.problem
                                                  else "")), server.usable))
    else:
        lines.append((Bilingual("服务器证书: 没有 (请运行 eport-gateway tls install)",
                                "Server certificate: none (run `eport-gateway tls install`)"),
                      False))
    for name, mode in found.key_modes.items():
        lines.append((Bilingual(f"密钥 {name}: 权限 {mode}", f"Key {name}: mode {mode}"),
                      mode == "0600"))
    lines.append((Bilingual(
        f"浏览器证书库 {found.nss_db}: " + ("已信任本地 CA" if found.nss_trusted else
                                          "未信任本地 CA (请运行 eport-gateway tls install)"),
        f"Browser database {found.nss_db}: " + (
            "trusts the local CA" if found.nss_trusted else
            "does not trust the local CA (run `eport-gateway tls install`)")),
        found.nss_trusted))
    if found.system_recorded or found.system_matches:
        lines.append((Bilingual(f"系统证书库 {found.system_file}: " + (
            "已加入" if found.system_matches else "与当前 CA 不符 (sudo eport-gateway tls "
            "install --system)"),
            f"System store {found.system_file}: " + (
                "added" if found.system_matches else "does not hold the current CA (sudo "
                "eport-gateway tls install --system)")), found.system_matches))
    addresses = ", ".join(found.resolution.addresses) or found.resolution.error or "-"
    lines.append((Bilingual(
        f"{GATEWAY_HOST_NAME} 解析为 {addresses}" + (
            "" if found.resolution.loopback else f"; {_HOSTS_REMEDY.zh}"),
        f"{GATEWAY_HOST_NAME} resolves to {addresses}" + (
            "" if found.resolution.loopback else f"; {_HOSTS_REMEDY.en}")),
        found.resolution.loopback))
    return lines


@tls_group.command("status")
@json_option
def status_command(json_mode: bool) -> None:
    """Show the certificates, their expiry, whether the browser trusts the CA, the system
    store and where wss.singlewindow.cn points. Exit 0 when pages can connect, 8 if not."""
    output = _output(json_mode)
    found = status(default_paths())

    def human(out: Output) -> None:
        for text, good in _status_lines(found):
            out.line(f"[{' OK ' if good else 'FAIL'}] {out.text(text)}")

    output.result("tls status", found.as_json(), human)
    if not found.ready:
        sys.exit(int(GatewayExit.NOT_READY))


@tls_group.command("uninstall")
@json_option
def uninstall_command(json_mode: bool) -> None:
    """Remove exactly what `tls install` added: the NSS entry (and the NSS database if install
    created it), the system-store file, the hosts line, the certificate files."""
    output = _output(json_mode)
    steps, complete = uninstall(default_paths())  # a TlsSetupError: as install's
    output.result("tls uninstall", {"steps": [step.as_json() for step in steps],
                                    "complete": complete},
                  lambda out: _print_steps(out, steps))
    if not complete:
        sys.exit(int(GatewayExit.NEEDS_ROOT))
