"""SM2/SM3 and SM2-signed certificates, checked against OpenSSL 3 as an independent implementation.

OpenSSL 3.0 puts an empty user ID into Z unless one is given, so every `openssl dgst` and
`openssl verify` call here passes the GM/T 0009 default ID explicitly (see sm2_x509's docstring).
"""

from __future__ import annotations

import base64
import re
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from eport.common import sm2
from eport.firmware_sim import sm2_x509

DISTID = "distid:1234567812345678"

# GM/T 0003.5-2012 signature example on the recommended curve: message "message digest",
# default user ID, fixed nonce k.
GMT_D = 0x3945208F_7B2144B1_3F36E38A_C6D39F95_88939369_2860B51A_42FB81EF_4DF7C5B8
GMT_Q = (
    0x09F9DF31_1E5421A1_50DD7D16_1E4BC5C6_72179FAD_1833FC07_6BB08FF3_56F35020,
    0xCCEA490C_E26775A5_2DC6EA71_8CC1AA60_0AED05FB_F35E084A_6632F607_2DA9AD13,
)
GMT_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
GMT_K = 0x59276E27_D506861A_16680F3A_D9C02DCC_EF3CC1FA_3CDBE4CE_6D54B80D_EAC1BC21
GMT_R = 0xF5A03B06_48D2C463_0EEAC513_E1BB81A1_5944DA38_27D5B741_43AC7EAC_EEE720B3
GMT_S = 0xB1B6AA29_DF212FD8_763182BC_0D421CA1_BB9038FD_1F7F42D4_840B69C4_85BBC1AA


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


# --- SM3 and the curve ------------------------------------------------------------------------


