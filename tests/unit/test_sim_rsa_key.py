"""The simulated card's raw RSA step gives the signature OpenSSL makes, with GMP and without."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from eport.common.piv import Algorithm
from eport.firmware_sim import signing
from eport.firmware_sim.signing import RsaCardKey, SignInputError

SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _padded_block(digest: bytes, size: int) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2), what the host sends to GENERAL AUTHENTICATE."""
    body = SHA256_DIGEST_INFO + digest
    return b"\x00\x01" + b"\xff" * (size - len(body) - 3) + b"\x00" + body


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("power", ["gmp", "python"])
def test_raw_step_is_the_pkcs1_signature(key: rsa.RSAPrivateKey, power: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if power == "gmp":
        pytest.importorskip("gmpy2")
        assert signing._powmod is not pow, "gmpy2 is installed but not used"
    else:
        monkeypatch.setattr(signing, "_powmod", pow)
    message = b"<ceb:Message seq='1'/>"
    card = RsaCardKey(key, Algorithm.RSA_2048)
    raw = card.sign(_padded_block(hashlib.sha256(message).digest(), 256))
    assert raw == key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(raw, message, padding.PKCS1v15(), hashes.SHA256())


def test_input_not_below_the_modulus_is_refused(key: rsa.RSAPrivateKey) -> None:
    card = RsaCardKey(key, Algorithm.RSA_2048)
    with pytest.raises(SignInputError):
        card.sign(b"\xff" * 256)
    with pytest.raises(SignInputError):
        card.sign(b"\x00" * 255)
