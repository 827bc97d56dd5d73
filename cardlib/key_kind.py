"""The kinds of card key the middleware knows. A module of its own so that light importers (the
signing-algorithm table, and through it the `eport` command) need not load the certificate
parser; eport.cardlib.certificates re-exports it.

The member names are those of the protocol's KeyAlgorithm enum (eportd.proto), so a client
turns one into the other by name (signing_algorithms.key_kind_named).
"""

from __future__ import annotations

from enum import StrEnum


class KeyKind(StrEnum):
    RSA_1024 = "rsa1024"
    RSA_2048 = "rsa2048"
    EC_P256 = "p256"
    SM2 = "sm2"
