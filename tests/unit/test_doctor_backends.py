"""Doctor's backend findings (EP-H: PKCS#11, EP-W: remote E-port client) as a function of the
BackendStatus eportd reports, and the daemon's mapping of a backend's state to that condition."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eport.clients.doctor.checks_backends import backends
from eport.clients.doctor.facts import CardFacts, Facts
from eport.clients.doctor.findings import Finding, Status
from eport.clients.doctor.runner import run_checks
from eport.daemon.service.backends import describe_backend
from eport.protos.v1 import eportd_pb2 as pb

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
MODULE = "/usr/lib/vendor/libgmkey.so"
URL = "ws://192.0.2.7:61232"


def facts_with(*statuses: pb.BackendStatus, readers: list[pb.Reader] | None = None,
               cards: list[CardFacts] | None = None) -> Facts:
    facts = Facts(now=NOW)
    facts.info = pb.DaemonInfo(version="0.1.0", pid=7, backends=list(statuses))
    facts.readers = pb.ListReadersResponse(readers=readers or [])
    facts.cards = cards or []
    return facts


def by_code(findings: list[Finding]) -> dict[str, Finding]:
    codes = [f.code for f in findings]
    assert len(codes) == len(set(codes)), codes
    return {f.code: f for f in findings}


def assert_explained(finding: Finding) -> None:
    """A problem a support desk can act on: cause and remedy in both languages."""
    assert finding.cause is not None and finding.remedy is not None
    for text in (finding.title, finding.cause, finding.remedy):
        assert text.zh and text.en and text.zh != text.en


def pkcs11_status(condition: int, **fields: Any) -> pb.BackendStatus:
    up = condition in (pb.BACKEND_HEALTHY, pb.PKCS11_NO_TOKEN)
    return pb.BackendStatus(name="pkcs11", condition=condition, target=MODULE,
                            state=pb.SERVICE_RUNNING if up else pb.SERVICE_NOT_RUNNING_STATE,
                            **fields)


def remote_status(condition: int, **fields: Any) -> pb.BackendStatus:
    return pb.BackendStatus(name="remote", condition=condition, target=URL, **fields)


def test_missing_module_fails_h01_with_the_path_and_skips_the_token_check() -> None:
    found = by_code(backends(facts_with(pkcs11_status(
        pb.PKCS11_MODULE_MISSING, detail=f"PKCS#11 module {MODULE} does not exist"))))
    assert found["EP-H01"].status == Status.FAIL
    assert_explained(found["EP-H01"])
    assert found["EP-H01"].cause is not None and MODULE in found["EP-H01"].cause.en
    assert "--pkcs11-module" in found["EP-H01"].remedy.en  # type: ignore[union-attr]
    assert found["EP-H02"].status == Status.SKIP


def test_module_that_does_not_load_fails_h01_pointing_at_pkcs11_tool() -> None:
    found = by_code(backends(facts_with(pkcs11_status(
        pb.PKCS11_MODULE_NOT_LOADED, detail="did not load: undefined symbol C_GetFunctionList"))))
    assert found["EP-H01"].status == Status.FAIL
    assert_explained(found["EP-H01"])
    assert "C_GetFunctionList" in found["EP-H01"].cause.en  # type: ignore[union-attr]
    assert f"pkcs11-tool --module {MODULE} -L" in found["EP-H01"].remedy.en  # type: ignore
    assert found["EP-H01"].details["condition"] == "PKCS11_MODULE_NOT_LOADED"


def test_module_without_token_passes_h01_and_fails_h02() -> None:
    found = by_code(backends(facts_with(pkcs11_status(pb.PKCS11_NO_TOKEN))))
    assert found["EP-H01"].status == Status.OK
    assert found["EP-H02"].status == Status.FAIL
    assert_explained(found["EP-H02"])
    assert "EP-H03" not in found  # no SM2 key, no mechanism: nothing to say


def test_healthy_module_is_ok_throughout() -> None:
    found = by_code(backends(facts_with(pkcs11_status(pb.BACKEND_HEALTHY, readers=2, cards=2))))
    assert [(c, f.status) for c, f in found.items()] == [("EP-H01", Status.OK),
                                                         ("EP-H02", Status.OK)]
    assert "2" in found["EP-H02"].title.en


SM2_READER = f"pkcs11:{Path(MODULE).name}:0 GM key"


def sm2_card() -> CardFacts:
    return CardFacts(SM2_READER, "card-1", info=pb.CardInfo(card_id="card-1",
                                                            key_algorithm=pb.SM2))


def test_sm2_token_without_mechanism_fails_h03() -> None:
    found = by_code(backends(facts_with(
        pkcs11_status(pb.BACKEND_HEALTHY, readers=1, cards=1),
        readers=[pb.Reader(name=SM2_READER, backend="pkcs11", card_id="card-1")],
        cards=[sm2_card()])))
    assert found["EP-H03"].status == Status.FAIL
    assert_explained(found["EP-H03"])
    assert "--pkcs11-sm2-mechanism" in found["EP-H03"].remedy.en  # type: ignore[union-attr]
    assert SM2_READER in found["EP-H03"].cause.en  # type: ignore[union-attr]


def test_sm2_token_with_mechanism_is_ok() -> None:
    found = by_code(backends(facts_with(
        pkcs11_status(pb.BACKEND_HEALTHY, readers=1, cards=1, sm2_mechanism_configured=True),
        readers=[pb.Reader(name=SM2_READER, backend="pkcs11", card_id="card-1")],
        cards=[sm2_card()])))
    assert found["EP-H03"].status == Status.OK
    assert found["EP-H03"].details["tokens"] == [SM2_READER]


def test_an_sm2_card_on_another_backend_does_not_need_the_pkcs11_mechanism() -> None:
    found = by_code(backends(facts_with(
        pkcs11_status(pb.BACKEND_HEALTHY, readers=1, cards=1),
        readers=[pb.Reader(name="Virtual PCD 00 00", backend="pcsc", card_id="card-1")],
        cards=[CardFacts("Virtual PCD 00 00", "card-1",
                         info=pb.CardInfo(key_algorithm=pb.SM2))])))
    assert "EP-H03" not in found


@pytest.mark.parametrize(("condition", "failed", "skipped"), [
    (pb.REMOTE_UNREACHABLE, "EP-W01", ["EP-W02", "EP-W03"]),
    (pb.REMOTE_WRONG_PROTOCOL, "EP-W02", ["EP-W03"]),
])
def test_remote_problems_fail_their_code_and_skip_what_depends_on_it(
        condition: int, failed: str, skipped: list[str]) -> None:
    found = by_code(backends(facts_with(remote_status(condition, detail="the words"))))
    assert found[failed].status == Status.FAIL
    assert_explained(found[failed])
    assert URL in found[failed].cause.en  # type: ignore[union-attr]
    assert "the words" in found[failed].cause.en  # type: ignore[union-attr]
    assert [found[c].status for c in skipped] == [Status.SKIP] * len(skipped)
    assert set(found) == {"EP-W01", "EP-W02", "EP-W03"}


def test_remote_without_card_warns_w03() -> None:
    found = by_code(backends(facts_with(remote_status(pb.REMOTE_NO_CARD, readers=1))))
    assert [found[c].status for c in ("EP-W01", "EP-W02", "EP-W03")] == [
        Status.OK, Status.OK, Status.WARN]
    assert_explained(found["EP-W03"])


def test_healthy_remote_is_ok() -> None:
    found = by_code(backends(facts_with(remote_status(pb.BACKEND_HEALTHY, readers=1, cards=1))))
    assert {c: f.status for c, f in found.items()} == {
        "EP-W01": Status.OK, "EP-W02": Status.OK, "EP-W03": Status.OK}


def test_pcsc_and_older_daemons_add_no_backend_findings() -> None:
    assert backends(facts_with(pb.BackendStatus(name="pcsc", condition=pb.BACKEND_HEALTHY),
                               pb.BackendStatus(name="pkcs11"))) == []
    assert backends(Facts(now=NOW)) == []


def test_the_runner_reports_backend_findings() -> None:
    report = run_checks(facts_with(pkcs11_status(pb.PKCS11_NO_TOKEN)))
    assert "EP-H02" in report.codes(Status.FAIL)


# ---- the daemon side: a backend's state to its condition ----

class _Module:
    def __init__(self, path: str) -> None:
        self.path = path


class _Pkcs11:
    name = "pkcs11"

    def __init__(self, path: str, sm2: int | None = None) -> None:
        self.module = _Module(path)
        self.sm2_mechanism = sm2


class _Address:
    url = URL


class _Remote:
    name = "remote"
    address = _Address()

    def __init__(self, last_code: int = 0) -> None:
        self.last_code = last_code


def condition(backend: object, up: bool, readers: int = 0, cards: int = 0) -> str:
    return describe_backend(backend, up, "", readers, cards).condition  # type: ignore[arg-type]


def test_daemon_names_pkcs11_conditions(tmp_path: Path) -> None:
    present = tmp_path / "libmodule.so"
    present.write_bytes(b"")
    assert condition(_Pkcs11(str(tmp_path / "absent.so")), False) == "PKCS11_MODULE_MISSING"
    assert condition(_Pkcs11(str(present)), False) == "PKCS11_MODULE_NOT_LOADED"
    assert condition(_Pkcs11(str(present)), True) == "PKCS11_NO_TOKEN"
    assert condition(_Pkcs11(str(present)), True, 1, 1) == "BACKEND_HEALTHY"
    health = describe_backend(_Pkcs11(str(present), 0x80000001), True, "", 1, 1)  # type: ignore
    assert health.sm2_mechanism_configured and health.target == str(present)


def test_daemon_names_remote_conditions() -> None:
    assert condition(_Remote(), False) == "REMOTE_UNREACHABLE"
    assert condition(_Remote(last_code=1), False) == "REMOTE_WRONG_PROTOCOL"
    assert condition(_Remote(), True, readers=1) == "REMOTE_NO_CARD"
    assert condition(_Remote(), True, readers=1, cards=1) == "BACKEND_HEALTHY"
    assert describe_backend(_Remote(), True, "", 1, 1).target == URL  # type: ignore[arg-type]


def test_the_condition_names_are_the_proto_enum() -> None:
    for backend, up, readers, cards in ((_Pkcs11("/nowhere.so"), False, 0, 0),
                                        (_Remote(1), False, 0, 0), (_Remote(), True, 1, 0)):
        pb.BackendCondition.Value(condition(backend, up, readers, cards))
