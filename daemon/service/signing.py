"""Host-side halves of a card signature: what to send to GENERAL AUTHENTICATE, how to shape the
card's answer, and how to verify a signature with the certificate's public key.

PIV RSA keys apply the raw private operation, so the host builds the PKCS#1 v1.5 block
(DigestInfo + padding). P-256 takes the SHA-256 hash. SM2 takes e = SM3(Z || M), Z from the
card's public key and the default user ID (GM/T 0009).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from eport.cardlib.certificates import CardCertificate, KeyKind
from eport.cardlib.token import SignMechanism
from eport.common import sm2
from eport.daemon.service.errors import EportError, Reason


class SignAlgorithm(StrEnum):
    SHA1_WITH_RSA = "SHA1_WITH_RSA"
    SHA256_WITH_RSA = "SHA256_WITH_RSA"
    ECDSA_P256_SHA256 = "ECDSA_P256_SHA256"
    SM2_WITH_SM3 = "SM2_WITH_SM3"


# Old E-port cards (RSA-1024) sign SHA1withRSA; the E-port client does so on them.
DEFAULT_ALGORITHM = {
    KeyKind.RSA_1024: SignAlgorithm.SHA1_WITH_RSA,
    KeyKind.RSA_2048: SignAlgorithm.SHA256_WITH_RSA,
    KeyKind.EC_P256: SignAlgorithm.ECDSA_P256_SHA256,
    KeyKind.SM2: SignAlgorithm.SM2_WITH_SM3,
}
ALGORITHMS_FOR_KEY = {
    KeyKind.RSA_1024: (SignAlgorithm.SHA1_WITH_RSA, SignAlgorithm.SHA256_WITH_RSA),
    KeyKind.RSA_2048: (SignAlgorithm.SHA256_WITH_RSA, SignAlgorithm.SHA1_WITH_RSA),
    KeyKind.EC_P256: (SignAlgorithm.ECDSA_P256_SHA256,),
    KeyKind.SM2: (SignAlgorithm.SM2_WITH_SM3,),
}
# What the token is asked to do with the digest (the PKCS#1 block, if any, is the backend's).
SIGN_MECHANISM = {
    SignAlgorithm.SHA1_WITH_RSA: SignMechanism.RSA_PKCS1_SHA1,
    SignAlgorithm.SHA256_WITH_RSA: SignMechanism.RSA_PKCS1_SHA256,
    SignAlgorithm.ECDSA_P256_SHA256: SignMechanism.ECDSA_P256,
    SignAlgorithm.SM2_WITH_SM3: SignMechanism.SM2,
}
# DER DigestInfo prefixes (RFC 8017 §9.2, note 1).
_DIGEST_INFO = {
    SignAlgorithm.SHA1_WITH_RSA: bytes.fromhex("3021300906052b0e03021a05000414"),
    SignAlgorithm.SHA256_WITH_RSA: bytes.fromhex("3031300d060960864801650304020105000420"),
}
_DIGEST_SIZE = {
    SignAlgorithm.SHA1_WITH_RSA: 20,
    SignAlgorithm.SHA256_WITH_RSA: 32,
    SignAlgorithm.ECDSA_P256_SHA256: 32,
    SignAlgorithm.SM2_WITH_SM3: 32,
}


@dataclass(frozen=True)
class SignInput:
    data: bytes | None = None
    digest: bytes | None = None


@dataclass(frozen=True)
class Signature:
    der_or_pkcs1: bytes  # PKCS#1 v1.5 for RSA; DER SEQUENCE {r, s} for ECDSA and SM2
    raw_rs: bytes  # r || s for ECDSA and SM2; empty for RSA
    algorithm: SignAlgorithm


def choose_algorithm(key: KeyKind, requested: SignAlgorithm | None,
                     possible: tuple[SignAlgorithm, ...] | None = None) -> SignAlgorithm:
    """The algorithm to sign with: the requested one, or the key's default. `possible` is what
    the token can make (CardSnapshot.sign_algorithms): the official E-port client behind the
    remote backend signs RSA only as SHA1withRSA, so its RSA-2048 default is that."""
    offered = ALGORITHMS_FOR_KEY[key] if possible is None else possible
    if requested is None:
        default = DEFAULT_ALGORITHM[key]
        if default in offered or not offered:
            return default
        return offered[0]
    if requested not in ALGORITHMS_FOR_KEY[key]:
        raise EportError(Reason.INVALID_ARGUMENT,
                         f"{requested.value} cannot be made with a {key.value} key")
    if requested not in offered:
        raise EportError(Reason.INVALID_ARGUMENT,
                         f"{requested.value} is not offered by this token (it offers "
                         f"{', '.join(a.value for a in offered)}) / 该设备不支持此签名算法")
    return requested


def digest_of(algorithm: SignAlgorithm, certificate: CardCertificate, request: SignInput
              ) -> bytes:
    """The hash the signature covers (for SM2: e = SM3(Z || M))."""
    if request.digest is not None:
        if len(request.digest) != _DIGEST_SIZE[algorithm]:
            raise EportError(Reason.INVALID_ARGUMENT,
                             f"a {algorithm.value} digest is {_DIGEST_SIZE[algorithm]} bytes, "
                             f"not {len(request.digest)}")
        return request.digest
    data = request.data if request.data is not None else b""
    if algorithm is SignAlgorithm.SHA1_WITH_RSA:
        return hashlib.sha1(data).digest()
    if algorithm is SignAlgorithm.SM2_WITH_SM3:
        assert isinstance(certificate.public_key, tuple)
        return sm2.message_digest(certificate.public_key, data)
    return hashlib.sha256(data).digest()


def shape_signature(algorithm: SignAlgorithm, from_card: bytes) -> Signature:
    if algorithm in _DIGEST_INFO:
        return Signature(from_card, b"", algorithm)
    try:
        r, s = decode_dss_signature(from_card)
    except ValueError:
        raise EportError(Reason.CARD_ERROR, "the card's signature is not DER (r, s)") from None
    return Signature(from_card, r.to_bytes(32, "big") + s.to_bytes(32, "big"), algorithm)


def _rs_of(signature: bytes) -> tuple[int, int] | None:
    if len(signature) == 64:  # r || s, as the E-port client returns SM2 signatures
        return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        return decode_dss_signature(signature)
    except ValueError:
        return None


def verify_signature(algorithm: SignAlgorithm, certificate: CardCertificate, digest: bytes,
                     signature: bytes) -> bool:
    key = certificate.public_key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if algorithm not in _DIGEST_INFO:
                return False
            hash_algorithm: hashes.HashAlgorithm = (
                hashes.SHA1() if algorithm is SignAlgorithm.SHA1_WITH_RSA else hashes.SHA256())
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hash_algorithm))
            return True
        rs = _rs_of(signature)
        if rs is None:
            return False
        if isinstance(key, ec.EllipticCurvePublicKey):
            if algorithm is not SignAlgorithm.ECDSA_P256_SHA256:
                return False
            key.verify(encode_dss_signature(*rs), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return True
        if algorithm is not SignAlgorithm.SM2_WITH_SM3:
            return False
        return sm2.verify_digest(key, digest, *rs)
    except (InvalidSignature, ValueError, sm2.SM2Error):
        return False
