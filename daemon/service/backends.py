"""The configured card backends: which one owns a reader, one presence monitor each.

Each backend's monitor gets its own listener that tags the readers it reports with the
backend's name, so that the card service knows where to connect and `eport readers` can show
it. Backends other than PC/SC are built by factories imported by name only when configured, so
eportd with the default configuration never imports a PKCS#11 library or a websocket client.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from eport.cardlib.pcsc.backend import PcscBackend
from eport.cardlib.token import Backend, PresenceMonitor, ReaderPresence
from eport.common.text import Bilingual
from eport.daemon.config import BackendSpec
from eport.daemon.server.socket_path import ServerConfigError

logger = logging.getLogger(__name__)

# kind -> "module:factory". The factories take the keyword options of BackendSpec.options.
FACTORIES = {
    # The module runs in a host process of its own (cardlib/pkcs11/hosted.py says why).
    "pkcs11": "eport.cardlib.pkcs11.hosted:HostedPkcs11Backend",
    "remote": "eport.cardlib.remote.backend:RemoteClientBackend",
}


class BackendConfigError(ServerConfigError):
    """A backend that cannot be built from the configuration: eportd exits with code 2."""


def build_backend(spec: BackendSpec, ignored: tuple[str, ...] = ()) -> Backend:
    if spec.kind == "pcsc":
        return PcscBackend(lambda name: name in ignored)
    target = FACTORIES.get(spec.kind)
    if target is None:
        raise BackendConfigError(Bilingual(f"未知的后端 {spec.kind!r}",
                                           f"Unknown backend {spec.kind!r}"),
                                 Bilingual("使用 pcsc、pkcs11 或 remote。",
                                           "use pcsc, pkcs11 or remote."))
    module_name, _, factory_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, factory_name)
    except (ImportError, AttributeError) as exc:
        raise BackendConfigError(Bilingual(f"后端 {spec.kind} 在此安装中不可用 ({target})",
                                           f"The {spec.kind} backend is not available in this "
                                           f"installation ({target}: {exc})"),
                                 Bilingual("安装含该后端的 eport 版本, 或从配置中删除它。",
                                           "install the version of eport that has it, or remove "
                                           "it from the configuration.")) from None
    backend: Backend = factory(**dict(spec.options))
    return backend


class BackendListener(Protocol):
    """What the card service offers each backend's monitor (PresenceListener plus the name)."""

    def service_up(self, *, backend: str = "") -> None: ...
    def service_down(self, cause: str = "", code: int = 0, *, backend: str = "") -> None: ...
    def reader_added(self, presence: ReaderPresence, *, backend: str = "") -> None: ...
    def reader_removed(self, name: str, *, backend: str = "") -> None: ...
    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool,
                         backend: str = "") -> None: ...
    def scan_complete(self, *, backend: str = "") -> None: ...


class _Tagged:
    """One backend's PresenceListener: every callback names the backend."""

    def __init__(self, target: BackendListener, backend: str) -> None:
        self._target = target
        self._backend = backend

    def service_up(self) -> None:
        self._target.service_up(backend=self._backend)

    def service_down(self, cause: str = "", code: int = 0) -> None:
        self._target.service_down(cause, code, backend=self._backend)

    def reader_added(self, presence: ReaderPresence) -> None:
        self._target.reader_added(presence, backend=self._backend)

    def reader_removed(self, name: str) -> None:
        self._target.reader_removed(name, backend=self._backend)

    def presence_changed(self, presence: ReaderPresence, *, reinserted: bool) -> None:
        self._target.presence_changed(presence, reinserted=reinserted, backend=self._backend)

    def scan_complete(self) -> None:
        self._target.scan_complete(backend=self._backend)


def backend_kind(name: str) -> str:
    """"pkcs11" of "pkcs11" and of "pkcs11:libsofthsm2.so": what kind a backend name is."""
    return name.partition(":")[0]


