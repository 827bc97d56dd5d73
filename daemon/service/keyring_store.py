"""Opt-in unattended signing: a card's PIN kept in the system keyring (keyring package).

Risk, stated in the README: whoever can run code as the daemon's user can make the daemon sign
with that card without typing the PIN. It is off unless eportd runs with --allow-unattended and
the PIN was stored for that card id. A stored PIN the card refuses is deleted at once, so it can
never spend more than one try.
"""

from __future__ import annotations

import logging

import keyring
import keyring.errors

from eport.daemon.service.errors import EportError, Reason

logger = logging.getLogger(__name__)
SERVICE_NAME = "eportd"


class UnattendedPins:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def _require_allowed(self) -> None:
        if not self.allowed:
            raise EportError(Reason.UNATTENDED_DISABLED,
                             "eportd was started without --allow-unattended")

    def store(self, card_id: str, pin: str) -> None:
        self._require_allowed()
        try:
            keyring.set_password(SERVICE_NAME, card_id, pin)
        except keyring.errors.KeyringError as exc:
            raise EportError(Reason.UNATTENDED_DISABLED,
                             f"the keyring refused to store it ({type(exc).__name__})") from None
        logger.info("unattended signing enabled", extra={"card_id": card_id})

    def load(self, card_id: str) -> str | None:
        if not self.allowed:
            return None
        try:
            return keyring.get_password(SERVICE_NAME, card_id)
        except keyring.errors.KeyringError:
            logger.warning("keyring unavailable", extra={"card_id": card_id})
            return None

    def enabled(self, card_id: str) -> bool:
        return self.load(card_id) is not None

    def delete(self, card_id: str) -> bool:
        try:
            keyring.delete_password(SERVICE_NAME, card_id)
        except keyring.errors.PasswordDeleteError:
            return False
        except keyring.errors.KeyringError:
            return False
        logger.info("unattended signing disabled", extra={"card_id": card_id})
        return True
