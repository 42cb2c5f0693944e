#!/usr/bin/env bash
# The whole test suite: unit and integration tests of every crate (they use
# the release binaries built by `make build`), then the bounded fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export WRAPCRYPT_BIN="$PWD/target/release/wrapcrypt"
# The modules of every crate form a tree or a DAG (issue 15).
python3 scripts/check-modules.py
cargo test --release --workspace --no-fail-fast -- --test-threads=2
if [ -x scripts/fuzz.sh ]; then
  FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
fi
