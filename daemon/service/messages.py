"""What each error reason tells a person, in Chinese and English, with a remedy.

The wording follows the FAQ style of the E-port manuals (400 FAQs): the problem, then
what to do. PIN_INCORRECT uses the E-port client's own sentence "口令不正确,还可以重试N次".
"""

from __future__ import annotations

from typing import NamedTuple

from eport.common.messages import CARD_CENTRE_RENEW, CARD_CENTRE_UNBLOCK
from eport.common.text import Bilingual
from eport.daemon.service.errors import EportError, Reason


class Entry(NamedTuple):
    """What a reason tells a person: the problem, then what to do."""

    message: Bilingual
    remedy: Bilingual


_CATALOG: dict[Reason, Entry] = {
    Reason.SERVICE_NOT_RUNNING: Entry(
        Bilingual("读卡器服务(pcscd)未运行", "The smart-card service (pcscd) is not running"),
        Bilingual("请启动 pcscd: sudo systemctl start pcscd.socket; eportd 会在服务恢复后自动重连",
                  "start pcscd (sudo systemctl start pcscd.socket); eportd reconnects by itself "
                  "once "
                  "it is back")),
    Reason.NO_READER: Entry(
        Bilingual("未找到读卡器", "No card reader found"),
        Bilingual("请检查读卡器或 IKEY 是否已插好, 并运行 eport doctor 检查驱动",
                  "check that the reader or IKEY is plugged in and run `eport doctor` to check "
                  "its driver")),
    Reason.NO_CARD: Entry(
        Bilingual("请插入IC卡或者Key", "No card: insert the IC card or the IKEY"),
        Bilingual("请将IC卡插入读卡器(芯片朝上)或插入IKEY后重试",
                  "insert the IC card (chip up) or the IKEY and try again")),
    Reason.CARD_REMOVED: Entry(
        Bilingual("操作过程中卡片被拔出", "The card was removed during the operation"),
        Bilingual("请重新插入卡片后重试; 无需重启任何程序",
                  "insert the card again and retry; nothing needs to be restarted")),
    Reason.UNSUPPORTED_CARD: Entry(
        Bilingual("卡片无效: 不是电子口岸卡", "Invalid card: not an E-port card"),
        Bilingual("请确认插入的是电子口岸IC卡或IKEY",
                  "make sure the card is an E-port IC card or IKEY")),
    Reason.SHARING_VIOLATION: Entry(
        Bilingual("卡片正被其他程序独占使用", "Another program is holding the card exclusively"),
        Bilingual("请关闭其他使用该卡的程序(如其他客户端控件)后重试",
                  "close the other program using the card (another E-port client, for example) "
                  "and "
                  "retry")),
    Reason.PIN_FORMAT: Entry(
        Bilingual("口令格式不正确(电子口岸卡口令为8位数字), 未消耗重试次数",
                  "The PIN has the wrong format (E-port PINs are 8 digits); no try was spent"),
        Bilingual("请检查输入的口令位数后重试",
                  "check the PIN's length and digits and try again")),
    Reason.PIN_INCORRECT: Entry(
        Bilingual("口令不正确,还可以重试{tries}次", "Wrong PIN; tries left: {tries}"),
        Bilingual("请核对口令; 连续输错3次卡片将被锁定",
                  "check the PIN carefully: three wrong PINs in a row lock the card")),
    Reason.PIN_LAST_ATTEMPT_GUARD: Entry(
        Bilingual("口令只剩最后1次重试机会, 为防止锁卡已停止提交",
                  "Only one PIN try is left; the PIN was not sent, to protect the card from "
                  "locking"),
        Bilingual("请确认口令无误后明确允许最后一次尝试, 或到制卡中心重置口令",
                  "if you are sure of the PIN, retry explicitly allowing the last attempt; "
                  "otherwise ask "
                  "the card centre to reset the PIN")),
    Reason.PIN_BLOCKED: Entry(
        Bilingual("口令已锁定", "The PIN is blocked"),
        Bilingual(f"{CARD_CENTRE_UNBLOCK.zh}, 或使用PUK解锁",
                  f"{CARD_CENTRE_UNBLOCK.en}, or unblock it with the PUK")),
    Reason.PUK_INCORRECT: Entry(
        Bilingual("解锁码(PUK)不正确,还可以重试{tries}次", "Wrong PUK; tries left: {tries}"),
        Bilingual("请核对解锁码; 解锁码锁定后只能由制卡中心处理",
                  "check the PUK: once it is blocked only the card centre can help")),
    Reason.PUK_BLOCKED: Entry(
        Bilingual("解锁码(PUK)已锁定", "The PUK is blocked"),
        CARD_CENTRE_UNBLOCK),
    Reason.NOT_AUTHENTICATED: Entry(
        Bilingual("尚未验证口令", "The PIN has not been verified"),
        Bilingual("请先验证口令(eport pin verify)再签名或解密",
                  "verify the PIN first (eport pin verify), then sign or decrypt")),
    Reason.SESSION_EXPIRED: Entry(
        Bilingual("会话已超时, 卡片已退出登录", "The session timed out; the card was logged out"),
        Bilingual("请重新验证口令", "verify the PIN again")),
    Reason.CERT_EXPIRED: Entry(
        Bilingual("您的IC卡已过期", "The card's certificate has expired"),
        CARD_CENTRE_RENEW),
    Reason.CERT_NOT_YET_VALID: Entry(
        Bilingual("证书尚未生效", "The card's certificate is not yet valid"),
        Bilingual("请检查计算机的日期和时间是否正确", "check the computer's date and time")),
    Reason.CERT_UNTRUSTED: Entry(
        Bilingual("证书不受信任: 不是由已配置的根证书签发",
                  "The certificate is not trusted: no "
                  "configured trust anchor issued it"),
        Bilingual("请检查 eportd 的 --trust-anchor 配置或联系制卡中心",
                  "check eportd's --trust-anchor setting or contact the card centre")),
    Reason.CARD_TIMEOUT: Entry(
        Bilingual("卡片无响应", "The card does not respond"),
        Bilingual("请拔出卡片重新插入后重试", "remove the card, insert it again and retry")),
    Reason.CARD_ERROR: Entry(
        Bilingual("卡片操作失败", "The card operation failed"),
        Bilingual("请重试; 如仍失败请运行 eport doctor 并将报告发给技术支持",
                  "retry; if it fails again run `eport doctor` and send the report to support")),
    Reason.INVALID_ARGUMENT: Entry(
        Bilingual("请求参数不正确", "Invalid request"),
        Bilingual("请检查请求参数", "check the request's arguments")),
    Reason.UNATTENDED_DISABLED: Entry(
        Bilingual("未启用无人值守签名", "Unattended signing is not enabled"),
        Bilingual("以 --allow-unattended 启动 eportd 并为该卡启用; 了解其风险后再使用",
                  "start eportd with --allow-unattended and enable it for this card, knowing the "
                  "risk")),
    Reason.AMBIGUOUS_CARD: Entry(
        Bilingual("插有多张卡片, 请指定读卡器或卡号", "Several cards are present: say which one"),
        Bilingual("请用读卡器名称或卡号指定要使用的卡片",
                  "select the card by reader name or card id")),
    Reason.DAEMON_SHUTTING_DOWN: Entry(
        Bilingual("eportd 正在停止", "eportd is shutting down"),
        Bilingual("请稍后重试", "retry once eportd is running again")),
}


