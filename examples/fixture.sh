#!/usr/bin/env bash
# Fixture mode from any language: start a disposable Quire, read its one JSON line, use it, stop it.
#   bash examples/fixture.sh            (builds the binary first if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/debug/quire
[ -x "$bin" ] || cargo build --quiet
coproc QUIRE { exec "$bin" --db :memory: serve --port 0 --ready-json 2>/dev/null; }
# Kill the server and wait for it, so nothing outlives the script.
trap 'kill "$QUIRE_PID" 2>/dev/null || true; wait "$QUIRE_PID" 2>/dev/null || true' EXIT
read -r -t 60 ready <&"${QUIRE[0]}"
url=$(jq -r .url <<<"$ready")
key=$(jq -r .api_key <<<"$ready")
echo "a fresh Quire at $url"
curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"name": "Fixture", "fields": {"invoice_number": "string", "total": "number"}}' \
  "$url/v1/schemas" | jq '{id, name, field_count}'
# Stopping the process deletes its temporary database.
