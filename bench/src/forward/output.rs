//! What `pico bench forward` writes and prints: the result table, the goals checked for each
//! worker, the two charts, and results.json and README.md with their provenance.

use std::path::Path;

use charts::{BarChart, Group};

use super::{Forwarding, LatencyComparison, Percentiles, Report};
use crate::error::Result;
use crate::provenance;

/// Each worker's forwarding with its name (and who forwarded): this build's, then the
/// compared one's.
fn workers(r: &Report) -> Vec<(String, &Forwarding)> {
    let by = |kernel: bool| if kernel { "kernel" } else { "relay" };
    let mut v = vec![(format!("this build ({})", by(r.by_kernel)), &r.forwarded)];
    v.extend(r.compared.iter().map(|c| {
        let who = c
            .path
            .as_ref()
            .map_or("compared build".to_string(), |path| format!("{path} path"));
        (format!("{who} ({})", by(c.by_kernel)), &c.figures)
    }));
    v
}

/// The result table as text.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<46} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "small requests (µs), worker", "direct", "", "", "fwd", "", "", "fwd − dir"
    );
    s.push_str(&format!(
        "{:<46} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "", "p50", "p95", "p99", "p50", "p95", "p99", "p50"
    ));
    for (worker, f) in workers(r) {
        for (kind, c) in [
            ("kept-alive", &f.keep_alive),
            ("new connection each", &f.per_connection),
        ] {
            s.push_str(&format!(
                "{:<46} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>+9.1}\n",
                format!("{kind}, {worker}"),
                c.direct.p50_us,
                c.direct.p95_us,
                c.direct.p99_us,
                c.forwarded.p50_us,
                c.forwarded.p95_us,
                c.forwarded.p99_us,
                c.difference.p50_us
            ));
        }
    }
    for (worker, f) in workers(r) {
        s.push_str(&format!(
            "fwd − direct p95 / p99, {worker}: kept-alive {:+.1} / {:+.1} µs, new connection \
             {:+.1} / {:+.1} µs\n",
            f.keep_alive.difference.p95_us,
            f.keep_alive.difference.p99_us,
            f.per_connection.difference.p95_us,
            f.per_connection.difference.p99_us
        ));
    }
    s.push('\n');
    for (worker, f) in workers(r) {
        s.push_str(&format!(
            "large transfer ({:.0} MiB), {worker}: direct {:.0} MB/s, forwarded {:.0} MB/s, \
             ratio {:.3}; at their best (p90) {:.0} and {:.0} MB/s, ratio {:.3}\n",
            f.throughput.bytes as f64 / (1 << 20) as f64,
            f.throughput.direct_mb_s,
            f.throughput.forwarded_mb_s,
            f.throughput.ratio,
            f.throughput.direct_best_mb_s,
            f.throughput.forwarded_best_mb_s,
            f.throughput.best_ratio
        ));
    }
    s
}

/// The issue's goals, checked for each worker.
pub fn goals(r: &Report) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut s = String::new();
    for (worker, f) in workers(r) {
        let (ka, pc) = (
            f.keep_alive.difference.p50_us,
            f.per_connection.difference.p50_us,
        );
        s.push_str(&format!(
            "- {worker}, latency, p50 forwarded − direct: kept-alive {ka:+.1} µs, new connection \
             {pc:+.1} µs (goal: within {:.0} µs) — {}\n\
             - {worker}, throughput, forwarded / direct: {:.3} (median), {:.3} (each at its \
             best, p90) (goal: at least {:.2}, both) — {}\n",
            r.goal_latency_us,
            verdict(ka <= r.goal_latency_us && pc <= r.goal_latency_us),
            f.throughput.ratio,
            f.throughput.best_ratio,
            r.goal_throughput_ratio,
            verdict(
                f.throughput.ratio >= r.goal_throughput_ratio
                    && f.throughput.best_ratio >= r.goal_throughput_ratio
            )
        ));
    }
    s
}

/// The series of the charts: direct, then each worker's forwarding.
fn series(r: &Report) -> Vec<String> {
    let mut v = vec!["direct".to_string()];
    v.extend(workers(r).iter().map(|(w, _)| format!("forwarded, {w}")));
    v
}

