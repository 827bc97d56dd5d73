"""`eport readers`, `eport watch` and `eport card info`."""

from __future__ import annotations

from typing import Any

import click

from eport.clients.kit.context import card_options, command_name, json_option, state
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.output import Output
from eport.clients.kit.views import (
    card_form_name,
    card_kind_name,
    card_view,
    certificate_view,
    event_view,
    pin_view,
    reader_view,
    when,
)
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

EVENT_NAMES = {
    pb.READER_ADDED: Bilingual("读卡器接入", "reader added"),
    pb.READER_REMOVED: Bilingual("读卡器移除", "reader removed"),
    pb.CARD_INSERTED: Bilingual("插入卡片", "card inserted"),
    pb.CARD_REMOVED_EVENT: Bilingual("拔出卡片", "card removed"),
    pb.SERVICE_UP: Bilingual("pcscd 已运行", "pcscd up"),
    pb.SERVICE_DOWN: Bilingual("pcscd 已停止", "pcscd down"),
    pb.SESSION_OPENED: Bilingual("登录会话开始", "session opened"),
    pb.SESSION_CLOSED: Bilingual("登录会话结束", "session closed"),
    pb.SNAPSHOT_COMPLETE: Bilingual("当前状态已列出, 等待变化 (Ctrl-C 退出)",
                                    "current state shown; waiting for changes (Ctrl-C to stop)"),
    pb.CARD_READY: Bilingual("卡片已读取", "card ready"),
}


def pcscd_down() -> CliError:
    return CliError(
        "SERVICE_NOT_RUNNING",
        Bilingual("读卡器服务(pcscd)未运行", "The smart-card service (pcscd) is not running"),
        Bilingual("请启动 pcscd: sudo systemctl start pcscd.socket; 运行 eport doctor 查看详情",
                  "start pcscd (sudo systemctl start pcscd.socket); `eport doctor` tells more"),
        ExitCode.PCSC_UNAVAILABLE)


@click.command("readers")
@json_option
def readers_command() -> None:
    """List the card readers and what is in them."""
    cli = state()
    answer = cli.client.readers()
    if answer.pcsc_state == pb.SERVICE_NOT_RUNNING_STATE:
        raise pcscd_down()
    data = {"pcsc_state": pb.ServiceState.Name(answer.pcsc_state),
            "readers": [reader_view(reader) for reader in answer.readers]}

    def human(out: Output) -> None:
        if not answer.readers:
            out.line(Bilingual("未找到读卡器 (运行 eport doctor 检查驱动)",
                               "No reader found (run `eport doctor` to check drivers)"))
        for reader in answer.readers:
            # The backend first, as a column: a PKCS#11 token or a remote client's key shows
            # as a reader too.
            out.line(f"{reader.backend or 'pcsc':<7} {reader.name}: "
                     f"{out.text(_reader_state(reader))}")

    cli.output.result(command_name(), data, human)


def _reader_state(reader: pb.Reader) -> Bilingual:
    if not reader.card_present:
        return Bilingual("无卡", "no card")
    if reader.exclusive_elsewhere:
        return Bilingual("有卡, 正被其他程序独占", "card held exclusively by another program")
    if reader.error:
        return Bilingual(f"有卡, 无法读取 ({reader.error})", f"card, unreadable ({reader.error})")
    if reader.card_id:
        form = card_form_name(reader.form)
        return Bilingual(f"{form.zh} {reader.card_id}", f"{form.en} {reader.card_id}")
    return Bilingual("有卡, 读取中", "card, being read")


@click.command("watch")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Stop after N events (default: until Ctrl-C).")
@json_option
def watch_command(count: int | None) -> None:
    """Show reader and card events as they happen, until Ctrl-C (JSON: one line per event)."""
    cli = state()
    seen = 0
    try:
        for event in cli.client.watch():
            _show_event(cli.output, event)
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error


def _show_event(out: Output, event: pb.Event) -> None:
    def human(out: Output) -> None:
        stamp = when(event.time)
        clock = stamp.astimezone().strftime("%H:%M:%S") if stamp else "--:--:--"
        name = EVENT_NAMES.get(event.kind, Bilingual(str(event.kind), str(event.kind)))
        where = f" {event.reader}" if event.reader else ""
        card = f" [{event.card.card_id}]" if event.HasField("card") and event.card.card_id \
            else ""
        detail = f" ({event.detail})" if event.detail else ""
        out.line(f"{clock} #{event.sequence} {out.text(name)}{where}{card}{detail}")

    out.result("watch", event_view(event), human)


