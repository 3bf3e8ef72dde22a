# Sourced by the probes (../nat_probe, ../route_probe): a network namespace joined to the host by a
# veth pair of 64 KiB frames, as the worker's tenant links are (worker/src/kernel_forward/link.rs).
#   veth_ns NS HOST_IF NET    namespace NS, HOST_IF on the host with NET.1/30, eth0 in NS with
#                             NET.2/30 (NET: the first three octets, e.g. 10.77.0)
#   veth_ns_down NS HOST_IF   removes both (absent is fine)
veth_ns() {
  local ns=$1 host_if=$2 net=$3
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$host_if" mtu 65535 type veth peer name eth0 mtu 65535 netns "$ns"
  ip addr add "$net.1/30" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$ns" addr add "$net.2/30" dev eth0
  ip -n "$ns" link set eth0 up
}

veth_ns_down() {
  ip link del "$2" 2>/dev/null || true
  ip netns del "$1" 2>/dev/null || true
}
