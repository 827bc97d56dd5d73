"""SM2 encryption (GM/T 0003.4) and encrypt_to_certificate, checked against OpenSSL 3.

OpenSSL 3.0 takes a key on the SM2 curve as an SM2 key (its type shows as "SM2" in
`openssl pkey -text`), so `openssl pkeyutl -encrypt/-decrypt` does SM2 encryption with it and
needs no -pkeyopt; it reads and writes the GM/T 0009 ASN.1 form only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from eport.common import envelope_crypto, sm2, sm2_encryption
from eport.common.envelope_crypto import (
    CiphertextDoesNotDecryptError,
    CiphertextForm,
    PlaintextSizeError,
    UnsuitableCertificateError,
)
from eport.firmware_sim import sm2_x509
from tests.support.openssl_tool import run_checked as run

# GM/T 0003.5-2012 Appendix C encryption example uses a test curve, not sm2p256v1, so the
# interoperability checks below use OpenSSL as the independent implementation instead.


@pytest.fixture(scope="module")
def key() -> int:
    return sm2.generate_private_key()


@pytest.fixture
def key_file(key: int, tmp_path: Path) -> Path:
    path = tmp_path / "sm2.pem"
    path.write_bytes(sm2.private_key_pem(key))
    return path


# --- round trips and forms ----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 31, 32, 33, 245, 4096])
def test_round_trip_in_both_forms(key: int, size: int) -> None:
    message = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    ciphertext = sm2_encryption.encrypt(sm2.public_point(key), message)
    asn1 = sm2_encryption.encode_asn1(ciphertext)
    raw = sm2_encryption.encode_c1c3c2(ciphertext)
    assert asn1[0] == 0x30 and raw[0] == 0x04
    assert len(raw) == 65 + 32 + size
    for decoded in (sm2_encryption.decode_asn1(asn1), sm2_encryption.decode_c1c3c2(raw)):
        assert decoded == ciphertext
        assert sm2_encryption.decrypt(key, decoded) == message


def test_each_encryption_is_fresh(key: int) -> None:
    q = sm2.public_point(key)
    first, second = (sm2_encryption.encrypt(q, b"same message") for _ in range(2))
    assert first.c1 != second.c1 and first.c2 != second.c2


def test_decryption_split_as_between_card_and_host(key: int) -> None:
    ciphertext = sm2_encryption.encrypt(sm2.public_point(key), b"card does d*C1")
    shared = sm2_encryption.shared_point(key, ciphertext)  # what the card returns
    assert sm2_encryption.finish_decryption(ciphertext, shared) == b"card does d*C1"


def test_another_key_or_a_tampered_c3_or_c2_does_not_decrypt(key: int) -> None:
    ciphertext = sm2_encryption.encrypt(sm2.public_point(key), b"for one key only")
    with pytest.raises(sm2_encryption.SM2DecryptionError, match="C3"):
        sm2_encryption.decrypt(sm2.generate_private_key(), ciphertext)
    raw = bytearray(sm2_encryption.encode_c1c3c2(ciphertext))
    for position in (65, 65 + 31, 65 + 32, len(raw) - 1):  # first and last of C3 and C2
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(sm2_encryption.SM2DecryptionError):
            sm2_encryption.decrypt(key, sm2_encryption.decode_c1c3c2(bytes(tampered)))


def test_c1_off_the_curve_is_refused_before_any_key_is_used(key: int) -> None:
    ciphertext = sm2_encryption.encrypt(sm2.public_point(key), b"x")
    raw = bytearray(sm2_encryption.encode_c1c3c2(ciphertext))
    raw[64] ^= 0x01  # y1 changed: (x1, y1') is not on the curve
    with pytest.raises(sm2.SM2Error, match="not on the curve"):
        sm2_encryption.decode_c1c3c2(bytes(raw))
    x, y = ciphertext.c1
    off = sm2_encryption.SM2Ciphertext((x, (y + 1) % sm2.P), ciphertext.c3, ciphertext.c2)
    with pytest.raises(sm2.SM2Error, match="not on the curve"):
        sm2_encryption.decode_asn1(sm2_encryption.encode_asn1(off))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x04" + bytes(64 + 32),  # no C2
        b"\x02" + bytes(32 + 32 + 5),  # compressed C1 is not a form of ours
        b"\x30\x03\x02\x01\x01",  # SEQUENCE with one INTEGER
        b"\x30\x80\x00\x00",  # indefinite length
    ],
)
def test_malformed_ciphertexts_are_refused(raw: bytes) -> None:
    with pytest.raises(sm2.SM2Error):
        if sm2_encryption.looks_like_asn1(raw):
            sm2_encryption.decode_asn1(raw)
        else:
            sm2_encryption.decode_c1c3c2(raw)


def test_empty_and_oversized_messages_are_refused(key: int) -> None:
    q = sm2.public_point(key)
    with pytest.raises(sm2.SM2Error, match="empty"):
        sm2_encryption.encrypt(q, b"")
    with pytest.raises(sm2.SM2Error, match="at most"):
        sm2_encryption.encrypt(q, bytes(sm2_encryption.MAX_PLAINTEXT_BYTES + 1))


def test_kdf_counts_from_one_in_32_bit_big_endian() -> None:
    z = b"\x01" * 64
    assert sm2_encryption.kdf(z, 40) == (sm2.sm3(z + b"\0\0\0\1") + sm2.sm3(z + b"\0\0\0\2"))[:40]


# --- against OpenSSL 3 ---------------------------------------------------------------------


def test_openssl_ciphertext_decrypts_here_in_both_forms(
    openssl: str, key: int, key_file: Path, tmp_path: Path
) -> None:
    assert b"SM2" in run(openssl, "pkey", "-in", str(key_file), "-text", "-noout").upper()
    run(openssl, "pkey", "-in", str(key_file), "-pubout", "-out", str(tmp_path / "pub.pem"))
    message = "报关单 encrypted by OpenSSL".encode()
    (tmp_path / "m").write_bytes(message)
    run(openssl, "pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
        "-in", str(tmp_path / "m"), "-out", str(tmp_path / "c"))
    asn1 = (tmp_path / "c").read_bytes()
    parsed = sm2_encryption.decode_asn1(asn1)
    assert sm2_encryption.decrypt(key, parsed) == message
    assert sm2_encryption.encode_asn1(parsed) == asn1  # re-encoded byte for byte
    raw = sm2_encryption.encode_c1c3c2(parsed)
    assert sm2_encryption.decrypt(key, sm2_encryption.decode_c1c3c2(raw)) == message


def test_our_ciphertext_decrypts_with_openssl(
    openssl: str, key: int, key_file: Path, tmp_path: Path
) -> None:
    message = b"\x00\x01 binary \xff" * 20
    ciphertext = sm2_encryption.encrypt(sm2.public_point(key), message)
    (tmp_path / "c").write_bytes(sm2_encryption.encode_asn1(ciphertext))
    out = run(openssl, "pkeyutl", "-decrypt", "-inkey", str(key_file), "-in", str(tmp_path / "c"))
    assert out == message


# --- encrypt_to_certificate ----------------------------------------------------------------


def _rsa_certificate(usage: x509.KeyUsage | None, bits: int = 2048
                     ) -> tuple[bytes, rsa.RSAPrivateKey]:
    private = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envelope test")])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(private.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    certificate = builder.sign(private, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER), private


def _usage(**bits: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names})


def _sm2_certificate(d: int, usage: x509.KeyUsage | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sm2 envelope test")])
    now = datetime.now(UTC)
    return sm2_x509.build_certificate(
        subject=name, issuer=name, subject_public_point=sm2.public_point(d),
        issuer_private_key=d, issuer_public_point=sm2.public_point(d), serial_number=7,
        not_before=now, not_after=now + timedelta(days=1), is_ca=False, key_usage=usage)


def test_rsa_certificate_gets_pkcs1_v15_and_the_size_limit() -> None:
    der, private = _rsa_certificate(_usage(key_encipherment=True))
    ciphertext = envelope_crypto.encrypt_to_certificate(der, b"k" * 245)
    assert len(ciphertext) == 256
    assert private.decrypt(ciphertext, padding.PKCS1v15()) == b"k" * 245
    with pytest.raises(PlaintextSizeError, match="at most 245"):
        envelope_crypto.encrypt_to_certificate(der, b"k" * 246)
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    assert private.decrypt(envelope_crypto.encrypt_to_certificate(pem, b""),
                           padding.PKCS1v15()) == b""


def test_sm2_certificate_gets_the_asn1_form(key: int) -> None:
    der = _sm2_certificate(key, _usage(key_encipherment=True, data_encipherment=True,
                                       key_agreement=True))
    ciphertext = envelope_crypto.encrypt_to_certificate(der, "机密".encode())
    assert sm2_encryption.decrypt(key, sm2_encryption.decode_asn1(ciphertext)) == "机密".encode()
    with pytest.raises(PlaintextSizeError, match="empty"):
        envelope_crypto.encrypt_to_certificate(der, b"")


def test_unsuitable_certificates_are_refused_with_a_reason(key: int) -> None:
    signing_only, _ = _rsa_certificate(_usage(digital_signature=True, content_commitment=True))
    with pytest.raises(UnsuitableCertificateError, match="not for encryption"):
        envelope_crypto.encrypt_to_certificate(signing_only, b"x")
    with pytest.raises(UnsuitableCertificateError, match="not for encryption"):
        envelope_crypto.encrypt_to_certificate(_sm2_certificate(key, None), b"x")  # signing
    with pytest.raises(UnsuitableCertificateError, match=r"X\.509"):
        envelope_crypto.encrypt_to_certificate(b"\x30\x03\x02\x01\x00", b"x")
    p256 = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p256")])
    now = datetime.now(UTC)
    p256_der = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(p256.public_key()).serial_number(2).not_valid_before(now)
                .not_valid_after(now + timedelta(days=1)).sign(p256, hashes.SHA256())
                ).public_bytes(serialization.Encoding.DER)
    with pytest.raises(UnsuitableCertificateError, match="secp256r1"):
        envelope_crypto.encrypt_to_certificate(p256_der, b"x")
    # Every refusal is a ValueError, so callers that only know ValueError still catch it.
    assert issubclass(envelope_crypto.EnvelopeError, ValueError)


def test_certificate_without_key_usage_is_not_restricted() -> None:
    der, private = _rsa_certificate(None, bits=1024)
    ciphertext = envelope_crypto.encrypt_to_certificate(der, b"no keyUsage")
    assert private.decrypt(ciphertext, padding.PKCS1v15()) == b"no keyUsage"


# --- the host's half of the card's decryption ---------------------------------------------


def test_parse_ciphertext_names_the_form_and_refuses_shapes_of_other_keys(key: int) -> None:
    sm2_key = envelope_crypto.Sm2EnvelopeKey(sm2.public_point(key))
    ciphertext = sm2_encryption.encrypt(sm2_key.point, b"m")
    asn1 = envelope_crypto.parse_ciphertext(sm2_key, sm2_encryption.encode_asn1(ciphertext))
    raw = envelope_crypto.parse_ciphertext(sm2_key, sm2_encryption.encode_c1c3c2(ciphertext))
    assert (asn1.form, raw.form) == (CiphertextForm.SM2_ASN1, CiphertextForm.SM2_C1C3C2)
    assert asn1.sm2_c1 == raw.sm2_c1 == sm2.encode_point(ciphertext.c1)
    der, _private = _rsa_certificate(_usage(key_encipherment=True))
    rsa_key = envelope_crypto.envelope_key(der)
    assert isinstance(rsa_key, envelope_crypto.RsaEnvelopeKey)
    for wrong in (bytes(255), bytes(257), b"\xff" * 256):  # length, length, not below n
        with pytest.raises(CiphertextDoesNotDecryptError):
            envelope_crypto.parse_ciphertext(rsa_key, wrong)
    with pytest.raises(CiphertextDoesNotDecryptError, match="SM2 ciphertext"):
        envelope_crypto.parse_ciphertext(sm2_key, bytes(256))


def test_rsa_padding_is_checked_after_the_raw_operation() -> None:
    der, private = _rsa_certificate(_usage(key_encipherment=True), bits=1024)
    rsa_key = envelope_crypto.envelope_key(der)
    assert isinstance(rsa_key, envelope_crypto.RsaEnvelopeKey)
    numbers = private.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d

    def raw(ciphertext: bytes) -> bytes:  # what the card's 9D operation returns
        return pow(int.from_bytes(ciphertext, "big"), d, n).to_bytes(128, "big")

    good = envelope_crypto.encrypt_to_certificate(der, b"session key")
    assert envelope_crypto.rsa_remove_padding(rsa_key, raw(good)) == b"session key"
    other, _ = _rsa_certificate(_usage(key_encipherment=True), bits=1024)
    foreign = envelope_crypto.encrypt_to_certificate(other, b"session key")
    # Reduced below this key's modulus, as it must be to reach the card at all.
    foreign = (int.from_bytes(foreign, "big") % n).to_bytes(128, "big")
    with pytest.raises(CiphertextDoesNotDecryptError, match="PKCS#1"):
        envelope_crypto.rsa_remove_padding(rsa_key, raw(foreign))
    short_padding = b"\x00\x02" + b"\x01" * 7 + b"\x00" + bytes(118)
    with pytest.raises(CiphertextDoesNotDecryptError):
        envelope_crypto.rsa_remove_padding(rsa_key, short_padding)


def test_sm2_finish_reports_another_key_as_not_decrypting(key: int) -> None:
    sm2_key = envelope_crypto.Sm2EnvelopeKey(sm2.public_point(key))
    parsed = envelope_crypto.parse_ciphertext(
        sm2_key, sm2_encryption.encode_asn1(sm2_encryption.encrypt(sm2_key.point, b"m")))
    assert parsed.sm2 is not None
    good = sm2.encode_point(sm2_encryption.shared_point(key, parsed.sm2))
    assert envelope_crypto.sm2_finish(parsed, good) == b"m"
    wrong = sm2.encode_point(sm2_encryption.shared_point(sm2.generate_private_key(), parsed.sm2))
    with pytest.raises(CiphertextDoesNotDecryptError, match="C3"):
        envelope_crypto.sm2_finish(parsed, wrong)
    with pytest.raises(envelope_crypto.EnvelopeError, match="not an SM2 point"):
        envelope_crypto.sm2_finish(parsed, b"\x04" + bytes(64))
