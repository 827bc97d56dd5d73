#!/usr/bin/env bash
# Regenerate the committed Python code of the gRPC contract (protos/v1/*.proto: eportd and the data centre).
#
# Why committed rather than generated at build: the package then installs with plain pip (no
# protoc step in the build backend), readers and reviewers see the exact code that runs, and a
# change of the contract shows up in diffs. grpcio-tools and mypy-protobuf are pinned in
# pyproject.toml (extra "protogen"), and `scripts/gen_protos.sh --check` (run by the tests) fails
# when regenerating would change anything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Through the eport/ symlink farm the descriptors are named eport/protos/v1/..., so the
# generated modules import each other as eport.protos.v1.* (our namespace, not a bare "eport").
mkdir -p "$out/eport/protos/v1"
"$PY" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$(dirname "$PY")/protoc-gen-mypy" --mypy_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$PY")/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
  eport/protos/v1/*.proto
generated=(eportd_pb2.py eportd_pb2.pyi eportd_pb2_grpc.py eportd_pb2_grpc.pyi
           datacenter_pb2.py datacenter_pb2.pyi datacenter_pb2_grpc.py datacenter_pb2_grpc.pyi)
if [ "${1:-}" = "--check" ]; then
  status=0
  for f in "${generated[@]}"; do
    if ! cmp -s "$out/eport/protos/v1/$f" "protos/v1/$f"; then
      echo "protos/v1/$f is out of date: run scripts/gen_protos.sh and commit the result" >&2
      status=1
    fi
  done
  exit $status
fi
for f in "${generated[@]}"; do cp "$out/eport/protos/v1/$f" "protos/v1/$f"; done
echo "regenerated: ${generated[*]/#/protos/v1/}"
