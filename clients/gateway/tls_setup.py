"""The gateway's TLS endpoint for Single Window pages: a local CA that can vouch for
wss.singlewindow.cn only, a server certificate for that name, and where they are kept.

Pages on https://www.singlewindow.cn connect to wss://wss.singlewindow.cn:61231 (the page
library picks wss on every page that is not plain http). The official client serves that name
with a publicly trusted certificate we cannot have, so `eport-gateway tls install` makes a
local CA whose certificate carries a critical nameConstraints extension: browsers and OpenSSL
refuse any certificate it signs for another name, so even a stolen CA key cannot impersonate
another site.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import ssl
import stat
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eport.clients.gateway.exit_codes import GatewayExit
from eport.clients.gateway.tls_certificates import (
    GATEWAY_HOST_NAME,
    SERVER_VALIDITY,
    KeyAndCertificate,
    ca_problem,
    fingerprint,
    load_pair,
    make_ca,
    make_server,
    server_problem,
)
from eport.clients.gateway.tls_trust import (
    HOSTS_FILE,
    HOSTS_LINE,
    NSS_DB_FILES,
    NSS_NICKNAME,
    NSS_TRUST,
    SYSTEM_CA_DIR,
    Resolution,
    TrustToolError,
    default_nss_db,
    hosts_add,
    hosts_has_line,
    hosts_remove,
    nss_add,
    nss_certificate,
    nss_create,
    nss_delete,
    nss_exists,
    nss_remove_database,
    nss_trust,
    resolve_gateway_name,
    system_store_file,
    update_system_store,
)
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
MANIFEST_FILE = "manifest.json"

_INSTALL_REMEDY = Bilingual(
    "请运行 eport-gateway tls install (或用 --no-tls 只提供 ws://127.0.0.1:61232)",
    "run `eport-gateway tls install` (or pass --no-tls to serve ws://127.0.0.1:61232 only)")


@dataclass
class TlsNotInstalled(EportFailure):
    """The server certificate or key is missing, unreadable, expired or not yet valid."""

    code: str            # NOT_INSTALLED, EXPIRED, NOT_YET_VALID, UNREADABLE
    message: Bilingual
    remedy: Bilingual = _INSTALL_REMEDY

    def __str__(self) -> str:
        return f"{self.message.en}; {self.remedy.en}"


def default_tls_dir() -> Path:
    """$XDG_CONFIG_HOME/eport/gateway-tls (XDG's rule: a relative value is ignored), else
    ~/.config/eport/gateway-tls."""
    configured = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(configured) if configured and Path(configured).is_absolute() else (
        Path.home() / ".config")
    return base / "eport" / "gateway-tls"


def _not_installed(directory: Path) -> TlsNotInstalled:
    return TlsNotInstalled(
        "NOT_INSTALLED",
        Bilingual(f"没有 wss 的服务器证书 ({directory / SERVER_CERT_FILE})",
                  f"there is no server certificate for wss ({directory / SERVER_CERT_FILE})"))


def load_server_certificate(directory: Path) -> x509.Certificate:
    """The server certificate, checked for presence and validity now; TlsNotInstalled if not."""
    cert_path, key_path = directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE
    if not cert_path.is_file() or not key_path.is_file():
        raise _not_installed(directory)
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as error:
        raise TlsNotInstalled(
            "UNREADABLE",
            Bilingual(f"无法读取 wss 的服务器证书 {cert_path}: {error}",
                      f"cannot read the wss server certificate {cert_path}: {error}")) from None
    now = datetime.now(UTC)
    if now >= certificate.not_valid_after_utc:
        raise TlsNotInstalled(
            "EXPIRED",
            Bilingual(f"wss 的服务器证书已于 {certificate.not_valid_after_utc:%Y-%m-%d} 过期",
                      "the wss server certificate expired on "
                      f"{certificate.not_valid_after_utc:%Y-%m-%d}"),
            Bilingual("请运行 eport-gateway tls install, 它会更新证书",
                      "run `eport-gateway tls install`: it renews the certificate"))
    if now < certificate.not_valid_before_utc:
        raise TlsNotInstalled(
            "NOT_YET_VALID",
            Bilingual(f"wss 的服务器证书要到 {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} "
                      "(UTC) 才生效: 本机时钟可能不对",
                      "the wss server certificate is valid only from "
                      f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: this computer's "
                      "clock may be wrong"),
            Bilingual("请校正系统时间, 然后运行 eport-gateway tls install",
                      "set the right time, then run `eport-gateway tls install`"))
    return certificate


def server_ssl_context(config_dir: Path | None = None) -> ssl.SSLContext:
    """A server-side TLS context with the gateway's certificate for wss.singlewindow.cn.

    Raises TlsNotInstalled (bilingual, with a remedy) when the certificate or key is missing,
    unreadable, expired or not yet valid."""
    directory = config_dir if config_dir is not None else default_tls_dir()
    load_server_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Every browser that runs the page library speaks TLS 1.2 or later.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(directory / SERVER_CERT_FILE, directory / SERVER_KEY_FILE)
    except (OSError, ssl.SSLError) as error:
        raise TlsNotInstalled(
            "UNREADABLE",
            Bilingual(f"无法加载 {directory} 中的 wss 证书和密钥: {error}",
                      f"cannot load the wss certificate and key in {directory}: {error}"),
            Bilingual("请运行 eport-gateway tls install, 它会重新生成不匹配的文件",
                      "run `eport-gateway tls install`: it remakes files that do not match")
        ) from None
    return context


# ---- install, uninstall, status ----

@dataclass
class TlsSetupError(EportFailure):
    code: str
    message: Bilingual
    remedy: Bilingual
    exit_code: GatewayExit

    def __str__(self) -> str:
        return f"{self.code}: {self.message.en}"


@dataclass(frozen=True)
class TlsPaths:
    """Where install writes. Tests point every path into a temporary directory."""

    tls_dir: Path
    nss_db: Path
    hosts_file: Path = HOSTS_FILE
    system_ca_dir: Path = SYSTEM_CA_DIR
    update_command: tuple[str, ...] = ("update-ca-certificates",)
    owner: tuple[int, int] | None = None  # uid, gid to give created files (under sudo)


def default_paths() -> TlsPaths:
    """The current user's paths; under sudo, those of the user who ran sudo (whose gateway
    will load the certificate), with what install creates given to that user."""
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
        try:
            entry = pwd.getpwuid(int(sudo_uid))
        except KeyError:
            entry = None
        if entry is not None:
            home = Path(entry.pw_dir)
            return TlsPaths(home / ".config" / "eport" / "gateway-tls", home / ".pki" / "nssdb",
                            owner=(entry.pw_uid, entry.pw_gid))
    return TlsPaths(default_tls_dir(), default_nss_db())


@dataclass
class Manifest:
    """What install added, so uninstall removes exactly that and nothing else."""

    created_tls_dirs: list[str] = field(default_factory=list)  # the directory and parents
    nss_db: str | None = None
    nss_nickname: str | None = None
    nss_created_db: bool = False
    nss_created_dirs: list[str] = field(default_factory=list)
    system_file: str | None = None
    hosts_file: str | None = None
    hosts_line: str | None = None

    @classmethod
    def load(cls, directory: Path) -> Manifest | None:
        try:
            data = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def text(self) -> str:
        return json.dumps({"format": 1, **asdict(self)}, indent=2, sort_keys=True) + "\n"


@dataclass
class Step:
    part: str      # ca, server, nss, system, hosts, files
    action: str    # kept, created, renewed, added, replaced, removed, absent, refused
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def _needs_root(what: Bilingual) -> TlsSetupError:
    return TlsSetupError(
        "NEEDS_ROOT",
        Bilingual(f"{what.zh}需要 root 权限, 当前用户没有, 未做任何更改",
                  f"{what.en} needs root, which this user is not; nothing was changed"),
        Bilingual("请用 sudo 运行同一命令 (sudo eport-gateway tls ...); 证书仍放在你自己的配置"
                  "目录中",
                  "run the same command with sudo (sudo eport-gateway tls ...); the certificates "
                  "stay in your own configuration directory"),
        GatewayExit.NEEDS_ROOT)


def _tool_error(error: TrustToolError) -> TlsSetupError:
    if error.detail == "not installed":
        package = "libnss3-tools" if error.tool == "certutil" else "ca-certificates"
        return TlsSetupError(
            "TOOL_MISSING",
            Bilingual(f"未安装 {error.tool}, 无法把本地 CA 加入浏览器的证书库, 未做任何更改",
                      f"{error.tool} is not installed, so the local CA cannot be added to the "
                      "browser's certificate database; nothing was changed"),
            Bilingual(f"sudo apt-get install {package}, 然后再运行本命令",
                      f"sudo apt-get install {package}, then run this command again"),
            GatewayExit.TOOL_MISSING)
    return TlsSetupError(
        "STEP_FAILED",
        Bilingual(f"{error.tool} 失败: {error.detail}", f"{error.tool} failed: {error.detail}"),
        Bilingual("请关闭正在使用该证书库的程序后重试; 如仍失败, 运行 eport-gateway tls status "
                  "并把输出发给技术支持",
                  "close programs that use the certificate database and retry; if it still "
                  "fails, send the output of `eport-gateway tls status` to support"),
        GatewayExit.STEP_FAILED)


def _file_error(path: Path, error: OSError) -> TlsSetupError:
    return TlsSetupError(
        "STEP_FAILED",
        Bilingual(f"无法写入 {path}: {error.strerror or error}",
                  f"cannot write {path}: {error.strerror or error}"),
        Bilingual("请检查该目录的所有者和权限, 或用 XDG_CONFIG_HOME 指定另一个配置目录",
                  "check the directory's owner and permissions, or choose another configuration "
                  "directory with XDG_CONFIG_HOME"),
        GatewayExit.STEP_FAILED)


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    # Written beside and renamed: a reader never sees half a key, and the mode is set before
    # the key is in the file.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    if owner is not None:
        os.chown(temporary, *owner)
    os.replace(temporary, path)


def _read_pair(directory: Path, key_name: str, cert_name: str) -> KeyAndCertificate | None:
    try:
        return load_pair((directory / key_name).read_bytes(),
                         (directory / cert_name).read_bytes())
    except OSError:
        return None


def _absent_reason(directory: Path, key_name: str, cert_name: str) -> str:
    if (directory / key_name).is_file() and (directory / cert_name).is_file():
        return "unreadable or does not match its key"
    return "missing"


def _ensure_certificates(paths: TlsPaths, now: datetime, server_validity: timedelta
                         ) -> tuple[KeyAndCertificate, list[Step]]:
    directory, owner = paths.tls_dir, paths.owner
    steps = []
    ca = _read_pair(directory, CA_KEY_FILE, CA_CERT_FILE)
    why = ca_problem(ca, now) if ca is not None else _absent_reason(
        directory, CA_KEY_FILE, CA_CERT_FILE)
    if ca is None or why is not None:
        ca = make_ca(now)
        _write(directory / CA_KEY_FILE, ca.key_pem(), 0o600, owner)
        _write(directory / CA_CERT_FILE, ca.certificate_pem(), 0o644, owner)
        steps.append(Step("ca", "created" if why == "missing" else "renewed", why or ""))
    else:
        steps.append(Step("ca", "kept", fingerprint(ca.certificate)))
    server = _read_pair(directory, SERVER_KEY_FILE, SERVER_CERT_FILE)
    why = server_problem(server, ca, now) if server is not None else _absent_reason(
        directory, SERVER_KEY_FILE, SERVER_CERT_FILE)
    if why is not None:
        server = make_server(ca, now, server_validity)
        _write(directory / SERVER_KEY_FILE, server.key_pem(), 0o600, owner)
        _write(directory / SERVER_CERT_FILE, server.certificate_pem(), 0o644, owner)
        steps.append(Step("server", "created" if why == "missing" else "renewed", why))
    else:
        assert server is not None
        steps.append(Step("server", "kept",
                          f"valid until {server.certificate.not_valid_after_utc:%Y-%m-%d}"))
    return ca, steps


def _ensure_nss(paths: TlsPaths, ca: KeyAndCertificate, manifest: Manifest) -> Step:
    db = paths.nss_db
    if not nss_exists(db):
        created = nss_create(db)
        manifest.nss_created_db = True
        manifest.nss_created_dirs = [str(path) for path in created]
        if paths.owner is not None:
            for path in [*created, *(db / name for name in NSS_DB_FILES)]:
                if path.exists():
                    os.chown(path, *paths.owner)
    manifest.nss_db, manifest.nss_nickname = str(db), NSS_NICKNAME
    wanted = ca.certificate.public_bytes(serialization.Encoding.DER)
    if nss_certificate(db) == wanted and nss_trust(db) == NSS_TRUST:
        return Step("nss", "kept", str(db))
    replaced = nss_delete(db)
    nss_add(db, paths.tls_dir / CA_CERT_FILE)
    return Step("nss", "replaced" if replaced else "added", f"{db} ({NSS_NICKNAME})")


def _ensure_system(paths: TlsPaths, ca: KeyAndCertificate, manifest: Manifest) -> Step:
    target = system_store_file(paths.system_ca_dir)
    wanted = ca.certificate_pem()
    manifest.system_file = str(target)
    if target.is_file() and target.read_bytes() == wanted:
        return Step("system", "kept", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(target, wanted, 0o644, None)
    update_system_store(paths.update_command)
    return Step("system", "added", str(target))


def _ensure_hosts(paths: TlsPaths, manifest: Manifest) -> Step:
    if hosts_has_line(paths.hosts_file):
        manifest.hosts_file, manifest.hosts_line = str(paths.hosts_file), HOSTS_LINE
        return Step("hosts", "kept", str(paths.hosts_file))
    if paths.hosts_file == HOSTS_FILE and resolve_gateway_name().loopback:
        return Step("hosts", "absent", f"{GATEWAY_HOST_NAME} already resolves to loopback")
    hosts_add(paths.hosts_file)
    manifest.hosts_file, manifest.hosts_line = str(paths.hosts_file), HOSTS_LINE
    return Step("hosts", "added", f"{paths.hosts_file}: {HOSTS_LINE}")


def install(paths: TlsPaths, system: bool = False, hosts: bool = False, *,
            euid: int | None = None, now: datetime | None = None,
            server_validity: timedelta = SERVER_VALIDITY) -> list[Step]:
    """Make or keep the CA and server certificate, trust the CA in the user's NSS database
    (and the system store with `system`), add the hosts line with `hosts`. Running it again
    changes nothing unless a certificate is near its end or no longer matches."""
    is_root = (os.geteuid() if euid is None else euid) == 0
    if system and not is_root:
        raise _needs_root(Bilingual("加入系统证书库 (--system)",
                                    "Adding the CA to the system store (--system)"))
    if hosts and not is_root:
        raise _needs_root(Bilingual("修改 /etc/hosts (--hosts)", "Changing /etc/hosts (--hosts)"))
    if shutil.which("certutil") is None:
        raise _tool_error(TrustToolError("certutil", "not installed"))
    if system and shutil.which(paths.update_command[0]) is None:
        raise _tool_error(TrustToolError(paths.update_command[0], "not installed"))
    moment = now or datetime.now(UTC)
    before = Manifest.load(paths.tls_dir)
    manifest = Manifest(**asdict(before)) if before is not None else Manifest()
    try:
        if not paths.tls_dir.is_dir():
            missing = [paths.tls_dir, *(parent for parent in paths.tls_dir.parents
                                        if not parent.exists())]
            paths.tls_dir.mkdir(mode=0o700, parents=True)
            manifest.created_tls_dirs = [str(path) for path in missing]
            if paths.owner is not None:
                for path in missing:
                    os.chown(path, *paths.owner)
        paths.tls_dir.chmod(0o700)
        ca, steps = _ensure_certificates(paths, moment, server_validity)
        steps.append(_ensure_nss(paths, ca, manifest))
        if system:
            steps.append(_ensure_system(paths, ca, manifest))
        elif manifest.system_file is not None and any(
                step.action != "kept" for step in steps if step.part == "ca"):
            steps.append(Step("system", "stale", "the system store holds the previous CA: run "
                              "sudo eport-gateway tls install --system"))
        if hosts:
            steps.append(_ensure_hosts(paths, manifest))
    except TrustToolError as error:
        raise _tool_error(error) from None
    except OSError as error:
        raise _file_error(Path(error.filename or paths.tls_dir), error) from None
    finally:
        # Also after a failed step: what was added before it must be known to uninstall.
        if manifest != before and paths.tls_dir.is_dir():
            with contextlib.suppress(OSError):
                _write(paths.tls_dir / MANIFEST_FILE, manifest.text().encode(), 0o600,
                       paths.owner)
    return steps


def uninstall(paths: TlsPaths, *, euid: int | None = None) -> tuple[list[Step], bool]:
    """Remove what the manifest says install added. The flag is False when parts that need
    root were left (they stay in the manifest for a later `sudo ... tls uninstall`)."""
    is_root = (os.geteuid() if euid is None else euid) == 0
    manifest = Manifest.load(paths.tls_dir)
    steps: list[Step] = []
    if manifest is None:
        return [Step("files", "absent", str(paths.tls_dir))], True
    complete = True
    try:
        if manifest.nss_db and manifest.nss_nickname:
            db = Path(manifest.nss_db)
            removed = nss_exists(db) and nss_delete(db, manifest.nss_nickname)
            steps.append(Step("nss", "removed" if removed else "absent", str(db)))
            if manifest.nss_created_db and nss_remove_database(
                    db, [Path(path) for path in manifest.nss_created_dirs]):
                steps.append(Step("nss", "removed", f"{db} (the database install created)"))
            manifest.nss_db = manifest.nss_nickname = None
        if manifest.system_file:
            if is_root:
                target = Path(manifest.system_file)
                existed = target.exists()
                target.unlink(missing_ok=True)
                if existed:
                    # Without --fresh, Debian's tool leaves the removed file's links behind.
                    update_system_store((*paths.update_command, "--fresh"))
                steps.append(Step("system", "removed" if existed else "absent", str(target)))
                manifest.system_file = None
            else:
                steps.append(Step("system", "refused", "needs root"))
                complete = False
        if manifest.hosts_file and manifest.hosts_line:
            if is_root:
                removed = hosts_remove(Path(manifest.hosts_file), manifest.hosts_line)
                steps.append(Step("hosts", "removed" if removed else "absent",
                                  manifest.hosts_file))
                manifest.hosts_file = manifest.hosts_line = None
            else:
                steps.append(Step("hosts", "refused", "needs root"))
                complete = False
        if not complete:
            _write(paths.tls_dir / MANIFEST_FILE, manifest.text().encode(), 0o600, paths.owner)
            return steps, False
        for name in (SERVER_KEY_FILE, SERVER_CERT_FILE, CA_KEY_FILE, CA_CERT_FILE, MANIFEST_FILE):
            (paths.tls_dir / name).unlink(missing_ok=True)
        steps.append(Step("files", "removed", str(paths.tls_dir)))
        for directory in manifest.created_tls_dirs:  # deepest first, as recorded
            with contextlib.suppress(OSError):  # not empty: the user keeps files there
                Path(directory).rmdir()
    except TrustToolError as error:
        raise _tool_error(error) from None
    except OSError as error:
        raise _file_error(Path(error.filename or paths.tls_dir), error) from None
    return steps, True


@dataclass
class CertificateState:
    present: bool
    subject: str = ""
    not_after: datetime | None = None
    days_left: int | None = None
    problem: str | None = None    # why install would remake it; None: fine
    fingerprint: str = ""

    @property
    def usable(self) -> bool:
        return self.present and self.problem in (None, "expires within 30 days")

    def as_json(self) -> dict[str, Any]:
        return {"present": self.present, "subject": self.subject or None,
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": self.days_left, "problem": self.problem,
                "sha256": self.fingerprint or None}


@dataclass
class TlsStatus:
    tls_dir: Path
    installed: bool                      # a manifest exists
    ca: CertificateState
    server: CertificateState
    key_modes: dict[str, str]
    nss_db: Path
    nss_exists: bool
    nss_trust: str | None                # trust flags under our nickname, None: absent
    nss_matches: bool                    # the certificate there is the current CA
    nss_error: str | None
    system_file: Path
    system_recorded: bool
    system_matches: bool
    resolution: Resolution
    hosts_line: bool

    @property
    def nss_trusted(self) -> bool:
        return self.nss_matches and self.nss_trust is not None and (
            "C" in self.nss_trust.split(",")[0])

    @property
    def ready(self) -> bool:
        return self.server.usable and self.nss_trusted and self.resolution.loopback

    def as_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready, "directory": str(self.tls_dir), "installed": self.installed,
            "ca": self.ca.as_json(), "server": self.server.as_json(),
            "key_modes": self.key_modes,
            "nss": {"db": str(self.nss_db), "exists": self.nss_exists,
                    "nickname": NSS_NICKNAME, "trust": self.nss_trust,
                    "matches_ca": self.nss_matches, "trusted": self.nss_trusted,
                    "error": self.nss_error},
            "system_store": {"file": str(self.system_file), "installed": self.system_recorded,
                             "matches_ca": self.system_matches},
            "name": {"host": GATEWAY_HOST_NAME, "addresses": self.resolution.addresses,
                     "loopback": self.resolution.loopback, "error": self.resolution.error,
                     "hosts_line": HOSTS_LINE, "hosts_line_present": self.hosts_line},
        }


def _certificate_state(pair: KeyAndCertificate | None, path: Path, problem: str | None,
                       now: datetime) -> CertificateState:
    if pair is None:
        return CertificateState(path.is_file(), problem=problem)
    certificate = pair.certificate
    return CertificateState(
        True, certificate.subject.rfc4514_string(), certificate.not_valid_after_utc,
        (certificate.not_valid_after_utc - now).days, problem, fingerprint(certificate))


def status(paths: TlsPaths, now: datetime | None = None) -> TlsStatus:
    """Every part install sets up, read without changing anything."""
    moment = now or datetime.now(UTC)
    directory = paths.tls_dir
    ca = _read_pair(directory, CA_KEY_FILE, CA_CERT_FILE)
    server = _read_pair(directory, SERVER_KEY_FILE, SERVER_CERT_FILE)
    ca_why = ca_problem(ca, moment) if ca is not None else _absent_reason(
        directory, CA_KEY_FILE, CA_CERT_FILE)
    ca_state = _certificate_state(ca, directory / CA_CERT_FILE, ca_why, moment)
    if server is None:
        server_why: str | None = _absent_reason(directory, SERVER_KEY_FILE, SERVER_CERT_FILE)
    else:
        server_why = server_problem(server, ca, moment) if ca is not None else "no usable CA"
    server_state = _certificate_state(server, directory / SERVER_CERT_FILE, server_why, moment)
    modes = {}
    for name in (CA_KEY_FILE, SERVER_KEY_FILE):
        with contextlib.suppress(OSError):
            modes[name] = f"{stat.S_IMODE((directory / name).stat().st_mode):04o}"
    manifest = Manifest.load(directory)
    trust, matches, error = None, False, None
    db = Path(manifest.nss_db) if manifest and manifest.nss_db else paths.nss_db
    try:
        if nss_exists(db):
            trust = nss_trust(db)
            held = nss_certificate(db)
            matches = ca is not None and held == ca.certificate.public_bytes(
                serialization.Encoding.DER)
    except TrustToolError as problem:
        error = str(problem)
    system_file = Path(manifest.system_file) if manifest and manifest.system_file else (
        system_store_file(paths.system_ca_dir))
    try:
        system_matches = ca is not None and system_file.read_bytes() == ca.certificate_pem()
    except OSError:
        system_matches = False
    return TlsStatus(directory, manifest is not None, ca_state, server_state, modes, db,
                     nss_exists(db), trust, matches, error, system_file,
                     bool(manifest and manifest.system_file), system_matches,
                     resolve_gateway_name(), hosts_has_line(paths.hosts_file))
