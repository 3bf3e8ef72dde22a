#!/usr/bin/env bash
# Runs the whole test suite, exactly as CI does (.ci/run calls this): set-up if needed, then
# format check, clippy -D warnings, the docs' links, and unit, integration and end-to-end tests.
# As root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "deploy/test.sh: run as root (CRIU and FUSE need it)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:/usr/local/sbin:$PATH"
# Builds live outside the clone so that later runs on this machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/picocenter/target}"
# No incremental caches: a test run builds once, and they cost gigabytes per build in the target
# directory that runs share.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

bash deploy/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc -D warnings (broken links in the docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --document-private-items --locked
echo "== the Debian package (deploy/package.sh: a release build, ~9 min from nothing on 2 cores, a few after a change)"
# Built once here rather than inside the package's test, which takes it from PICO_DEB.
PICO_DEB=$(bash deploy/package.sh | grep '\.deb$' | tail -n1)
export PICO_DEB
echo "== tests (unit, integration, end-to-end)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
