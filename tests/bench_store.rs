#![allow(clippy::unwrap_used)]
//! `pico bench store` end to end on a small input: a 4 MiB synthetic image and a real CRIU
//! checkpoint of the counter app, ingested, re-ingested and read back from every tier including
//! a Garage the benchmark starts. Checks the JSON shape and that every figure is there and
//! positive; performance is not asserted. Needs root, CRIU >= 4.2, python3, Garage, b3sum and lz4
//! (deploy/setup.sh installs them).

use testkit::pico::Pico;

fn positive(v: &serde_json::Value, path: &str) -> f64 {
    let mut x = v;
    for key in path.split('.') {
        x = &x[key];
    }
    let n = x
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is missing or not a number: {v}"));
    assert!(n > 0.0, "{path} = {n} is not positive");
    n
}

#[test]
fn bench_store_small_input_reports_every_figure() {
    testkit::require_root();
    let _serial = testkit::criu_lock();
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let out = p.home().join("out");
    let r = p.json(&[
        "bench",
        "store",
        "--apps",
        "counter",
        "--synthetic-mib",
        "4",
        "--runs",
        "1",
        "--delay-ms",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let inputs = r["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2, "{r}");
    let sources: Vec<&str> = inputs
        .iter()
        .map(|i| i["input"]["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["synthetic", "criu"]);
    for i in inputs {
        for f in [
            "input.logical_bytes",
            "ingest.seconds",
            "ingest.mb_s",
            "ingest.pages_new",
            "ingest.bytes_compressed",
            "ingest.bytes_uploaded",
            "reingest.seconds",
            "reingest.mb_s",
            "baseline.b3sum_s",
            "baseline.lz4_s",
            "baseline.mb_s",
            "ingest_to_baseline",
        ] {
            positive(i, f);
        }
    }
    for f in [
        "ingest.mb_s",
        "reingest.mb_s",
        "baseline.mb_s",
        "ingest_to_baseline",
        "ingest_s3.mb_s",
        "cold_gets_per_gib",
    ] {
        positive(&r, f);
    }
    // Known pages cost no compression and no pack: only the manifests are uploaded.
    let reingest = &r["reingest"];
    assert_eq!(reingest["bytes_compressed"], 0, "{reingest}");
    assert_eq!(reingest["pages_new"], 0, "{reingest}");
    assert_eq!(reingest["packs_written"], 0, "{reingest}");
    assert!(positive(&r, "reingest.bytes_uploaded") < positive(&r, "ingest.bytes_uploaded") / 10.0);
    for tier in ["hot", "local", "cold_dir", "cold_s3", "cold_s3_remote"] {
        let t = &r["reads"][tier];
        for f in ["pages", "bytes", "seconds", "mb_s"] {
            positive(t, f);
        }
        if tier.starts_with("cold") {
            positive(t, "cold_gets");
            positive(t, "cold_gets_per_gib");
        } else {
            assert_eq!(t["cold_gets"], 0, "{tier}: {t}");
        }
    }
    for file in ["results.json", "store.svg", "README.md"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("commit:") && readme.contains("b3sum"));
    let svg = std::fs::read_to_string(out.join("store.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("ingest"));
}
