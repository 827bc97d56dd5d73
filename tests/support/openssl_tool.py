"""OpenSSL 3, the independent implementation tests check our cryptography against."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def openssl_command() -> str:
    """The openssl command's path; the test fails (never skips) when it is missing."""
    path = shutil.which("openssl")
    if path is None:
        pytest.fail("these tests need the openssl 3 command (apt-get install openssl)")
    return path


def run_checked(*args: str) -> bytes:
    """Run a command; its standard output, or a failure that shows its standard error."""
    result = subprocess.run(args, capture_output=True, timeout=30)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr.decode()}"
    return result.stdout
