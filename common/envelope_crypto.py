"""Encrypting to an envelope certificate (加密证书) and the host's half of the card's decryption.

E-port cards carry a second key pair for encryption beside the signing one; the simulated card
keeps it in PIV slot 9D (key management) with its certificate in object 5FC10B.

Forms, for RSA keys and for SM2 keys:
- produced: RSA PKCS#1 v1.5 (RFC 8017 §7.2), exactly the modulus size; SM2 the GM/T 0009 ASN.1
  SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING (32), ciphertext OCTET STRING }, which is
  what OpenSSL 3's `openssl pkeyutl -encrypt` writes;
- accepted for decryption: RSA PKCS#1 v1.5; SM2 that ASN.1 form and the raw C1 || C3 || C2
  (04 || x || y || SM3 hash || ciphertext) of GM/T 0003.4-2012.
P-256 certificates are refused: the simulated P-256 cards carry no envelope key.

The card does only the private-key step: for RSA the raw c^d mod n of the ciphertext block, for
SM2 the point d·C1. Removing the PKCS#1 padding and the SM2 KDF, C2 and C3 check happen here, on
the host, so a card answers the same for a good and a bad ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from eport.common import sm2, sm2_encryption
from eport.common.failure import EportFailure
from eport.common.sm2_cert import certificate_public_point

_PKCS1_OVERHEAD = 11  # 00 02, at least 8 nonzero padding bytes, 00


class EnvelopeError(EportFailure, ValueError):
    """Something about an envelope (certificate, plaintext or ciphertext) that does not fit;
    the message is English and says what."""

    code = "ENVELOPE_CRYPTO"


class UnsuitableCertificateError(EnvelopeError):
    """Not a certificate, or its key cannot be encrypted to."""


class PlaintextSizeError(EnvelopeError):
    """The plaintext is empty (SM2) or longer than the key takes."""


class CiphertextDoesNotDecryptError(EnvelopeError):
    """Not a ciphertext for this key: wrong length or form, another key's, or damaged.
    `detail` is the reason alone, without the sentence around it."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the ciphertext does not decrypt with this card's envelope key "
                         f"({detail})")
        self.detail = detail


class CiphertextForm(StrEnum):
    RSA_PKCS1_V15 = "RSA_PKCS1_V15"
    SM2_ASN1 = "SM2_ASN1"
    SM2_C1C3C2 = "SM2_C1C3C2"


@dataclass(frozen=True)
class RsaEnvelopeKey:
    public_key: rsa.RSAPublicKey

    @property
    def modulus_bytes(self) -> int:
        return (self.public_key.key_size + 7) // 8

    @property
    def max_plaintext_bytes(self) -> int:
        return self.modulus_bytes - _PKCS1_OVERHEAD


@dataclass(frozen=True)
class Sm2EnvelopeKey:
    point: sm2.Point

    @property
    def max_plaintext_bytes(self) -> int:
        return sm2_encryption.MAX_PLAINTEXT_BYTES


EnvelopeKey = RsaEnvelopeKey | Sm2EnvelopeKey


def _load_certificate(certificate: bytes) -> x509.Certificate:
    try:
        if certificate.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(certificate)
        return x509.load_der_x509_certificate(certificate)
    except ValueError:
        raise UnsuitableCertificateError("not an X.509 certificate (DER or PEM)") from None


def _check_key_usage(parsed: x509.Certificate, allowed: tuple[str, ...]) -> None:
    """Refuse a certificate whose keyUsage limits its key to other purposes (a signing
    certificate, typically): what is encrypted to it could never be decrypted by the card's
    envelope key. A certificate without keyUsage is not restricted (RFC 5280 §4.2.1.3)."""
    try:
        usage = parsed.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not any(getattr(usage, name) for name in allowed):
        raise UnsuitableCertificateError(
            "the certificate is not for encryption (its keyUsage has none of "
            f"{', '.join(allowed)}); use the card's envelope certificate"
        )


