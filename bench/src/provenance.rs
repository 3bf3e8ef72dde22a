//! How a benchmark result was made: commit, machine, date and command, written as the README of
//! its output directory. A figure without these cannot be compared with the next one.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    /// The commit the running binary was built from (plus `-dirty` when its sources had
    /// changes), stamped at build time: what made the figures.
    pub commit: String,
    /// `git rev-parse HEAD` of the working directory the bench ran in, when it is not
    /// [`Self::commit`] (a saved build run from another checkout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<String>,
    pub date_utc: String,
    pub host: String,
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub command: String,
    pub tools: Vec<String>,
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// The commit this binary was built from (`bench/build.rs`).
pub const BUILD_COMMIT: &str = env!("PICO_BUILD_COMMIT");

impl Provenance {
    /// Collects what can be known here; unknown items read "unknown", never fail the run.
    pub fn collect(tools: &[(&str, &[&str])]) -> Provenance {
        let unknown = || "unknown".to_string();
        let checkout = first_line("git", &["rev-parse", "HEAD"]).map(|mut commit| {
            if first_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_some() {
                commit.push_str("-dirty");
            }
            commit
        });
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(unknown);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        Provenance {
            commit: BUILD_COMMIT.to_string(),
            checkout: checkout.filter(|c| c != BUILD_COMMIT),
            date_utc: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(unknown),
            host: first_line("uname", &["-n"]).unwrap_or_else(unknown),
            kernel: first_line("uname", &["-r"]).unwrap_or_else(unknown),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            tools: tools
                .iter()
                .map(|(p, a)| match first_line(p, a) {
                    Some(line) if line.to_lowercase().contains(p) => line,
                    Some(line) => format!("{p}: {line}"),
                    None => format!("{p}: not found"),
                })
                .collect(),
        }
    }

    /// The README section describing the run.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("## How this was made\n\n");
        s.push_str(&format!("- command: `{}`\n", self.command));
        match &self.checkout {
            Some(checkout) => s.push_str(&format!(
                "- commit: `{}` (the build's; run from a checkout of `{checkout}`)\n",
                self.commit
            )),
            None => s.push_str(&format!("- commit: `{}`\n", self.commit)),
        }
        s.push_str(&format!("- date: {}\n", self.date_utc));
        s.push_str(&format!(
            "- machine: {} ({} cores, {} GiB), {}, Linux {}\n",
            self.host, self.cores, self.memory_gib, self.cpu, self.kernel
        ));
        for t in &self.tools {
            s.push_str(&format!("- tool: {t}\n"));
        }
        s
    }
}

/// Writes `text` to `dir/name`, creating `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| crate::Error::io(&path, e))
}

/// Writes `value` as pretty JSON to `dir/name` (a bench's results), creating `dir`.
pub fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> crate::Result<()> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| crate::Error::io(dir.join(name), std::io::Error::other(e)))?;
    write(dir, name, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_commit_is_stamped_and_another_checkout_is_named_beside_it() {
        assert!(!BUILD_COMMIT.is_empty());
        let mut p = Provenance::collect(&[]);
        assert_eq!(p.commit, BUILD_COMMIT);
        p.commit = "aaaa".into();
        p.checkout = None;
        assert!(p.markdown().contains("- commit: `aaaa`\n"));
        p.checkout = Some("bbbb".into());
        assert!(p
            .markdown()
            .contains("- commit: `aaaa` (the build's; run from a checkout of `bbbb`)\n"));
        let json = serde_json::to_string(&p).expect("serializes");
        let back: Provenance = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.checkout.as_deref(), Some("bbbb"));
    }
}
