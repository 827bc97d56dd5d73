"""The committed generated code of the gRPC contract is what the pinned generator produces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_the_protos_changes_nothing() -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is needed for scripts/gen_protos.sh")
    result = subprocess.run(["bash", "scripts/gen_protos.sh", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={"PY": sys.executable, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_error_reason_has_a_message_in_both_languages() -> None:
    from eport.daemon.service.errors import EportError, Reason
    from eport.daemon.service.messages import message_for
    from eport.protos.v1 import eportd_pb2 as pb

    for reason in Reason:
        assert pb.ErrorReason.Value(reason.value) > 0  # the proto names the same reasons
        message = message_for(EportError(reason, tries_left=2))
        assert message.message.zh and message.message.en
        assert message.remedy.zh and message.remedy.en
