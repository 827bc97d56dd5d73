"""Checks of the card backends other than PC/SC (PKCS#11, the remote E-port client), from what
eportd reports in DaemonInfo.backends: a PKCS#11 module (EP-H..) and a remote E-port client
(EP-W..).

Doctor is a client: it never loads a PKCS#11 module or opens the remote websocket itself. The
daemon names each backend's condition (BackendStatus.condition) from the backend's own errors,
and keeps the backend's words in `detail`; the findings say what that means and what to do.
"""

from __future__ import annotations

from eport.clients.doctor.facts import Facts
from eport.clients.doctor.findings import Finding, Status, ok, problem, skipped
from eport.common.text import Bilingual as B
from eport.protos.v1 import eportd_pb2 as pb

TITLE_MODULE = B("PKCS#11 模块能否加载", "The PKCS#11 module loads")
TITLE_TOKEN = B("PKCS#11 模块中有令牌", "The PKCS#11 module shows a token")
TITLE_SM2 = B("SM2 签名机制已配置", "An SM2 signing mechanism is configured")
TITLE_REACH = B("能否连接远程电子口岸客户端", "The remote E-port client is reachable")
TITLE_PROTOCOL = B("远程客户端使用电子口岸客户端协议", "The remote client speaks the E-port "
                   "client's protocol")
TITLE_CARD = B("远程客户端上有卡", "The remote client has a card")


def _condition(status: pb.BackendStatus) -> str:
    return pb.BackendCondition.Name(status.condition)


def _said(status: pb.BackendStatus) -> B:
    words = status.detail or "-"
    return B(f"eportd 报告: {words}", f"eportd said: {words}")


def _details(status: pb.BackendStatus) -> dict[str, object]:
    return {"backend": status.name, "target": status.target, "condition": _condition(status),
            "detail": status.detail or None, "readers": status.readers, "cards": status.cards}


def _sm2_tokens(facts: Facts, backend: str) -> list[str]:
    """Readers of `backend` whose card or token holds an SM2 key."""
    if facts.readers is None:
        return []
    readers = {r.name for r in facts.readers.readers if r.backend == backend}
    return [card.reader for card in facts.cards
            if card.reader in readers and card.info is not None
            and card.info.key_algorithm == pb.SM2]


def pkcs11(facts: Facts, status: pb.BackendStatus) -> list[Finding]:
    subject, details = status.target, _details(status)
    condition = status.condition
    if condition == pb.PKCS11_MODULE_MISSING:
        return [problem(
            "EP-H01", Status.FAIL, B("PKCS#11 模块文件不存在", "The PKCS#11 module file does "
                                     "not exist"),
            B(f"{subject} 不存在; {_said(status).zh}", f"{subject} does not exist; "
              f"{_said(status).en}"),
            B("安装厂商的 PKCS#11 中间件, 并用 --pkcs11-module (或配置文件中的 module) 给出"
              "其 .so 的完整路径 (如 SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)",
              "install the vendor's PKCS#11 middleware and give the full path of its .so with "
              "--pkcs11-module (or module in the configuration file), for example "
              "/usr/lib/softhsm/libsofthsm2.so for SoftHSM2"), subject, **details),
            skipped("EP-H02", TITLE_TOKEN, B("模块未加载", "the module is not loaded"), subject)]
    if condition in (pb.PKCS11_MODULE_NOT_LOADED, pb.BACKEND_FAILED):
        return [problem(
            "EP-H01", Status.FAIL, B("PKCS#11 模块无法加载", "The PKCS#11 module does not load"),
            B(f"{subject} 不是可用的 PKCS#11 模块 (不是 PKCS#11 库、架构不符、缺少依赖库, 或 "
              f"C_Initialize 失败); {_said(status).zh}",
              f"{subject} is not a usable PKCS#11 module (not a PKCS#11 library, the wrong "
              f"architecture, a missing library it needs, or C_Initialize failed); "
              f"{_said(status).en}"),
            B(f"确认路径指向厂商的 PKCS#11 模块: pkcs11-tool --module {subject} -L 应列出插槽; "
              "缺少依赖时用 ldd 查看; eportd 会自动重试加载",
              f"check that the path is the vendor's PKCS#11 module: pkcs11-tool --module "
              f"{subject} -L must list its slots; for missing libraries see ldd; eportd "
              "retries the load by itself"), subject, **details),
            skipped("EP-H02", TITLE_TOKEN, B("模块未加载", "the module is not loaded"), subject)]
    findings = [ok("EP-H01", B(f"PKCS#11 模块 {subject} 已加载", f"The PKCS#11 module "
                               f"{subject} is loaded"), subject, **details)]
    if condition == pb.PKCS11_NO_TOKEN:
        findings.append(problem(
            "EP-H02", Status.FAIL, B("PKCS#11 模块中没有令牌", "The PKCS#11 module shows no token"),
            B("模块已加载, 但没有已插入且已初始化的令牌", "the module is loaded but has no "
              "present, initialised token"),
            B("插入 USB Key 或智能卡, 并确认厂商的服务在运行; 新令牌先初始化 (SoftHSM2: "
              "softhsm2-util --init-token, 且 eportd 的 SOFTHSM2_CONF 指向该令牌目录); "
              "eportd 会自动发现新令牌",
              "plug in the USB key or card and check that the vendor's service runs; "
              "initialise a new token first (SoftHSM2: softhsm2-util --init-token, with "
              "eportd's SOFTHSM2_CONF naming that token directory); eportd finds new tokens "
              "by itself"), subject, **details))
    else:
        findings.append(ok("EP-H02", B(f"PKCS#11 模块有 {status.readers} 个令牌",
                                       f"The PKCS#11 module shows {status.readers} "
                                       f"token(s)"), subject, **details))
    findings.extend(_sm2(facts, status))
    return findings


