//! The dense host: populations of real tenants that leave memory on their own when idle, wake on
//! their next connection, yield to memory pressure least recently active first, and survive
//! `kill -9` of the worker at any step of a swap.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use testkit::net::{free_port, http_get, redis_cli};
use testkit::pico::Pico;

use super::{
    add_redis_idle, counter_add_args_idle, counter_add_args_with, counter_app, pico, strs, tenant,
    wait_kernel_forwarded,
};

/// Adds a counter tenant (`python3 counter.py`) on a free port with `idle` as its idle timeout.
fn add_counter_idle(p: &Pico, name: &str, idle: &str) -> u16 {
    let port = free_port();
    p.ok(&strs(&counter_add_args_idle(name, port, idle)));
    port
}

/// `MemTotal - MemAvailable`, bytes.
fn host_memory_in_use() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name| kib_field(&text, name).unwrap();
    field("MemTotal:") - field("MemAvailable:")
}

/// Median of a few samples of [`host_memory_in_use`] (other tests run beside this one).
fn host_memory_in_use_settled() -> u64 {
    let mut samples: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            host_memory_in_use()
        })
        .collect();
    samples.sort_unstable();
    samples[2]
}

fn state(p: &Pico, name: &str) -> String {
    tenant(p, name)["state"].as_str().unwrap().to_string()
}

/// Waits until every tenant in `names` is in `want`; panics with the states after `limit`.
fn wait_states(p: &Pico, names: &[String], want: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let states: Vec<(String, String)> =
            names.iter().map(|n| (n.clone(), state(p, n))).collect();
        if states.iter().all(|(_, s)| s == want) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not all {want} after {limit:?}: {states:?}\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

enum Kind {
    Counter,
    Redis,
}

/// 20 tenants of mixed kinds with a 3 s idle timeout all swap out on their own, the host's
/// memory in use drops by at least 80% of their running RSS, and then one request each gets
/// the right answer (its own state), with no swap-in command given.
#[test]
fn twenty_idle_tenants_leave_memory_and_wake_on_their_next_request() {
    let _serial = testkit::criu_lock();
    let p = pico();
    // No eviction for memory here: the idle rule alone is under test.
    p.write_config("[worker]\nmemory_floor_mib = 0\n");
    let _worker = p.start_worker();
    // The worker's one-time costs first: its first swap-outs fill the local tier's write
    // buffers and cache and the allocator's arenas (about 100 MiB, measured; the host's,
    // whatever its population), so they are not counted against these tenants.
    let warm = add_counter_idle(&p, "warm-up", "0");
    assert_eq!(http_get(warm, "/ballast?mb=128").unwrap(), "128");
    p.ok(&["tenant", "swap-out", "warm-up"]);
    p.ok(&["tenant", "rm", "warm-up"]);
    super::store_settled(&p);
    // Tenants added so far are kept busy (a request each per second) until all 20 run at once.
    let adding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let added = Arc::new(std::sync::Mutex::new(Vec::<(u16, bool)>::new()));
    let keeper = {
        let (adding, added) = (adding.clone(), added.clone());
        std::thread::spawn(move || {
            while adding.load(std::sync::atomic::Ordering::SeqCst) {
                let ports = added.lock().unwrap().clone();
                for (port, redis) in ports {
                    if redis {
                        assert_eq!(redis_cli(port, &["PING"]), "PONG");
                    } else {
                        http_get(port, "/").unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let mut tenants = Vec::new();
    for i in 0..20 {
        let name = format!("t{i:02}");
        let (kind, port) = if i % 2 == 0 {
            (Kind::Counter, add_counter_idle(&p, &name, "3s"))
        } else {
            (Kind::Redis, add_redis_idle(&p, &name, "3s"))
        };
        // State of its own, and a heap worth freeing (random: no page is shared or zero).
        match kind {
            Kind::Counter => {
                for n in 1..=(i + 1) {
                    assert_eq!(http_get(port, "/inc").unwrap(), n.to_string());
                }
                assert_eq!(http_get(port, "/ballast?mb=24").unwrap(), "24");
            }
            Kind::Redis => {
                assert_eq!(redis_cli(port, &["SET", "owner", &name]), "OK");
                redis_fill(port, 2000, 4096);
            }
        }
        added
            .lock()
            .unwrap()
            .push((port, matches!(kind, Kind::Redis)));
        tenants.push((name, kind, port));
    }
    let names: Vec<String> = tenants.iter().map(|(n, _, _)| n.clone()).collect();
    for name in &names {
        assert_eq!(state(&p, name), "running", "{name} kept busy");
    }
    // Their resident memory of their own: anonymous and shared memory, what a memory cgroup
    // (v1 `rss` + `shmem`) charges them. Mapped files are page cache, available either way.
    let pids: Vec<u64> = names
        .iter()
        .map(|n| tenant(&p, n)["pid"].as_u64().unwrap())
        .collect();
    let in_use_running = host_memory_in_use();
    let worker_pid = worker_pid(&p);
    let worker_running = process_status_bytes(worker_pid, "RssAnon:");
    let shmem_running = meminfo_bytes("Shmem:");
    let running_rss: u64 = pids
        .iter()
        .map(|&pid| tree_status_bytes(pid, "RssAnon:") + tree_status_bytes(pid, "RssShmem:"))
        .sum();
    let with_files: u64 = pids
        .iter()
        .map(|&pid| tree_status_bytes(pid, "VmRSS:"))
        .sum();
    adding.store(false, std::sync::atomic::Ordering::SeqCst);
    keeper.join().unwrap();

    wait_states(&p, &names, "swapped-out", Duration::from_secs(120));
    // Once the worker is idle too: its recompression behind the swap-outs done, and the heap
    // that freed handed back (every 2 s).
    super::store_settled(&p);
    std::thread::sleep(Duration::from_secs(3));
    let in_use_idle = host_memory_in_use_settled();
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} is gone"
        );
    }
    // What the host got back: the tenants' memory, less what the worker and tmpfs (its staging)
    // keep now that they did not before. Counted this way, not as the host's `MemTotal -
    // MemAvailable` alone, because other tests run beside this one (that figure is printed).
    let worker_idle = process_status_bytes(worker_pid, "RssAnon:");
    let kept = worker_idle.saturating_sub(worker_running)
        + meminfo_bytes("Shmem:").saturating_sub(shmem_running);
    let freed = running_rss.saturating_sub(kept);
    eprintln!(
        "20 tenants: running RSS {} MiB ({} MiB with mapped files); worker {} -> {} MiB; freed {} MiB ({:.0}% of their RSS); host memory in use {} -> {} MiB",
        running_rss >> 20,
        with_files >> 20,
        worker_running >> 20,
        worker_idle >> 20,
        freed >> 20,
        freed as f64 * 100.0 / running_rss as f64,
        in_use_running >> 20,
        in_use_idle >> 20,
    );
    assert!(
        freed as f64 >= 0.8 * running_rss as f64,
        "freed {freed} bytes, under 80% of the tenants' RSS {running_rss}"
    );
    let log = p.worker_log();
    assert!(
        log.contains("reason=\"idle\"") || log.contains("reason=idle"),
        "the worker logs why it swapped each tenant out"
    );

    // One request each, no swap-in command: each answers with its own state (and may sleep
    // again 3 s later).
    for (i, (name, kind, port)) in tenants.iter().enumerate() {
        match kind {
            Kind::Counter => assert_eq!(
                http_get(*port, "/inc").unwrap(),
                (i + 2).to_string(),
                "{name}"
            ),
            Kind::Redis => assert_eq!(redis_cli(*port, &["GET", "owner"]), *name),
        }
    }
    assert_eq!(
        p.metric("pico_swap_ins_total"),
        20.0,
        "each woken by its request, once"
    );
}

/// Writes `keys` keys of `size` random-ish bytes on a redis tenant, pipelined on one
/// connection.
fn redis_fill(port: u16, keys: usize, size: usize) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut batch = Vec::new();
    for k in 0..keys {
        let key = format!("k{k}");
        let value: String = (0..size)
            .map(|j| char::from(b'a' + ((k * 7919 + j * 31 + j / 7) % 26) as u8))
            .collect();
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                key.len(),
                value.len()
            )
            .as_bytes(),
        );
    }
    s.write_all(&batch).unwrap();
    let mut answers = BufReader::new(s);
    for _ in 0..keys {
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n");
    }
}

/// 50 clients connecting at the same moment to one swapped-out tenant: 50 right answers (each
/// a distinct next value of its counter) and one restore.
#[test]
fn fifty_clients_at_once_wake_a_sleeping_tenant_once() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let port = add_counter_idle(&p, "c", "0");
    for n in 1..=3 {
        assert_eq!(http_get(port, "/inc").unwrap(), n.to_string());
    }
    p.ok(&["tenant", "swap-out", "c"]);
    let swap_ins = p.metric("pico_swap_ins_total");

    let barrier = Arc::new(Barrier::new(50));
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let answer = http_get(port, "/inc");
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    let mut waits = Vec::new();
    for client in clients {
        let (answer, waited) = client.join().unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("a client got no answer: {e}"));
        answers.insert(answer.parse::<u32>().unwrap());
        waits.push(waited);
    }
    waits.sort();
    eprintln!(
        "50 clients: first answer after {:?} (median {:?}, slowest {:?})",
        waits[0], waits[25], waits[49]
    );
    assert_eq!(
        answers,
        (4..=53).collect::<BTreeSet<u32>>(),
        "50 right answers"
    );
    assert_eq!(
        p.metric("pico_swap_ins_total") - swap_ins,
        1.0,
        "one restore"
    );
    assert_eq!(state(&p, "c"), "running");
}

