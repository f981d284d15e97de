#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs what the tests start
# (redis-server, redis-sentinel, redis-tools, postgresql; chromium and chromedriver for the browser test)
# when missing, then runs every test against real servers. Usage: ./scripts/test.sh [extra cargo nextest / cargo test arguments]
# ./scripts/test.sh --install-only installs what the tests need and stops (CI does it while it builds).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

need_packages redis-server:redis-server redis-sentinel:redis-sentinel redis-cli:redis-tools \
  chromium:chromium chromedriver:chromium-driver runuser:util-linux
# PostgreSQL's server binaries live outside PATH.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  install_packages postgresql
fi
[ "${1:-}" != --install-only ] || exit 0

# The module dependency rule (docs/architecture.md): cheap, so it runs first.
python3 scripts/check-layers.py

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --locked --no-fail-fast "$@"
fi
