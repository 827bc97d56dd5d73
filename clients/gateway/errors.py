"""The gateway's errors as the E-port client reports them:
`Error: [中文, "Err:Custom<code>", English]`.

The official client's codes are used where they are known (50200, 50070, 51590, 51500, and the
SKF PIN codes 0A0000xx); 516xx and 59999 are ours. docs/gateway.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from eport.clients.cli.errors import error_detail_of
from eport.protos.v1 import eportd_pb2 as pb

READER_OPEN_FAILED = "50200"
READER_RESET_FAILED = "50070"
CARD_INVALID = "51590"
BAD_ARGUMENTS = "51500"
PIN_INCORRECT = "0A000024"
PIN_LOCKED = "0A000025"
PIN_INVALID = "0A000026"
NOT_LOGGED_IN = "0A00002D"
CERT_EXPIRED = "51610"
CERT_NOT_YET_VALID = "51611"
CERT_UNTRUSTED = "51612"
SIGNATURE_INVALID = "51620"
INTERNAL = "59999"

_OPEN_FAILED_ZH = "[读卡器底层库]打开读卡器失败"
_RESET_FAILED_ZH = "[读卡器底层库]复位读卡器失败"
_CARD_INVALID_ZH = "[智能卡应用模块]卡片无效,请插入IC卡或者Key"


@dataclass
class GatewayError(Exception):
    """One failed request. `zh` begins with the official client's wording for `code`."""

    code: str
    zh: str
    en: str

    def __str__(self) -> str:
        return f"Err:Custom{self.code} {self.en}"

    def error_array(self) -> list[str]:
        return [self.zh, f"Err:Custom{self.code}", self.en]


def bad_arguments(zh: str, en: str) -> GatewayError:
    return GatewayError(BAD_ARGUMENTS, f"输入参数错误: {zh}", f"Invalid arguments: {en}")


def signature_invalid() -> GatewayError:
    return GatewayError(SIGNATURE_INVALID, "验证签名失败: 签名与数据或证书不符",
                        "Signature verification failed: the signature does not match the data "
                        "or the certificate")


def internal_error() -> GatewayError:
    return GatewayError(INTERNAL, "网关内部错误,请把 eport-gateway 的日志发给技术支持",
                        "Internal gateway error; please send eport-gateway's log to support")


def daemon_unreachable() -> GatewayError:
    return GatewayError(
        READER_OPEN_FAILED,
        f"{_OPEN_FAILED_ZH}: 无法连接 eportd。请启动 eportd (systemctl --user start eportd.socket),"
        "然后运行 eport doctor 检查",
        "Cannot open the reader: eportd is not reachable. Start it (systemctl --user start "
        "eportd.socket), then run `eport doctor`")


def _with_remedy(head: str, remedy: str, separator: str) -> str:
    return f"{head}{separator}{remedy}" if remedy else head


def _pin_incorrect(detail: pb.ErrorDetail) -> GatewayError:
    tries = detail.tries_left if detail.HasField("tries_left") else 0
    return GatewayError(
        PIN_INCORRECT, f"口令不正确,还可以重试{tries}次",
        f"Wrong PIN: {tries} {'try' if tries == 1 else 'tries'} left; three wrong PINs lock "
        "the card")


def _last_try_guard() -> GatewayError:
    return GatewayError(
        PIN_INCORRECT,
        "口令只剩最后1次重试机会,网关为防止锁卡没有提交口令。请在本机运行 eport pin verify 确认口令"
        "后再试",
        "Only one PIN try is left; the gateway did not send the PIN so the card cannot be locked "
        "from a web page. Run `eport pin verify` on this computer to confirm it, then retry")


def _not_logged_in(expired: bool) -> GatewayError:
    why_zh = "口令会话已因长时间未使用而结束" if expired else "尚未验证口令"
    why_en = ("the PIN session ended after being idle" if expired
              else "the PIN has not been verified")
    return GatewayError(
        NOT_LOGGED_IN, f"{why_zh}。请先调用 SpcVerifyPIN, 或在 passwd 中给出口令",
        f"Not logged in: {why_en}. Call SpcVerifyPIN first, or give the PIN in passwd")


