"""Where eportd's socket lives, and the checks that make it safe to serve there.

Whoever can connect to the socket can ask for PIN entry and signatures, so the daemon refuses
to start anywhere another user could swap the socket or the directory under it. The per-call
peer check (peer_proxy) is the second line of defence, not a reason to relax this one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

from eport.common.failure import ConfigFailure
from eport.common.socket_location import (
    RUN_USER_ROOT,
    SOCKET_ENV,
    SOCKET_NAME,
    SYSTEM_SOCKET_PATH,
    USER_DIRECTORY_NAME,
)
from eport.common.text import Bilingual

logger = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
USER_MODE = "user"
SYSTEM_MODE = "system"
MODES = (USER_MODE, SYSTEM_MODE)


class ServerConfigError(ConfigFailure):
    """A setup problem the person starting eportd must fix; main() exits with code 2."""

    code = "SERVER_CONFIG"
    exit_code = 2


def resolve_socket_path(flag: str | os.PathLike[str] | None = None, *, system: bool = False,
                        environ: Mapping[str, str] | None = None, uid: int | None = None,
                        run_user_root: Path = RUN_USER_ROOT) -> Path:
    """The socket path: `--socket` wins, then $EPORTD_SOCKET, then the mode's default.

    User mode: $XDG_RUNTIME_DIR/eportd/eportd.sock, or /run/user/<uid>/eportd/eportd.sock when
    XDG_RUNTIME_DIR is unset (a su/sudo shell) but logind made that directory.
    System mode: /run/eportd/eportd.sock.
    """
    env = os.environ if environ is None else environ
    chosen = os.fspath(flag) if flag is not None else env.get(SOCKET_ENV, "")
    if chosen:
        return Path(chosen).absolute()
    if system:
        return SYSTEM_SOCKET_PATH
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime:
        if not Path(runtime).is_absolute():
            # The XDG spec says to ignore a relative value; a relative socket would follow cwd.
            raise ServerConfigError(Bilingual(f"XDG_RUNTIME_DIR 不是绝对路径: {runtime!r}",
                                              "XDG_RUNTIME_DIR is not an absolute path: "
                                              f"{runtime!r}"),
                                    Bilingual("修正该环境变量，或用 --socket PATH 指定套接字。",
                                              "fix the variable, or pass --socket PATH."))
        return Path(runtime) / USER_DIRECTORY_NAME / SOCKET_NAME
    fallback = run_user_root / str(os.getuid() if uid is None else uid)
    if fallback.is_dir():
        return fallback / USER_DIRECTORY_NAME / SOCKET_NAME
    raise ServerConfigError(Bilingual(f"未设置 XDG_RUNTIME_DIR，且 {fallback} "
                                      "不存在，无法确定套接字位置",
                                      f"XDG_RUNTIME_DIR is not set and {fallback} does not "
                                      "exist, so there is no place for the socket"),
                            Bilingual("在登录会话中运行，设置 XDG_RUNTIME_DIR，用 --socket PATH "
                                      f"或 {SOCKET_ENV} 指定路径，或以 --system "
                                      "作为系统服务运行。",
                                      "run in a login session, set XDG_RUNTIME_DIR, give a path "
                                      f"with --socket PATH or {SOCKET_ENV}, or run as a system "
                                      "service with --system."))


def check_socket_path_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ServerConfigError(Bilingual(f"套接字路径过长 ({len(os.fsencode(path))} 字节，上限 "
                                          f"{MAX_SOCKET_PATH_BYTES}): {path}",
                                          "The socket path is too long "
                                          f"({len(os.fsencode(path))} bytes, the limit is "
                                          f"{MAX_SOCKET_PATH_BYTES}): {path}"),
                                Bilingual("用 --socket 指定一个更短的路径。",
                                          "pass a shorter path with --socket."))


def _unsafe(directory: Path, why_zh: str, why_en: str, remedy_zh: str, remedy_en: str
            ) -> ServerConfigError:
    return ServerConfigError(Bilingual(f"套接字目录不安全: {directory} {why_zh}",
                                       f"Unsafe socket directory: {directory} {why_en}"),
                             Bilingual(remedy_zh, remedy_en))


def check_socket_directory(directory: Path, mode: str) -> None:
    """Refuse a directory another user could tamper with; create a missing user one 0700.

    User mode: the directory must be ours and writable by nobody else. System mode: it must
    belong to root and be writable by nobody else, neither group nor others (group `eport`
    may traverse it, never write to it).
    A symlink is refused in both modes: it could be repointed after our checks.
    """
    our_uid = os.getuid()
    if mode == USER_MODE:
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise ServerConfigError(
                Bilingual(f"套接字目录的上级目录不存在: {directory.parent}",
                          "The parent of the socket directory does not exist: "
                          f"{directory.parent}"),
                Bilingual("先创建它，或用 --socket 指定其他路径。",
                          "create it, or pass another path with --socket.")) from None
        except PermissionError:
            raise ServerConfigError(Bilingual(f"无权创建套接字目录: {directory}",
                                              "No permission to create the socket directory: "
                                              f"{directory}"),
                                    Bilingual("用 --socket 指定您有写权限的目录。",
                                              "pass a path in a directory you own with "
                                              "--socket.")) from None
        else:
            # mkdir's mode is filtered by the umask; say exactly what we mean.
            directory.chmod(0o700)
            logger.info("created socket directory %s", directory,
                        extra={"path": str(directory)})
    elif not directory.exists() and not directory.is_symlink():
        if our_uid != 0:
            raise ServerConfigError(Bilingual(f"系统模式的套接字目录不存在: {directory}，且只有 "
                                              "root 能创建它",
                                              f"The system socket directory {directory} does not "
                                              "exist and only root may create it"),
                                    Bilingual("由 systemd (RuntimeDirectory=eportd) 或 root "
                                              "创建该目录，属主 root，权限 0755。",
                                              "let systemd (RuntimeDirectory=eportd) or root "
                                              "create it, owned by root, mode 0755."))
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        directory.chmod(0o755)
    info = directory.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise _unsafe(directory, "是符号链接", "is a symbolic link",
                      "使用真实目录，不要用符号链接。", "use the real directory, not a symlink.")
    if not stat.S_ISDIR(info.st_mode):
        raise _unsafe(directory, "不是目录", "is not a directory",
                      "删除它或用 --socket 指定其他路径。",
                      "remove it or pass another path with --socket.")
    if mode == USER_MODE:
        if info.st_uid != our_uid:
            raise _unsafe(directory, f"属于 uid {info.st_uid}，不是当前用户 (uid {our_uid})",
                          f"belongs to uid {info.st_uid}, not to us (uid {our_uid})",
                          "删除该目录让 eportd 重新创建，或用 --socket 指定您自己的目录。",
                          "remove it so that eportd creates it again, or pass a directory "
                          "of your own with --socket.")
        if info.st_mode & 0o022:
            shown = f"{info.st_mode & 0o7777:04o}"
            if info.st_mode & (0o002 | stat.S_ISVTX):
                # A shared directory such as /tmp: chmod would break everyone else.
                remedy_zh = ("用 --socket 指定您自己的目录中的路径，例如 "
                             "$XDG_RUNTIME_DIR/eportd/eportd.sock，不要修改共享目录的权限。")
                remedy_en = ("pass a path in a directory of your own with --socket, e.g. "
                             "$XDG_RUNTIME_DIR/eportd/eportd.sock; do not chmod a shared "
                             "directory.")
            else:
                remedy_zh = remedy_en = f"chmod 700 {directory}"
            raise _unsafe(directory, f"可被组或其他用户写入 (权限 {shown})",
                          f"is writable by group or others (mode {shown})",
                          remedy_zh, remedy_en)
    else:
        if info.st_uid != 0:
            raise _unsafe(directory, f"属于 uid {info.st_uid}，系统模式要求属主为 root",
                          f"belongs to uid {info.st_uid}; system mode needs it owned by root",
                          f"chown root {directory}", f"chown root {directory}")
        if info.st_mode & 0o002:
            raise _unsafe(directory, f"可被任何用户写入 (权限 {info.st_mode & 0o7777:04o})",
                          f"is world-writable (mode {info.st_mode & 0o7777:04o})",
                          f"chmod 755 {directory}", f"chmod 755 {directory}")
        if info.st_mode & 0o020:
            # Members of the group may call eportd, not replace its socket: one of them could
            # put a socket of their own there and collect other users' PINs.
            raise _unsafe(directory, f"可被用户组写入 (权限 {info.st_mode & 0o7777:04o})，组成员"
                          "可以替换套接字",
                          f"is group-writable (mode {info.st_mode & 0o7777:04o}), so a member "
                          "of the group could replace the socket",
                          f"chmod 755 {directory}", f"chmod 755 {directory}")


class SocketClaim:
    """Our exclusive hold on a socket path: an flock on `<socket>.lock`, held until release().

    The lock is what makes two daemons starting at once safe: the connect probe alone has a
    window between "nobody answers" and our bind in which both could decide to serve.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    def release(self) -> None:
        # The lock file stays: unlinking it would let a racing daemon lock the old inode while
        # a third one creates and locks a new file.
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def lock_path_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _pid_in_lock_file(lock_fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(lock_fd, 32, 0).decode().strip())
    return None