# Messages more precise than their reason's, chosen by EportError.variant.
NO_ENVELOPE_KEY = "no_envelope_key"
# SERVICE_NOT_RUNNING of a reader on another backend than pcscd (reader names "remote:…",
# "pkcs11:…", docs/backends.md): backend_variant(reader).
REMOTE_BACKEND = "remote"
PKCS11_BACKEND = "pkcs11"
CIPHERTEXT_NOT_FOR_CARD = "ciphertext_not_for_card"
_VARIANTS: dict[tuple[Reason, str], Entry] = {
    (Reason.SERVICE_NOT_RUNNING, REMOTE_BACKEND): Entry(
        Bilingual("远程电子口岸客户端无法连接", "The remote E-port client cannot be reached"),
        Bilingual("请确认远端计算机上的电子口岸客户端(及其卡片或IKEY)正在运行且网络可达; eportd "
                  "会自动重连",
                  "make sure the E-port client on the remote machine (with its card or key) is "
                  "running "
                  "and reachable; eportd reconnects by itself")),
    (Reason.SERVICE_NOT_RUNNING, PKCS11_BACKEND): Entry(
        Bilingual("PKCS#11 模块不可用", "The PKCS#11 module is not available"),
        Bilingual("请运行 eport doctor 查看模块路径和令牌 (EP-H01/EP-H02); eportd 会自动重试",
                  "run `eport doctor` to see the module path and its tokens (EP-H01/EP-H02); "
                  "eportd "
                  "retries by itself")),
    (Reason.UNSUPPORTED_CARD, NO_ENVELOPE_KEY): Entry(
        Bilingual("该卡没有加密证书(加密密钥), 无法解密",
                  "This card has no envelope (encryption) key and certificate, so it cannot "
                  "decrypt"),
        Bilingual("签名不受影响; 解密需要带加密证书的电子口岸卡(RSA 或 SM2 卡), "
                  "请换用这样的卡或到制卡中心"
                  "更新卡片",
                  "signing is not affected; decryption needs an E-port card with an envelope "
                  "certificate "
                  "(RSA or SM2 cards): use such a card, or have this one renewed at the card "
                  "centre")),
    (Reason.INVALID_ARGUMENT, CIPHERTEXT_NOT_FOR_CARD): Entry(
        Bilingual("密文无法用本卡的加密密钥解密(加密给了其他证书, 或已损坏); 未消耗口令重试次数",
                  "The ciphertext does not decrypt with this card's envelope key (it was "
                  "encrypted to "
                  "another certificate, or damaged); no PIN try was spent"),
        Bilingual("请确认发送方加密时使用的是本卡的加密证书(eport cert export --envelope), "
                  "再重新获取密文",
                  "make sure the sender encrypted to this card's envelope certificate (eport "
                  "cert export "
                  "--envelope), then obtain the ciphertext again")),
}


