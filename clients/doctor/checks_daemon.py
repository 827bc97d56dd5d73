"""Checks through eportd: the daemon and its socket, pcscd as eportd sees it, USB devices,
each reader, each card (PIN and PUK counters, certificate and chain)."""

from __future__ import annotations

import grp
import pwd
from datetime import UTC

from eport.clients.doctor.facts import CardFacts, Facts
from eport.clients.doctor.findings import Finding, Status, ok, problem, skipped
from eport.clients.kit.views import card_kind_name
from eport.common.messages import CARD_CENTRE_RENEW, CARD_CENTRE_UNBLOCK
from eport.common.socket_location import SYSTEM_GROUP, SYSTEM_SOCKET_MODE, USER_SOCKET_MODE
from eport.common.text import Bilingual as B
from eport.protos.v1 import eportd_pb2 as pb

# Historical bytes of the ATRs we know: the simulated E-port cards (firmware_sim/atr.py).
# Real E-port card ATRs are not collected yet; an unknown ATR is fine if the applet answers.
KNOWN_ATR_MARKS = {b"EPORT-IC": B("模拟电子口岸IC卡 (测试)", "simulated E-port IC card (TEST)"),
                   b"EPORT-KEY": B("模拟电子口岸IKEY (测试)", "simulated E-port IKEY (TEST)")}
RESTART_DAEMON = B("重启 eportd 让它重新创建套接字: systemctl [--user] restart eportd.socket "
                   "eportd.service", "restart eportd so that it creates its socket again: "
                   "systemctl [--user] restart eportd.socket eportd.service")


