//! A tenant's link: a veth pair between the host (`pv{port}`) and the tenant's namespace (`eth0`),
//! with the tenant's rules (its port on `eth0` goes to its loopback; see `rules::tenant_table`)
//! and, on the routed path, the port's routing table (its one route, out of the link). Made with
//! `ip`, `nsenter` and `nft` (a few processes, ~30 ms, once per namespace: it lives as long as the
//! namespace, and a swap-out keeps both). Both ends carry 64 KiB frames, as the loopback does, so
//! that a large transfer crosses in as few pieces as it would directly, and have no IPv6: the link
//! carries IPv4 only, and IPv6's own chatter (router solicitations, multicast reports) would move
//! the packet counters the idle rule reads.

use std::path::Path;
use std::process::{Command, Stdio};

use super::rules::{tenant_table, LinkAddrs};
use crate::config::ForwardPath;
use crate::tenant::ClientAddress;

/// Whether the host end of the link of `a` exists.
pub fn exists(a: &LinkAddrs) -> bool {
    Path::new("/sys/class/net").join(a.host_if()).exists()
}

/// Whether the link of `a` leads into the namespace pinned at `pin` and was made for `path` (the
/// routed one needs the port's routing table)
/// (by this worker or the one before: the host end's alias names both). Another's is a link of
/// a tenant that had the port before, on a worker that was killed, and the tenant now on the
/// port takes the port's link over; one made for the other path (the worker's configuration
/// changed) is made again.
pub fn leads_into(pin: &Path, a: &LinkAddrs, path: ForwardPath) -> bool {
    let alias = std::fs::read_to_string(
        Path::new("/sys/class/net")
            .join(a.host_if())
            .join("ifalias"),
    );
    matches!((alias, mark(pin, path)), (Ok(alias), Some(mark)) if alias.trim() == mark)
}

/// The alias of a link into the namespace pinned at `pin`: its `nsfs` inode, which no other
/// namespace has while it lives, and the path.
fn mark(pin: &Path, path: ForwardPath) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let routed = match path {
        ForwardPath::Nat => "",
        ForwardPath::Routed => " routed",
    };
    std::fs::metadata(pin)
        .ok()
        .map(|m| format!("pico netns {}{routed}", m.ino()))
}

/// Removes the link of `a` (both ends: the pair goes together). Blocking; absent is fine.
pub fn remove(a: &LinkAddrs) {
    if exists(a) {
        let _ = Command::new("ip")
            .args(["link", "del", &a.host_if()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Makes the link of `a` into the namespace pinned at `pin` for `path`, replacing a stale host
/// end of the same name, its tenant seeing its clients at `clients`. Blocking.
pub fn make(
    pin: &Path,
    a: &LinkAddrs,
    clients: ClientAddress,
    path: ForwardPath,
) -> std::io::Result<()> {
    let host_if = a.host_if();
    let peer = format!("pt{}", a.port);
    let mark = mark(pin, path).ok_or_else(|| {
        std::io::Error::other(format!("no namespace pinned at {}", pin.display()))
    })?;
    let script = r#"
set -e
ip link del "$HOST_IF" 2>/dev/null || true
ip link add "$HOST_IF" mtu 65535 type veth peer name "$PEER" mtu 65535
ip link set "$PEER" netns "$PIN"
ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
ip link set "$HOST_IF" alias "$MARK"
echo 1 > "/proc/sys/net/ipv4/conf/$HOST_IF/route_localnet"
no_ipv6() { if [ -w "/proc/sys/net/ipv6/conf/$1/disable_ipv6" ]; then echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"; fi; }
no_ipv6 "$HOST_IF"
ip link set "$HOST_IF" up
nsenter --net="$PIN" sh -ec '
  ip link set "$PEER" name eth0
  ip addr add "$TENANT_ADDR/30" dev eth0
  echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet
  if [ -w /proc/sys/net/ipv6/conf/eth0/disable_ipv6 ]; then
    echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6
  fi
  ip link set eth0 up
  printf "%s" "$TENANT_TABLE" | nft -f -
'
if [ -n "$ROUTE_TABLE" ]; then
  ip route replace default dev "$HOST_IF" src "$HOST_ADDR" table "$ROUTE_TABLE"
fi
"#;
    let route_table = match path {
        ForwardPath::Nat => String::new(),
        ForwardPath::Routed => a.route_table().to_string(),
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("HOST_IF", &host_if)
        .env("PEER", &peer)
        .env("PIN", pin)
        .env("MARK", &mark)
        .env("HOST_ADDR", a.host.to_string())
        .env("TENANT_ADDR", a.tenant.to_string())
        .env("TENANT_TABLE", tenant_table(a.port, clients))
        .env("ROUTE_TABLE", route_table)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    // Nothing half made is left: the next attempt starts over.
    let _ = Command::new("ip")
        .args(["link", "del", &host_if])
        .stderr(Stdio::null())
        .status();
    Err(std::io::Error::other(format!(
        "making link {host_if}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
