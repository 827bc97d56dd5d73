"""The cus-sec_ methods: each turns a request's args into eportd calls and the `Data` list the
official client returns. docs/gateway.md lists them with their shapes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from eport.cardlib.signing_algorithms import SignAlgorithm, message_digest
from eport.clients.gateway import methods_encryption
from eport.clients.gateway.arguments import (
    b64,
    certificate_arg,
    certificate_validity,
    decode_base64,
    digest_arg,
    key_of_certificate,
)
from eport.clients.gateway.daemon_access import DaemonAccess, KeyKind, signing_algorithm
from eport.clients.gateway.envelope_guard import refuse_datacenter_envelope
from eport.clients.gateway.errors import (
    CERT_EXPIRED,
    CERT_NOT_YET_VALID,
    GatewayError,
    bad_arguments,
    signature_invalid,
)
from eport.clients.gateway.protocol import required_text, text_arg
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

Handler = Callable[[dict[str, Any], DaemonAccess], Awaitable[list[Any]]]

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
EXPIRY_WARNING_DAYS = 30
# gRPC refuses messages over 4 MiB: bigger data is hashed here and only the digest is sent,
# which is what eportd would sign anyway.
LOCAL_DIGEST_ABOVE = 3 * 1024 * 1024
MAX_PRIORITY_CHARACTERS = 256
_ENT_MODE = {pb.LEGAL_PERSON: "1", pb.OPERATOR: "2", pb.DECLARANT: "3"}
_CARD_FORM = {pb.IC_CARD: "IC", pb.IKEY: "IKEY"}
_KEY_NAME = {pb.RSA_1024: "RSA1024", pb.RSA_2048: "RSA2048", pb.SM2: "SM2", pb.EC_P256: "P256"}

_digest_arg = digest_arg  # the name the unit tests know


def _signature_out(answer: pb.SignResponse) -> list[Any]:
    # The E-port client returns SM2 (and EC) signatures as the 64 bytes r || s.
    raw = answer.signature_raw_rs or answer.signature
    return [b64(raw), answer.certificate_number]


def _local_digest(key: KeyKind, data: bytes, certificate_der: bytes) -> bytes:
    """What eportd would sign for `data` with the gateway's algorithm (SHA-1 for a key this
    gateway does not know: eportd then refuses the digest's length)."""
    algorithm = signing_algorithm(key) or SignAlgorithm.SHA1_WITH_RSA
    return message_digest(algorithm, data, certificate_der)


def _stamp(moment: datetime) -> str:
    """yyyyMMddHHmmss in China Standard Time, as the E-port client writes times."""
    return moment.astimezone(CHINA_STANDARD_TIME).strftime("%Y%m%d%H%M%S")


# ---- environment and PIN ----

