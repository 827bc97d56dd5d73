"""The card operating system through the in-process transport: the PIV card edge, the E-port
profile, the PIN/PUK rules and persistence (SP 800-73-4, E-port cards in the field, bonded
manual §1.1: three wrong PINs lock the card)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from eport.cardlib.errors import InvalidPinError, ReferenceBlockedError, SecurityStatusError
from eport.common.apdu import SW, CommandApdu
from eport.common.piv import PIV_AID, Algorithm, DataObject, KeyRef, pad_pin
from eport.common.profile import CardForm, EportProfile
from eport.common.tlv import parse_tlv, tlv, unwrap
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.card_os import CardOS, load_card
from eport.firmware_sim.image import CardImageError, read_image
from tests.support.cards import provision_test_card
from tests.support.in_process_card import send, session

CardFactory = Callable[..., tuple[CardOS, Path]]
PIN = b"88888888"
PUK = b"12345678"


# -- SELECT and GET DATA -------------------------------------------------------------------


def test_select_answers_the_application_template_with_label_and_algorithm(
    make_card: CardFactory,
) -> None:
    card, _ = make_card("rsa2048")
    data, sw = send(card, "00A40400 0B A000000308000010000100 00")
    assert sw == SW.OK
    template = parse_tlv(unwrap(data, 0x61))
    assert template[0x4F] == PIV_AID[5:]
    assert template[0x50] == b"E-port IC card"
    assert tlv(0x80, bytes([Algorithm.RSA_2048])) in template[0xAC]


def test_select_accepts_the_truncated_aid_and_refuses_others(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    assert send(card, "00A40400 05 A000000308")[1] == SW.OK
    assert send(card, "00A40400 07 A0000001510000")[1] == SW.FILE_NOT_FOUND  # GlobalPlatform
    assert send(card, "00A40000 02 3F00")[1] == SW.FILE_NOT_FOUND
    assert send(card, "00A40400 00")[1] == SW.FILE_NOT_FOUND  # no AID at all (case 2, Le=256)


def test_ikey_has_its_own_atr_and_label(test_ca: TestCA, make_card: CardFactory) -> None:
    ikey, _ = make_card(image=provision_test_card(test_ca, "p256", form=CardForm.IKEY))
    ic, _ = make_card("p256")
    assert ikey.atr != ic.atr
    assert session(ikey).select().label == "E-port IKEY"


def test_objects_carry_the_eport_data(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    piv = session(card)
    profile = piv.read_profile()
    assert profile == card.image.profile
    assert piv.read_card_id() == profile.card_id
    cert = x509.load_der_x509_certificate(piv.read_certificate())
    assert format(cert.serial_number, "x") == profile.cert_number
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == (
        profile.enterprise_name
    )
    discovery = piv.get_object(DataObject.DISCOVERY)
    assert parse_tlv(unwrap(discovery, 0x7E))[0x4F] == PIV_AID


def test_certificate_extension_holds_the_same_profile(make_card: CardFactory) -> None:
    card, _ = make_card("p256")
    cert = x509.load_der_x509_certificate(card.image.certificate)
    ext = cert.extensions.get_extension_for_oid(
        x509.ObjectIdentifier("2.25.266027056450079065916049083661083750188")
    )
    value = ext.value
    assert isinstance(value, x509.UnrecognizedExtension)
    text = core.UTF8String.load(value.value).native
    assert EportProfile.from_json_dict(json.loads(text)) == card.image.profile


def test_le_is_honoured_exactly_and_get_response_delivers_the_rest(
    make_card: CardFactory,
) -> None:
    card, _ = make_card("rsa2048")
    first, sw = send(card, "00CB3FFF 05 5C035FC10A 08")  # OpenSC's length probe
    assert len(first) == 8 and sw >> 8 == 0x61
    whole, sw = send(card, "00CB3FFF 05 5C035FC10A 00")
    assert len(whole) == 256 and sw >> 8 == 0x61
    while sw >> 8 == 0x61:
        more, sw = send(card, f"00C00000{sw & 0xFF:02X}")
        whole += more
    assert sw == SW.OK
    assert whole[:8] == first
    certificate = parse_tlv(unwrap(whole, 0x53))[0x70]
    assert certificate == card.image.certificate


def test_get_data_errors(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    assert send(card, "00CB3FFF 05 5C035FC105 00")[1] == SW.FILE_NOT_FOUND  # no 9A key
    assert send(card, "00CB0000 05 5C035FC10A 00")[1] == SW.INCORRECT_P1P2
    assert send(card, "00CB3FFF 05 5C055FC10A 00")[1] == SW.INCORRECT_DATA  # broken TLV
    assert send(card, "00CB3FFF 02 5C00 00")[1] == SW.INCORRECT_DATA  # empty object id
    assert send(card, "00C00000 00")[1] == SW.CONDITIONS_NOT_SATISFIED  # nothing pending


# -- PIN, PUK and lockout ------------------------------------------------------------------


def test_status_query_spends_nothing(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    for _ in range(5):
        assert send(card, "00200080")[1] == 0x63C3
    assert card.image.pin.tries_left == 3


def test_three_wrong_pins_block_and_the_right_one_is_then_refused(
    make_card: CardFactory,
) -> None:
    card, path = make_card("rsa2048")
    piv = session(card)
    for expected_left in (2, 1):
        with pytest.raises(InvalidPinError) as err:
            piv.verify_pin(b"11111111")
        assert err.value.tries_left == expected_left
    with pytest.raises(ReferenceBlockedError):
        piv.verify_pin(b"11111111")
    with pytest.raises(ReferenceBlockedError):
        piv.verify_pin(PIN)
    assert piv.reference_status().blocked
    assert read_image(path).pin.tries_left == 0  # on disk, not only in memory


def test_right_pin_restores_the_counter(make_card: CardFactory) -> None:
    card, path = make_card("rsa2048")
    piv = session(card)
    with pytest.raises(InvalidPinError):
        piv.verify_pin(b"11111111")
    piv.verify_pin(PIN)
    assert piv.reference_status().verified
    assert read_image(path).pin.tries_left == 3


def test_malformed_pin_never_costs_a_try(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    for bad in ("0020008007 31323334353637", "0020008008 3132333435363738".replace("38", "41"),
                "0020008008 31FF333435363738", "0020008008 31323334FFFFFFFF"):
        assert send(card, bad)[1] == SW.INCORRECT_DATA
    assert card.image.pin.tries_left == 3


def test_puk_unblocks_and_sets_a_new_pin(make_card: CardFactory) -> None:
    card, path = make_card("rsa2048")
    piv = session(card)
    for _ in range(3):
        with pytest.raises((InvalidPinError, ReferenceBlockedError)):
            piv.verify_pin(b"11111111")
    piv.unblock_pin(PUK, b"24682468")
    with pytest.raises(InvalidPinError):
        piv.verify_pin(PIN)
    piv.verify_pin(b"24682468")
    assert read_image(path).pin.tries_left == 3


def test_three_wrong_puks_block_the_card_for_good(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    piv = session(card)
    for _ in range(3):
        with pytest.raises((InvalidPinError, ReferenceBlockedError)):
            piv.unblock_pin(b"00000000", b"24682468")
    assert piv.reference_status(KeyRef.PUK).blocked
    with pytest.raises(ReferenceBlockedError):
        piv.unblock_pin(PUK, b"24682468")  # the right PUK no longer helps
    with pytest.raises(ReferenceBlockedError):
        piv.change_reference(KeyRef.PUK, PUK, b"87654321")


def test_puk_status_is_readable_without_spending(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    assert send(card, "00200081")[1] == 0x63C3
    assert send(card, "00200081 08 3132333435363738")[1] == SW.INCORRECT_P1P2
    assert card.image.puk.tries_left == 3


def test_change_pin(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    piv = session(card)
    with pytest.raises(InvalidPinError) as err:
        piv.change_reference(KeyRef.PIN, b"11111111", b"13572468")
    assert err.value.tries_left == 2
    piv.change_reference(KeyRef.PIN, PIN, b"13572468")
    piv.verify_pin(b"13572468")
    assert card.image.pin.tries_left == 3
    # a malformed new PIN is refused before anything is spent or changed
    assert send(card, "0024008010 3133353732343638 3132FFFFFFFFFFFF")[1] == SW.INCORRECT_DATA
    piv.verify_pin(b"13572468")


def test_security_status_is_cleared_by_power_off_reset_and_logout(
    make_card: CardFactory,
) -> None:
    card, _ = make_card("p256")
    piv = session(card)
    for clear in (card.power_off, card.reset, piv.logout):
        piv.verify_pin(PIN)
        assert card.pin_verified
        clear()
        assert not card.pin_verified
        with pytest.raises(SecurityStatusError):
            piv.sign(Algorithm.ECC_P256, bytes(32))


def test_a_wrong_pin_clears_a_verified_state(make_card: CardFactory) -> None:
    card, _ = make_card("p256")
    piv = session(card)
    piv.verify_pin(PIN)
    with pytest.raises(InvalidPinError):
        piv.verify_pin(b"11111111")
    assert not card.pin_verified


# -- signing -------------------------------------------------------------------------------


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


@pytest.mark.parametrize("algorithm", ["rsa2048", "rsa1024"])
def test_rsa_signature_verifies_with_the_card_certificate(
    make_card: CardFactory, algorithm: str
) -> None:
    card, _ = make_card(algorithm)
    piv = session(card)
    piv.verify_pin(PIN)
    size = 256 if algorithm == "rsa2048" else 128
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    t = digest_info + _sha256(b"customs declaration")
    block = b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t
    alg = Algorithm.RSA_2048 if algorithm == "rsa2048" else Algorithm.RSA_1024
    signature = piv.sign(alg, block)  # RSA-2048 needs command chaining in short APDUs
    public_key = x509.load_der_x509_certificate(card.image.certificate).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, b"customs declaration", padding.PKCS1v15(), hashes.SHA256())


def test_p256_signature_verifies(make_card: CardFactory) -> None:
    card, _ = make_card("p256")
    piv = session(card)
    piv.verify_pin(PIN)
    signature = piv.sign(Algorithm.ECC_P256, _sha256(b"payment data"))
    public_key = x509.load_der_x509_certificate(card.image.certificate).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, b"payment data", ec.ECDSA(hashes.SHA256()))


def test_sign_refuses_wrong_algorithm_key_or_input(make_card: CardFactory) -> None:
    card, _ = make_card("p256")
    piv = session(card)
    piv.verify_pin(PIN)
    body = tlv(0x7C, tlv(0x82, b"") + tlv(0x81, bytes(32))).hex()
    assert send(card, f"0087079C {len(body) // 2:02X} {body} 00")[1] == SW.INCORRECT_P1P2
    assert send(card, f"0087119A {len(body) // 2:02X} {body} 00")[1] == SW.REFERENCE_NOT_FOUND
    short = tlv(0x7C, tlv(0x82, b"") + tlv(0x81, bytes(20))).hex()
    assert send(card, f"0087119C {len(short) // 2:02X} {short} 00")[1] == SW.INCORRECT_DATA
    ecdh = tlv(0x7C, tlv(0x82, b"") + tlv(0x85, bytes(65))).hex()
    assert send(card, f"0087119C {len(ecdh) // 2:02X} {ecdh} 00")[1] == SW.INCORRECT_DATA


def test_rsa_input_not_below_the_modulus_is_refused(make_card: CardFactory) -> None:
    card, _ = make_card("rsa1024")
    piv = session(card)
    piv.verify_pin(PIN)
    body = tlv(0x7C, tlv(0x82, b"") + tlv(0x81, b"\xff" * 128)).hex()
    assert send(card, f"0087069C {len(body) // 2:02X} {body} 00")[1] == (
        SW.INCORRECT_DATA
    )


# -- chaining and malformed APDUs -----------------------------------------------------------


def test_chaining_out_of_order_is_refused_and_the_card_recovers(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    assert send(card, "10879C07 03 7C8200")[1] == SW.OK  # first part of a chain
    assert send(card, "00CB3FFF 05 5C035FC102 00")[1] == SW.LAST_COMMAND_OF_CHAIN_EXPECTED
    assert send(card, "00CB3FFF 05 5C035FC102 00")[1] == SW.OK  # the chain was dropped


def test_oversized_chain_is_refused(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    chunk = "10879C07 FF " + "00" * 255
    sws = {send(card, chunk)[1] for _ in range(20)}
    assert SW.WRONG_LENGTH in sws


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        ("00A404", SW.WRONG_LENGTH),  # shorter than a header
        ("00CB3FFF 05 5C035F", SW.WRONG_LENGTH),  # Lc larger than the data
        ("00CB3FFF 02 5C035FC10200", SW.WRONG_LENGTH),  # Lc smaller than the data
        ("00CB3FFF 00000001", SW.WRONG_LENGTH),  # extended Lc of zero
        ("80CB3FFF 05 5C035FC102", SW.CLA_NOT_SUPPORTED),
        ("0C200080", SW.CLA_NOT_SUPPORTED),  # secure messaging
        ("00FD0000", SW.INS_NOT_SUPPORTED),  # YubiKey GET VERSION: not a YubiKey
        ("0047009C 05 AC03800111", SW.INS_NOT_SUPPORTED),  # no key generation
        ("00200180 08 3838383838383838", SW.INCORRECT_P1P2),
        ("00200082", SW.REFERENCE_NOT_FOUND),
    ],
)
def test_malformed_apdus_get_a_status_word_and_change_nothing(
    make_card: CardFactory, apdu: str, expected: int
) -> None:
    card, path = make_card("rsa2048")
    before = path.read_bytes()
    assert send(card, apdu)[1] == expected
    assert path.read_bytes() == before
    assert card.image.pin.tries_left == 3


def test_extended_apdus_are_understood(make_card: CardFactory) -> None:
    card, _ = make_card("rsa2048")
    command = CommandApdu(0, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC10A"), le=65536,
                          extended=True)
    response = card.execute(command.to_bytes())
    assert response[-2:] == b"\x90\x00"
    assert parse_tlv(unwrap(response[:-2], 0x53))[0x70] == card.image.certificate


# -- persistence ----------------------------------------------------------------------------


def test_counter_survives_reload(make_card: CardFactory) -> None:
    card, path = make_card("rsa2048")
    session(card).reference_status()
    assert send(card, "0020008008 3131313131313131")[1] == 0x63C2
    card.close()
    reloaded = load_card(path)
    try:
        assert send(reloaded, "00200080")[1] == 0x63C2
    finally:
        reloaded.close()


def test_corrupt_image_is_refused_and_left_untouched(make_card: CardFactory, tmp_path: Path
                                                    ) -> None:
    card, path = make_card("rsa2048")
    card.close()
    text = path.read_text()
    damaged = text.replace('"tries_left": 0', '"tries_left": 3').replace(
        '"tries_left": 3', '"tries_left": 2', 1
    )
    path.write_text(damaged)
    with pytest.raises(CardImageError, match="corrupt"):
        load_card(path)
    assert path.read_text() == damaged
    path.write_text(text[: len(text) // 2])
    with pytest.raises(CardImageError, match="corrupt"):
        load_card(path)
    assert path.read_text() == text[: len(text) // 2]


def test_one_image_cannot_be_used_by_two_simulators(make_card: CardFactory) -> None:
    _, path = make_card("rsa2048")
    with pytest.raises(CardImageError, match="in use"):
        load_card(path)


def test_failed_write_answers_memory_failure_and_keeps_the_state(
    make_card: CardFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    card, path = make_card("rsa2048")

    def broken_write(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("eport.firmware_sim.image.write_image_atomically", broken_write)
    assert send(card, "0020008008 3131313131313131")[1] == SW.MEMORY_FAILURE
    assert card.image.pin.tries_left == 3
    assert read_image(path).pin.tries_left == 3


def test_pin_is_stored_only_as_a_salted_hash(make_card: CardFactory) -> None:
    _, path = make_card("rsa2048")
    text = path.read_text()
    for secret in (PIN, PUK):
        assert secret.decode() not in text
        assert pad_pin(secret.decode()).hex() not in text