def _name_each_apart(backends: list[Backend]) -> None:
    """Several backends of one kind (two PKCS#11 modules, two remote clients) are named by
    what their readers are named by: "pkcs11:libsofthsm2.so", "remote:host:port". A kind
    configured once keeps its plain name ("pkcs11"), as eportd has always shown it."""
    kinds = [backend_kind(b.name) for b in backends]
    for backend, kind in zip(backends, kinds, strict=True):
        if kinds.count(kind) < 2:
            continue
        prefix = getattr(backend, "reader_prefix", None) or getattr(backend, "reader_name", "")
        label = str(prefix).rstrip(":")
        if label.startswith(f"{kind}:"):
            backend.name = label


class BackendRegistry:
    def __init__(self, backends: list[Backend]) -> None:
        if not backends:
            raise BackendConfigError(Bilingual("没有配置后端", "No backend configured"),
                                     Bilingual("给出 --backend pcsc 或含后端的配置文件。",
                                               "give --backend pcsc or a configuration file with "
                                               "backends."))
        _name_each_apart(backends)
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise BackendConfigError(Bilingual(f"后端名称重复: {names}",
                                               f"Backend names repeat: {names}"),
                                     Bilingual("每个后端只配置一次; 两个 PKCS#11 模块的"
                                               "文件名须不同。",
                                               "configure each backend once; two PKCS#11 "
                                               "modules need different file names."))
        self.backends = list(backends)
        self._monitors: list[PresenceMonitor] = []

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def get(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)

    def owner_of(self, reader: str) -> Backend | None:
        """The backend a reader belongs to when its monitor did not say (the first that owns
        it; PC/SC, owning every name, is asked last)."""
        ordered = sorted(self.backends, key=lambda b: backend_kind(b.name) == "pcsc")
        return next((b for b in ordered if b.owns(reader)), None)

    def start(self, listener: BackendListener) -> None:
        for backend in self.backends:
            monitor = backend.monitor(_Tagged(listener, backend.name))
            self._monitors.append(monitor)
            monitor.start()

    def stop(self, timeout: float = 5.0) -> None:
        for monitor in self._monitors:
            monitor.stop(timeout)
        self._monitors.clear()


def build_registry(specs: tuple[BackendSpec, ...], ignored: tuple[str, ...] = ()
                   ) -> BackendRegistry:
    return BackendRegistry([build_backend(spec, ignored) for spec in specs or
                            (BackendSpec("pcsc"),)])


# TokenUnavailable.native_code of a remote client that answers with another protocol
# (cardlib/remote/channel.py WRONG_PROTOCOL; not imported: that would load the websocket client).
_REMOTE_WRONG_PROTOCOL = 1


@dataclass(frozen=True)
class BackendHealth:
    """One backend as GetDaemonInfo shows it; `condition` is a BackendCondition name."""

    name: str
    up: bool
    detail: str
    readers: int
    cards: int
    condition: str
    target: str = ""
    sm2_mechanism_configured: bool = False


def _condition(backend: Backend, up: bool, detail: str, readers: int, cards: int) -> str:
    """What doctor needs to know, read from the backend's own state (duck-typed, so that the
    daemon core imports no backend's library)."""
    kind = backend_kind(backend.name)
    if kind == "pkcs11":
        module = getattr(backend, "module", None)
        path = str(getattr(module, "path", ""))
        if not up:
            return ("PKCS11_MODULE_MISSING" if path and not os.path.exists(path)
                    else "PKCS11_MODULE_NOT_LOADED")
        return "BACKEND_HEALTHY" if readers else "PKCS11_NO_TOKEN"
    if kind == "remote":
        if not up:
            return ("REMOTE_WRONG_PROTOCOL" if getattr(backend, "last_code", 0)
                    == _REMOTE_WRONG_PROTOCOL else "REMOTE_UNREACHABLE")
        return "BACKEND_HEALTHY" if cards else "REMOTE_NO_CARD"
    return "BACKEND_HEALTHY" if up else "BACKEND_FAILED"


def describe_backend(backend: Backend, up: bool, detail: str, readers: int, cards: int
                     ) -> BackendHealth:
    target = ""
    kind = backend_kind(backend.name)
    if kind == "pkcs11":
        target = str(getattr(getattr(backend, "module", None), "path", ""))
    elif kind == "remote":
        target = str(getattr(getattr(backend, "address", None), "url", ""))
    return BackendHealth(
        backend.name, up, detail, readers, cards, _condition(backend, up, detail, readers, cards),
        target, getattr(backend, "sm2_mechanism", None) is not None)