def _sm2(facts: Facts, status: pb.BackendStatus) -> list[Finding]:
    """SM2 with SM3 has no standard PKCS#11 mechanism: each vendor has its own id."""
    needing = _sm2_tokens(facts, status.name)
    if status.sm2_mechanism_configured:
        return [ok("EP-H03", B("已配置厂商的 SM2 机制", "A vendor SM2 mechanism id is "
                               "configured"), status.target, tokens=needing)]
    if not needing:
        return []  # no SM2 key: nothing needs the mechanism
    return [problem(
        "EP-H03", Status.FAIL, B("SM2 令牌没有配置 SM2 机制", "An SM2 token without an SM2 "
                                 "mechanism id"),
        B(f"{', '.join(needing)} 持有 SM2 密钥, 但 eportd 没有配置厂商的 SM2-with-SM3 机制号, "
          "无法用它签名", f"{', '.join(needing)} hold(s) an SM2 key, but eportd has no vendor "
          "SM2-with-SM3 mechanism id configured, so it cannot sign with it"),
        B("从厂商文档查得机制号, 用 eportd --pkcs11-sm2-mechanism 0xID (或配置文件中的 "
          "sm2_mechanism) 配置后重启 eportd; 已知的机制号见 docs/backends.md",
          "look the id up in the vendor's documentation, configure it with eportd "
          "--pkcs11-sm2-mechanism 0xID (or sm2_mechanism in the configuration file) and "
          "restart eportd; docs/backends.md lists the ids known"),
        status.target, tokens=needing)]


def remote(status: pb.BackendStatus) -> list[Finding]:
    subject, details = status.target, _details(status)
    condition = status.condition
    not_reached = B("远程客户端不可达", "the remote client is not reachable")
    if condition in (pb.REMOTE_UNREACHABLE, pb.BACKEND_FAILED):
        return [problem(
            "EP-W01", Status.FAIL, B("无法连接远程电子口岸客户端", "The remote E-port client "
                                     "is not reachable"),
            B(f"连接 {subject} 失败 (连接被拒绝、主机名无法解析或超时); {_said(status).zh}",
              f"connecting to {subject} failed (refused, unknown host name or timeout); "
              f"{_said(status).en}"),
            B("在装有卡的 Windows 电脑上启动电子口岸客户端, 确认防火墙放行其端口 (ws 61232, "
              "wss 61231), 并核对 --remote-client 的地址; eportd 会自动重连",
              "start the E-port client on the Windows machine with the card, let its port "
              "through the firewall (ws 61232, wss 61231) and check the --remote-client URL; "
              "eportd reconnects by itself"), subject, **details),
            skipped("EP-W02", TITLE_PROTOCOL, not_reached, subject),
            skipped("EP-W03", TITLE_CARD, not_reached, subject)]
    reached = ok("EP-W01", B(f"远程客户端 {subject} 可连接", f"The remote client {subject} "
                             "is reachable"), subject, **details)
    if condition == pb.REMOTE_WRONG_PROTOCOL:
        return [reached, problem(
            "EP-W02", Status.FAIL, B("该地址上的程序不是电子口岸客户端", "Another program "
                                     "answers at that address"),
            B(f"{subject} 有应答, 但不是电子口岸客户端的 websocket 接口 (例如普通 HTTP 服务, "
              f"或不发送问候的 websocket); {_said(status).zh}",
              f"{subject} answers, but not with the E-port client's websocket API (for "
              f"example a plain HTTP server, or a websocket that does not greet); "
              f"{_said(status).en}"),
            B("确认端口属于电子口岸客户端 (ws://主机:61232 或 wss://主机:61231), 停用占用该端口"
              "的其他程序, 或把 --remote-client 改为正确的地址",
              "check that the port is the E-port client's (ws://HOST:61232 or "
              "wss://HOST:61231), stop the other program on it, or point --remote-client at "
              "the right address"), subject, **details),
            skipped("EP-W03", TITLE_CARD, B("协议不符", "the protocol does not match"), subject)]
    speaks = ok("EP-W02", B("远程客户端按电子口岸客户端协议应答", "The remote client answers "
                            "as the E-port client does"), subject)
    if condition == pb.REMOTE_NO_CARD:
        return [reached, speaks, problem(
            "EP-W03", Status.WARN, B("远程客户端上没有卡", "The remote client has no card"),
            B("客户端有应答, 但没有检测到 IC 卡或 IKEY", "the client answers but sees no IC card "
              "or IKEY"),
            B("在那台 Windows 电脑上插入 IC 卡 (读卡器) 或 IKEY, 并在电子口岸客户端中确认能读到"
              "卡; eportd 每隔几秒查询一次卡号, 插入后自动可用",
              "insert the IC card (in its reader) or the IKEY on that Windows machine and check "
              "that the E-port client reads it; eportd polls the card id every few seconds and "
              "uses it as soon as it is there"), subject, **details)]
    return [reached, speaks, ok("EP-W03", B("远程客户端上有卡", "The remote client has a card"),
                                subject, cards=status.cards)]


def backends(facts: Facts) -> list[Finding]:
    """One group of findings per PKCS#11 or remote backend eportd runs (none for PC/SC: the
    EP-P findings cover it)."""
    if facts.info is None:
        return []
    findings: list[Finding] = []
    for status in facts.info.backends:
        if status.condition == pb.BACKEND_CONDITION_UNSPECIFIED:
            continue  # an eportd older than these conditions: nothing reliable to say
        kind = status.name.partition(":")[0]  # "pkcs11", or "pkcs11:MODULE" beside another
        if kind == "pkcs11":
            findings.extend(pkcs11(facts, status))
        elif kind == "remote":
            findings.extend(remote(status))
    return findings
