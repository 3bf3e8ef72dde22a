#!/usr/bin/env bash
# Installs everything picocenter-rs needs on a Debian 12 host, as root. Idempotent: a second run
# checks what is present and returns in seconds.
#
#   deploy/setup.sh            everything the tests use: Debian packages, CRIU >= 4.2, Garage
#                              (PICO_WITH_GARAGE=0 leaves Garage out)
#   deploy/setup.sh quickstart only what the quickstart uses: CRIU >= 4.2 (and its build
#                              dependencies), redis and curl; no Garage, no test clients
#
# CRIU: Debian 12 ships 3.17 and trixie 4.1; both fail on Linux >= 6.16 (vDSO layout, SO_PASSCRED on
# inet sockets). We build CRIU from Debian unstable's *source* package, using a deb-src line in a
# separate apt sources file (the system's other apt sources are not touched), and install the binary
# to /usr/local/sbin/criu.
set -euo pipefail

CRIU_MIN="4.2"
CRIU_BUILD_DIR="${PICO_CRIU_BUILD_DIR:-/var/cache/picocenter/criu-build}"
SRC_LIST=/etc/apt/sources.list.d/picocenter-criu-src.list

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get and the CRIU install need it)"

export DEBIAN_FRONTEND=noninteractive

PROFILE="${1:-tests}"
case "$PROFILE" in
  tests | quickstart) ;;
  *) die "unknown profile '$PROFILE' (tests or quickstart)" ;;
esac

# Debian packages the worker itself needs, and CRIU's build dependencies (make criu).
PACKAGES=(
  # CRIU needs iptables-save/ip6tables-restore for tenants in their own netns; the worker has
  # nft forward running tenants' ports
  iptables nftables iproute2
  # tenants' disk quotas: an ext4 image per tenant, loop-mounted
  e2fsprogs mount
  build-essential pkg-config dpkg-dev xz-utils
  libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnl-3-dev libnet1-dev libcap-dev libbsd-dev libaio-dev libgnutls28-dev uuid-dev libdrm-dev
  libnftables-dev
  # the quickstart's tenants and client
  redis-server redis-tools curl
)
if [ "$PROFILE" = tests ]; then
  PACKAGES+=(
    # FUSE, NBD clients and reference server, qemu tools
    fuse3 libnbd-bin nbdkit python3-libnbd qemu-utils
    # more tenants of tests and benchmarks
    nginx
    # dig, the DNS client the hub's tests ask; fuser, which names a worker to signal
    # (docs/multi-host.md)
    bind9-dnsutils psmisc
    # benchmark baselines
    b3sum lz4 zstd restic dnsperf
    # headless browser for the HTML cost report test
    chromium
  )
fi

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

install_packages() {
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// }" ]; then
    log "Debian packages: all present"
    return
  fi
  log "installing Debian packages (a few minutes the first time): $missing"
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Prints the installed CRIU version (e.g. 4.2.1) or nothing.
criu_version() {
  command -v criu >/dev/null 2>&1 || return 0
  criu --version 2>/dev/null | sed -n 's/^Version: *\([0-9.]*\).*/\1/p' | head -n1
}

version_ge() { # version_ge A B: A >= B
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

install_criu() {
  local have
  have=$(criu_version)
  if [ -n "$have" ] && version_ge "$have" "$CRIU_MIN"; then
    log "CRIU $have present"
    return
  fi
  log "CRIU ${have:-missing}: building >= $CRIU_MIN from Debian unstable's source package"
  if [ ! -f "$SRC_LIST" ]; then
    echo "deb-src http://deb.debian.org/debian unstable main" >"$SRC_LIST"
    apt-get update -qq
  fi
  mkdir -p "$CRIU_BUILD_DIR"
  cd "$CRIU_BUILD_DIR"
  local orig
  orig=$(ls criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$orig" ]; then
    # The mirror may lack the Debian tarball: fetch each file of the source package on its own and
    # keep going when one is missing; the orig tarball alone builds with `make criu`.
    local uri name
    while read -r uri name _; do
      uri=${uri//\'/}
      log "fetching $name"
      curl -fsSL --retry 3 -o "$name" "$uri" || log "could not fetch $name (continuing)"
    done < <(apt-get source --print-uris -qq criu 2>/dev/null | grep "^'")
    orig=$(ls criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$orig" ] || die "could not download CRIU's orig tarball from Debian unstable"
  fi
  local srcdir=src
  if [ ! -f "$srcdir/Makefile" ]; then
    rm -rf "$srcdir" && mkdir -p "$srcdir"
    tar -xf "$orig" -C "$srcdir" --strip-components=1
  fi
  log "building CRIU in $CRIU_BUILD_DIR/$srcdir (about a minute on 2 cores)"
  make -C "$srcdir" -j"$(nproc)" criu >"$CRIU_BUILD_DIR/build.log" 2>&1 ||
    die "CRIU build failed; see $CRIU_BUILD_DIR/build.log"
  install -m 0755 "$srcdir/criu/criu" /usr/local/sbin/criu
  hash -r
  have=$(criu_version)
  version_ge "${have:-0}" "$CRIU_MIN" || die "installed CRIU reports '${have:-nothing}', need >= $CRIU_MIN"
  log "CRIU $have installed to /usr/local/sbin/criu"
}

install_garage() {
  if command -v garage >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/garage" ]; then
    log "Garage present"
    return
  fi
  log "installing Garage with cargo (about 11 minutes, once)"
  cargo install garage --locked --quiet
}

# A dense host runs thousands of tenants' processes: Linux's default pid_max (32768) is too few.
# (Restores no longer need their old pids free: each tenant has a PID namespace of its own.)
raise_pid_max() {
  local want=4194304 have
  have=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 0)
  if [ "$have" -lt "$want" ]; then
    if echo "$want" >/proc/sys/kernel/pid_max 2>/dev/null; then
      log "kernel.pid_max raised from $have to $want"
    else
      log "warning: cannot raise kernel.pid_max ($have); new processes may fail to start on a dense host"
    fi
  fi
}

install_packages
raise_pid_max
install_criu
if [ "$PROFILE" = tests ] && [ "${PICO_WITH_GARAGE:-1}" = 1 ]; then
  install_garage
fi
log "ready"
