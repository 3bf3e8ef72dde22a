#!/usr/bin/env bash
# Times three ways to one echo server (../sockmap_probe/server.py) in ROUNDS alternating rounds:
# direct on the host (port 7002), through a splice relay into the tenant namespace (../sockmap_probe's
# probe, port 7100), and forwarded by the kernel (DNAT over a veth pair, port 7300; setup.sh).
#   run.sh [ROUNDS]        as root; leaves nothing behind
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sock="$here/../sockmap_probe"
rounds="${1:-3}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash "$here/setup.sh" down
}
trap cleanup EXIT
bash "$here/setup.sh"
ip netns exec natprobe python3 "$sock/server.py" 7001 & pids+=($!)
python3 "$sock/server.py" 7002 & pids+=($!)
gcc -O2 -o /tmp/nat_probe_relay "$sock/probe.c" -lpthread
/tmp/nat_probe_relay splice 7100 /run/netns/natprobe 7001 & pids+=($!)
sleep 1
for r in $(seq "$rounds"); do
  order="7002 7100 7300"
  [ $((r % 2)) -eq 0 ] && order="7300 7100 7002"
  for port in $order; do
    case $port in 7002) name=direct ;; 7100) name=relay ;; 7300) name=kernel ;; esac
    echo "== round $r $name"
    python3 "$sock/client.py" "$port"
  done
done
