"""The clients' side of the one signing-algorithm table (eport.cardlib.signing_algorithms): its
rows as the protocol's enum values, the card's algorithm from what eportd says of the card, and
the digest of data too big to send to eportd whole.

The table's enums carry the protocol's names, so these conversions go by name and add no table.
"""

from __future__ import annotations

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.signing_algorithms import (
    TABLE,
    SignAlgorithm,
    algorithm_named,
    default_algorithm,
    key_kind_named,
    message_digest,
)
from eport.protos.v1 import eportd_pb2 as pb

# `eport sign --algorithm`: "card" (what eportd says the card signs with), then the table's.
CLI_ALGORITHMS: dict[str, pb.SignAlgorithm.ValueType] = {
    "card": pb.SIGN_ALGORITHM_UNSPECIFIED,
    **{row.cli_name: pb.SignAlgorithm.Value(row.algorithm.value) for row in TABLE},
}


def to_pb(algorithm: SignAlgorithm) -> pb.SignAlgorithm.ValueType:
    return pb.SignAlgorithm.Value(algorithm.value)


def from_pb(value: int) -> SignAlgorithm | None:
    """None for SIGN_ALGORITHM_UNSPECIFIED or a value this client does not know."""
    try:
        return algorithm_named(pb.SignAlgorithm.Name(pb.SignAlgorithm.ValueType(value)))
    except ValueError:
        return None


def key_kind_of(value: int) -> KeyKind | None:
    """The card library's key kind for a KeyAlgorithm value; None when unknown."""
    try:
        return key_kind_named(pb.KeyAlgorithm.Name(pb.KeyAlgorithm.ValueType(value)))
    except ValueError:
        return None


def key_default(key_algorithm: int) -> pb.SignAlgorithm.ValueType:
    """What eportd signs with on this key when asked for nothing: for an older eportd whose
    CardInfo lists no sign_algorithms, and for a certificate that is not on a card."""
    kind = key_kind_of(key_algorithm)
    return pb.SIGN_ALGORITHM_UNSPECIFIED if kind is None else to_pb(default_algorithm(kind))


def card_algorithm(card: pb.CardInfo) -> pb.SignAlgorithm.ValueType:
    """What eportd says the card signs with, its default first (a remote E-port client signs
    RSA only with SHA-1); the key's usual algorithm for an older eportd that lists none."""
    if card.sign_algorithms:
        return card.sign_algorithms[0]
    return key_default(card.key_algorithm)


def local_digest(algorithm: int, data: bytes, certificate_der: bytes) -> bytes:
    """The digest eportd would sign for `data` (SM2: e = SM3(Z ‖ M), Z from the certificate).
    An unspecified algorithm is hashed with SHA-256 (then eportd checks the length)."""
    chosen = from_pb(algorithm) or SignAlgorithm.SHA256_WITH_RSA
    return message_digest(chosen, data, certificate_der)
