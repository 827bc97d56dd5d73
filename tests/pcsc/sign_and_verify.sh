#!/usr/bin/env bash
# A shell user's round trip with `eport`: sign a file on the card with the PIN on standard
# input, export the certificate, and check the signature with OpenSSL alone; then `eport
# verify` of the good file and of a tampered one. Run by tests/pcsc/test_cli.py against a
# simulated card; it works the same against a real card and a running eportd.
#
# Environment:
#   EPORT          the eport program (default: eport on $PATH)
#   EPORTD_SOCKET  eportd's socket (optional: eport's own default otherwise)
#   EPORT_PIN      the card's PIN; it goes to eport on stdin, never as an argument
#   DIGEST         the hash of the card's signature algorithm: sha256 (RSA-2048, P-256),
#                  sha1 (old RSA-1024 cards: SHA1withRSA) or sm3 (SM2)
#   WORKDIR        where the files go (default: a temporary directory, removed at the end)
# Exits non-zero at the first check that fails.
set -euo pipefail

eport=${EPORT:-eport}
digest=${DIGEST:-sha256}
: "${EPORT_PIN:?set EPORT_PIN to the card PIN}"
if [ -n "${WORKDIR:-}" ]; then
  cd "$WORKDIR"
else
  WORKDIR=$(mktemp -d)
  trap 'rm -rf "$WORKDIR"' EXIT
  cd "$WORKDIR"
fi
# SM2 signatures hash Z(ID, public key) || M, with the default ID of GM/T 0009.
sigopt=()
if [ "$digest" = sm3 ]; then
  sigopt=(-sigopt distid:1234567812345678)
fi

step() { printf '== %s\n' "$*"; }
pin() { printf '%s\n' "$EPORT_PIN"; }
expect_exit() {  # expect_exit CODE COMMAND...: run COMMAND, fail unless it exits with CODE
  local want=$1 got=0
  shift
  "$@" || got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAILED: expected exit $want, got $got: $*" >&2
    exit 1
  fi
}
openssl_verify() {  # openssl_verify SIGNATURE FILE
  openssl dgst "-$digest" -verify pub.pem "${sigopt[@]}" -signature "$1" "$2"
}

printf '报关单 %s: 进口 1 项 / declaration\n' "$digest" > data

step "sign with the PIN on stdin: a raw signature (DER for EC and SM2, PKCS#1 for RSA)"
pin | "$eport" sign data --pin-stdin --format raw -o sig.der

step "export the certificate as PEM and DER; OpenSSL reads both"
"$eport" cert export -o card.pem
"$eport" cert export --format der -o card.der
openssl x509 -in card.pem -noout -subject
openssl x509 -in card.der -inform DER -noout -serial
openssl x509 -in card.pem -pubkey -noout > pub.pem

step "OpenSSL verifies the signature with the certificate's public key"
openssl_verify sig.der data

step "base64 output (the default) is the same kind of signature"
pin | "$eport" sign data --pin-stdin -o sig.b64
base64 -d sig.b64 > sig.bin
openssl_verify sig.bin data

if [ "$digest" != sm3 ]; then
  step "sign a digest computed by OpenSSL (--digest)"
  openssl dgst "-$digest" -binary data > data.hash
  pin | "$eport" sign data.hash --digest --pin-stdin --format raw -o sig-of-hash.der
  openssl_verify sig-of-hash.der data
fi

step "eport verify: raw and base64 signatures, with the card's or a certificate file"
"$eport" verify data -s sig.der
"$eport" verify data -s sig.b64 --cert card.pem
"$eport" verify data -s sig.bin --cert card.der

step "a tampered file fails: eport verify exits 11, OpenSSL agrees"
cp data tampered
printf 'x' >> tampered
expect_exit 11 "$eport" verify tampered -s sig.der
expect_exit 11 "$eport" verify tampered -s sig.der --cert card.pem
expect_exit 1 openssl_verify sig.der tampered

echo "all checks passed"
