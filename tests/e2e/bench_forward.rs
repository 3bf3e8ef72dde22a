//! `pico bench forward` runs end to end with tiny sizes and writes its results (a smoke run: the
//! figures are measured by the benchmark itself, not asserted here), the routed path beside the
//! default one.

use super::{bench_json, pico};

#[test]
fn bench_forward_smoke() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let out = p.home().join("bench-forward");
    let json = bench_json(
        &p,
        &[
            "forward",
            "--rounds",
            "2",
            "--requests",
            "20",
            "--warmup",
            "2",
            "--large-mib",
            "2",
            "--transfers",
            "3",
            "--compare-path",
            "routed",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    for kind in ["keep_alive", "per_connection"] {
        for side in ["direct", "forwarded"] {
            let p50 = json[kind][side]["p50_us"].as_f64().unwrap();
            assert!(p50 > 0.0, "{kind} {side}: {json}");
        }
    }
    let throughput = &json["throughput"];
    assert!(throughput["forwarded_mb_s"].as_f64().unwrap() > 0.0);
    // Each side at its best (the 90th percentile of its transfers) is no slower than its median.
    for side in ["direct", "forwarded"] {
        let (best, median) = (
            throughput[format!("{side}_best_mb_s")].as_f64().unwrap(),
            throughput[format!("{side}_mb_s")].as_f64().unwrap(),
        );
        assert!(best >= median, "{side}: {throughput}");
    }
    assert!(throughput["best_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(
        json["by_kernel"], true,
        "the kernel forwards a running tenant's port: {json}"
    );
    let routed = &json["compared"];
    assert_eq!(routed["path"], "routed", "{json}");
    assert_eq!(routed["by_kernel"], true, "routed in the kernel: {json}");
    assert!(routed["throughput"]["forwarded_mb_s"].as_f64().unwrap() > 0.0);
    for file in ["results.json", "forward.svg", "throughput.svg", "README.md"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["rounds"], 2);
    assert_eq!(results["transfers_per_round"], 3);
    let transfers = results["throughput"]["rounds_forwarded_mb_s"]
        .as_array()
        .unwrap();
    assert_eq!(transfers.len(), 6, "3 transfers in each of 2 rounds");
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("routed path (kernel)"), "{readme}");
}
