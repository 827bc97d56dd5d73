"""The data centre's one error type and its mapping to a gRPC status with a rich detail.

Each reason has a default one-sentence message and remedy in Chinese and English; a raise site
may replace them with a more precise sentence (which card is needed, which number is unknown).
`detail` is English context for the log only and never holds payload contents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from eport.common.failure import EportFailure
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

Reason: TypeAlias = pb.DataCenterReason.ValueType


@dataclass(frozen=True)
class Problem:
    """One bad or missing field (the shape of eport.common.customs.document.Problem)."""

    path: str
    code: str
    message: Bilingual
    section: str = ""


@dataclass(frozen=True)
class _Text:
    """A reason's gRPC status code and its default message and remedy."""

    code: grpc.StatusCode
    message: Bilingual
    remedy: Bilingual


_TEXTS: dict[Reason, _Text] = {
    pb.BAD_REQUEST: _Text(
        grpc.StatusCode.INVALID_ARGUMENT,
        Bilingual("请求格式不正确", "The request is malformed"),
        Bilingual("请升级客户端, 或检查请求内容是否为规范 JSON 信封",
                  "Upgrade the client, or check that the payload is a canonical JSON envelope")),
    pb.SIGNATURE_INVALID: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("签名验证失败", "The signature does not verify"),
        Bilingual("请重新签名后再发送; 签名必须用所附证书对应的卡片私钥对原始报文计算",
                  "Sign the request again with the card whose certificate is attached")),
    pb.CERT_UNTRUSTED: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书不是受信任的电子口岸证书",
                  "The certificate is not issued by a trusted E-port CA"),
        Bilingual("请使用电子口岸制卡中心签发的IC卡或IKEY",
                  "Use an IC card or IKEY issued by the E-port card centre")),
    pb.CERT_EXPIRED: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("您的IC卡已过期", "The card's certificate has expired"),
        Bilingual("请到制卡中心办理证书更新后再操作",
                  "Renew the certificate at the card centre, then try again")),
    pb.CERT_NOT_YET_VALID: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书尚未生效", "The card's certificate is not yet valid"),
        Bilingual("请检查本机时间是否正确, 或等到证书生效后再操作",
                  "Check the computer's clock, or wait until the certificate is valid")),
    pb.NOT_EPORT_CARD: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书中没有电子口岸身份信息", "The certificate carries no E-port identity"),
        Bilingual("请插入电子口岸IC卡或IKEY后重新登录",
                  "Insert an E-port IC card or IKEY and log in again")),
    pb.REPLAY: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("该请求已经提交过 (重复的随机数)",
                  "This request was sent before (its nonce was used)"),
        Bilingual("请重新签名生成新的请求; 若是重试, 请先查询单据状态",
                  "Sign a new request; when retrying, query the document's state first")),
    pb.STALE_REQUEST: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("请求的签名时间与数据中心时间相差过大",
                  "The request's signing time is too far from the data centre's clock"),
        Bilingual("请校正本机时间后重新签名发送",
                  "Set the computer's clock right, then sign and send again")),
    pb.WRONG_CARD_KIND: _Text(
        grpc.StatusCode.PERMISSION_DENIED,
        Bilingual("当前卡片无权进行此操作", "This card may not do this"),
        Bilingual("请退出, 插入有权限的卡片后重新登录",
                  "Log out, insert a card that may do it, and log in again")),
    pb.VALIDATION_FAILED: _Text(
        grpc.StatusCode.INVALID_ARGUMENT,
        Bilingual("单据有字段不符合填制规范",
                  "Some fields of the document break the filling rules"),
        Bilingual("请按问题列表修改各字段后重新提交",
                  "Correct each listed field and send it again")),
    pb.DOCUMENT_NOT_FOUND: _Text(
        grpc.StatusCode.NOT_FOUND,
        Bilingual("没有找到该编号的单据", "No document has this number"),
        Bilingual("请检查编号; 只能查看本企业暂存的单据",
                  "Check the number; only your enterprise's documents can be seen")),
    pb.WRONG_STATE: _Text(
        grpc.StatusCode.FAILED_PRECONDITION,
        Bilingual("单据当前状态不允许此操作", "The document's state does not allow this"),
        Bilingual("请先查询单据状态; 已申报或已审结的单据不能修改",
                  "Query the document's state first; declared or cleared documents cannot be "
                  "changed")),
    # Authorization (委托授权, e-book manual §4); raise sites name the missing grant precisely.
    pb.NOT_AUTHORIZED: _Text(
        grpc.StatusCode.PERMISSION_DENIED,
        Bilingual("本企业未获授权代理该企业操作",
                  "Your enterprise is not authorized to act for that enterprise"),
        Bilingual("请授权企业的法人卡进行企业间授权, 再由本企业法人卡进行企业内授权",
                  "Have the principal's legal-person card grant your enterprise, then your "
                  "legal-person card grant your operator cards")),
    pb.UNKNOWN_ENTERPRISE: _Text(
        grpc.StatusCode.NOT_FOUND,
        Bilingual("数据中心没有该海关编码的企业信息",
                  "The data centre does not know an enterprise with this customs code"),
        Bilingual("请检查海关10位编码; 或请该企业用其卡片登录一次, 或导入企业名录",
                  "Check the 10-character customs code; or ask that enterprise to log in once "
                  "with its card, or import the registry")),
    pb.GRANT_NOT_FOUND: _Text(
        grpc.StatusCode.NOT_FOUND,
        Bilingual("没有找到本企业的该授权记录", "Your enterprise has no grant with this id"),
        Bilingual("请先查询授权记录, 再选择要操作的记录",
                  "List the grants first and pick one of them")),
    # Trust as a CA enforces it; raise sites name the CA, the card or the usage concerned.
    pb.CERT_REVOKED: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("该IC卡证书已被吊销", "The card's certificate has been revoked"),
        Bilingual("请使用本企业其他有效的IC卡, 或到制卡中心办理补卡或证书更新",
                  "Use another valid card of your enterprise, or have the card centre issue a "
                  "new one")),
    pb.CERT_IS_CA: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("所附证书是CA证书, 不是IC卡的签名证书",
                  "The attached certificate is a CA certificate, not a card's signing certificate"),
        Bilingual("请插入电子口岸IC卡或IKEY, 用卡内的签名证书签名",
                  "Insert an E-port IC card or IKEY and sign with the certificate on it")),
    pb.CERT_KEY_USAGE: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书的密钥用法不允许签名",
                  "The certificate's key usage does not allow signing"),
        Bilingual("请用IC卡的签名证书签名 (不是加密证书或服务器证书)",
                  "Sign with the card's signing certificate (not an encryption or server "
                  "certificate)")),
    pb.ISSUER_NOT_CA: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("签发该证书的证书不是CA证书",
                  "The certificate was issued by a certificate that is not a CA"),
        Bilingual("请使用电子口岸制卡中心签发的IC卡; 数据中心管理员应从信任目录中移除非CA证书",
                  "Use a card issued by the E-port card centre; the data centre's operator "
                  "should remove non-CA certificates from the trust directory")),
    pb.ISSUER_NOT_VALID: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("签发该卡的CA证书已过期或尚未生效",
                  "The certificate of the CA that issued the card has expired or is not yet valid"),
        Bilingual("请联系数据中心管理员更新信任目录中的CA证书, 或到制卡中心更新IC卡证书",
                  "Ask the data centre's operator to install the CA's current certificate, or "
                  "renew the card's certificate at the card centre")),
    pb.PATH_TOO_LONG: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书路径超出CA允许的长度",
                  "The certificate's path is longer than its CA allows"),
        Bilingual("请使用电子口岸制卡中心直接签发的IC卡",
                  "Use a card issued by the E-port card centre itself")),
    pb.REVOCATION_UNKNOWN: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("数据中心的证书吊销列表已过期, 无法确认该卡未被吊销",
                  "The data centre's revocation list is out of date, so it cannot tell whether "
                  "the card was revoked"),
        Bilingual("请稍后重试并联系数据中心管理员; 管理员应将CA的最新吊销列表放入信任目录",
                  "Try again later and tell the data centre's operator, who should put the CA's "
                  "current CRL in the trust directory")),
    pb.WEAK_ALGORITHM: _Text(
        grpc.StatusCode.UNAUTHENTICATED,
        Bilingual("证书或签名使用了不安全的算法",
                  "The certificate or the signature uses a weak algorithm"),
        Bilingual("SHA-1 只用于 RSA-1024 卡; 请到制卡中心更换证书或升级客户端",
                  "SHA-1 is accepted for RSA-1024 cards only; renew the certificate at the card "
                  "centre or upgrade the client")),
}


