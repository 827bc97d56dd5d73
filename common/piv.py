"""The PIV card edge (NIST SP 800-73-4) as the E-port profile uses it."""

from __future__ import annotations

from enum import IntEnum

PIV_AID = bytes.fromhex("A000000308000010000100")
# SELECT may carry a truncated AID (the RID plus PIX prefix), as OpenSC and ykpiv send.
PIV_AID_PREFIX = bytes.fromhex("A000000308")

CLA_CHAINING = 0x10


class Ins(IntEnum):
    SELECT = 0xA4
    GET_DATA = 0xCB
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    GENERAL_AUTHENTICATE = 0x87
    GET_RESPONSE = 0xC0


class KeyRef(IntEnum):
    PIN = 0x80
    PUK = 0x81


class Slot(IntEnum):
    AUTHENTICATION = 0x9A
    SIGNATURE = 0x9C  # the E-port signing key lives here
    KEY_MANAGEMENT = 0x9D  # the envelope (encryption) key of RSA and SM2 E-port cards
    CARD_AUTHENTICATION = 0x9E


class Algorithm(IntEnum):
    RSA_1024 = 0x06
    RSA_2048 = 0x07
    ECC_P256 = 0x11
    # No standard assigns an identifier to SM2. We use 0xE8 (outside NIST's table, away
    # from Yubico's 0xE0/0xE1): the input is the 32-byte e = SM3(Z || M) that the host
    # computes with the GM/T 0003 Z value, and the reply is a DER SEQUENCE { r, s }.
    # With key 9D (the envelope key) the same id is the private step of SM2 decryption
    # (GM/T 0003.4): the host sends C1 = 04 || x1 || y1 in tag 85, as PIV key agreement
    # does, and the card answers d·C1 = 04 || x2 || y2 in tag 82 (both coordinates, which
    # the SM2 KDF and check value need; PIV ECDH returns only x).
    SM2_SM3 = 0xE8

    @property
    def is_rsa(self) -> bool:
        return self in (Algorithm.RSA_1024, Algorithm.RSA_2048)

    @property
    def rsa_bytes(self) -> int:
        return {Algorithm.RSA_1024: 128, Algorithm.RSA_2048: 256}[self]


class DataObject(IntEnum):
    """GET DATA object identifiers (the value of tag 5C)."""

    DISCOVERY = 0x7E
    CARD_CAPABILITY = 0x5FC107
    CHUID = 0x5FC102
    CERT_AUTHENTICATION = 0x5FC105
    CERT_SIGNATURE = 0x5FC10A
    CERT_KEY_MANAGEMENT = 0x5FC10B
    CERT_CARD_AUTHENTICATION = 0x5FC101
    # Vendor-specific range 5FFFxx: the E-port profile object (see eport.common.profile).
    EPORT_PROFILE = 0x5FFF10


CERT_OBJECT_FOR_SLOT = {
    Slot.AUTHENTICATION: DataObject.CERT_AUTHENTICATION,
    Slot.SIGNATURE: DataObject.CERT_SIGNATURE,
    Slot.KEY_MANAGEMENT: DataObject.CERT_KEY_MANAGEMENT,
    Slot.CARD_AUTHENTICATION: DataObject.CERT_CARD_AUTHENTICATION,
}

# Tags inside objects and commands.
TAG_OBJECT_ID = 0x5C
TAG_DATA = 0x53
TAG_CERTIFICATE = 0x70
TAG_CERT_INFO = 0x71
TAG_ERROR_DETECTION = 0xFE
TAG_DYNAMIC_AUTH = 0x7C
TAG_AUTH_RESPONSE = 0x82
TAG_AUTH_CHALLENGE = 0x81
TAG_AUTH_EXPONENTIATION = 0x85  # key agreement input: the other party's point
TAG_CHUID_GUID = 0x34

PIN_BLOCK_SIZE = 8
PIN_PAD = 0xFF


def pad_pin(pin: str) -> bytes:
    """The 8-byte reference-data block: ASCII digits padded with FF."""
    raw = pin.encode("ascii")
    if not 1 <= len(raw) <= PIN_BLOCK_SIZE:
        raise ValueError("PIN length out of range")
    return raw + bytes([PIN_PAD]) * (PIN_BLOCK_SIZE - len(raw))


ALGORITHM_BY_NAME = {
    "rsa1024": Algorithm.RSA_1024,
    "rsa2048": Algorithm.RSA_2048,
    "p256": Algorithm.ECC_P256,
    "sm2": Algorithm.SM2_SM3,
}
NAME_BY_ALGORITHM = {alg: name for name, alg in ALGORITHM_BY_NAME.items()}
