//! What the kernel is told: each tenant's addresses on its link, the nftables text of the
//! worker's table and of a tenant namespace's one rule, the changes of the table's port map
//! that admit a tenant and take its port back, and the routing rules that do the same on the
//! routed path (`routing`). Pure (no I/O): tested below.

use std::net::{IpAddr, Ipv4Addr};

use super::netlink::fib_rule::{Action, Rule};
use super::netlink::port_map::Change;
use crate::tenant::ClientAddress;

/// The addresses of tenant links: a /30 per public port in 10.200.0.0/14 (the port's host end
/// `.1`, the tenant's end `.2` of its four), so that every port of the host has one and a
/// tenant's address follows from its port alone (no record to keep).
pub const TENANT_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 200, 0, 0), 14);

/// The two ends of the link of the tenant on public port `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddrs {
    pub port: u16,
    /// The host's end, `pv{port}`: the source the tenant sees on forwarded connections.
    pub host: Ipv4Addr,
    /// The tenant's end, `eth0` in its namespace: where the host's rules send its port.
    pub tenant: Ipv4Addr,
}

impl LinkAddrs {
    pub fn of_port(port: u16) -> LinkAddrs {
        let base = u32::from(TENANT_NETWORK.0) + 4 * u32::from(port);
        LinkAddrs {
            port,
            host: Ipv4Addr::from(base + 1),
            tenant: Ipv4Addr::from(base + 2),
        }
    }

    /// The host's end of the link (`pv` and the port: at most 7 characters of the 15 allowed).
    pub fn host_if(&self) -> String {
        format!("pv{}", self.port)
    }

    /// The routing table of the link (routed path): its one route, out of the link.
    pub fn route_table(&self) -> u32 {
        ROUTE_TABLES + u32::from(self.port)
    }
}

/// The routed path's routing tables: one per public port from here (the kernel's own are 253-255).
pub const ROUTE_TABLES: u32 = 100_000;

/// Priorities of the routed path's rules. The kernel's rule for its local table, at priority 0
/// on every host, is moved to [`LOCAL_PREF`], after them: else 127.0.0.1 is found local before
/// any rule of ours is read. In front of them all, [`gate`]: what is not TCP to the loopback
/// network skips the worker's rules (a thousand tenants are two thousand rules).
pub const GATE_PREF: u32 = 40;
pub const RETURN_PREF: u32 = 50;
pub const PORT_PREF: u32 = 60;
pub const LOCAL_PREF: u32 = 100;

/// The kernel's local table (`ip rule ... lookup local`).
const LOCAL_TABLE: u32 = 255;

/// The rule that routes new connections to `listen` on the port of `a` out of its link: the
/// tenant's admission on the routed path. The connection's source is the route's, the link's
/// host end. New ones only: the lookup a `connect` makes before its source is chosen (source
/// 0.0.0.0). A rule change makes every socket of the host look its route up again, and a
/// connection the worker was relaying (its source 127.0.0.1) would otherwise be sent into the
/// link, where no socket knows it, and hang; a client that binds its own source is relayed.
pub fn port_rule(listen: Ipv4Addr, a: &LinkAddrs) -> Rule {
    Rule {
        pref: PORT_PREF,
        from: Some((Ipv4Addr::UNSPECIFIED, 32)),
        to: Some((listen, 32)),
        tcp: Some(Some(a.port)),
        invert: false,
        action: Action::Table(a.route_table()),
    }
}

/// The rule that keeps routing the connections made through [`port_rule`] (their source the
/// link's host end; to the tenant's port only, so that a process of the host bound to that
/// address reaches nothing else of the tenant's) after it is deleted: a
/// swap-out takes the port back first, then closes those connections with a FIN each way, which
/// must reach the tenant (not the host's own stack, which would reset them). It also answers
/// the kernel's reverse-path check of the tenant's replies (from the loopback, on a link), and
/// the lookup a `connect` makes once its source is chosen. Added with [`port_rule`], kept until
/// the tenant no longer runs.
pub fn return_rule(listen: Ipv4Addr, a: &LinkAddrs) -> Rule {
    Rule {
        pref: RETURN_PREF,
        from: Some((a.host, 32)),
        to: Some((listen, 32)),
        tcp: Some(Some(a.port)),
        invert: false,
        action: Action::Table(a.route_table()),
    }
}