def test_sm3_matches_the_standard_and_openssl(openssl: str, tmp_path: Path) -> None:
    # GB/T 32905 example 1.
    assert sm3_hex(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    data = bytes(range(256)) * 5
    (tmp_path / "data").write_bytes(data)
    out = run(openssl, "dgst", "-sm3", "-r", str(tmp_path / "data")).stdout
    assert out.split()[0] == sm3_hex(data)


def sm3_hex(data: bytes) -> str:
    return sm2.sm3(data).hex()


def test_curve_parameters_match_openssl(openssl: str) -> None:
    der = subprocess.run(
        [openssl, "ecparam", "-name", "SM2", "-param_enc", "explicit", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    params = asn1_keys.ECDomainParameters.load(der).chosen.native
    assert params["field_id"]["parameters"] == sm2.P
    assert int.from_bytes(params["curve"]["a"], "big") == sm2.A
    assert int.from_bytes(params["curve"]["b"], "big") == sm2.B
    assert params["order"] == sm2.N
    assert params["cofactor"] == 1
    assert sm2.decode_point(params["base"]) == sm2.G


def test_group_order_and_point_arithmetic() -> None:
    assert sm2.scalar_mult(sm2.N, sm2.G) is None
    assert sm2.scalar_mult(sm2.N + 5, sm2.G) == sm2.public_point(5)
    # The fixed-base table and the generic window ladder are separate code paths.
    for k in (1, 2, 3, 15, 16, 17, 0xFFFF, GMT_K):
        assert sm2.scalar_mult(k, sm2.G) == sm2.public_point(k)
    two_g = sm2.public_point(2)
    assert sm2.public_point(sm2.N - 2) == (two_g[0], sm2.P - two_g[1])  # (n - 2)G = -2G
    assert all(sm2.is_on_curve(sm2.public_point(k)) for k in (2, 3, GMT_D))


# --- the standard's worked example ------------------------------------------------------------


def test_gmt_0003_example_vector() -> None:
    assert sm2.public_point(GMT_D) == GMT_Q
    assert sm2.message_digest(GMT_Q, b"message digest") == GMT_E
    assert sm2.message_digest(GMT_Q, b"message digest") == sm2.sm3(
        sm2.z_value(GMT_Q) + b"message digest"
    )
    assert sm2._sign_with_nonce(GMT_D, int.from_bytes(GMT_E, "big"), GMT_K) == (GMT_R, GMT_S)
    assert sm2.verify_digest(GMT_Q, GMT_E, GMT_R, GMT_S)
    assert sm2.verify_message(GMT_Q, b"message digest", GMT_R, GMT_S)


def test_z_value_layout() -> None:
    q = sm2.public_point(12345)
    expected = sm2.sm3(
        (16 * 8).to_bytes(2, "big")
        + b"1234567812345678"
        + b"".join(v.to_bytes(32, "big") for v in (sm2.A, sm2.B, sm2.GX, sm2.GY, *q))
    )
    assert sm2.z_value(q) == expected
    assert sm2.z_value(q, b"") == sm2.sm3(
        b"\x00\x00" + b"".join(v.to_bytes(32, "big") for v in (sm2.A, sm2.B, sm2.GX, sm2.GY, *q))
    )
    assert sm2.z_value(q, b"ALICE123@YAHOO.COM") != sm2.z_value(q)
    with pytest.raises(sm2.SM2Error):
        sm2.z_value(q, b"x" * 8192)


# --- interoperability with OpenSSL --------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "user_id"),
    [
        (b"", sm2.DEFAULT_USER_ID),
        (b"<CEBMessage>\xe6\x8a\xa5\xe5\x85\xb3</CEBMessage>", sm2.DEFAULT_USER_ID),
        (bytes(range(256)) * 40, sm2.DEFAULT_USER_ID),
        (b"with another ID", b"ALICE123@YAHOO.COM"),
    ],
)
def test_openssl_verifies_our_signature(
    openssl: str, tmp_path: Path, message: bytes, user_id: bytes
) -> None:
    d = sm2.generate_private_key()
    q = sm2.public_point(d)
    r, s = sm2.sign_message(d, message, user_id)
    assert sm2.verify_message(q, message, r, s, user_id)
    (tmp_path / "pub.pem").write_bytes(sm2.public_key_pem(q))
    (tmp_path / "msg").write_bytes(message)
    (tmp_path / "sig.der").write_bytes(sm2.encode_der_signature(r, s))
    distid = "distid:" + user_id.decode()
    args = ["-sigopt", distid, "-signature", str(tmp_path / "sig.der"), str(tmp_path / "msg")]
    good = run(openssl, "dgst", "-sm3", "-verify", str(tmp_path / "pub.pem"), *args)
    assert "Verified OK" in good.stdout
    # A changed message must make OpenSSL refuse, or the check above proves nothing.
    (tmp_path / "msg").write_bytes(message + b"!")
    bad = run(openssl, "dgst", "-sm3", "-verify", str(tmp_path / "pub.pem"), *args, check=False)
    assert bad.returncode != 0
    assert "Verified OK" not in bad.stdout


def test_we_verify_openssls_signature(openssl: str, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    run(openssl, "genpkey", "-algorithm", "SM2", "-out", str(key))
    d = sm2.load_private_key_pem(key.read_bytes())
    pub = run(openssl, "pkey", "-in", str(key), "-pubout").stdout.encode()
    q = sm2.load_public_key_pem(pub)
    assert q == sm2.public_point(d)
    message = "海关报关单 No. 2024-0001".encode()
    (tmp_path / "msg").write_bytes(message)
    for _ in range(3):  # OpenSSL's k is random: a few signatures cover more of (r, s)
        run(
            openssl,
            "dgst",
            "-sm3",
            "-sign",
            str(key),
            "-sigopt",
            DISTID,
            "-out",
            str(tmp_path / "sig.der"),
            str(tmp_path / "msg"),
        )
        r, s = sm2.decode_der_signature((tmp_path / "sig.der").read_bytes())
        assert sm2.verify_message(q, message, r, s)
        assert sm2.verify_digest(q, sm2.message_digest(q, message), r, s)
        assert not sm2.verify_message(q, message + b" ", r, s)
        assert not sm2.verify_message(q, message, r, s, user_id=b"")
        assert not sm2.verify_message(sm2.public_point(d ^ 1), message, r, s)


def test_openssl_accepts_our_key_files(openssl: str, tmp_path: Path) -> None:
    d = sm2.generate_private_key()
    q = sm2.public_point(d)
    (tmp_path / "key.pem").write_bytes(sm2.private_key_pem(d))
    (tmp_path / "pub.pem").write_bytes(sm2.public_key_pem(q))
    text = run(openssl, "pkey", "-in", str(tmp_path / "key.pem"), "-noout", "-text").stdout
    assert "ASN1 OID: SM2" in text
    priv_hex = re.search(r"priv:\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert priv_hex is not None
    assert int(re.sub(r"[\s:]", "", priv_hex.group(1)), 16) == d
    # OpenSSL derives the same public key file byte for byte.
    derived = run(openssl, "pkey", "-in", str(tmp_path / "key.pem"), "-pubout").stdout
    assert derived.encode() == sm2.public_key_pem(q)
    pub_text = run(openssl, "pkey", "-pubin", "-in", str(tmp_path / "pub.pem"), "-noout", "-text")
    assert "ASN1 OID: SM2" in pub_text.stdout
    # And it signs with our key file.
    (tmp_path / "msg").write_bytes(b"signed by openssl with our key")
    run(
        openssl,
        "dgst",
        "-sm3",
        "-sign",
        str(tmp_path / "key.pem"),
        "-sigopt",
        DISTID,
        "-out",
        str(tmp_path / "sig.der"),
        str(tmp_path / "msg"),
    )
    r, s = sm2.decode_der_signature((tmp_path / "sig.der").read_bytes())
    assert sm2.verify_message(q, b"signed by openssl with our key", r, s)


def test_load_key_with_parameters_block_and_sec1(openssl: str, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    # This form starts with an "SM2 PARAMETERS" block before the PKCS#8 key.
    run(openssl, "ecparam", "-name", "SM2", "-genkey", "-out", str(key))
    d = sm2.load_private_key_pem(key.read_bytes())
    pub = run(openssl, "pkey", "-in", str(key), "-pubout").stdout.encode()
    assert sm2.public_point(d) == sm2.load_public_key_pem(pub)
    # OpenSSL 3.0 will not write SM2 keys as SEC 1, so asn1crypto builds that form; it has to
    # be told the curve's key size first.
    if sm2.CURVE_OID not in asn1_keys.NamedCurve._key_sizes:
        asn1_keys.NamedCurve.register("sm2p256v1", sm2.CURVE_OID, 32)
    sec1 = asn1_keys.ECPrivateKey(
        {
            "version": "ecPrivkeyVer1",
            "private_key": d,
            "parameters": asn1_keys.ECDomainParameters({"named": sm2.CURVE_OID}),
            "public_key": sm2.encode_point(sm2.public_point(d)),
        }
    ).dump()
    assert sm2.load_private_key_pem(pem_block("EC PRIVATE KEY", sec1)) == d


def pem_block(label: str, der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def test_key_file_errors() -> None:
    d = sm2.generate_private_key()
    with pytest.raises(sm2.SM2Error):
        sm2.load_private_key_pem(sm2.public_key_pem(sm2.public_point(d)))
    with pytest.raises(sm2.SM2Error):
        sm2.load_public_key_pem(b"not a pem")
    der = bytearray(sm2.private_key_der(d))
    der[-1] ^= 1  # corrupts the embedded public key, which must match d
    with pytest.raises(sm2.SM2Error):
        sm2.load_private_key_der(bytes(der))
    p256 = bytes.fromhex("06082a8648ce3d030107")  # prime256v1, not SM2
    foreign = sm2.public_key_der(sm2.public_point(d)).replace(sm2._der_oid(sm2.CURVE_OID), p256)
    with pytest.raises(sm2.SM2Error, match="not an SM2 key"):
        sm2.load_public_key_der(foreign)


# --- keys and points --------------------------------------------------------------------------


def test_private_key_range() -> None:
    for _ in range(20):
        assert 1 <= sm2.generate_private_key() <= sm2.N - 2
    for bad in (0, sm2.N - 1, sm2.N, -1):
        with pytest.raises(sm2.SM2Error):
            sm2.public_point(bad)
    with pytest.raises(sm2.SM2Error):
        sm2.sign_digest(sm2.N - 1, bytes(32))


def test_point_encoding() -> None:
    q = sm2.public_point(sm2.generate_private_key())
    encoded = sm2.encode_point(q)
    assert len(encoded) == 65
    assert encoded[0] == 4
    assert sm2.decode_point(encoded) == q
    compressed = bytes([2 + (q[1] & 1)]) + q[0].to_bytes(32, "big")
    assert sm2.decode_point(compressed) == q
    off_curve = encoded[:-1] + bytes([encoded[-1] ^ 1])
    for bad in (off_curve, encoded[:-1], b"\x05" + encoded[1:], b"", b"\x04" + bytes(64)):
        with pytest.raises(sm2.SM2Error):
            sm2.decode_point(bad)
    with pytest.raises(sm2.SM2Error):
        sm2.encode_point((q[0], q[1] ^ 1))


# --- signatures: encodings and rejection ------------------------------------------------------


def test_signature_encodings_round_trip() -> None:
    d = sm2.generate_private_key()
    for r, s in [sm2.sign_digest(d, bytes(32)), (1, sm2.N - 1), (0x80, 0x7F), (GMT_R, GMT_S)]:
        der = sm2.encode_der_signature(r, s)
        assert sm2.decode_der_signature(der) == (r, s)
        # asn1crypto as an independent DER parser.
        parsed = asn1_core.Sequence.load(der)
        assert [parsed[0].native, parsed[1].native] == [r, s]
        raw = sm2.encode_raw_signature(r, s)
        assert len(raw) == 64
        assert sm2.decode_raw_signature(raw) == (r, s)
    assert sm2.encode_der_signature(0x80, 0x7F) == bytes.fromhex("30070202008002017f")


@pytest.mark.parametrize(
    "der_hex",
    [
        "300602010102010100",  # trailing byte
        "3007020101020101",  # SEQUENCE length runs past the end
        "30060201010201",  # truncated
        "300702020001020101",  # INTEGER with a needless leading zero
        "3006020180020101",  # negative r
        "3006020100020101",  # r = 0
        "308106020101020101",  # long-form length where the short form fits
        "3106020101020101",  # SET instead of SEQUENCE
        "3006020101040101",  # OCTET STRING for s
        "3009020101020101020101",  # a third INTEGER
        "",
    ],
)
def test_malformed_der_signatures_are_rejected(der_hex: str) -> None:
    with pytest.raises(sm2.SM2Error):
        sm2.decode_der_signature(bytes.fromhex(der_hex))


def test_out_of_range_signature_values_are_rejected() -> None:
    n_der = sm2.N.to_bytes(33, "big")  # leading 00 since n's top bit is set
    der = bytes([0x30, 3 + len(n_der) + 3, 0x02, len(n_der)]) + n_der + b"\x02\x01\x01"
    with pytest.raises(sm2.SM2Error):
        sm2.decode_der_signature(der)
    with pytest.raises(sm2.SM2Error):
        sm2.decode_raw_signature(bytes(64))
    with pytest.raises(sm2.SM2Error):
        sm2.decode_raw_signature(bytes(63))
    with pytest.raises(sm2.SM2Error):
        sm2.encode_der_signature(0, 1)
    with pytest.raises(sm2.SM2Error):
        sm2.encode_raw_signature(1, sm2.N)


def test_tampering_is_detected() -> None:
    d = sm2.generate_private_key()
    q = sm2.public_point(d)
    message = b"declaration 1"
    r, s = sm2.sign_message(d, message)
    assert sm2.verify_message(q, message, r, s)
    assert not sm2.verify_message(q, b"declaration 2", r, s)
    assert not sm2.verify_message(q, message, r + 1, s)
    assert not sm2.verify_message(q, message, r, s + 1)
    assert not sm2.verify_message(q, message, s, r)
    assert not sm2.verify_message(q, message, r, sm2.N - r)  # r + s = n is refused
    assert not sm2.verify_message(q, message, 0, s)
    assert not sm2.verify_message(q, message, r, sm2.N)
    assert not sm2.verify_message(sm2.public_point(d + 1), message, r, s)
    assert not sm2.verify_message(q, message, r, s, user_id=b"8765432187654321")
    e = sm2.message_digest(q, message)
    assert sm2.verify_digest(q, e, r, s)
    assert not sm2.verify_digest(q, bytes([e[0] ^ 0x80]) + e[1:], r, s)
    with pytest.raises(sm2.SM2Error):
        sm2.verify_digest(q, e[:31], r, s)
    with pytest.raises(sm2.SM2Error):
        sm2.sign_digest(d, e + b"\x00")


def test_signatures_are_randomised() -> None:
    d = sm2.generate_private_key()
    e = sm2.sm3(b"same input")
    assert sm2.sign_digest(d, e) != sm2.sign_digest(d, e)


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    ca_key: int
    ca_point: tuple[int, int]
    ca_der: bytes
    leaf_point: tuple[int, int]
    leaf_der: bytes


CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eport-middleware TEST"),
        x509.NameAttribute(NameOID.COMMON_NAME, "测试根证书 SM2 TEST CA"),
    ]
)
LEAF_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "上海某某进出口有限公司"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "法人卡"),
        x509.NameAttribute(NameOID.COMMON_NAME, "张三"),
    ]
)
EXTRA_OID = "1.3.6.1.4.1.99999.1"
EXTRA_VALUE = asn1_core.UTF8String('{"企业": "测试"}').dump()


def make_chain() -> Chain:
    now = datetime.now(UTC)
    ca_key = sm2.generate_private_key()
    ca_point = sm2.public_point(ca_key)
    ca_der = sm2_x509.build_certificate(
        subject=CA_NAME,
        issuer=CA_NAME,
        subject_public_point=ca_point,
        issuer_private_key=ca_key,
        issuer_public_point=ca_point,
        serial_number=0x1F2E3D4C5B6A,
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=3650),
        is_ca=True,
    )
    leaf_point = sm2.public_point(sm2.generate_private_key())
    leaf_der = sm2_x509.build_certificate(
        subject=LEAF_NAME,
        issuer=CA_NAME,
        subject_public_point=leaf_point,
        issuer_private_key=ca_key,
        issuer_public_point=ca_point,
        serial_number=0x0123456789ABCDEF,
        not_before=now - timedelta(minutes=5),
        not_after=datetime(2051, 6, 30, 12, 0, tzinfo=UTC),  # GeneralizedTime territory
        is_ca=False,
        extensions=[(EXTRA_OID, False, EXTRA_VALUE)],
    )
    return Chain(ca_key, ca_point, ca_der, leaf_point, leaf_der)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def write_pem(path: Path, der: bytes) -> Path:
    path.write_bytes(pem_block("CERTIFICATE", der))
    return path


