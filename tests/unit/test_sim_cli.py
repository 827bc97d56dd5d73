"""eport-sim ca / provision / show as a user runs them: clear errors, nothing overwritten,
no secret printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eport.firmware_sim.cli import cli
from eport.firmware_sim.image import read_image


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "ca"
    result = CliRunner().invoke(cli, ["ca", "init", "--ca", str(directory)])
    assert result.exit_code == 0, result.output
    assert "trust anchors" in result.output
    return directory


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_ca_init_refuses_to_replace_a_ca(ca_dir: Path) -> None:
    code, out = invoke("ca", "init", "--ca", str(ca_dir))
    assert code != 0 and "already exists" in out and "--force" in out
    trust = (ca_dir / "trust-anchors.pem").read_text()
    assert trust.count("BEGIN CERTIFICATE") == 2


def test_provision_without_a_ca_says_what_to_do(tmp_path: Path) -> None:
    code, out = invoke("provision", str(tmp_path / "c.json"), "--ca", str(tmp_path / "none"))
    assert code != 0 and "eport-sim ca init" in out


@pytest.mark.parametrize(
    ("args", "validity"),
    [
        ([], "valid"),
        (["--not-before", "-400d", "--days", "365"], "expired"),
        (["--not-before", "-700d", "--days", "710"], "expiring in"),
        (["--not-before", "+5d"], "not yet valid"),
    ],
)
def test_provision_validity_windows(ca_dir: Path, tmp_path: Path, args: list[str],
                                    validity: str) -> None:
    card = tmp_path / "card.json"
    code, out = invoke("provision", str(card), "--ca", str(ca_dir), "--algorithm", "p256", *args)
    assert code == 0, out
    code, out = invoke("show", str(card), "--json")
    summary = json.loads(out)
    assert summary["validity"].startswith(validity)


def test_provision_every_kind_form_and_algorithm(ca_dir: Path, tmp_path: Path) -> None:
    for kind, form, algorithm in [("legal-person", "ikey", "rsa2048"),
                                  ("declarant", "ic", "sm2"), ("operator", "ic", "rsa1024")]:
        card = tmp_path / f"{kind}.json"
        code, out = invoke("provision", str(card), "--ca", str(ca_dir), "--kind", kind,
                           "--form", form, "--algorithm", algorithm, "--holder", "王五",
                           "--enterprise", "某某物流有限公司", "--customs-code", "1101910123",
                           "--card-id", "8600001234567")
        assert code == 0, out
        image = read_image(card)
        assert (image.profile.kind.value, image.profile.form.value) == (kind, form)
        assert image.profile.customs_code == "1101910123"
        assert len(image.profile.cert_number) == (8 if algorithm == "rsa1024" else 16)


def test_provision_refuses_bad_fields_by_name(ca_dir: Path, tmp_path: Path) -> None:
    card = tmp_path / "bad.json"
    cases = [
        (["--customs-code", "12345"], "customs code"),
        (["--credit-code", "91110000MA01ABCDE0"], "credit code"),
        (["--pin", "1234"], "PIN"),
        (["--puk", "abcdefgh"], "PUK"),
        (["--pin-tries", "0"], "tries"),
        (["--not-before", "yesterday"], "not a date"),
        (["--days", "0"], "validity"),
    ]
    for args, message in cases:
        code, out = invoke("provision", str(card), "--ca", str(ca_dir), "--algorithm", "p256",
                           *args)
        assert code != 0 and message in out, (args, out)
        assert not card.exists()


def test_provision_never_overwrites_a_card_by_accident(ca_dir: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    assert invoke("provision", str(card), "--ca", str(ca_dir), "--algorithm", "p256")[0] == 0
    before = card.read_bytes()
    code, out = invoke("provision", str(card), "--ca", str(ca_dir), "--algorithm", "p256")
    assert code != 0 and "already exists" in out
    assert card.read_bytes() == before


def test_show_prints_no_secret_and_reports_corruption(ca_dir: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    code, out = invoke("provision", str(card), "--ca", str(ca_dir), "--algorithm", "p256",
                       "--pin", "13572468", "--puk", "24681357")
    assert code == 0
    for output in (out, invoke("show", str(card))[1], invoke("show", str(card), "--json")[1]):
        assert "13572468" not in output and "24681357" not in output
        assert "PIN tries left" in output or "pin_tries_left" in output
    card.write_text(card.read_text()[:100])
    code, out = invoke("show", str(card))
    assert code != 0 and "corrupt" in out and "Traceback" not in out
