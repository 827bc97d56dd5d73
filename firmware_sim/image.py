"""The card image: the simulated card's persistent memory, kept in one JSON file.

Every change is written atomically (temporary file, fsync, rename, fsync of the directory)
before the card answers, so a kill -9 at any instant leaves either the old or the new image,
never a mix, and never a spent PIN try restored. A corrupt image is refused with a clear
error and is never overwritten. While a card is in use its image is locked, so two
simulators cannot run the same card.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from eport.common.piv import ALGORITHM_BY_NAME, NAME_BY_ALGORITHM, Algorithm
from eport.common.profile import EportProfile, ProfileError
from eport.firmware_sim.reference_data import ReferenceData

IMAGE_FORMAT = "eport-sim-card/1"


class CardImageError(Exception):
    """The image file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CardImage:
    profile: EportProfile
    algorithm: Algorithm
    private_key: bytes  # PKCS#8 DER (RSA, P-256) or the 32-byte SM2 scalar
    certificate: bytes  # DER, signed by the test CA
    ca_certificate: bytes  # DER of the issuing CA, for building the chain
    pin: ReferenceData
    puk: ReferenceData

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
        return cls(
            profile=EportProfile.from_json_dict(raw["profile"]),
            algorithm=algorithm,
            private_key=base64.b64decode(raw["private_key"], validate=True),
            certificate=base64.b64decode(raw["certificate"], validate=True),
            ca_certificate=base64.b64decode(raw["ca_certificate"], validate=True),
            pin=ReferenceData.from_json(raw["pin"]),
            puk=ReferenceData.from_json(raw["puk"]),
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


def write_image_atomically(path: Path, image: CardImage) -> None:
    data = json.dumps(image.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
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
        lock_path = path.with_name(f".{path.name}.lock")
        lock_file = open(lock_path, "ab")  # noqa: SIM115 - held for the store's lifetime
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
