"""Checks of the browser path: Single Window pages (https) reach the gateway at
wss://wss.singlewindow.cn:61231, plain-http pages and programs at ws://127.0.0.1:61232.

A computer where `eport-gateway tls install` never ran is not broken: many users only sign
from programs. Those findings are WARN (with the one command that sets it up) or SKIP, never
FAIL; a FAIL means something set up is now wrong, or a port is taken by another program.
"""

from __future__ import annotations

from eport.clients.doctor.browser_facts import WS_PORT, WSS_PORT, BrowserFacts, Listener
from eport.clients.doctor.facts import Facts
from eport.clients.doctor.findings import Finding, Status, ok, problem, skipped
from eport.clients.gateway.tls_certificates import GATEWAY_HOST_NAME
from eport.clients.gateway.tls_trust import HOSTS_LINE
from eport.common.text import Bilingual as B

INSTALL = B("运行 eport-gateway tls install (然后重启浏览器和 eport-gateway)",
            "run `eport-gateway tls install` (then restart the browser and eport-gateway)")
START_GATEWAY = B("运行 eport-gateway serve, 或 systemctl --user enable --now "
                  "eport-gateway.service",
                  "run `eport-gateway serve`, or systemctl --user enable --now "
                  "eport-gateway.service")
NOT_SET_UP = B("浏览器访问 (wss) 尚未设置, 见 EP-B01",
               "the browser path (wss) is not set up: see EP-B01")
TITLE_CERT = B("网关的 wss 证书", "The gateway's wss certificate")
TITLE_NSS = B("浏览器信任网关的本地 CA", "The browser trusts the gateway's local CA")
TITLE_NAME = B(f"{GATEWAY_HOST_NAME} 指向本机", f"{GATEWAY_HOST_NAME} points to this computer")


def _set_up(browser: BrowserFacts) -> bool:
    return browser.tls is not None and (browser.tls.installed or browser.tls.server.present)


def certificate(browser: BrowserFacts) -> Finding:
    tls = browser.tls
    if tls is None:
        return problem("EP-B01", Status.WARN, B("无法读取网关的 wss 证书",
                                                "Cannot read the gateway's wss certificate"),
                       B(f"读取时出错: {browser.tls_error}", f"reading it failed: "
                         f"{browser.tls_error}"),
                       B("运行 eport-gateway tls status 查看详情",
                         "run `eport-gateway tls status` for details"))
    server = tls.server
    if not _set_up(browser):
        return problem(
            "EP-B01", Status.WARN, B("未安装网关的 wss 证书 (单一窗口网页无法使用本机的卡)",
                                     "The gateway's wss certificate is not installed "
                                     "(Single Window pages cannot use this computer's card)"),
            B(f"单一窗口网页是 https 的, 它们连接 wss://{GATEWAY_HOST_NAME}:61231, 需要本机信任的"
              "证书; 普通 http 网页和程序使用的 ws://127.0.0.1:61232 不受影响",
              f"Single Window pages are https and connect to wss://{GATEWAY_HOST_NAME}:61231, "
              "which needs a certificate this computer trusts; plain-http pages and programs "
              "on ws://127.0.0.1:61232 are not affected"),
            INSTALL, directory=str(tls.tls_dir))
    if server.usable and server.not_after is not None:
        loose = [name for name, mode in tls.key_modes.items() if int(mode, 8) & 0o077]
        if loose:
            return problem(
                "EP-B01", Status.WARN, B("网关的私钥其他用户可读", "The gateway's private key is "
                                         "readable by other users"),
                B(f"{', '.join(loose)} 的权限不是 0600", f"{', '.join(loose)} is not mode 0600"),
                B(f"chmod 600 {tls.tls_dir}/*-key.pem", f"chmod 600 {tls.tls_dir}/*-key.pem"),
                modes=tls.key_modes)
        if server.problem is not None:  # usable, but within 30 days of its end
            return problem(
                "EP-B01", Status.WARN,
                B(f"网关的 wss 证书 {server.days_left} 天后到期",
                  f"The gateway's wss certificate expires in {server.days_left} days"),
                B(f"有效期至 {server.not_after:%Y-%m-%d}", f"it is valid until "
                  f"{server.not_after:%Y-%m-%d}"),
                B("运行 eport-gateway tls install 更新它, 然后重启 eport-gateway",
                  "run `eport-gateway tls install` to renew it, then restart eport-gateway"),
                not_after=server.not_after.isoformat())
        return ok("EP-B01", B(f"网关的 wss 证书有效 (剩 {server.days_left} 天)",
                              f"The gateway's wss certificate is valid ({server.days_left} "
                              "days left)"), not_after=server.not_after.isoformat(),
                  directory=str(tls.tls_dir))
    why = server.problem or "missing"
    cause = {
        "expired": B(f"证书已于 {server.not_after:%Y-%m-%d} 过期",
                     f"it expired on {server.not_after:%Y-%m-%d}"),
        "not yet valid": B("证书尚未生效: 本机时钟可能不对",
                           "it is not valid yet: this computer's clock may be wrong"),
    }.get(why, B(f"证书不可用 ({why}): 文件缺失、损坏或与 CA 不符",
                 f"it cannot be used ({why}): a file is missing, damaged or does not match "
                 "the CA"))
    return problem("EP-B01", Status.FAIL, B("网关的 wss 证书不可用, 单一窗口网页将连不上网关",
                                            "The gateway's wss certificate cannot be used; "
                                            "Single Window pages cannot reach the gateway"),
                   cause, INSTALL, problem=why, directory=str(tls.tls_dir))


