#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS seconds each (default 60); fails on a crash.
#   scripts/fuzz.sh [SECONDS]
# Needs a nightly toolchain (cargo-fuzz links with sanitizers); installs cargo-fuzz once when
# nightly exists. Without nightly it prints a notice and exits 0, or 1 when QUIRE_REQUIRE_ALL=1.
# QUIRE_FUZZ_TOOLCHAIN names another toolchain than `nightly` (e.g. a dated nightly).
# A crash is left in fuzz/artifacts/<target>/: keep it as a regression unit test in the library.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh SECONDS" >&2; exit 2 ;;
esac
toolchain="${QUIRE_FUZZ_TOOLCHAIN:-nightly}"

skip() {
  echo "fuzz: $1; skipped (the property tests in tests/it/prop_parsers.rs stand in)"
  if [ "${QUIRE_REQUIRE_ALL:-}" = "1" ]; then
    exit 1
  fi
  exit 0
}

cargo "+$toolchain" --version >/dev/null 2>&1 || skip "no nightly toolchain here"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz || true
  cargo fuzz --version >/dev/null 2>&1 || skip "cargo-fuzz could not be installed here"
fi

targets=$(cargo "+$toolchain" fuzz list)
for t in $targets; do
  echo "fuzz: $t for ${seconds}s"
  # The seeds stay as they are: new inputs go to fuzz/target (ignored by git), seeds are read.
  mkdir -p "fuzz/target/corpus/$t"
  cargo "+$toolchain" fuzz run "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds"
done
echo "fuzz: every target ran ${seconds}s without a crash"
