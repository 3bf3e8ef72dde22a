//! The outputs of `pico bench density`: the tables as text (the CLI prints them, the README
//! carries them), the goals checked, `results.json` with every sample, and a README
//! saying how the figures were made.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    Phase, Report, GOAL_BURST_P95_MS, GOAL_BURST_RATE, GOAL_IDLE_BYTES, GOAL_SUSTAINED_P95_MS,
};
use crate::error::{Error, Result};
use crate::provenance;

const MIB: f64 = (1u64 << 20) as f64;

/// The goals, each with its figure.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Goals {
    /// Every tenant registered and counted (swapped out), none lost, and every answer to a
    /// wake-up carried the tenant's own state.
    pub all_tenants_kept: bool,
    /// Answers without the tenant's own state, over all phases.
    pub wrong: usize,
    /// Wake-ups that got no answer (held by the worker past its `hold_timeout_ms` and closed).
    pub unanswered: usize,
    pub per_idle_tenant_under_1_mib: bool,
    /// p95 at the burst rate of the goal, if it was measured.
    pub burst_p95_at_20_ms: Option<f64>,
    pub burst_p95_under_100_ms: Option<bool>,
    pub max_sustained_rate_per_s: Option<f64>,
}

impl Goals {
    pub fn of(r: &Report) -> Goals {
        let phases = r.burst.iter().chain(&r.sustained);
        let wrong: usize = phases.clone().map(|p| p.wrong).sum();
        let unanswered: usize = phases.map(|p| p.unanswered).sum();
        let at20 = r
            .burst
            .iter()
            .find(|p| (p.rate_per_s - GOAL_BURST_RATE).abs() < 1e-9)
            .map(|p| p.latency.p95_ms);
        Goals {
            all_tenants_kept: r.idle.counted == r.tenants && r.lost.is_empty() && wrong == 0,
            wrong,
            unanswered,
            per_idle_tenant_under_1_mib: r.idle.per_idle_tenant_bytes < GOAL_IDLE_BYTES as i64,
            burst_p95_at_20_ms: at20,
            burst_p95_under_100_ms: at20.map(|p| p < GOAL_BURST_P95_MS),
            max_sustained_rate_per_s: r.max_sustained_rate_per_s,
        }
    }
}