def _name_of_uid(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _name_of_gid(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def daemon_reachable(facts: Facts) -> list[Finding]:
    socket = facts.socket
    path = str(socket.path) if socket else "?"
    if facts.daemon_error is not None or facts.info is None:
        error = facts.daemon_error
        cause = error.message if error else B("无应答", "no answer")
        remedy = B(f"启动 eportd: systemctl --user start eportd.socket (系统服务: sudo systemctl "
                   f"start eportd.socket); 若 eportd 使用其他套接字, 用 --socket 指定 (当前: "
                   f"{path})", f"start eportd: systemctl --user start eportd.socket (system "
                   f"service: sudo systemctl start eportd.socket); if it serves another socket, "
                   f"pass it with --socket (now: {path})")
        if error is not None and error.code != "DAEMON_UNAVAILABLE":
            remedy = error.remedy
        return [problem(
            "EP-E01", Status.FAIL, B("无法连接 eportd", "eportd is not reachable"), cause,
            remedy, socket=path,
            error_code=error.code if error else None)]
    info = facts.info
    return [ok("EP-E01", B(f"eportd {info.version} 正在运行 (pid {info.pid})",
                           f"eportd {info.version} is running (pid {info.pid})"),
               socket=path, version=info.version, pid=info.pid,
               trust_anchors=list(info.trust_anchor_subjects))]


def socket_permissions(facts: Facts) -> Finding:
    socket = facts.socket
    if socket is None or not socket.exists:
        return skipped("EP-E02", B("套接字权限", "Socket permissions"),
                       B("套接字不存在", "the socket does not exist"))
    owner, group = _name_of_uid(socket.uid), _name_of_gid(socket.gid)
    shown = f"{socket.mode:04o} {owner}:{group}"
    details = {"path": str(socket.path), "mode": f"{socket.mode:04o}", "owner": owner,
               "group": group}
    if not socket.is_socket:
        return problem("EP-E02", Status.FAIL, B("eportd 的套接字路径不是套接字",
                                                "eportd's socket path is not a socket"),
                       B(f"{socket.path} 是普通文件或目录", f"{socket.path} is not a socket"),
                       RESTART_DAEMON, **details)
    expected = {USER_SOCKET_MODE: "user", SYSTEM_SOCKET_MODE: "system"}
    if socket.mode not in expected:
        risky = socket.mode & 0o007
        cause = (B(f"权限 {shown}: 本机任何用户都能请求签名", f"mode {shown}: every local user "
                   "may ask for signatures") if risky else
                 B(f"权限 {shown}: 应为 0600 (用户服务) 或 0660 (系统服务, eport 组)",
                   f"mode {shown}: it should be 0600 (per-user daemon) or 0660 (system daemon, "
                   "group eport)"))
        return problem("EP-E02", Status.FAIL, B("eportd 套接字权限不正确",
                                                "eportd's socket has the wrong permissions"),
                       cause, RESTART_DAEMON, **details)
    if socket.mode == SYSTEM_SOCKET_MODE and group != SYSTEM_GROUP:
        return problem("EP-E02", Status.FAIL, B("eportd 套接字的组不正确",
                                                "eportd's socket has the wrong group"),
                       B(f"组为 {group}, 应为 {SYSTEM_GROUP}", f"its group is {group}, not "
                         f"{SYSTEM_GROUP}"), RESTART_DAEMON, **details)
    if not socket.usable_by_us:
        return problem("EP-E02", Status.FAIL, B("当前用户无权使用 eportd 的套接字",
                                                "This user may not use eportd's socket"),
                       B(f"套接字 {shown}", f"the socket is {shown}"),
                       B("sudo usermod -aG eport $USER, 然后重新登录", "sudo usermod -aG eport "
                         "$USER, then log in again"), **details)
    return ok("EP-E02", B(f"套接字权限正确 ({shown})", f"The socket's permissions are right "
                          f"({shown})"), **details)


def pcscd_from_daemon(facts: Facts) -> Finding:
    if facts.info is None:
        return skipped("EP-P03", B("eportd 能否连接 pcscd", "eportd reaches pcscd"),
                       B("eportd 不可用", "eportd is not reachable"))
    if facts.info.pcsc_state == pb.SERVICE_RUNNING:
        return ok("EP-P03", B("eportd 已连接 pcscd", "eportd is connected to pcscd"))
    return problem("EP-P03", Status.FAIL, B("eportd 无法连接 pcscd", "eportd cannot reach pcscd"),
                   B(f"pcscd 报告: {facts.info.pcsc_error or '未运行'}",
                     f"pcscd said: {facts.info.pcsc_error or 'not running'}"),
                   B("先解决上面关于 pcscd 的问题; eportd 会自动重连",
                     "fix the pcscd findings above; eportd reconnects by itself"),
                   pcsc_error=facts.info.pcsc_error or None)


def usb_devices(facts: Facts) -> list[Finding]:
    if facts.usb is None:
        return [skipped("EP-U01", B("USB 设备", "USB devices"),
                        B("eportd 不可用", "eportd is not reachable"))]
    if not facts.usb.usb_available:
        return [problem("EP-U01", Status.WARN, B("无法列出 USB 设备", "USB devices cannot be "
                                                 "listed"),
                        B(f"eportd: {facts.usb.unavailable_reason}",
                          f"eportd: {facts.usb.unavailable_reason}"),
                        B("安装 libusb-1.0-0 和 pyusb (scripts/setup.sh)", "install libusb-1.0-0 "
                          "and pyusb (scripts/setup.sh)"))]
    findings = []
    pcsc_seen = facts.readers is not None and any(
        not r.name.startswith("Virtual PCD") for r in facts.readers.readers)
    for device in facts.usb.devices:
        name = f"{device.manufacturer} {device.product} ({device.vendor_id:04x}:" \
               f"{device.product_id:04x}, bus {device.bus} device {device.address})".strip()
        if not device.accessible:
            findings.append(problem(
                "EP-U01", Status.FAIL, B("USB 设备无访问权限", "No permission for a USB device"),
                B(f"{name} 在 USB 上, 但 eportd 无权打开它", f"{name} is on USB but eportd may "
                  "not open it"),
                B("安装 udev 规则: sudo udev/install.sh, 然后重新插拔设备", "install the udev "
                  "rules (sudo udev/install.sh), then unplug and plug the device again"),
                subject=name))
        elif not pcsc_seen:
            findings.append(problem(
                "EP-U01", Status.FAIL, B("USB 设备未被 PC/SC 识别", "A USB device PC/SC does not "
                                         "show"),
                B(f"{name} 在 USB 上, 但 pcscd 没有列出对应的读卡器 (驱动不支持或权限不足)",
                  f"{name} is on USB but pcscd lists no reader for it (no driver for it, or no "
                  "permission)"),
                B("sudo apt-get install libccid; 安装 udev 规则 (sudo udev/install.sh); 重新插拔",
                  "sudo apt-get install libccid; install the udev rules (sudo "
                  "udev/install.sh); plug it in again"), subject=name))
        else:
            findings.append(ok("EP-U01", B(f"USB 设备 {name}", f"USB device {name}"),
                               subject=name))
    if not findings:
        findings.append(ok("EP-U01", B("USB 上没有读卡器或 IKEY", "No USB reader or IKEY")))
    return findings


def _atr_name(atr: bytes) -> B | None:
    return next((name for mark, name in KNOWN_ATR_MARKS.items() if mark in atr), None)


def readers(facts: Facts) -> list[Finding]:
    if facts.readers is None:
        return [skipped("EP-R01", B("读卡器", "Readers"), B("eportd 不可用",
                                                           "eportd is not reachable"))]
    if facts.readers.pcsc_state != pb.SERVICE_RUNNING:
        return [skipped("EP-R01", B("读卡器", "Readers"), B("pcscd 不可用",
                                                           "pcscd is not reachable"))]
    listed = list(facts.readers.readers)
    if not listed:
        return [problem("EP-R01", Status.FAIL, B("未找到读卡器", "No card reader found"),
                        B("pcscd 没有列出任何读卡器或 IKEY", "pcscd lists no reader or IKEY"),
                        B("插好读卡器或 IKEY; 检查上面的驱动和 USB 结果",
                          "plug in the reader or IKEY; see the driver and USB findings above"))]
    findings = [ok("EP-R01", B(f"找到 {len(listed)} 个读卡器", f"{len(listed)} reader(s) found"),
                   readers=[r.name for r in listed])]
    any_card = any(r.card_present for r in listed)
    for reader in listed:
        if not reader.card_present and any_card and not reader.HasField("card_removed_at"):
            # A spare empty reader beside the one in use is normal, not a warning.
            findings.append(ok("EP-R02", B("读卡器中没有卡片 (其他读卡器中有卡)",
                                           "No card in this reader (another one has a card)"),
                               subject=reader.name))
            continue
        findings.extend(_reader(reader))
    forms = {r.form for r in listed if r.card_id}
    if {pb.IC_CARD, pb.IKEY} <= forms:
        findings.append(problem(
            "EP-R07", Status.WARN, B("同时插有IC卡和IKEY", "An IC card and an IKEY are both "
                                   "present"),
            B("未指定卡片时, 系统优先使用IC卡 (与电子口岸客户端相同)", "when no card is named, "
              "the IC card is used first (as the E-port client does)"),
            B("如需使用IKEY, 请拔出IC卡, 或用 --card / --reader 指定", "to use the IKEY, "
              "remove the IC card or name it with --card / --reader")))
    return findings


def _reader(reader: pb.Reader) -> list[Finding]:
    name = reader.name
    if not reader.card_present:
        if reader.HasField("card_removed_at"):
            moment = reader.card_removed_at.ToDatetime(tzinfo=UTC).astimezone()
            card = reader.removed_card_id or "?"
            return [problem("EP-R03", Status.WARN, B("卡片已被拔出", "The card was removed"),
                            B(f"卡片 {card} 于 {moment:%H:%M:%S} 从读卡器 {name} 中拔出",
                              f"card {card} was pulled out of {name} at {moment:%H:%M:%S}"),
                            B("重新插入卡片 (芯片朝上); 拔卡时进行中的签名需要重做",
                              "insert the card again (chip up); a signature in progress when "
                              "it was pulled must be redone"), subject=name,
                            removed_card_id=reader.removed_card_id or None)]
        return [problem("EP-R02", Status.WARN, B("读卡器中没有卡片", "No card in the reader"),
                        B(f"读卡器 {name} 是空的", f"reader {name} is empty"),
                        B("请将IC卡插入读卡器 (芯片朝上) 或插入IKEY",
                          "insert the IC card (chip up) or the IKEY"), subject=name)]
    if reader.exclusive_elsewhere:
        return [problem("EP-R06", Status.FAIL, B("卡片正被其他程序独占",
                                                 "Another program holds the card exclusively"),
                        B(f"读卡器 {name} 中的卡片被其他程序独占打开, eportd 无法使用",
                          f"another program opened the card in {name} exclusively; eportd "
                          "cannot use it"),
                        B("关闭其他使用卡片的程序 (其他客户端控件、浏览器插件、pkcs11 工具) 后重试",
                          "close the other program using the card (another E-port client, a "
                          "browser plug-in, a PKCS#11 tool) and try again"), subject=name)]
    findings = []
    known = _atr_name(reader.atr)
    atr = reader.atr.hex().upper()
    if known:
        findings.append(ok("EP-R04", B(f"ATR 已识别: {known.zh}", f"ATR recognised: {known.en}"),
                           subject=name, atr=atr))
    elif reader.card_id:
        findings.append(ok("EP-R04", B("ATR 不在已知列表中, 但电子口岸应用可用",
                                       "ATR not in our list, but the E-port application "
                                       "answers"), subject=name, atr=atr))
    if reader.error == "UNSUPPORTED_CARD" or (reader.error and not reader.card_id):
        findings.append(problem(
            "EP-R05", Status.FAIL, B("无法选择电子口岸应用", "The E-port application cannot be "
                                     "selected"),
            B(f"读卡器 {name} 中的卡片不是电子口岸卡, 或卡片损坏 ({reader.error})",
              f"the card in {name} is not an E-port card, or is damaged ({reader.error})"),
            B("确认插入的是电子口岸IC卡或IKEY; 擦拭芯片后重插; 仍不行请联系制卡中心",
              "make sure it is an E-port IC card or IKEY; clean the chip and insert it again; "
              "if it still fails, contact the card centre"), subject=name, atr=atr))
    elif reader.card_id:
        findings.append(ok("EP-R05", B("电子口岸应用可用", "The E-port application answers"),
                           subject=name))
    return findings


def cards(facts: Facts) -> list[Finding]:
    if facts.readers is None or facts.readers.pcsc_state != pb.SERVICE_RUNNING:
        return []
    if not facts.cards:
        return [problem("EP-C01", Status.FAIL, B("没有可用的电子口岸卡", "No usable E-port card"),
                        B("没有读卡器中有可读取的电子口岸卡", "no reader holds a readable E-port "
                          "card"),
                        B("请插入IC卡或者Key", "insert the IC card or the IKEY"))]
    findings: list[Finding] = []
    for card in facts.cards:
        findings.extend(_card(card))
    return findings


def _card(card: CardFacts) -> list[Finding]:
    subject = f"{card.reader} / {card.card_id}"
    findings: list[Finding] = []
    for name, error in card.errors.items():
        findings.append(problem("EP-C09", Status.FAIL, B(f"读取卡片失败 ({name})",
                                                         f"Reading the card failed ({name})"),
                                error.message, error.remedy, subject=subject,
                                error_code=error.code))
    if card.info is not None:
        info = card.info
        kind = card_kind_name(info.kind)
        findings.append(ok("EP-C01", B(f"{kind.zh}, {info.enterprise_name}",
                                       f"{kind.en}, {info.enterprise_name}"),
                           subject=subject, kind=pb.CardKind.Name(info.kind),
                           form=pb.CardForm.Name(info.form),
                           enterprise=info.enterprise_name, customs_code=info.customs_code))
    if card.pins is not None:
        findings.extend(_pins(card.pins, subject))
    if card.certificate is not None:
        findings.extend(_certificate(card.certificate.check, subject))
    return findings


def _pins(pins: pb.PinStatus, subject: str) -> list[Finding]:
    findings = []
    if pins.pin_blocked:
        findings.append(problem(
            "EP-K01", Status.FAIL, B("口令已锁定", "The PIN is blocked"),
            B("连续输错3次口令, 卡片已锁定", "three wrong PINs in a row blocked the card"),
            B("有解锁码时用 eport pin unblock 解锁; 否则" + CARD_CENTRE_UNBLOCK.zh,
              "with the PUK, run `eport pin unblock`; otherwise " + CARD_CENTRE_UNBLOCK.en),
            subject=subject, pin_tries_left=0))
    elif 0 <= pins.pin_tries_left < 3:
        findings.append(problem(
            "EP-K01", Status.WARN, B(f"口令只剩 {pins.pin_tries_left} 次重试机会",
                                     f"Only {pins.pin_tries_left} PIN tries left"),
            B("之前输错过口令", "wrong PINs were entered before"),
            B("核对口令后再输入; 正确输入一次即恢复为3次; 不确定时请勿再试, 到制卡中心咨询",
              "check the PIN before entering it; one right PIN restores 3 tries; if unsure, "
              "stop and ask the card centre"), subject=subject,
            pin_tries_left=pins.pin_tries_left))
    else:
        findings.append(ok("EP-K01", B("口令未锁定", "The PIN is not blocked"), subject=subject,
                           pin_tries_left=pins.pin_tries_left if pins.pin_tries_left >= 0
                           else None, session_active=pins.session_active))
    if pins.puk_blocked:
        findings.append(problem(
            "EP-K02", Status.FAIL, B("解锁码(PUK)已锁定", "The PUK is blocked"),
            B("解锁码输错次数过多", "too many wrong PUKs were entered"),
            CARD_CENTRE_UNBLOCK,
            subject=subject, puk_tries_left=0))
    else:
        findings.append(ok("EP-K02", B("解锁码(PUK)未锁定", "The PUK is not blocked"),
                           subject=subject, puk_tries_left=pins.puk_tries_left))
    return findings


def _certificate(check: pb.CertificateCheck, subject: str) -> list[Finding]:
    renew = CARD_CENTRE_RENEW
    details = {"not_after": check.not_after.ToDatetime().date().isoformat(),
               "days_left": check.days_left}
    findings = []
    if check.state == pb.EXPIRED:
        findings.append(problem("EP-C03", Status.FAIL, B("证书已过期", "The certificate has "
                                                          "expired"),
                                B(check.message_zh or "您的IC卡已过期",
                                  check.message_en or "the card's certificate has expired"),
                                renew, subject=subject, **details))
    elif check.state == pb.EXPIRING:
        findings.append(problem("EP-C04", Status.WARN, B(f"证书将在 {check.days_left} 天后到期",
                                                          f"The certificate expires in "
                                                          f"{check.days_left} days"),
                                B(f"您的IC卡还有{check.days_left}天到期",
                                  f"the card's certificate expires in {check.days_left} days"),
                                renew, subject=subject, **details))
    elif check.state == pb.NOT_YET_VALID:
        findings.append(problem("EP-C05", Status.FAIL, B("证书尚未生效", "The certificate is not "
                                                          "valid yet"),
                                B("证书的生效时间晚于本机当前时间: 多半是本机时钟不正确",
                                  "its start is after this computer's time: most likely the "
                                  "clock is wrong"),
                                B("校正系统时间 (见 EP-T01)", "set the system clock right (see "
                                  "EP-T01)"), subject=subject, **details))
    else:
        findings.append(ok("EP-C02", B(f"证书有效, 还有 {check.days_left} 天",
                                       f"The certificate is valid ({check.days_left} days "
                                       "left)"), subject=subject, **details))
    if check.chain == pb.UNTRUSTED:
        findings.append(problem(
            "EP-C06", Status.FAIL, B("证书链不可信", "The certificate chain is not trusted"),
            B(f"证书不是由已配置的根证书签发: {check.chain_detail}",
              f"no configured trust anchor issued it: {check.chain_detail}"),
            B("确认卡片来自电子口岸制卡中心; 检查 eportd 的 --trust-anchor 设置",
              "make sure the card comes from the E-port card centre; check eportd's "
              "--trust-anchor setting"), subject=subject))
    elif check.chain == pb.NO_ANCHORS:
        findings.append(problem(
            "EP-C07", Status.WARN, B("未检查证书链", "The chain was not checked"),
            B("eportd 未配置根证书", "eportd has no trust anchors configured"),
            B("用 --trust-anchor 为 eportd 指定电子口岸根证书", "give eportd the E-port root "
              "certificate with --trust-anchor"), subject=subject))
    else:
        findings.append(ok("EP-C06", B("证书链可信", "The certificate chain is trusted"),
                           subject=subject, anchor=check.chain_detail))
    return findings
