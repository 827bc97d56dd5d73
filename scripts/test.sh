#!/usr/bin/env bash
# The project's checks: ruff, mypy, then pytest (unit and pcsc tiers). The pcsc tier starts
# pcscd itself when it is not running; with CI=true a pcsc test that cannot start it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "== ruff"
$PY -m ruff check .
echo "== mypy"
$PY -m mypy -p eport
echo "== pytest"
$PY -m pytest "$@"
