"""Which certificate is the signing one and which the envelope one, on a token that only has
objects with labels and ids (PKCS#11 has no PIV slots).

A certificate counts when a private key with the same CKA_ID exists. Signing: the key has
CKA_SIGN; among several, one whose certificate or key label says signing ("sign", "签名",
"digital signature") wins, then one whose label does not say encryption, then the lowest
CKA_ID. Envelope: a *different* certificate whose key has CKA_DECRYPT; one whose label says
encryption ("enc", "envelope", "key man", "decrypt", "加密", "交换") wins, then the lowest CKA_ID.
We never reuse the signing key as the envelope key: a token with one key pair has no envelope
certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

SIGN_HINTS = ("sign", "签名", "digital signature")
ENVELOPE_HINTS = ("enc", "envelope", "key man", "decrypt", "加密", "交换", "exchange")


@dataclass(frozen=True)
class KeyPairObjects:
    """A certificate and the private key sharing its CKA_ID."""

    key_id: bytes
    certificate: bytes
    labels: tuple[str, ...]  # the certificate's and the key's
    can_sign: bool
    can_decrypt: bool
    key_type: int

    def says(self, hints: tuple[str, ...]) -> bool:
        text = " ".join(self.labels).lower()
        return any(hint in text for hint in hints)


def choose_signing(pairs: list[KeyPairObjects]) -> KeyPairObjects | None:
    candidates = [p for p in pairs if p.can_sign]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (not p.says(SIGN_HINTS), p.says(ENVELOPE_HINTS),
                                          p.key_id))


def choose_envelope(pairs: list[KeyPairObjects], signing: KeyPairObjects | None
                    ) -> KeyPairObjects | None:
    candidates = [p for p in pairs if p.can_decrypt
                  and (signing is None or p.key_id != signing.key_id)]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (not p.says(ENVELOPE_HINTS), p.key_id))