_BY_REASON: dict[int, tuple[str, str, str]] = {
    pb.SERVICE_NOT_RUNNING: (READER_OPEN_FAILED, _OPEN_FAILED_ZH, "Cannot open the reader"),
    pb.NO_READER: (READER_OPEN_FAILED, _OPEN_FAILED_ZH, "Cannot open the reader"),
    pb.DAEMON_SHUTTING_DOWN: (READER_OPEN_FAILED, _OPEN_FAILED_ZH, "Cannot open the reader"),
    pb.CARD_TIMEOUT: (READER_RESET_FAILED, _RESET_FAILED_ZH, "Cannot reset the reader"),
    pb.CARD_ERROR: (READER_RESET_FAILED, _RESET_FAILED_ZH, "Cannot reset the reader"),
    pb.SHARING_VIOLATION: (READER_RESET_FAILED, _RESET_FAILED_ZH, "Cannot reset the reader"),
    pb.NO_CARD: (CARD_INVALID, _CARD_INVALID_ZH, "Invalid card: insert the IC card or key"),
    pb.CARD_REMOVED: (CARD_INVALID, _CARD_INVALID_ZH, "Invalid card: insert the IC card or key"),
    pb.UNSUPPORTED_CARD: (CARD_INVALID, _CARD_INVALID_ZH,
                          "Invalid card: insert the IC card or key"),
    pb.AMBIGUOUS_CARD: (CARD_INVALID, _CARD_INVALID_ZH, "Several cards are inserted"),
    pb.INVALID_ARGUMENT: (BAD_ARGUMENTS, "输入参数错误", "Invalid arguments"),
    pb.PUK_INCORRECT: (BAD_ARGUMENTS, "输入参数错误", "Invalid arguments"),
    pb.PUK_BLOCKED: (BAD_ARGUMENTS, "输入参数错误", "Invalid arguments"),
    pb.PIN_BLOCKED: (PIN_LOCKED, "口令已锁定", "The PIN is blocked"),
    pb.PIN_FORMAT: (PIN_INVALID, "口令格式不正确", "The PIN has the wrong format"),
    pb.CERT_EXPIRED: (CERT_EXPIRED, "您的IC卡已过期", "Your IC card has expired"),
    pb.CERT_NOT_YET_VALID: (CERT_NOT_YET_VALID, "您的IC卡证书尚未生效",
                            "Your IC card's certificate is not valid yet"),
    pb.CERT_UNTRUSTED: (CERT_UNTRUSTED, "证书不受信任", "The certificate is not trusted"),
}


def from_daemon_error(error: grpc.RpcError) -> GatewayError:
    """What eportd said, in the E-port client's terms, with eportd's explanation and remedy."""
    detail = error_detail_of(error)
    if detail is None:
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED):
            return daemon_unreachable()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return GatewayError(READER_RESET_FAILED, f"{_RESET_FAILED_ZH}: 卡片操作超时,请重试",
                                "Cannot reset the reader: the card operation timed out; retry")
        return internal_error()
    if detail.reason == pb.PIN_INCORRECT:
        return _pin_incorrect(detail)
    if detail.reason == pb.PIN_LAST_ATTEMPT_GUARD:
        return _last_try_guard()
    if detail.reason in (pb.NOT_AUTHENTICATED, pb.SESSION_EXPIRED, pb.UNATTENDED_DISABLED):
        return _not_logged_in(detail.reason == pb.SESSION_EXPIRED)
    code_, head_zh, head_en = _BY_REASON.get(
        detail.reason, (INTERNAL, "网关内部错误", "Internal gateway error"))
    # eportd's own sentence says which card and why; the head is the official client's.
    zh = f"{head_zh}: {detail.message_zh}" if detail.message_zh not in ("", head_zh) else head_zh
    en = f"{head_en}: {detail.message_en}" if detail.message_en not in ("", head_en) else head_en
    return GatewayError(code_, _with_remedy(zh, detail.remedy_zh, "。"),
                        _with_remedy(en, detail.remedy_en, ". "))
