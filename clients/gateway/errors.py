"""The gateway's errors as the E-port client reports them:
`Error: [中文, "Err:Custom<code>", English]`.

The official client's codes are used where they are known (50200, 50070, 51590, 51500, and the
SKF PIN codes 0A0000xx); 516xx and 59999 are ours. docs/gateway.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import grpc

from eport.clients.kit.errors import error_detail_of
from eport.common.failure import EportFailure
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb


class GatewayCode(StrEnum):
    """The E-port client's error codes (`Err:Custom<code>`) the gateway answers with."""

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


# The names the gateway's modules and tests use.
READER_OPEN_FAILED = GatewayCode.READER_OPEN_FAILED
READER_RESET_FAILED = GatewayCode.READER_RESET_FAILED
CARD_INVALID = GatewayCode.CARD_INVALID
BAD_ARGUMENTS = GatewayCode.BAD_ARGUMENTS
PIN_INCORRECT = GatewayCode.PIN_INCORRECT
PIN_LOCKED = GatewayCode.PIN_LOCKED
PIN_INVALID = GatewayCode.PIN_INVALID
NOT_LOGGED_IN = GatewayCode.NOT_LOGGED_IN
CERT_EXPIRED = GatewayCode.CERT_EXPIRED
CERT_NOT_YET_VALID = GatewayCode.CERT_NOT_YET_VALID
CERT_UNTRUSTED = GatewayCode.CERT_UNTRUSTED
SIGNATURE_INVALID = GatewayCode.SIGNATURE_INVALID
INTERNAL = GatewayCode.INTERNAL

_OPEN_FAILED_ZH = "[读卡器底层库]打开读卡器失败"
_RESET_FAILED_ZH = "[读卡器底层库]复位读卡器失败"
_CARD_INVALID_ZH = "[智能卡应用模块]卡片无效,请插入IC卡或者Key"


# The official client's wording has no separate remedy: a remedy, when there is one, is part of
# the sentence. EportFailure wants one; this is it for errors whose sentence already says it.
NO_REMEDY = Bilingual("", "")


@dataclass
class GatewayError(EportFailure):
    """One failed request. `message` begins with the official client's wording for `code`;
    `text` is what the reply carries: the message, then the remedy if there is one."""

    code: str
    message: Bilingual
    remedy: Bilingual = NO_REMEDY

    @property
    def text(self) -> Bilingual:
        return Bilingual(_with_remedy(self.message.zh, self.remedy.zh, "。"),
                         _with_remedy(self.message.en, self.remedy.en, ". "))

    def __str__(self) -> str:
        return f"Err:Custom{self.code} {self.text.en}"

    def error_array(self) -> list[str]:
        return [self.text.zh, f"Err:Custom{self.code}", self.text.en]


def bad_arguments(problem: Bilingual) -> GatewayError:
    return GatewayError(BAD_ARGUMENTS, Bilingual(f"输入参数错误: {problem.zh}",
                                                 f"Invalid arguments: {problem.en}"))


def signature_invalid() -> GatewayError:
    return GatewayError(SIGNATURE_INVALID, Bilingual("验证签名失败: 签名与数据或证书不符",
                                                     "Signature verification failed: the "
                                                     "signature does not match the data or the "
                                                     "certificate"))


def internal_error() -> GatewayError:
    return GatewayError(INTERNAL, Bilingual("网关内部错误,请把 eport-gateway 的日志发给技术支持",
                                            "Internal gateway error; please send eport-gateway's "
                                            "log to support"))


def daemon_unreachable() -> GatewayError:
    return GatewayError(READER_OPEN_FAILED, Bilingual(f"{_OPEN_FAILED_ZH}: 无法连接 "
                                                      "eportd。请启动 eportd (systemctl --user "
                                                      "start eportd.socket),然后运行 eport "
                                                      "doctor 检查",
                                                      "Cannot open the reader: eportd is not "
                                                      "reachable. Start it (systemctl --user "
                                                      "start eportd.socket), then run `eport "
                                                      "doctor`"))


def _with_remedy(head: str, remedy: str, separator: str) -> str:
    return f"{head}{separator}{remedy}" if remedy else head


def _pin_incorrect(detail: pb.ErrorDetail) -> GatewayError:
    tries = detail.tries_left if detail.HasField("tries_left") else 0
    return GatewayError(PIN_INCORRECT, Bilingual(f"口令不正确,还可以重试{tries}次",
                                                 f"Wrong PIN: {tries} "
                                                 f"{'try' if tries == 1 else 'tries'} left; "
                                                 "three wrong PINs lock the card"))


def _last_try_guard() -> GatewayError:
    return GatewayError(
        PIN_INCORRECT,
        Bilingual("口令只剩最后1次重试机会,网关为防止锁卡没有提交口令。请在本机运行 eport pin "
                  "verify 确认口令后再试",
                  "Only one PIN try is left; the gateway did not send the PIN so the card "
                  "cannot be locked from a web page. Run `eport pin verify` on this computer "
                  "to confirm it, then retry"))


