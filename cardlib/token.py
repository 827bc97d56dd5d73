"""The token interface: what every backend (PC/SC PIV, PKCS#11, a remote E-port client) offers.

A *backend* knows its readers and announces presence; `connect(reader)` gives a *token
connection* for the card now in that reader. The daemon's policy (PIN guard, sessions, queues,
deadlines, swap detection, certificate checks) works on these two protocols only.

Threading: a connection is used by one thread at a time (the reader's worker); a backend's
monitor runs on its own thread and calls the listener from there.

Errors (cardlib.errors): a backend raises `TokenUnavailable` with one of the reasons below when
the token cannot be reached, and the `CardError` family when the token answered and refused.
Any other exception is a bug in the backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from eport.cardlib.sign_mechanism import SignMechanism
from eport.common.profile import EportProfile


class CertificateRole(StrEnum):
    SIGNING = "signing"    # PIV 9C: the key every declaration is signed with
    ENVELOPE = "envelope"  # PIV 9D: the 加密证书, for decryption


class Credential(StrEnum):
    PIN = "pin"
    PUK = "puk"  # the card centre's unblock secret (PKCS#11: the SO PIN)


@dataclass(frozen=True)
class CredentialStatus:
    """A PIN or PUK as the token reports it, read without spending a try.

    tries_left: the exact count, or -1 when the token does not say (a PKCS#11 module that has only
    the COUNT_LOW / FINAL_TRY / LOCKED flags: then `final_try` carries the guard's information).
    """

    verified: bool
    tries_left: int
    blocked: bool
    final_try: bool = False

    @property
    def on_last_try(self) -> bool:
        return self.final_try or self.tries_left == 1


@dataclass(frozen=True)
class ReaderPresence:
    name: str           # unique across backends: the backend prefixes its own readers
    present: bool
    atr: bytes          # PC/SC: the ATR; other backends: b"" or a stable token description
    exclusive: bool     # another program holds the card exclusively
    card_events: int    # a counter that changes with each insertion, when the backend has one


class PresenceListener(Protocol):
    def service_up(self) -> None: ...
    def service_down(self, cause: str = "", code: int = 0) -> None: ...
    def reader_added(self, presence: ReaderPresence) -> None: ...
    def reader_removed(self, name: str) -> None: ...
    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None: ...
    def scan_complete(self) -> None: ...


class PresenceMonitor(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


class Token(Protocol):
    """One card or token, for the insertion it was connected at."""

    @property
    def atr(self) -> bytes: ...

    def read_certificate(self, role: CertificateRole = CertificateRole.SIGNING) -> bytes | None:
        """DER, or None when the token has no certificate in that role."""

    def read_profile(self) -> EportProfile | None:
        """The E-port data object, or None when the token has none (plain PIV, PKCS#11, a real
        E-port card: then the daemon reads what it can from the certificate profile)."""

    def read_card_id(self) -> str:
        """The card id, or "" when the token has none of its own."""

    def credential_status(self, credential: Credential = Credential.PIN) -> CredentialStatus: ...

    def verify_pin(self, pin: bytearray) -> None:
        """Raises InvalidPinError(tries_left) / ReferenceBlockedError. Never logs the PIN."""

    def change_pin(self, old: bytearray, new: bytearray) -> None: ...

    def unblock_pin(self, puk: bytearray, new_pin: bytearray) -> None: ...

    def logout(self) -> None: ...

    def sign_digest(self, mechanism: SignMechanism, digest: bytes) -> bytes:
        """RSA: the PKCS#1 v1.5 signature; ECDSA and SM2: DER (r, s). SecurityStatusError when
        the PIN is not verified."""

    def private_step(self, role: CertificateRole, data: bytes, *, sm2: bool) -> bytes:
        """The envelope key's private operation (decryption.py does the rest on the host).
        RSA: c^d mod n with the padding still on. SM2: d·C1 as 04 ‖ x ‖ y.
        Backends that can only decrypt whole ciphertexts implement `decrypt` instead and raise
        NotImplementedError here."""

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        """The whole decryption on the token, or None when the token does the private step
        only (then the daemon calls private_step)."""


class TokenConnection(Protocol):
    token: Token

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Hold the token for one job (PC/SC: a transaction) so no other program interleaves."""

    def close(self) -> None: ...


class Backend(Protocol):
    # "pcsc", "pkcs11", "remote": shown beside each of its readers. With several of a kind
    # eportd names each as its readers are prefixed: "pkcs11:libsofthsm2.so".
    name: str

    def owns(self, reader: str) -> bool: ...

    def monitor(self, listener: PresenceListener) -> PresenceMonitor: ...

    def connect(self, reader: str) -> TokenConnection: ...

    def card_gone(self, reader: str, timeout: float) -> bool:
        """After a failed command: wait up to `timeout` for the backend to see the card gone."""


@contextlib.contextmanager
def no_transaction() -> Iterator[None]:
    """For backends whose token serialises calls itself."""
    yield