def nss_trust(browser: BrowserFacts) -> Finding:
    tls = browser.tls
    if tls is None or not _set_up(browser):
        return skipped("EP-B02", TITLE_NSS, NOT_SET_UP)
    if not browser.certutil:
        return problem("EP-B02", Status.WARN, B("无法检查浏览器证书库: 未安装 certutil",
                                                "Cannot check the browser's certificate "
                                                "database: certutil is not installed"),
                       B("certutil 读写 Chromium 使用的 NSS 证书库 (~/.pki/nssdb)",
                         "certutil reads and writes the NSS database Chromium uses "
                         "(~/.pki/nssdb)"),
                       B("sudo apt-get install libnss3-tools",
                         "sudo apt-get install libnss3-tools"))
    if tls.nss_trusted:
        return ok("EP-B02", B(f"浏览器证书库 {tls.nss_db} 信任网关的本地 CA",
                              f"The browser database {tls.nss_db} trusts the gateway's local "
                              "CA"), db=str(tls.nss_db))
    if tls.nss_error:
        cause = B(f"certutil 读取失败: {tls.nss_error}", f"certutil failed: {tls.nss_error}")
    elif tls.nss_trust is not None and not tls.nss_matches:
        cause = B("证书库中是以前的 CA, 与现在的证书不符",
                  "the database holds an earlier CA, not the one that signed the certificate")
    elif tls.nss_trust is not None:
        cause = B(f"CA 在证书库中, 但未被信任用于网站 (信任标志 {tls.nss_trust})",
                  f"the CA is there but not trusted for websites (trust flags {tls.nss_trust})")
    else:
        cause = B(f"证书库 {tls.nss_db} 中没有网关的 CA",
                  f"the database {tls.nss_db} does not hold the gateway's CA")
    return problem("EP-B02", Status.FAIL, B("浏览器不信任网关的证书, 单一窗口网页将连不上网关",
                                            "The browser does not trust the gateway's "
                                            "certificate; Single Window pages cannot reach it"),
                   cause, INSTALL, db=str(tls.nss_db), trust=tls.nss_trust)


def name_resolution(browser: BrowserFacts) -> Finding:
    tls = browser.tls
    if tls is None:
        return skipped("EP-B03", TITLE_NAME, NOT_SET_UP)
    resolution = tls.resolution
    if resolution.loopback:
        return ok("EP-B03", B(f"{GATEWAY_HOST_NAME} 指向本机 ({', '.join(resolution.addresses)})",
                              f"{GATEWAY_HOST_NAME} points to this computer "
                              f"({', '.join(resolution.addresses)})"),
                  addresses=resolution.addresses)
    if not _set_up(browser):
        return skipped("EP-B03", TITLE_NAME, NOT_SET_UP)
    cause = (B(f"它解析为 {', '.join(resolution.addresses)} (互联网上的服务器): 网页会连到那里, "
               "而不是本机的网关",
               f"it resolves to {', '.join(resolution.addresses)} (a server on the Internet): "
               "pages would connect there, not to this computer's gateway")
             if resolution.addresses else
             B("它无法解析, 网页连不上网关", "it does not resolve, so pages cannot connect"))
    return problem("EP-B03", Status.FAIL, B(f"{GATEWAY_HOST_NAME} 没有指向本机",
                                            f"{GATEWAY_HOST_NAME} does not point to this "
                                            "computer"),
                   cause, B(f"在 /etc/hosts 中加入这一行: {HOSTS_LINE} (或运行 sudo "
                            "eport-gateway tls install --hosts)",
                            f"add this line to /etc/hosts: {HOSTS_LINE} (or run `sudo "
                            "eport-gateway tls install --hosts`)"),
                   addresses=resolution.addresses)