/// With a memory floor above what is free, the least recently active tenants are swapped out
/// first: three tenants used in the order c, a, b leave in that order. Their order survives a
/// restart of the worker (it records each tenant's last activity when it stops).
#[test]
fn under_memory_pressure_the_least_recently_active_go_first() {
    let _serial = testkit::criu_lock();
    let p = pico();
    p.write_config("[worker]\nmemory_floor_mib = 0\non_stop = \"leave-running\"\n");
    let mut worker = p.start_worker();
    let names = ["a", "b", "c"];
    let ports: Vec<u16> = names.iter().map(|n| add_counter_idle(&p, n, "0")).collect();
    // More than a supervisor tick (500 ms) apart: a connection the kernel forwards is seen as
    // activity at the tick after it.
    for i in [2usize, 0, 1] {
        assert_eq!(http_get(ports[i], "/inc").unwrap(), "1");
        std::thread::sleep(Duration::from_millis(1100));
    }
    worker.stop();

    // A floor above all the host's memory: nothing the worker does gets it back above.
    let floor_mib = (host_memory_total() >> 20) + 1024;
    p.write_config(&format!(
        "[worker]\nmemory_floor_mib = {floor_mib}\non_stop = \"leave-running\"\n"
    ));
    let _worker = p.start_worker();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    wait_states(&p, &names, "swapped-out", Duration::from_secs(60));
    let log = p.worker_log();
    let order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("memory short"))
        .filter_map(|l| l.split("tenant=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(
        order,
        ["c", "a", "b"],
        "least recently active first:\n{log}"
    );
    // Each still answers, woken by its request: under the floor a swap-in first looks for room
    // (none left to make) and goes on; a tenant just woken is not evicted at once.
    for port in ports {
        assert_eq!(http_get(port, "/inc").unwrap(), "2");
    }
}

fn host_memory_total() -> u64 {
    meminfo_bytes("MemTotal:")
}

