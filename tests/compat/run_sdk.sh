#!/usr/bin/env bash
# Talonic's official Python SDK, unmodified, against a live Quire: tests/compat/sdk_check.py.
#   tests/compat/run_sdk.sh [QUIRE_BINARY]          (default ./target/debug/quire; never builds)
# Environment: COMPAT_VENV (default target/compat-venv), QUIRE_CLIENTS (default ../shared/clients),
# QUIRE_SAMPLE_PDF (default: a one-page text PDF of ../shared/corpora), PYTHON (default python3),
# SDK_CHECK_TIMEOUT (seconds a job may take, default 60). Exit status: sdk_check.py's.
# The server runs on a database in a temporary directory (the `keys` CLI must reach the same file
# to make the read-only and rate-limited keys), which is removed with the server on exit.
set -euo pipefail
bin="${1:-}"
[ -n "$bin" ] && bin="$(realpath "$bin")"
cd "$(dirname "$0")/../.."
repo="$(pwd)"
bin="${bin:-$repo/target/debug/quire}"
if [ ! -x "$bin" ]; then
  echo "run_sdk.sh: no Quire binary at $bin (build it first: cargo build)" >&2
  exit 2
fi
clients="${QUIRE_CLIENTS:-$repo/../shared/clients}"
venv="${COMPAT_VENV:-$repo/target/compat-venv}"
max_body=1048576

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "$clients/talonic-python"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/quire-sdk.XXXXXX")"
db="$tmp/quire.db"
QUIRE_PID=""
cleanup() {
  local rc=$?
  if [ -n "$QUIRE_PID" ]; then
    kill "$QUIRE_PID" 2>/dev/null || true
    wait "$QUIRE_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$tmp/server.log" ]; then
    echo "--- last lines of the server log ---" >&2
    tail -n 20 "$tmp/server.log" >&2 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

coproc QUIRE { exec "$bin" --db "$db" serve --port 0 --ready-json \
  --max-upload "$max_body" --max-body "$max_body" 2>"$tmp/server.log"; }
QUIRE_PID=$QUIRE_PID
if ! read -r -t 60 ready <&"${QUIRE[0]}"; then
  echo "run_sdk.sh: the server did not print its ready line within 60 s" >&2
  exit 1
fi
url=$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$ready")

org=$("$bin" --db "$db" orgs list | awk -F'\t' 'NR == 2 { print $2 }')
[ -n "$org" ] || { echo "run_sdk.sh: no organization in $db" >&2; exit 1; }
newkey() { "$bin" --db "$db" keys create --org "$org" "$@" 2>>"$tmp/keys.log" | head -n 1; }
full_key=$(newkey --name "sdk all scopes" --scopes extract,read,write)
ro_key=$(newkey --name "sdk read-only" --scopes read)
limited_key=$(newkey --name "sdk limited" --scopes read --rate-limit 2)
for k in "$full_key" "$ro_key" "$limited_key"; do
  case "$k" in
    tlnc_*) ;;
    *) echo "run_sdk.sh: keys create printed no key:" >&2; cat "$tmp/keys.log" >&2; exit 1 ;;
  esac
done

TALONIC_BASE_URL="$url" TALONIC_API_KEY="$full_key" \
QUIRE_READONLY_KEY="$ro_key" QUIRE_LIMITED_KEY="$limited_key" QUIRE_MAX_BODY="$max_body" \
QUIRE_SAMPLE_PDF="${QUIRE_SAMPLE_PDF:-$repo/../shared/corpora/pdf-sample-files/002-trivial-libre-office-writer/002-trivial-libre-office-writer.pdf}" \
  "$venv/bin/python" "$repo/tests/compat/sdk_check.py"
