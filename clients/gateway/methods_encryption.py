"""The envelope (encryption) methods: the card's second certificate (加密证书), encryption to a
certificate on the host, decryption with the card's envelope key in eportd.

Despite their names, SpcRSAEncrypt and SpcRSADecrypt use the key's own algorithm: PKCS#1 v1.5
on RSA cards, SM2 encryption (GM/T 0003.4, written in the GM/T 0009 ASN.1 form) on SM2 cards.
docs/gateway.md has the shapes and the text encodings.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eport.clients.gateway.arguments import b64, certificate_arg, decode_base64
from eport.clients.gateway.daemon_access import DaemonAccess
from eport.clients.gateway.errors import GatewayError, bad_arguments
from eport.clients.gateway.protocol import required_text, text_arg
from eport.common import envelope_crypto, sm2_encryption
from eport.common.text import Bilingual

# Ciphertexts are the plaintext plus at most about 100 bytes (SM2) or exactly the modulus (RSA).
MAX_CIPHERTEXT_BYTES = sm2_encryption.MAX_PLAINTEXT_BYTES + 1024


async def envelope_certificate(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    return [b64((await access.envelope_certificate()).der)]


def _key_to_encrypt_to(certificate: bytes, given: bool) -> envelope_crypto.EnvelopeKey:
    try:
        return envelope_crypto.envelope_key(certificate)
    except envelope_crypto.EnvelopeError as error:
        zh, en = (("certData 的证书", "the certificate of certData") if given
                  else ("卡的加密证书", "the card's envelope certificate"))
        raise bad_arguments(Bilingual(f"{zh}不能用于加密 ({error})",
                                      f"{en} cannot be encrypted to: {error}")) from None


def _check_plaintext_size(key: envelope_crypto.EnvelopeKey, plaintext: bytes) -> None:
    limit = key.max_plaintext_bytes
    if len(plaintext) > limit:
        raise bad_arguments(Bilingual(f"inData 为 {len(plaintext)} 字节 (UTF-8), "
                                      f"超过此证书一次可加密的 {limit} 字节",
                                      f"inData is {len(plaintext)} bytes (UTF-8), more than the "
                                      f"{limit} bytes this certificate can encrypt at once"))


async def encrypt(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Encrypt inData (text, its UTF-8 bytes) to certData, or to the card's envelope
    certificate. Only the public key is used: no PIN, so passwd is accepted and not used."""
    plaintext = required_text(args, "inData").encode("utf-8")
    if not plaintext:
        raise bad_arguments(Bilingual("inData 不能为空", "inData must not be empty"))
    text_arg(args, "passwd", required=False)  # checked for its type only
    certificate_text = text_arg(args, "certData", required=False)
    if certificate_text:
        key = _key_to_encrypt_to(certificate_arg(certificate_text, "certData"), given=True)
    else:
        key = _key_to_encrypt_to((await access.envelope_certificate()).der, given=False)
    _check_plaintext_size(key, plaintext)
    # SM2 encryption is pure Python (about a millisecond per kilobyte): off the event loop.
    ciphertext = await asyncio.to_thread(envelope_crypto.encrypt_to_key, key, plaintext)
    return [b64(ciphertext)]


async def decrypt(args: dict[str, Any], access: DaemonAccess) -> list[Any]:
    """Decrypt inData (base64) with the card's envelope key; the plaintext comes back base64
    (it is bytes: SpcDecodePEMAsString turns it into text)."""
    text = required_text(args, "inData")
    if len(text) > 2 * MAX_CIPHERTEXT_BYTES:
        raise _ciphertext_too_long(len(text) * 3 // 4)
    ciphertext = decode_base64(text, "inData")
    if not ciphertext:
        raise bad_arguments(Bilingual("inData 不能为空", "inData must not be empty"))
    if len(ciphertext) > MAX_CIPHERTEXT_BYTES:
        raise _ciphertext_too_long(len(ciphertext))
    pin = text_arg(args, "passwd", required=False) or ""
    answer = await access.decrypt(ciphertext, pin)
    return [b64(answer.plaintext)]


def _ciphertext_too_long(size: int) -> GatewayError:
    return bad_arguments(Bilingual(f"inData 约 {size} 字节, 超过密文上限 {MAX_CIPHERTEXT_BYTES} "
                                   "字节",
                                   f"inData is about {size} bytes, above the ciphertext limit of "
                                   f"{MAX_CIPHERTEXT_BYTES}"))
