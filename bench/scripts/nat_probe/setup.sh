#!/usr/bin/env bash
# Builds the probe's two paths into a tenant namespace `natprobe` (see README.md); `setup.sh down`
# removes them. As root.
set -euo pipefail
. "$(dirname "$0")/../lib/veth_ns.sh"
NS=natprobe
down() {
  iptables -t nat -D OUTPUT -p tcp -d 127.0.0.1 --dport 7300 -j DNAT --to-destination 10.77.0.2:7001 2>/dev/null || true
  iptables -t nat -D POSTROUTING -o pnat0 -j MASQUERADE 2>/dev/null || true
  veth_ns_down $NS pnat0
}
if [ "${1:-}" = down ]; then down; exit 0; fi
down
# A veth pair: pnat0 on the host, eth0 in the tenant's namespace, a /30 between them.
veth_ns $NS pnat0 10.77.0
# In the tenant's namespace: what arrives on eth0 for its port goes to its loopback, where it
# listens (as the worker's tenants do: 127.0.0.1 inside).
ip netns exec $NS sysctl -qw net.ipv4.conf.eth0.route_localnet=1
ip netns exec $NS iptables -t nat -A PREROUTING -i eth0 -p tcp --dport 7001 -j DNAT --to-destination 127.0.0.1:7001
# On the host: a local client's connection to 127.0.0.1:7300 goes to the tenant's address, its
# source rewritten to the host's end of the pair (127.0.0.1 may not leave the loopback).
sysctl -qw net.ipv4.conf.all.route_localnet=1
iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport 7300 -j DNAT --to-destination 10.77.0.2:7001
iptables -t nat -A POSTROUTING -o pnat0 -j MASQUERADE
