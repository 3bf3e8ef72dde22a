//! The tenants' public ports: the kernel's two ways of forwarding a running tenant's port (routed,
//! NAT), the client's address handed to a tenant that asks for it (PROXY protocol v2), and ports
//! held by systemd while no worker runs (socket activation).

use std::time::{Duration, Instant};

use testkit::net::{free_port, http_get, http_get_from};

use testkit::pico::Pico;

use super::{
    counter_add_args, counter_add_args_idle, pico, strs, tenant, tenant_add_args,
    wait_kernel_forwarded,
};

/// The host's IPv4 routing rules (`ip rule show`), one per line, trailing blanks trimmed.
fn ip_rules() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["rule", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Whether the host has the rule listed as `rule`.
fn has_rule(rule: &str) -> bool {
    ip_rules().iter().any(|l| l == rule)
}

/// Whether any rule of the host names `port` (`dport PORT`).
fn any_rule_names(port: u16) -> bool {
    let named = format!("dport {port} ");
    ip_rules().iter().any(|l| l.contains(&named))
}

/// The routed path's rule admitting `port` (`kernel_forward::rules::port_rule`), as listed.
fn port_rule(port: u16) -> String {
    format!(
        "60:\tfrom 0.0.0.0 to 127.0.0.1 ipproto tcp dport {port} lookup {}",
        worker::LinkAddrs::of_port(port).route_table()
    )
}

/// The routed path's rule keeping the way of `port`'s connections (`rules::return_rule`).
fn return_rule(port: u16) -> String {
    let ends = worker::LinkAddrs::of_port(port);
    format!(
        "50:\tfrom {} to 127.0.0.1 ipproto tcp dport {port} lookup {}",
        ends.host,
        worker::LinkAddrs::of_port(port).route_table()
    )
}

/// The configuration of a worker on the routed path.
const ROUTED: &str = "[worker]\nkernel_forward_path = \"routed\"\n";

/// A worker told to take the routed path gets its running tenant's connections there with no
/// address rewritten (the client's own source is the link's host end, which the tenant sees),
/// and a worker on the default NAT path on the same host forwards its own tenant's beside it
/// (the client's source 127.0.0.1, rewritten to the link's host end): neither worker's table
/// drops the other's packets. The routed path's rules: the local table's rule after the
/// worker's, a rule per running tenant's port and its return rule: the port's gone when it is
/// swapped out, the return rule at the next tick once the swap-out is over (a sleeping tenant
/// has no rule in the walk of the host's connections), both back when its next connection,
/// held and relayed as it wakes, is followed by its admission; none left with the tenant.
#[test]
fn a_routed_worker_and_a_nat_one_forward_side_by_side() {
    let _serial = testkit::criu_lock();
    let routed_home = pico();
    let nat_home = pico();
    routed_home.write_config(ROUTED);
    let _routed_worker = routed_home.start_worker();
    let _nat_worker = nat_home.start_worker();
    let routed = add_proxyecho(&routed_home, "routed", &[]);
    let nat = add_proxyecho(&nat_home, "nat", &[]);
    let started = Instant::now();
    let ten = Duration::from_secs(10);
    wait_kernel_forwarded(&routed_home, "routed", started, ten, "not routed");
    wait_kernel_forwarded(&nat_home, "nat", started, ten, "not forwarded over NAT");

    let (client, seen) = http_get_from(routed, "/peer").expect("an answer");
    let ends = worker::LinkAddrs::of_port(routed);
    assert_eq!(client.ip().to_string(), ends.host.to_string(), "routed");
    assert_eq!(seen, ends.host.to_string(), "routed");
    let (client, seen) = http_get_from(nat, "/peer").expect("an answer");
    assert_eq!(client.ip().to_string(), "127.0.0.1", "over NAT");
    assert_eq!(
        seen,
        worker::LinkAddrs::of_port(nat).host.to_string(),
        "over NAT"
    );

    assert!(has_rule("100:\tfrom all lookup local"), "{:?}", ip_rules());
    assert!(!has_rule("0:\tfrom all lookup local"), "{:?}", ip_rules());
    let gate = "40:\tnot from all to 127.0.0.0/8 ipproto tcp goto 100";
    assert!(has_rule(gate), "{:?}", ip_rules());
    assert!(has_rule(&port_rule(routed)), "{:?}", ip_rules());
    assert!(has_rule(&return_rule(routed)), "{:?}", ip_rules());
    assert!(!any_rule_names(nat), "{:?}", ip_rules());

    routed_home.ok(&["tenant", "swap-out", "routed"]);
    assert!(
        !has_rule(&port_rule(routed)),
        "taken back: {:?}",
        ip_rules()
    );
    let asleep = Instant::now();
    while has_rule(&return_rule(routed)) {
        let waited = asleep.elapsed();
        assert!(waited < ten, "the return rule stays: {:?}", ip_rules());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, seen) = http_get_from(routed, "/peer").expect("held and answered as it woke");
    assert_eq!(seen, ends.tenant.to_string(), "relayed as it woke");
    wait_kernel_forwarded(
        &routed_home,
        "routed",
        Instant::now(),
        ten,
        "not routed again",
    );
    assert!(has_rule(&port_rule(routed)));
    assert!(has_rule(&return_rule(routed)));

    routed_home.ok(&["tenant", "rm", "routed"]);
    assert!(!any_rule_names(routed), "{:?}", ip_rules());
}

/// Sends `PING` on `conn` and reads its `+PONG` (a read timeout of 10 s set), `when` naming the
/// step in a failure.
fn redis_ping(conn: &mut std::net::TcpStream, when: &str) {
    use std::io::{Read, Write};
    conn.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    let n = conn
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("{when}: {e}"));
    assert_eq!(&buf[..n], b"+PONG\r\n", "{when}");
}

