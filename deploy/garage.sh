#!/usr/bin/env bash
# A single-node Garage (S3-compatible object store) on loopback, for tests and for trying the S3 cold
# tier on one machine. Everything lives under DIR; every command is idempotent.
#
#   deploy/garage.sh start DIR   start (or restart) Garage under DIR, apply a one-node layout, create
#                                the bucket and an access key; print the [cold] section of pico.toml
#   deploy/garage.sh env DIR     print the [cold] section of the Garage under DIR (no start)
#   deploy/garage.sh stop DIR    stop the Garage under DIR (nothing to do if it is not running)
#   deploy/garage.sh status DIR  exit 0 when it is running and answers
#   deploy/garage.sh cluster DIR N   start (or restart) N nodes under DIR/node1..N, replication
#                                factor N, one zone each; bucket and key made through node 1, whose
#                                S3 endpoint the printed [cold] section names
#   deploy/garage.sh stop-node DIR K  stop node K of the cluster under DIR (its data stays)
#   deploy/garage.sh stop-cluster DIR  stop every node of the cluster under DIR
#
# A node may run as a host of its own in a network namespace (`ip netns`): GARAGE_NETNS names the
# namespace and GARAGE_ADDR the address it binds there (default 127.0.0.1, no namespace); for
# `cluster`, GARAGE_HOSTS lists NETNS=ADDR for nodes 1..N, space-separated. Both are kept in
# DIR/ports.env with the ports, so later commands run there too.
# Ports: GARAGE_S3_PORT, GARAGE_RPC_PORT, GARAGE_ADMIN_PORT, else free ones are picked at the first
# start and kept in DIR/ports.env, so a restart (after `stop`) comes back at the same endpoint.
# GARAGE_BUCKET (default "pico") names the bucket; GARAGE_REGION (default "garage") the region.
# The garage binary: $GARAGE_BIN, else `garage` on PATH, else ~/.cargo/bin/garage (deploy/setup.sh).
set -euo pipefail