/// The rule in front of the worker's: all but TCP to the loopback network goes on at the local
/// table's rule.
pub fn gate() -> Rule {
    Rule {
        pref: GATE_PREF,
        from: None,
        to: Some((Ipv4Addr::new(127, 0, 0, 0), 8)),
        tcp: Some(None),
        invert: true,
        action: Action::Goto(LOCAL_PREF),
    }
}

/// The routed path's rules in `listing` (`ip -4 rule show`) whose port has no link
/// (`has_link` says no), as (priority, table): a killed worker's, whose tenants are gone. Their
/// tables are empty, so they route nothing, but every loopback connection walks them.
pub fn orphaned_rules(listing: &str, has_link: impl Fn(u16) -> bool) -> Vec<(u32, u32)> {
    listing
        .lines()
        .filter_map(|line| {
            let (pref, rest) = line.split_once(':')?;
            let pref: u32 = pref.trim().parse().ok()?;
            if pref != RETURN_PREF && pref != PORT_PREF {
                return None;
            }
            let mut words = rest.split_whitespace();
            words.find(|w| *w == "lookup")?;
            let table: u32 = words.next()?.parse().ok()?;
            let port = u16::try_from(table.checked_sub(ROUTE_TABLES)?).ok()?;
            (!has_link(port)).then_some((pref, table))
        })
        .collect()
}

/// The rule of `pref` that looks up `table`, and nothing else said: enough for the kernel to
/// find it to delete it.
pub fn rule_of(pref: u32, table: u32) -> Rule {
    Rule {
        pref,
        from: None,
        to: None,
        tcp: None,
        invert: false,
        action: Action::Table(table),
    }
}

/// The kernel's rule for its local table, at priority `pref`.
pub fn local_rule(pref: u32) -> Rule {
    rule_of(pref, LOCAL_TABLE)
}

/// The worker's table, replacing any of the same name: DNAT of its public address's ports to the
/// running tenants' links (`ports`, the one thing changed afterwards), the source of what leaves
/// on a tenant link rewritten to the link's host end (the tenant answers over its link, whatever
/// the client's address), and filters so that the links carry nothing else: no connection from
/// a tenant to the host, none forwarded from a tenant, none from the host to a tenant but a
/// forwarded one (DNATed, or routed to a loopback address: `routing`). `prerouting` adds
/// clients of other hosts (it needs IPv4 forwarding on).
///
/// Its comment names the worker's pid ([`owner_of`]): a table whose worker is gone is swept by
/// the next worker to start on the host (its map would still send those ports to links that
/// lead nowhere, whatever listens on them next).
pub fn host_table(table: &str, listen: IpAddr, prerouting: bool, pid: u32) -> String {
    let to = match listen {
        IpAddr::V4(a) if !a.is_unspecified() => format!("ip daddr {a}"),
        _ => "fib daddr type local".to_string(),
    };
    let dnat = format!("{to} dnat ip to tcp dport map @{PORT_MAP}");
    // What is sent to a tenant's address leaves on a link or not at all: with its link not
    // made yet (or being made again) it would follow the default route out of the host. Judged
    // where the packet leaves (postrouting): in the output hook a local client's packet still
    // names the loopback, the interface it had before its DNAT.
    let net = format!("{}/{}", TENANT_NETWORK.0, TENANT_NETWORK.1);
    // The routed path's connections leave on a link unrewritten, to a loopback address: only
    // the rules for a running tenant's port send them there (`routing`). Accepted whichever
    // path this worker takes: every worker table of the host sees every link's packets, and a
    // worker on the NAT path must not drop those of one on the routed path.
    let routed = "    oifname \"pv*\" ip daddr 127.0.0.0/8 meta l4proto tcp accept\n";
    let prerouting = if prerouting {
        format!(
            "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    {dnat}\n  }}\n"
        )
    } else {
        String::new()
    };
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \x20 comment \"{OWNER}{pid}\"\n\
         \x20 map {PORT_MAP} {{\n    type inet_service : ipv4_addr\n  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    {dnat}\n  }}\n\
         {prerouting}\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"pv*\" masquerade\n  }}\n\
         \x20 chain input {{\n    type filter hook input priority filter; policy accept;\n    iifname \"pv*\" ct state new drop\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"pv*\" ct state new drop\n    ip daddr {net} oifname != \"pv*\" drop\n  }}\n\
         \x20 chain out {{\n    type filter hook output priority filter; policy accept;\n    oifname \"pv*\" ct status dnat accept\n{routed}    oifname \"pv*\" drop\n  }}\n\
         \x20 chain leaving {{\n    type filter hook postrouting priority filter; policy accept;\n    ip daddr {net} oifname != \"pv*\" drop\n  }}\n\
         }}\n"
    )
}

