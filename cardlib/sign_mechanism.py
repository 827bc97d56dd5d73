"""The mechanisms a token signs with, apart from the token interface (cardlib.token), so that
the algorithm table and the light clients that read it do not load the whole interface."""

from __future__ import annotations

from enum import StrEnum


class SignMechanism(StrEnum):
    """What the token signs: always a digest the host computed (SM2: e = SM3(Z ‖ M))."""

    RSA_PKCS1_SHA1 = "RSA_PKCS1_SHA1"
    RSA_PKCS1_SHA256 = "RSA_PKCS1_SHA256"
    ECDSA_P256 = "ECDSA_P256"
    SM2 = "SM2"
