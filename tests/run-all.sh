#!/usr/bin/env bash
# The whole test suite, with everything it needs, as CI runs it.
# Usage: tests/run-all.sh   (from any directory; root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: gcc for the bundled SQLite, Debian's
# slixmpp for the interop tests (run with /usr/bin/python3), redis-server
# (and redis-cli) for the rookery-cluster tests, which start their own.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || missing+=(python3-slixmpp)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --doc
# Last, so that its summary is the closing line.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
