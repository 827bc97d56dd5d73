"""Checks of the host: pcscd, polkit, reader drivers, this project's udev rules, the clock."""

from __future__ import annotations

from datetime import UTC, datetime

from eport.clients.doctor.facts import PCSCD_SOCKET, Facts
from eport.clients.doctor.findings import Finding, Status, ok, problem
from eport.common.text import Bilingual as B
from eport.protos.v1 import eportd_pb2 as pb

# pcsc-lite's SCARD_E_NO_ACCESS: what a client gets when polkit refuses it.
SCARD_E_NO_ACCESS = 0x80100027
POLKIT_DENIAL_MARKS = ("is NOT authorized for action", "Rejected unauthorized PC/SC client")
# No certificate of this software's era starts before this: a clock earlier than it is wrong.
EARLIEST_PLAUSIBLE = datetime(2026, 1, 1, tzinfo=UTC)


def pcscd_installed(facts: Facts) -> Finding:
    if facts.pcscd_path:
        return ok("EP-P01", B("pcscd 已安装", "pcscd is installed"),
                  path=facts.pcscd_path, version=facts.pcscd_version)
    return problem("EP-P01", Status.FAIL, B("未安装读卡器服务 pcscd", "pcscd is not installed"),
                   B("Linux 上所有读卡器和 IKEY 都通过 pcscd 访问",
                     "every reader and IKEY is reached through pcscd on Linux"),
                   B("sudo apt-get install pcscd libccid", "sudo apt-get install pcscd libccid"))


def pcscd_running(facts: Facts) -> Finding:
    if facts.pcscd_pids:
        return ok("EP-P02", B("pcscd 正在运行", "pcscd is running"), pids=facts.pcscd_pids)
    if facts.pcscd_socket_unit == "active":
        return ok("EP-P02", B("pcscd 由 pcscd.socket 按需启动",
                              "pcscd starts on demand (pcscd.socket is active)"))
    cause = (B(f"pcscd 已停止, 但其套接字 {PCSCD_SOCKET} 还在 (进程异常退出)",
               f"pcscd is stopped but its socket {PCSCD_SOCKET} is left over "
               "(it died)") if facts.pcscd_socket_exists else
             B("没有 pcscd 进程, pcscd.socket 也未启用",
               "there is no pcscd process and pcscd.socket is not active"))
    return problem("EP-P02", Status.FAIL, B("读卡器服务(pcscd)未运行",
                                            "The smart-card service (pcscd) is not running"),
                   cause,
                   B("sudo systemctl enable --now pcscd.socket (无 systemd 时: sudo pcscd); "
                     "eportd 会自动重连",
                     "sudo systemctl enable --now pcscd.socket (without systemd: sudo pcscd); "
                     "eportd reconnects by itself"))


def polkit(facts: Facts) -> Finding:
    journal = facts.pcscd_journal or ""
    denied_code = facts.info is not None and facts.info.pcsc_error_code == SCARD_E_NO_ACCESS
    denied_log = any(mark in journal for mark in POLKIT_DENIAL_MARKS)
    if denied_code or denied_log:
        return problem(
            "EP-P04", Status.FAIL, B("pcscd 拒绝访问 (polkit)", "pcscd refuses access (polkit)"),
            B("pcscd 使用 polkit, 只允许本地控制台会话访问读卡器; SSH 会话、CI 和用户服务被拒绝",
              "pcscd uses polkit and only lets local console sessions use readers; SSH "
              "sessions, CI runners and user services are refused"),
            B("安装本项目的 polkit 规则并加入 eport 组: sudo udev/install.sh; sudo usermod -aG "
              "eport $USER; 然后重新登录并 sudo systemctl restart pcscd",
              "install this project's polkit rule and join the group eport: sudo "
              "udev/install.sh; sudo usermod -aG eport $USER; then log in again and sudo "
              "systemctl restart pcscd"),
            evidence="pcsc_error_code" if denied_code else "pcscd journal")
    if facts.polkit_policy:
        return ok("EP-P04", B("pcscd 使用 polkit, 未发现拒绝记录",
                              "pcscd uses polkit; no refusal seen"),
                  eport_rule_installed=facts.eport_polkit_rule)
    return ok("EP-P04", B("pcscd 未使用 polkit", "pcscd does not use polkit"))


