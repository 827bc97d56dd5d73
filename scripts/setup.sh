#!/usr/bin/env bash
# Install everything this project needs on Debian 12: the system packages (pcsc-lite with the
# vpcd driver for simulated cards, OpenSC and yubico-piv-tool as independent clients, what
# pyscard builds with, certutil and headless Chromium for the browser tier) and the Python package with all extras in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
packages=(pcscd vsmartcard-vpcd libpcsclite-dev swig opensc yubico-piv-tool pcsc-tools openssl
          python3 python3-venv python3-dev gcc procps libusb-1.0-0 shellcheck
          fonts-wqy-microhei poppler-utils faketime libnss3-tools chromium
          softhsm2 postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip setuptools wheel
.venv/bin/pip install -q -e '.[all]'
echo "ready: .venv/bin/eport-sim --help"
