#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a live fixture-mode Quire, using the server's own
# /openapi.json: proves the server honours the document it publishes.
#   scripts/schemathesis.sh [MAX_EXAMPLES]        (default 20)
# Needs python3 with venv; installs schemathesis into target/schemathesis-venv once.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-20}"
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis>=4,<5"
fi
bin=./target/debug/quire
[ -x "$bin" ] || cargo build --quiet
coproc QUIRE { exec "$bin" --db :memory: serve --port 0 --ready-json --rate-limit 0 2>/tmp/quire-schemathesis.log; }
# Kill the server and wait for it, so nothing outlives the script.
trap 'kill "$QUIRE_PID" 2>/dev/null || true; wait "$QUIRE_PID" 2>/dev/null || true' EXIT
read -r -t 60 ready <&"${QUIRE[0]}"
url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$ready")
key=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["api_key"])' "$ready")
# Two checks are left out by default. positive_data_acceptance expects every schema-valid
# request to succeed, but some rules cannot be written in a schema (opaque cursors the server
# must have issued, rule inputs that must be fields of the policy, a type told by the file's
# extension). ensure_resource_availability expects a created resource to be readable right
# after its POST, but schemathesis reuses generated Idempotency-Key values, and a repeated key
# replays the first answer by contract, naming a resource that may have been deleted since.
exclude="${SCHEMATHESIS_EXCLUDE-positive_data_acceptance,ensure_resource_availability}"
"$venv/bin/schemathesis" run "$url/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks "${SCHEMATHESIS_CHECKS:-all}" \
  ${exclude:+--exclude-checks "$exclude"} \
  --max-examples "$examples" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --no-shrink \
  --warnings off
