//! `pico config check [FILE]`: reads a configuration as every command reads it, and says what
//! is wrong with it (`FILE:LINE:COL: KEY: what`), including what the worker and the hub would
//! only find when they start; when nothing is, which file it read and which sections it gives.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::print_json;
use crate::config::PicoConfig;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration: every bad key with its line (exit 1), or what it gives.
    Check {
        /// The file (default: the one pico loads: --config or PICO_CONFIG, else HOME/pico.toml).
        file: Option<PathBuf>,
        /// Also print the effective configuration: the file over the embedded defaults (the S3
        /// secret key redacted).
        #[arg(long)]
        effective: bool,
    },
}

pub fn run(
    home: &Path,
    config: Option<&Path>,
    json: bool,
    cmd: ConfigCommand,
) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file, effective } = cmd;
    let named = file.or_else(|| config.map(Path::to_path_buf));
    let path = named.clone().unwrap_or_else(|| home.join("pico.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
            let config = PicoConfig::embedded(home);
            if json {
                let mut out = json!({"file": path, "exists": false, "ok": true, "sections": []});
                if effective {
                    out["effective"] = serde_json::to_value(shown(&config)?)?;
                }
                print_json(&out)?;
            } else {
                println!("{}: none, the embedded defaults apply", path.display());
                if effective {
                    print!("{}", toml::to_string(&shown(&config)?)?);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match PicoConfig::check(home, &path, &text) {
        Ok(read) => {
            let sections: Vec<&str> = read.user.keys().map(String::as_str).collect();
            if json {
                let mut out =
                    json!({"file": path, "exists": true, "ok": true, "sections": sections});
                if effective {
                    out["effective"] = serde_json::to_value(shown(&read.config)?)?;
                }
                print_json(&out)?;
            } else {
                match sections.is_empty() {
                    true => println!(
                        "{}: ok, no sections: the embedded defaults apply",
                        path.display()
                    ),
                    false => println!(
                        "{}: ok; sections given: {} (the embedded defaults for the rest)",
                        path.display(),
                        sections.join(", ")
                    ),
                }
                if effective {
                    print!("{}", toml::to_string(&shown(&read.config)?)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            if json {
                print_json(&json!({
                    "file": path, "exists": true, "ok": false, "problems": problems.list,
                }))?;
            } else {
                eprintln!("{problems}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The configuration as shown: the S3 secret key redacted.
fn shown(config: &PicoConfig) -> anyhow::Result<toml::Table> {
    let mut table = toml::Table::try_from(config)?;
    if let Some(secret) = table
        .get_mut("cold")
        .and_then(|cold| cold.get_mut("secret_access_key"))
    {
        *secret = toml::Value::String("<redacted>".into());
    }
    Ok(table)
}
