#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of the workspace,
# including the ones that drive a real Apache Traffic Server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