/// Where the worker is killed: a crash point (`PICO_CRASH_AT`) or a delay into a swap-out.
#[derive(Clone, Copy, Debug)]
enum Kill {
    At(&'static str),
    After(Duration),
}

/// `kill -9` of the worker 33 times, over dump, ingest, commit, registry writes and the
/// background fill of swap-ins, each followed by a restart: no tenant is lost, both answer, and
/// neither comes back with state older than its last complete dump (each counter goes on from
/// the last value it answered).
#[test]
fn kill_9_of_the_worker_at_any_step_of_a_swap_loses_no_tenant() {
    let _serial = testkit::criu_lock();
    let p = pico();
    // Lazy restores, so that some swap-ins are killed while their pages still arrive.
    p.write_config("[worker]\nwhole_restore_below_mib = 0\nmemory_floor_mib = 0\n");
    let mut worker = p.start_worker();
    let counter_port = add_counter_idle(&p, "c", "0");
    let redis_port = add_redis_idle(&p, "r", "0");
    let mut last_c = 0u64;
    let mut last_r = 0u64;
    let mut check = |p: &Pico| {
        last_c += 1;
        assert_eq!(
            http_get(counter_port, "/inc").unwrap(),
            last_c.to_string(),
            "c answers its next value\n{}",
            p.worker_log()
        );
        last_r += 1;
        assert_eq!(
            redis_cli(redis_port, &["INCR", "n"]),
            last_r.to_string(),
            "r answers its next value\n{}",
            p.worker_log()
        );
    };
    check(&p);
    worker.kill();

    let points = [
        "swap-out:registry-saved",
        "swap-out:dumped",
        "swap-out:committed",
        "swap-out:recorded",
        "swap-in:registry-saved",
        "swap-in:restored",
        "swap-in:recorded",
        "swap-in:filling",
    ];
    let mut kills: Vec<Kill> = Vec::new();
    for _ in 0..3 {
        kills.extend(points.iter().map(|p| Kill::At(p)));
    }
    kills.extend((0..9).map(|i| Kill::After(Duration::from_millis(30 + 45 * i))));
    for (round, kill) in kills.iter().enumerate() {
        let target = if round % 2 == 0 { "c" } else { "r" };
        // A restart after the last kill: both answer their next value.
        let mut plain = p.start_worker();
        check(&p);
        // A tenant the check woke is whole before this worker is killed: the kills of swap-ins
        // are the crash points'. (A worker killed while a lazy restore still copies pages in
        // takes the tenant back to its last complete dump.)
        wait_whole(&p, &["c", "r"]);
        let swap_in = matches!(kill, Kill::At(point) if point.starts_with("swap-in"));
        if swap_in {
            p.ok(&["tenant", "swap-out", target]);
        }
        plain.kill();
        match *kill {
            Kill::At(point) => {
                let mut crashing = p.start_worker_with_env(&[("PICO_CRASH_AT", point)]);
                let op = if swap_in { "swap-in" } else { "swap-out" };
                let _ = p.run(&["tenant", op, target]);
                assert!(
                    crashing.exited_within(Duration::from_secs(60)),
                    "the worker did not die at {point}"
                );
            }
            Kill::After(delay) => {
                let mut doomed = p.start_worker();
                let mut swap = p.command(&["tenant", "swap-out", target]).spawn().unwrap();
                std::thread::sleep(delay);
                doomed.kill();
                let _ = swap.wait();
            }
        }
        eprintln!("kill {round}: {kill:?} during {target}'s swap");
    }
    let _worker = p.start_worker();
    check(&p);
    for name in ["c", "r"] {
        assert_eq!(state(&p, name), "running");
    }
    p.ok(&["tenant", "rm", "c"]);
    p.ok(&["tenant", "rm", "r"]);
    let home = p.home().to_string_lossy().to_string();
    let ours: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&home) && !l.contains("/mnt/.whole"))
        .map(str::to_string)
        .collect();
    assert!(ours.is_empty(), "left mounted: {ours:?}");
    // A dump whose checkpoint was committed, left by a worker killed before it deleted it, is
    // deleted by the next one.
    let staged: Vec<_> = std::fs::read_dir(p.home().join("staging"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(staged.is_empty(), "left staged: {staged:?}");
}

/// Waits until no tenant of `names` has pages still to copy in from a lazy restore.
fn wait_whole(p: &Pico, names: &[&str]) {
    let started = Instant::now();
    while names.iter().any(|n| tenant(p, n)["pages_pending"] == true) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "lazy restores never completed\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tenant lives in a network namespace of its own with no outbound network: it sees only its
/// loopback, cannot reach a port on the host nor another tenant's, and is reached only through
/// the worker.
#[test]
fn a_tenant_has_no_network_but_its_own_loopback() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let probe = testkit::repo_root().join("deploy/apps/netprobe.py");
    let port = free_port();
    let port_s = port.to_string();
    p.ok(&[
        "tenant",
        "add",
        "probe",
        "--port",
        &port_s,
        "--",
        "python3",
        probe.to_str().unwrap(),
        &port_s,
    ]);
    let other = add_counter_idle(&p, "other", "0");
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();

    // Anywhere on the host: what the tenant's link reaches from the host's side is refused.
    let host_any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_any_port = host_any.local_addr().unwrap().port();
    let (link, other_link) = (link_addrs(port), link_addrs(other));

    assert_eq!(
        ifaces(port),
        ["eth0", "lo"],
        "its loopback and the link the kernel forwards its port over"
    );
    for (what, url) in [
        ("a port on the host", format!("/connect?port={host_port}")),
        (
            "the host over its link",
            format!("/connect?host={}&port={host_any_port}", link.0),
        ),
        ("another tenant", format!("/connect?port={other}")),
        (
            "another tenant over its link",
            format!("/connect?host={}&port={other}", other_link.1),
        ),
        ("the outside", "/connect?host=1.1.1.1&port=80".to_string()),
    ] {
        let answer = http_get(port, &url).unwrap();
        assert_ne!(answer, "connected", "the tenant reached {what}");
    }
    // Nor does anything on the host reach the tenant but through its public port.
    assert!(
        std::net::TcpStream::connect_timeout(&(link.1, port).into(), Duration::from_secs(2))
            .is_err(),
        "the host reached the tenant's link address directly"
    );
    // Its own port, inside: connected (the check itself works).
    assert_eq!(
        http_get(port, &format!("/connect?port={port}")).unwrap(),
        "connected"
    );
    // Across a swap, the same.
    p.ok(&["tenant", "swap-out", "probe"]);
    assert_eq!(ifaces(port), ["eth0", "lo"]);
    assert_ne!(
        http_get(port, &format!("/connect?port={host_port}")).unwrap(),
        "connected"
    );
}

/// The interfaces the netprobe tenant on `port` sees, sorted.
fn ifaces(port: u16) -> Vec<String> {
    let mut names: Vec<String> = http_get(port, "/ifaces")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// The host's and the tenant's ends of the link of the tenant on public `port` (a /30 per port
/// in 10.200.0.0/14: docs/hosting.md).
fn link_addrs(port: u16) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let base = u32::from(std::net::Ipv4Addr::new(10, 200, 0, 0)) + 4 * u32::from(port);
    ((base + 1).into(), (base + 2).into())
}

/// Packets the host's end of the link of the tenant on `port` carried (0 without a link).
fn link_packets(port: u16) -> u64 {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/pv{port}/statistics/{name}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    read("rx_packets") + read("tx_packets")
}

/// While a tenant runs, the kernel forwards its port (its link carries the connection, the tenant
/// sees its client at 127.0.0.1 as through the worker's relay); bytes over such a connection keep
/// it awake past its idle timeout; once they stop it is swapped out on its own, the connection
/// closed cleanly (the client reads its end, not a reset), and its next connection wakes it
/// through the worker. A table a killed worker left (its map still sending a port somewhere) is
/// removed when a worker starts.
#[test]
fn the_kernel_forwards_a_running_tenant_whose_traffic_keeps_it_awake() {
    use std::io::{Read, Write};
    let stale = format!("pico_dead{:08x}", std::process::id());
    let nft = testkit::net::nft;
    nft(&format!(
        "table ip {stale} {{\n comment \"pico worker {}\"\n map ports {{ type inet_service : ipv4_addr; elements = {{ 9 : 10.200.0.38 }} }}\n}}\n",
        u32::MAX - 1
    ));
    let p = pico();
    let _worker = p.start_worker();
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains(&stale),
        "the stale table is gone"
    );
    let port = add_redis_idle(&p, "fwd", "3s");
    assert_eq!(redis_cli(port, &["SET", "k", "v"]), "OK");
    // Admitted at one of the worker's next ticks (every 500 ms).
    let started = Instant::now();
    loop {
        let before = link_packets(port);
        assert_eq!(redis_cli(port, &["PING"]), "PONG");
        if link_packets(port) > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the kernel never forwarded the running tenant's port\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = redis_cli(port, &["CLIENT", "INFO"]);
    assert!(info.contains("addr=127.0.0.1:"), "{info}");

    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..6 {
        conn.write_all(b"PING\r\n").unwrap();
        let n = conn.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"+PONG\r\n");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(state(&p, "fwd"), "running", "its traffic kept it awake");
    assert_eq!(
        conn.read(&mut buf).unwrap(),
        0,
        "idle: its connection closed with a FIN before the swap-out"
    );
    wait_states(
        &p,
        &["fwd".to_string()],
        "swapped-out",
        Duration::from_secs(20),
    );
    assert_eq!(redis_cli(port, &["GET", "k"]), "v");
    assert_eq!(p.metric("pico_swap_ins_total"), 1.0);
}

/// Every tenant added gets its link, whenever the worker's tick comes: a tick that found a tenant
/// running while `tenant add` was still making its link used to make it again at the same time,
/// each deleting the other's half-made pair, and the loser left the tenant relayed for good
/// (`no link: ... Cannot find device`; about one tenant in six added one after another here).
#[test]
fn tenants_added_one_after_another_are_all_forwarded_by_the_kernel() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let names: Vec<String> = (0..10).map(|i| format!("link{i}")).collect();
    for name in &names {
        add_counter_idle(&p, name, "0");
    }
    let started = Instant::now();
    for name in &names {
        let ten = Duration::from_secs(10);
        wait_kernel_forwarded(&p, name, started, ten, "not forwarded by the kernel");
    }
    let log = p.worker_log();
    assert!(!log.contains("no link"), "{log}");
}