async def set_init_env_priority(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Our reading (docs/gateway.md, "Our readings"): the official client chooses which kind of
    crypto device to open first. eportd chooses the card here (the one inserted, or --reader),
    so the priority is checked for its type and has no effect."""
    value = args.get("szInitEnvPriority")
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise bad_arguments(Bilingual("参数 szInitEnvPriority 应为字符串",
                                      "argument szInitEnvPriority must be a string"))
    if isinstance(value, str) and len(value) > MAX_PRIORITY_CHARACTERS:
        raise bad_arguments(Bilingual(f"参数 szInitEnvPriority 超过 {MAX_PRIORITY_CHARACTERS} "
                                      "个字符",
                                      "argument szInitEnvPriority is longer than "
                                      f"{MAX_PRIORITY_CHARACTERS} characters"))
    return []


async def init_env(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Is a usable card there? Warns as the E-port client does within 30 days of expiry."""
    check = await access.check_certificate((await access.certificate()).der)
    if check.state == pb.EXPIRED:
        raise GatewayError(CERT_EXPIRED, Bilingual("您的IC卡已过期。请到制卡中心办理证书更新",
                                                   "Your IC card has expired; renew the "
                                                   "certificate at the card centre"))
    if check.state == pb.NOT_YET_VALID:
        raise GatewayError(CERT_NOT_YET_VALID, Bilingual("您的IC卡证书尚未生效。请检查本机时钟",
                                                         "Your IC card's certificate is not "
                                                         "valid yet; check this computer's clock"))
    if check.state == pb.EXPIRING or 0 <= check.days_left <= EXPIRY_WARNING_DAYS:
        return [f"您的IC卡还有{check.days_left}天到期"]
    return []


async def clear_env(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    await access.logout()
    return []


async def verify_pin(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """SpcVerifyPIN, and SpcVerifyPINAll: the official client's "All" variant opens and closes
    the card around the verification itself; eportd does that for every operation, so both
    verify the PIN and leave eportd's PIN session open."""
    await access.verify_pin(required_text(args, "passwd"))
    return []


async def change_pin(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    old_pin, new_pin = required_text(args, "oldPin"), required_text(args, "newPin")
    await access.change_pin(old_pin, new_pin)
    return []


# ---- card and certificate ----

def _card_field(read: Callable[[pb.CardInfo], str]) -> Handler:
    async def handler(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
        return [read(await access.card_info())]
    return handler


async def card_user_info(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    info = await access.card_info()
    return [{"szCardID": info.card_id, "szUserName": info.holder_name,
             "szEntID": info.customs_code, "szEntName": info.enterprise_name,
             "szCreditCode": info.credit_code, "szCertNo": info.certificate_number,
             "szCardType": _ENT_MODE.get(info.kind, "")}]


async def _attach_info_text(access: DaemonAccess) -> str:
    """Our reading of the "additional information the RA wrote" (统一RA写入的附加信息): the E-port
    profile the card centre wrote to the card, as one line of JSON."""
    info = await access.card_info()
    return json.dumps({
        "szCardID": info.card_id, "szCertNo": info.certificate_number,
        "szEntID": info.customs_code, "szEntName": info.enterprise_name,
        "szCreditCode": info.credit_code, "szUserName": info.holder_name,
        "szCardType": _ENT_MODE.get(info.kind, ""), "szCardForm": _CARD_FORM.get(info.form, ""),
        "szAlgorithm": _KEY_NAME.get(info.key_algorithm, ""),
        "szStartTime": _stamp(info.not_before.ToDatetime(tzinfo=UTC)),
        "szEndTime": _stamp(info.not_after.ToDatetime(tzinfo=UTC))},
        ensure_ascii=False, separators=(",", ":"))


async def card_attach_info(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [await _attach_info_text(access)]


async def card_attach_info_base64(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [b64((await _attach_info_text(access)).encode("utf-8"))]


async def sign_certificate(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [b64((await access.certificate()).der)]


async def valid_time(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """The validity of `cert` (base64 DER or PEM) when given, else of the card's certificate."""
    certificate_text = text_arg(args, "cert", required=False)
    if certificate_text:
        validity = certificate_validity(certificate_arg(certificate_text, "cert"), "cert")
        start, end = validity.not_before, validity.not_after
    else:
        info = await access.card_info()
        start = info.not_before.ToDatetime(tzinfo=UTC)
        end = info.not_after.ToDatetime(tzinfo=UTC)
    return [{"szStartTime": _stamp(start), "szEndTime": _stamp(end)}]


# ---- signing and verification ----

def _pin_arg(args: dict[str, Any]) -> str:
    return text_arg(args, "passwd", required=False) or ""


async def _sign_bytes(data: bytes, pin: str, access: DaemonAccess, method: str) -> list[Any]:
    """Sign data as the E-port client does, unless it is a data-centre request envelope."""
    refuse_datacenter_envelope(data, access.allow_envelope_signing, method)
    if len(data) > LOCAL_DIGEST_ABOVE:
        key = await access.key_algorithm()
        digest = _local_digest(key, data, (await access.certificate()).der)
        return _signature_out(await access.sign(digest=digest, pin=pin))
    return _signature_out(await access.sign(data=data, pin=pin))


async def sign_data(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    data = required_text(args, "inData").encode("utf-8")
    return await _sign_bytes(data, _pin_arg(args), access, "SpcSignData")


async def sign_base64_data(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """SpcSignPemDataAsPem: inData is base64 ("PEM"); the bytes it encodes are signed."""
    data = decode_base64(required_text(args, "inData"), "inData")
    return await _sign_bytes(data, _pin_arg(args), access, "SpcSignPemDataAsPem")


async def sign_random(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Our reading (docs/gateway.md, "Our readings"): the Single Window login signs its server
    random either with SpcSignRandom{random, passwd} or with SpcVerifyPIN followed by
    SpcSignPemDataAsPem{inData: random}; both must give what the server checks, so `random`
    is base64 and its bytes are signed, with passwd verified first."""
    random = required_text(args, "random")
    if not random.strip():
        raise bad_arguments(Bilingual("参数 random 不能为空",
                                      "argument random must not be empty"))
    data = decode_base64(random, "random")
    return await _sign_bytes(data, _pin_arg(args), access, "SpcSignRandom")


async def sign_digest(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    # A digest cannot be inspected for a data-centre envelope (docs/gateway.md says so).
    text = required_text(args, "inData")
    pin = _pin_arg(args)
    digest = digest_arg(text, await access.key_algorithm())
    return _signature_out(await access.sign(digest=digest, pin=pin))


async def _verify(args: dict[str, Any], access: DaemonAccess, prehashed: bool) -> list[Any]:
    text = required_text(args, "inData")
    signature = decode_base64(required_text(args, "signData"), "signData")
    certificate_text = text_arg(args, "certDataPEM", required=False)
    certificate = certificate_arg(certificate_text, "certDataPEM") if certificate_text else None
    key = (key_of_certificate(certificate) if certificate is not None
           else await access.key_algorithm())
    if prehashed:
        answer = await access.verify(signature=signature, digest=digest_arg(text, key),
                                     certificate=certificate, key=key)
    else:
        answer = await access.verify(signature=signature, data=text.encode("utf-8"),
                                     certificate=certificate, key=key)
    if not answer.valid:
        raise signature_invalid()
    return []


async def verify_data(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return await _verify(args, access, prehashed=False)


async def verify_digest(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return await _verify(args, access, prehashed=True)


# ---- no card needed ----

async def sha1_hex(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    text = required_text(args, "szInfo", "inData")
    return [hashlib.sha1(text.encode("utf-8")).hexdigest().upper()]


async def sha1_base64(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    text = required_text(args, "szInfo", "inData")
    return [b64(hashlib.sha1(text.encode("utf-8")).digest())]


async def encode_pem(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [b64(required_text(args, "inData").encode("utf-8"))]


async def decode_pem(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """SpcDecodePEM and SpcDecodePEMAsString: the text that the base64 inData encodes."""
    raw = decode_base64(required_text(args, "inData"), "inData")
    try:
        return [raw.decode("utf-8")]
    except UnicodeDecodeError:
        raise bad_arguments(Bilingual("inData 解码后不是 UTF-8 文本",
                                      "inData does not decode to UTF-8 text")) from None


METHODS: dict[str, Handler] = {
    "SpcSetInitEnvPriority": set_init_env_priority,
    "SpcInitEnvEx": init_env,
    "SpcClearEnv": clear_env,
    "SpcVerifyPIN": verify_pin,
    "SpcVerifyPINAll": verify_pin,
    "SpcChangePIN": change_pin,
    "SpcGetCardAttachInfo": card_attach_info,
    "SpcGetCardAttachInfoAsPEM": card_attach_info_base64,
    "SpcGetCardID": _card_field(lambda info: info.card_id),
    "SpcGetCertNo": _card_field(lambda info: info.certificate_number),
    "SpcGetUName": _card_field(lambda info: info.holder_name),
    "SpcGetEntID": _card_field(lambda info: info.customs_code),
    "SpcGetEntName": _card_field(lambda info: info.enterprise_name),
    "SpcGetEntMode": _card_field(lambda info: _ENT_MODE.get(info.kind, "")),
    "SpcGetCardUserInfo": card_user_info,
    "SpcGetSignCert": sign_certificate,
    "SpcGetSignCertAsPEM": sign_certificate,
    "SpcGetEnvCert": methods_encryption.envelope_certificate,
    "SpcGetEnvCertAsPEM": methods_encryption.envelope_certificate,
    "SpcGetValidTimeFromCert": valid_time,
    "SpcSignData": sign_data,
    "SpcSignDataAsPEM": sign_data,
    "SpcSignPemDataAsPem": sign_base64_data,  # sic: the page library's spelling
    "SpcSignDataNoHash": sign_digest,
    "SpcSignDataNoHashAsPEM": sign_digest,
    "SpcSignRandom": sign_random,
    "SpcVerifySignData": verify_data,
    "SpcVerifySignDataNoHash": verify_digest,
    "SpcSHA1Digest": sha1_hex,
    "SpcSHA1DigestAsPEM": sha1_base64,
    "SpcEncodePEM": encode_pem,
    "SpcDecodePEM": decode_pem,
    "SpcDecodePEMAsString": decode_pem,
    "SpcRSAEncrypt": methods_encryption.encrypt,
    "SpcRSADecrypt": methods_encryption.decrypt,
}
# Requests that use the card's key or PIN: logged with the origin that asked.
CARD_SECRET_METHODS = frozenset({
    "SpcVerifyPIN", "SpcVerifyPINAll", "SpcChangePIN", "SpcSignData", "SpcSignDataAsPEM",
    "SpcSignPemDataAsPem", "SpcSignDataNoHash", "SpcSignDataNoHashAsPEM", "SpcSignRandom",
    "SpcRSADecrypt"})
