#!/usr/bin/env bash
# Re-vendors the API explorer (GET /docs): swagger-ui-dist from the npm registry, the files the
# binary embeds, its licence and notice. Usage: scripts/vendor-swagger-ui.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-5.35.0}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "swagger-ui-dist@$version" --silent >/dev/null && tar xzf swagger-ui-dist-*.tgz)
dest=ui/vendor/swagger-ui
mkdir -p "$dest"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt; do
  cp "$tmp/package/$f" "$dest/$f"
done
echo "swagger-ui-dist $version (Apache-2.0) vendored into $dest"