def test_openssl_verifies_the_chain(openssl: str, chain: Chain, tmp_path: Path) -> None:
    ca = write_pem(tmp_path / "ca.pem", chain.ca_der)
    leaf = write_pem(tmp_path / "leaf.pem", chain.leaf_der)
    out = run(openssl, "verify", "-vfyopt", DISTID, "-CAfile", str(ca), str(leaf)).stdout
    assert out.strip() == f"{leaf}: OK"

    # A changed serial number breaks the CA's signature, and OpenSSL has to notice.
    serial = (0x0123456789ABCDEF).to_bytes(8, "big")
    assert chain.leaf_der.count(serial) == 1
    tampered = write_pem(
        tmp_path / "tampered.pem",
        chain.leaf_der.replace(serial, (0x0123456789ABCDEE).to_bytes(8, "big")),
    )
    bad = run(openssl, "verify", "-vfyopt", DISTID, "-CAfile", str(ca), str(tampered), check=False)
    assert bad.returncode != 0
    assert "certificate signature failure" in bad.stdout + bad.stderr

    # So is a CA of the same name holding another key.
    impostor = write_pem(tmp_path / "impostor-ca.pem", make_chain().ca_der)
    bad = run(
        openssl, "verify", "-vfyopt", DISTID, "-CAfile", str(impostor), str(leaf), check=False
    )
    assert bad.returncode != 0
    assert "OK" not in bad.stdout


