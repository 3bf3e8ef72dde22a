//! `pico bench density` runs end to end on a tiny population (9 tenants, three of each kind,
//! short phases) and writes its report: every tenant registered and swapped out on its own,
//! and every wake-up answered with the tenant's own state. A smoke run: the figures are
//! measured by the benchmark itself, not asserted here.

use super::{bench_json, pico};

#[test]
fn bench_density_smoke() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let out = p.home().join("bench-density");
    // Pages unread for 2 s leave the worker's memory tier (checked every 4 s): gone by the
    // idle sample, 9 s after all slept and the store settled.
    let hot_ttl = p.home().join("hot-ttl.toml");
    std::fs::write(&hot_ttl, "[hot]\nttl_ms = 2000\n").unwrap();
    let json = bench_json(
        &p,
        &[
            "density",
            "--tenants",
            "9",
            "--register-rate",
            "5",
            "--idle-timeout-s",
            "3",
            "--burst-rates",
            "3",
            "--burst-s",
            "2",
            "--sustained-rates",
            "2",
            "--sustained-s",
            "3",
            "--redis-keys",
            "20",
            "--drain-limit-s",
            "60",
            "--idle-settle-s",
            "9",
            "--worker-config",
            hot_ttl.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(json["tenants"], 9);
    assert_eq!(json["idle"]["registration"]["registered"], 9, "{json}");
    assert_eq!(json["idle"]["counted"], 9, "each swapped out on its own");
    assert!(json["idle"]["baseline_in_use_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        json["idle"]["hot_idle_bytes"], 0,
        "the swap-outs' pages, unread for the memory tier's ttl, were dropped: {}",
        json["idle"]
    );
    assert!(json["lost"].as_array().unwrap().is_empty(), "{json}");
    for (phase, runs) in [("burst", 1), ("sustained", 1)] {
        let phases = json[phase].as_array().unwrap();
        assert_eq!(phases.len(), runs, "{phase}");
        for ph in phases {
            assert!(ph["wakes"].as_u64().unwrap() > 0, "{phase}: {ph}");
            assert_eq!(ph["wrong"], 0, "every wake-up found its state: {ph}");
            assert_eq!(ph["unanswered"], 0, "{ph}");
            assert!(ph["latency"]["p50_ms"].as_f64().unwrap() > 0.0);
            for s in ph["samples"].as_array().unwrap() {
                assert_eq!(s["right"], true, "{s}");
            }
        }
    }
    let sustained = &json["sustained"][0];
    assert!(sustained["cpu_s_per_cycle"].as_f64().unwrap() > 0.0);
    assert!(json["store"]["total"]["unique_bytes"].as_u64().unwrap() > 0);
    for file in ["results.json", "README.md"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
}