/// A tenant whose link cannot be made is relayed meanwhile and gets its link at a later try,
/// once what stood in the way is gone (here a device of the name its link's tenant end takes
/// on the host): it used to stay relayed until it was removed.
#[test]
fn a_tenant_whose_link_failed_gets_it_at_a_later_try() {
    /// A device in the way, removed when the test ends, however it ends.
    struct InTheWay(String);
    impl Drop for InTheWay {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let port = free_port();
    let in_the_way = InTheWay(format!("pt{port}"));
    let made = std::process::Command::new("ip")
        .args(["link", "add", &in_the_way.0, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());
    p.ok(&strs(&counter_add_args_idle("blocked", port, "0")));
    let started = Instant::now();
    while !p.worker_log().contains("no link") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "its link was made:\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(port, "/inc").unwrap(), "1", "relayed meanwhile");
    let blocked = tenant(&p, "blocked");
    assert_ne!(blocked["kernel_forwarded"], true, "{blocked}");
    assert!(blocked["link_failures"].as_u64() >= Some(1), "{blocked}");
    drop(in_the_way);
    wait_kernel_forwarded(
        &p,
        "blocked",
        started,
        Duration::from_secs(20),
        "still relayed",
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "2");
    assert!(p.worker_log().contains("its link is made after all"));
    assert_eq!(tenant(&p, "blocked")["link_failures"], 0);
}

/// A `kB` field of `/proc/PID/status` of `pid` alone, bytes.
fn process_status_bytes(pid: u64, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&status, field).unwrap_or(0)
}

/// A `kB` field of `/proc/meminfo`, bytes.
fn meminfo_bytes(field: &str) -> u64 {
    kib_field(&std::fs::read_to_string("/proc/meminfo").unwrap(), field).unwrap()
}

/// The `field:  N kB` line of `/proc` text (meminfo, status), in bytes.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// A `kB` field of `/proc/PID/status` summed over `pid` and its descendants, bytes.
fn tree_status_bytes(pid: u64, field: &str) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    while let Some(pid) = todo.pop() {
        total += process_status_bytes(pid, field);
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        todo.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u64>().ok()),
        );
    }
    total
}

