#!/usr/bin/env bash
# The whole test suite, with everything it needs, as CI runs it.
# Usage: tests/run-all.sh   (from any directory; root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: gcc for the bundled SQLite, Debian's
# slixmpp for the interop tests (run with /usr/bin/python3), redis-server
# (and redis-cli) for the rookery-cluster tests, which start their own;
# python3-venv for the Helm chart's tests (their packages come from PyPI);
# prosody (with lua-unbound, its resolver) for the federation interop test;
# python3-aiohttp (slixmpp's XEP-0363 plugin) and curl for the HTTP upload
# tests (tests/tests/upload.rs).
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
/usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1 || missing+=(python3-slixmpp)
/usr/bin/python3 -c 'import aiohttp' >/dev/null 2>&1 || missing+=(python3-aiohttp)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
[ -x /usr/bin/prosody ] || missing+=(prosody)
dpkg -s lua-unbound >/dev/null 2>&1 || missing+=(lua-unbound)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The package may start its own Prosody, which holds port 5269: the
# interop test (tests/tests/interop_prosody.rs) needs 127.0.0.1:5269 and
# runs a Prosody of its own.
if pgrep -u prosody -x lua5.4 >/dev/null 2>&1 || pgrep -u prosody prosody >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo service prosody stop >/dev/null 2>&1 || $sudo prosodyctl stop >/dev/null 2>&1 || true
fi

# The npm packages of the web transport interop tests (@xmpp/client,
# strophe.js), pinned by tests/interop/node/package-lock.json. Node >= 20.10.
if command -v npm >/dev/null 2>&1 && [ ! -d tests/interop/node/node_modules ]; then
  (cd tests/interop/node && npm ci --no-audit --no-fund)
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --doc
# The Helm chart, alert rules and dashboard, offline (helm/rookery/tests),
# and the configurations it renders checked by the server binary (built
# with the profile nextest uses below, so nothing is built twice).
cargo build --workspace --bins --profile test --locked
ROOKERY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/rookery" helm/rookery/tests/run.sh
# Last, so that its summary is the closing line.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
