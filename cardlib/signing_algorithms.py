"""The one table of signing algorithms, and the one digest function.

Everything the middleware knows about a signing algorithm is a column of TABLE: what the token
is asked to do (SignMechanism), the hash, the DER DigestInfo prefix of PKCS#1 v1.5, the digest
length, which key kinds may use it, which key kinds it is the default of, what the official
E-port client signs with, and the `eport sign --algorithm` name. The daemon, the backends, the
data centre and the clients derive their choices from here instead of keeping tables of their
own (tests/unit/test_algorithm_table.py checks that none does).

Names: SignAlgorithm's values, and KeyKind's member names, are those of the protocol enums
(eportd.proto SignAlgorithm and KeyAlgorithm, datacenter.proto SignatureAlgorithm), so a client
converts by name (`pb.SignAlgorithm.Value(algorithm.value)`, `algorithm_named`,
`key_kind_named`); this module itself imports no protocol code.

Light on purpose: the `eport` command imports it at start-up, so it loads hashlib and the
card library's enums only; the SM2 code is imported when an SM2 digest is asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.sign_mechanism import SignMechanism


class SignAlgorithm(StrEnum):
    SHA1_WITH_RSA = "SHA1_WITH_RSA"
    SHA256_WITH_RSA = "SHA256_WITH_RSA"
    ECDSA_P256_SHA256 = "ECDSA_P256_SHA256"
    SM2_WITH_SM3 = "SM2_WITH_SM3"


@dataclass(frozen=True)
class AlgorithmSpec:
    algorithm: SignAlgorithm
    display_name: str      # as the E-port documents write it
    cli_name: str          # `eport sign --algorithm NAME`
    mechanism: SignMechanism
    hash_name: str         # hashlib's name; "sm3" for SM2, whose digest is e = SM3(Z ‖ M)
    digest_length: int
    digest_info: bytes     # DER DigestInfo before the digest (PKCS#1 v1.5); b"" if not RSA
    key_kinds: tuple[KeyKind, ...]         # the keys that can make it
    default_for: tuple[KeyKind, ...]       # the keys that sign with it when asked for nothing
    e_port_client_for: tuple[KeyKind, ...]  # the keys the official E-port client signs it on

    @property
    def is_rsa(self) -> bool:
        return bool(self.digest_info)


# DigestInfo prefixes: RFC 8017 §9.2, note 1. Old E-port cards (RSA-1024) sign SHA1withRSA,
# newer RSA cards SHA256withRSA. The official E-port client (and so our gateway, which answers
# web pages as it does) signs SHA1withRSA on every RSA card and SM2-SM3 on SM2 cards; P-256 is
# our simulator's and PIV tokens' key, for which the client has no say, so ECDSA-SHA256 there.
TABLE: tuple[AlgorithmSpec, ...] = (
    AlgorithmSpec(SignAlgorithm.SHA1_WITH_RSA, "SHA1withRSA", "sha1-rsa",
                  SignMechanism.RSA_PKCS1_SHA1, "sha1", 20,
                  bytes.fromhex("3021300906052b0e03021a05000414"),
                  key_kinds=(KeyKind.RSA_1024, KeyKind.RSA_2048),
                  default_for=(KeyKind.RSA_1024,),
                  e_port_client_for=(KeyKind.RSA_1024, KeyKind.RSA_2048)),
    AlgorithmSpec(SignAlgorithm.SHA256_WITH_RSA, "SHA256withRSA", "sha256-rsa",
                  SignMechanism.RSA_PKCS1_SHA256, "sha256", 32,
                  bytes.fromhex("3031300d060960864801650304020105000420"),
                  key_kinds=(KeyKind.RSA_1024, KeyKind.RSA_2048),
                  default_for=(KeyKind.RSA_2048,),
                  e_port_client_for=()),
    AlgorithmSpec(SignAlgorithm.ECDSA_P256_SHA256, "ECDSA-P256-SHA256", "ecdsa-p256",
                  SignMechanism.ECDSA_P256, "sha256", 32, b"",
                  key_kinds=(KeyKind.EC_P256,),
                  default_for=(KeyKind.EC_P256,),
                  e_port_client_for=(KeyKind.EC_P256,)),
    AlgorithmSpec(SignAlgorithm.SM2_WITH_SM3, "SM2-SM3", "sm2-sm3",
                  SignMechanism.SM2, "sm3", 32, b"",
                  key_kinds=(KeyKind.SM2,),
                  default_for=(KeyKind.SM2,),
                  e_port_client_for=(KeyKind.SM2,)),
)

_BY_ALGORITHM = {row.algorithm: row for row in TABLE}
_BY_MECHANISM = {row.mechanism: row for row in TABLE}
_BY_CLI_NAME = {row.cli_name: row.algorithm for row in TABLE}
CLI_NAMES: tuple[str, ...] = tuple(_BY_CLI_NAME)


def spec(algorithm: SignAlgorithm) -> AlgorithmSpec:
    return _BY_ALGORITHM[algorithm]


def spec_of_mechanism(mechanism: SignMechanism) -> AlgorithmSpec:
    return _BY_MECHANISM[mechanism]


def by_cli_name(name: str) -> SignAlgorithm:
    """KeyError for a name that is not one of CLI_NAMES."""
    return _BY_CLI_NAME[name]


def algorithms_for_key(key: KeyKind) -> tuple[SignAlgorithm, ...]:
    """Every algorithm the key can make, its default first (CardInfo.sign_algorithms' order)."""
    usable = [row.algorithm for row in TABLE if key in row.key_kinds]
    return tuple(sorted(usable, key=lambda a: key not in spec(a).default_for))


def default_algorithm(key: KeyKind) -> SignAlgorithm:
    return algorithms_for_key(key)[0]


def e_port_client_algorithm(key: KeyKind) -> SignAlgorithm:
    """What the official E-port client signs with on this key (the gateway signs the same)."""
    return next(row.algorithm for row in TABLE if key in row.e_port_client_for)


def algorithm_named(protocol_name: str) -> SignAlgorithm | None:
    """The algorithm a protocol enum name stands for; None for UNSPECIFIED or an unknown one."""
    try:
        return SignAlgorithm(protocol_name)
    except ValueError:
        return None


def key_kind_named(protocol_name: str) -> KeyKind | None:
    """The key kind a KeyAlgorithm enum name stands for; None for UNSPECIFIED or unknown."""
    return KeyKind.__members__.get(protocol_name)


def message_digest(algorithm: SignAlgorithm, data: bytes,
                   certificate_or_public_key: object = None) -> bytes:
    """The digest the card signs for `data`: the hash of the data, and for SM2
    e = SM3(Z ‖ M) with Z from the signer's public key and the default user ID (GM/T 0009).
    For SM2 pass the certificate's DER or the public point (x, y); other algorithms ignore it.
    Used wherever data is too big to send to eportd whole, and by eportd and the data centre."""
    row = spec(algorithm)
    if row.hash_name != "sm3":
        return hashlib.new(row.hash_name, data).digest()
    from eport.common import sm2  # imported here: pure-Python curve code, SM2 cards only
    return sm2.message_digest(_sm2_point(certificate_or_public_key), data)


def _sm2_point(certificate_or_public_key: object) -> tuple[int, int]:
    if isinstance(certificate_or_public_key, bytes | bytearray):
        from eport.common.sm2_cert import certificate_public_point
        return certificate_public_point(bytes(certificate_or_public_key))
    if (isinstance(certificate_or_public_key, tuple) and len(certificate_or_public_key) == 2
            and all(isinstance(v, int) for v in certificate_or_public_key)):
        return certificate_or_public_key[0], certificate_or_public_key[1]
    raise ValueError("an SM2 digest needs the signer's certificate (DER) or public point")
