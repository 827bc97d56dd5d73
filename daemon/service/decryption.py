"""Decryption with the card's envelope key (slot 9D): what is refused before the card is
asked, the card's private step, and the host's finish (eport.common.envelope_crypto).

Accepted: RSA PKCS#1 v1.5 on RSA cards; on SM2 cards the GM/T 0009 ASN.1 form (OpenSSL 3's)
and the raw C1 || C3 || C2, told apart by their first byte. The envelope certificate's validity
dates are not checked: what was encrypted to it while it was valid must stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from eport.cardlib.certificates import CardCertificate
from eport.cardlib.errors import CardError
from eport.cardlib.token import CertificateRole
from eport.common.apdu import SW
from eport.common.envelope_crypto import (
    CiphertextDoesNotDecryptError,
    CiphertextForm,
    EnvelopeError,
    EnvelopeKey,
    ParsedCiphertext,
    RsaEnvelopeKey,
    envelope_key,
    parse_ciphertext,
    rsa_remove_padding,
    sm2_finish,
)
from eport.daemon.service.card_state import CardSnapshot
from eport.daemon.service.card_worker import CardAccess
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.messages import CIPHERTEXT_NOT_FOR_CARD, NO_ENVELOPE_KEY


@dataclass(frozen=True)
class Decryption:
    plaintext: bytes
    form: CiphertextForm
    certificate_number: str  # of the envelope certificate


def _no_envelope_key(snapshot: CardSnapshot, reader: str, detail: str) -> EportError:
    return EportError(Reason.UNSUPPORTED_CARD, detail, reader=reader, card_id=snapshot.card_id,
                      variant=NO_ENVELOPE_KEY)


def envelope_certificate_of(snapshot: CardSnapshot, reader: str) -> CardCertificate:
    if snapshot.envelope_certificate is None:
        raise _no_envelope_key(snapshot, reader, "no envelope certificate in slot 9D")
    return snapshot.envelope_certificate


@dataclass(frozen=True)
class DecryptionPlan:
    """A ciphertext checked against the card's envelope key, ready for the card."""

    snapshot: CardSnapshot
    reader: str
    certificate: CardCertificate
    key: EnvelopeKey
    parsed: ParsedCiphertext

    def card_step(self, access: CardAccess) -> bytes:
        """On the card's worker thread, with the PIN verified: the private-key step."""
        is_rsa = isinstance(self.key, RsaEnvelopeKey)
        try:
            return access.token.private_step(
                CertificateRole.ENVELOPE,
                self.parsed.rsa_block if is_rsa else self.parsed.sm2_c1, sm2=not is_rsa)
        except CardError as exc:
            if exc.sw == SW.REFERENCE_NOT_FOUND:
                # A certificate in 5FC10B but no key in 9D.
                raise _no_envelope_key(self.snapshot, self.reader,
                                       "the card has no key in slot 9D") from None
            raise

    def finish(self, raw: bytes) -> Decryption:
        try:
            if isinstance(self.key, RsaEnvelopeKey):
                plaintext = rsa_remove_padding(self.key, raw)
            else:
                plaintext = sm2_finish(self.parsed, raw)
        except CiphertextDoesNotDecryptError as exc:
            raise _not_for_card(self.snapshot, self.reader, exc) from None
        except EnvelopeError as exc:  # the card's answer is malformed
            raise EportError(Reason.CARD_ERROR, str(exc), reader=self.reader,
                             card_id=self.snapshot.card_id) from None
        return Decryption(plaintext, self.parsed.form, self.certificate.serial_hex)


def _not_for_card(snapshot: CardSnapshot, reader: str, exc: EnvelopeError) -> EportError:
    # The variant's message says "does not decrypt with this card's envelope key"; the
    # detail adds only why.
    detail = exc.detail if isinstance(exc, CiphertextDoesNotDecryptError) else str(exc)
    return EportError(Reason.INVALID_ARGUMENT, detail, reader=reader,
                      card_id=snapshot.card_id, variant=CIPHERTEXT_NOT_FOR_CARD)


def plan_decryption(snapshot: CardSnapshot, ciphertext: bytes, reader: str) -> DecryptionPlan:
    certificate = envelope_certificate_of(snapshot, reader)
    try:
        key = envelope_key(certificate.der)
    except EnvelopeError as exc:
        raise _no_envelope_key(snapshot, reader, str(exc)) from None
    if not ciphertext:
        raise EportError(Reason.INVALID_ARGUMENT, "give the ciphertext to decrypt",
                         reader=reader, card_id=snapshot.card_id)
    try:
        parsed = parse_ciphertext(key, ciphertext)
    except EnvelopeError as exc:
        raise _not_for_card(snapshot, reader, exc) from None
    return DecryptionPlan(snapshot, reader, certificate, key, parsed)