def _holder(listener: Listener) -> B:
    if not listener.pids:
        return B(f"用户 uid {listener.uid} 的程序 (以 root 运行 eport doctor 可看到是哪个)",
                 f"a program of uid {listener.uid} (run eport doctor as root to name it)")
    return B(f"{listener.program} (pid {', '.join(map(str, listener.pids))}, uid "
             f"{listener.uid})",
             f"{listener.program} (pid {', '.join(map(str, listener.pids))}, uid "
             f"{listener.uid})")


def _conflict(port: int, listener: Listener, our_uid: int) -> Finding:
    holder = _holder(listener)
    if listener.is_gateway:
        cause = B(f"这是另一个用户 (uid {listener.uid}) 的 eport-gateway: 它拒绝本用户的连接",
                  f"it is another user's eport-gateway (uid {listener.uid}): it refuses this "
                  "user's connections")
    else:
        cause = B("通常是官方客户端控件 (如在 Wine 中运行) 或旧版网关: eport-gateway 无法监听该"
                  "端口, 网页会把请求发给那个程序",
                  "usually the official E-port client (for example under Wine) or an old "
                  "gateway: eport-gateway cannot listen there, and pages send their requests "
                  "to that program")
    return problem(
        "EP-B06", Status.FAIL, B(f"端口 {port} 被其他程序占用: {holder.zh}",
                                 f"Port {port} is held by another program: {holder.en}"),
        cause,
        B("停止该程序 (kill 上面的 pid, 或让该用户 systemctl --user stop eport-gateway), 然后"
          "启动 eport-gateway serve; 网页只使用 61231 和 61232 端口",
          "stop that program (kill the pid above, or have that user run systemctl --user stop "
          "eport-gateway), then start `eport-gateway serve`; pages only use ports 61231 and "
          "61232"),
        subject=f"port {port}", **listener.as_json(), our_uid=our_uid)


def ports(browser: BrowserFacts) -> list[Finding]:
    findings: list[Finding] = []
    ours = {port: [entry for entry in entries if entry.is_gateway and entry.uid == browser.our_uid]
            for port, entries in browser.listeners.items()}
    for port, code, scheme in ((WS_PORT, "EP-B04", "ws"), (WSS_PORT, "EP-B05", "wss")):
        foreign = [entry for entry in browser.listeners.get(port, []) if entry not in ours[port]]
        if foreign:
            findings.extend(_conflict(port, entry, browser.our_uid) for entry in foreign)
            continue
        title = B(f"eport-gateway 在 {port} 端口 ({scheme}) 监听",
                  f"eport-gateway listens on port {port} ({scheme})")
        if ours[port]:
            pids = sorted({pid for entry in ours[port] for pid in entry.pids})
            findings.append(ok(code, B(f"{title.zh} (pid {', '.join(map(str, pids))})",
                                       f"{title.en} (pid {', '.join(map(str, pids))})"),
                               pids=pids))
        elif port == WSS_PORT and not _set_up(browser):
            findings.append(skipped(code, title, NOT_SET_UP))
        elif port == WSS_PORT and ours.get(WS_PORT):
            findings.append(problem(
                code, Status.WARN, B("eport-gateway 在运行, 但没有 wss (61231)",
                                     "eport-gateway runs, but without wss (61231)"),
                B("它是用 --no-tls 启动的, 或是旧版本, 或启动时证书尚未安装",
                  "it was started with --no-tls, is an older version, or started before the "
                  "certificate was installed"),
                B("重启网关: systemctl --user restart eport-gateway.service, 或重新运行 "
                  "eport-gateway serve",
                  "restart it: systemctl --user restart eport-gateway.service, or run "
                  "`eport-gateway serve` again")))
        else:
            findings.append(problem(
                code, Status.WARN,
                B(f"没有程序在 {port} 端口 ({scheme}) 监听: eport-gateway 未运行",
                  f"Nothing listens on port {port} ({scheme}): eport-gateway is not running"),
                B("调用电子口岸客户端控件的网页和程序得不到应答 (网页库报 Err:Base60408)",
                  "pages and programs that call the E-port client get no answer (the page "
                  "library reports Err:Base60408)"),
                START_GATEWAY))
    return findings


def browser_path(facts: Facts) -> list[Finding]:
    browser = facts.browser
    if browser is None:
        return []
    return [certificate(browser), nss_trust(browser), name_resolution(browser),
            *ports(browser)]