/// Latency percentiles of both kinds of request, direct and forwarded side by side.
pub fn latency_chart(r: &Report) -> String {
    let mut groups = Vec::new();
    type Pick = fn(&Forwarding) -> &LatencyComparison;
    let kinds: [(&str, Pick); 2] = [
        ("kept-alive", |f| &f.keep_alive),
        ("new conn.", |f| &f.per_connection),
    ];
    type Of = fn(&Percentiles) -> f64;
    let ps: [(&str, Of); 3] = [
        ("p50", |p| p.p50_us),
        ("p95", |p| p.p95_us),
        ("p99", |p| p.p99_us),
    ];
    for (kind, pick) in kinds {
        for (p, of) in ps {
            let mut values = vec![of(&pick(&r.forwarded).direct)];
            values.extend(workers(r).iter().map(|(_, f)| of(&pick(f).forwarded)));
            groups.push(Group {
                label: format!("{kind} {p}"),
                values,
            });
        }
    }
    BarChart {
        title: format!(
            "Small request latency ({} B file), medians of {} rounds (µs, lower is better)",
            r.small_bytes, r.rounds
        ),
        unit: "µs".into(),
        series: series(r),
        groups,
    }
    .render()
}

/// Throughput of the large transfer, direct and forwarded.
pub fn throughput_chart(r: &Report) -> String {
    let mut values = vec![r.forwarded.throughput.direct_mb_s];
    values.extend(workers(r).iter().map(|(_, f)| f.throughput.forwarded_mb_s));
    BarChart {
        title: format!(
            "Large transfer ({:.0} MiB), median of {} rounds (MB/s, higher is better)",
            r.forwarded.throughput.bytes as f64 / (1 << 20) as f64,
            r.rounds
        ),
        unit: "MB/s".into(),
        series: series(r),
        groups: vec![Group {
            label: "large file".into(),
            values,
        }],
    }
    .render()
}

pub(super) fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    provenance::write_json(out, "results.json", r)?;
    provenance::write(out, "forward.svg", &latency_chart(r))?;
    provenance::write(out, "throughput.svg", &throughput_chart(r))?;
    let readme = format!(
        "# pico bench forward\n\n\
         What the worker's forwarding of a tenant's public port costs its clients. One nginx \
         ({server}; one worker process, `sendfile on`, files on a tmpfs) runs as the tenant of a \
         real `pico worker run` (**forwarded**: client → the tenant's public port → the kernel, \
         over the tenant's link into its network namespace (DNAT, or routed with no address \
         rewritten where the worker is told so) → nginx, labelled `kernel`; or, \
         for a build or worker that does not forward in the kernel, labelled `relay`, the \
         worker's listener → a socket it made inside the namespace → nginx), the same nginx with the \
         same configuration and files runs directly on the host (**direct**). Both measured in \
         the same run by the same hand-written client, in {rounds} rounds alternating direct and \
         forwarded (and which goes first).{compared}\n\n\
         - **small requests**: a {small} B file, {requests} timed requests per round and side \
           after {warmup} untimed ones, one at a time, on one kept-alive connection (request's \
           first byte to answer's last) and with a new connection each (connect to last byte). \
           p50/p95/p99 per round; shown: medians over the rounds, and forwarded − direct as the \
           median of the rounds' differences.\n\
         - **large transfer**: the {large:.0} MiB file {transfers} times per round and side, \
           the sides taking turns, each on a fresh connection, connect to last byte; MB/s = 10^6 \
           bytes/s; ratio = median of the ratios forwarded / direct of transfers made one after \
           the other; and each side at its best, the 90th percentile of its transfers (a direct \
           transfer over the loopback here falls to 2-4 GB/s in about a quarter of the runs, far \
           more often than a forwarded one, which lifts the median ratio: the goal asks both).\n\n\
         The machine runs the client, the worker and nginx on the same cores (and other work \
         beside them): forwarding's CPU competes with both ends, as on a busy host.\n\n\
         ## Results\n\n```\n{table}```\n\n![latency](forward.svg)\n\n\
         ![throughput](throughput.svg)\n\n## Goals\n\n{goals}\n{prov}",
        server = r.server,
        compared = r.compared.as_ref().map_or(String::new(), |c| if let Some(path) = &c.path {
            format!(
                " **{path} path**: a second worker, of `{}`, told to take the kernel's {path} \
                 path (`kernel_forward_path = \"{path}\"`; routed: no address rewritten, NAT: \
                 DNAT into the link, the source masqueraded, DNAT again in the namespace), \
                 forwarding to a third copy of the tenant in the same rounds.",
                c.pico
            )
        } else {
            format!(
                " **Compared build**: a second worker, of `{}`, forwarding to a third copy of \
                 the tenant in the same rounds (before/after a change to the forwarding).",
                c.pico
            )
        }),
        rounds = r.rounds,
        small = r.small_bytes,
        requests = r.requests_per_round,
        transfers = r.transfers_per_round,
        warmup = r.warmup_requests,
        large = r.forwarded.throughput.bytes as f64 / (1 << 20) as f64,
        table = table(r),
        goals = goals(r),
        prov = r.provenance.markdown()
    );
    provenance::write(out, "README.md", &readme)
}