def backend_variant(reader: str) -> str:
    """The message variant of a reader's backend, from its name's prefix."""
    for variant in (REMOTE_BACKEND, PKCS11_BACKEND):
        if reader.startswith(f"{variant}:"):
            return variant
    return ""


def message_for(error: EportError) -> Entry:
    template, remedy = _VARIANTS.get((error.reason, error.variant)) or _CATALOG[error.reason]
    if error.tries_left is None or error.tries_left < 0:
        # A PKCS#11 token with only flags does not say how many tries are left (cardlib
        # token.CredentialStatus): say so rather than "tries left: -1".
        zh = template.zh.replace(",还可以重试{tries}次", "(该设备不报告剩余重试次数)")
        en = template.en.replace("; tries left: {tries}",
                                 " (this device does not say how many tries are left)")
    else:
        zh = template.zh.replace("{tries}", str(error.tries_left))
        en = template.en.replace("{tries}", str(error.tries_left))
    if error.detail:
        en = f"{en} ({error.detail})"
    if error.status_word is not None:
        zh = f"{zh} (状态字 {error.status_word:04X})"
        en = f"{en} (status word {error.status_word:04X})"
    return Entry(Bilingual(zh, en), remedy)


NOT_YET_VALID_MESSAGE = Bilingual("证书尚未生效", "The certificate is not yet valid")
VALID_MESSAGE = Bilingual("证书有效", "The certificate is valid")


def expiry_message(days_left: int) -> Bilingual:
    """The E-port client's expiry prompt and its English."""
    if days_left < 0:
        return Bilingual("您的IC卡已过期", "Your card's certificate has expired")
    return Bilingual(f"您的IC卡还有{days_left}天到期",
                     f"Your card's certificate expires in {days_left} days")
