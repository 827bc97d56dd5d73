"""The simulated card's envelope key (slot 9D, certificate 5FC10B), in-process.

The card does decryption's private step only; the host's half (eport.common.envelope_crypto)
finishes it, as eportd does. These tests drive the card through the daemon's own PivSession.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from eport.cardlib.errors import CardError, SecurityStatusError
from eport.cardlib.pcsc.piv_session import PivSession
from eport.common import envelope_crypto, sm2, sm2_encryption
from eport.common.apdu import SW
from eport.common.piv import Algorithm, DataObject, Slot
from eport.common.tlv import tlv
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.card_os import CardOS
from eport.firmware_sim.image import CardImage, CardImageError, _checksum, read_image
from tests.support.cards import provision_test_card, write_card
from tests.support.in_process_card import send, session

CardFactory = Callable[..., tuple[CardOS, Path]]
PIN = b"88888888"
ALGORITHM = {"rsa2048": Algorithm.RSA_2048, "rsa1024": Algorithm.RSA_1024,
             "sm2": Algorithm.SM2_SM3}


def card_decrypt(piv: PivSession, algorithm: str, certificate: bytes, ciphertext: bytes) -> bytes:
    """What eportd does: check the shape, the card's private step, then the host's finish."""
    key = envelope_crypto.envelope_key(certificate)
    parsed = envelope_crypto.parse_ciphertext(key, ciphertext)
    if isinstance(key, envelope_crypto.RsaEnvelopeKey):
        raw = piv.decrypt_step(ALGORITHM[algorithm], parsed.rsa_block, sm2=False)
        return envelope_crypto.rsa_remove_padding(key, raw)
    raw = piv.decrypt_step(ALGORITHM[algorithm], parsed.sm2_c1, sm2=True)
    return envelope_crypto.sm2_finish(parsed, raw)


# -- provisioning -----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa2048", "rsa1024", "sm2"])
def test_rsa_and_sm2_cards_carry_an_envelope_certificate_from_the_same_ca(
    make_card: CardFactory, test_ca: TestCA, algorithm: str
) -> None:
    card, _ = make_card(algorithm)
    piv = session(card)
    envelope = x509.load_der_x509_certificate(piv.read_certificate(Slot.KEY_MANAGEMENT))
    signing = x509.load_der_x509_certificate(piv.read_certificate(Slot.SIGNATURE))
    assert envelope.subject == signing.subject
    assert envelope.issuer == signing.issuer
    assert envelope.serial_number != signing.serial_number
    assert len(format(envelope.serial_number, "x")) == len(format(signing.serial_number, "x"))
    usage = envelope.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and usage.data_encipherment
    assert not usage.digital_signature and not usage.content_commitment
    assert usage.key_agreement is (algorithm == "sm2")
    if algorithm == "sm2":
        assert sm2_x509_verifies(envelope, test_ca)
    else:
        envelope.verify_directly_issued_by(test_ca.rsa_certificate)
        key = envelope.public_key()
        assert key.key_size == (2048 if algorithm == "rsa2048" else 1024)  # type: ignore[union-attr]


def sm2_x509_verifies(certificate: x509.Certificate, test_ca: TestCA) -> bool:
    from cryptography.hazmat.primitives import serialization

    from eport.common.sm2_cert import verify_certificate_signature

    return verify_certificate_signature(certificate.public_bytes(serialization.Encoding.DER),
                                        sm2.public_point(test_ca.sm2_key))


def test_p256_cards_and_opted_out_cards_have_no_envelope_key(
    make_card: CardFactory, test_ca: TestCA
) -> None:
    for image in (provision_test_card(test_ca, "p256"),
                  provision_test_card(test_ca, "sm2", envelope_key=False)):
        assert not image.has_envelope_key
        card, _ = make_card(image.profile.algorithm, image=image)
        assert send(card, "00CB3FFF 05 5C035FC10B 00")[1] == SW.FILE_NOT_FOUND
        body = tlv(0x7C, tlv(0x82, b"") + tlv(0x85, bytes(65))).hex()
        assert send(card, f"0087E89D {len(body) // 2:02X} {body} 00")[1] == SW.REFERENCE_NOT_FOUND


def test_old_images_without_the_envelope_key_still_load(
    test_ca: TestCA, tmp_path: Path
) -> None:
    image = provision_test_card(test_ca, "rsa1024", envelope_key=False)
    body = image.to_json()
    assert "envelope_private_key" not in body and "envelope_certificate" not in body
    path = write_card(image, tmp_path)
    loaded = read_image(path)
    assert loaded == image and loaded.envelope_certificate is None
    # Half an envelope key is damage, not an old format.
    with_key = provision_test_card(test_ca, "rsa1024").to_json()
    del with_key["envelope_certificate"], with_key["checksum"]
    with_key["checksum"] = _checksum(with_key)  # damage that the checksum does not see
    with pytest.raises(ValueError, match="together"):
        CardImage.from_json(with_key)
    (tmp_path / "half.json").write_text(json.dumps(with_key))
    with pytest.raises(CardImageError, match="corrupt"):
        read_image(tmp_path / "half.json")


# -- decryption ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa2048", "rsa1024", "sm2"])
def test_the_card_decrypts_what_is_encrypted_to_its_envelope_certificate(
    make_card: CardFactory, algorithm: str
) -> None:
    card, _ = make_card(algorithm)
    piv = session(card)
    piv.verify_pin(PIN)
    certificate = piv.read_certificate(Slot.KEY_MANAGEMENT)
    ciphertext = envelope_crypto.encrypt_to_certificate(certificate, "会话密钥 key".encode())
    assert card_decrypt(piv, algorithm, certificate, ciphertext) == "会话密钥 key".encode()


def test_sm2_card_decrypts_the_raw_c1c3c2_form_too(make_card: CardFactory) -> None:
    card, _ = make_card("sm2")
    piv = session(card)
    piv.verify_pin(PIN)
    certificate = piv.read_certificate(Slot.KEY_MANAGEMENT)
    key = envelope_crypto.envelope_key(certificate)
    assert isinstance(key, envelope_crypto.Sm2EnvelopeKey)
    raw = sm2_encryption.encode_c1c3c2(sm2_encryption.encrypt(key.point, b"raw form"))
    assert card_decrypt(piv, "sm2", certificate, raw) == b"raw form"


@pytest.mark.parametrize("algorithm", ["rsa1024", "sm2"])
def test_the_envelope_key_needs_the_pin_like_the_signing_key(
    make_card: CardFactory, algorithm: str
) -> None:
    card, _ = make_card(algorithm)
    piv = session(card)
    certificate = piv.read_certificate(Slot.KEY_MANAGEMENT)
    ciphertext = envelope_crypto.encrypt_to_certificate(certificate, b"secret")
    with pytest.raises(SecurityStatusError):
        card_decrypt(piv, algorithm, certificate, ciphertext)
    piv.verify_pin(PIN)
    assert card_decrypt(piv, algorithm, certificate, ciphertext) == b"secret"
    piv.logout()
    with pytest.raises(SecurityStatusError):
        card_decrypt(piv, algorithm, certificate, ciphertext)


def test_a_ciphertext_for_another_card_is_found_out_on_the_host(
    make_card: CardFactory, test_ca: TestCA
) -> None:
    mine, _ = make_card("sm2")
    other, _ = make_card("sm2", image=provision_test_card(test_ca, "sm2"))  # its own keys
    piv = session(mine)
    piv.verify_pin(PIN)
    my_certificate = piv.read_certificate(Slot.KEY_MANAGEMENT)
    foreign = envelope_crypto.encrypt_to_certificate(
        session(other).read_certificate(Slot.KEY_MANAGEMENT), b"not for you")
    with pytest.raises(envelope_crypto.CiphertextDoesNotDecryptError, match="C3"):
        card_decrypt(piv, "sm2", my_certificate, foreign)
    assert mine.pin_verified and mine.image.pin.tries_left == 3


def _c1(point: bytes) -> str:
    body = tlv(0x7C, tlv(0x82, b"") + tlv(0x85, point)).hex()
    return f"0087E89D {len(body) // 2:02X} {body} 00"


def test_bad_sm2_points_get_a_status_word_and_change_nothing(make_card: CardFactory) -> None:
    card, path = make_card("sm2")
    session(card).verify_pin(PIN)
    before = path.read_bytes()
    good = sm2.encode_point(sm2.public_point(12345))
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    compressed = bytes([2 + (good[-1] & 1)]) + good[1:33]
    for bad in (off_curve, compressed, good[:-1], good + b"\x00", b"\x04" + bytes(64),
                b"\x04" + sm2.P.to_bytes(32, "big") + bytes(32)):
        assert send(card, _c1(bad))[1] == SW.INCORRECT_DATA
    assert path.read_bytes() == before and card.pin_verified
    data, sw = send(card, _c1(good))
    assert sw == SW.OK and len(data) == 2 + 2 + 65


@pytest.mark.parametrize(
    ("algorithm", "apdu", "expected"),
    [
        # SM2's input is tag 85; the signing shape (81) is refused for 9D.
        ("sm2", "0087E89D 26 7C24 8200 8120" + "11" * 32 + "00", SW.INCORRECT_DATA),
        ("sm2", "0087079D 05 7C03 850100 00", SW.INCORRECT_P1P2),  # another algorithm
        ("rsa1024", "0087069D 08 7C06 8200 810200FF 00", SW.INCORRECT_DATA),  # wrong length
        ("rsa1024", "0087069D 07 7C05 8200 850100 00", SW.INCORRECT_DATA),  # RSA takes 81
        ("rsa1024", "0087069D 88 7C8185 8200 818180" + "FF" * 128 + "00",
         SW.INCORRECT_DATA),  # not below the modulus
    ],
)
def test_malformed_decryption_requests_get_a_status_word(
    make_card: CardFactory, algorithm: str, apdu: str, expected: int
) -> None:
    card, path = make_card(algorithm)
    session(card).verify_pin(PIN)
    before = path.read_bytes()
    assert send(card, apdu)[1] == expected
    assert path.read_bytes() == before and card.pin_verified


def test_the_envelope_object_is_listed_by_its_id(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    piv = session(card)
    assert piv.get_object(DataObject.CERT_KEY_MANAGEMENT)[:1] == b"\x70"
    with pytest.raises(CardError):
        piv.get_object(DataObject.CERT_CARD_AUTHENTICATION)


def test_eport_sim_provision_and_show_tell_about_the_envelope_key(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from eport.firmware_sim.cli import cli

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    ca_dir = str(tmp_path / "ca")
    invoke("ca", "init", "--ca", ca_dir)
    shown = invoke("provision", str(tmp_path / "sm2.json"), "--ca", ca_dir)
    image = read_image(tmp_path / "sm2.json")
    assert image.envelope_certificate is not None
    number = format(x509.load_der_x509_certificate(image.envelope_certificate).serial_number, "x")
    assert f"slot 9D, certificate {number}" in shown
    invoke("provision", str(tmp_path / "none.json"), "--ca", ca_dir, "--no-envelope-key")
    summary = json.loads(invoke("show", str(tmp_path / "none.json"), "--json"))
    assert summary["envelope_cert_number"] is None
    assert not read_image(tmp_path / "none.json").has_envelope_key