def test_openssl_verifies_the_root_self_signature(
    openssl: str, chain: Chain, tmp_path: Path
) -> None:
    # `openssl verify -check_ss_sig` cannot do this on 3.0 (it drops the distid for trusted
    # certificates), so the parts are cut out with OpenSSL's own ASN.1 parser instead.
    ca = write_pem(tmp_path / "ca.pem", chain.ca_der)
    listing = run(openssl, "asn1parse", "-in", str(ca)).stdout.splitlines()
    tbs = re.match(r"\s*(\d+):d=1\s+hl=(\d+)\s+l=\s*(\d+)\s+cons: SEQUENCE", listing[1])
    assert tbs is not None
    start, header, length = (int(g) for g in tbs.groups())
    (tmp_path / "tbs.der").write_bytes(chain.ca_der[start : start + header + length])
    sig_offset = re.match(r"\s*(\d+):d=1 .*BIT STRING", listing[-1])
    assert sig_offset is not None
    run(
        openssl,
        "asn1parse",
        "-in",
        str(ca),
        "-strparse",
        sig_offset.group(1),
        "-noout",
        "-out",
        str(tmp_path / "sig.der"),
    )
    pub = tmp_path / "pub.pem"
    pub.write_text(run(openssl, "x509", "-in", str(ca), "-pubkey", "-noout").stdout)
    out = run(
        openssl,
        "dgst",
        "-sm3",
        "-verify",
        str(pub),
        "-sigopt",
        DISTID,
        "-signature",
        str(tmp_path / "sig.der"),
        str(tmp_path / "tbs.der"),
    ).stdout
    assert "Verified OK" in out


