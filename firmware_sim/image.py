"""The card image: the simulated card's persistent memory, kept in one JSON file.

Every change is written atomically (temporary file, fsync, rename, fsync of the directory)
before the card answers, so a kill -9 at any instant leaves either the old or the new image,
never a mix, and never a spent PIN try restored. A corrupt image is refused with a clear
error and is never overwritten. While a card is in use its image is locked, so two
simulators cannot run the same card.

The image holds the PIN try counters: whoever can replace the file can give a blocked card
its tries back. So the temporary and lock files are created with O_EXCL / O_NOFOLLOW and mode
0600 (a planted symlink or file is never followed or reused), and a directory other users can
write to is refused: one writable by group or others without the sticky bit (they could rename
or delete our files), or owned by another user who is not root (they could chmod it at will).
A sticky directory such as /tmp is accepted: others can only add names of their own there.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from eport.common.failure import EportFailure
from eport.common.piv import ALGORITHM_BY_NAME, NAME_BY_ALGORITHM, Algorithm
from eport.common.profile import EportProfile, ProfileError
from eport.firmware_sim.reference_data import ReferenceData

IMAGE_FORMAT = "eport-sim-card/1"


class CardImageError(EportFailure):
    """The image file cannot be used; the message says why and what to do."""

    code = "CARD_IMAGE"


class UnsafeImageFileError(CardImageError, PermissionError):
    """Another user could replace the image (its directory or lock file). Also an OSError, so
    a card whose directory turns unsafe while it runs answers like a failed write."""


@dataclass(frozen=True)
class CardImage:
    profile: EportProfile
    algorithm: Algorithm
    private_key: bytes  # PKCS#8 DER (RSA, P-256) or the 32-byte SM2 scalar
    certificate: bytes  # DER, signed by the test CA
    ca_certificate: bytes  # DER of the issuing CA, for building the chain
    pin: ReferenceData
    puk: ReferenceData
    # The envelope key in slot 9D (same algorithm as the signing key; PKCS#8 DER or the SM2
    # scalar) and its certificate. Cards provisioned before it existed, and P-256 cards,
    # have neither.
    envelope_private_key: bytes | None = None
    envelope_certificate: bytes | None = None
    # A card in the real E-port certificate profile (docs/sources.md): no E-port data object.
    real_certificate_profile: bool = False

    @property
    def has_envelope_key(self) -> bool:
        return self.envelope_private_key is not None and self.envelope_certificate is not None

    def with_pin(self, pin: ReferenceData) -> CardImage:
        return replace(self, pin=pin)

    def with_puk(self, puk: ReferenceData) -> CardImage:
        return replace(self, puk=puk)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": IMAGE_FORMAT,
            "profile": self.profile.to_json_dict(),
            "algorithm": NAME_BY_ALGORITHM[self.algorithm],
            "private_key": base64.b64encode(self.private_key).decode(),
            "certificate": base64.b64encode(self.certificate).decode(),
            "ca_certificate": base64.b64encode(self.ca_certificate).decode(),
            "pin": self.pin.to_json(),
            "puk": self.puk.to_json(),
        }
        # Written only when present, so that the image of a card without one (and its
        # checksum) is exactly what older versions wrote.
        if self.envelope_private_key is not None and self.envelope_certificate is not None:
            body["envelope_private_key"] = base64.b64encode(self.envelope_private_key).decode()
            body["envelope_certificate"] = base64.b64encode(self.envelope_certificate).decode()
        if self.real_certificate_profile:
            body["certificate_profile"] = "real"
        body["checksum"] = _checksum(body)
        return body

    @classmethod
    def from_json(cls, raw: Any) -> CardImage:
        if not isinstance(raw, dict):
            raise ValueError("the top level is not an object")
        if raw.get("format") != IMAGE_FORMAT:
            raise ValueError(f"format is {raw.get('format')!r}, expected {IMAGE_FORMAT!r}")
        checksum = raw.get("checksum")
        unchecked = {k: v for k, v in raw.items() if k != "checksum"}
        if checksum != _checksum(unchecked):
            raise ValueError("checksum mismatch: the file was changed or damaged")
        algorithm = ALGORITHM_BY_NAME.get(raw["algorithm"])
        if algorithm is None:
            raise ValueError(f"unknown algorithm {raw['algorithm']!r}")
        if ("envelope_private_key" in raw) != ("envelope_certificate" in raw):
            raise ValueError("the envelope key and its certificate must be present together")
        envelope_key, envelope_certificate = None, None
        if "envelope_private_key" in raw:
            envelope_key = base64.b64decode(raw["envelope_private_key"], validate=True)
            envelope_certificate = base64.b64decode(raw["envelope_certificate"], validate=True)
        return cls(
            profile=EportProfile.from_json_dict(raw["profile"]),
            algorithm=algorithm,
            private_key=base64.b64decode(raw["private_key"], validate=True),
            certificate=base64.b64decode(raw["certificate"], validate=True),
            ca_certificate=base64.b64decode(raw["ca_certificate"], validate=True),
            pin=ReferenceData.from_json(raw["pin"]),
            puk=ReferenceData.from_json(raw["puk"]),
            envelope_private_key=envelope_key,
            envelope_certificate=envelope_certificate,
            real_certificate_profile=raw.get("certificate_profile") == "real",
        )


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_image(path: Path) -> CardImage:
    """Read and check an image without locking it (for inspection)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CardImageError(
            f"卡片映像文件不存在 / card image {path} does not exist. "
            "Remedy: create one with `eport-sim provision`."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CardImageError(
            f"无法读取卡片映像 / cannot read card image {path}: {exc.__class__.__name__}. "
            "Remedy: check the file's permissions, or provision a new card."
        ) from None
    try:
        return CardImage.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, ProfileError) as exc:
        raise CardImageError(
            f"卡片映像已损坏 / card image {path} is corrupt ({exc}). It has been left "
            "untouched. Remedy: restore it from a copy or provision a new card."
        ) from None


