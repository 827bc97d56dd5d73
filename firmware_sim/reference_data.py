"""PIN and PUK reference data: a salted hash and a retry counter, never the secret itself."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace

from eport.common.piv import PIN_BLOCK_SIZE, PIN_PAD

DEFAULT_KDF_ITERATIONS = 20_000
DEFAULT_MAX_TRIES = 3


def is_well_formed_block(block: bytes) -> bool:
    """Digits, then FF padding only: 8 bytes in all, at least 6 digits (PIV's rule)."""
    if len(block) != PIN_BLOCK_SIZE:
        return False
    digits = block.rstrip(bytes([PIN_PAD]))
    return 6 <= len(digits) <= PIN_BLOCK_SIZE and all(0x30 <= b <= 0x39 for b in digits)


@dataclass(frozen=True)
class ReferenceData:
    """One verifiable secret (the PIN or the PUK) as the card stores it."""

    salt: bytes
    digest: bytes
    iterations: int
    tries_left: int
    max_tries: int = DEFAULT_MAX_TRIES

    @classmethod
    def create(
        cls,
        block: bytes,
        *,
        max_tries: int = DEFAULT_MAX_TRIES,
        iterations: int = DEFAULT_KDF_ITERATIONS,
    ) -> ReferenceData:
        salt = secrets.token_bytes(16)
        return cls(
            salt=salt,
            digest=_derive(block, salt, iterations),
            iterations=iterations,
            tries_left=max_tries,
            max_tries=max_tries,
        )

    @property
    def blocked(self) -> bool:
        return self.tries_left <= 0

    def matches(self, block: bytes) -> bool:
        return hmac.compare_digest(_derive(block, self.salt, self.iterations), self.digest)

    def spend_try(self) -> ReferenceData:
        return replace(self, tries_left=max(0, self.tries_left - 1))

    def restore_tries(self) -> ReferenceData:
        return replace(self, tries_left=self.max_tries)

    def with_new_secret(self, block: bytes) -> ReferenceData:
        salt = secrets.token_bytes(16)
        return replace(
            self,
            salt=salt,
            digest=_derive(block, salt, self.iterations),
            tries_left=self.max_tries,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "kdf": "pbkdf2-hmac-sha256",
            "iterations": self.iterations,
            "salt": self.salt.hex(),
            "digest": self.digest.hex(),
            "tries_left": self.tries_left,
            "max_tries": self.max_tries,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> ReferenceData:
        if raw.get("kdf") != "pbkdf2-hmac-sha256":
            raise ValueError("unknown PIN key-derivation function")
        iterations, tries, max_tries = raw["iterations"], raw["tries_left"], raw["max_tries"]
        if not (
            isinstance(iterations, int) and isinstance(tries, int) and isinstance(max_tries, int)
        ):
            raise ValueError("counters must be integers")
        if not (1 <= max_tries <= 15 and 0 <= tries <= max_tries and iterations >= 1):
            raise ValueError("counters out of range")
        return cls(
            salt=bytes.fromhex(str(raw["salt"])),
            digest=bytes.fromhex(str(raw["digest"])),
            iterations=iterations,
            tries_left=tries,
            max_tries=max_tries,
        )


def _derive(block: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", block, salt, iterations)
