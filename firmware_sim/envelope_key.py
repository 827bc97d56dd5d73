"""The envelope key in slot 9D: the private step of decryption for GENERAL AUTHENTICATE.

The card does only the step that needs the private key and returns its raw result; the host
checks the padding (RSA) or the KDF and hash (SM2). So the card's answer does not depend on
whether the ciphertext was good, and a damaged one costs the card nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from eport.common import sm2
from eport.common.piv import TAG_AUTH_CHALLENGE, TAG_AUTH_EXPONENTIATION, Algorithm
from eport.firmware_sim.signing import RsaCardKey, SignInputError


class EnvelopeCardKey(ABC):
    algorithm: Algorithm
    input_tag: int  # the tag of the 7C template that carries the input

    @abstractmethod
    def private_step(self, data: bytes) -> bytes:
        """The private-key operation; SignInputError when data does not fit the key."""


class RsaEnvelopeCardKey(EnvelopeCardKey):
    """PIV RSA decryption: the witness (tag 81) is the ciphertext block, the reply c^d mod n
    with the PKCS#1 padding still in it."""

    input_tag = TAG_AUTH_CHALLENGE

    def __init__(self, key: rsa.RSAPrivateKey, algorithm: Algorithm) -> None:
        self.algorithm = algorithm
        self._raw = RsaCardKey(key, algorithm)  # the same unpadded operation as signing

    def private_step(self, data: bytes) -> bytes:
        return self._raw.sign(data)


class Sm2EnvelopeCardKey(EnvelopeCardKey):
    """SM2 decryption's private step: C1 (tag 85, 04 || x1 || y1) to d·C1 (04 || x2 || y2)."""

    algorithm = Algorithm.SM2_SM3
    input_tag = TAG_AUTH_EXPONENTIATION

    def __init__(self, private_value: int) -> None:
        if not 1 <= private_value <= sm2.N - 2:
            raise ValueError("the SM2 envelope key is out of range")
        self._d = private_value

    def private_step(self, data: bytes) -> bytes:
        # Only the uncompressed form: it is what C1 is in both ciphertext encodings, and a
        # point off the curve (an invalid-curve attack on d) is refused here.
        if len(data) != 65 or data[0] != 0x04:
            raise SignInputError("C1 must be the 65-byte uncompressed point 04 || x || y")
        try:
            point = sm2.decode_point(data)
        except sm2.SM2Error as exc:
            raise SignInputError(str(exc)) from None
        shared = sm2.scalar_mult(self._d, point)
        assert shared is not None  # a point of the prime-order group times d < n
        return sm2.encode_point(shared)


def load_envelope_key(algorithm: Algorithm, private_key: bytes) -> EnvelopeCardKey:
    """The key from the image's bytes: PKCS#8 DER (RSA) or the 32-byte SM2 scalar."""
    if algorithm is Algorithm.SM2_SM3:
        if len(private_key) != 32:
            raise ValueError("an SM2 envelope key is 32 bytes")
        return Sm2EnvelopeCardKey(int.from_bytes(private_key, "big"))
    if algorithm.is_rsa:
        key = serialization.load_der_private_key(private_key, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return RsaEnvelopeCardKey(key, algorithm)
    raise ValueError("the envelope key does not match the card's algorithm")
