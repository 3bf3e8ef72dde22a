//! `pico bench dns` end to end, short: a real `pico hub run` with 50 names, our own generator
//! only (`--no-dnsperf`: this test must not depend on dnsperf being installed, and never skips),
//! one second per run. Needs no root.

use testkit::pico::Pico;

#[test]
fn bench_dns_short_run_answers_every_query_and_writes_its_report() {
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let out = p.home().join("out");
    let report = p.json(&[
        "bench",
        "dns",
        "--names",
        "50",
        "--seconds",
        "1",
        "--concurrency",
        "4",
        "--no-dnsperf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(report["names"], 50, "{report}");
    assert_eq!(report["dnsperf"]["status"], "not asked", "{report}");
    for run in ["closed_loop", "paced"] {
        let r = &report[run];
        assert!(r["qps"].as_f64().unwrap() > 0.0, "{run}: {r}");
        assert!(r["p99_us"].as_f64().unwrap() > 0.0, "{run}: {r}");
        assert!(r["p50_us"].as_f64().unwrap() <= r["p99_us"].as_f64().unwrap());
        assert_eq!(r["errors"], 0, "{run}: {r}");
    }
    // At most 4 queries in flight cannot fill a socket's buffer; the paced run's bursts may, on
    // a busy machine, drop a few (counted as timeouts, not hidden).
    assert_eq!(report["closed_loop"]["timeouts"], 0, "{report}");
    let paced = &report["paced"];
    assert!(
        paced["timeouts"].as_u64().unwrap() * 20 < paced["sent"].as_u64().unwrap(),
        "{paced}"
    );
    // The paced rate is 80% of what the closed loop reached.
    let closed = report["closed_loop"]["qps"].as_f64().unwrap();
    let target = report["paced"]["target_qps"].as_f64().unwrap();
    assert!((target - 0.8 * closed).abs() < 1.0, "{report}");
    assert_eq!(report["goal_measured_by"], "closed loop");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        json["closed_loop"]["answered"],
        report["closed_loop"]["answered"]
    );
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    for part in [
        "commit:",
        "machine:",
        "queries/s",
        "5000",
        "not run (--no-dnsperf)",
    ] {
        assert!(readme.contains(part), "README lacks {part:?}:\n{readme}");
    }
}
