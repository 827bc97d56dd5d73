"""The cus-sec_ methods: each turns a request's args into eportd calls and the `Data` list the
official client returns. docs/gateway.md lists them with their shapes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta, timezone
from typing import Any

from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from eport.clients.gateway.daemon_access import DaemonAccess, KeyKind
from eport.clients.gateway.errors import (
    CERT_EXPIRED,
    CERT_NOT_YET_VALID,
    GatewayError,
    bad_arguments,
    signature_invalid,
)
from eport.clients.gateway.protocol import required_text, text_arg
from eport.common import sm2
from eport.common.sm2_cert import certificate_public_point
from eport.protos.v1 import eportd_pb2 as pb

Handler = Callable[[dict[str, Any], DaemonAccess], Awaitable[list[Any]]]

CHINA_STANDARD_TIME = timezone(timedelta(hours=8))
EXPIRY_WARNING_DAYS = 30
# gRPC refuses messages over 4 MiB: bigger data is hashed here and only the digest is sent,
# which is what eportd would sign anyway.
LOCAL_DIGEST_ABOVE = 3 * 1024 * 1024
_DIGEST_LENGTH: dict[KeyKind, int] = {pb.RSA_1024: 20, pb.RSA_2048: 20, pb.SM2: 32, pb.EC_P256: 32}
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_ENT_MODE = {pb.LEGAL_PERSON: "1", pb.OPERATOR: "2", pb.DECLARANT: "3"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_arguments(f"参数 {name} 不是合法的 base64", f"argument {name} is not base64"
                            ) from None


def _digest_arg(text: str, key: KeyKind) -> bytes:
    """A digest given as hex or base64; its length must be what the card's algorithm hashes to."""
    expected = _DIGEST_LENGTH.get(key, 32)
    stripped = text.strip()
    if len(stripped) == 2 * expected and _HEX.match(stripped):
        digest = bytes.fromhex(stripped)
    else:
        digest = _decode_base64(stripped, "inData")
    if len(digest) != expected:
        raise bad_arguments(
            f"摘要长度应为 {expected} 字节 (十六进制或 base64), 实际 {len(digest)} 字节",
            f"the digest must be {expected} bytes (hex or base64) for this card, got "
            f"{len(digest)}")
    return digest


def _signature_out(answer: pb.SignResponse) -> list[Any]:
    # The E-port client returns SM2 (and EC) signatures as the 64 bytes r || s.
    raw = answer.signature_raw_rs or answer.signature
    return [_b64(raw), answer.certificate_number]


def _local_digest(key: KeyKind, data: bytes, certificate_der: bytes) -> bytes:
    if key == pb.SM2:
        return sm2.message_digest(certificate_public_point(certificate_der), data)
    if key == pb.EC_P256:
        return hashlib.sha256(data).digest()
    return hashlib.sha1(data).digest()


def _certificate_arg(text: str) -> bytes:
    raw = text.strip().encode("ascii", "replace")
    if asn1_pem.detect(raw):
        _, _, der = asn1_pem.unarmor(raw)
        return bytes(der)
    return _decode_base64(text, "certDataPEM")


def key_of_certificate(der: bytes) -> KeyKind:
    try:
        public_key = asn1_x509.Certificate.load(der).public_key
        algorithm = public_key.algorithm
        if algorithm == "rsa":
            return pb.RSA_1024 if public_key.bit_size <= 1024 else pb.RSA_2048
        if algorithm == "ec":
            curve = public_key["algorithm"]["parameters"].chosen.native
            return pb.EC_P256 if curve in ("secp256r1", "1.2.840.10045.3.1.7") else pb.SM2
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    raise bad_arguments("certDataPEM 不是可用的 X.509 证书",
                        "certDataPEM is not a usable X.509 certificate")


# ---- environment and PIN ----

