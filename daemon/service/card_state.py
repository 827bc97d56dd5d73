"""What the daemon knows of each reader and its card, and how a card is read once per insertion."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eport.cardlib.certificates import CardCertificate, KeyKind
from eport.cardlib.errors import CardError
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.signing_algorithms import SignAlgorithm, algorithms_for_key, spec
from eport.cardlib.token import CertificateRole
from eport.common.profile import CardForm, EportProfile, ProfileError
from eport.daemon.service.card_worker import CardAccess, CardWorker
from eport.daemon.service.certificates import load_certificate
from eport.daemon.service.errors import EportError, Reason

logger = logging.getLogger(__name__)

# The simulator's and real E-port ATR historical bytes name the form (firmware_sim/atr.py).
_IKEY_ATR_MARK = b"EPORT-KEY"


@dataclass(frozen=True)
class CardSnapshot:
    """A card as read at one insertion; cached, so repeated reads do not touch the card."""

    reader: str
    insertion: int
    atr: bytes
    card_id: str
    certificate: CardCertificate
    profile: EportProfile | None  # None on a PIV card without the E-port object
    # The envelope (encryption) certificate of slot 9D; None when the card has none.
    envelope_certificate: CardCertificate | None = None
    # What the token can sign (Token.sign_mechanisms, when a backend offers only some);
    # None: every mechanism of the key.
    offered_mechanisms: frozenset[SignMechanism] | None = None

    @property
    def is_eport(self) -> bool:
        return self.profile is not None

    @property
    def key_kind(self) -> KeyKind:
        return self.certificate.key_kind

    @property
    def sign_algorithms(self) -> tuple[SignAlgorithm, ...]:
        every = algorithms_for_key(self.key_kind)
        if self.offered_mechanisms is None:
            return every
        return tuple(a for a in every if spec(a).mechanism in self.offered_mechanisms)

    @property
    def certificate_number(self) -> str:
        if self.profile is not None and self.profile.cert_number:
            return self.profile.cert_number
        return self.certificate.serial_hex

    @property
    def form(self) -> CardForm | None:
        if self.profile is not None:
            return self.profile.form
        return CardForm.IKEY if _IKEY_ATR_MARK in self.atr else None


@dataclass
class Session:
    insertion: int
    card_id: str
    # The uid of the caller whose PIN opened it (None: not known, e.g. in-process callers).
    # In --system mode only that uid may use it (docs/backends.md, "Who can sign").
    uid: int | None = None
    opened_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_used: float = field(default_factory=time.monotonic)

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used


@dataclass
class ReaderSlot:
    name: str
    worker: CardWorker
    backend: str = ""  # the name of the backend the reader belongs to
    present: bool = False
    atr: bytes = b""
    exclusive_elsewhere: bool = False
    insertion: int = -1  # the daemon's insertion number; -1 without a card
    card: CardSnapshot | None = None
    card_error: EportError | None = None
    session: Session | None = None
    # Why the last session of this insertion ended ("idle" makes SESSION_EXPIRED).
    session_end_reason: str = ""
    # The last card pulled out of this reader while it stayed empty (for `eport doctor`).
    removed_at: datetime | None = None
    removed_card_id: str = ""

    @property
    def looks_like_ic_card(self) -> bool:
        if self.card is not None:
            return self.card.form is not CardForm.IKEY
        return _IKEY_ATR_MARK not in self.atr


# A card just inserted is read again after these pauses when PC/SC itself failed (no status
# word): pcscd may still be powering it, another program may hold it for a moment, or pcscd's
# view lagged behind a quick pull and reinsertion. A card that answered is not asked again.
IDENTIFY_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0)
_PASSING_REASONS = frozenset({Reason.CARD_ERROR, Reason.CARD_TIMEOUT, Reason.SHARING_VIOLATION,
                              Reason.CARD_REMOVED, Reason.NO_CARD})


def may_pass(error: BaseException) -> bool:
    """Whether reading the card again may succeed where `error` failed."""
    return (isinstance(error, EportError) and error.reason in _PASSING_REASONS
            and error.status_word is None)


def read_card(access: CardAccess) -> CardSnapshot:
    """Certificate, E-port profile and card id, in one job on the card."""
    token = access.token
    try:
        der = token.read_certificate(CertificateRole.SIGNING)
    except CardError as exc:
        raise EportError(Reason.UNSUPPORTED_CARD, "no signing certificate on the card",
                         status_word=exc.sw, reader=access.reader) from None
    if der is None:
        raise EportError(Reason.UNSUPPORTED_CARD, "no signing certificate on the card",
                         reader=access.reader)
    try:
        certificate = load_certificate(der)
    except EportError as exc:
        raise exc.located(access.reader) from None
    profile: EportProfile | None
    try:
        # None: a plain PIV card (or a token without the E-port object): still usable.
        profile = token.read_profile()
    except ProfileError:
        raise EportError(Reason.UNSUPPORTED_CARD, "the E-port data object is malformed",
                         reader=access.reader) from None
    card_id = token.read_card_id()
    if not card_id:
        card_id = profile.card_id if profile is not None else certificate.serial_hex
    offered = getattr(token, "sign_mechanisms", None)
    return CardSnapshot(access.reader, access.insertion, access.atr, card_id, certificate,
                        profile, _read_envelope_certificate(access),
                        frozenset(offered) if offered is not None else None)


def _read_envelope_certificate(access: CardAccess) -> CardCertificate | None:
    """The certificate of slot 9D, if the card has a usable one. Its absence (older cards,
    P-256 cards, other PIV cards) never makes the card unusable for signing."""
    try:
        der = access.token.read_certificate(CertificateRole.ENVELOPE)
        return load_certificate(der) if der is not None else None
    except CardError as exc:
        logger.warning("the envelope certificate could not be read: %s", exc,
                       extra={"reader": access.reader})
        return None
    except EportError as exc:
        logger.warning("the envelope certificate is not usable: %s", exc,
                       extra={"reader": access.reader})
        return None
