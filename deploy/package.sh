#!/usr/bin/env bash
# Builds the Debian package of pico with cargo-deb: /usr/bin/pico (release), the systemd units,
# /etc/pico/pico.toml (a conffile) and the maintainer scripts of deploy/debian/
# ([package.metadata.deb] in Cargo.toml). Installs cargo-deb first if it is missing
# (`cargo install cargo-deb --locked`, about 50 s here).
#
#   deploy/package.sh [OUT_DIR]   builds OUT_DIR/pico_VERSION-1_ARCH.deb (default
#                                 $CARGO_TARGET_DIR/debian) and prints its path
#
# The release build is incremental in CARGO_TARGET_DIR (default /var/cache/picocenter/target):
# about 9 minutes from nothing on 2 cores, a few after a change.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[package] %s\n' "$*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/picocenter/target}"
OUT="${1:-$CARGO_TARGET_DIR/debian}"

if ! cargo deb --version >/dev/null 2>&1; then
  log "installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked --quiet
fi
mkdir -p "$OUT"
log "building the package (cargo deb, release)"
# Debug symbols stay out of the package (the release profile keeps them for benchmarks' traces).
cargo deb --locked --quiet --no-dbgsym --strip --output "$OUT" -p picocenter
