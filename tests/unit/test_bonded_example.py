"""`eport bonded new --example`: a document that passes every check of bonded manual §2.4, with a
fresh internal number, today's stock-taking date and the enterprise the user names."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from eport.common.bonded.document import declare_problems, normalise, save_problems, total_stock
from eport.common.bonded.examples import example_bonded


def test_the_example_passes_save_and_declare() -> None:
    document = normalise(example_bonded())
    assert save_problems(document) == []
    assert declare_problems(document) == []
    for item in document["items"]:
        assert item["total_stock_qty"] == total_stock(item)


def test_each_example_has_its_own_internal_number_and_today_as_stocktaking_date() -> None:
    now = datetime(2026, 12, 1, 9, 30, 15)
    first, second = example_bonded(now=now), example_bonded(now=now)
    assert first["header"]["internal_number"] != second["header"]["internal_number"]
    assert first["client_reference"] != second["client_reference"]
    assert first["header"]["internal_number"].startswith("EX261201093015")
    assert first["header"]["stocktaking_date"] == "20261201"


def test_the_named_enterprise_replaces_the_example_one() -> None:
    named = example_bonded(enterprise_code="4403960001", enterprise_name="深圳演示贸易有限公司")
    assert named["header"]["enterprise_code"] == "4403960001"
    assert named["header"]["enterprise_name"] == "深圳演示贸易有限公司"
    assert declare_problems(normalise(named)) == []
    # Without a name it is left for the registry; declaring then names the empty field.
    unnamed = normalise(example_bonded(enterprise_code="4403960001"))
    assert next(p.path for p in declare_problems(unnamed)) == "header.enterprise_name"


def _eport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eport.clients.cli.main", "bonded", "new",
                           *args], capture_output=True, text=True, timeout=60)


def test_the_command_writes_it_and_refuses_options_without_example() -> None:
    done = _eport("--example", "--enterprise-code", "4403960001", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)["result"]["document"]
    assert document["header"]["enterprise_code"] == "4403960001"
    refused = _eport("--enterprise-code", "4403960001")
    assert refused.returncode == 2 and "--example" in refused.stderr


def test_written_to_a_file_it_says_where_in_json(tmp_path: Path) -> None:
    target = tmp_path / "stock.json"
    done = _eport("--example", "-o", str(target), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    written = json.loads(target.read_text(encoding="utf-8"))
    assert result["output"] == str(target)
    assert result["internal_number"] == written["header"]["internal_number"]
    assert declare_problems(normalise(written)) == []
