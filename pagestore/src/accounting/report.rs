//! The cost report: an [`Accounting`] of the store priced at [`Prices`], per tenant and in total,
//! in the forms `pico report cost` shows: JSON (the serialized [`CostReport`]), a text table
//! ([`text_table`]) and a self-contained HTML page ([`super::html`]).
//!
//! Operators choose a host for its bill, and deduplication makes "what does this tenant cost"
//! non-obvious; this report answers it from the store itself. Pure: it formats what it is given
//! (the caller passes the time of generation), so it is tested without a store.

use serde::Serialize;

use super::{Accounting, Cost, Prices, TenantUsage, TierUsage, TotalUsage};

#[derive(Clone, Debug, Serialize)]
pub struct TenantCost {
    #[serde(flatten)]
    pub usage: TenantUsage,
    /// Storage of `stored_bytes` plus this period's requests, per month.
    pub monthly_cost: f64,
    pub cost: Cost,
}

#[derive(Clone, Debug, Serialize)]
pub struct TotalCost {
    #[serde(flatten)]
    pub usage: TotalUsage,
    /// Storage of everything in the cold tier plus this period's requests, per month.
    pub monthly_cost: f64,
    pub cost: Cost,
}

#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub generated_utc: String,
    pub period_days: u64,
    pub tenants: Vec<TenantCost>,
    pub total: TotalCost,
    pub tiers: Vec<TierUsage>,
    pub prices: Prices,
    pub notes: Vec<String>,
}

/// One line of the report's table: a tenant, or the total.
pub struct TableRow<'a> {
    pub name: &'a str,
    pub is_total: bool,
    pub checkpoints: u64,
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    pub shared_bytes: u64,
    pub stored_bytes: u64,
    /// A tenant's apportioned bytes in the local tier; for the total, the local tier's size.
    pub local_bytes: Option<u64>,
    pub puts: u64,
    pub monthly_cost: f64,
}

impl CostReport {
    /// The lines of the table every form shows: each tenant, then the total.
    pub fn rows(&self) -> Vec<TableRow<'_>> {
        let tenants = self.tenants.iter().map(|t| {
            let u = &t.usage;
            TableRow {
                name: &u.name,
                is_total: false,
                checkpoints: u.checkpoints,
                logical_bytes: u.logical_bytes,
                unique_bytes: u.unique_bytes,
                shared_bytes: u.shared_bytes,
                stored_bytes: u.stored_bytes,
                local_bytes: u.local_bytes,
                puts: u.requests.puts,
                monthly_cost: t.monthly_cost,
            }
        });
        let u = &self.total.usage;
        let total = TableRow {
            name: "TOTAL",
            is_total: true,
            checkpoints: u.checkpoints,
            logical_bytes: u.logical_bytes,
            unique_bytes: u.unique_bytes,
            shared_bytes: u.shared_bytes,
            stored_bytes: u.stored_bytes,
            local_bytes: self
                .tiers
                .iter()
                .find(|t| t.tier == "local")
                .map(|t| t.bytes),
            puts: u.requests.puts,
            monthly_cost: self.total.monthly_cost,
        };
        tenants.chain(std::iter::once(total)).collect()
    }
}

/// Prices an accounting of the store.
pub fn cost_report(acc: Accounting, prices: &Prices, generated_utc: String) -> CostReport {
    let tenants = acc
        .tenants
        .into_iter()
        .map(|usage| {
            let cost = prices.monthly(usage.stored_bytes, usage.requests.puts, usage.requests.gets);
            TenantCost {
                monthly_cost: cost.total,
                cost,
                usage,
            }
        })
        .collect();
    let cost = prices.monthly(
        acc.total.stored_bytes,
        acc.total.requests.puts,
        acc.total.requests.gets,
    );
    CostReport {
        generated_utc,
        period_days: acc.period_days,
        tenants,
        total: TotalCost {
            monthly_cost: cost.total,
            cost,
            usage: acc.total,
        },
        tiers: acc.tiers,
        prices: prices.clone(),
        notes: vec![
            "unique_bytes: stored bytes of pages only this tenant references; shared_bytes: its \
             equal share of pages it shares with others (shares add up to each page's size)"
                .into(),
            "requests: PUTs of the period derived from the store's history (manifests and the packs \
             they first wrote); GETs from the worker's usage log (the cold reads of each swap-in)"
                .into(),
            "the total also bills overhead_bytes (pack indexes, pages no checkpoint references any \
             more until `pico store gc`); the local tier is this machine's disk and is not priced"
                .into(),
        ],
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_string(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian; Hinnant's civil_from_days).
pub fn utc_string(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// Bytes as MiB with two decimals: the form every report shows.
pub fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / MIB)
}

/// Money with six decimals (per-tenant costs are fractions of a cent).
pub fn money(x: f64) -> String {
    format!("{x:.6}")
}

/// The report as a text table: one line per tenant and the total, then tiers and prices.
pub fn text_table(r: &CostReport) -> String {
    let mut s = format!(
        "{:<24} {:>6} {:>12} {:>11} {:>11} {:>11} {:>6} {:>12}\n",
        "tenant",
        "ckpts",
        "logical MiB",
        "unique MiB",
        "shared MiB",
        "stored MiB",
        "PUTs",
        "monthly"
    );
    for row in r.rows() {
        s.push_str(&format!(
            "{:<24} {:>6} {:>12} {:>11} {:>11} {:>11} {:>6} {:>12}\n",
            row.name,
            row.checkpoints,
            mib(row.logical_bytes),
            mib(row.unique_bytes),
            mib(row.shared_bytes),
            mib(row.stored_bytes),
            row.puts,
            money(row.monthly_cost)
        ));
    }
    for t in &r.tiers {
        s.push_str(&format!(
            "tier {} ({}): {} objects, {} MiB\n",
            t.tier,
            t.kind,
            t.objects,
            mib(t.bytes)
        ));
    }
    s.push_str(&format!(
        "prices ({}): {} per GB-month, {} per 1000 PUT, {} per 1000 GET; source: {}\n",
        r.prices.currency,
        r.prices.storage_gb_month,
        r.prices.put_per_1000,
        r.prices.get_per_1000,
        r.prices.source
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_string(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_string(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn rows_are_the_tenants_then_the_total_with_the_local_tier() {
        let tenant = |name: &str| TenantUsage {
            name: name.into(),
            checkpoints: 1,
            local_bytes: Some(7),
            ..TenantUsage::default()
        };
        let acc = Accounting {
            tenants: vec![tenant("a"), tenant("b")],
            total: TotalUsage {
                checkpoints: 2,
                ..TotalUsage::default()
            },
            tiers: vec![TierUsage {
                tier: "local".into(),
                kind: "fjall".into(),
                objects: 1,
                bytes: 4096,
            }],
            period_days: 30,
        };
        let report = cost_report(acc, &Prices::default(), utc_string(0));
        let rows = report.rows();
        let names: Vec<_> = rows.iter().map(|r| (r.name, r.is_total)).collect();
        assert_eq!(names, [("a", false), ("b", false), ("TOTAL", true)]);
        assert_eq!(rows[0].local_bytes, Some(7));
        assert_eq!(rows[2].local_bytes, Some(4096));
        assert_eq!(rows[2].checkpoints, 2);
        assert_eq!(text_table(&report).lines().count(), 1 + 3 + 1 + 1);
    }

    #[test]
    fn shown_numbers() {
        assert_eq!(mib(1 << 20), "1.00");
        assert_eq!(mib(0), "0.00");
        assert_eq!(money(0.0231), "0.023100");
    }
}