class DataCenterError(EportFailure):
    """A refused request: its reason, and the reason's message and remedy unless the raise site
    gives more precise ones (which card is needed, which number is unknown)."""

    def __init__(self, reason: Reason, detail: str = "", *, message: Bilingual | None = None,
                 remedy: Bilingual | None = None, problems: list[Problem] | None = None,
                 required_card_kind: str = "") -> None:
        text = _TEXTS[reason]
        self.reason = reason
        self.code = pb.DataCenterReason.Name(reason)
        self.detail = detail
        self.message = message or text.message
        self.remedy = remedy or text.remedy
        self.problems = problems or []
        self.required_card_kind = required_card_kind
        super().__init__(f"{self.code}: {self.detail or self.message.en}")

    @property
    def status_code(self) -> grpc.StatusCode:
        return _TEXTS[self.reason].code

    def to_detail(self) -> pb.DataCenterErrorDetail:
        return pb.DataCenterErrorDetail(
            reason=self.reason, message_zh=self.message.zh, message_en=self.message.en,
            remedy_zh=self.remedy.zh, remedy_en=self.remedy.en,
            required_card_kind=self.required_card_kind,
            problems=[pb.FieldProblem(path=p.path, code=p.code, message_zh=p.message.zh,
                                      message_en=p.message.en, section=p.section)
                      for p in self.problems])

    def to_status(self) -> status_pb2.Status:
        packed = any_pb2.Any()
        packed.Pack(self.to_detail())
        return status_pb2.Status(
            code=self.status_code.value[0],
            message=f"{self.message.en}. {self.remedy.en} / {self.message.zh}: {self.remedy.zh}",
            details=[packed])


def bad_request(detail: str) -> DataCenterError:
    """BAD_REQUEST naming what is wrong (the detail is about the envelope, never its values)."""
    return DataCenterError(pb.BAD_REQUEST, detail,
                           message=Bilingual(f"请求格式不正确: {detail}",
                                             f"The request is malformed: {detail}"))
