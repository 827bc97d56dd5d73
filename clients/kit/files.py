"""Reading and writing the files commands name ('-' is stdin/stdout), as CliErrors."""

from __future__ import annotations

import base64
import binascii
import os
import sys
from pathlib import Path

from eport.clients.kit.errors import file_error


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as problem:
        raise file_error(path, problem) from None


def write_output(path: str, data: bytes) -> None:
    """Write whole or not at all: a temp file in the same directory, then rename, so that an
    interrupted run never leaves half a signature where a script expects a whole one."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    try:
        import tempfile  # here: only a command that writes a file pays for it (~2 ms)

        handle, temporary = tempfile.mkstemp(dir=target.parent or Path("."),
                                             prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as sink:
                sink.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as problem:
        raise file_error(path, problem, writing=True) from None


def maybe_base64(data: bytes) -> bytes:
    """A signature given as base64 text is decoded; binary (DER, raw) is taken as it is."""
    text = data.strip()
    if not text or any(byte > 0x7E for byte in text):
        return data
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return data
