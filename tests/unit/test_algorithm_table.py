"""The one signing-algorithm table (eport.cardlib.signing_algorithms) and its digest function.

The first tests read the source (ast and text, nothing imported): no other module keeps a table
of its own (key kind to sign algorithm, sign algorithm to hash, digest length or DigestInfo).
The others check the table against what the protocol, hashlib, the SM2 code and the existing
clients say.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eport.cardlib import signing_algorithms as table
from eport.cardlib.key_kind import KeyKind
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.signing_algorithms import SignAlgorithm
from eport.common import sm2
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import eportd_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
TABLE_MODULE = "cardlib/signing_algorithms.py"
# Where a second table could hide: the shipped packages, the benchmarks and the test stacks.
SCANNED = ("cardlib", "clients", "common", "daemon", "datacenter", "firmware_sim", "benchmarks",
           "tests/support")
DIGEST_INFO_HEX = ("3021300906052b0e03021a05000414", "3031300d060960864801650304020105000420")
# Names that stand for a key kind (KeyKind and KeyAlgorithm members, KeyKind values) and for a
# signing algorithm (SignAlgorithm, the protocols' enums, SignMechanism). "SM2" alone names a
# key kind and a mechanism: it counts as a key kind only.
KEY_KIND_NAMES = frozenset({k.name for k in KeyKind} | {k.value for k in KeyKind})
ALGORITHM_NAMES = frozenset({a.value for a in SignAlgorithm}
                            | {m.name for m in SignMechanism}) - KEY_KIND_NAMES


def scanned_files() -> Iterator[Path]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if str(path.relative_to(ROOT)) != TABLE_MODULE:
                yield path


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _names_in(node: ast.AST) -> set[str]:
    return {name for sub in ast.walk(node) if (name := _name_of(sub)) is not None}


DIGEST_LENGTHS = frozenset(row.digest_length for row in table.TABLE)


def _is_digest_length(node: ast.AST) -> bool:
    """A literal that could be a digest length (not, say, a modulus size in bytes)."""
    return isinstance(node, ast.Constant) and node.value in DIGEST_LENGTHS


def second_tables(path: Path) -> list[int]:
    """Lines of dict literals that map key kinds to algorithms or digest lengths, or
    algorithms to anything (hash, length, prefix, a protocol value)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        keys = {name for key in node.keys if key is not None
                if (name := _name_of(key)) is not None}
        by_key_kind = bool(keys & KEY_KIND_NAMES) and any(
            _names_in(value) & ALGORITHM_NAMES or _is_digest_length(value)
            for value in node.values)
        if by_key_kind or keys & ALGORITHM_NAMES:
            found.append(node.lineno)
    return found


def test_no_second_algorithm_table() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for path in scanned_files()
             for line in second_tables(path)]
    assert found == [], "derive these from eport.cardlib.signing_algorithms"


def test_the_scan_sees_a_table_when_there_is_one(tmp_path: Path) -> None:
    """The check above must be able to fail: tables like those this issue removed are found,
    a key kind's PIV algorithm byte or modulus size is not."""
    sample = tmp_path / "old.py"
    sample.write_text(
        "A = {pb.RSA_1024: pb.SHA1_WITH_RSA, pb.RSA_2048: pb.SHA256_WITH_RSA}\n"
        "B = {KeyKind.EC_P256: frozenset({pb.ECDSA_P256_SHA256})}\n"
        "C = {pb.RSA_1024: 20, pb.SM2: 32}\n"
        "D = {SignMechanism.RSA_PKCS1_SHA1: b'', SignMechanism.ECDSA_P256: 32}\n"
        "E = {'rsa1024': pb.SHA1_WITH_RSA}\n"
        "F = {KeyKind.RSA_1024: Algorithm.RSA_1024}\n"
        "G = {Algorithm.RSA_1024: 128, Algorithm.RSA_2048: 256}\n", encoding="utf-8")
    assert second_tables(sample) == [1, 2, 3, 4, 5]


def test_no_digest_info_prefix_outside_the_table() -> None:
    found = [str(path.relative_to(ROOT)) for path in scanned_files()
             if any(prefix in path.read_text(encoding="utf-8").lower()
                    for prefix in DIGEST_INFO_HEX)]
    assert found == []


def test_the_table_module_stays_light() -> None:
    """`eport sign` imports it at start-up: no crypto library, card stack or protocol code."""
    heavy = ("cryptography", "smartcard", "PyKCS11", "grpc", "google.protobuf",
             "eport.common.sm2", "eport.cardlib.certificates", "eport.protos")
    script = ("import sys, eport.cardlib.signing_algorithms\n"
              f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))")
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout.strip()
    assert loaded == "[]"


# ---- the table itself ----

def test_every_protocol_algorithm_has_one_row() -> None:
    named = {name for name, _ in pb.SignAlgorithm.items() if name != "SIGN_ALGORITHM_UNSPECIFIED"}
    assert {row.algorithm.value for row in table.TABLE} == named
    assert {name for name, _ in dc.SignatureAlgorithm.items()
            if name != "SIGNATURE_ALGORITHM_UNSPECIFIED"} == named
    assert {row.mechanism for row in table.TABLE} == set(SignMechanism)
    assert {k for k, _ in pb.KeyAlgorithm.items() if k != "KEY_ALGORITHM_UNSPECIFIED"} == \
        {k.name for k in KeyKind}