_PRIVATE_FILE_MODE = 0o600
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMPORARY_NAME_TRIES = 5


def check_image_directory(directory: Path) -> None:
    """Refuse a directory where another user could replace a card image (see the module
    docstring for the rule)."""
    try:
        info = os.stat(directory)  # the directory itself, wherever a symlink to it points
    except OSError as exc:
        raise CardImageError(
            f"无法访问卡片映像目录 / cannot use the card image directory {directory}: "
            f"{exc.strerror}. Remedy: create it, or choose another path."
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    foreign_owner = info.st_uid not in (os.getuid(), 0)
    writable_by_others = bool(mode & 0o022) and not mode & stat.S_ISVTX
    if foreign_owner or writable_by_others:
        reason_zh = "属于其他用户" if foreign_owner else "其他用户可以写入"
        reason_en = (f"belongs to another user (uid {info.st_uid})" if foreign_owner
                     else f"can be written by other users (mode {mode:04o}, no sticky bit)")
        raise UnsafeImageFileError(
            f"卡片映像目录{reason_zh}，别人可以替换卡片数据 (包括 PIN 重试次数) / the card image "
            f"directory {directory} {reason_en}, so they could replace the card's memory, PIN "
            f"tries included. Remedy: chmod go-w {directory}, or keep card images in a "
            "directory of your own (e.g. mkdir -m 700 ~/eport-cards)."
        )


def _temporary_name(path: Path) -> Path:
    # A name nobody can guess ahead of us; O_EXCL refuses one that exists anyway.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def _create_temporary(path: Path) -> tuple[int, Path]:
    for _ in range(_TEMPORARY_NAME_TRIES):
        tmp = _temporary_name(path)
        try:
            return os.open(tmp, _CREATE_NEW, _PRIVATE_FILE_MODE), tmp
        except FileExistsError:
            continue  # someone else's file (or symlink) by that name: never touch it
    raise CardImageError(
        f"无法创建临时文件 / cannot create a temporary file beside {path}: the names are taken. "
        "Remedy: check the directory for files planted by other users."
    )


def write_image_atomically(path: Path, image: CardImage) -> None:
    data = json.dumps(image.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
    check_image_directory(path.parent)
    fd, tmp = _create_temporary(path)
    try:
        os.fchmod(fd, _PRIVATE_FILE_MODE)  # whatever the umask, and before a byte is written
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _open_lock_file(path: Path) -> IO[bytes]:
    """`.<image>.lock`, created with O_EXCL / O_NOFOLLOW and 0600; one left by an earlier run
    is reused only when it is a plain file of ours that nobody else can write."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock_path, _CREATE_NEW, _PRIVATE_FILE_MODE)
    except FileExistsError:
        try:
            fd = os.open(lock_path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:  # ELOOP: a symlink
            raise _foreign_lock_file(lock_path, exc.strerror or "not a plain file") from None
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid()
                or stat.S_IMODE(info.st_mode) & 0o022):
            os.close(fd)
            raise _foreign_lock_file(lock_path, f"owner uid {info.st_uid}, mode "
                                                f"{stat.S_IMODE(info.st_mode):04o}") from None
    return os.fdopen(fd, "wb")


def _foreign_lock_file(lock_path: Path, what: str) -> CardImageError:
    return UnsafeImageFileError(
        f"锁文件不是本用户的普通文件 / the lock file {lock_path} is not a plain file of this "
        f"user's ({what}); someone may have planted it. Remedy: remove it, and keep card "
        "images in a directory of your own."
    )


class CardImageStore:
    """The persistent memory of one card in use: the image, held under an exclusive lock."""

    def __init__(self, path: Path, image: CardImage, lock_file: IO[bytes]) -> None:
        self.path = path
        self.image = image
        self._lock_file: IO[bytes] | None = lock_file

    @classmethod
    def open(cls, path: Path) -> CardImageStore:
        path = Path(path)
        read_image(path)  # a clear error for a missing or corrupt image before locking
        check_image_directory(path.parent)
        lock_file = _open_lock_file(path)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise CardImageError(
                f"卡片正被另一个模拟器使用 / card image {path} is in use by another simulator. "
                "Remedy: stop that simulator (or remove the card from it) first."
            ) from None
        # Re-read under the lock: another process may have written between read and lock.
        return cls(path, read_image(path), lock_file)

    def commit(self, image: CardImage) -> None:
        """Persist `image`; only when this returns is it the card's state."""
        # (write_image_atomically checks the directory again: it may have changed since.)
        if self._lock_file is None:
            raise CardImageError("the card image store is closed")
        write_image_atomically(self.path, image)
        self.image = image

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> CardImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_card(path: Path) -> Any:
    """The card for an image file (see eport.firmware_sim.card_os.load_card)."""
    from eport.firmware_sim.card_os import load_card as _load_card

    return _load_card(path)
