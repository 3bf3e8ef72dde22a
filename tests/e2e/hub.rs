//! The hub with a real worker: the worker reports its tenants, the hub names them in DNS
//! (checked with the real `dig`), a query for a sleeping tenant wakes it, the hub's state
//! outlives it in the cold tier, and a silent worker is declared dead.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::guide::{Guide, GuideHost};
use testkit::net::{curl, dig, free_port, http_get};
use testkit::netlab::{Lan, NetHost};
use testkit::pico::Pico;

use super::strs;

const ZONE: &str = "pico.test";

/// What `pico hub ls tenants` says of `name`, once `check` holds (at most 20 s).
fn hub_tenant_when(
    hub: &Pico,
    name: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    hub_tenant_listed(hub, &|| hub.json(&["hub", "ls", "tenants"]), name, check)
}

/// What the listing `tenants` (the hub's, however read) says of `name`, once `check` holds (at
/// most 20 s).
fn hub_tenant_listed(
    hub: &Pico,
    tenants: &dyn Fn() -> serde_json::Value,
    name: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let tenants = tenants();
        let found = tenants
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned();
        if let Some(t) = found.filter(|t| check(t)) {
            return t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "hub never showed {name} as expected: {tenants}\n{}",
            hub.hub_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster's one token (hub and workers), readable by root only.
fn write_token(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "cluster-s3cret\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn hub_config(dns: u16, api: u16, token: &Path, cold: &Path) -> String {
    hub_config_over(dns, api, token, &dir_cold(cold))
}

/// A `[cold]` section for the directory `cold`.
fn dir_cold(cold: &Path) -> String {
    format!("[cold]\nkind = \"dir\"\npath = {cold:?}\n")
}

/// The hub's `pico.toml` over the cold tier `cold_toml` (a `[cold]` section).
fn hub_config_over(dns: u16, api: u16, token: &Path, cold_toml: &str) -> String {
    format!(
        "[hub]\nzone = \"{ZONE}.\"\ndns_listen = \"127.0.0.1:{dns}\"\napi_listen = \"127.0.0.1:{api}\"\n\
         token_file = {token:?}\ndead_after_ms = 1500\nlease_ms = 1000\nwake_wait_ms = 3000\n{cold_toml}"
    )
}

#[test]
fn the_hub_names_a_workers_tenants_in_dns_and_a_query_wakes_a_sleeping_one() {
    let _serial = testkit::criu_lock();
    let hub = super::pico();
    let w1 = super::pico();
    let token = hub.home().join("token");
    write_token(&token);
    let (dns, hub_api, w1_api) = (free_port(), free_port(), free_port());
    hub.write_config(&hub_config(dns, hub_api, &token, &w1.home().join("cold")));
    let mut hub_daemon = hub.start_hub(hub_api);
    w1.write_config(&format!(
        "[worker]\napi_listen = \"127.0.0.1:{w1_api}\"\napi_token_file = {token:?}\n\
         [worker.hub]\naddr = \"127.0.0.1:{hub_api}\"\ntoken_file = {token:?}\nname = \"w1\"\n\
         heartbeat_ms = 200\n"
    ));
    let mut worker = w1.start_worker();
    let port = super::add_counter(&w1, "web");

    // Reported by its worker, named in DNS.
    let t = hub_tenant_when(&hub, "web", |t| t["state"] == "running");
    assert_eq!(
        (t["worker"].as_str(), t["port"].as_u64()),
        (Some("w1"), Some(port as u64))
    );
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(answer.contains("status: NOERROR"), "{answer}");
    assert!(answer.contains("flags: qr aa;"), "{answer}");
    assert!(!answer.contains("WARNING"), "{answer}");
    assert!(
        answer.contains(&format!("web.{ZONE}.\t\t1\tIN\tA\t127.0.0.1")),
        "{answer}"
    );
    let unknown = dig(dns, &[&format!("nobody.{ZONE}"), "A"]);
    assert!(unknown.contains("status: NXDOMAIN"), "{unknown}");
    assert!(unknown.contains("IN\tSOA\tns.pico.test."), "{unknown}");
    let workers = hub.json(&["hub", "ls", "workers"]);
    assert_eq!(workers[0]["name"], "w1", "{workers}");
    assert_eq!(
        workers[0]["api"],
        format!("127.0.0.1:{w1_api}"),
        "{workers}"
    );

    // Asleep: a DNS query wakes it, and it still counts where it was.
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    w1.ok(&["tenant", "swap-out", "web"]);
    hub_tenant_when(&hub, "web", |t| t["state"] == "swapped-out");
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(answer.contains("\tA\t127.0.0.1"), "{answer}");
    // Woken by the query alone (the answer waited for it, up to wake_wait_ms).
    let started = Instant::now();
    while !hub.hub_log().contains("woken by a DNS query") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            hub.hub_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let woken = w1.json(&["tenant", "status", "web"]);
    assert_eq!(woken["state"], "running", "{woken}");
    assert_eq!(http_get(port, "/inc").unwrap(), "2");

    // The hub's API asks for its token.
    let url = format!("http://127.0.0.1:{hub_api}/v1/tenants");
    let (status, body) = curl(&[&url]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl(&["-H", "Authorization: Bearer wrong", &url]);
    assert_eq!(status, 401, "{body}");

    // Its state outlives it, killed: a new hub reads it back from the cold tier.
    hub_daemon.kill();
    let restarted = hub.start_hub(hub_api);
    assert!(
        hub.hub_log()
            .contains("hub state loaded workers=1 tenants=1"),
        "{}",
        hub.hub_log()
    );

    // A worker that stops reporting is dead once `dead_after_ms` has passed.
    worker.stop();
    let started = Instant::now();
    loop {
        let workers = hub.json(&["hub", "ls", "workers"]);
        // Its housekeeping says so within a pass (500 ms) of the listing.
        if workers[0]["alive"] == false && hub.hub_log().contains("worker is dead") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{workers}\n{}",
            hub.hub_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(restarted);
}

#[test]
fn the_hubs_api_over_tls_serves_only_clients_that_trust_its_certificate() {
    let _serial = testkit::criu_lock();
    let hub = super::pico();
    let w1 = super::pico();
    let token = hub.home().join("token");
    write_token(&token);
    let testkit::tls::Pki { ca, cert, key } = testkit::tls::ca_signed(hub.home(), "hub");
    let (dns, hub_api, w1_api) = (free_port(), free_port(), free_port());
    let config = hub_config(dns, hub_api, &token, &w1.home().join("cold")).replacen(
        "[hub]\n",
        &format!("[hub]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\ntls_ca_file = {ca:?}\n"),
        1,
    );
    hub.write_config(&config);
    let _hub_daemon = hub.start_hub(hub_api);
    w1.write_config(&format!(
        "[worker]\napi_listen = \"127.0.0.1:{w1_api}\"\napi_token_file = {token:?}\n\
         [worker.hub]\naddr = \"127.0.0.1:{hub_api}\"\ntoken_file = {token:?}\nname = \"w1\"\n\
         heartbeat_ms = 200\nca_file = {ca:?}\n"
    ));
    let _worker = w1.start_worker();
    // Its claim and its heartbeats go over TLS; `pico hub ls` on the hub's machine too.
    let port = super::add_counter(&w1, "web");
    let t = hub_tenant_when(&hub, "web", |t| t["state"] == "running");
    assert_eq!(t["port"].as_u64(), Some(port as u64), "{t}");

    let auth = "Authorization: Bearer cluster-s3cret";
    let https = format!("https://127.0.0.1:{hub_api}");
    let cert_s = cert.display().to_string();
    let (status, body) = curl(&[
        "--cacert",
        &cert_s,
        "-H",
        auth,
        &format!("{https}/v1/tenants"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"web\""), "{body}");
    let (status, body) = curl(&[
        "-H",
        auth,
        &format!("http://127.0.0.1:{hub_api}/v1/tenants"),
    ]);
    assert_ne!(status, 200, "plain HTTP is not served: {body}");

    // The CLI from another machine: --hub https://... trusting PICO_HUB_CA.
    let other = super::pico();
    let ls = |ca: Option<&Path>| {
        let mut command = other.command(&["--json", "--hub", &https, "hub", "ls", "tenants"]);
        command.env("PICO_TOKEN", "cluster-s3cret");
        if let Some(ca) = ca {
            command.env("PICO_HUB_CA", ca);
        }
        command.output().unwrap()
    };
    let out = ls(Some(&ca));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"web\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ls(None);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("PICO_HUB_CA"),
        "{why}"
    );
    // A certificate it does not trust: refused, and said so.
    let stranger = testkit::tls::ca_signed(other.home(), "stranger");
    let out = ls(Some(&stranger.ca));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && why.contains("TLS"), "{why}");
}

/// A hub and two workers' hosts (not started), sharing one cold tier and one token.
/// The cgroup group (`picocenter/<id>`) a worker's `log` says its tenants' cgroups are in.
fn cgroup_group(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("tenants get cgroups of their own"))
        .find_map(|l| l.split(" group=").nth(1))
        .map(|g| g.trim().to_string())
        .unwrap_or_else(|| panic!("no cgroups named in the worker's log: {log}"))
}

struct Cluster {
    hub: Pico,
    /// The home path every host shows its own directory at.
    home: std::path::PathBuf,
    dns: u16,
    hub_api: u16,
    w1: Host,
    w2: Host,
    token: std::path::PathBuf,
    /// The `[cold]` section all share.
    cold_toml: String,
}

impl Cluster {
    /// Over a directory as the cold tier.
    fn new() -> Cluster {
        let hub = super::pico();
        let cold = dir_cold(&hub.home().join("cold"));
        Cluster::over(hub, cold)
    }

    /// Over the cold tier `cold_toml`.
    fn over(hub: Pico, cold_toml: String) -> Cluster {
        let base = hub.home().to_path_buf();
        let (home, token) = (base.join("home"), base.join("token"));
        std::fs::create_dir_all(&home).unwrap();
        write_token(&token);
        let (dns, hub_api) = (free_port(), free_port());
        hub.write_config(&hub_config_over(dns, hub_api, &token, &cold_toml));
        let w1 = Host::new("w1", "127.0.0.1", hub_api, &token, &cold_toml);
        let w2 = Host::new("w2", "127.0.0.2", hub_api, &token, &cold_toml);
        Cluster {
            hub,
            home,
            dns,
            hub_api,
            w1,
            w2,
            token,
            cold_toml,
        }
    }

    /// Another host of the cluster, listening on `public`.
    fn host(&self, name: &str, public: &'static str) -> Host {
        Host::new(name, public, self.hub_api, &self.token, &self.cold_toml)
    }
}

/// Starts the hub, then each host's worker: the daemons, stopped on drop.
fn start<'a>(
    hub: &'a Pico,
    hub_api: u16,
    home: &Path,
    hosts: &[&'a Host],
) -> (testkit::pico::Hub<'a>, Vec<testkit::pico::Worker<'a>>) {
    let hub_daemon = hub.start_hub(hub_api);
    let workers = hosts.iter().map(|host| host.start(home)).collect();
    (hub_daemon, workers)
}

/// Starts `pico worker run ARGS...` under `launcher` (none: directly) in a mount namespace of its
/// own where the home path `home`, the same on every host as `/var/lib/pico` is, shows
/// `pico.home`; waits for its unix socket.
fn start_in_home<'a>(
    pico: &'a Pico,
    home: &Path,
    launcher: &[&str],
    args: &[&str],
) -> testkit::pico::Worker<'a> {
    // Run as `sh -c SCRIPT sh PICO --home DIR ARGS...`.
    let script = format!(
        "mount --bind \"$3\" {home:?} && pico=$1 && shift 3 && exec \"$pico\" --home {home:?} \"$@\""
    );
    let own_mounts = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    let worker = pico.spawn_worker_via(&[launcher, &own_mounts].concat(), args);
    pico.wait_socket();
    worker
}

