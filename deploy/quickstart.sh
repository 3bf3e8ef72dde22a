#!/usr/bin/env bash
# The quickstart demo, on embedded defaults: a worker, three real tenants (two Python web servers
# each serving its own page, one redis-server holding keys) that the worker swaps out of memory
# into the page store on its own once they are idle, store statistics, then a request to each,
# which wakes it. As root.
# It stops everything it started and removes its temporary home.
#
# Against a worker already running (an installed package's service): PICO_BIN=/usr/bin/pico
# (no build) and PICO_WORKER_HOME=/var/lib/pico (that worker's home: no worker of its own; its
# tenants are removed at the end, the home kept). PICO_CONFIG names the configuration as for pico.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "quickstart: run as root (CRIU and FUSE need it)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:/usr/local/sbin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/picocenter/target}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "set-up: CRIU >= 4.2, redis, curl (skips what is present; the first time a few minutes for packages and about one to build CRIU)"
bash deploy/setup.sh quickstart
if [ -z "${PICO_BIN:-}" ]; then
  if [ -x "$CARGO_TARGET_DIR/release/pico" ]; then
    say "building pico (release; only what changed since the last build)"
  else
    say "building pico (release; the first build takes about 10 minutes on 2 cores, later ones seconds)"
  fi
  cargo build --release --locked --bin pico
  PICO_BIN="$CARGO_TARGET_DIR/release/pico"
fi

H=${PICO_WORKER_HOME:-$(mktemp -d /tmp/pico-quickstart.XXXXXX)}
pico() { "$PICO_BIN" --home "$H" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

WORKER_PID=""
cleanup() {
  set +e
  for t in web1 web2 redis; do pico tenant rm "$t" >/dev/null 2>&1; done
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
  if [ -n "${PICO_WORKER_HOME:-}" ]; then rm -rf "$H/www"; else rm -rf "$H"; fi
}
trap cleanup EXIT

if [ -n "${PICO_WORKER_HOME:-}" ]; then
  say "using the worker running on $H"
  pico tenant ls >/dev/null
else
say "starting pico worker run (home $H)"
# Started directly (not through the `pico` function), so that WORKER_PID is the worker itself.
"$PICO_BIN" --home "$H" worker run >"$H/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 100); do [ -S "$H/worker.sock" ] && break; sleep 0.1; done
[ -S "$H/worker.sock" ] || { cat "$H/worker.log"; exit 1; }
fi

P1=$(free_port); P2=$(free_port); P3=$(free_port)
for t in web1 web2; do
  mkdir -p "$H/www/$t"
  echo "Hello from $t, served by a process that was swapped out of memory." >"$H/www/$t/index.html"
done

say "adding three tenants (each swapped out on its own after 5 s without a byte)"
pico tenant add web1 --port "$P1" --idle-timeout 5s -- python3 -m http.server "$P1" --bind 127.0.0.1 --directory "$H/www/web1" >/dev/null
pico tenant add web2 --port "$P2" --idle-timeout 5s -- python3 -m http.server "$P2" --bind 127.0.0.1 --directory "$H/www/web2" >/dev/null
pico tenant add redis --port "$P3" --idle-timeout 5s -- redis-server --port "$P3" --bind 127.0.0.1 --protected-mode no --save "" --appendonly no >/dev/null
for i in $(seq 1 1000); do echo "SET key:$i value-$i"; done | redis-cli -p "$P3" >/dev/null
redis-cli -p "$P3" SET greeting "hello from redis, back from the page store" >/dev/null
pico tenant ls
say "waiting for all three to go idle: the worker swaps each out (CRIU dump -> page store)"
for _ in $(seq 120); do
  sleeping=$(pico --json tenant ls | python3 -c 'import json,sys; print(sum(t["state"] == "swapped-out" for t in json.load(sys.stdin)))')
  [ "$sleeping" = 3 ] && break
  sleep 0.5
done
[ "$sleeping" = 3 ] || { echo "quickstart: the tenants did not swap out on their own"; tail -20 "$H/worker.log" 2>/dev/null; exit 1; }
declare -A OUT_MS
for t in web1 web2 redis; do
  OUT_MS[$t]=$(pico --json tenant status "$t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_swap_out"]["total_ms"])')
done
pico tenant ls
say "pico store stats"
pico store stats

say "sending each a request, no swap-in command: the worker holds the connection, wakes the tenant (lazy restore through the pager) and forwards it"
declare -A IN_MS ANSWER_MS ANSWER
for t in web1 web2 redis; do
  start=$(now_ms)
  case $t in
    web1) ANSWER[$t]=$(curl -sf "http://127.0.0.1:$P1/") ;;
    web2) ANSWER[$t]=$(curl -sf "http://127.0.0.1:$P2/") ;;
    redis) ANSWER[$t]=$(redis-cli -p "$P3" GET greeting) ;;
  esac
  ANSWER_MS[$t]=$(( $(now_ms) - start ))
  IN_MS[$t]=$(pico --json tenant status "$t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_swap_in"]["total_ms"])')
  [ "$t" = redis ] && ANSWER[$t]="${ANSWER[$t]} ($(redis-cli -p "$P3" DBSIZE) keys)"
done
say "results"
printf '%-7s %13s %12s %16s  %s\n' TENANT "SWAP-OUT ms" "SWAP-IN ms" "FIRST ANSWER ms" ANSWER
for t in web1 web2 redis; do
  printf '%-7s %13s %12s %16s  %s\n' "$t" "${OUT_MS[$t]}" "${IN_MS[$t]}" "${ANSWER_MS[$t]}" "${ANSWER[$t]}"
done
echo
echo "(FIRST ANSWER: from the request to the sleeping tenant to its answer, measured at the client)"
pico tenant ls
say "stopping everything the quickstart started"
