#!/usr/bin/env bash
# Times a 256 MiB answer of one nginx three ways, in ROUNDS rounds alternating their order, the
# client pinned to CPU 0 and both nginx to CPU 1 (see README.md):
#   direct  the host's nginx on 192.0.2.2:7002 (the host's address: HOST below)
#   worker  the worker's path today: HOST:7301 DNAT to the tenant's end of a veth pair, the source
#           masqueraded to the host's end, and in the namespace DNAT to its loopback
#   hostnat HOST:7303 the same without the namespace's DNAT (nginx listens on every address there)
#   routed  HOST:7001 routed into the link unchanged (a policy rule on the destination port, the
#           namespace owning HOST as well): no address rewritten
#   loop    127.0.0.1:7401 routed the same way to the namespace's loopback, where nginx listens
#           alone (route_localnet on both ends of the link): no address rewritten either
#   run.sh [ROUNDS] [HOST]     as root; leaves nothing behind (the local rule back at pref 0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/veth_ns.sh"
rounds="${1:-10}"
host="${2:-$(ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')}"
ns=rprobe
moved=0
work=$(mktemp -d /dev/shm/route_probe.XXXX)
chmod 755 "$work" # nginx's worker process reads it as another user

down() {
  pkill -f "nginx -c $work" 2>/dev/null || true
  iptables -t nat -D OUTPUT -p tcp -d "$host" --dport 7301 -j DNAT --to-destination 10.78.0.2:7001 2>/dev/null || true
  iptables -t nat -D POSTROUTING -o rpv0 -m conntrack --ctorigdstport 7301 -j MASQUERADE 2>/dev/null || true
  iptables -t nat -D OUTPUT -p tcp -d "$host" --dport 7303 -j DNAT --to-destination 10.78.0.2:7003 2>/dev/null || true
  iptables -t nat -D POSTROUTING -o rpv0 -m conntrack --ctorigdstport 7303 -j MASQUERADE 2>/dev/null || true
  ip rule del pref 10 2>/dev/null || true
  ip rule del pref 11 2>/dev/null || true
  if [ "$moved" = 1 ]; then # put back as found (a worker on the routed path moves it for good)
    ip rule show pref 0 | grep -q . || ip rule add pref 0 lookup local
    ip rule del pref 100 2>/dev/null || true
  fi
  ip route flush table 178 2>/dev/null || true
  veth_ns_down $ns rpv0
  rm -rf "$work"
}
trap down EXIT

head -c 268435456 /dev/urandom >"$work/big"
for port in 7001 7002; do
  cat >"$work/nginx-$port.conf" <<CONF
worker_processes 1; daemon off; error_log $work/error-$port.log; pid $work/nginx-$port.pid;
events {}
http { access_log off; sendfile on; server { listen $port; listen 127.0.0.1:$((port + 400)); listen $((port + 2)); root $work; } }
CONF
done
gcc -O2 -o "$work/fetch" "$here/fetch.c"

veth_ns $ns rpv0 10.78.0
ip -n $ns route add default via 10.78.0.1
# worker: as worker/src/kernel_forward/rules.rs does it (iptables here)
ip netns exec $ns sysctl -qw net.ipv4.conf.eth0.route_localnet=1
ip netns exec $ns iptables -t nat -A PREROUTING -i eth0 -d 10.78.0.2 -p tcp --dport 7001 -j DNAT --to-destination 127.0.0.1:7001
iptables -t nat -A OUTPUT -p tcp -d "$host" --dport 7301 -j DNAT --to-destination 10.78.0.2:7001
iptables -t nat -A POSTROUTING -o rpv0 -m conntrack --ctorigdstport 7301 -j MASQUERADE
# hostnat: the host's two rewrites alone
iptables -t nat -A OUTPUT -p tcp -d "$host" --dport 7303 -j DNAT --to-destination 10.78.0.2:7003
iptables -t nat -A POSTROUTING -o rpv0 -m conntrack --ctorigdstport 7303 -j MASQUERADE
# routed: the local table looked up after a rule for the port; the namespace owns HOST too
ip -n $ns addr add "$host/32" dev eth0
moved=0
if ip rule show pref 0 | grep -q "lookup local"; then
  moved=1
  ip rule add pref 100 lookup local
  ip rule del pref 0
fi
ip rule add pref 10 to "$host" ipproto tcp dport 7001 lookup 178
ip rule add pref 11 to 127.0.0.1 ipproto tcp dport 7401 lookup 178
ip route add default dev rpv0 src 10.78.0.1 table 178
sysctl -qw net.ipv4.conf.rpv0.route_localnet=1

ip netns exec $ns taskset -c 1 nginx -c "$work/nginx-7001.conf" &
taskset -c 1 nginx -c "$work/nginx-7002.conf" &
sleep 1
for r in $(seq "$rounds"); do
  order="7002 7301 7303 7001 7401"
  [ $((r % 2)) -eq 0 ] && order="7401 7001 7303 7301 7002"
  for port in $order; do
    addr=$host
    [ "$port" = 7401 ] && addr=127.0.0.1
    for _ in 1 2 3; do
      mbs=$(taskset -c 0 "$work/fetch" "$addr" "$port") || { echo "port $port: short answer" >&2; exit 1; }
      echo "$port $mbs"
    done
  done
done | python3 -c '
import statistics, sys
by = {}
for line in sys.stdin:
    port, mbs = line.split()
    by.setdefault({"7002": "direct", "7301": "worker", "7303": "hostnat", "7001": "routed", "7401": "loop"}[port], []).append(float(mbs))
d = statistics.median(by["direct"])
db = sorted(by["direct"])[int(0.9 * (len(by["direct"]) - 1))]
for name in ("direct", "worker", "hostnat", "routed", "loop"):
    m = statistics.median(by[name])
    best = sorted(by[name])[int(0.9 * (len(by[name]) - 1))]
    print(f"{name:7} p50 {m:6.0f} MB/s  p90 {best:6.0f}  min {min(by[name]):6.0f}  max {max(by[name]):6.0f}  / direct {m / d:.3f}, at best {best / db:.3f}")
'
