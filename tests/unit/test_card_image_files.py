"""The card image's files: temporary and lock files created with O_EXCL / O_NOFOLLOW and mode
0600, and directories other users could write to refused (they could give a blocked card its
PIN tries back by replacing the image)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from eport.firmware_sim import image as image_module
from eport.firmware_sim.card_os import load_card
from eport.firmware_sim.image import (
    CardImage,
    CardImageError,
    CardImageStore,
    read_image,
    write_image_atomically,
)
from tests.support.cards import write_card

OTHER_UID = 54321  # a user that is not us and not root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def image(card_images: dict[str, CardImage]) -> CardImage:
    return card_images["p256"]


def test_image_and_lock_files_are_0600_whatever_the_umask(image: CardImage, tmp_path: Path
                                                          ) -> None:
    old_umask = os.umask(0)
    try:
        path = write_card(image, tmp_path)
        with CardImageStore.open(path) as store:
            store.commit(image.with_pin(image.pin))
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    assert _mode(tmp_path / f".{path.name}.lock") == 0o600
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(("mode", "words"), [
    (0o777, "can be written by other users (mode 0777, no sticky bit)"),
    (0o770, "can be written by other users (mode 0770, no sticky bit)"),
    (0o757, "can be written by other users (mode 0757, no sticky bit)"),
])
def test_a_directory_others_can_write_is_refused(image: CardImage, tmp_path: Path, mode: int,
                                                 words: str) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    path = write_card(image, directory)
    directory.chmod(mode)
    before = path.read_bytes()
    for attempt in (lambda: write_image_atomically(path, image), lambda: load_card(path)):
        with pytest.raises(CardImageError) as refused:
            attempt()
        message = str(refused.value)
        assert "其他用户可以写入" in message and words in message
        assert f"chmod go-w {directory}" in message  # the remedy
    assert path.read_bytes() == before
    assert sorted(p.name for p in directory.iterdir()) == [path.name]  # no lock, no tmp


def test_a_directory_of_another_user_is_refused(image: CardImage, tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a directory to another user")
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o755)
    path = write_card(image, directory)
    os.chown(directory, OTHER_UID, -1)
    with pytest.raises(CardImageError, match=f"belongs to another user \\(uid {OTHER_UID}\\)"):
        load_card(path)
    with pytest.raises(CardImageError, match="属于其他用户"):
        write_image_atomically(path, image)


def test_a_sticky_shared_directory_like_tmp_is_accepted(image: CardImage, tmp_path: Path
                                                        ) -> None:
    directory = tmp_path / "sticky"
    directory.mkdir()
    directory.chmod(0o1777)
    path = write_card(image, directory)
    load_card(path).close()
    assert _mode(path) == 0o600


def test_a_planted_lock_symlink_is_not_followed(image: CardImage, tmp_path: Path) -> None:
    path = write_card(image, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / f".{path.name}.lock").symlink_to(victim)
    with pytest.raises(CardImageError, match="not a plain file of this user's"):
        load_card(path)
    assert victim.read_text() == "keep me"


def test_a_lock_file_others_can_write_is_refused(image: CardImage, tmp_path: Path) -> None:
    path = write_card(image, tmp_path)
    lock = tmp_path / f".{path.name}.lock"
    lock.touch()
    lock.chmod(0o666)
    with pytest.raises(CardImageError, match="mode 0666"):
        load_card(path)
    lock.chmod(0o600)
    load_card(path).close()  # a lock file of ours from an earlier run is reused


def test_a_planted_temporary_file_is_never_written_through(
        image: CardImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_card(image, tmp_path)
    planted = tmp_path / ".planted.tmp"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted.symlink_to(victim)
    monkeypatch.setattr(image_module, "_temporary_name", lambda _path: planted)
    before = path.read_bytes()
    with pytest.raises(CardImageError, match="the names are taken"):
        write_image_atomically(path, image.with_pin(image.pin.spend_try()))
    assert victim.read_text() == "keep me" and planted.is_symlink()
    assert path.read_bytes() == before and read_image(path) == image


def test_a_directory_made_unsafe_while_the_card_runs_fails_the_write_not_the_card(
        image: CardImage, tmp_path: Path) -> None:
    """The refusal is also an OSError, so the card answers 6581 (memory failure) and keeps
    its state, as for a full disk."""
    directory = tmp_path / "cards"
    directory.mkdir(mode=0o700)
    path = write_card(image, directory)
    card = load_card(path)
    try:
        card.power_on()
        directory.chmod(0o777)
        response = card.execute(bytes.fromhex("002000800831313131313131FF"))
        assert response[-2:] == b"\x65\x81"
        assert card.image.pin.tries_left == image.pin.tries_left
    finally:
        directory.chmod(0o700)
        card.close()
    assert read_image(path).pin.tries_left == image.pin.tries_left