def _already_serving(path: Path, pid: int | None) -> ServerConfigError:
    if pid == 1:
        # SO_PEERCRED of a socket-activated listener names systemd, not a daemon.
        return ServerConfigError(Bilingual(f"systemd 正在监听 {path} (套接字激活)",
                                           f"systemd is listening on {path} (socket activation)"),
                                 Bilingual("用 systemctl 管理 eportd，或停止 eportd.socket，或用 "
                                           "--socket 指定其他路径。",
                                           "manage eportd with systemctl, stop eportd.socket, or "
                                           "pass another path with --socket."))
    shown = f"pid {pid}" if pid else "pid unknown"
    return ServerConfigError(Bilingual(f"另一个 eportd 已在服务 {path} ({shown})",
                                       f"another eportd is already serving {path} ({shown})"),
                             Bilingual("使用正在运行的实例，先停止它，或用 --socket "
                                       "指定其他路径。",
                                       "use the running one, stop it first, or pass another path "
                                       "with --socket."))


def _probe(path: Path) -> tuple[bool, int | None]:
    """(something answers at path, its pid if the kernel tells us)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False, None
        except TimeoutError:
            # A full backlog: a listener that is alive but stuck still owns the path.
            return True, None
        except OSError as exc:
            raise ServerConfigError(Bilingual(f"无法检查已有的套接字 {path}: {exc.strerror}",
                                              f"Cannot check the existing socket {path}: "
                                              f"{exc.strerror}"),
                                    Bilingual("检查其权限，或删除它。",
                                              "check its permissions, or remove it.")) from None
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", raw)[0]
        return True, pid or None


def remove_stale_private_dirs(directory: Path, prefix: str) -> None:
    """Remove private directories a killed daemon left behind (only under our lock)."""
    our_uid = os.getuid()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if not entry.name.startswith(prefix):
                continue
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if stat.S_ISDIR(info.st_mode) and info.st_uid == our_uid:
                    shutil.rmtree(entry)
                    logger.info("removed stale private directory %s", entry)


def claim_socket_path(path: Path, mode: str) -> SocketClaim:
    """Make `path` ours: safe directory, lock, no live daemon; a stale socket is removed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    check_socket_path_length(path)
    check_socket_directory(path.parent, mode)
    lock_path = lock_path_of(path)
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600)
    except OSError as exc:
        raise ServerConfigError(Bilingual(f"无法打开锁文件 {lock_path}: {exc.strerror}",
                                          f"Cannot open the lock file {lock_path}: {exc.strerror}"),
                                Bilingual("检查目录权限，删除该文件(若它是符号链接)。",
                                          "check the directory's permissions; remove the file if "
                                          "it is a symlink.")) from None
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise _already_serving(path, _pid_in_lock_file(lock_fd)) from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        _take_over_path(path)
    except BaseException:
        os.close(lock_fd)
        raise
    return SocketClaim(path, lock_fd)


def _take_over_path(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ServerConfigError(Bilingual(f"{path} 已存在且不是套接字",
                                          f"{path} exists and is not a socket"),
                                Bilingual("确认无用后删除它，或用 --socket 指定其他路径。",
                                          "remove it if it is not needed, or pass another path "
                                          "with --socket."))
    live, pid = _probe(path)
    if live:
        # Someone serves here without our lock: an older daemon, or systemd's listener.
        raise _already_serving(path, pid)
    path.unlink()
    logger.info("removed stale socket %s", path, extra={"path": str(path)})