/// What a worker's table's comment says before the worker's pid.
const OWNER: &str = "pico worker ";

/// The names of the worker tables in `nft list tables` output (`table ip pico_...` lines).
pub fn worker_tables(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table ip "))
        .filter(|name| name.starts_with("pico_"))
        .map(str::to_string)
        .collect()
}

/// The pid of the worker that made the table listed in `listing` (`nft list table`), if its
/// comment names one.
pub fn owner_of(listing: &str) -> Option<u32> {
    listing.lines().find_map(|l| {
        l.trim()
            .strip_prefix("comment \"")?
            .strip_prefix(OWNER)?
            .trim_end_matches('"')
            .parse()
            .ok()
    })
}

/// The table of a tenant's namespace: what arrives on its link for its port goes to its loopback,
/// where it may listen alone. With `clients` at the loopback, it also comes from there: the
/// tenant sees its clients at 127.0.0.1, as a program that serves local clients only (redis's
/// protected mode) needs; each packet of such a connection then has both addresses rewritten
/// in the namespace and is routed again on its way out (the reason it is not the default).
pub fn tenant_table(port: u16, clients: ClientAddress) -> String {
    let from_loopback = match clients {
        ClientAddress::Link => "",
        ClientAddress::Loopback => {
            "  chain input {\n    type nat hook input priority 100; policy accept;\n    iifname \"eth0\" snat ip to 127.0.0.1\n  }\n"
        }
    };
    format!(
        "table ip pico\n\
         delete table ip pico\n\
         table ip pico {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname \"eth0\" tcp dport {port} dnat ip to 127.0.0.1\n  }}\n\
         {from_loopback}\
         }}\n"
    )
}

/// The name of the map in the worker's table from public ports to tenants' link addresses.
pub const PORT_MAP: &str = "ports";

/// Lets the kernel forward the port of `a` to its tenant's end of the link.
pub fn admit(a: &LinkAddrs) -> Vec<Change> {
    vec![Change::Add {
        port: a.port,
        to: a.tenant,
    }]
}

/// Takes the port of `a` back: its next connections reach the worker's listener. Added first,
/// in the same transaction, so that taking back a port the map lost (its table made again) is
/// no error.
pub fn withdraw(a: &LinkAddrs) -> Vec<Change> {
    vec![
        Change::Add {
            port: a.port,
            to: a.tenant,
        },
        Change::Delete { port: a.port },
    ]
}