/// Two workers on one machine as if on two hosts: each in a mount namespace of its own where
/// the same home path (`home`) is its own directory (`pico.home`), as every host of a cluster
/// has `/var/lib/pico`; one cold tier; listening on 127.0.0.1 and 127.0.0.2.
struct Host {
    pico: Pico,
    api: u16,
    public: &'static str,
}

impl Host {
    /// A host whose cold tier is `cold_toml` (a `[cold]` section).
    fn new(name: &str, public: &'static str, hub_api: u16, token: &Path, cold_toml: &str) -> Host {
        let pico = super::pico();
        let api = free_port();
        pico.write_config(&format!(
            "[worker]\nlisten_addr = \"{public}\"\napi_listen = \"127.0.0.1:{api}\"\n\
             api_token_file = {token:?}\n\
             [worker.hub]\naddr = \"127.0.0.1:{hub_api}\"\ntoken_file = {token:?}\nname = \"{name}\"\n\
             heartbeat_ms = 200\n{cold_toml}"
        ));
        Host { pico, api, public }
    }

    /// Starts its worker with the shared home path `home` showing this host's own directory.
    fn start(&self, home: &Path) -> testkit::pico::Worker<'_> {
        let worker = start_in_home(&self.pico, home, &[], &[]);
        assert!(
            testkit::net::wait_port(self.api, Duration::from_secs(20)),
            "{}",
            self.pico.worker_log()
        );
        worker
    }

    /// What its API says it holds of `checkpoint`: (pages, held).
    fn held(&self, checkpoint: &str) -> (u64, u64) {
        let url = format!(
            "http://127.0.0.1:{}/v1/checkpoints/{checkpoint}/held",
            self.api
        );
        let (status, body) = curl(&["-H", "Authorization: Bearer cluster-s3cret", &url]);
        assert_eq!(status, 200, "{body}");
        let held: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            held["pages"].as_u64().unwrap(),
            held["held"].as_u64().unwrap(),
        )
    }

    fn get(&self, port: u16, path: &str) -> (u16, String) {
        curl(&["-m", "10", &format!("http://{}:{port}{path}", self.public)])
    }
}