@click.group("card")
def card_group() -> None:
    """The card: what it is and whose it is."""


@card_group.command("info")
@card_options
@json_option
def card_info_command(reader: str | None, card_id: str | None) -> None:
    """Card kind, holder, enterprise, certificate validity and PIN tries left."""
    cli = state()
    chosen = selector(reader, card_id)
    card = cli.client.card_info(chosen)
    # Ask for the same card again by id: another card inserted meanwhile must not mix in.
    same = pb.CardSelector(card_id=card.card_id)
    certificate = cli.client.certificate(same)
    pins = cli.client.pin_status(same)
    data: dict[str, Any] = {"card": card_view(card), "certificate": certificate_view(certificate),
                            "pin": pin_view(pins)}

    from_certificate = card.eport_data_source == pb.EPORT_CERTIFICATE_PROFILE

    def human(out: Output) -> None:
        unknown = out.text(UNKNOWN)
        kind = unknown if from_certificate else out.text(card_kind_name(card.kind))
        form = card_form_name(card.form)
        out.labelled(Bilingual("卡号", "Card"), f"{card.card_id} ({kind}, "
                  f"{out.text(form)}, {card.reader})")
        out.labelled(Bilingual("持卡人", "Holder"), card.holder_name or unknown)
        out.labelled(Bilingual("企业", "Enterprise"), card.enterprise_name or unknown)
        codes = (f"{unknown} / {unknown}" if from_certificate
                 else f"{card.customs_code} / {card.credit_code}")
        out.labelled(Bilingual("海关编码 / 统一社会信用代码", "Customs code / credit code"), codes)
        if from_certificate:
            out.warn(Bilingual(
                "此卡无电子口岸数据对象, 信息取自证书: 卡类型、海关编码和信用代码未知",
                "no E-port data object on this card; read from its certificate: card kind, "
                "customs code and credit code are unknown (see `eport doctor`)"))
        out.labelled(Bilingual("证书号", "Certificate"), f"{card.certificate_number} "
                  f"({pb.KeyAlgorithm.Name(card.key_algorithm)})")
        show_validity(out, certificate.check)
        out.labelled(Bilingual("口令剩余次数", "PIN tries left"), _tries(pins))

    cli.output.result(command_name(), data, human)


UNKNOWN = Bilingual("未知", "unknown")


def _tries(pins: pb.PinStatus) -> str:
    if pins.pin_blocked:
        return "0 (blocked / 已锁定)"
    return str(pins.pin_tries_left) if pins.pin_tries_left >= 0 else "-"


EXPIRY_WARNING_DAYS = 30


def show_validity(out: Output, check: pb.CertificateCheck) -> None:
    """The validity line, in colour when the certificate needs attention: red once expired
    or not yet valid, yellow within 30 days of expiry (the renewal reminder QP lacked)."""
    until = when(check.not_after)
    date = until.date().isoformat() if until else "?"
    label = Bilingual("有效期至", "Valid until")
    if check.state == pb.EXPIRED:
        out.labelled(label, f"{date}  {out.text(Bilingual('已过期', 'EXPIRED'))}", style="bold red")
        out.warn(Bilingual(f"{check.message_zh}, 请尽快到制卡中心办理证书更新",
                           f"{check.message_en}: renew it at the card centre"))
    elif check.state == pb.NOT_YET_VALID:
        out.labelled(label, f"{date}  {out.text(Bilingual('尚未生效', 'NOT YET VALID'))}",
                  style="bold red")
        out.warn(Bilingual("证书尚未生效: 请检查本机时钟是否正确",
                           "The certificate is not valid yet: check this computer's clock"))
    elif check.state == pb.EXPIRING or 0 <= check.days_left <= EXPIRY_WARNING_DAYS:
        out.labelled(label, f"{date}  ({check.days_left} {out.text(Bilingual('天', 'days'))})",
                  style="bold yellow")
        out.warn(Bilingual(f"您的IC卡还有{check.days_left}天到期, 请及时到制卡中心办理证书更新",
                           f"Your card's certificate expires in {check.days_left} days: renew "
                           "it at the card centre in time"))
    else:
        out.labelled(label, f"{date}  ({check.days_left} {out.text(Bilingual('天', 'days'))})")
