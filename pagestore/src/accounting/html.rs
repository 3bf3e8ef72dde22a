//! The cost report as one self-contained HTML file: inline CSS and SVG, no scripts, no network,
//! so it can be mailed or archived and still opens. Every figure is in a cell marked with
//! `data-field`, so tests (and scrapers) can read exactly what a person sees.

use charts::{escape, BarChart, Group};

use super::report::{mib, money, CostReport, TableRow, MIB};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #ccc;padding:4px 8px}td.num{text-align:right;font-variant-numeric:tabular-nums}\
tr.total td{font-weight:bold;background:#f4f4f4}.note{color:#555;font-size:90%}";

fn cell(field: &str, text: &str) -> String {
    format!(
        "<td class=\"num\" data-field=\"{field}\">{}</td>",
        escape(text)
    )
}

fn row(r: &TableRow) -> String {
    let class = if r.is_total { "total" } else { "tenant" };
    format!(
        "<tr class=\"{class}\" data-tenant=\"{}\"><td data-field=\"name\">{}</td>{}{}{}{}{}{}{}{}</tr>\n",
        escape(r.name),
        escape(r.name),
        cell("checkpoints", &r.checkpoints.to_string()),
        cell("logical_mib", &mib(r.logical_bytes)),
        cell("unique_mib", &mib(r.unique_bytes)),
        cell("shared_mib", &mib(r.shared_bytes)),
        cell("stored_mib", &mib(r.stored_bytes)),
        cell("local_mib", &r.local_bytes.map_or_else(|| "-".to_string(), mib)),
        cell("puts", &r.puts.to_string()),
        cell("monthly_cost", &money(r.monthly_cost)),
    )
}

/// The whole page for `r`.
pub fn render(r: &CostReport) -> String {
    let currency = escape(&r.prices.currency);
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>picocenter storage cost</title><style>{STYLE}</style></head><body>\n\
         <h1>Storage cost</h1>\n<p>Generated <span data-field=\"generated_utc\">{}</span> from the \
         live store; requests over the last {} days; costs per month in {currency}.</p>\n",
        escape(&r.generated_utc),
        r.period_days
    ));
    h.push_str(
        "<table id=\"tenants\"><thead><tr><th>tenant</th><th>checkpoints</th><th>logical MiB</th>\
         <th>unique MiB</th><th>shared MiB (apportioned)</th><th>stored MiB (cold)</th>\
         <th>local tier MiB</th>\
         <th>PUTs (period)</th><th>monthly cost</th></tr></thead><tbody>\n",
    );
    for line in r.rows() {
        h.push_str(&row(&line));
    }
    h.push_str("</tbody></table>\n");
    let u = &r.total.usage;
    h.push_str(&format!(
        "<p class=\"note\">The total's shared MiB counts each shared page once; its stored MiB is \
         everything in the cold tier, including <span data-field=\"overhead_mib\">{}</span> MiB of \
         pack indexes and unreferenced pages and <span data-field=\"manifest_mib\">{}</span> MiB \
         of manifests. Deduplication: <span data-field=\"dedup_ratio\">{:.2}</span>x logical over \
         stored.</p>\n",
        mib(u.overhead_bytes),
        mib(u.manifest_bytes),
        u.logical_bytes as f64 / u.stored_bytes.max(1) as f64
    ));

    h.push_str("<h2>Tiers</h2><table id=\"tiers\"><thead><tr><th>tier</th><th>kind</th><th>objects</th><th>MiB</th></tr></thead><tbody>\n");
    for t in &r.tiers {
        h.push_str(&format!(
            "<tr data-tier=\"{}\"><td>{}</td><td>{}</td>{}{}</tr>\n",
            escape(&t.tier),
            escape(&t.tier),
            escape(&t.kind),
            cell("objects", &t.objects.to_string()),
            cell("mib", &mib(t.bytes))
        ));
    }
    h.push_str("</tbody></table>\n");

    let stored = BarChart {
        title: "Stored MiB per tenant: unique and apportioned shared".into(),
        unit: "MiB".into(),
        series: vec!["unique".into(), "shared (apportioned)".into()],
        groups: r
            .tenants
            .iter()
            .map(|t| Group {
                label: t.usage.name.clone(),
                values: vec![
                    t.usage.unique_bytes as f64 / MIB,
                    t.usage.shared_bytes as f64 / MIB,
                ],
            })
            .collect(),
    };
    let cost = BarChart {
        title: format!("Monthly cost per tenant ({})", r.prices.currency),
        unit: r.prices.currency.clone(),
        series: vec!["storage".into(), "requests".into()],
        groups: r
            .tenants
            .iter()
            .map(|t| Group {
                label: t.usage.name.clone(),
                values: vec![t.cost.storage, t.cost.requests],
            })
            .collect(),
    };
    h.push_str("<h2>Charts</h2>\n<figure id=\"chart-stored\">");
    h.push_str(&stored.render());
    h.push_str("</figure>\n<figure id=\"chart-cost\">");
    h.push_str(&cost.render());
    h.push_str("</figure>\n");

    h.push_str(&format!(
        "<h2>Prices</h2><table id=\"prices\"><tbody>\
         <tr><td>storage per GB-month</td>{}</tr>\
         <tr><td>per 1000 PUT</td>{}</tr><tr><td>per 1000 GET</td>{}</tr></tbody></table>\
         <p class=\"note\">Source: {} (set in <code>[prices]</code> of pico.toml).</p>\n<ul class=\"note\">",
        cell("storage_gb_month", &r.prices.storage_gb_month.to_string()),
        cell("put_per_1000", &r.prices.put_per_1000.to_string()),
        cell("get_per_1000", &r.prices.get_per_1000.to_string()),
        escape(&r.prices.source)
    ));
    for n in &r.notes {
        h.push_str(&format!("<li>{}</li>", escape(n)));
    }
    h.push_str("</ul>\n</body></html>\n");
    h
}