#[test]
fn a_dead_workers_tenant_comes_back_on_another_and_a_worker_without_a_lease_runs_nothing() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        dns,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    let (mut hub_daemon, mut workers) = start(&hub, hub_api, &home, &[&w1, &w2]);

    // On w1: two requests, a file of its own, asleep.
    let port = super::add_counter(&w1.pico, "web");
    assert_eq!(w1.get(port, "/inc"), (200, "1".into()));
    assert_eq!(w1.get(port, "/inc"), (200, "2".into()));
    // A name and a port are one tenant's across the cluster: w2 may not add another on them.
    hub_tenant_when(&hub, "web", |t| t["state"] == "running");
    let same_port = w2
        .pico
        .fails(&super::strs(&super::counter_add_args("blog", port)));
    assert!(
        same_port.contains("is tenant web's in this cluster"),
        "{same_port}"
    );
    let same_name = w2
        .pico
        .fails(&super::strs(&super::counter_add_args("web", free_port())));
    assert!(same_name.contains("lives on worker w1"), "{same_name}");
    let cwd = w1.pico.home().join("tenants/web/cwd");
    std::fs::write(cwd.join("note.txt"), "written on w1").unwrap();
    w1.pico.ok(&["tenant", "swap-out", "web"]);
    let t = hub_tenant_when(&hub, "web", |t| t["state"] == "swapped-out");
    assert_eq!(t["worker"], "w1", "{t}");
    // What placement asks each worker: w1 holds the checkpoint's pages, w2 none.
    let checkpoint = t["checkpoint"].as_str().unwrap().to_string();
    let (w1_pages, w1_held) = w1.held(&checkpoint);
    assert!(
        w1_pages > 100 && w1_held == w1_pages,
        "{w1_held} of {w1_pages}"
    );
    assert_eq!(w2.held(&checkpoint), (w1_pages, 0));

    // w1 dies; the next query for the tenant places it on w2, which restores it.
    workers[0].kill();
    hub_tenant_when(&hub, "web", |t| t["worker_alive"] == false);
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(
        answer.contains("\tA\t127.0.0.2"),
        "{answer}\n{}",
        hub.hub_log()
    );
    assert_eq!(
        w2.get(port, "/inc"),
        (200, "3".into()),
        "{}",
        w2.pico.worker_log()
    );
    let t = hub_tenant_when(&hub, "web", |t| t["worker"] == "w2");
    let because = t["placed_because"].as_str().unwrap();
    assert!(because.contains("its worker w1 was dead"), "{because}");
    let note = w2.pico.home().join("tenants/web/cwd/note.txt");
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "written on w1");

    // w1 comes back: it gives the tenant up, which lives on w2 now.
    let _w1_again = w1.start(&home);
    let started = Instant::now();
    while w1
        .pico
        .json(&["tenant", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "web")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "w1 kept the tenant: {}",
            w1.pico.worker_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(w1.pico.worker_log().contains("tenant released"));
    assert_eq!(w2.get(port, "/inc"), (200, "4".into()));

    // The hub goes away: once its lease runs out, w2 pauses its tenants and swaps nothing.
    hub_daemon.stop();
    let started = Instant::now();
    while !w2.pico.worker_log().contains("lease ran out") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            w2.pico.worker_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = curl(&["-m", "1", &format!("http://127.0.0.2:{port}/inc")]);
    assert_eq!(status, 0, "a paused tenant does not answer");
    let refused = w2.pico.fails(&["tenant", "swap-out", "web"]);
    assert!(refused.contains("lease"), "{refused}");
    // The hub back: the lease is renewed, the tenant resumes where it was (the request that
    // timed out may have been counted when it resumed).
    let _hub_again = hub.start_hub(hub_api);
    let started = Instant::now();
    while !w2.pico.worker_log().contains("lease renewed") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            w2.pico.worker_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, count) = w2.get(port, "/inc");
    assert_eq!(status, 200);
    assert!(["5", "6"].contains(&count.as_str()), "{count}");
}

