#!/usr/bin/env bash
# Measures `pico tenant move` against a swap-out and wake-up on one host, in the same run, at a
# real client (curl): a hub and two workers on this machine, each in a mount namespace of its
# own where one home path shows its own directory (as /var/lib/pico on two hosts), listening on
# 127.0.0.1 and 127.0.0.2, one cold tier (a directory). One tenant moves back and forth RUNS
# times; before each move it is swapped out and woken by a connection on the host it is on.
#
#   bench/results/move/measure.sh              counter app (deploy/apps/counter.py), 10 runs
#   APP=redis RUNS=20 bench/results/move/measure.sh
#
# Prints one line per run: the host's swap-out and wake-up (client: last answer before the
# swap-out to the first answer after it), the move (client: last answer on the source to the
# first on the destination; the hub's own downtime figure beside it), and where the
# destination read the tenant's pages (bytes: held there, from the source as a peer, from the
# cold tier, and everything read from the cold tier). Needs root, CRIU and a release build
# (PICO, default /var/cache/picocenter/target/release/pico).
set -euo pipefail

PICO=${PICO:-/var/cache/picocenter/target/release/pico}
RUNS=${RUNS:-10}
APP=${APP:-counter}
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d /tmp/pico-move-XXXXXX)
HOMEPATH=$WORK/home
TOKEN=$WORK/token
PORT=8090
HUB_API=7391
export PICO_TOKEN=move-bench-token

cleanup() {
  for side in w1 w2; do
    "$PICO" --home "$WORK/$side" tenant rm web >/dev/null 2>&1 || true
  done
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/hub" "$WORK/w1" "$WORK/w2" "$HOMEPATH" "$WORK/cold"
printf '%s\n' "$PICO_TOKEN" >"$TOKEN"
chmod 600 "$TOKEN"
cat >"$WORK/hub/pico.toml" <<EOF
[hub]
zone = "move.test."
dns_listen = "127.0.0.1:7353"
api_listen = "127.0.0.1:$HUB_API"
token_file = "$TOKEN"
[cold]
kind = "dir"
path = "$WORK/cold"
EOF
for k in 1 2; do
  cat >"$WORK/w$k/pico.toml" <<EOF
[worker]
listen_addr = "127.0.0.$k"
api_listen = "127.0.0.1:738$k"
api_token_file = "$TOKEN"
[worker.hub]
addr = "127.0.0.1:$HUB_API"
token_file = "$TOKEN"
name = "w$k"
heartbeat_ms = 500
[cold]
kind = "dir"
path = "$WORK/cold"
EOF
done

"$PICO" --home "$WORK/hub" hub run >"$WORK/hub.log" 2>&1 &
for k in 1 2; do
  unshare --mount --propagation private sh -c \
    'mount --bind "$1" "$2" && exec "$3" --home "$2" worker run' \
    sh "$WORK/w$k" "$HOMEPATH" "$PICO" >"$WORK/w$k.log" 2>&1 &
done
for k in 1 2; do
  for _ in $(seq 1 200); do [ -S "$WORK/w$k/worker.sock" ] && break; sleep 0.05; done
  [ -S "$WORK/w$k/worker.sock" ] || { cat "$WORK/w$k.log"; exit 1; }
done
sleep 1

case "$APP" in
  counter) CMD=(python3 "$REPO/deploy/apps/counter.py" "$PORT") ;;
  redis) CMD=(redis-server --port "$PORT" --bind 127.0.0.1 --protected-mode no --save "" --appendonly no) ;;
  *) echo "APP must be counter or redis" >&2; exit 2 ;;
esac
"$PICO" --home "$WORK/w1" tenant add web --port "$PORT" --idle-timeout 0 -- "${CMD[@]}" >/dev/null

# One request to the tenant at 127.0.0.K; fails unless it answers.
ask() {
  if [ "$APP" = redis ]; then
    [ "$(redis-cli -h "127.0.0.$1" -p "$PORT" INCR n)" -ge 1 ]
  else
    curl -fsS -m 10 "http://127.0.0.$1:$PORT/inc" >/dev/null
  fi
}
ms() { echo $(( ($2 - $1) / 1000000 )); }

ask 1
on=1
printf '%-4s %-8s %9s %9s %9s %10s %10s %10s %10s %10s\n' \
  run move "swap(ms)" "move(ms)" "hub(ms)" "ckpt(B)" "held(B)" "peer(B)" "cold(B)" "coldread"
for run in $(seq 1 "$RUNS"); do
  other=$((3 - on))
  # On one host: swapped out, woken by the next connection.
  ask "$on"
  t0=$(date +%s%N)
  "$PICO" --home "$WORK/w$on" tenant swap-out web >/dev/null
  ask "$on"
  t1=$(date +%s%N)
  swap=$(ms "$t0" "$t1")
  # Moved to the other host: the client asks the destination until it answers (the move's
  # report comes later, once the rest of the image has arrived there).
  ask "$on"
  t0=$(date +%s%N)
  "$PICO" --home "$WORK/w$on" --json tenant move web --to "w$other" >"$WORK/report.json" &
  mover=$!
  until ask "$other" 2>/dev/null; do sleep 0.002; done
  t1=$(date +%s%N)
  wait "$mover"
  move=$(ms "$t0" "$t1")
  read -r hub ckpt held peer cold cold_read < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); b = r.get("bytes") or {}
print(r["downtime_ms"], *(b.get(k, "-") for k in ("checkpoint", "held", "peer", "cold", "cold_read")))
' "$WORK/report.json")
  printf '%-4s %-8s %9s %9s %9s %10s %10s %10s %10s %10s\n' "$run" "w$on>w$other" "$swap" "$move" \
    "$hub" "$ckpt" "$held" "$peer" "$cold" "$cold_read"
  on=$other
done
