"""Which card backends eportd runs: a TOML file (--config) plus flags, into BackendSpecs.

The file (docs/backends.md):

    [[backend]]
    kind = "pcsc"

    [[backend]]
    kind = "pkcs11"
    module = "/usr/lib/softhsm/libsofthsm2.so"
    sm2_mechanism = "0x80000001"   # optional, vendor specific
    call_timeout = 30              # optional: seconds before a module call that does not
                                   # return has its host process restarted

    [[backend]]
    kind = "remote"
    url = "ws://127.0.0.1:61232"
    allow_insecure = false

Flags add to what the file says: --backend pcsc, --pkcs11-module PATH (with
--pkcs11-sm2-mechanism), --remote-client URL (with --allow-insecure-remote). With neither,
PC/SC alone runs, as before backends existed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from eport.common.text import Bilingual
from eport.daemon.config import BackendSpec
from eport.daemon.server.socket_path import ServerConfigError

KINDS = ("pcsc", "pkcs11", "remote")


def _bad(message: Bilingual, remedy: Bilingual) -> ServerConfigError:
    return ServerConfigError(message, remedy)


def mechanism_id(text: str | int, where: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text), 0)
    except ValueError:
        raise _bad(Bilingual(f"{where}: SM2 机制号 {text!r} 不是数字",
                             f"{where}: the SM2 mechanism id {text!r} is not a number"),
                   Bilingual("写成 0x80000001 这样的形式。",
                             "write it as 0x80000001 or similar (the module's vendor documents "
                             "it).")) from None


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise _bad(Bilingual(f"{where}: call_timeout {value!r} 不是 0 到 3600 之间的秒数",
                             f"{where}: call_timeout {value!r} is not a number of seconds "
                             "between 0 and 3600"),
                   Bilingual("写成 call_timeout = 30 这样的形式, 或删除该行 (默认 30 秒)。",
                             "write it as call_timeout = 30, or leave it out (30 seconds)."))
    return float(value)


def _pkcs11(module: str, sm2: str | int | None, where: str,
            call_timeout: object = None) -> BackendSpec:
    if not module:
        raise _bad(Bilingual(f"{where}: pkcs11 后端缺少 module",
                             f"{where}: the pkcs11 backend has no module"),
                   Bilingual("给出 PKCS#11 模块 (.so) 的路径。",
                             "give the path of the PKCS#11 module (.so)."))
    options: tuple[tuple[str, Any], ...] = (("module_path", module),)
    if sm2 is not None:
        options += (("sm2_mechanism", mechanism_id(sm2, where)),)
    if call_timeout is not None:
        options += (("call_timeout", _seconds(call_timeout, where)),)
    return BackendSpec("pkcs11", options)


def _remote(url: str, allow_insecure: bool, where: str) -> BackendSpec:
    if not url:
        raise _bad(Bilingual(f"{where}: remote 后端缺少 url",
                             f"{where}: the remote backend has no url"),
                   Bilingual("给出官方客户端的地址, 如 ws://WINDOWS-HOST:61232。",
                             "give the official client's address, e.g. ws://WINDOWS-HOST:61232."))
    return BackendSpec("remote", (("url", url), ("allow_insecure", bool(allow_insecure))))


def from_file(path: Path) -> list[BackendSpec]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(Bilingual(f"无法读取配置文件 {path}: {exc.strerror}",
                             f"Cannot read the configuration file {path}: {exc.strerror}"),
                   Bilingual("检查路径和权限。", "check the path and its permissions.")) from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(Bilingual(f"配置文件 {path} 不是有效的 TOML: {exc}",
                             f"The configuration file {path} is not valid TOML: {exc}"),
                   Bilingual("按 docs/backends.md 修改。",
                             "fix it as docs/backends.md shows.")) from None
    entries = data.get("backend", [])
    if not isinstance(entries, list):
        raise _bad(Bilingual(f"{path}: backend 应写成 [[backend]] 表",
                             f"{path}: `backend` must be [[backend]] tables"),
                   Bilingual("按 docs/backends.md 修改。",
                             "fix it as docs/backends.md shows."))
    specs: list[BackendSpec] = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} backend #{number}"
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in KINDS:
            raise _bad(Bilingual(f"{where}: kind {kind!r} 未知",
                                 f"{where}: unknown kind {kind!r}"),
                       Bilingual("使用 pcsc、pkcs11 或 remote。", "use pcsc, pkcs11 or remote."))
        if kind == "pcsc":
            specs.append(BackendSpec("pcsc"))
        elif kind == "pkcs11":
            specs.append(_pkcs11(str(entry.get("module", "")), entry.get("sm2_mechanism"),
                                 where, entry.get("call_timeout")))
        else:
            specs.append(_remote(str(entry.get("url", "")),
                                 bool(entry.get("allow_insecure", False)), where))
    return specs


def backend_specs(config: str | None, backends: list[str], pkcs11_modules: list[str],
                  sm2_mechanism: str | None, remote_urls: list[str],
                  allow_insecure_remote: bool) -> tuple[BackendSpec, ...]:
    """The file's backends, then the flags'; PC/SC alone when nothing is configured."""
    specs = from_file(Path(config)) if config else []
    for kind in backends:
        if kind != "pcsc":
            raise _bad(Bilingual(f"--backend {kind} 需要更多配置",
                                 f"--backend {kind} needs more configuration"),
                       Bilingual("请用 --pkcs11-module 或 --remote-client 配置该后端。",
                                 "configure it with --pkcs11-module or --remote-client instead."))
        specs.append(BackendSpec("pcsc"))
    if sm2_mechanism is not None and not pkcs11_modules:
        raise _bad(Bilingual("--pkcs11-sm2-mechanism 需要 --pkcs11-module",
                             "--pkcs11-sm2-mechanism needs --pkcs11-module"),
                   Bilingual("同时给出模块路径。",
                             "give the module path as well."))
    specs += [_pkcs11(module, sm2_mechanism, "--pkcs11-module") for module in pkcs11_modules]
    specs += [_remote(url, allow_insecure_remote, "--remote-client") for url in remote_urls]
    # One backend of each kind and module: a PC/SC named twice is one backend.
    unique: list[BackendSpec] = []
    for spec in specs:
        if spec not in unique:
            unique.append(spec)
    return tuple(unique) or (BackendSpec("pcsc"),)