/// The pid of the worker running on `p`'s home.
fn worker_pid(p: &Pico) -> u64 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("{} worker run", p.home().display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// With the cold tier down (Garage stopped), an idle tenant's swap-out cannot commit: the tenant
/// keeps running and answering, the worker says why and tries again later, backing off; once the
/// store is back, the tenant is swapped out, and its next request finds its state.
#[test]
fn with_the_cold_tier_down_an_idle_tenant_keeps_running_until_it_can_be_stored() {
    let _serial = testkit::criu_lock();
    let garage = testkit::garage::Garage::start();
    let p = pico();
    p.write_config(&format!(
        "{}\n[worker]\nmemory_floor_mib = 0\n",
        garage.cold_toml
    ));
    let _worker = p.start_worker();
    let port = add_counter_idle(&p, "c", "2s");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    garage.stop();
    let started = Instant::now();
    while !p
        .worker_log()
        .contains("swap-out failed; the tenant keeps running")
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no failed swap-out logged:\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(state(&p, "c"), "running");
    assert_eq!(http_get(port, "/inc").unwrap(), "2", "it kept its state");
    let log = p.worker_log();
    let failed = log.lines().find(|l| l.contains("swap-out failed")).unwrap();
    assert!(
        failed.contains("reason=\"idle\"") && failed.contains("retry_in_s="),
        "says why and when it tries again: {failed}"
    );

    garage.restart();
    wait_states(
        &p,
        &["c".to_string()],
        "swapped-out",
        Duration::from_secs(120),
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "3");
}

/// A tenant whose restores keep failing (every object of its checkpoint damaged in the cold
/// tier, nothing in the worker's tiers) is `failed` after `max_restore_failures`, shown with the
/// reason, and keeps its checkpoint: with the objects back, a swap-in by hand brings it back
/// with its state.
#[test]
fn a_tenant_whose_restores_fail_is_failed_with_the_reason_and_keeps_its_checkpoint() {
    let _serial = testkit::criu_lock();
    let p = pico();
    p.write_config("[worker]\nmemory_floor_mib = 0\nmax_restore_failures = 2\n");
    let _worker = p.start_worker();
    let port = add_counter_idle(&p, "c", "0");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    p.ok(&["tenant", "swap-out", "c"]);
    super::store_settled(&p);
    p.ok(&["store", "evict", "--tier", "local"]);
    p.ok(&["store", "evict", "--tier", "hot"]);
    let cold = p.home().join("cold");
    let kept = p.home().join("cold-kept");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&cold)
        .arg(&kept)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut damaged = 0;
    for dir in ["packs", "locality"] {
        for file in walk(&cold.join(dir)) {
            let mut bytes = std::fs::read(&file).unwrap();
            let half = bytes.len() / 2;
            for b in &mut bytes[..half] {
                *b ^= 0x5a;
            }
            std::fs::write(&file, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no object to damage under {}", cold.display());

    // The request is held while the restores fail, then closed: no answer, nothing lost.
    assert!(http_get(port, "/inc").is_err(), "{}", p.worker_log());
    let t = tenant(&p, "c");
    assert_eq!(t["state"], "failed", "{t}\n{}", p.worker_log());
    // The error names CRIU's log of the failed restore, kept apart from the next run's.
    let failure = t["failure"].as_str().unwrap();
    let log = failure
        .split("last lines of ")
        .nth(1)
        .and_then(|rest| rest.split(":\n").next())
        .unwrap_or_else(|| panic!("no log named in {failure}"));
    assert!(log.contains("/criu/failed/"), "{failure}");
    assert!(std::path::Path::new(log).is_file(), "{log} kept");
    let ls = p.ok(&["tenant", "ls"]);
    assert!(ls.contains("failed 2 restores in a row"), "{ls}");
    assert_eq!(t["checkpoint"].as_str().map(str::len), Some(32), "{t}");

    std::fs::remove_dir_all(&cold).unwrap();
    std::fs::rename(&kept, &cold).unwrap();
    p.ok(&["tenant", "swap-in", "c"]);
    assert_eq!(http_get(port, "/inc").unwrap(), "2", "its state, back");
    assert_eq!(state(&p, "c"), "running");
}

/// A tenant without a sandbox sees the host's /proc: a file of a pid there, held open, names a
/// host pid its restore would not have. Its dump is refused (the tenant keeps running and
/// answering), tried again, and once the file is closed the tenant swaps out and wakes with its
/// state. Committed, that dump would leave every restore failing (as redis's `/proc/PID/stat`,
/// opened for a moment to read its RSS, did once in ~100 swap-outs of `pico bench restore`).
#[test]
fn a_dump_holding_a_file_of_the_hosts_proc_is_refused_and_the_tenant_keeps_running() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let port = free_port();
    p.ok(&strs(&counter_add_args_with("c", port, &["--no-sandbox"])));
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    assert_eq!(
        http_get(port, "/hold?path=/proc/self/stat").unwrap(),
        "held"
    );

    let refused = p.fails(&["tenant", "swap-out", "c"]);
    assert!(
        refused.contains("dump refused") && refused.contains("/stat"),
        "{refused}"
    );
    assert_eq!(state(&p, "c"), "running");
    let log = p.worker_log();
    assert_eq!(
        log.matches("dump refused: trying again").count(),
        2,
        "{log}"
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "2", "{}", p.worker_log());

    assert_eq!(http_get(port, "/release").unwrap(), "1");
    p.ok(&["tenant", "swap-out", "c"]);
    assert_eq!(state(&p, "c"), "swapped-out");
    assert_eq!(http_get(port, "/inc").unwrap(), "3", "{}", p.worker_log());
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `pico tenant add --spec FILE`: the tenant runs with the file's environment and working
/// directory, before and after a swap, and `tenant status` shows them; a key this version does
/// not honour is refused with its name.
#[test]
fn a_tenant_spec_file_sets_its_environment_and_working_directory() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let port = free_port();
    let workdir = p.home().join("web-root");
    std::fs::create_dir_all(&workdir).unwrap();
    let spec = p.home().join("web.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"web\"\nport = {port}\ncmd = [\"python3\", \"{app}\", \"{port}\"]\n\
             env = {{ GREETING = \"hello from the spec\" }}\nworkdir = \"{dir}\"\n\
             idle_timeout = \"0\"\n",
            app = counter_app(),
            dir = workdir.display()
        ),
    )
    .unwrap();
    p.ok(&["tenant", "add", "--spec", spec.to_str().unwrap()]);
    let check = || {
        assert_eq!(
            http_get(port, "/env?name=GREETING").unwrap(),
            "hello from the spec"
        );
        assert_eq!(
            http_get(port, "/cwd").unwrap(),
            workdir.display().to_string()
        );
    };
    check();
    let t = tenant(&p, "web");
    assert_eq!(t["env"]["GREETING"], "hello from the spec", "{t}");
    assert_eq!(t["idle_timeout_ms"], 0, "{t}");
    p.ok(&["tenant", "swap-out", "web"]);
    check();

    // A key this version does not know, and a value it cannot honour, are errors naming them.
    for (key, says) in [
        ("cpu_quota = \"1\"", "cpu_quota"),
        ("memory_limit = \"1Q\"", "memory_limit"),
        ("cpu_weight = 0", "cpu_weight"),
    ] {
        std::fs::write(
            &spec,
            format!(
                "name = \"big\"\nport = {}\ncmd = [\"true\"]\n{key}\n",
                free_port()
            ),
        )
        .unwrap();
        let err = p.fails(&["tenant", "add", "--spec", spec.to_str().unwrap()]);
        assert!(err.contains(says), "{key}: {err}");
    }
}

/// The cgroup of process `pid` in `controller` (v1; "" for the v2 hierarchy), from
/// `/proc/PID/cgroup`.
fn cgroup_of(pid: u64, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let found = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        found.then(|| path.to_string())
    })
}

/// The memory limit (bytes) and CPU weight (v1 `cpu.shares`, or v2 `cpu.weight` × 1024 / 100)
/// of process `pid`'s cgroup, and that cgroup; read as an operator would, under /sys/fs/cgroup.
fn cgroup_limits(pid: u64) -> (u64, u64, String) {
    let read = |path: String| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    };
    match cgroup_of(pid, "memory") {
        Some(group) => {
            assert_eq!(cgroup_of(pid, "cpu").as_deref(), Some(group.as_str()));
            let limit = read(format!(
                "/sys/fs/cgroup/memory{group}/memory.limit_in_bytes"
            ));
            let shares = read(format!("/sys/fs/cgroup/cpu{group}/cpu.shares"));
            (limit.parse().unwrap(), shares.parse().unwrap(), group)
        }
        None => {
            let group = cgroup_of(pid, "").expect("a v2 cgroup");
            let limit = read(format!("/sys/fs/cgroup{group}/memory.max"));
            let weight: u64 = read(format!("/sys/fs/cgroup{group}/cpu.weight"))
                .parse()
                .unwrap();
            (
                limit.parse().unwrap_or(u64::MAX),
                weight * 1024 / 100,
                group,
            )
        }
    }
}

