"""The PIV data objects and the SELECT reply that the card serves, built from its image."""

from __future__ import annotations

from eport.common.piv import (
    PIV_AID,
    TAG_CERT_INFO,
    TAG_CERTIFICATE,
    TAG_CHUID_GUID,
    TAG_DATA,
    TAG_ERROR_DETECTION,
    DataObject,
)
from eport.common.tlv import tlv
from eport.firmware_sim.image import CardImage

# A FASC-N is a US federal credential number; E-port cards have none, so this is the
# "no agency" pattern that PIV-I cards use (all 9s, BCD with parity, 25 bytes).
_NON_FEDERAL_FASCN = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")


def select_reply(image: CardImage) -> bytes:
    """The application property template (tag 61) that SELECT returns."""
    algorithms = tlv(0x80, bytes([image.algorithm]))  # the one key this card holds
    return tlv(
        0x61,
        tlv(0x4F, PIV_AID[5:])  # the PIX: AID without the RID
        + tlv(0x79, tlv(0x4F, PIV_AID[:5]))
        + tlv(0x50, image.profile.form.label.encode("ascii"))
        + tlv(0xAC, algorithms + tlv(0x06, b"\x00")),
    )


def discovery_object() -> bytes:
    # PIN usage policy 40 00: only the PIV application PIN, no global PIN.
    return tlv(0x7E, tlv(0x4F, PIV_AID) + tlv(0x5F2F, b"\x40\x00"))


def chuid_object(image: CardImage) -> bytes:
    # The GUID (16 bytes) carries the card id in ASCII, zero-padded on the right.
    guid = image.profile.card_id.encode("ascii").ljust(16, b"\x00")
    expiry = image.profile.not_after.strftime("%Y%m%d").encode("ascii")
    body = (
        tlv(0x30, _NON_FEDERAL_FASCN)
        + tlv(TAG_CHUID_GUID, guid)
        + tlv(0x35, expiry)
        + tlv(0x3E, b"")
        + tlv(TAG_ERROR_DETECTION, b"")
    )
    return tlv(TAG_DATA, body)


def certificate_object(certificate_der: bytes) -> bytes:
    return tlv(
        TAG_DATA,
        tlv(TAG_CERTIFICATE, certificate_der)
        + tlv(TAG_CERT_INFO, b"\x00")  # not compressed
        + tlv(TAG_ERROR_DETECTION, b""),
    )


def eport_profile_object(image: CardImage) -> bytes:
    return tlv(TAG_DATA, image.profile.encode_data_object())


def build_objects(image: CardImage) -> dict[int, bytes]:
    """Every object GET DATA can return, keyed by object id. The signing key is 9C, the
    envelope key (when the card has one) 9D."""
    objects: dict[int, bytes] = {
        DataObject.DISCOVERY: discovery_object(),
        DataObject.CHUID: chuid_object(image),
        DataObject.CERT_SIGNATURE: certificate_object(image.certificate),
    }
    # A real E-port card has no PIV data object (E-port certificate profile): the host reads
    # the certificate.
    if not image.real_certificate_profile:
        objects[DataObject.EPORT_PROFILE] = eport_profile_object(image)
    if image.envelope_certificate is not None:
        objects[DataObject.CERT_KEY_MANAGEMENT] = certificate_object(image.envelope_certificate)
    return objects