/// `pico worker drain`: a drained worker's running tenant moves running and its sleeping one
/// asleep (woken where it went, with its state, by its next client); nothing new goes to a
/// draining worker; a tenant with nowhere to go stays and is named; `undrain` lifts it. A dead
/// worker drained has its tenants placed elsewhere at once, from their last checkpoints.
#[test]
fn a_drained_workers_tenants_move_to_the_others_and_nothing_new_goes_to_it() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    let (_hub_daemon, mut daemons) = start(&hub, hub_api, &home, &[&w1, &w2]);
    let web = super::add_counter(&w1.pico, "web");
    let blog = super::add_counter(&w1.pico, "blog");
    assert_eq!(w1.get(web, "/inc"), (200, "1".into()));
    assert_eq!(w1.get(blog, "/inc"), (200, "1".into()));
    w1.pico.ok(&["tenant", "swap-out", "blog"]);
    hub_tenant_when(&hub, "blog", |t| t["state"] == "swapped-out");
    hub_tenant_when(&hub, "web", |t| t["state"] == "running");

    // w2 drained first (it has nothing): w1's tenants have nowhere to go, and stay, named.
    let empty = w2.pico.ok(&["worker", "drain", "w2"]);
    assert!(
        empty.contains("w2 drained: no tenant left on it"),
        "{empty}"
    );
    let out = w1.pico.run(&["worker", "drain", "w1"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("web: stays on w1: no other live worker that is not draining"),
        "{stdout}"
    );
    assert!(
        stderr.contains("2 of 2 tenant(s) could not move and stay on it: blog, web"),
        "{stderr}"
    );
    // Draining workers take nothing: no move to one, no new tenant on one.
    let refused = w1.pico.fails(&["tenant", "move", "web", "--to", "w2"]);
    assert!(refused.contains("w2 is draining"), "{refused}");
    let new = super::counter_add_args("new", free_port());
    let refused = w1.pico.fails(&super::strs(&new));
    assert!(refused.contains("worker w1 is draining"), "{refused}");
    let workers = hub.json(&["hub", "ls", "workers"]);
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["draining"] == true),
        "{workers}"
    );
    let listing = hub.ok(&["hub", "ls", "workers"]);
    assert!(listing.contains("DRAINING"), "{listing}");
    assert_eq!(w1.get(web, "/inc"), (200, "2".into()), "it stayed, running");

    // w2 undrained: w1's drain moves both there.
    w2.pico.ok(&["worker", "undrain", "w2"]);
    let text = w1.pico.ok(&["worker", "drain", "w1"]);
    assert!(
        text.contains("blog: moved to w2 asleep (no restore"),
        "{text}\n{}",
        hub.hub_log()
    );
    assert!(text.contains("web: moved to w2, running ("), "{text}");
    assert!(text.contains("w1 drained: no tenant left on it"), "{text}");
    // web runs on w2 with its state; blog sleeps there until its client wakes it.
    let t = hub_tenant_when(&hub, "blog", |t| {
        t["worker"] == "w2" && t["state"] == "swapped-out"
    });
    let because = t["placed_because"].as_str().unwrap();
    assert!(because.contains("its worker w1 was drained"), "{because}");
    assert_eq!(
        w2.pico.json(&["tenant", "status", "blog"])["state"],
        "swapped-out"
    );
    assert_eq!(w2.get(web, "/inc"), (200, "3".into()));
    assert_eq!(
        w2.get(blog, "/inc"),
        (200, "2".into()),
        "{}",
        w2.pico.worker_log()
    );
    let on_w1 = w1.pico.json(&["tenant", "ls"]);
    assert!(on_w1.as_array().unwrap().is_empty(), "{on_w1}");
    let workers = hub.json(&["hub", "ls", "workers"]);
    let w1_view = &workers[0];
    assert_eq!(
        (
            w1_view["name"].as_str(),
            w1_view["draining"].as_bool(),
            w1_view["tenants"].as_u64()
        ),
        (Some("w1"), Some(true), Some(0)),
        "{workers}"
    );

    // w2 dies, and is drained dead: both go back to w1, undrained, asleep, from the checkpoints
    // the hub recorded (the move's for web, the first for blog: later requests are lost).
    w1.pico.ok(&["worker", "undrain", "w1"]);
    daemons[1].kill();
    hub_tenant_when(&hub, "web", |t| t["worker_alive"] == false);
    let text = w1.pico.ok(&["worker", "drain", "w2"]);
    assert!(text.contains("blog: moved to w1 asleep"), "{text}");
    assert!(text.contains("web: moved to w1 asleep"), "{text}");
    let t = hub_tenant_when(&hub, "web", |t| t["worker"] == "w1");
    let because = t["placed_because"].as_str().unwrap();
    assert!(because.contains("its worker w2 was dead"), "{because}");
    assert_eq!(w1.get(web, "/inc"), (200, "3".into()));
    assert_eq!(w1.get(blog, "/inc"), (200, "2".into()));
}

#[test]
fn a_busy_tenant_checkpointed_while_running_fails_over_with_its_recent_state() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        dns,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    let (_hub_daemon, mut workers) = start(&hub, hub_api, &home, &[&w1, &w2]);

    // Busy on w1, never asleep: checkpointed every second it has work, left running.
    let port = free_port();
    let mut args = super::counter_add_args("web", port);
    args.splice(3..3, ["--checkpoint-every".to_string(), "1s".to_string()]);
    w1.pico.ok(&super::strs(&args));
    for n in 1..=3 {
        assert_eq!(w1.get(port, "/inc"), (200, n.to_string()));
    }
    // Until its newest checkpoint holds all three (no newer one comes), as the hub records it.
    let mut last = serde_json::Value::Null;
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let status = w1.pico.json(&["tenant", "status", "web"]);
        assert_eq!(status["state"], "running", "{status}");
        let now = status["checkpoint"].clone();
        if !now.is_null() && now == last {
            let on_hub = hub_tenant_when(&hub, "web", |t| t["checkpoint"] == now);
            assert_eq!(on_hub["worker"], "w1");
            break;
        }
        last = now;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            w1.pico.worker_log()
        );
    }
    assert!(w1.pico.worker_log().contains("checkpointed while running"));
    let pid = w1.pico.json(&["tenant", "status", "web"])["pid"]
        .as_u64()
        .unwrap();

    // Its host dies (the worker and the tenant with it): w2 brings back what it had done.
    workers[0].kill();
    // SAFETY: kill(2) of the tenant's pid 1 (its PID namespace goes with it).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    hub_tenant_when(&hub, "web", |t| t["worker_alive"] == false);
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(
        answer.contains("\tA\t127.0.0.2"),
        "{answer}\n{}",
        hub.hub_log()
    );
    assert_eq!(
        w2.get(port, "/inc"),
        (200, "4".into()),
        "{}",
        w2.pico.worker_log()
    );
}