/// Lines of the worker's log that explain tails: swap-outs by reason, failures.
pub fn worker_log_counts(log: &Path) -> std::collections::BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let key = if line.contains("swapped tenant out") {
            match line.split("reason=").nth(1) {
                Some(r) => format!(
                    "swap-out reason={}",
                    r.split_whitespace().next().unwrap_or("").trim_matches('"')
                ),
                None => "swap-out".into(),
            }
        } else if line.contains(" ERROR ") {
            "ERROR lines".into()
        } else if line.contains(" WARN ") {
            "WARN lines".into()
        } else {
            continue;
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn phase_rows(s: &mut String, name: &str, phases: &[Phase]) {
    for p in phases {
        s.push_str(&format!(
            "| {name} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} |\n",
            p.rate_per_s,
            p.wakes,
            p.found_running,
            p.wrong + p.unanswered,
            p.latency.p50_ms,
            p.latency.p95_ms,
            p.latency.p99_ms,
            p.latency.max_ms,
            p.per_kind
                .iter()
                .map(|(k, l)| if l.count == 0 {
                    format!("{k} -")
                } else {
                    format!("{k} {:.0}", l.p95_ms)
                })
                .collect::<Vec<_>>()
                .join(", "),
            p.swap_ins,
            p.swap_outs,
            p.swap_in_mean_ms,
            p.swap_out_mean_ms,
            mib(p.peak.host_in_use_bytes),
        ));
    }
}

/// The result tables, as markdown.
pub fn table(r: &Report) -> String {
    let i = &r.idle;
    let g = &i.registration;
    let mut s = String::new();
    s.push_str(&format!(
        "### Population and memory\n\n| | |\n| --- | ---: |\n\
         | tenants asked | {} (a third each: counter, redis, nginx) |\n\
         | registered (added, state written) | {} of {} ({} failed) |\n\
         | counted (also seen swapped out) | {} |\n\
         | registration | {:.0} s, {:.2}/s achieved ({:.2}/s asked); add p50 {:.0} ms, p95 {:.0} ms |\n\
         | all asleep after | {:.0} s from the first add |\n\
         | host memory in use before the worker (baseline) | {:.0} MiB |\n\
         | ... worker started, no tenant | {:.0} MiB |\n\
         | ... all {} tenants swapped out, store settled | {:.0} MiB ({:.0} KiB per tenant; worker RSS {:.0} MiB) |\n\
         | ... and {:.0} s later (idle) | {:.0} MiB |\n\
         | the worker's memory tier, all asleep → idle | {:.0} → {:.0} MiB |\n\
         | **per idle tenant** ((idle − baseline) / N) | **{:.0} KiB** |\n\
         | per idle tenant without the worker's fixed cost ((idle − worker alone) / N) | {:.0} KiB |\n\
         | accounted per idle tenant ((worker RSS + Shmem growth + SUnreclaim growth) / N) | {:.0} KiB |\n\
         | worker RSS, idle | {:.0} MiB |\n\
         | host Shmem, baseline → idle (tmpfs: the worker's staging) | {:.0} → {:.0} MiB |\n\
         | host SUnreclaim, baseline → idle (kernel: namespaces, mounts) | {:.0} → {:.0} MiB |\n\
         | worker CPU while all sleep | {:.3} CPU-s/s |\n",
        r.tenants,
        g.registered,
        r.tenants,
        g.failed,
        i.counted,
        g.seconds,
        g.achieved_rate_per_s,
        g.asked_rate_per_s,
        g.add_p50_ms,
        g.add_p95_ms,
        i.all_asleep_after_s,
        mib(i.baseline_in_use_bytes),
        mib(i.worker_alone_in_use_bytes),
        i.counted,
        mib(i.asleep_in_use_bytes),
        i.asleep_per_idle_tenant_bytes as f64 / 1024.0,
        mib(i.worker_rss_asleep_bytes),
        r.idle_settle_s,
        mib(i.idle_in_use_bytes),
        mib(i.hot_asleep_bytes),
        mib(i.hot_idle_bytes),
        i.per_idle_tenant_bytes as f64 / 1024.0,
        i.per_idle_tenant_over_worker_bytes as f64 / 1024.0,
        i.accounted_per_idle_tenant_bytes as f64 / 1024.0,
        mib(i.worker_rss_idle_bytes),
        mib(i.shmem_baseline_bytes),
        mib(i.shmem_idle_bytes),
        mib(i.sunreclaim_baseline_bytes),
        mib(i.sunreclaim_idle_bytes),
        i.worker_idle_cpu_s_per_s,
    ));
    s.push_str("\nPeak memory per phase (host in use, worker RSS):\n\n| phase | host in use MiB | over baseline MiB | worker RSS MiB |\n| --- | ---: | ---: | ---: |\n");
    for (phase, p) in &r.peaks {
        s.push_str(&format!(
            "| {phase} | {:.0} | {:.0} | {:.0} |\n",
            mib(p.host_in_use_bytes),
            mib(p.host_in_use_bytes.saturating_sub(i.baseline_in_use_bytes)),
            mib(p.worker_rss_bytes)
        ));
    }
    s.push_str(
        "\n### Wake-ups (first answer: connect to first byte, at the client)\n\n\
         | phase | rate/s | wake-ups | found running | wrong or unanswered | p50 ms | p95 ms | p99 ms | max ms | p95 per kind ms | swap-ins / -outs | mean swap-in / -out ms | peak host MiB |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n",
    );
    phase_rows(&mut s, "burst", &r.burst);
    phase_rows(&mut s, "sustained", &r.sustained);
    if r.burst.iter().any(|p| p.host_busy_share.is_some()) {
        s.push_str(
            "\n### Bursts: the host's CPU\n\n\
             | rate/s | swap-ins | host busy (all cores) | host CPU-s per wake-up | p95 ms |\n\
             | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for p in &r.burst {
            s.push_str(&format!(
                "| {:.0} | {:.0} | {:.0}% | {:.3} | {:.1} |\n",
                p.rate_per_s,
                p.swap_ins,
                100.0 * p.host_busy_share.unwrap_or(0.0),
                p.host_cpu_s_per_wake.unwrap_or(0.0),
                p.latency.p95_ms,
            ));
        }
    }
    if !r.sustained.is_empty() {
        s.push_str(
            "\n### Sustained: CPU per wake/sleep cycle\n\n\
             | rate/s | swap-ins | drain s | CPU-s per cycle (worker + reaped) | host CPU-s per cycle | p95 ms | held |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        );
        for p in &r.sustained {
            s.push_str(&format!(
                "| {:.0} | {:.0} | {:.0} | {:.3} | {:.3} | {:.1} | {} |\n",
                p.rate_per_s,
                p.swap_ins,
                p.drain_s.unwrap_or(0.0),
                p.cpu_s_per_cycle.unwrap_or(0.0),
                p.host_cpu_s_per_cycle.unwrap_or(0.0),
                p.latency.p95_ms,
                if p.held == Some(true) { "yes" } else { "no" }
            ));
        }
    }
    let t = &r.store.total;
    s.push_str(
        "\n### The swapped-out population in the store\n\n| | bytes | MiB | per tenant KiB |\n\
         | --- | ---: | ---: | ---: |\n",
    );
    for (label, key) in [
        ("logical (paged files of all checkpoints)", "logical_bytes"),
        ("unique pages (one tenant's)", "unique_bytes"),
        ("shared pages (two or more tenants', once)", "shared_bytes"),
        ("manifests", "manifest_bytes"),
        ("locality packs", "locality_bytes"),
        ("overhead (pack indexes, unreferenced)", "overhead_bytes"),
        ("**stored in the cold tier**", "stored_bytes"),
    ] {
        let bytes = t[key].as_u64().unwrap_or(0);
        let per_tenant_kib = bytes as f64 / 1024.0 / r.tenants.max(1) as f64;
        let (cell, mib_cell, kib_cell) = (
            bytes.to_string(),
            format!("{:.1}", mib(bytes)),
            format!("{per_tenant_kib:.0}"),
        );
        let bold = |c: &str| {
            if key == "stored_bytes" {
                format!("**{c}**")
            } else {
                c.to_string()
            }
        };
        s.push_str(&format!(
            "| {label} | {} | {} | {} |\n",
            bold(&cell),
            bold(&mib_cell),
            bold(&kib_cell)
        ));
    }
    s.push_str(&format!(
        "\nMean stored bytes per tenant by kind (unique + apportioned shared + manifests + \
         locality): {}\n",
        r.store
            .mean_stored_bytes_per_kind
            .iter()
            .map(|(k, v)| format!("{k} {:.0} KiB", *v as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
}

/// The goals, checked.
pub fn goals(r: &Report) -> String {
    let g = &r.goals;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut s = format!(
        "- {} tenants registered, swapped out and kept (none lost, every answer to a wake-up \
         with its own state): {} of {} counted, {} lost, {} wrong answers — {}\n\
         - wake-ups with no answer at all (held by the worker past its `hold_timeout_ms` and \
         closed: more wake-ups than it can restore): {}\n\
         - host memory in use per idle tenant: {:.0} KiB (goal: under {:.0} KiB) — {}\n",
        r.tenants,
        r.idle.counted,
        r.tenants,
        r.lost.len(),
        g.wrong,
        verdict(g.all_tenants_kept),
        g.unanswered,
        r.idle.per_idle_tenant_bytes as f64 / 1024.0,
        GOAL_IDLE_BYTES as f64 / 1024.0,
        verdict(g.per_idle_tenant_under_1_mib),
    );
    match g.burst_p95_at_20_ms {
        Some(p95) => s.push_str(&format!(
            "- burst, {GOAL_BURST_RATE:.0} wake-ups/s: p95 {p95:.1} ms (goal: under \
             {GOAL_BURST_P95_MS:.0} ms) — {}\n",
            verdict(p95 < GOAL_BURST_P95_MS)
        )),
        None => s.push_str(&format!(
            "- burst, {GOAL_BURST_RATE:.0} wake-ups/s: not measured in this run\n"
        )),
    }
    s.push_str(&format!(
        "- sustained: highest rate held with p95 under {GOAL_SUSTAINED_P95_MS:.0} ms: {}\n",
        g.max_sustained_rate_per_s
            .map_or("none of the rates tried".to_string(), |r| format!(
                "{r:.0}/s"
            ))
    ));
    s
}

/// Reads a `results.json` written by [`write()`], checks the goals again and writes it back with
/// its README into `out` (the report's text changed, not the run).
pub fn rewrite(results: &Path, out: &Path) -> Result<Report> {
    let text = std::fs::read(results).map_err(|e| Error::io(results, e))?;
    let mut r: Report =
        serde_json::from_slice(&text).map_err(|e| Error::io(results, std::io::Error::other(e)))?;
    r.goals = Goals::of(&r);
    write(&r, out)?;
    Ok(r)
}

/// results.json (every sample) and README.md into `out`.
pub fn write(r: &Report, out: &Path) -> Result<()> {
    provenance::write_json(out, "results.json", r)?;
    let log: String = r
        .worker_log
        .iter()
        .map(|(k, v)| format!("- {k}: {v}\n"))
        .collect();
    let readme = format!(
        "# pico bench density\n\n\
         The dense host as a whole: one `pico worker run` carrying {n} real tenants, a third each \
         of a Python web app (`deploy/apps/counter.py`), redis with data ({keys} keys of ~450 B, \
         `--save \"\" --appendonly no`) and nginx (master and one worker, WebDAV PUT), all \
         sandboxed (the default) with a network namespace and a cgroup each, and an idle \
         timeout of {idle:.0} s.\n\n\
         - **register**: tenants added at a steady rate through the worker's API while those \
           already idle swap out on their own. Each then answers a request that writes state \
           of its own (counter: `GET /inc` 1-7 times; redis: `INCRBY wakes`; nginx: `PUT \
           /state.txt` of a token of its own, a file in its working directory: nginx keeps no \
           request's state in memory). A tenant counts once the worker's listing shows it \
           swapped out after that.\n\
         - **memory per idle tenant**: `MemTotal − MemAvailable` (no cache dropped; the \
           worker's memory tier, its staging tmpfs and heap count) once every tenant is \
           swapped out, the store has recompressed and the host has slept `--idle-settle-s` \
           more (what the worker keeps for fast wake-ups, its memory tier, lasts `[hot] ttl_ms`, \
           30 s), minus the same before the worker started, divided by the tenants counted; \
           median of 5 samples (the figure right after the recompression beside it). Peaks: \
           sampled every 500 ms in every phase.\n\
         - **wake-ups**: real requests at open-loop Poisson rates, each to a random tenant the \
           worker's last listing (every 1 s) showed swapped out and that no request touched \
           since; each checks the tenant's state (counter: the next count; redis: `INCR \
           wakes`, the next count; nginx: its token). Latency: connect to the first byte of \
           the answer, at the client. A request that found no tenant asleep goes to a running \
           one and is counted apart (\"found running\"). **Burst** phases last less than the \
           idle timeout, so nothing woken sleeps again meanwhile; their CPU is the whole \
           host's busy time over the phase (`/proc/stat`), per swap-in and as a share of all \
           cores; **sustained** phases are \
           followed until every woken tenant has slept again, and their CPU per wake/sleep \
           cycle is the CPU of the worker and of all it reaped (CRIU, its lazy-pages daemons \
           and the tenants, swapped out: `utime + stime + cutime + cstime` of \
           `/proc/WORKER/stat`) from the phase's start to the last swap-out, divided by the \
           worker's swap-ins; the whole host's busy CPU (`/proc/stat`, other work included) \
           beside it. A sustained rate is held when p95 stays under {sus:.0} ms, every answer \
           is right and all slept again within the drain limit.\n\
         - **store**: `pico store stats --json` and `pico report cost --json` once the \
           population sleeps.\n\n\
         Machine limits seen: pid_max {pid_max}, ephemeral ports {eph} (tenants' ports are \
         chosen below), open files {nofile}.\n\n\
         ## Results\n\n{stopped}{table}\n## Goals\n\n{goals}\n\
         ## The worker's log\n\n{log}\n{prov}",
        n = r.tenants,
        keys = r.redis_keys,
        idle = r.idle_timeout_s,
        sus = GOAL_SUSTAINED_P95_MS,
        pid_max = r.limits.pid_max,
        eph = r.limits.ephemeral_ports,
        nofile = r.limits.open_files,
        stopped = r.stopped.as_ref().map_or(String::new(), |s| format!(
            "**Phases stopped early**: {s}.\n\n"
        )),
        table = table(r),
        goals = goals(r),
        prov = r
            .provenance
            .as_ref()
            .map(|p| p.markdown())
            .unwrap_or_default(),
    );
    provenance::write(out, "README.md", &readme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_with_its_host_cpu_gets_a_row_of_it_and_one_without_gets_none() {
        let burst = Phase {
            rate_per_s: 20.0,
            swap_ins: 289.0,
            host_cpu_s_per_wake: Some(0.061),
            host_busy_share: Some(0.612),
            ..Phase::default()
        };
        let mut r = Report {
            burst: vec![burst],
            ..Report::default()
        };
        let t = table(&r);
        assert!(t.contains("### Bursts: the host's CPU"), "{t}");
        assert!(t.contains("| 20 | 289 | 61% | 0.061 |"), "{t}");
        // An earlier run's results (`--rewrite-from`) have no such figure.
        r.burst[0].host_busy_share = None;
        assert!(!table(&r).contains("the host's CPU"));
    }
}
