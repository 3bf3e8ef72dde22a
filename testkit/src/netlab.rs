//! Hosts of a cluster on one machine, each in a network namespace of its own (`ip netns`) with
//! one address on a private LAN: a bridge in a namespace of its own, a veth pair per host.
//!
//! Multi-host tests run their hub, workers and Garage nodes as such hosts, so each advertises and
//! binds its own address as on separate machines, and every packet stays inside namespaces the
//! test made (nothing is added to the machine's own network). Removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The LAN's /24; hosts are numbered from `.2`.
const SUBNET: [u8; 3] = [10, 77, 0];

/// A private LAN and the hosts on it.
pub struct Lan {
    /// Prefix of every namespace this LAN made (unique to this process).
    prefix: String,
    /// The namespaces made so far (the bridge's first), removed on drop.
    namespaces: Vec<String>,
}

/// A host on a [`Lan`]: a network namespace and its address there.
#[derive(Clone, Debug)]
pub struct NetHost {
    /// Its name under `/run/netns`.
    pub netns: String,
    pub addr: Ipv4Addr,
}

/// Runs `ip ARGS...`; panics with its error when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (Debian iproute2) must be installed: run deploy/setup.sh");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    /// A LAN with nothing on it yet (a bridge, up, in its own namespace). Needs root.
    pub fn new() -> Lan {
        crate::require_root();
        let prefix = format!("pico{}-", std::process::id());
        let mut lan = Lan {
            prefix,
            namespaces: Vec::new(),
        };
        let bridge = lan.namespace("lan");
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        lan
    }

    /// A fresh namespace `PREFIX+name` (an old one of that name is removed first), loopback up.
    fn namespace(&mut self, name: &str) -> String {
        let netns = format!("{}{name}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        ip(&["netns", "add", &netns]);
        self.namespaces.push(netns.clone());
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        netns
    }

    /// Adds a host named `name` on the LAN: its namespace, `eth0` with the next address.
    pub fn host(&mut self, name: &str) -> NetHost {
        let number = self.namespaces.len() + 1;
        assert!(number < 255, "a /24 LAN holds at most 253 hosts");
        let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], number as u8);
        let bridge = self.namespaces[0].clone();
        let netns = self.namespace(name);
        let port = format!("v{number}");
        ip(&[
            "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ]);
        ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        NetHost { netns, addr }
    }
}

impl Default for Lan {
    fn default() -> Lan {
        Lan::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for netns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
    }
}

impl NetHost {
    /// A launcher that runs its arguments in this host's network namespace (and nothing else
    /// of the machine changed: mounts, `/sys` and cgroups stay as they are).
    pub fn launcher(&self) -> [String; 2] {
        ["nsenter".into(), format!("--net=/run/netns/{}", self.netns)]
    }

    /// `command` (its program, arguments and environment) run on this host instead.
    pub fn wrap(&self, command: &Command) -> Command {
        let [nsenter, net] = self.launcher();
        let mut wrapped = Command::new(nsenter);
        wrapped
            .arg(net)
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// Whether something listens on TCP `port` on this host.
    pub fn is_listening(&self, port: u16) -> bool {
        Command::new("ss")
            .args(["-N", &self.netns, "-Htln", &format!("sport = :{port}")])
            .output()
            .is_ok_and(|out| !out.stdout.is_empty())
    }

    /// Waits up to `limit` for something to listen on TCP `port` here; whether it did.
    pub fn wait_listening(&self, port: u16, limit: Duration) -> bool {
        let started = Instant::now();
        while !self.is_listening(port) {
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `curl -sS ARGS...` from this host: the answer's status (0: none) and body.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        crate::net::curl_run(&mut self.wrap(&crate::net::curl_command(args)))
    }

    /// `dig @SERVER -p PORT +norec ARGS...` from this host: its whole output.
    pub fn dig(&self, server: Ipv4Addr, port: u16, args: &[&str]) -> String {
        crate::net::dig_run(&mut self.wrap(&crate::net::dig_command(server.into(), port, args)))
    }
}
