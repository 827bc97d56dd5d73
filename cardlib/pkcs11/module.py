"""One loaded PKCS#11 module: loading, reinitialising, and the tokens it shows now.

Every call into the module goes through `call()` under one lock. PyKCS11 initialises the module
without locking callbacks, so the module may assume one thread at a time: the monitor thread and
the readers' workers take turns here. That is also why the monitor polls (C_WaitForSlotEvent with
CKF_DONT_BLOCK) instead of blocking inside the module.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import PyKCS11
from PyKCS11 import LowLevel

from eport.cardlib.errors import TokenUnavailable, Unavailable
from eport.cardlib.pkcs11.results import TOKEN_GONE, code_name, module_down, to_token_error
from eport.common.failure import EportFailure

T = TypeVar("T")


@dataclass(frozen=True)
class TokenSlot:
    """A present, initialised token as the module describes it."""

    slot_id: int
    label: str
    serial: str
    flags: int


class ModuleUnavailable(EportFailure):
    """The module could not be loaded or is no longer initialised; str() is the cause."""

    code = "PKCS11_MODULE_UNAVAILABLE"


class Pkcs11Module:
    def __init__(self, path: str) -> None:
        self.path = path
        self.basename = os.path.basename(path)
        self._lock = threading.RLock()
        self._lib: PyKCS11.PyKCS11Lib | None = None
        # Bumped at every (re)initialisation: sessions from an older generation are dead.
        self.generation = 0
        self.events_supported: bool | None = None  # C_WaitForSlotEvent(CKF_DONT_BLOCK) answered
        self.events_seen = False  # it reported a slot event at least once (OpenSC does)
        self.logged_in: set[int] = set()  # slots our sessions are logged in to

    @property
    def loaded(self) -> bool:
        return self._lib is not None

    def reader_name(self, token: TokenSlot) -> str:
        return f"{self.reader_prefix}{token.slot_id} {token.label}".rstrip()

    @property
    def reader_prefix(self) -> str:
        return f"pkcs11:{self.basename}:"

    def load(self) -> None:
        """Load and initialise the module (again); raises ModuleUnavailable with the cause."""
        with self._lock:
            self._unload_locked()
            if not os.path.exists(self.path):
                raise ModuleUnavailable(f"PKCS#11 module {self.path} does not exist")
            lib = PyKCS11.PyKCS11Lib()
            try:
                lib.load(self.path)
            except PyKCS11.PyKCS11Error as exc:
                detail = exc.text if exc.value < 0 else code_name(exc.value)
                raise ModuleUnavailable(
                    f"PKCS#11 module {self.path} did not load: {detail or code_name(exc.value)}"
                ) from None
            try:
                lib.getSlotList()
            except PyKCS11.PyKCS11Error as exc:
                if exc.value != LowLevel.CKR_CRYPTOKI_NOT_INITIALIZED:
                    lib.unload()
                    raise ModuleUnavailable(f"PKCS#11 module {self.path}: C_GetSlotList failed "
                                            f"({code_name(exc.value)})") from None
                # Another user in this process finalised the module PyKCS11 shares with us:
                # PyKCS11 reuses the loaded library without initialising it again.
                lib.lib.C_Initialize()
            self._lib = lib
            self.generation += 1
            self.logged_in.clear()

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        lib, self._lib = self._lib, None
        if lib is not None:
            # C_Finalize when we were its last user; one finalised by someone else may refuse
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                lib.unload()

    def call(self, operation: str, action: Callable[[PyKCS11.PyKCS11Lib], T]) -> T:
        """Run `action` under the module lock. A module that is not (or no longer) initialised
        raises TokenUnavailable(SERVICE_NOT_RUNNING); the monitor reloads it."""
        with self._lock:
            if self._lib is None:
                raise TokenUnavailable(
                    Unavailable.SERVICE_NOT_RUNNING,
                    f"{operation}: the PKCS#11 module {self.basename} is not loaded")
            try:
                return action(self._lib)
            except PyKCS11.PyKCS11Error as exc:
                if module_down(exc):
                    self._unload_locked()
                raise

    def tokens(self) -> tuple[list[TokenSlot], bool]:
        """The present, initialised tokens, and whether a slot claims a token the module can no
        longer describe (SoftHSM2 after its token directory went away: only reinitialising the
        module makes it look again). Raises ModuleUnavailable when the module is down."""
        try:
            return self.call("list tokens", self._tokens_locked)
        except TokenUnavailable as exc:
            raise ModuleUnavailable(str(exc)) from None
        except PyKCS11.PyKCS11Error as exc:
            raise ModuleUnavailable(
                f"PKCS#11 module {self.basename}: C_GetSlotList failed ({code_name(exc.value)})"
            ) from None

    def _tokens_locked(self, lib: PyKCS11.PyKCS11Lib) -> tuple[list[TokenSlot], bool]:
        self._poll_event(lib)
        found: list[TokenSlot] = []
        stale = False
        for slot_id in lib.getSlotList(tokenPresent=True):
            try:
                info = lib.getTokenInfo(slot_id)
            except PyKCS11.PyKCS11Error as exc:
                if module_down(exc):
                    raise
                stale = stale or exc.value in TOKEN_GONE
                continue
            if not info.flags & LowLevel.CKF_TOKEN_INITIALIZED:
                continue  # SoftHSM2's spare slot; a blank card: nothing to sign with
            found.append(TokenSlot(int(slot_id), info.label.strip(), info.serialNumber.strip(),
                                   int(info.flags)))
        return found, stale

    def _poll_event(self, lib: PyKCS11.PyKCS11Lib) -> None:
        """Drain the module's slot events (a hint only: the slot list is what we trust)."""
        if self.events_supported is False:
            return
        try:
            for _ in range(64):
                lib.waitForSlotEvent(LowLevel.CKF_DONT_BLOCK)
                self.events_supported = self.events_seen = True
        except PyKCS11.PyKCS11Error as exc:
            if exc.value == LowLevel.CKR_NO_EVENT:
                self.events_supported = True if self.events_supported is None else \
                    self.events_supported
            elif exc.value == LowLevel.CKR_FUNCTION_NOT_SUPPORTED:
                self.events_supported = False
            elif module_down(exc):
                raise

    def token_info(self, slot_id: int, operation: str) -> TokenSlot:
        """The token in `slot_id` now; TokenUnavailable(CARD_REMOVED) when it is gone."""
        def read(lib: PyKCS11.PyKCS11Lib) -> TokenSlot:
            info = lib.getTokenInfo(slot_id)
            return TokenSlot(slot_id, info.label.strip(), info.serialNumber.strip(),
                             int(info.flags))
        try:
            return self.call(operation, read)
        except PyKCS11.PyKCS11Error as exc:
            error = to_token_error(exc, operation)
            if isinstance(error, TokenUnavailable):
                raise error from None
            raise TokenUnavailable(Unavailable.CARD_REMOVED,
                                   f"{operation}: the token is gone ({code_name(exc.value)})",
                                   code=exc.value) from None
