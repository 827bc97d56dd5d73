"""Host-side halves of a card signature: what to send to GENERAL AUTHENTICATE, how to shape the
card's answer, and how to verify a signature with the certificate's public key.

PIV RSA keys apply the raw private operation, so the host builds the PKCS#1 v1.5 block
(DigestInfo + padding). P-256 takes the SHA-256 hash. SM2 takes e = SM3(Z || M), Z from the
card's public key and the default user ID (GM/T 0009).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from eport.cardlib.certificates import CardCertificate, KeyKind
from eport.cardlib.signing_algorithms import (
    SignAlgorithm as SignAlgorithm,  # re-exported: the daemon's callers name it from here
)
from eport.cardlib.signing_algorithms import (
    algorithms_for_key,
    default_algorithm,
    message_digest,
    spec,
)
from eport.common import sm2
from eport.daemon.service.errors import EportError, Reason


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
    offered = algorithms_for_key(key) if possible is None else possible
    if requested is None:
        default = default_algorithm(key)
        if default in offered or not offered:
            return default
        return offered[0]
    if requested not in algorithms_for_key(key):
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
        expected = spec(algorithm).digest_length
        if len(request.digest) != expected:
            raise EportError(Reason.INVALID_ARGUMENT,
                             f"a {algorithm.value} digest is {expected} bytes, "
                             f"not {len(request.digest)}")
        return request.digest
    data = request.data if request.data is not None else b""
    return message_digest(algorithm, data, certificate.public_key)


def shape_signature(algorithm: SignAlgorithm, from_card: bytes) -> Signature:
    if spec(algorithm).is_rsa:
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
            row = spec(algorithm)
            if not row.is_rsa:
                return False
            # PKCS#1 v1.5 verification by re-encoding: what the signature
            # opens to must be the table's DigestInfo followed by the digest.
            opened = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
            return opened == row.digest_info + digest
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