def test_defaults_and_choices_per_key() -> None:
    assert table.algorithms_for_key(KeyKind.RSA_1024) == (SignAlgorithm.SHA1_WITH_RSA,
                                                          SignAlgorithm.SHA256_WITH_RSA)
    assert table.algorithms_for_key(KeyKind.RSA_2048) == (SignAlgorithm.SHA256_WITH_RSA,
                                                          SignAlgorithm.SHA1_WITH_RSA)
    assert table.algorithms_for_key(KeyKind.EC_P256) == (SignAlgorithm.ECDSA_P256_SHA256,)
    assert table.algorithms_for_key(KeyKind.SM2) == (SignAlgorithm.SM2_WITH_SM3,)
    # The official E-port client signs SHA1withRSA on every RSA card (the gateway does too).
    assert [table.e_port_client_algorithm(k) for k in KeyKind] == [
        SignAlgorithm.SHA1_WITH_RSA, SignAlgorithm.SHA1_WITH_RSA,
        SignAlgorithm.ECDSA_P256_SHA256, SignAlgorithm.SM2_WITH_SM3]
    for row in table.TABLE:
        assert set(row.default_for) <= set(row.key_kinds)
        assert set(row.e_port_client_for) <= set(row.key_kinds)


def test_cli_names_are_those_eport_sign_has_always_taken() -> None:
    assert table.CLI_NAMES == ("sha1-rsa", "sha256-rsa", "ecdsa-p256", "sm2-sm3")
    assert table.by_cli_name("sha256-rsa") is SignAlgorithm.SHA256_WITH_RSA
    with pytest.raises(KeyError):
        table.by_cli_name("md5-rsa")


def test_protocol_names_convert_both_ways() -> None:
    for row in table.TABLE:
        assert table.algorithm_named(pb.SignAlgorithm.Name(
            pb.SignAlgorithm.Value(row.algorithm.value))) is row.algorithm
    assert table.algorithm_named("SIGN_ALGORITHM_UNSPECIFIED") is None
    assert table.key_kind_named("RSA_2048") is KeyKind.RSA_2048
    assert table.key_kind_named("KEY_ALGORITHM_UNSPECIFIED") is None


def test_digest_info_prefixes_are_the_der_of_the_hash_oids() -> None:
    """Built here from the hash OIDs, independently of the table's hex."""
    def digest_info_prefix(oid_der: bytes, length: int) -> bytes:
        algorithm = b"\x30" + bytes([len(oid_der) + 2]) + oid_der + b"\x05\x00"
        inner = algorithm + b"\x04" + bytes([length])
        return b"\x30" + bytes([len(inner) + length]) + inner

    sha1_oid = b"\x06\x05\x2b\x0e\x03\x02\x1a"  # 1.3.14.3.2.26
    sha256_oid = b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01"  # 2.16.840.1.101.3.4.2.1
    assert table.spec(SignAlgorithm.SHA1_WITH_RSA).digest_info == digest_info_prefix(sha1_oid, 20)
    assert table.spec(SignAlgorithm.SHA256_WITH_RSA).digest_info == \
        digest_info_prefix(sha256_oid, 32)
    for row in table.TABLE:
        assert row.is_rsa == (row.mechanism in (SignMechanism.RSA_PKCS1_SHA1,
                                                SignMechanism.RSA_PKCS1_SHA256))


# ---- the digest function ----

@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """5 MiB: above the 3 MiB over which the clients hash locally (gRPC's 4 MiB limit)."""
    path = tmp_path_factory.mktemp("large") / "declaration.bin"
    path.write_bytes(bytes(range(256)) * (5 * 1024 * 4))
    return path.read_bytes()


def test_large_file_digest_is_hashlibs(large_file: bytes) -> None:
    assert len(large_file) == 5 * 1024 * 1024
    assert table.message_digest(SignAlgorithm.SHA1_WITH_RSA, large_file) == \
        hashlib.sha1(large_file).digest()
    for algorithm in (SignAlgorithm.SHA256_WITH_RSA, SignAlgorithm.ECDSA_P256_SHA256):
        assert table.message_digest(algorithm, large_file) == hashlib.sha256(large_file).digest()
    for row in table.TABLE:
        if row.hash_name != "sm3":
            assert len(table.message_digest(row.algorithm, b"x")) == row.digest_length


def test_sm2_digest_is_e_over_z_and_the_data(large_file: bytes) -> None:
    d = sm2.generate_private_key()
    point = sm2.public_point(d)
    e = table.message_digest(SignAlgorithm.SM2_WITH_SM3, large_file, point)
    assert e == sm2.message_digest(point, large_file)
    assert len(e) == table.spec(SignAlgorithm.SM2_WITH_SM3).digest_length
    # What the card signs over it verifies as an SM2 signature of the data.
    assert sm2.verify_message(point, large_file, *sm2.sign_digest(d, e))


def test_sm2_digest_from_the_certificate(tmp_path: Path) -> None:
    from eport.common.sm2_cert import certificate_public_point
    from eport.firmware_sim.ca import init_ca

    ca = init_ca(tmp_path / "ca")
    der = ca.certificate_for("sm2")
    point = sm2.public_point(ca.sm2_key)
    assert certificate_public_point(der) == point
    assert table.message_digest(SignAlgorithm.SM2_WITH_SM3, b"declaration", der) == \
        sm2.message_digest(point, b"declaration")
    with pytest.raises(ValueError):
        table.message_digest(SignAlgorithm.SM2_WITH_SM3, b"declaration")


def test_clients_take_only_the_light_table_from_the_card_library() -> None:
    """Clients talk to cards through eportd only; the table and the key kinds are all they
    may take from cardlib (pure data: no backend, no certificate parser)."""
    allowed = {"eport.cardlib.signing_algorithms", "eport.cardlib.key_kind"}
    found = {}
    for path in sorted((ROOT / "clients").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {node.module for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module
                   and node.module.startswith("eport.cardlib")}
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names if alias.name.startswith("eport.cardlib")}
        if modules - allowed:
            found[str(path.relative_to(ROOT))] = modules - allowed
    assert found == {}
