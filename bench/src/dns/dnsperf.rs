//! The reference load tool: `dnsperf` (DNS-OARC, Debian package `dnsperf`), the usual way to
//! measure an authoritative server's queries/s. It keeps [`OUTSTANDING`] queries in flight and
//! reports what it achieved; we write its data file (every known name, shuffled) and read its
//! summary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::synth::Rng;

/// dnsperf's own defaults, written out so that the README's command line states them: one
/// thread, one client socket, at most 100 queries in flight. Tried against a release hub on
/// this 2-core machine (3 s each, the machine busy with builds): `-q 20` 48k/s, `-q 50` 57k/s,
/// the defaults 43k to 81k/s, `-q 200` 49k/s and it began to lose queries, `-T 2 -c 2` 57k to
/// 64k/s, `-T 2 -c 2 -q 200` 53k to 75k/s with losses, `-T 2 -c 4 -q 200` 49k/s: nothing beat
/// the defaults beyond the noise, and more in flight only lengthened the hub's queue.
pub const THREADS: usize = 1;
pub const CLIENTS: usize = 1;
pub const OUTSTANDING: usize = 100;

/// What dnsperf reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DnsperfFigures {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// Its "Response codes:" line, e.g. `NOERROR 123 (100.00%)`.
    pub response_codes: String,
    /// Answers other than NOERROR (completed − NOERROR).
    pub errors: u64,
    pub qps: f64,
    pub avg_latency_us: f64,
    pub min_latency_us: f64,
    pub max_latency_us: f64,
}

/// dnsperf's version line (`Version 2.10.0`), or `None` if it cannot be run.
pub fn version() -> Option<String> {
    let out = Command::new("dnsperf").arg("-h").output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version "))
        .map(|v| format!("dnsperf {v}"))
}

/// Writes dnsperf's data file: one `NAME A` line per name, in a random order.
pub fn write_data(path: &Path, names: &[String], seed: u64) -> Result<()> {
    let mut order: Vec<&String> = names.iter().collect();
    let mut rng = Rng::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let text: String = order.iter().map(|n| format!("{n} A\n")).collect();
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// dnsperf's arguments against loopback `port` for `run`, reading `data`.
pub fn args(port: u16, data: &Path, run: Duration) -> Vec<String> {
    let mut a: Vec<String> = ["-s", "127.0.0.1", "-p"].map(String::from).to_vec();
    a.push(port.to_string());
    a.push("-d".into());
    a.push(data.display().to_string());
    a.push("-l".into());
    a.push(format!("{}", run.as_secs_f64()));
    for (flag, value) in [("-T", THREADS), ("-c", CLIENTS), ("-q", OUTSTANDING)] {
        a.push(flag.into());
        a.push(value.to_string());
    }
    a
}

/// Runs dnsperf with `args` (blocking) and reads its summary.
pub fn run(args: &[String]) -> Result<DnsperfFigures> {
    let command = format!("dnsperf {}", args.join(" "));
    let out = Command::new("dnsperf")
        .args(args)
        .output()
        .map_err(|source| Error::ToolMissing {
            tool: "dnsperf".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::ToolFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    parse(&stdout).map_err(|why| Error::Step(command, format!("{why}; its output:\n{stdout}")))
}

/// The number at the start of `text` (after spaces).
fn leading_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The `(min X, max Y)` of dnsperf's latency line.
fn min_max(text: &str) -> Option<(f64, f64)> {
    let inner = text.split_once('(')?.1.split_once(')')?.0;
    let (min, max) = inner.split_once(',')?;
    Some((
        leading_number(min.trim().strip_prefix("min")?)?,
        leading_number(max.trim().strip_prefix("max")?)?,
    ))
}

/// Reads dnsperf's "Statistics:" summary.
pub fn parse(output: &str) -> std::result::Result<DnsperfFigures, String> {
    let field = |name: &str| -> Option<&str> {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
    };
    let number = |name: &str| -> std::result::Result<f64, String> {
        field(name)
            .and_then(leading_number)
            .ok_or_else(|| format!("no {name:?} line with a number"))
    };
    let latency = field("Average Latency (s):").ok_or("no \"Average Latency (s):\" line")?;
    let avg = leading_number(latency).ok_or("no average latency")?;
    let (min, max) = min_max(latency).ok_or("no (min, max) latency")?;
    let completed = number("Queries completed:")? as u64;
    let codes = field("Response codes:").unwrap_or_default();
    let words: Vec<&str> = codes.split_whitespace().collect();
    let noerror = words
        .windows(2)
        .find(|w| w[0] == "NOERROR")
        .and_then(|w| w[1].parse::<u64>().ok())
        .unwrap_or(0);
    Ok(DnsperfFigures {
        sent: number("Queries sent:")? as u64,
        completed,
        lost: number("Queries lost:")? as u64,
        response_codes: codes.to_string(),
        errors: completed.saturating_sub(noerror),
        qps: number("Queries per second:")?,
        avg_latency_us: avg * 1e6,
        min_latency_us: min * 1e6,
        max_latency_us: max * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsperf 2.10's summary, as it prints it.
    const OUTPUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5300 -d names -l 10
[Status] Sending queries (to 127.0.0.1:5300)
[Status] Started at: Wed Dec  3 19:50:00 2025
[Status] Stopping after 10.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         151234
  Queries completed:    151200 (99.98%)
  Queries lost:         34 (0.02%)

  Response codes:       NOERROR 151200 (100.00%)
  Average packet size:  request 32, response 48
  Run time (s):         10.000812
  Queries per second:   15118.777

  Average Latency (s):  0.006512 (min 0.000041, max 0.021345)
  Latency StdDev (s):   0.001023

";

    #[test]
    fn the_summary_is_read() {
        let f = parse(OUTPUT).unwrap();
        assert_eq!((f.sent, f.completed, f.lost), (151_234, 151_200, 34));
        assert_eq!(f.response_codes, "NOERROR 151200 (100.00%)");
        assert_eq!(f.errors, 0);
        let mixed = OUTPUT.replace(
            "NOERROR 151200 (100.00%)",
            "NOERROR 151100 (99.93%), NXDOMAIN 100 (0.07%)",
        );
        assert_eq!(parse(&mixed).unwrap().errors, 100);
        assert!((f.qps - 15_118.777).abs() < 1e-6);
        assert!((f.avg_latency_us - 6512.0).abs() < 1e-6);
        assert!((f.min_latency_us - 41.0).abs() < 1e-6);
        assert!((f.max_latency_us - 21_345.0).abs() < 1e-6);
        assert!(parse("Statistics:\n").is_err());
    }

    #[test]
    fn the_data_file_has_every_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("names");
        let names: Vec<String> = (0..100).map(|i| format!("t{i}.bench.test.")).collect();
        write_data(&path, &names, 7).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_ne!(lines[0], "t0.bench.test. A", "shuffled");
        lines.sort();
        let mut expected: Vec<String> = names.iter().map(|n| format!("{n} A")).collect();
        expected.sort();
        assert_eq!(lines, expected);
    }
}
