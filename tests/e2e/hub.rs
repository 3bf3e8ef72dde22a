//! The hub with a real worker: the worker reports its tenants, the hub names them in DNS
//! (checked with the real `dig`), a query for a sleeping tenant wakes it, the hub's state
//! outlives it in the cold tier, and a silent worker is declared dead.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::net::{curl, dig, free_port, http_get};
use testkit::pico::Pico;

const ZONE: &str = "pico.test";

/// What `pico hub ls tenants` says of `name`, once `check` holds (at most 20 s).
fn hub_tenant_when(
    hub: &Pico,
    name: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let tenants = hub.json(&["hub", "ls", "tenants"]);
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

fn hub_config(dns: u16, api: u16, token: &Path, cold: &Path) -> String {
    format!(
        "[hub]\nzone = \"{ZONE}.\"\ndns_listen = \"127.0.0.1:{dns}\"\napi_listen = \"127.0.0.1:{api}\"\n\
         token_file = {token:?}\ndead_after_ms = 1500\nlease_ms = 1000\nwake_wait_ms = 3000\n\
         [cold]\nkind = \"dir\"\npath = {cold:?}\n"
    )
}

#[test]
fn the_hub_names_a_workers_tenants_in_dns_and_a_query_wakes_a_sleeping_one() {
    let _serial = testkit::criu_lock();
    let hub = super::pico();
    let w1 = super::pico();
    let token = hub.home().join("token");
    std::fs::write(&token, "cluster-s3cret\n").unwrap();
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
    let woken = w1.json(&["tenant", "status", "web"]);
    assert_eq!(
        woken["state"], "running",
        "woken by the query alone: {woken}"
    );
    assert!(
        hub.hub_log().contains("woken by a DNS query"),
        "{}",
        hub.hub_log()
    );
    assert_eq!(http_get(port, "/inc").unwrap(), "2");

    // The hub's API asks for its token.
    let url = format!("http://127.0.0.1:{hub_api}/v1/tenants");
    let (status, body) = curl(&[&url]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl(&["-H", "Authorization: Bearer wrong", &url]);
    assert_eq!(status, 401, "{body}");

    // Its state outlives it: a new hub reads it back from the cold tier.
    hub_daemon.stop();
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
        if workers[0]["alive"] == false {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{workers}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        hub.hub_log().contains("worker is dead"),
        "{}",
        hub.hub_log()
    );
    drop(restarted);
}
