//! `pico bench dedup` end to end on the smallest corpus: real CRIU checkpoints of one tenant of
//! each kind in each layout, two generations, stored by all four methods. Needs root, CRIU >= 4.2,
//! python3, redis-server, nginx, restic, zstd (deploy/setup.sh installs them).

use testkit::pico::Pico;

#[test]
fn bench_dedup_smallest_corpus_reports_every_method_and_group() {
    testkit::require_root();
    let _serial = testkit::criu_lock();
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let out = p.home().join("out");
    let report = p.json(&[
        "bench",
        "dedup",
        "--tenants",
        "1",
        "--generations",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(report["corpus"]["checkpoints"], 12, "{report}");
    let results = report["results"].as_array().unwrap();
    // 4 methods x (all + 2 layouts + 6 layout-kind groups).
    assert_eq!(results.len(), 4 * 9);
    for layout in ["all", "default", "deterministic"] {
        for method in ["raw", "tar-zstd", "restic", "pico"] {
            let row = results
                .iter()
                .find(|r| r["method"] == method && r["layout"] == layout && r["kind"] == "all")
                .unwrap_or_else(|| panic!("no {method} {layout} row"));
            let logical = row["logical_bytes"].as_u64().unwrap();
            let stored = row["stored_bytes"].as_u64().unwrap();
            assert!(logical > 1 << 20, "{row}");
            assert!(
                stored > 0 && row["store_s"].as_f64().unwrap() > 0.0,
                "{row}"
            );
            assert!(row["restore_s"].as_f64().unwrap() > 0.0, "{row}");
            if method == "raw" {
                assert_eq!(stored, logical);
            } else {
                // Every compressing method stores well under the raw bytes of CRIU images.
                assert!(stored < logical / 2, "{row}");
            }
        }
    }
    let pico_all = results
        .iter()
        .find(|r| r["method"] == "pico" && r["layout"] == "all" && r["kind"] == "all")
        .unwrap();
    assert!(pico_all["pages"]["unique"].as_u64().unwrap() > 0);
    for file in ["dedup.json", "dedup.svg", "README.md"] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("commit:") && readme.contains("machine:") && readme.contains("date:"));
    let svg = std::fs::read_to_string(out.join("dedup.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("restic"));
}
