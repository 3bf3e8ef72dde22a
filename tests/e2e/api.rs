//! The worker's HTTP API, with real clients (curl): the bearer token on TCP, the unix socket's
//! open door, the Prometheus scrape after real swaps, and a tenant's log.

use std::time::Duration;

use testkit::net::{curl, free_port, http_get, wait_port};

#[test]
fn the_tcp_api_refuses_a_missing_or_wrong_token() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let port = free_port();
    p.write_config(&format!("[worker]\napi_listen = \"127.0.0.1:{port}\"\n"));
    let err = p.fails(&["worker", "run"]);
    assert!(err.contains("needs api_token_file"), "{err}");

    let token_file = p.home().join("api-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    p.write_config(&format!(
        "[worker]\napi_listen = \"127.0.0.1:{port}\"\napi_token_file = {token_file:?}\n"
    ));
    let _worker = p.start_worker();
    assert!(
        wait_port(port, Duration::from_secs(10)),
        "{}",
        p.worker_log()
    );
    let url = format!("http://127.0.0.1:{port}/v1/tenants");

    let (status, body) = curl(&[&url]);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    let (status, body) = curl(&["-H", "Authorization: Bearer s3cret", &url]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl(&["-H", "Authorization: Bearer s3cret-token", &url]);
    assert_eq!((status, body.as_str()), (200, "[]"));

    let socket = p.socket();
    let unix = ["--unix-socket", socket.to_str().unwrap()];
    let (status, body) = curl(&[unix[0], unix[1], "http://localhost/v1/tenants"]);
    assert_eq!(
        (status, body.as_str()),
        (200, "[]"),
        "no token on the unix socket"
    );
    let (status, body) = curl(&[unix[0], unix[1], "http://localhost/v1/tenants/ghost"]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no tenant named \\\"ghost\\\""), "{body}");
}

#[test]
fn metrics_count_swaps() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let _worker = p.start_worker();
    let port = super::add_counter(&p, "counter");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");
    p.ok(&["tenant", "swap-out", "counter"]);
    p.ok(&["tenant", "swap-in", "counter"]);
    assert_eq!(http_get(port, "/inc").unwrap(), "2");

    let socket = p.socket();
    let (status, text) = curl(&[
        "--unix-socket",
        socket.to_str().unwrap(),
        "http://localhost/metrics",
    ]);
    assert_eq!(status, 200, "{text}");
    for line in [
        "pico_swap_outs_total 1",
        "pico_swap_ins_total 1",
        "pico_swap_failures_total{op=\"swap-out\"} 0",
        "pico_swap_out_seconds_count 1",
        "pico_swap_in_seconds_count 1",
        "pico_tenants{state=\"running\"} 1",
        "pico_tenants_busy 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // The swap-out wrote packs: the store's counters are there.
    let puts = text
        .lines()
        .find_map(|l| l.strip_prefix("pico_store_cold_puts_total "))
        .unwrap();
    assert!(puts.parse::<u64>().unwrap() > 0, "{text}");
}

#[test]
fn tenant_logs_prints_the_end_of_its_log() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let _worker = p.start_worker();
    let port = free_port().to_string();
    p.ok(&[
        "tenant",
        "add",
        "web",
        "--port",
        &port,
        "--",
        "python3",
        "-u",
        "-m",
        "http.server",
        &port,
        "--bind",
        "127.0.0.1",
    ]);
    http_get(port.parse().unwrap(), "/").unwrap();
    let all = p.ok(&["tenant", "logs", "web"]);
    assert!(all.contains("Serving HTTP on"), "{all}");
    let last = p.ok(&["tenant", "logs", "web", "--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    assert!(last.contains("\"GET / HTTP/1.0\" 200"), "{last}");
    let err = p.fails(&["tenant", "logs", "ghost"]);
    assert!(err.contains("no tenant named \"ghost\""), "{err}");
}