def envelope_key(certificate: bytes) -> EnvelopeKey:
    """The encryption key of a DER (or PEM) certificate; UnsuitableCertificateError if none."""
    parsed = _load_certificate(certificate)
    try:
        key = parsed.public_key()
    except (UnsupportedAlgorithm, ValueError):
        key = None  # cryptography parses SM2 certificates but cannot use their keys
    if isinstance(key, rsa.RSAPublicKey):
        _check_key_usage(parsed, ("key_encipherment", "data_encipherment"))
        return RsaEnvelopeKey(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsuitableCertificateError(
            f"the certificate's key is on curve {key.curve.name}; only RSA and SM2 keys "
            "can be encrypted to"
        )
    try:
        point = certificate_public_point(parsed.public_bytes(serialization.Encoding.DER))
    except sm2.SM2Error:
        raise UnsuitableCertificateError(
            "the certificate's key is neither RSA nor SM2, so it cannot be encrypted to"
        ) from None
    _check_key_usage(parsed, ("key_encipherment", "data_encipherment", "key_agreement"))
    return Sm2EnvelopeKey(point)


def encrypt_to_key(key: EnvelopeKey, plaintext: bytes) -> bytes:
    if isinstance(key, RsaEnvelopeKey):
        if len(plaintext) > key.max_plaintext_bytes:
            raise PlaintextSizeError(
                f"the plaintext is {len(plaintext)} bytes; RSA-{key.public_key.key_size} with "
                f"PKCS#1 v1.5 takes at most {key.max_plaintext_bytes}"
            )
        return key.public_key.encrypt(plaintext, padding.PKCS1v15())
    if not plaintext:
        raise PlaintextSizeError("the plaintext is empty; SM2 encrypts at least one byte")
    if len(plaintext) > key.max_plaintext_bytes:
        raise PlaintextSizeError(
            f"the plaintext is {len(plaintext)} bytes; at most {key.max_plaintext_bytes} are "
            "encrypted to an SM2 key in one piece"
        )
    return sm2_encryption.encode_asn1(sm2_encryption.encrypt(key.point, plaintext))


def encrypt_to_certificate(certificate_der: bytes, plaintext: bytes) -> bytes:
    """Encrypt plaintext to the certificate's key: RSA PKCS#1 v1.5, or SM2 in the GM/T 0009
    ASN.1 form. Raises an EnvelopeError subclass (a ValueError) with an English message when
    the certificate or the plaintext's size does not fit."""
    return encrypt_to_key(envelope_key(certificate_der), plaintext)


# --- decryption: the host's half around the card's private-key step ----------------------------


@dataclass(frozen=True)
class ParsedCiphertext:
    form: CiphertextForm
    rsa_block: bytes = b""  # RSA: the ciphertext block the card raises to d
    sm2: sm2_encryption.SM2Ciphertext | None = None  # SM2: the card multiplies C1 by d

    @property
    def sm2_c1(self) -> bytes:
        """The encoded point 04 || x || y the card is given."""
        assert self.sm2 is not None
        return sm2.encode_point(self.sm2.c1)


def _does_not_decrypt(detail: str) -> CiphertextDoesNotDecryptError:
    return CiphertextDoesNotDecryptError(detail)


def parse_ciphertext(key: EnvelopeKey, ciphertext: bytes) -> ParsedCiphertext:
    """Check the ciphertext's shape for this key before the card is asked (no PIN is spent on a
    ciphertext that cannot be this key's)."""
    if isinstance(key, RsaEnvelopeKey):
        if len(ciphertext) != key.modulus_bytes:
            raise _does_not_decrypt(
                f"an RSA-{key.public_key.key_size} ciphertext is {key.modulus_bytes} bytes, "
                f"not {len(ciphertext)}"
            )
        if int.from_bytes(ciphertext, "big") >= key.public_key.public_numbers().n:
            raise _does_not_decrypt("the ciphertext is not below the key's modulus")
        return ParsedCiphertext(CiphertextForm.RSA_PKCS1_V15, rsa_block=ciphertext)
    try:
        if sm2_encryption.looks_like_asn1(ciphertext):
            return ParsedCiphertext(CiphertextForm.SM2_ASN1, sm2=sm2_encryption.decode_asn1(
                ciphertext))
        return ParsedCiphertext(CiphertextForm.SM2_C1C3C2, sm2=sm2_encryption.decode_c1c3c2(
            ciphertext))
    except sm2.SM2Error as exc:
        raise _does_not_decrypt(
            f"not an SM2 ciphertext in the GM/T 0009 ASN.1 or C1C3C2 form: {exc}"
        ) from None


def rsa_remove_padding(key: RsaEnvelopeKey, block: bytes) -> bytes:
    """The message inside a PKCS#1 v1.5 encryption block 00 02 PS 00 M (PS >= 8 nonzero bytes),
    given the card's raw c^d mod n."""
    block = block.rjust(key.modulus_bytes, b"\x00")
    separator = block.find(b"\x00", 2)
    if (len(block) != key.modulus_bytes or block[:2] != b"\x00\x02"
            or separator < 2 + 8):
        raise _does_not_decrypt("no PKCS#1 v1.5 padding after the private-key operation")
    return block[separator + 1:]


def sm2_finish(parsed: ParsedCiphertext, card_point: bytes) -> bytes:
    """The message, given the card's d·C1 (04 || x2 || y2): KDF, C2 and the C3 check."""
    assert parsed.sm2 is not None
    try:
        shared = sm2.decode_point(card_point)
        return sm2_encryption.finish_decryption(parsed.sm2, shared)
    except sm2_encryption.SM2DecryptionError:
        raise _does_not_decrypt("the SM3 check value C3 does not match") from None
    except sm2.SM2Error as exc:
        raise EnvelopeError(f"the card's answer is not an SM2 point: {exc}") from None