/// A tenant with a memory limit and a CPU weight runs in a cgroup of its own with both set, and
/// is back in it with both after a swap-out and a wake-up by a request (a lazy restore: its heap
/// is over `whole_restore_below_mib`); its neighbour, without limits, in another with the
/// defaults (after a whole restore). `rss_bytes` is the cgroup's. A sleeping tenant has no
/// cgroup. A worker killed with -9 and started again finds both where they were. Past its limit
/// the tenant is killed by the OOM killer; its neighbour answers on.
#[test]
fn a_tenant_runs_in_a_cgroup_of_its_own_with_its_limits_across_a_swap() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let mut worker = p.start_worker();
    let port = free_port();
    let args = counter_add_args_with(
        "lim",
        port,
        &["--memory-limit", "96M", "--cpu-weight", "50"],
    );
    p.ok(&strs(&args));
    let free = add_counter_idle(&p, "free", "0");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    assert_eq!(http_get(port, "/ballast?mb=40").unwrap(), "40");
    assert_eq!(http_get(free, "/inc").unwrap(), "1");

    let pid = |name| tenant(&p, name)["pid"].as_u64().unwrap();
    let check = |when: &str| {
        let (limit, shares, group) = cgroup_limits(pid("lim"));
        assert_eq!((limit, shares), (96 << 20, 512), "{when}: {group}");
        assert!(
            group.starts_with("/picocenter/") && group.ends_with("/lim"),
            "{when}: {group}"
        );
        let (limit, shares, other) = cgroup_limits(pid("free"));
        assert!(limit >= 1 << 62, "{when}: no limit: {limit}");
        assert_eq!(shares, 1024, "{when}");
        assert!(other.ends_with("/free"), "{when}: {other}");
        group
    };
    let group = check("started");
    let t = tenant(&p, "lim");
    assert_eq!(t["memory_limit"], 96 << 20, "{t}");
    assert_eq!(t["cpu_weight"], 50, "{t}");
    let rss = t["rss_bytes"].as_u64().unwrap();
    assert!(rss > 40 << 20 && rss < 96 << 20, "rss_bytes {rss}");

    let out = p.json(&["tenant", "swap-out", "lim"]);
    assert!(out["rss_bytes"].as_u64().unwrap() > 40 << 20, "{out}");
    p.ok(&["tenant", "swap-out", "free"]);
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory{group}")).exists()
            && !std::path::Path::new(&format!("/sys/fs/cgroup{group}")).exists(),
        "a sleeping tenant has no cgroup"
    );
    // Woken by requests, no swap-in command.
    assert_eq!(http_get(port, "/inc").unwrap(), "2");
    assert_eq!(http_get(free, "/inc").unwrap(), "2");
    assert_eq!(tenant(&p, "lim")["last_swap_in"]["whole"], false);
    assert_eq!(tenant(&p, "free")["last_swap_in"]["whole"], true);
    assert_eq!(check("restored"), group);
    // Its memory came back into its cgroup (charged there, not to the worker's), once the lazy
    // restore has copied every page in.
    let started = Instant::now();
    while tenant(&p, "lim")["pages_pending"] == true {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pages still pending"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss = tenant(&p, "lim")["rss_bytes"].as_u64().unwrap();
    eprintln!("lim: rss_bytes {} MiB after its lazy restore", rss >> 20);
    assert!(rss > 40 << 20 && rss < 96 << 20, "rss_bytes {rss}");

    worker.kill();
    let _worker = p.start_worker();
    assert_eq!(check("adopted"), group);
    assert_eq!(http_get(port, "/inc").unwrap(), "3");
    assert_eq!(http_get(free, "/inc").unwrap(), "3");

    // Past its limit: the OOM killer, within its cgroup.
    assert!(
        http_get(port, "/ballast?mb=100").is_err(),
        "killed mid-request"
    );
    // The client sees its connection close while the killed tree is still exiting (a PID
    // namespace's init waits for the rest of it): `exited` follows within moments.
    wait_states(&p, &["lim".to_string()], "exited", Duration::from_secs(5));
    let oom_control = format!("/sys/fs/cgroup/memory{group}/memory.oom_control");
    if let Ok(text) = std::fs::read_to_string(&oom_control) {
        assert!(text.contains("oom_kill 1"), "{oom_control}: {text}");
    }
    assert_eq!(
        http_get(free, "/inc").unwrap(),
        "4",
        "the neighbour answers on"
    );
}

/// The cgroups a killed worker leaves go: a tenant's that holds no process (the tenant died
/// while no worker ran) at the worker's next start, the rest with the home (the test kit's
/// cleanup, through `worker::cgroup::remove_leftover_cgroups`). A tenant still running keeps
/// its cgroup across the restart.
#[test]
fn the_cgroups_a_killed_worker_leaves_are_removed() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let mut worker = p.start_worker();
    let gone = add_counter_idle(&p, "gone", "0");
    let kept = add_counter_idle(&p, "kept", "0");
    assert_eq!(http_get(gone, "/inc").unwrap(), "1");
    assert_eq!(http_get(kept, "/inc").unwrap(), "1");
    let pid = |name| tenant(&p, name)["pid"].as_u64().unwrap();
    let (gone_pid, kept_pid) = (pid("gone"), pid("kept"));
    let (_, _, gone_group) = cgroup_limits(gone_pid);
    let (_, _, kept_group) = cgroup_limits(kept_pid);
    let dirs = |group: &str| {
        [
            format!("/sys/fs/cgroup/memory{group}"),
            format!("/sys/fs/cgroup/cpu{group}"),
            format!("/sys/fs/cgroup{group}"),
        ]
        .map(std::path::PathBuf::from)
    };
    let exists = |group: &str| dirs(group).iter().any(|d| d.exists());
    assert!(exists(&gone_group) && exists(&kept_group));

    worker.kill();
    drop(worker);
    // SAFETY: kill(2) of the tenant's pid; no memory is involved.
    unsafe { libc::kill(gone_pid as i32, libc::SIGKILL) };
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{gone_pid}")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tenant not gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exists(&gone_group), "left behind by the killed worker");
    let mut worker = p.start_worker();
    assert!(
        !exists(&gone_group),
        "{gone_group} still there after the restart"
    );
    assert!(p
        .worker_log()
        .contains("removed tenants' cgroups a previous run left"));
    assert_eq!(
        cgroup_limits(pid("kept")).2,
        kept_group,
        "adopted in its cgroup"
    );
    assert_eq!(http_get(kept, "/inc").unwrap(), "2");

    let worker_group = kept_group
        .rsplit_once('/')
        .map(|(group, _)| group.to_string())
        .unwrap();
    // Killed again, its tenant left running: the home's removal kills it and its cgroups go.
    worker.kill();
    drop(worker);
    drop(p);
    assert!(
        !exists(&kept_group) && !exists(&worker_group),
        "{worker_group} left after its home went"
    );
}