log() { printf '[garage] %s\n' "$*" >&2; }
die() { printf '[garage] error: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 start|stop|env|status DIR, or cluster DIR N, stop-node DIR K, stop-cluster DIR"; }
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
cmd=$1
ARG=${3:-}
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF="$DIR/garage.toml"
PIDFILE="$DIR/garage.pid"
PORTS="$DIR/ports.env"
KEYS="$DIR/key.env"
LOG="$DIR/garage.log"
BUCKET="${GARAGE_BUCKET:-pico}"
REGION="${GARAGE_REGION:-garage}"

garage_bin() {
  if [ -n "${GARAGE_BIN:-}" ]; then echo "$GARAGE_BIN"; return; fi
  if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
  if [ -x "$HOME/.cargo/bin/garage" ]; then echo "$HOME/.cargo/bin/garage"; return; fi
  die "garage not found: run deploy/setup.sh (it installs Garage with cargo) or set GARAGE_BIN"
}
GARAGE=$(garage_bin)
# Runs a command in this node's network namespace (NETNS from ports.env), if it has one.
in_ns() {
  if [ -n "${NETNS:-}" ]; then nsenter --net="/run/netns/$NETNS" "$@"; else "$@"; fi
}
g() { in_ns "$GARAGE" -c "$CONF" "$@"; }

port_in_use() { in_ns ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    if ! port_in_use "$p"; then echo "$p"; return; fi
  done
  die "no free loopback port found"
}

# The node's ports, namespace and address (DIR/ports.env; files of older versions name no
# namespace: loopback).
load_ports() {
  NETNS=
  ADDR=127.0.0.1
  # shellcheck disable=SC1090
  . "$PORTS"
}

running() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

write_config() {
  if [ ! -f "$PORTS" ]; then
    local s3 rpc admin
    NETNS=${GARAGE_NETNS:-}
    ADDR=${GARAGE_ADDR:-127.0.0.1}
    s3=${GARAGE_S3_PORT:-$(free_port)}
    rpc=${GARAGE_RPC_PORT:-$(free_port)}
    admin=${GARAGE_ADMIN_PORT:-$(free_port)}
    [ "$s3" != "$rpc" ] && [ "$s3" != "$admin" ] && [ "$rpc" != "$admin" ] ||
      die "port collision ($s3, $rpc, $admin); try again"
    printf 'S3_PORT=%s\nRPC_PORT=%s\nADMIN_PORT=%s\nNETNS=%s\nADDR=%s\n' \
      "$s3" "$rpc" "$admin" "$NETNS" "$ADDR" >"$PORTS"
  fi
  load_ports
  [ -f "$CONF" ] && return
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$DIR/meta" "$DIR/data"
  cat >"$CONF" <<EOF
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = ${GARAGE_REPLICATION:-1}
rpc_bind_addr = "$ADDR:$RPC_PORT"
rpc_public_addr = "$ADDR:$RPC_PORT"
rpc_secret = "${GARAGE_SECRET:-$secret}"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "$ADDR:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "$ADDR:$ADMIN_PORT"
EOF
}

# Waits until the node answers its RPC (garage status) and S3 port. Returns 1 if garage exited,
# 2 if it did not answer within 10 s.
wait_up() {
  local i
  for i in $(seq 1 100); do
    if g status >/dev/null 2>&1 && port_in_use "$S3_PORT"; then return 0; fi
    running || return 1
    sleep 0.1
  done
  return 2
}

setup_cluster() {
  # A one-node layout, applied once.
  if ! g layout show 2>/dev/null | grep -q 'Current cluster layout version: [1-9]'; then
    local node
    node=$(g node id -q 2>/dev/null | cut -d@ -f1)
    [ -n "$node" ] || die "cannot read the node id; see $LOG"
    g layout assign -z dc1 -c 1G "$node" >/dev/null
    g layout apply --version 1 >/dev/null
  fi
  # Bucket and key, created once; the key is kept in DIR/key.env.
  local i
  for i in $(seq 1 50); do
    if g bucket info "$BUCKET" >/dev/null 2>&1 || g bucket create "$BUCKET" >/dev/null 2>&1; then
      break
    fi
    sleep 0.2
  done
  g bucket info "$BUCKET" >/dev/null 2>&1 || die "cannot create bucket $BUCKET; see $LOG"
  if [ ! -f "$KEYS" ]; then
    local out id secret
    out=$(g key create pico-key)
    id=$(printf '%s\n' "$out" | sed -n 's/^Key ID:[[:space:]]*//p' | head -n1)
    secret=$(printf '%s\n' "$out" | sed -n 's/^Secret key:[[:space:]]*//p' | head -n1)
    [ -n "$id" ] && [ -n "$secret" ] || die "cannot parse the output of 'garage key create': $out"
    g bucket allow --read --write --owner "$BUCKET" --key "$id" >/dev/null
    printf 'KEY_ID=%s\nSECRET=%s\n' "$id" "$secret" >"$KEYS.tmp"
    mv "$KEYS.tmp" "$KEYS"
  fi
}

print_cold() {
  [ -f "$PORTS" ] && [ -f "$KEYS" ] || die "no Garage set up under $DIR (run: $0 start $DIR)"
  load_ports
  # shellcheck disable=SC1090
  . "$KEYS"
  cat <<EOF
[cold]
kind = "s3"
endpoint = "http://$ADDR:$S3_PORT"
region = "$REGION"
bucket = "$BUCKET"
access_key_id = "$KEY_ID"
secret_access_key = "$SECRET"
EOF
}

launch() {
  port_in_use "$S3_PORT" && return 1
  log "starting $GARAGE under $DIR (S3 on $ADDR:$S3_PORT${NETNS:+ in network namespace $NETNS})"
  setsid bash -c '[ -z "$1" ] || exec nsenter --net="/run/netns/$1" "${@:2}"; exec "${@:2}"' \
    launch "$NETNS" "$GARAGE" -c "$CONF" server >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
}

start() {
  local attempt rc
  for attempt in 1 2 3; do
    write_config
    rc=0
    if ! running; then
      launch || rc=1
    fi
    [ "$rc" -eq 0 ] && { wait_up || rc=$?; }
    [ "$rc" -eq 0 ] && break
    # A fresh instance on ports we picked ourselves may have lost a race for a port: pick again.
    if [ ! -f "$KEYS" ] && [ -z "${GARAGE_S3_PORT:-}${GARAGE_RPC_PORT:-}${GARAGE_ADMIN_PORT:-}" ] &&
      [ "$attempt" -lt 3 ]; then
      log "garage did not come up on its ports (attempt $attempt); trying other ports"
      stop
      rm -rf "$CONF" "$PORTS" "$DIR/meta" "$DIR/data"
      continue
    fi
    tail -n 20 "$LOG" >&2 || true
    # Never leave a half-started server behind.
    stop
    [ "$rc" -eq 2 ] && die "garage did not answer within 10 s; see $LOG"
    die "garage could not start (port $ADDR:$S3_PORT taken, or see $LOG)"
  done
  # A node of a cluster: its layout and bucket are the cluster's (`cluster`).
  [ -n "${GARAGE_NODE_ONLY:-}" ] && return
  setup_cluster
  print_cold
}

# N nodes under DIR/node1..N that know each other, one zone each, replication factor N.
# garage's command line on node K of the cluster under DIR (in its namespace, if it has one).
node_g() {
  local node="$DIR/node$1"
  shift
  (PORTS="$node/ports.env" && load_ports && in_ns "$GARAGE" -c "$node/garage.toml" "$@")
}

cluster() {
  local n=$1 k secret node ids hosts host
  [ "$n" -ge 1 ] 2>/dev/null || die "cluster: N must be a number"
  read -r -a hosts <<<"${GARAGE_HOSTS:-}"
  [ "${#hosts[@]}" -eq 0 ] || [ "${#hosts[@]}" -eq "$n" ] ||
    die "cluster: GARAGE_HOSTS names ${#hosts[@]} hosts for $n nodes"
  [ -f "$DIR/secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret"
  secret=$(cat "$DIR/secret")
  for k in $(seq 1 "$n"); do
    host=${hosts[$((k - 1))]:-}
    GARAGE_NETNS=${host%%=*} GARAGE_ADDR=${host#*=} GARAGE_REPLICATION=$n GARAGE_SECRET=$secret \
      GARAGE_NODE_ONLY=1 bash "$0" start "$DIR/node$k"
  done
  ids=()
  for k in $(seq 1 "$n"); do
    node=$(node_g "$k" node id -q 2>/dev/null) ||
      die "cannot read the id of node $k; see $DIR/node$k/garage.log"
    ids+=("$node")
    [ "$k" -gt 1 ] && node_g 1 node connect "$node" >/dev/null
  done
  if ! node_g 1 layout show 2>/dev/null | grep -q 'Current cluster layout version: [1-9]'; then
    for k in $(seq 1 "$n"); do
      node_g 1 layout assign -z "dc$k" -c 1G "${ids[$((k - 1))]%@*}" >/dev/null
    done
    node_g 1 layout apply --version 1 >/dev/null
  fi
  # The bucket and key through node 1 (its layout is applied: only those are made).
  bash "$0" start "$DIR/node1"
}

stop_cluster() {
  local node
  for node in "$DIR"/node*; do
    [ -d "$node" ] && bash "$0" stop "$node"
  done
  return 0
}

stop() {
  if running; then
    local pid i
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    log "stopped garage (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "$cmd" in
  start) start ;;
  cluster) cluster "$ARG" ;;
  stop-node) bash "$0" stop "$DIR/node$ARG" ;;
  stop-cluster) stop_cluster ;;
  stop) stop ;;
  env) print_cold ;;
  status)
    running || exit 1
    load_ports
    g status >/dev/null 2>&1
    ;;
  *) usage ;;
esac
