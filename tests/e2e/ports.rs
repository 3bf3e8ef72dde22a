//! The tenants' public ports beyond forwarding: the client's address handed to a tenant that
//! asks for it (PROXY protocol v2), and ports held by systemd while no worker runs (socket
//! activation).

use std::time::{Duration, Instant};

use testkit::net::{free_port, http_get, http_get_from};

use testkit::pico::Pico;

use super::{counter_add_args, pico, strs, tenant, tenant_add_args, wait_kernel_forwarded};

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