/// SIGUSR2: the worker re-executes itself (an upgrade in place), handing its tenants and their
/// listening sockets to the new image. A client connecting all the while is never refused, the
/// tenant keeps running with its state, and the worker keeps its pid.
#[test]
fn a_worker_that_re_executes_itself_refuses_no_connection() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let _worker = p.start_worker();
    let port = add_counter_idle(&p, "c", "0");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    let worker = worker_pid(&p);
    let tenant_pid = tenant(&p, "c")["pid"].as_u64().unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match http_get(port, "/") {
                    Ok(_) => answered += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (answered, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let signalled = std::process::Command::new("kill")
        .args(["-USR2", &worker.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let started = Instant::now();
    while p.worker_log().matches("worker ready").count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second image:\n{}",
            p.worker_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (answered, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "refused or failed: {failed:?}");
    assert!(answered > 10, "{answered} answers");
    assert_eq!(worker_pid(&p), worker, "the same process");
    assert_eq!(
        tenant(&p, "c")["pid"].as_u64(),
        Some(tenant_pid),
        "the tenant kept running"
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "2");
    assert!(p
        .worker_log()
        .contains("took over listening sockets listeners=1"));
}

/// A re-exec that cannot happen (the worker's binary is gone) ends the worker with an error, so
/// that a supervisor restarts it (systemd's `Restart=on-failure`); its tenant keeps running, and
/// the next worker adopts it with its state.
#[test]
fn a_worker_whose_re_exec_fails_exits_with_an_error_and_its_tenant_is_adopted() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let dir = tempfile::tempdir().unwrap();
    let doomed_bin = dir.path().join("pico-old");
    std::fs::copy(&p.bin, &doomed_bin).unwrap();
    let script = format!("shift; exec {} \"$@\"", doomed_bin.display());
    let mut worker = p.spawn_worker_via(&["sh", "-c", &script, "sh"], &[]);
    p.wait_socket();
    let port = add_counter_idle(&p, "c", "0");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    let tenant_pid = tenant(&p, "c")["pid"].as_u64().unwrap();

    std::fs::remove_file(&doomed_bin).unwrap();
    let pid = worker.pid().unwrap().to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-USR2", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = worker
        .exit_status_within(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the worker did not exit:\n{}", p.worker_log()));
    assert!(!status.success(), "{status:?}\n{}", p.worker_log());
    assert!(p.worker_log().contains("could not re-execute the worker"));
    assert!(
        std::path::Path::new(&format!("/proc/{tenant_pid}")).exists(),
        "the tenant kept running"
    );

    let _next = p.start_worker();
    assert_eq!(
        http_get(port, "/inc").unwrap(),
        "2",
        "adopted with its state"
    );
    assert_eq!(tenant(&p, "c")["pid"].as_u64(), Some(tenant_pid));
}

/// A tenant in its sandbox (the default) that tries every way out it knows, before and after a swap:
/// the worker's store, config and staging images, another tenant's directory and /proc, a device
/// node of the disk, mount, ptrace, setns, new namespaces, a kernel module, writing to the
/// system's directories. Every attempt fails, while it still writes where it may. The same reads
/// from a tenant outside a sandbox succeed (the attempts are real).
#[test]
fn a_sandboxed_tenant_cannot_reach_other_tenants_the_store_or_the_kernel() {
    prying_tenant_is_refused(Restore::Whole, Ids::Host);
}

/// The same through a lazy restore (CRIU's command line and lazy-pages daemon instead of the
/// spare CRIU's RPC request).
#[test]
fn a_sandboxed_tenant_restored_lazily_is_as_confined() {
    prying_tenant_is_refused(Restore::Lazy, Ids::Host);
}

/// `--user-namespace`: the same attempts fail, and the tenant, root inside, is an unprivileged
/// uid of the host: it cannot read `/etc/shadow` (which root of a plain sandbox can), before
/// and after a swap (whole restore: the spare CRIU's RPC request)...
#[test]
fn a_tenant_in_a_user_namespace_is_as_confined_and_nobody_on_the_host() {
    prying_tenant_is_refused(Restore::Whole, Ids::OwnUserNamespace);
}

/// ... and on a worker that restores lazily, where it is restored whole all the same unless the
/// kernel lets CRIU restore it lazily (`vm.unprivileged_userfaultfd = 1`; 0 here).
#[test]
fn a_tenant_in_a_user_namespace_on_a_lazy_worker_keeps_its_namespace() {
    prying_tenant_is_refused(Restore::Lazy, Ids::OwnUserNamespace);
}

/// Which ids the prying tenant runs as.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ids {
    /// The host's root, with few capabilities (the sandbox's default).
    Host,
    /// Root of a user namespace of its own (`--user-namespace`).
    OwnUserNamespace,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Restore {
    Whole,
    Lazy,
}

/// The effective uid, on the host, of process `pid`.
fn host_uid_of(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// A System V shared memory segment of the test's own (removed on drop), for a tenant to try
/// to attach to.
struct SharedMemorySegment {
    key: i32,
    id: i32,
}

impl SharedMemorySegment {
    fn new() -> SharedMemorySegment {
        let key = 0x5049_0000 | (std::process::id() as i32 & 0xffff);
        // SAFETY: shmget with numbers; creates a 4 KiB segment nobody maps.
        let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        SharedMemorySegment { key, id }
    }
}

impl Drop for SharedMemorySegment {
    fn drop(&mut self) {
        // SAFETY: removes the segment this test made.
        unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

fn prying_tenant_is_refused(restore: Restore, ids: Ids) {
    let _serial = testkit::criu_lock();
    let p = pico();
    if restore == Restore::Lazy {
        p.write_config("[worker]\nwhole_restore_below_mib = 0\n");
    }
    let _worker = p.start_worker();
    let apps = testkit::repo_root().join("deploy/apps");
    let pry = apps.join("pry.py");
    let add_pry = |name: &str, sandbox: bool| {
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec!["tenant", "add", name, "--port", &port_s];
        // Sandboxed by default; its script's directory shown because its command names it.
        if !sandbox {
            args.push("--no-sandbox");
        } else if ids == Ids::OwnUserNamespace {
            args.push("--user-namespace");
        }
        args.extend([
            "--idle-timeout",
            "0",
            "--",
            "python3",
            pry.to_str().unwrap(),
            &port_s,
        ]);
        p.ok(&args);
        port
    };
    let other = add_counter_idle(&p, "other", "0");
    assert_eq!(http_get(other, "/inc").unwrap(), "1");
    let other_pid = tenant(&p, "other")["pid"].as_u64().unwrap();
    // A complete checkpoint of another tenant in the store, its images staged on the host.
    p.ok(&["tenant", "swap-out", "other"]);
    assert_eq!(http_get(other, "/inc").unwrap(), "2");
    let other_pid_now = tenant(&p, "other")["pid"].as_u64().unwrap_or(other_pid);
    let sandboxed = add_pry("prying", true);
    let control = add_pry("control", false);
    let shm = SharedMemorySegment::new();
    let query = |only: &str| {
        format!(
            "/pry?home={}&other=other&pid={other_pid_now}&shm={}{only}",
            p.home().display(),
            shm.key
        )
    };

    let check = |when: &str| {
        let answer = http_get(sandboxed, &query("")).unwrap();
        eprintln!("{when}:\n{answer}");
        let lines: Vec<&str> = answer.lines().collect();
        assert!(lines.len() >= 18, "{when}: {answer}");
        let allowed: Vec<&&str> = lines.iter().filter(|l| l.ends_with(" allowed")).collect();
        assert!(
            allowed.is_empty(),
            "{when}: the sandbox let through {allowed:?}\n{answer}"
        );
        assert_eq!(http_get(sandboxed, "/own").unwrap(), "ok", "{when}");
        let shadow = http_get(sandboxed, "/shadow").unwrap();
        let t = tenant(&p, "prying");
        let host_uid = host_uid_of(t["pid"].as_u64().expect("a running tenant's pid"));
        match ids {
            // The plain sandbox's documented limit: root reads what it is shown.
            Ids::Host => {
                assert_eq!(shadow, "/etc/shadow allowed", "{when}");
                assert_eq!(host_uid, 0, "{when}");
            }
            Ids::OwnUserNamespace => {
                assert!(
                    shadow.starts_with("/etc/shadow refused"),
                    "{when}: {shadow}"
                );
                let first = t["user_namespace"].as_u64().expect("its range") as u32;
                assert!(first >= 200_000_000, "{when}: {t}");
                assert_eq!(host_uid, first, "{when}: root inside is its first id");
            }
        }
    };
    check("started");
    let t = tenant(&p, "prying");
    assert_eq!(t["sandbox"], true, "{t}");
    assert_eq!(
        t["user_namespace"].is_null(),
        ids == Ids::Host,
        "{ids:?}: {t}"
    );
    assert_eq!(t["read_only"][0], apps.to_str().unwrap(), "{t}");
    p.ok(&["tenant", "swap-out", "prying"]);
    check("after a swap-out and a wake-up");
    let woke = tenant(&p, "prying");
    let lazy_allowed = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
        .is_ok_and(|v| v.trim() == "1");
    let whole = restore == Restore::Whole || (ids == Ids::OwnUserNamespace && !lazy_allowed);
    assert_eq!(
        woke["last_swap_in"]["whole"], whole,
        "{restore:?} {ids:?}: {woke}"
    );
    if restore == Restore::Whole {
        // Asleep past the memory tier's pages: woken from its kept dump (a copy into the staging
        // tmpfs for a tenant in a user namespace, whose tasks open some images themselves).
        super::swap_out_to_its_kept_dump(&p, "prying");
        let hits = super::local_hits(&p);
        check("woken from its kept dump");
        let woke = tenant(&p, "prying");
        assert_eq!(woke["last_swap_in"]["whole"], true, "{ids:?}: {woke}");
        assert_eq!(
            super::local_hits(&p),
            hits,
            "{ids:?}: no page looked up in the local tier"
        );
    }

    let reads = http_get(control, &query("&only=reads")).unwrap();
    for read in [
        "the store",
        "the local tier",
        "another tenant's directory",
        "another process's /proc",
        "the machine's processes",
        "System V shared memory of the host",
    ] {
        assert!(
            reads.contains(&format!("{read} allowed")),
            "outside a sandbox {read} is readable (the attempt is real): {reads}"
        );
    }
    assert_eq!(
        http_get(other, "/inc").unwrap(),
        "3",
        "the neighbour is untouched"
    );
}

/// A connection given up while its tenant wakes (here at once: `hold_timeout_ms = 1`) does not
/// cancel the wake-up: the tenant comes up and answers, and the worker goes on swapping idle
/// tenants out (a wake-up dropped half done used to leave the tenant `swapping-in` and the
/// worker's swap-ins-waiting count raised, which stopped every idle swap-out; the density
/// bench's 50/s burst found it).
#[test]
fn a_wake_up_outlives_the_connection_that_asked_for_it() {
    let _serial = testkit::criu_lock();
    let p = pico();
    p.write_config("[worker]\nhold_timeout_ms = 1\n");
    let _worker = p.start_worker();
    let port = add_counter_idle(&p, "held", "3s");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    let names = ["held".to_string()];
    wait_states(&p, &names, "swapped-out", Duration::from_secs(30));
    assert!(
        http_get(port, "/inc").is_err(),
        "held past 1 ms: the connection is closed"
    );
    wait_states(&p, &names, "running", Duration::from_secs(20));
    // Asleep again on its own: nothing is left waiting for a swap slot.
    wait_states(&p, &names, "swapped-out", Duration::from_secs(30));
}

#[test]
fn a_sleeping_tenant_whose_network_namespace_is_gone_is_served_again() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let mut worker = p.start_worker();
    let port = super::add_counter(&p, "web");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    p.ok(&["tenant", "swap-out", "web"]);
    worker.stop();
    // What a reboot leaves: the record, the checkpoint, no pin of its namespace.
    let pin = p.home().join("tenants/web/netns");
    let out = std::process::Command::new("umount")
        .arg(&pin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _worker = p.start_worker();
    assert!(
        testkit::net::wait_port(port, Duration::from_secs(10)),
        "{}",
        p.worker_log()
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "2", "{}", p.worker_log());
    assert!(p.worker_log().contains("made anew"), "{}", p.worker_log());
}
