"""What the token signs with, in PKCS#11 terms: the block for CKM_RSA_PKCS (the DigestInfo from
cardlib.signing_algorithms), the conversion of CKM_ECDSA's raw r ‖ s to DER, and the
vendor-defined SM2 mechanism ids we know of.

Pure functions and constants: no PKCS#11 library here, so they are unit-testable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from eport.cardlib.errors import CardError
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.signing_algorithms import spec_of_mechanism

CKM_RSA_PKCS = 0x00000001
CKM_ECDSA = 0x00001041
CKM_VENDOR_DEFINED = 0x80000000



@dataclass(frozen=True)
class VendorSm2Mechanism:
    """A vendor's SM2 mechanism id as found in public headers (docs/backends.md, "PKCS#11")."""

    name: str
    mechanism: int
    signs: str       # what C_Sign takes: "e" (the SM3 digest the host computed) or "message"
    output: str      # "DER" or "r||s"
    source: str


# PKCS#11 (up to 3.1) defines no SM2 mechanism; every vendor picks its own id. Only mechanisms
# that sign e (the host's SM3(Z ‖ M)) fit sign_digest. None of these has been run against the
# vendor's module here: they are ids read in public headers, not confirmed behaviour.
KNOWN_SM2_MECHANISMS: tuple[VendorSm2Mechanism, ...] = (
    VendorSm2Mechanism("CKM_SM2_SIGN", CKM_VENDOR_DEFINED + 0x8104, "e", "DER",
                       "Sansec swpkcs11.h; Koal (格尔) HSM; Chainmaker's pkcs11 constants"),
    VendorSm2Mechanism("CKM_SM2_SIGN_NO_DER", CKM_VENDOR_DEFINED + 0x8105, "e", "r||s",
                       "Sansec swpkcs11.h; Chainmaker's pkcs11 constants"),
    VendorSm2Mechanism("CKM_SM3_SM2", CKM_VENDOR_DEFINED + 0x8100, "message", "r||s",
                       "Sansec swpkcs11.h; Koal (格尔) HSM (hashes on the token: does not fit)"),
    VendorSm2Mechanism("CKM_IBM_SM2", 0x8005000B, "e", "unknown",
                       "IBM ids listed in Sansec swpkcs11.h"),
    VendorSm2Mechanism("CKM_SM2_SIGN_VERIFY (MK-1 key)", 0x00010002, "e", "unknown",
                       "a header for one MK-1 USB key (outside the vendor range)"),
)


def digest_to_sign(mechanism: SignMechanism, digest: bytes) -> bytes:
    """The bytes handed to C_Sign: DigestInfo for RSA, the bare digest for ECDSA and SM2."""
    algorithm = spec_of_mechanism(mechanism)
    expected = algorithm.digest_length
    if len(digest) != expected:
        raise CardError(None, f"sign {mechanism}",
                        f"the digest is {len(digest)} bytes; {mechanism} needs {expected}")
    return algorithm.digest_info + digest


def _der_integer(value: bytes) -> bytes:
    stripped = value.lstrip(b"\x00") or b"\x00"
    if stripped[0] & 0x80:
        stripped = b"\x00" + stripped
    return b"\x02" + _der_length(len(stripped)) + stripped


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def raw_to_der_signature(raw: bytes) -> bytes:
    """CKM_ECDSA answers r ‖ s of equal length; we hand out DER (r, s)."""
    if len(raw) == 0 or len(raw) % 2:
        raise CardError(None, "sign", f"the token answered a {len(raw)}-byte signature, not r ‖ s")
    half = len(raw) // 2
    body = _der_integer(raw[:half]) + _der_integer(raw[half:])
    return b"\x30" + _der_length(len(body)) + body


def sm2_signature_to_der(raw: bytes) -> bytes:
    """Vendor SM2 mechanisms answer either r ‖ s (64 bytes) or DER already."""
    if len(raw) == 64:
        return raw_to_der_signature(raw)
    if len(raw) > 2 and raw[0] == 0x30 and raw[1] == len(raw) - 2:
        return raw
    raise CardError(None, "sign SM2", f"the token answered {len(raw)} bytes: neither r ‖ s nor DER")
