#!/usr/bin/env bash
# Runs Talonic's MCP server (../shared/clients/talonic-mcp, unmodified) over stdio against a
# live Quire and checks every tool Quire can serve (tests/compat/mcp_check.mjs).
#   tests/compat/run_mcp.sh [QUIRE_BINARY]          (default ./target/debug/quire; never builds)
# Env: MCP_CHECK_STRICT=1   keys outside an outputSchema fail instead of being noted
#      COMPAT_MCP_DIR  where the prepared copy is cached (default target/compat-mcp)
#      TALONIC_MCP_SRC the MCP source (default ../shared/clients/talonic-mcp)
#      TALONIC_NODE_SDK auto (default: the real @talonic/node if npm can install it, else the
#                       stand-in in tests/compat/talonic-node-shim) | real | shim
# Needs node >= 18 and npm (registry access for the first `npm ci` only). The copy is rebuilt
# only when the MCP source, its lockfile or the stand-in change. Leaves nothing else behind:
# the server is always killed, its log and any half-built copy removed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin="${1:-./target/debug/quire}"
src="${TALONIC_MCP_SRC:-$root/../shared/clients/talonic-mcp}"
dir="${COMPAT_MCP_DIR:-$root/target/compat-mcp}"
shim="$root/tests/compat/talonic-node-shim"
sdk_mode="${TALONIC_NODE_SDK:-auto}"

[ -x "$bin" ] || { echo "run_mcp: no Quire binary at $bin (build it first: cargo build)" >&2; exit 2; }
[ -f "$src/package-lock.json" ] || { echo "run_mcp: no MCP source at $src" >&2; exit 2; }
command -v node >/dev/null && command -v npm >/dev/null || { echo "run_mcp: node and npm are required" >&2; exit 2; }

tmp=""
log=""
QUIRE_PID=""
cleanup() {
  if [ -n "$QUIRE_PID" ]; then kill "$QUIRE_PID" 2>/dev/null || true; wait "$QUIRE_PID" 2>/dev/null || true; fi
  [ -n "$log" ] && rm -f "$log" "$log.out"
  [ -n "$tmp" ] && rm -rf "$tmp"
  return 0
}
trap cleanup EXIT

# ---- prepare (or reuse) the copy: npm ci + bundle src/server.ts into dist/server.js ----------
stamp="$( { cd "$src" && find . -path ./node_modules -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum; \
            cd "$shim" && LC_ALL=C sha256sum package.json index.js; echo "$sdk_mode"; } | sha256sum | cut -c1-32)"
if [ ! -f "$dir/.quire-stamp" ] || [ "$(cat "$dir/.quire-stamp")" != "$stamp" ] || [ ! -f "$dir/dist/server.js" ]; then
  echo "# preparing the MCP server in $dir"
  mkdir -p "$(dirname "$dir")"
  tmp="$dir.tmp.$$"
  rm -rf "$tmp"
  cp -R "$src" "$tmp"
  chmod -R u+w "$tmp"
  rm -rf "$tmp/node_modules" "$tmp/dist"
  npm_ci() { (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >"$tmp/.npm-ci.log" 2>&1); }
  used=""
  if [ "$sdk_mode" != shim ] && npm_ci; then
    used=real
  elif [ "$sdk_mode" = real ]; then
    echo "run_mcp: npm ci failed:" >&2; tail -5 "$tmp/.npm-ci.log" >&2; exit 2
  else
    # @talonic/node is not served by the registry reachable here: drop it from the copy's
    # manifest and lockfile (everything else stays pinned by the lockfile), then put the
    # stand-in in its place. The MCP's own code is untouched.
    [ "$sdk_mode" = auto ] && echo "# real @talonic/node not installable ($(grep -m1 -o '404.*' "$tmp/.npm-ci.log" | cut -c1-90 || echo 'npm ci failed')); using the stand-in"
    node -e '
      const fs = require("fs"), d = process.argv[1]
      const pj = d + "/package.json", pl = d + "/package-lock.json"
      const p = JSON.parse(fs.readFileSync(pj)); delete p.dependencies["@talonic/node"]
      fs.writeFileSync(pj, JSON.stringify(p, null, 2) + "\n")
      const l = JSON.parse(fs.readFileSync(pl)); delete l.packages[""].dependencies["@talonic/node"]
      delete l.packages["node_modules/@talonic/node"]
      fs.writeFileSync(pl, JSON.stringify(l, null, 2) + "\n")' "$tmp"
    npm_ci || { echo "run_mcp: npm ci failed:" >&2; tail -5 "$tmp/.npm-ci.log" >&2; exit 2; }
    mkdir -p "$tmp/node_modules/@talonic/node"
    cp "$shim/package.json" "$shim/index.js" "$tmp/node_modules/@talonic/node/"
    used=shim
  fi
  # No tsx in the MCP's devDependencies and node < 22.6 cannot strip types: bundle the stdio
  # entry with esbuild (a devDependency via tsup/vite), dependencies left external, as tsup does.
  (cd "$tmp" && node_modules/.bin/esbuild src/server.ts --bundle --platform=node --format=esm \
     --target=node18 --packages=external --outfile=dist/server.js --log-level=warning)
  echo "$stamp" >"$tmp/.quire-stamp"
  echo "$used" >"$tmp/.quire-sdk"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  tmp=""
fi
echo "# MCP copy: $dir (@talonic/node: $(cat "$dir/.quire-sdk"))"

# ---- start Quire ---------------------------------------------------------------------------
log="$(mktemp "${TMPDIR:-/tmp}/quire-mcp.XXXXXX")"
coproc QUIRE { exec "$bin" --db :memory: serve --port 0 --ready-json --rate-limit 0 2>"$log"; }

if ! read -r -t 60 ready <&"${QUIRE[0]}"; then
  echo "run_mcp: Quire did not report ready; its log:" >&2; tail -20 "$log" >&2; exit 2
fi
url=$(node -e 'console.log(JSON.parse(process.argv[1]).url)' "$ready")
key=$(node -e 'console.log(JSON.parse(process.argv[1]).api_key)' "$ready")

# ---- run the check ---------------------------------------------------------------------------
rc=0
MCP_DIR="$dir" QUIRE_URL="$url" QUIRE_KEY="$key" node "$root/tests/compat/mcp_check.mjs" | tee "$log.out" || rc=$?
if [ "$rc" -ne 0 ] && [ -s "$log" ]; then
  echo "# Quire log (last 15 lines):"
  tail -15 "$log" | sed 's/^/  /'
  # keep `N passed, M failed` the last line
  grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log.out" | tail -1 || true
fi
exit "$rc"