async def init_env(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Is a usable card there? Warns as the E-port client does within 30 days of expiry."""
    check = await access.check_certificate((await access.certificate()).der)
    if check.state == pb.EXPIRED:
        raise GatewayError(CERT_EXPIRED, "您的IC卡已过期。请到制卡中心办理证书更新",
                           "Your IC card has expired; renew the certificate at the card centre")
    if check.state == pb.NOT_YET_VALID:
        raise GatewayError(CERT_NOT_YET_VALID, "您的IC卡证书尚未生效。请检查本机时钟",
                           "Your IC card's certificate is not valid yet; check this computer's "
                           "clock")
    if check.state == pb.EXPIRING or 0 <= check.days_left <= EXPIRY_WARNING_DAYS:
        return [f"您的IC卡还有{check.days_left}天到期"]
    return []


async def clear_env(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    await access.logout()
    return []


async def verify_pin(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
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


async def sign_certificate(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [_b64((await access.certificate()).der)]


async def valid_time(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    info = await access.card_info()

    def stamp(moment: Any) -> str:
        return str(moment.ToDatetime(tzinfo=UTC).astimezone(CHINA_STANDARD_TIME)
                   .strftime("%Y%m%d%H%M%S"))

    return [{"szStartTime": stamp(info.not_before), "szEndTime": stamp(info.not_after)}]


# ---- signing and verification ----

async def sign_data(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    data = required_text(args, "inData").encode("utf-8")
    pin = text_arg(args, "passwd", required=False) or ""
    if len(data) > LOCAL_DIGEST_ABOVE:
        key = await access.key_algorithm()
        digest = _local_digest(key, data, (await access.certificate()).der)
        return _signature_out(await access.sign(digest=digest, pin=pin))
    return _signature_out(await access.sign(data=data, pin=pin))


async def sign_digest(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    text = required_text(args, "inData")
    pin = text_arg(args, "passwd", required=False) or ""
    digest = _digest_arg(text, await access.key_algorithm())
    return _signature_out(await access.sign(digest=digest, pin=pin))


async def _verify(args: dict[str, Any], access: DaemonAccess, prehashed: bool) -> list[Any]:
    text = required_text(args, "inData")
    signature = _decode_base64(required_text(args, "signData"), "signData")
    certificate_text = text_arg(args, "certDataPEM", required=False)
    certificate = _certificate_arg(certificate_text) if certificate_text else None
    key = (key_of_certificate(certificate) if certificate is not None
           else await access.key_algorithm())
    if prehashed:
        answer = await access.verify(signature=signature, digest=_digest_arg(text, key),
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
    return [_b64(hashlib.sha1(text.encode("utf-8")).digest())]


async def encode_pem(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [_b64(required_text(args, "inData").encode("utf-8"))]


async def decode_pem(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    raw = _decode_base64(required_text(args, "inData"), "inData")
    try:
        return [raw.decode("utf-8")]
    except UnicodeDecodeError:
        raise bad_arguments("inData 解码后不是 UTF-8 文本",
                            "inData does not decode to UTF-8 text") from None


METHODS: dict[str, Handler] = {
    "SpcInitEnvEx": init_env,
    "SpcClearEnv": clear_env,
    "SpcVerifyPIN": verify_pin,
    "SpcChangePIN": change_pin,
    "SpcGetCardID": _card_field(lambda info: info.card_id),
    "SpcGetCertNo": _card_field(lambda info: info.certificate_number),
    "SpcGetUName": _card_field(lambda info: info.holder_name),
    "SpcGetEntID": _card_field(lambda info: info.customs_code),
    "SpcGetEntName": _card_field(lambda info: info.enterprise_name),
    "SpcGetEntMode": _card_field(lambda info: _ENT_MODE.get(info.kind, "")),
    "SpcGetCardUserInfo": card_user_info,
    "SpcGetSignCert": sign_certificate,
    "SpcGetSignCertAsPEM": sign_certificate,
    "SpcGetValidTimeFromCert": valid_time,
    "SpcSignData": sign_data,
    "SpcSignDataAsPEM": sign_data,
    "SpcSignDataNoHash": sign_digest,
    "SpcSignDataNoHashAsPEM": sign_digest,
    "SpcVerifySignData": verify_data,
    "SpcVerifySignDataNoHash": verify_digest,
    "SpcSHA1Digest": sha1_hex,
    "SpcSHA1DigestAsPEM": sha1_base64,
    "SpcEncodePEM": encode_pem,
    "SpcDecodePEM": decode_pem,
}
# Requests that use the card's key or PIN: logged with the origin that asked.
CARD_SECRET_METHODS = frozenset({
    "SpcVerifyPIN", "SpcChangePIN", "SpcSignData", "SpcSignDataAsPEM", "SpcSignDataNoHash",
    "SpcSignDataNoHashAsPEM"})