def test_openssl_shows_the_fields(openssl: str, chain: Chain, tmp_path: Path) -> None:
    leaf = write_pem(tmp_path / "leaf.pem", chain.leaf_der)
    text = run(
        openssl,
        "x509",
        "-in",
        str(leaf),
        "-noout",
        "-text",
        "-nameopt",
        "utf8,sep_comma_plus_space",
    ).stdout
    assert "Version: 3 (0x2)" in text
    assert "Signature Algorithm: SM2-with-SM3" in text
    assert "Subject: C=CN, O=上海某某进出口有限公司, OU=法人卡, CN=张三" in text
    assert "Issuer: C=CN, O=eport-middleware TEST, CN=测试根证书 SM2 TEST CA" in text
    assert "ASN1 OID: SM2" in text
    assert "Not After : Jun 30 12:00:00 2051 GMT" in text
    assert re.search(r"Basic Constraints: critical\s+CA:FALSE", text)
    assert re.search(r"Key Usage: critical\s+Digital Signature, Non Repudiation", text)
    ski = sm2_x509.key_identifier(chain.leaf_point).hex(":").upper()
    aki = sm2_x509.key_identifier(chain.ca_point).hex(":").upper()
    assert re.search(r"Subject Key Identifier:\s+" + ski, text)
    assert re.search(r"Authority Key Identifier:\s+(keyid:)?" + aki, text)
    assert "1.3.6.1.4.1.99999.1:" in text
    serial = run(openssl, "x509", "-in", str(leaf), "-noout", "-serial").stdout
    assert serial.strip() == "serial=0123456789ABCDEF"

    ca = write_pem(tmp_path / "ca.pem", chain.ca_der)
    ca_text = run(openssl, "x509", "-in", str(ca), "-noout", "-text").stdout
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE", ca_text)
    assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", ca_text)