#[test]
fn an_operator_moves_a_tenant_to_another_worker() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        dns,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    let _daemons = start(&hub, hub_api, &home, &[&w1, &w2]);
    let port = super::add_counter(&w1.pico, "web");
    assert_eq!(w1.get(port, "/inc"), (200, "1".into()));
    hub_tenant_when(&hub, "web", |t| t["state"] == "running");

    // Moved by an operator on w1: checkpointed there, restored on w2, where it counts on.
    let refused = w1.pico.fails(&["tenant", "move", "web", "--to", "w9"]);
    assert!(refused.contains("no live worker w9"), "{refused}");
    let report = w1.pico.json(&["tenant", "move", "web", "--to", "w2"]);
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("w1"), Some("w2")),
        "{report}"
    );
    let downtime = report["downtime_ms"].as_u64().unwrap();
    let parts = ["swap_out_ms", "adopt_ms", "swap_in_ms"].map(|k| report[k].as_u64().unwrap());
    assert!(
        downtime >= parts.iter().sum::<u64>().saturating_sub(5),
        "{report}"
    );
    assert_eq!(
        w2.get(port, "/inc"),
        (200, "2".into()),
        "{}",
        w2.pico.worker_log()
    );
    let t = hub_tenant_when(&hub, "web", |t| t["worker"] == "w2");
    assert_eq!(t["placed_because"], "moved by an operator", "{t}");
    // Restored straight into w2's cgroup for it, not into w1's (which CRIU would make again
    // here, with w1's limits, and which no one would remove).
    let w2_log = w2.pico.worker_log();
    assert!(
        !w2_log.contains("the tenant is not in its cgroup"),
        "{w2_log}"
    );
    let w1_group = cgroup_group(&w1.pico.worker_log());
    for hierarchy in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup",
    ] {
        let left = Path::new(hierarchy).join(&w1_group).join("web");
        assert!(!left.exists(), "{} is left", left.display());
    }
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(answer.contains("\tA\t127.0.0.2"), "{answer}");
    let on_w1 = w1.pico.json(&["tenant", "ls"]);
    assert!(
        on_w1.as_array().unwrap().is_empty(),
        "w1 gave it up: {on_w1}"
    );
    // w2 held nothing of it: its pages came from w1's local tier (the peer), not the cold tier.
    let bytes = sources(&report);
    assert!(bytes.peer > bytes.checkpoint / 2, "{report}");
    assert!(bytes.cold_read * 10 < bytes.checkpoint, "{report}");

    // And back to w1, which holds most of its pages still: read there, the rest from w2. A
    // client asks w1 all along: its connection, held once w1 adopted the tenant, wakes it there
    // (before the hub's swap-in, most often), and the move takes that wake-up as its own.
    let url = format!("http://127.0.0.1:{port}/inc");
    let client = std::thread::spawn(move || {
        let started = Instant::now();
        loop {
            match curl(&["-m", "10", &url]) {
                (200, body) => return body,
                _ if started.elapsed() > Duration::from_secs(30) => return "no answer".into(),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let back = w2.pico.json(&["tenant", "move", "web", "--to", "w1"]);
    assert_eq!(client.join().unwrap(), "3", "{back}");
    assert_eq!(
        w1.get(port, "/inc"),
        (200, "4".into()),
        "{}",
        w1.pico.worker_log()
    );
    let bytes = sources(&back);
    assert!(bytes.held > bytes.checkpoint / 2, "{back}");
    assert!(bytes.cold_read * 10 < bytes.checkpoint, "{back}");
    let text = w1.pico.ok(&["tenant", "move", "web", "--to", "w2"]);
    assert!(text.contains("from w1 (peer)"), "{text}");
}

#[test]
fn a_moved_tenant_keeps_its_disk_quota_and_its_files() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    let _daemons = start(&hub, hub_api, &home, &[&w1, &w2]);
    let port = free_port();
    let args = super::counter_add_args_with("web", port, &["--disk-quota", "16M"]);
    w1.pico.ok(&strs(&args));
    assert_eq!(w1.get(port, "/write?name=a&kb=4096"), (200, "wrote".into()));
    assert_eq!(w1.get(port, "/inc"), (200, "1".into()));
    hub_tenant_when(&hub, "web", |t| t["state"] == "running");

    w1.pico.ok(&["tenant", "move", "web", "--to", "w2"]);
    // On w2: its count, its file, and a filesystem of the same size, full past it.
    assert_eq!(
        w2.get(port, "/inc"),
        (200, "2".into()),
        "{}",
        w2.pico.worker_log()
    );
    assert_eq!(w2.get(port, "/size?name=a"), (200, (4 << 20).to_string()));
    assert_eq!(
        w2.get(port, "/write?name=b&kb=20480"),
        (200, "ENOSPC".into())
    );
    let status = w2.pico.json(&["tenant", "status", "web"]);
    assert_eq!(status["disk_quota"], 16 << 20, "{status}");
    // w1 gave it up, its filesystem with it.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let old = w1.pico.home().join("tenants/web/cwd");
    assert!(
        !mounts.contains(&format!(" {} ", old.display())),
        "{mounts}"
    );
}

#[test]
fn a_move_to_a_worker_whose_system_files_differ_fails_naming_the_file_and_the_worker() {
    let _serial = testkit::criu_lock();
    let Cluster {
        hub,
        home,
        hub_api,
        w1,
        w2,
        ..
    } = Cluster::new();
    // The tenant's interpreter is at a path every host has (under the shared home path); w2's
    // copy differs by one byte at its end.
    let python = std::fs::read("/usr/bin/python3").unwrap();
    for (host, extra) in [(&w1, 0), (&w2, 1)] {
        use std::os::unix::fs::PermissionsExt;
        let bin = host.pico.home().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let copy = bin.join("python3");
        std::fs::write(&copy, [python.as_slice(), &vec![0; extra]].concat()).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _daemons = start(&hub, hub_api, &home, &[&w1, &w2]);
    let port = free_port().to_string();
    let interpreter = home.join("bin/python3").display().to_string();
    let app = super::counter_app();
    w1.pico.ok(&[
        "tenant",
        "add",
        "web",
        "--port",
        &port,
        "--idle-timeout",
        "0",
        "--no-sandbox",
        "--",
        &interpreter,
        &app,
        &port,
    ]);
    let port: u16 = port.parse().unwrap();
    assert_eq!(w1.get(port, "/inc"), (200, "1".into()));
    hub_tenant_when(&hub, "web", |t| t["state"] == "running");

    let failed = w1.pico.fails(&["tenant", "move", "web", "--to", "w2"]);
    assert!(
        failed.contains(&format!("on worker w2: {interpreter} is not the file")),
        "{failed}"
    );
    assert!(failed.contains("bad size"), "{failed}");
    assert!(failed.contains("it stays on w1"), "{failed}");
    // Nothing lost: it wakes on w1 with its state, and the hub places it there.
    assert_eq!(
        w1.get(port, "/inc"),
        (200, "2".into()),
        "{}",
        w1.pico.worker_log()
    );
    hub_tenant_when(&hub, "web", |t| t["worker"] == "w1");
    let on_w2 = w2.pico.json(&["tenant", "ls"]);
    assert!(on_w2.as_array().unwrap().is_empty(), "{on_w2}");
}

/// A move report's bytes of pages by source, which add up to the checkpoint's.
struct Sources {
    checkpoint: u64,
    held: u64,
    peer: u64,
    cold: u64,
    /// All the cold tier sent, as stored.
    cold_read: u64,
}

fn sources(report: &serde_json::Value) -> Sources {
    let b = &report["bytes"];
    let get = |k: &str| {
        b[k].as_u64()
            .unwrap_or_else(|| panic!("no bytes.{k}: {report}"))
    };
    let sources = Sources {
        checkpoint: get("checkpoint"),
        held: get("held"),
        peer: get("peer"),
        cold: get("cold"),
        cold_read: get("cold_read"),
    };
    assert!(sources.checkpoint > 0, "{report}");
    assert!(
        sources.peer + sources.cold <= sources.checkpoint,
        "{report}"
    );
    assert_eq!(
        sources.held + sources.peer + sources.cold,
        sources.checkpoint,
        "{report}"
    );
    sources
}

#[test]
fn a_dead_workers_tenant_is_placed_where_its_pages_are_cached() {
    let _serial = testkit::criu_lock();
    let cluster = Cluster::new();
    let (hub, home, dns) = (&cluster.hub, &cluster.home, cluster.dns);
    let w3 = cluster.host("w3", "127.0.0.3");
    let (w1, w2) = (&cluster.w1, &cluster.w2);
    let (_hub_daemon, mut workers) = start(hub, cluster.hub_api, home, &[w1, w2, &w3]);

    // Born on w3, which keeps its pages in its local tier; moved to w1, asleep there.
    let port = super::add_counter(&w3.pico, "web");
    assert_eq!(w3.get(port, "/inc"), (200, "1".into()));
    hub_tenant_when(hub, "web", |t| t["state"] == "running");
    w3.pico.ok(&["tenant", "move", "web", "--to", "w1"]);
    assert_eq!(w1.get(port, "/inc"), (200, "2".into()));
    w1.pico.ok(&["tenant", "swap-out", "web"]);
    let checkpoint = w1.pico.json(&["tenant", "status", "web"])["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    hub_tenant_when(hub, "web", |t| {
        t["checkpoint"] == checkpoint.as_str() && t["worker"] == "w1"
    });
    let (pages, held_by_w3) = w3.held(&checkpoint);
    assert!(
        held_by_w3 * 2 > pages,
        "w3 holds most of it: {held_by_w3} of {pages}"
    );
    assert_eq!(w2.held(&checkpoint).1, 0);

    // w1 dies: not w1 (its last host), not by free memory: w3, which caches its pages.
    workers[0].kill();
    hub_tenant_when(hub, "web", |t| t["worker_alive"] == false);
    let answer = dig(dns, &[&format!("web.{ZONE}"), "A"]);
    assert!(
        answer.contains("\tA\t127.0.0.3"),
        "{answer}\n{}",
        hub.hub_log()
    );
    let t = hub_tenant_when(hub, "web", |t| t["worker"] == "w3");
    let because = t["placed_because"].as_str().unwrap();
    assert!(because.contains("w3 holds"), "{because}");
    assert_eq!(w3.get(port, "/inc"), (200, "3".into()));

    // The killed w1's cgroup goes with its home: named in its tenants directory, as the test
    // kit could not derive it (w1 saw that directory at the shared path, and is named).
    let w1_group = cgroup_group(&w1.pico.worker_log());
    drop((_hub_daemon, workers));
    drop(cluster);
    for hierarchy in [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup",
    ] {
        let left = Path::new(hierarchy).join(&w1_group);
        assert!(!left.exists(), "{} is left", left.display());
    }
}

#[test]
fn a_cluster_is_set_up_from_flags_with_the_token_in_pico_token() {
    let _serial = testkit::criu_lock();
    let hub = super::pico();
    let w1 = super::pico();
    let (dns, hub_api) = (free_port(), free_port());
    let cold = hub.home().join("cold");
    hub.write_config(&format!("[cold]\nkind = \"dir\"\npath = {cold:?}\n"));
    let token = [("PICO_TOKEN", "from-the-environment")];
    let listen = format!("127.0.0.1:{hub_api}");
    let dns_listen = format!("127.0.0.1:{dns}");
    let flags = [
        "--listen",
        &listen,
        "--dns",
        &dns_listen,
        "--zone",
        "flags.test",
    ];
    let _hub_daemon = hub.start_hub_with(hub_api, &flags, &token);
    let api = free_port();
    w1.write_config(&format!(
        "[worker]\napi_listen = \"127.0.0.1:{api}\"\n[worker.hub]\naddr = \"127.0.0.1:1\"\nname = \"w1\"\n"
    ));
    let hub_url = format!("http://127.0.0.1:{hub_api}");
    let _worker = w1.start_worker_with(&["--hub", &hub_url, "--advertise", "127.0.0.1"], &token);
    let port = super::add_counter(&w1, "web");

    let started = Instant::now();
    loop {
        let out = hub
            .command(&["--json", "--hub", &hub_url, "hub", "ls", "tenants"])
            .envs(token)
            .output()
            .unwrap();
        let tenants: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if tenants[0]["name"] == "web" && tenants[0]["port"] == port {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{tenants} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            hub.hub_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = dig(dns, &["web.flags.test", "A"]);
    assert!(answer.contains("\tA\t127.0.0.1"), "{answer}");
    // A tenant added through the hub, from a machine without a worker: the hub places it.
    let port2 = free_port();
    let mut add = vec!["--json".to_string(), "--hub".into(), hub_url.clone()];
    add.extend(super::counter_add_args("blog", port2));
    let out = hub
        .command(&super::strs(&add))
        .envs(token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http_get(port2, "/inc").unwrap(), "1");
    let out = hub
        .command(&["--json", "--hub", &hub_url, "tenant", "ls"])
        .envs(token)
        .output()
        .unwrap();
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blog = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blog")
        .cloned();
    let because = blog.as_ref().map(|t| t["placed_because"].to_string());
    assert!(
        because
            .as_deref()
            .is_some_and(|b| b.contains("placed when added: w1 has the most free memory")),
        "{all}"
    );
    let without = hub.fails(&["--hub", &hub_url, "hub", "ls", "tenants"]);
    assert!(without.contains("PICO_TOKEN"), "{without}");
}

/// The zone of the multi-host guide.
const GUIDE_ZONE: &str = "pico.example";

/// The multi-host guide (`docs/multi-host.md`) followed on separate hosts, each a network
/// namespace on a private LAN with `/etc/pico` and `/var/lib/pico` of its own: its marked steps
/// run as written (the test only copies files between hosts and shortens the clocks, where the
/// guide says so). A hub over TLS, three workers and a fourth added later, three Garage nodes
/// (replication factor 3); the client's `dig`, `curl` and `pico --hub https://...` on a host of
/// their own. A tenant added through the hub is woken by DNS; a worker is drained (its running
/// tenant moves running, its sleeping one asleep, both answer elsewhere with their state);
/// another is upgraded in place (SIGUSR2) while a client queries its tenant, refused nothing;
/// with a Garage node down, a killed worker's tenant comes back elsewhere from the cold tier.
#[test]
fn a_cluster_of_hosts_in_network_namespaces_set_up_by_the_guide_drains_upgrades_and_fails_over() {
    let _serial = testkit::criu_lock();
    let guide = Guide::load(&testkit::repo_root().join("docs/multi-host.md"), "env");
    let mut lan = Lan::new();
    let hub_net = lan.host("hub");
    let worker_nets: Vec<NetHost> = (1..=4).map(|k| lan.host(&format!("w{k}"))).collect();
    let stores: Vec<NetHost> = (1..=3).map(|k| lan.host(&format!("g{k}"))).collect();
    let client = lan.host("client");
    let garage = testkit::garage::Garage::start_cluster_on(&stores);

    // The machines: the paths the guide names are each one's own.
    let operator = super::pico();
    let shared = operator.home().join("shared");
    let hub_addr = hub_net.addr.to_string();
    let hub = GuideHost::new(hub_net, super::pico(), &shared, &[("HUB_ADDR", &hub_addr)]);
    let workers: Vec<GuideHost> = worker_nets
        .into_iter()
        .enumerate()
        .map(|(k, net)| {
            let (name, addr) = (format!("w{}", k + 1), net.addr.to_string());
            let vars = [
                ("HUB_ADDR", hub_addr.as_str()),
                ("WORKER_NAME", &name),
                ("WORKER_ADDR", &addr),
            ];
            GuideHost::new(net, super::pico(), &shared, &vars)
        })
        .collect();

    // TLS and the token on the hub; the CA, the token and the cold tier's section copied to
    // every worker (the guide's scp).
    hub.run(&guide, "pki");
    std::fs::write(hub.etc().join("cold.toml"), &garage.cold_toml).unwrap();
    for worker in &workers {
        for file in ["ca.pem", "cluster-token", "cold.toml"] {
            std::fs::copy(hub.etc().join(file), worker.etc().join(file)).unwrap();
        }
    }
    hub.run(&guide, "hub-config");
    shorten(
        &hub.etc().join("pico.toml"),
        "[hub]\n",
        "dead_after_ms = 3000\nlease_ms = 2000\nwake_wait_ms = 3000\n",
    );
    let _hub_daemon = hub
        .pico
        .hub_started(&mut hub.daemon(&guide, "hub-run"), || {
            hub.net.is_listening(7071)
        });
    let mut daemons: Vec<testkit::pico::Worker> = workers[..3]
        .iter()
        .map(|worker| start_guide_worker(&guide, worker))
        .collect();
    listed_alive(&guide, &hub, &["w1", "w2", "w3"]);

    // The operator's machine: the token and the CA, the hub by its URL.
    let hub_url = format!("https://{hub_addr}:7071");
    let token = std::fs::read_to_string(hub.etc().join("cluster-token")).unwrap();
    let client_env = [
        ("PICO_TOKEN", token.trim().to_string()),
        (
            "PICO_HUB_CA",
            hub.etc().join("ca.pem").display().to_string(),
        ),
    ];
    let tenants = || {
        let out = client
            .wrap(
                operator
                    .command(&["--json", "--hub", &hub_url, "hub", "ls", "tenants"])
                    .envs(client_env.clone()),
            )
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let resolve = |name: &str| {
        let answer = client.dig(hub.net.addr, 53, &[&format!("{name}.{GUIDE_ZONE}"), "A"]);
        assert!(answer.contains("status: NOERROR"), "{answer}");
        assert!(!answer.contains("WARNING"), "{answer}");
        let (_, addr) = answer
            .lines()
            .find(|l| l.starts_with(&format!("{name}.{GUIDE_ZONE}.")))
            .and_then(|l| l.rsplit_once('\t'))
            .unwrap_or_else(|| panic!("no address for {name}: {answer}\n{}", hub.pico.hub_log()));
        addr.parse::<std::net::Ipv4Addr>().unwrap()
    };
    let get = |addr: std::net::Ipv4Addr, port: u16, path: &str| {
        client.curl(&["-m", "10", &format!("http://{addr}:{port}{path}")])
    };
    let worker_at = |addr: std::net::Ipv4Addr| {
        workers
            .iter()
            .position(|w| w.net.addr == addr)
            .unwrap_or_else(|| panic!("no worker at {addr}"))
    };

    // Added through the hub from the client's host: the hub places it on a worker.
    let mut add = vec!["--json".to_string(), "--hub".into(), hub_url.clone()];
    add.extend(super::counter_add_args("web", 8080));
    let out = client
        .wrap(operator.command(&strs(&add)).envs(client_env.clone()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub_tenant_listed(&hub.pico, &tenants, "web", |t| t["state"] == "running");
    let addr = resolve("web");
    let first = worker_at(addr);
    assert_eq!(get(addr, 8080, "/inc"), (200, "1".into()));

    // Swapped out, revived by the DNS query alone, then answers curl with its state.
    workers[first].pico.ok(&["tenant", "swap-out", "web"]);
    hub_tenant_listed(&hub.pico, &tenants, "web", |t| t["state"] == "swapped-out");
    assert_eq!(resolve("web"), addr);
    hub_tenant_listed(&hub.pico, &tenants, "web", |t| t["state"] == "running");
    assert_eq!(
        get(addr, 8080, "/inc"),
        (200, "2".into()),
        "{}",
        workers[first].pico.worker_log()
    );

    // A fourth worker, added as the guide says: it joins.
    daemons.push(start_guide_worker(&guide, &workers[3]));
    listed_alive(&guide, &hub, &["w1", "w2", "w3", "w4"]);

    // Beside web on its worker, a sleeping tenant added there; then that worker is drained.
    workers[first]
        .pico
        .ok(&strs(&super::counter_add_args("blog", 8081)));
    assert_eq!(get(addr, 8081, "/inc"), (200, "1".into()));
    workers[first].pico.ok(&["tenant", "swap-out", "blog"]);
    hub_tenant_listed(&hub.pico, &tenants, "blog", |t| t["state"] == "swapped-out");
    let drained = workers[first].run(&guide, "drain");
    let name = format!("w{}", first + 1);
    assert!(drained.contains("blog: moved to w"), "{drained}");
    assert!(drained.contains(" asleep (no restore"), "{drained}");
    assert!(drained.contains("web: moved to w"), "{drained}");
    assert!(drained.contains(", running ("), "{drained}");
    assert!(
        drained.contains(&format!("{name} drained: no tenant left on it")),
        "{drained}"
    );
    // Both answer from their new workers with their state; nothing is left on the drained one.
    let web_addr = resolve("web");
    assert_ne!(web_addr, addr);
    assert_eq!(get(web_addr, 8080, "/inc"), (200, "3".into()));
    let blog_addr = resolve("blog");
    assert_ne!(blog_addr, addr);
    assert_eq!(
        get(blog_addr, 8081, "/inc"),
        (200, "2".into()),
        "{}",
        workers[worker_at(blog_addr)].pico.worker_log()
    );
    let on_drained = workers[first].pico.json(&["tenant", "ls"]);
    assert!(on_drained.as_array().unwrap().is_empty(), "{on_drained}");
    let listing = hub.run(&guide, "hub-ls");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&format!("{name} ")) && l.contains(" yes    yes ")),
        "alive and draining: {listing}"
    );

    // web's worker upgraded in place (SIGUSR2) while a client queries web all along.
    let second = worker_at(web_addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let querying = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client.curl(&["-m", "10", &format!("http://{web_addr}:8080/")]) {
                    (200, _) => answered += 1,
                    other => failed.push(other),
                }
            }
            (answered, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    workers[second].run(&guide, "reexec");
    let started = Instant::now();
    while workers[second]
        .pico
        .worker_log()
        .matches("worker ready")
        .count()
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no second image:\n{}",
            workers[second].pico.worker_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (answered, failed) = querying.join().unwrap();
    assert!(failed.is_empty(), "refused or failed: {failed:?}");
    assert!(answered > 5, "{answered} answers");
    assert!(!daemons[second].exited_within(Duration::ZERO));
    assert_eq!(get(web_addr, 8080, "/inc"), (200, "4".into()));

    // The drained worker takes tenants again.
    workers[first].run(&guide, "undrain");
    let listing = hub.run(&guide, "hub-ls");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&format!("{name} ")) && l.contains(" yes    -  ")),
        "{listing}"
    );

    // One Garage node down: checkpoints are still written and read (a quorum of two).
    garage.stop_node(3);
    workers[second].pico.ok(&["tenant", "swap-out", "web"]);
    hub_tenant_listed(&hub.pico, &tenants, "web", |t| t["state"] == "swapped-out");

    // kill -9 of its worker: the next query places it on another, from the cold tier alone.
    daemons[second].kill();
    hub_tenant_listed(&hub.pico, &tenants, "web", |t| t["worker_alive"] == false);
    let moved = resolve("web");
    assert_ne!(moved, web_addr, "{}", hub.pico.hub_log());
    worker_at(moved);
    assert_eq!(
        get(moved, 8080, "/inc"),
        (200, "5".into()),
        "{}",
        hub.pico.hub_log()
    );
    assert!(
        guide.untaken().is_empty(),
        "steps not run: {:?}",
        guide.untaken()
    );
}

/// A worker set up and started by the guide's steps on `worker`, once its API listens (the
/// test adds `heartbeat_ms = 200` to `[worker.hub]`, for the hub's shortened clocks).
fn start_guide_worker<'a>(guide: &Guide, worker: &'a GuideHost) -> testkit::pico::Worker<'a> {
    worker.run(guide, "check");
    worker.run(guide, "worker-config");
    shorten(
        &worker.etc().join("pico.toml"),
        "[worker.hub]\n",
        "heartbeat_ms = 200\n",
    );
    let daemon = worker
        .pico
        .spawn_worker_command(&mut worker.daemon(guide, "worker-run"));
    assert!(
        worker.net.wait_listening(7070, Duration::from_secs(20)),
        "{}",
        worker.pico.worker_log()
    );
    daemon
}

/// Adds `lines` at the top of `section` of the configuration `file` (the test's shorter clocks).
fn shorten(file: &Path, section: &str, lines: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(section), "no {section} in {text}");
    std::fs::write(
        file,
        text.replacen(section, &format!("{section}{lines}"), 1),
    )
    .unwrap();
}

/// Waits (at most 20 s) until the guide's `hub-ls` on the hub lists every worker of `names` alive.
fn listed_alive(guide: &Guide, hub: &GuideHost, names: &[&str]) {
    let started = Instant::now();
    loop {
        let listing = hub.run(guide, "hub-ls");
        let alive = |name: &&str| {
            listing.lines().any(|l| {
                let mut columns = l.split_whitespace();
                columns.next() == Some(name) && columns.next() == Some("yes")
            })
        };
        if names.iter().all(alive) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{listing}\n{}",
            hub.pico.hub_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