def _not_logged_in(expired: bool) -> GatewayError:
    why_zh = "口令会话已因长时间未使用而结束" if expired else "尚未验证口令"
    why_en = ("the PIN session ended after being idle" if expired
              else "the PIN has not been verified")
    return GatewayError(NOT_LOGGED_IN, Bilingual(f"{why_zh}。请先调用 SpcVerifyPIN, 或在 passwd "
                                                 "中给出口令",
                                                 f"Not logged in: {why_en}. Call SpcVerifyPIN "
                                                 "first, or give the PIN in passwd"))


_OPEN_FAILED = Bilingual(_OPEN_FAILED_ZH, "Cannot open the reader")
_RESET_FAILED = Bilingual(_RESET_FAILED_ZH, "Cannot reset the reader")
_CARD_INVALID = Bilingual(_CARD_INVALID_ZH, "Invalid card: insert the IC card or key")
_INVALID_ARGUMENTS = Bilingual("输入参数错误", "Invalid arguments")
_INTERNAL = Bilingual("网关内部错误", "Internal gateway error")

# eportd's reason -> the official client's code and the head of its sentence.
_BY_REASON: dict[int, tuple[GatewayCode, Bilingual]] = {
    pb.SERVICE_NOT_RUNNING: (READER_OPEN_FAILED, _OPEN_FAILED),
    pb.NO_READER: (READER_OPEN_FAILED, _OPEN_FAILED),
    pb.DAEMON_SHUTTING_DOWN: (READER_OPEN_FAILED, _OPEN_FAILED),
    pb.CARD_TIMEOUT: (READER_RESET_FAILED, _RESET_FAILED),
    pb.CARD_ERROR: (READER_RESET_FAILED, _RESET_FAILED),
    pb.SHARING_VIOLATION: (READER_RESET_FAILED, _RESET_FAILED),
    pb.NO_CARD: (CARD_INVALID, _CARD_INVALID),
    pb.CARD_REMOVED: (CARD_INVALID, _CARD_INVALID),
    pb.UNSUPPORTED_CARD: (CARD_INVALID, _CARD_INVALID),
    pb.AMBIGUOUS_CARD: (CARD_INVALID, Bilingual(_CARD_INVALID_ZH, "Several cards are inserted")),
    pb.INVALID_ARGUMENT: (BAD_ARGUMENTS, _INVALID_ARGUMENTS),
    pb.PUK_INCORRECT: (BAD_ARGUMENTS, _INVALID_ARGUMENTS),
    pb.PUK_BLOCKED: (BAD_ARGUMENTS, _INVALID_ARGUMENTS),
    pb.PIN_BLOCKED: (PIN_LOCKED, Bilingual("口令已锁定", "The PIN is blocked")),
    pb.PIN_FORMAT: (PIN_INVALID, Bilingual("口令格式不正确", "The PIN has the wrong format")),
    pb.CERT_EXPIRED: (CERT_EXPIRED, Bilingual("您的IC卡已过期", "Your IC card has expired")),
    pb.CERT_NOT_YET_VALID: (CERT_NOT_YET_VALID,
                            Bilingual("您的IC卡证书尚未生效",
                                      "Your IC card's certificate is not valid yet")),
    pb.CERT_UNTRUSTED: (CERT_UNTRUSTED,
                        Bilingual("证书不受信任", "The certificate is not trusted")),
}


def from_daemon_error(error: grpc.RpcError) -> GatewayError:
    """What eportd said, in the E-port client's terms, with eportd's explanation and remedy."""
    detail = error_detail_of(error)
    if detail is None:
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED):
            return daemon_unreachable()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return GatewayError(READER_RESET_FAILED, Bilingual(f"{_RESET_FAILED_ZH}: "
                                                               "卡片操作超时,请重试",
                                                               "Cannot reset the reader: the "
                                                               "card operation timed out; retry"))
        return internal_error()
    if detail.reason == pb.PIN_INCORRECT:
        return _pin_incorrect(detail)
    if detail.reason == pb.PIN_LAST_ATTEMPT_GUARD:
        return _last_try_guard()
    if detail.reason in (pb.NOT_AUTHENTICATED, pb.SESSION_EXPIRED, pb.UNATTENDED_DISABLED):
        return _not_logged_in(detail.reason == pb.SESSION_EXPIRED)
    code_, head = _BY_REASON.get(detail.reason, (INTERNAL, _INTERNAL))
    # eportd's own sentence says which card and why; the head is the official client's.
    zh = f"{head.zh}: {detail.message_zh}" if detail.message_zh not in ("", head.zh) else head.zh
    en = f"{head.en}: {detail.message_en}" if detail.message_en not in ("", head.en) else head.en
    return GatewayError(code_, Bilingual(zh, en), Bilingual(detail.remedy_zh, detail.remedy_en))