/// A connection the worker relays (made while the tenant slept) keeps going once the tenant's
/// port is routed: the rule takes new connections only. (Every socket of the host looks its
/// route up again when a rule changes; a rule for the port alone sent the relayed connection's
/// next packets into the link, where no socket knew it, and it hung: 20 tenants woken by
/// connections that stayed open hung one in the dense-host test.) At the next swap-out both it
/// and a routed one are closed with a FIN, never a reset: the routed one's way is kept by its
/// return rule after the port is taken back.
#[test]
fn a_connection_relayed_before_the_port_is_routed_keeps_going() {
    use std::io::Read;
    let _serial = testkit::criu_lock();
    let p = pico();
    p.write_config(ROUTED);
    let _worker = p.start_worker();
    let port = super::add_redis_idle(&p, "kept", "0");
    let started = Instant::now();
    let ten = Duration::from_secs(10);
    wait_kernel_forwarded(&p, "kept", started, ten, "not routed");
    p.ok(&["tenant", "swap-out", "kept"]);
    let connect = || {
        let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.set_read_timeout(Some(ten)).unwrap();
        conn
    };
    let mut relayed = connect();
    redis_ping(&mut relayed, "relayed as it woke");
    wait_kernel_forwarded(&p, "kept", Instant::now(), ten, "not routed again");
    assert!(has_rule(&port_rule(port)));
    redis_ping(&mut relayed, "after its port is routed");
    let mut routed = connect();
    redis_ping(&mut routed, "a new one, routed");
    let ends = worker::LinkAddrs::of_port(port);
    assert_eq!(
        routed.local_addr().unwrap().ip().to_string(),
        ends.host.to_string()
    );

    p.ok(&["tenant", "swap-out", "kept"]);
    for (conn, which) in [(&mut relayed, "relayed"), (&mut routed, "routed")] {
        let mut buf = [0u8; 16];
        let read = conn.read(&mut buf);
        assert!(matches!(read, Ok(0)), "{which}: {read:?}, not a FIN");
    }
}

/// A worker killed while it routed a tenant's port leaves the rule behind; a tenant of the next
/// worker on that port that is not running (here, swapped out before the kill) would have its
/// connections routed into a namespace where nothing listens, and refused. The next worker
/// takes every port of its tenants back at its start: the connection is held and wakes it.
/// It also deletes the routed rules of ports that have no link (a killed worker's whose
/// tenants and home are gone): they route nothing, but every loopback connection walks them.
#[test]
fn a_rule_a_killed_worker_left_is_taken_back_at_the_next_start() {
    let _serial = testkit::criu_lock();
    let p = pico();
    p.write_config(ROUTED);
    let mut first = p.start_worker();
    let port = free_port();
    p.ok(&strs(&counter_add_args_idle("left", port, "0")));
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    p.ok(&["tenant", "swap-out", "left"]);
    first.kill();
    // As the killed worker would have left it had it died with the tenant admitted.
    let table = worker::LinkAddrs::of_port(port).route_table().to_string();
    let port_s = port.to_string();
    let added = std::process::Command::new("ip")
        .args([
            "rule",
            "add",
            "pref",
            "60",
            "from",
            "0.0.0.0/32",
            "to",
            "127.0.0.1",
            "ipproto",
            "tcp",
        ])
        .args(["dport", &port_s, "lookup", &table])
        .status()
        .unwrap();
    assert!(added.success());
    assert!(has_rule(&port_rule(port)));
    // And a return rule of a port whose tenant and link are gone with their worker's home.
    let gone = free_port();
    let spec = format!(
        "from 10.203.255.253 to 127.0.0.1 ipproto tcp dport {gone} lookup {}",
        worker::LinkAddrs::of_port(gone).route_table()
    );
    let gone_rule = format!("50:\t{spec}");
    let added = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ip rule add pref 50 {spec}"))
        .status()
        .unwrap();
    assert!(added.success());
    assert!(has_rule(&gone_rule));
    let _second = p.start_worker();
    assert!(!has_rule(&port_rule(port)), "{:?}", ip_rules());
    assert!(!has_rule(&gone_rule), "an orphan: {:?}", ip_rules());
    let answer = http_get(port, "/inc").map_err(|e| format!("{e}\n{}", p.worker_log()));
    assert_eq!(answer.unwrap(), "2");
}

