//! The routed path: a running tenant's port reaches it with no address rewritten.
//!
//! On the NAT path every packet of a forwarded connection is rewritten three times (DNAT into the
//! link, the source masqueraded, DNAT again in the tenant's namespace), which costs a large
//! transfer 5-10% of a direct connection's throughput at full speed here, and a new connection
//! +20-25 µs (bench/results/forward). Here a policy rule picks the connection by its destination,
//! the worker's listen address and the tenant's port ([`rules::port_rule`]), and the port's table
//! routes it out of the tenant's link as the client sent it, its source the link's host end; the
//! tenant's namespace takes it to its loopback (`route_localnet` on both ends of the link), where
//! the tenant may listen alone. bench/scripts/route_probe measured the path before it was built.
//!
//! For a rule to be read before 127.0.0.1 is found local, the kernel's rule for its local table
//! moves from priority 0 to after the worker's ([`rules::LOCAL_PREF`]), once per host and left so
//! (other workers of the host share it; what it selects is unchanged). Should anything put it back
//! at 0, connections reach the worker's listener and are relayed: slower, never lost.
//!
//! Admission adds the port's rule and [`rules::return_rule`], taking the port back deletes the
//! port's rule (a netlink message each): the connections it routed keep their way through the
//! return rule, so that the swap-out's FINs reach the tenant; once the tenant is no longer running
//! nor being swapped out, the next tick deletes that too. So the rules a connection walks are two
//! per running tenant, none for a sleeping one. The path is for an IPv4 loopback listen address;
//! for others the worker takes the NAT path (clients of other hosts arrive with the host's address,
//! which the tenant's namespace does not own).
//!
//! Not the default (`kernel_forward_path = "routed"` asks for it): rules are a list the kernel
//! walks, and every new TCP connection to the host's loopback, the tenants' or not, walks two rules
//! per running tenant (+100 µs at 2000 rules, bench/results/forward), where the NAT path's map
//! lookup costs the same for any number.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use super::link;
use super::netlink::fib_rule;
use super::rules::{self, LinkAddrs};

/// Deletes the routed rules of ports with no link (`rules::orphaned_rules`: a killed worker's
/// whose tenants are gone). Blocking (an `ip` process, once at the worker's start).
fn sweep_orphans() -> io::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["-4", "rule", "show"])
        .output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let has_link = |port: u16| link::exists(&LinkAddrs::of_port(port));
    let orphans: Vec<_> = rules::orphaned_rules(&listing, has_link)
        .into_iter()
        .map(|(pref, table)| rules::rule_of(pref, table))
        .collect();
    fib_rule::delete(&orphans)
}

/// The routed path of a worker listening on `listen`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routing {
    listen: Ipv4Addr,
}

impl Routing {
    /// The routed path for `listen`, the host's rules made ready for it (the local table's rule
    /// moved, the gate in front): `None` for a listen address it cannot serve. Blocking.
    pub fn start(listen: IpAddr) -> Option<io::Result<Routing>> {
        let IpAddr::V4(listen) = listen else {
            return None;
        };
        if !listen.is_loopback() {
            return None;
        }
        let ready = (|| {
            // The new place first: the local table is never missing, not even for a moment.
            fib_rule::add(&[rules::local_rule(rules::LOCAL_PREF), rules::gate()])?;
            fib_rule::delete(&[rules::local_rule(0)])?;
            sweep_orphans()
        })();
        Some(ready.map(|()| Routing { listen }))
    }

    /// Routes new connections to the port of `a` into its link (and keeps their way). Blocking
    /// (µs).
    pub fn admit(&self, a: &LinkAddrs) -> io::Result<()> {
        fib_rule::add(&[
            rules::return_rule(self.listen, a),
            rules::port_rule(self.listen, a),
        ])
    }

    /// Takes the port of `a` back: its new connections reach the worker's listener, those
    /// already routed keep going to the tenant until [`Routing::closed`]. Blocking (µs).
    pub fn withdraw(&self, a: &LinkAddrs) -> io::Result<()> {
        fib_rule::delete(&[rules::port_rule(self.listen, a)])
    }

    /// Takes every port of `links` back, whichever the worker before this one admitted (it may
    /// have been killed): a tenant that is not running must not have connections routed into
    /// its namespace. Blocking.
    pub fn withdraw_all(&self, links: &[LinkAddrs]) -> io::Result<()> {
        let port_rules: Vec<_> = links
            .iter()
            .map(|a| rules::port_rule(self.listen, a))
            .collect();
        fib_rule::delete(&port_rules)
    }

    /// The connections routed to the port of `a` are over (the tenant sleeps, exited or
    /// failed, its port taken back): their return rule goes. Blocking (µs).
    pub fn closed(&self, a: &LinkAddrs) -> io::Result<()> {
        fib_rule::delete(&[rules::return_rule(self.listen, a)])
    }

    /// A link of `a` was just made, or goes: no rule of its port left from its previous life (a
    /// killed worker's). Blocking.
    pub fn forget(&self, a: &LinkAddrs) -> io::Result<()> {
        fib_rule::delete(&[
            rules::port_rule(self.listen, a),
            rules::return_rule(self.listen, a),
        ])
    }
}
