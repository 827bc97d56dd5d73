"""The card's private-key operation for GENERAL AUTHENTICATE, one class per algorithm family."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from eport.common import sm2
from eport.common.failure import EportFailure
from eport.common.piv import Algorithm

ModularPower = Callable[[int, int, int], int]


def _modular_power() -> ModularPower:
    """GMP's powmod when gmpy2 is installed (the `sim` extra), else Python's pow().

    A real card computes on its own chip; a simulated one takes the host's CPU, which the
    daemon under test needs too. pow() spends about 8 ms on the two 1024-bit halves of an
    RSA-2048 signature, GMP under 1 ms: eight cards signing at once no longer crowd out
    the rest of the machine. The results are the same integers.
    """
    try:
        import gmpy2
    except ImportError:
        return pow

    def powmod(base: int, exponent: int, modulus: int) -> int:
        return int(gmpy2.powmod(base, exponent, modulus))

    return powmod


_powmod = _modular_power()


class SignInputError(EportFailure, ValueError):
    """The challenge does not fit the key (wrong length, or not below the RSA modulus)."""

    code = "SIGN_INPUT"


class CardKey(ABC):
    algorithm: Algorithm

    @abstractmethod
    def sign(self, challenge: bytes) -> bytes:
        """The raw private-key operation PIV defines for this algorithm."""


class RsaCardKey(CardKey):
    """PIV RSA: the host sends the whole padded block; the card applies d (no padding)."""

    def __init__(self, key: rsa.RSAPrivateKey, algorithm: Algorithm) -> None:
        numbers = key.private_numbers()
        self.algorithm = algorithm
        self._n = numbers.public_numbers.n
        self._p, self._q = numbers.p, numbers.q
        self._dp, self._dq, self._qinv = numbers.dmp1, numbers.dmq1, numbers.iqmp
        self._size = algorithm.rsa_bytes
        if (self._n.bit_length() + 7) // 8 != self._size:
            raise ValueError("the key size does not match the algorithm")

    def sign(self, challenge: bytes) -> bytes:
        if len(challenge) != self._size:
            raise SignInputError(f"RSA input must be {self._size} bytes")
        m = int.from_bytes(challenge, "big")
        if m >= self._n:
            raise SignInputError("RSA input is not below the modulus")
        # CRT: `cryptography` offers no raw (unpadded) private operation.
        m1 = _powmod(m, self._dp, self._p)
        m2 = _powmod(m, self._dq, self._q)
        h = (self._qinv * (m1 - m2)) % self._p
        return (m2 + h * self._q).to_bytes(self._size, "big")


class EcP256CardKey(CardKey):
    """PIV ECC P-256: the host sends the 32-byte hash; the reply is DER (r, s)."""

    algorithm = Algorithm.ECC_P256

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, challenge: bytes) -> bytes:
        if len(challenge) != 32:
            raise SignInputError("P-256 input must be the 32-byte hash")
        return self._key.sign(challenge, ec.ECDSA(Prehashed(hashes.SHA256())))


class Sm2CardKey(CardKey):
    """SM2 with SM3: the host sends e = SM3(Z || M); the reply is DER (r, s)."""

    algorithm = Algorithm.SM2_SM3

    def __init__(self, private_value: int) -> None:
        self._d = private_value

    def sign(self, challenge: bytes) -> bytes:
        if len(challenge) != 32:
            raise SignInputError("SM2 input must be the 32-byte digest e = SM3(Z || M)")
        r, s = sm2.sign_digest(self._d, challenge)
        return sm2.encode_der_signature(r, s)


def load_card_key(algorithm: Algorithm, private_key: bytes) -> CardKey:
    """Build the key from the image's bytes: PKCS#8 DER, or the 32-byte SM2 scalar."""
    if algorithm is Algorithm.SM2_SM3:
        if len(private_key) != 32:
            raise ValueError("an SM2 private key is 32 bytes")
        return Sm2CardKey(int.from_bytes(private_key, "big"))
    key = serialization.load_der_private_key(private_key, password=None)
    if algorithm.is_rsa and isinstance(key, rsa.RSAPrivateKey):
        return RsaCardKey(key, algorithm)
    if (
        algorithm is Algorithm.ECC_P256
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return EcP256CardKey(key)
    raise ValueError("the private key does not match the card's algorithm")