/// Adds a tenant running `deploy/apps/proxyecho.py` on a free port, never idle, with `flags`
/// added to `tenant add`; its port.
fn add_proxyecho(p: &Pico, name: &str, flags: &[&str]) -> u16 {
    let echo = testkit::repo_root().join("deploy/apps/proxyecho.py");
    let port = free_port();
    let port_s = port.to_string();
    let command = ["python3", echo.to_str().unwrap(), &port_s];
    p.ok(&strs(&tenant_add_args(name, port, "0", flags, &command)));
    port
}

/// A tenant added with `--proxy-protocol` learns each client's address and port from the
/// header its connections start with, also on the connection that wakes it; one without it gets
/// its requests as they were sent.
#[test]
fn a_tenant_that_asks_learns_its_clients_address_from_a_proxy_header() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let with = add_proxyecho(&p, "with", &["--proxy-protocol"]);
    let without = add_proxyecho(&p, "without", &[]);
    assert_eq!(tenant(&p, "with")["proxy_protocol"], true);

    let check = |when: &str| {
        let (client, answer) = http_get_from(with, "/").expect("an answer");
        assert_eq!(answer, client.to_string(), "{when}");
        let (_, answer) = http_get_from(without, "/").expect("an answer");
        assert_eq!(answer, "no header", "{when}");
    };
    check("running");
    p.ok(&["tenant", "swap-out", "with"]);
    check("on the connection that woke it");
}

/// By default a tenant sees its clients at its link's addresses, never at its loopback: the
/// host's end for the connections the kernel forwards, its own end for the one the worker
/// relays as it wakes the tenant. One added with `--client-address loopback` sees them at
/// 127.0.0.1 both ways (what redis's protected mode serves).
#[test]
fn a_tenant_sees_its_clients_at_its_link_unless_it_asks_for_its_loopback() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let link = add_proxyecho(&p, "link", &[]);
    let local = add_proxyecho(&p, "local", &["--client-address", "loopback"]);
    assert_eq!(tenant(&p, "link")["client_address"], "link");
    assert_eq!(tenant(&p, "local")["client_address"], "loopback");
    let started = Instant::now();
    for name in ["link", "local"] {
        let ten = Duration::from_secs(10);
        wait_kernel_forwarded(&p, name, started, ten, "not forwarded by the kernel");
    }
    let peer = |port: u16| http_get_from(port, "/peer").expect("an answer").1;
    let ends = worker::LinkAddrs::of_port(link);
    assert_eq!(peer(link), ends.host.to_string(), "forwarded by the kernel");
    assert_eq!(peer(local), "127.0.0.1", "forwarded by the kernel");

    p.ok(&["tenant", "swap-out", "link"]);
    p.ok(&["tenant", "swap-out", "local"]);
    assert_eq!(peer(link), ends.tenant.to_string(), "relayed as it woke");
    assert_eq!(peer(local), "127.0.0.1", "relayed as it woke");
}

/// Started by systemd's socket activation (`systemd-socket-activate`, as a `.socket` unit
/// would): the first connection, made while no worker runs, waits in the socket systemd holds,
/// starts the worker, and is answered by the tenant it was for. A port held for a tenant not
/// added yet is taken by its `tenant add`.
#[test]
fn a_worker_started_by_socket_activation_answers_the_connection_that_started_it() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let mut first = p.start_worker();
    let port = free_port();
    p.ok(&strs(&counter_add_args("counter", port)));
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    // Stopped: swapped out (`on_stop`), and nothing listens on its port.
    first.stop();
    drop(first);
    assert!(!testkit::net::is_listening(port));

    let later = free_port();
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let (a, b) = (listen(port), listen(later));
    let _worker = p.spawn_worker_via(&["systemd-socket-activate", "-l", &a, "-l", &b], &[]);
    // Its sockets bound (a loaded host took over 300 ms: the request was refused), then a
    // moment for a worker that would not wait to show itself.
    assert!(testkit::net::wait_bound(port, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !p.socket().exists(),
        "the worker waits for a first connection"
    );
    assert_eq!(
        http_get(port, "/inc").unwrap(),
        "2",
        "the connection that started the worker, answered with the tenant's state"
    );
    let log = p.worker_log();
    assert!(
        log.contains("took over listening sockets from systemd"),
        "{log}"
    );

    // systemd-socket-activate still holds `later` too: a bind of it would fail.
    p.ok(&strs(&counter_add_args("later", later)));
    assert_eq!(http_get(later, "/inc").unwrap(), "1");
}