def test_cryptography_reads_our_certificate(chain: Chain) -> None:
    cert = x509.load_der_x509_certificate(chain.leaf_der)
    assert cert.subject == LEAF_NAME
    assert cert.issuer == CA_NAME
    assert cert.version is x509.Version.v3
    assert cert.signature_algorithm_oid.dotted_string == sm2.SM2_WITH_SM3_OID
    extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(EXTRA_OID))
    assert not extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value == EXTRA_VALUE
    assert cert.serial_number == 0x0123456789ABCDEF
    assert cert.not_valid_after_utc == datetime(2051, 6, 30, 12, 0, tzinfo=UTC)
    ca = x509.load_der_x509_certificate(chain.ca_der)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_our_certificate_helpers(chain: Chain) -> None:
    assert sm2_x509.verify_certificate_signature(chain.ca_der, chain.ca_point)
    assert sm2_x509.verify_certificate_signature(chain.leaf_der, chain.ca_point)
    assert not sm2_x509.verify_certificate_signature(chain.leaf_der, chain.leaf_point)
    assert sm2_x509.certificate_public_point(chain.leaf_der) == chain.leaf_point
    assert sm2_x509.certificate_public_point(chain.ca_der) == chain.ca_point
    serial = (0x0123456789ABCDEF).to_bytes(8, "big")
    assert chain.leaf_der.count(serial) == 1
    tampered = chain.leaf_der.replace(serial, (0x0123456789ABCDEE).to_bytes(8, "big"))
    assert not sm2_x509.verify_certificate_signature(tampered, chain.ca_point)
    with pytest.raises(sm2.SM2Error):
        sm2_x509.verify_certificate_signature(b"\x30\x03\x02\x01\x01", chain.ca_point)