/// The name of the table of the worker whose tenants live in `tenants_dir`, listening on
/// `listen`: one per worker, so that the other workers of the host keep theirs (workers in mount
/// namespaces of their own may have the same home path, never the same address and ports).
pub fn table_name(tenants_dir: &std::path::Path, listen: IpAddr) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(tenants_dir.as_os_str().as_encoded_bytes());
    hasher.update(listen.to_string().as_bytes());
    format!("pico_{}", &hasher.finalize().to_hex()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_has_a_link_of_its_own_inside_the_network() {
        let a = LinkAddrs::of_port(8080);
        assert_eq!(a.host, Ipv4Addr::new(10, 200, 126, 65));
        assert_eq!(a.tenant, Ipv4Addr::new(10, 200, 126, 66));
        assert_eq!(a.host_if(), "pv8080");
        let last = LinkAddrs::of_port(u16::MAX);
        assert_eq!(last.tenant, Ipv4Addr::new(10, 203, 255, 254));
        let first = LinkAddrs::of_port(1);
        assert_eq!(first.host, Ipv4Addr::new(10, 200, 0, 5));
        assert_ne!(LinkAddrs::of_port(2).host, first.tenant);
    }

    #[test]
    fn the_host_table_forwards_the_listen_address_only() {
        let t = host_table("pico_x", "127.0.0.1".parse().unwrap(), false, 42);
        assert!(t.contains("ip daddr 127.0.0.1 dnat ip to tcp dport map @ports"));
        assert!(!t.contains("hook prerouting"));
        assert!(t.starts_with("table ip pico_x\ndelete table ip pico_x\n"));
        let any = host_table("pico_x", "0.0.0.0".parse().unwrap(), true, 42);
        assert!(any.contains("fib daddr type local dnat"));
        assert!(any.contains("hook prerouting"));
        assert!(any.contains("ip daddr 10.200.0.0/14 oifname != \"pv*\" drop"));
        // Either path's worker lets the routed path's connections out on a link.
        for table in [&t, &any] {
            assert!(table.contains("oifname \"pv*\" ip daddr 127.0.0.0/8 meta l4proto tcp accept"));
        }
    }

    #[test]
    fn only_the_routed_rules_of_ports_without_a_link_are_orphans() {
        let listing = "40:\tnot from all to 127.0.0.0/8 ipproto tcp goto 100\n\
            50:\tfrom 10.200.31.77 to 127.0.0.1 ipproto tcp dport 7891 lookup 107891 \n\
            60:\tfrom 0.0.0.0 to 127.0.0.1 ipproto tcp dport 7891 lookup 107891 \n\
            60:\tfrom 0.0.0.0 to 127.0.0.1 ipproto tcp dport 7001 lookup 107001 \n\
            60:\tfrom all lookup 99999\n\
            70:\tfrom all lookup 107002\n\
            100:\tfrom all lookup local\n";
        let orphans = orphaned_rules(listing, |port| port == 7001);
        assert_eq!(orphans, [(50, 107_891), (60, 107_891)]);
    }

    #[test]
    fn a_table_names_its_worker() {
        let t = host_table("pico_x", "127.0.0.1".parse().unwrap(), false, 4242);
        assert_eq!(owner_of(&t), Some(4242));
        assert_eq!(owner_of("table ip pico_y {\n\tmap ports {\n"), None);
        let listing = "table ip nat\ntable ip pico_ab12\ntable inet filter\ntable ip pico_cd34\n";
        assert_eq!(worker_tables(listing), ["pico_ab12", "pico_cd34"]);
    }

    #[test]
    fn commands_name_the_port_and_the_tenant() {
        let a = LinkAddrs::of_port(7001);
        let to = Ipv4Addr::new(10, 200, 109, 102);
        assert_eq!(admit(&a), [Change::Add { port: 7001, to }]);
        assert_eq!(
            withdraw(&a),
            [
                Change::Add { port: 7001, to },
                Change::Delete { port: 7001 }
            ]
        );
        for clients in [ClientAddress::Link, ClientAddress::Loopback] {
            let table = tenant_table(7001, clients);
            assert!(table.contains("tcp dport 7001 dnat ip to 127.0.0.1"));
            let snat = table.contains("iifname \"eth0\" snat ip to 127.0.0.1");
            assert_eq!(snat, clients == ClientAddress::Loopback, "{table}");
        }
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(table_name("/a".as_ref(), local).len(), 17);
        assert_ne!(
            table_name("/a".as_ref(), local),
            table_name("/b".as_ref(), local)
        );
        assert_ne!(
            table_name("/a".as_ref(), local),
            table_name("/a".as_ref(), "127.0.0.2".parse().unwrap())
        );
    }
}
