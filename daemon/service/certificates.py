"""The card's certificate as the daemon judges it: validity window against the clock, chain to
the configured trust anchors (the parsing and the issued-by check are eport.cardlib's).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from eport.cardlib import certificates as cardlib_certificates
from eport.cardlib.certificates import (
    CardCertificate,
    CertificateError,
    CertState,
    ChainState,
    chain_of,
)
from eport.common.text import Bilingual
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.messages import (
    NOT_YET_VALID_MESSAGE,
    VALID_MESSAGE,
    expiry_message,
)


@dataclass(frozen=True)
class CertCheck:
    state: CertState
    days_left: int
    chain: ChainState
    chain_detail: str
    message: Bilingual  # the E-port client's prompt for the state


def load_certificate(data: bytes) -> CardCertificate:
    """DER or PEM; EportError(INVALID_ARGUMENT or UNSUPPORTED_CARD) when it is not usable."""
    try:
        return cardlib_certificates.load_certificate(data)
    except CertificateError as exc:
        raise EportError(Reason(exc.reason), str(exc)) from None


def check_certificate(certificate: CardCertificate, anchors: list[CardCertificate], *,
                      now: datetime | None = None, warning_days: int = 30,
                      chain: tuple[ChainState, str] | None = None) -> CertCheck:
    moment = now or datetime.now(UTC)
    # Whole days left, counting a started day as left: 29.5 days shows as 30, as the E-port
    # client does, and 0 means "expires today".
    seconds_left = (certificate.not_after - moment).total_seconds()
    days_left = int(seconds_left // 86400) + (1 if seconds_left % 86400 else 0) \
        if seconds_left >= 0 else -int((-seconds_left) // 86400) - 1
    if moment < certificate.not_before:
        state, message = CertState.NOT_YET_VALID, NOT_YET_VALID_MESSAGE
    elif moment > certificate.not_after:
        state, message = CertState.EXPIRED, expiry_message(-1)
    elif days_left <= warning_days:
        state, message = CertState.EXPIRING, expiry_message(days_left)
    else:
        state, message = CertState.VALID, VALID_MESSAGE
    chain_state, detail = chain if chain is not None else chain_of(certificate, anchors)
    return CertCheck(state, days_left, chain_state, detail, message)


def refuse_unusable(check: CertCheck) -> None:
    """Signing with an expired or not-yet-valid certificate is refused with that reason."""
    if check.state is CertState.EXPIRED:
        raise EportError(Reason.CERT_EXPIRED)
    if check.state is CertState.NOT_YET_VALID:
        raise EportError(Reason.CERT_NOT_YET_VALID)
