//! `pico report cost`: its JSON adds up (unique + apportioned shared = stored page bytes, and the
//! total is everything in the cold tier), prices come from `[prices]`, and the HTML report shows
//! exactly the JSON's numbers when Chromium renders it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use serde_json::Value;
use testkit::image::{mixed_pages, write_image_dir};
use testkit::pico::Pico;

/// A store with three tenants: `alpha` and `beta` share most pages, `gamma` shares none; alpha has
/// two generations.
fn store_with_tenants() -> Pico {
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let dir = p.home().join("in");
    let ingest = |tenant: &str, name: &str, pages: Vec<(u8, u64)>, meta: u64| {
        let d = dir.join(name);
        write_image_dir(&d, &pages, meta);
        p.ok(&["store", "ingest", "--tenant", tenant, d.to_str().unwrap()]);
    };
    let mut beta = mixed_pages(96, 1);
    beta.extend(mixed_pages(32, 2));
    ingest("alpha", "a1", mixed_pages(96, 1), 10);
    ingest("beta", "b1", beta, 20);
    let mut alpha2 = mixed_pages(96, 1);
    alpha2.extend(mixed_pages(8, 3));
    ingest("alpha", "a2", alpha2, 11);
    ingest("gamma", "c1", mixed_pages(64, 4), 30);
    p
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1048576.0)
}

#[test]
fn cost_json_adds_up_to_the_store() {
    let p = store_with_tenants();
    let r = p.json(&["report", "cost"]);
    let stats = p.json(&["store", "stats"]);
    let tenants = r["tenants"].as_array().unwrap();
    let names: Vec<&str> = tenants
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let total = &r["total"];

    // unique + apportioned shared, over all tenants, is every stored page exactly once.
    let sum: u64 = tenants
        .iter()
        .map(|t| u(t, "unique_bytes") + u(t, "shared_bytes"))
        .sum();
    assert_eq!(sum, u(total, "page_bytes"));
    assert_eq!(
        u(total, "unique_bytes") + u(total, "shared_bytes"),
        u(total, "page_bytes")
    );
    // The total is everything in the cold tier, as `store stats` sees it.
    assert_eq!(u(total, "stored_bytes"), u(&stats, "stored_bytes"));
    assert_eq!(
        u(total, "page_bytes")
            + u(total, "manifest_bytes")
            + u(total, "locality_bytes")
            + u(total, "overhead_bytes"),
        u(total, "stored_bytes")
    );
    assert_eq!(u(total, "logical_bytes"), u(&stats, "logical_bytes"));
    assert_eq!(
        u(&r["tiers"][0], "bytes"),
        u(total, "stored_bytes"),
        "{}",
        r["tiers"]
    );
    // Every manifest and pack was one PUT, all within the period.
    assert_eq!(
        u(&total["requests"], "puts"),
        u(&stats, "packs") + u(&stats, "checkpoints")
    );

    // The local tier (filled by ingest) holds each tenant's pages, apportioned like the cold tier.
    let local = r["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "local")
        .unwrap();
    let local_sum: u64 = tenants.iter().map(|t| u(t, "local_bytes")).sum();
    assert!(local_sum > 0 && local_sum <= u(local, "bytes"), "{local}");
    for t in tenants {
        assert_eq!(
            u(t, "stored_bytes"),
            u(t, "unique_bytes")
                + u(t, "shared_bytes")
                + u(t, "manifest_bytes")
                + u(t, "locality_bytes")
        );
        assert!(u(t, "shared_full_bytes") >= u(t, "shared_bytes"));
        assert!(u(t, "logical_bytes") > u(t, "stored_bytes"), "{t}");
    }
    let by = |n: &str| tenants.iter().find(|t| t["name"] == n).unwrap();
    assert!(u(by("alpha"), "shared_bytes") > 0 && u(by("beta"), "shared_bytes") > 0);
    assert_eq!(u(by("gamma"), "shared_bytes"), 0);
    assert!(u(by("gamma"), "unique_bytes") > 0);
    assert_eq!(u(by("alpha"), "checkpoints"), 2);

    // Cost at the default prices (S3 Standard), with their source.
    let prices = &r["prices"];
    assert_eq!(prices["storage_gb_month"], 0.023);
    assert!(prices["source"].as_str().unwrap().contains("S3 Standard"));
    let expect = u(total, "stored_bytes") as f64 / (1u64 << 30) as f64 * 0.023
        + u(&total["requests"], "puts") as f64 / 1000.0 * 0.005;
    let got = total["monthly_cost"].as_f64().unwrap();
    assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
}

#[test]
fn prices_come_from_pico_toml() {
    let p = store_with_tenants();
    p.write_config("[prices]\nstorage_gb_month = 1024.0\nput_per_1000 = 0.0\n");
    let r = p.json(&["report", "cost"]);
    let total = &r["total"];
    // 1024 per GiB-month is one per MiB-month.
    let expect = u(total, "stored_bytes") as f64 / 1048576.0;
    let got = total["monthly_cost"].as_f64().unwrap();
    assert!((got - expect).abs() < 1e-9, "{got} vs {expect}");
    assert_eq!(
        r["prices"]["get_per_1000"], 0.0004,
        "other keys keep defaults"
    );
}

#[test]
fn html_report_shows_the_json_numbers_in_chromium() {
    let p = store_with_tenants();
    let html = p.home().join("report.html");
    let r = p.json(&["report", "cost", "--html", html.to_str().unwrap()]);
    let text = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to load (the SVG namespace URI is a name, not a fetch).
    let loads = text.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in ["http://", "https://", "<script", "<link", "src=", "url("] {
        assert!(
            !loads.contains(needle),
            "the report must be self-contained: {needle}"
        );
    }
    assert!(text.matches("<svg").count() >= 2, "two inline charts");

    let dom = testkit::browser::dump_dom(&html);
    let check_row = |marker: &str, v: &Value, cost: f64| {
        let at = dom
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not in the rendered page"));
        let row = &dom[at..];
        let field = |f: &str| testkit::browser::field(row, f).unwrap().to_string();
        assert_eq!(field("checkpoints"), u(v, "checkpoints").to_string());
        assert_eq!(field("logical_mib"), mib(u(v, "logical_bytes")));
        assert_eq!(field("unique_mib"), mib(u(v, "unique_bytes")));
        assert_eq!(field("shared_mib"), mib(u(v, "shared_bytes")));
        assert_eq!(field("stored_mib"), mib(u(v, "stored_bytes")));
        assert_eq!(field("puts"), u(&v["requests"], "puts").to_string());
        let local = v["local_bytes"].as_u64().map_or("-".to_string(), mib);
        if v.get("local_bytes").is_some() {
            assert_eq!(field("local_mib"), local);
        }
        assert_eq!(field("monthly_cost"), format!("{cost:.6}"));
    };
    for t in r["tenants"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        check_row(
            &format!("data-tenant=\"{name}\""),
            t,
            t["monthly_cost"].as_f64().unwrap(),
        );
    }
    check_row(
        "data-tenant=\"TOTAL\"",
        &r["total"],
        r["total"]["monthly_cost"].as_f64().unwrap(),
    );
    assert_eq!(
        testkit::browser::field(&dom, "storage_gb_month"),
        Some("0.023")
    );
    let png = p.home().join("report.png");
    testkit::browser::screenshot(&html, &png, 1000, 1400);
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "screenshot is blank"
    );
}