def test_unsigned_algorithm_field_must_match(chain: Chain) -> None:
    # The outer signatureAlgorithm sits after the TBS and is not covered by the signature.
    sm2_sm3 = bytes.fromhex("06082a811ccf55018375")
    ecdsa_sha256 = bytes.fromhex("06082a8648ce3d040302")
    at = chain.leaf_der.rfind(sm2_sm3)
    tbs = x509.load_der_x509_certificate(chain.leaf_der).tbs_certificate_bytes
    assert at >= chain.leaf_der.index(tbs) + len(tbs)
    relabelled = chain.leaf_der[:at] + ecdsa_sha256 + chain.leaf_der[at + len(sm2_sm3) :]
    assert not sm2_x509.verify_certificate_signature(relabelled, chain.ca_point)


def test_build_certificate_refuses_bad_input(chain: Chain) -> None:
    def build(
        issuer_public_point: tuple[int, int] = chain.ca_point,
        serial_number: int = 7,
        extensions: tuple[tuple[str, bool, bytes], ...] = (),
    ) -> bytes:
        now = datetime.now(UTC)
        return sm2_x509.build_certificate(
            subject=LEAF_NAME,
            issuer=CA_NAME,
            subject_public_point=chain.leaf_point,
            issuer_private_key=chain.ca_key,
            issuer_public_point=issuer_public_point,
            serial_number=serial_number,
            not_before=now,
            not_after=now + timedelta(days=1),
            is_ca=False,
            extensions=extensions,
        )

    assert sm2_x509.verify_certificate_signature(build(), chain.ca_point)
    with pytest.raises(ValueError, match="does not belong"):
        build(issuer_public_point=chain.leaf_point)
    with pytest.raises(ValueError, match="serial"):
        build(serial_number=0)
    with pytest.raises(ValueError, match="twice"):
        build(extensions=(("2.5.29.19", True, b"\x30\x00"),))


def test_certificate_pem_matches_cryptography_serialisation(chain: Chain) -> None:
    # ca.py turns our DER into PEM with cryptography; it must not re-encode anything.
    cert = x509.load_der_x509_certificate(chain.leaf_der)
    assert cert.public_bytes(serialization.Encoding.DER) == chain.leaf_der
    assert cert.tbs_certificate_bytes in chain.leaf_der
    e = sm2.message_digest(chain.ca_point, cert.tbs_certificate_bytes)
    r, s = sm2.decode_der_signature(cert.signature)
    assert sm2.verify_digest(chain.ca_point, e, r, s)
