//! What `pico bench dns` prints and writes: the table of the three load runs, the issue's goal,
//! and results.json with a README saying how the figures were made.

use std::path::Path;

use super::{Report, GOAL_QPS};
use crate::error::Result;
use crate::provenance;

/// A figure for the table: one decimal, or a dash.
fn cell(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

/// The result table as text.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<44} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}\n",
        "load",
        "queries/s",
        "avg µs",
        "p50 µs",
        "p95 µs",
        "p99 µs",
        "max µs",
        "errors",
        "lost/t.o."
    );
    let row = |s: &mut String, what: String, values: [Option<f64>; 6], errors: u64, lost: u64| {
        s.push_str(&format!(
            "{what:<44} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {errors:>7} {lost:>9}\n",
            values[0].map_or("—".into(), |v| format!("{v:.1}")),
            cell(values[1]),
            cell(values[2]),
            cell(values[3]),
            cell(values[4]),
            cell(values[5]),
        ));
    };
    match &r.dnsperf.figures {
        Some(f) => row(
            &mut s,
            format!(
                "{} ({} in flight)",
                r.dnsperf.version.as_deref().unwrap_or("dnsperf"),
                super::dnsperf::OUTSTANDING
            ),
            [
                Some(f.qps),
                Some(f.avg_latency_us),
                None,
                None,
                None,
                Some(f.max_latency_us),
            ],
            f.errors,
            f.lost,
        ),
        None => s.push_str(&format!("dnsperf: {}\n", dnsperf_absence(r))),
    }
    let ours = |f: &super::LoadFigures| {
        [
            Some(f.qps),
            Some(f.mean_us),
            Some(f.p50_us),
            Some(f.p95_us),
            Some(f.p99_us),
            Some(f.max_us),
        ]
    };
    let c = &r.closed_loop.figures;
    row(
        &mut s,
        format!("ours, closed loop, {} clients", c.sockets),
        ours(c),
        c.errors,
        c.timeouts,
    );
    let p = &r.paced.measured.figures;
    row(
        &mut s,
        format!(
            "ours, paced at {:.0}/s ({:.0}% of {})",
            p.target_qps.unwrap_or(0.0),
            r.paced.share * 100.0,
            r.paced.rate_from
        ),
        ours(p),
        p.errors,
        p.timeouts,
    );
    s.push_str(&format!(
        "\n{:<44} {:>10} {:>16} {:>16}\n",
        "the hub meanwhile", "CPU, cores", "its socket drops", "all UDP drops"
    ));
    let count = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    let runs = [
        ("dnsperf", r.dnsperf.meanwhile.as_ref()),
        ("ours, closed loop", Some(&r.closed_loop.meanwhile)),
        ("ours, paced", Some(&r.paced.measured.meanwhile)),
    ];
    for (what, m) in runs {
        if let Some(m) = m {
            s.push_str(&format!(
                "{what:<44} {:>10.2} {:>16} {:>16}\n",
                m.hub_cpu_cores,
                count(m.hub_socket_drops),
                count(m.udp_receive_drops)
            ));
        }
    }
    s.push_str(&format!(
        "hub log over the run: {} lines, {} warnings or errors\n",
        r.hub_log_lines, r.hub_log_warnings
    ));
    s
}

/// Why there is no dnsperf row.
fn dnsperf_absence(r: &Report) -> &'static str {
    match r.dnsperf.status.as_str() {
        "missing" => {
            "MISSING: not installed (apt-get install dnsperf, or deploy/setup.sh); the \
                      goal is checked on our closed loop instead"
        }
        _ => "not run (--no-dnsperf); the goal is checked on our closed loop instead",
    }
}

/// The issue's goal, checked.
pub fn goals(r: &Report) -> String {
    format!(
        "- queries/s for known names ({}): {:.0} (goal: at least {GOAL_QPS:.0}) — {}\n\
         - p99 latency at {:.0} queries/s ({:.0}% of that): {:.0} µs\n",
        r.goal_measured_by,
        r.goal_qps_reached,
        if r.goal_met { "met" } else { "NOT met" },
        r.paced.measured.figures.target_qps.unwrap_or(0.0),
        r.paced.share * 100.0,
        r.paced.measured.figures.p99_us
    )
}

/// Writes results.json and README.md into `out`.
pub fn write(r: &Report, out: &Path) -> Result<()> {
    provenance::write_json(out, "results.json", r)?;
    let dnsperf = match &r.dnsperf.command {
        Some(command) => format!(
            "**dnsperf** (`{command}`): its defaults (UDP, 5 s timeout, no EDNS, one thread, \
             one socket, at most {} queries in flight: other `-T`/`-c`/`-q` gave no more \
             answers on this 2-core machine, see `bench/src/dns/dnsperf.rs`); a data file of \
             every name once, shuffled, read in a loop. It reports queries/s, lost queries and \
             average/min/max latency (no percentiles).",
            super::dnsperf::OUTSTANDING
        ),
        None => format!("**dnsperf**: {}.", dnsperf_absence(r)),
    };
    let readme = format!(
        "# pico bench dns\n\n\
         How many DNS queries per second the hub answers for known tenant names, and its latency \
         at a rate it sustains. A real `pico hub run` (this build) answers for the zone \
         `{zone}`; its record, written into a fresh cold directory before it starts, names \
         {names} tenants `t0`..`t{last}` on one worker that is never started (it counts as \
         alive for the whole run, and no tenant has a reported state), so each query is \
         answered at once from the hub's registry: no wake-up, no placement, the DNS path \
         alone. The hub runs with its default log filter. Each load runs for {secs} s, one after \
         the other, against the same hub:\n\n\
         1. {dnsperf}\n\
         2. **ours, closed loop**: {clients} clients (tokio, in the `pico bench` process), each \
            on its own UDP socket, one query at a time for a random known name, the next as soon \
            as the answer came: an answer counts when its id matches and it is NOERROR with \
            one A record; other answers are errors, and no answer within 1 s a timeout. \
            Latency from send to answer.\n\
         3. **ours, paced**: an open loop at {share:.0}% of the queries/s {from} reached, over \
            {clients} sockets each sending its share on schedule whatever the answers do \
            (tokio's timer wakes every millisecond or so: queries leave in small bursts), \
            answers checked as above: the latency at that rate.\n\n\
         The load tools and the hub share the machine's {cores} cores (and whatever else ran on \
         it): the figures are of the pair, as on a host that serves and asks. \"The hub \
         meanwhile\": its user+system CPU seconds per second of each run, and UDP datagrams the \
         kernel dropped at a full receive buffer, at the hub's DNS socket and on the whole \
         machine (`/proc/net/udp`, `/proc/net/snmp`): on loopback the only way a query or \
         answer is lost.\n\n\
         ## Results\n\n```\n{table}```\n\n## Goal\n\n{goals}\n{prov}",
        zone = r.zone,
        names = r.names,
        last = r.names.saturating_sub(1),
        secs = r.seconds,
        clients = r.closed_loop.figures.sockets,
        share = r.paced.share * 100.0,
        from = r.paced.rate_from,
        cores = r.provenance.cores,
        table = table(r),
        goals = goals(r),
        prov = r.provenance.markdown()
    );
    provenance::write(out, "README.md", &readme)
}