def reader_drivers(facts: Facts) -> list[Finding]:
    findings = []
    usb_readers = list(facts.usb.devices) if facts.usb else []
    if usb_readers and not facts.ccid_driver:
        findings.append(problem(
            "EP-D01", Status.FAIL, B("缺少 CCID 读卡器驱动", "The CCID reader driver is missing"),
            B(f"USB 上有 {len(usb_readers)} 个读卡器或 IKEY, 但 pcscd 没有 CCID 驱动",
              f"{len(usb_readers)} reader(s) or IKEY(s) are on USB but pcscd has no CCID "
              "driver"),
            B("sudo apt-get install libccid; 然后重新插拔设备",
              "sudo apt-get install libccid, then unplug and plug the device again")))
    elif facts.ccid_driver:
        findings.append(ok("EP-D01", B("CCID 读卡器驱动已安装", "The CCID reader driver is "
                                       "installed"), path=facts.ccid_driver))
    else:
        findings.append(problem(
            "EP-D01", Status.WARN, B("未安装 CCID 读卡器驱动", "No CCID reader driver"),
            B("目前没有 USB 读卡器, 但以后插入实体读卡器或 IKEY 时需要它",
              "no USB reader is present now, but a real reader or IKEY will need it"),
            B("sudo apt-get install libccid", "sudo apt-get install libccid")))
    vpcd_readers = [r.name for r in (facts.readers.readers if facts.readers else [])
                    if r.name.startswith("Virtual PCD")]
    if vpcd_readers:
        findings.append(ok("EP-D02", B("模拟卡读卡器(vpcd)可用", "The simulated-card reader "
                                       "(vpcd) is present"), readers=vpcd_readers))
    elif facts.vpcd_driver and facts.vpcd_configured:
        findings.append(ok("EP-D02", B("vpcd 驱动已安装", "The vpcd driver is installed"),
                           path=facts.vpcd_driver))
    return findings


def udev_rules(facts: Facts) -> Finding:
    if facts.udev_rules:
        return ok("EP-U02", B("本项目的 udev 规则已安装", "This project's udev rules are "
                              "installed"), path=facts.udev_rules)
    return problem(
        "EP-U02", Status.WARN, B("未安装本项目的 udev 规则", "This project's udev rules are not "
                                 "installed"),
        B("没有规则时, 只有 root 能打开 USB 读卡器和 IKEY 设备, 用户服务和 eport 组成员不能",
          "without them only root may open USB readers and IKEYs; user services and the group "
          "eport may not"),
        B("sudo udev/install.sh (在本项目目录中运行)", "sudo udev/install.sh (from this "
          "project's directory)"))


def clock(facts: Facts) -> Finding:
    not_yet_valid = [card.card_id for card in facts.cards if card.certificate is not None
                     and card.certificate.check.state == pb.NOT_YET_VALID]
    if facts.now < EARLIEST_PLAUSIBLE or not_yet_valid:
        cause = (B(f"证书尚未生效 (卡 {', '.join(not_yet_valid)}): 本机时间早于证书生效时间",
                   f"a certificate is not valid yet (card {', '.join(not_yet_valid)}): this "
                   "computer's time is before the certificate's start")
                 if not_yet_valid else
                 B(f"系统时间 {facts.now:%Y-%m-%d} 远早于实际日期",
                   f"the system time {facts.now:%Y-%m-%d} is far in the past"))
        return problem(
            "EP-T01", Status.FAIL, B("系统时钟可能不正确", "The system clock looks wrong"), cause,
            B("请校正日期和时间 (sudo timedatectl set-ntp true 或手动设置); 时间错误会导致签名"
              "失败和报关单打印日期错误",
              "set the right date and time (sudo timedatectl set-ntp true, or by hand); a wrong "
              "clock makes signatures fail and prints wrong dates on declarations"),
            now=facts.now.isoformat())
    if facts.ntp_synchronized is False:
        return problem(
            "EP-T01", Status.WARN, B("系统时钟未与网络时间同步", "The clock is not synchronised"),
            B("时间不准会让证书显示为未生效或已过期", "a drifting clock makes certificates look "
              "not yet valid or expired"),
            B("sudo timedatectl set-ntp true", "sudo timedatectl set-ntp true"),
            now=facts.now.isoformat())
    return ok("EP-T01", B("系统时钟正常", "The system clock looks right"),
              now=facts.now.isoformat())
