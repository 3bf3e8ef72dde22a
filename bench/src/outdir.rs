//! The output directory of a benchmark run: results, charts, and a README saying how they were
//! made (command, commit, machine, date), so a figure can always be traced and rerun.

use std::path::{Path, PathBuf};

use crate::Error;

/// Creates `dir` and writes its README.
pub fn prepare(dir: &Path, suite: &str, command: &str) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let readme = format!(
        "# pico bench {suite}\n\n\
         - command: `{command}`\n\
         - commit: {}\n\
         - date (UTC): {}\n\
         - machine: {} ({} cores, {})\n\
         - criu: {}\n\n\
         Files: `results.json` (machine-readable), `*.svg` (charts).\n",
        run("git", &["rev-parse", "HEAD"]),
        run("date", &["-u", "+%Y-%m-%d %H:%M:%S"]),
        run("uname", &["-srm"]),
        run("nproc", &[]),
        run(
            "sh",
            &["-c", "free -h | awk '/Mem:/ {print $2\" memory\"}'"]
        ),
        run("sh", &["-c", "criu --version | head -1"]),
    );
    let path = dir.join("README.md");
    std::fs::write(&path, readme).map_err(|e| Error::io(&path, e))?;
    Ok(dir.to_path_buf())
}
