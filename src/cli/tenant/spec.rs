//! A tenant's spec as the CLI takes it: a spec file (`pico tenant add --spec FILE`, TOML) and
//! the flags' own values (durations, `KEY=VALUE`).

use std::path::PathBuf;

use worker::cgroup::Limits;
use worker::tenant::{ClientAddress, TenantSpec};

/// `KEY=VALUE`.
pub(super) fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A tenant spec file (`pico tenant add --spec FILE`): what the flags say, in TOML. Unknown keys
/// are refused, so a key this version does not honour (a CPU quota, say) is an error, not a
/// silent default.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SpecFile {
    name: Option<String>,
    port: u16,
    cmd: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    /// As `--idle-timeout`: "90s", "500ms", "5m", "0".
    idle_timeout: Option<String>,
    /// "default" or "deterministic" (as `--deterministic`).
    #[serde(default)]
    layout: Layout,
    /// `false` as `--no-sandbox`.
    #[serde(default = "yes")]
    sandbox: bool,
    /// As `--read-only`.
    #[serde(default)]
    read_only: Vec<PathBuf>,
    /// As `--user-namespace`.
    #[serde(default)]
    user_namespace: bool,
    /// As `--memory-limit`: "256M", "1G", or a number of bytes.
    memory_limit: Option<MemorySize>,
    /// As `--cpu-weight`: 1..10000.
    cpu_weight: Option<u32>,
    /// As `--disk-quota`: "100M", "2G", or a number of bytes.
    disk_quota: Option<MemorySize>,
    /// As `--proxy-protocol`.
    #[serde(default)]
    proxy_protocol: bool,
    /// As `--client-address`: "link" or "loopback".
    #[serde(default)]
    client_address: ClientAddress,
    /// As `--checkpoint-every`: "5m", "30s".
    checkpoint_every: Option<String>,
}

fn yes() -> bool {
    true
}

/// A memory size in a spec file: a string with a unit, or a number of bytes.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum MemorySize {
    Text(String),
    Bytes(u64),
}

impl MemorySize {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            MemorySize::Text(text) => worker::cgroup::parse_memory_size(text),
            MemorySize::Bytes(n) => Ok(*n),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    #[default]
    Default,
    Deterministic,
}

impl SpecFile {
    pub(super) fn load(path: &std::path::Path) -> anyhow::Result<SpecFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read tenant spec {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("tenant spec {}: {e}", path.display()))
    }

    /// The spec to send; `name` (from the command line) wins over the file's.
    pub(super) fn into_spec(self, name: Option<&str>) -> anyhow::Result<TenantSpec> {
        let name = name.map(str::to_string).or(self.name).ok_or_else(|| {
            anyhow::anyhow!("tenant spec: no name (give one in the file or as NAME)")
        })?;
        if self.cmd.is_empty() {
            anyhow::bail!("tenant spec: cmd is empty");
        }
        let idle_timeout_ms = self
            .idle_timeout
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: idle_timeout: {e}"))?;
        let checkpoint_every_ms = self
            .checkpoint_every
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: checkpoint_every: {e}"))?;
        let limits = Limits {
            memory_limit: self
                .memory_limit
                .as_ref()
                .map(MemorySize::bytes)
                .transpose()
                .map_err(|e| anyhow::anyhow!("tenant spec: memory_limit: {e}"))?,
            cpu_weight: self.cpu_weight,
        };
        limits
            .check()
            .map_err(|e| anyhow::anyhow!("tenant spec: {e}"))?;
        let disk_quota = self
            .disk_quota
            .as_ref()
            .map(MemorySize::bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: disk_quota: {e}"))?;
        Ok(TenantSpec {
            name,
            port: self.port,
            cmd: self.cmd,
            deterministic: matches!(self.layout, Layout::Deterministic),
            idle_timeout_ms,
            env: self.env,
            workdir: self.workdir,
            sandbox: self.sandbox,
            read_only: self.read_only,
            user_namespace: self.user_namespace,
            limits,
            disk_quota,
            proxy_protocol: self.proxy_protocol,
            client_address: self.client_address,
            checkpoint_every_ms,
        })
    }
}

/// A duration given as `"<n>ms"`, `"<n>s"`, `"<n>m"`, `"<n>h"` or a bare number of seconds, in ms.
pub(super) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 500ms or 5m"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::{parse_duration_ms, parse_env, ClientAddress, SpecFile};

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("3s"), Ok(3_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("3x").is_err());
        assert!(parse_duration_ms("s").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn a_spec_file_says_what_the_flags_say_and_refuses_what_it_does_not_know() {
        let text = r#"
            name = "web"
            port = 8080
            cmd = ["python3", "-m", "http.server", "8080"]
            env = { GREETING = "hi" }
            workdir = "/srv/web"
            idle_timeout = "90s"
            layout = "deterministic"
            memory_limit = "256M"
            cpu_weight = 50
            disk_quota = "100M"
            user_namespace = true
            client_address = "loopback"
        "#;
        let file: SpecFile = toml::from_str(text).unwrap();
        let spec = file.into_spec(None).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.port, 8080);
        assert_eq!(spec.idle_timeout_ms, Some(90_000));
        assert!(spec.deterministic);
        assert_eq!(spec.limits.memory_limit, Some(256 << 20));
        assert_eq!(spec.limits.cpu_weight, Some(50));
        assert_eq!(spec.disk_quota, Some(100 << 20));
        assert!(spec.user_namespace);
        assert_eq!(spec.client_address, ClientAddress::Loopback);
        assert_eq!(spec.env["GREETING"], "hi");
        assert_eq!(
            spec.workdir.as_deref(),
            Some(std::path::Path::new("/srv/web"))
        );
        let named: SpecFile = toml::from_str(text).unwrap();
        assert_eq!(named.into_spec(Some("other")).unwrap().name, "other");

        let err = toml::from_str::<SpecFile>("port = 1\ncmd = [\"x\"]\ncpu_quota = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu_quota"), "{err}");
        let bytes: SpecFile =
            toml::from_str("port = 1\ncmd = [\"x\"]\nmemory_limit = 268435456\n").unwrap();
        let spec = bytes.into_spec(Some("b")).unwrap();
        assert_eq!(spec.limits.memory_limit, Some(256 << 20));
        for (bad, says) in [
            ("memory_limit = \"1Q\"", "memory_limit"),
            ("memory_limit = 256", "256M"),
            ("cpu_weight = 0", "cpu_weight"),
            ("cpu_weight = 10001", "cpu_weight"),
        ] {
            let text = format!("port = 1\ncmd = [\"x\"]\n{bad}\n");
            let file: SpecFile = toml::from_str(&text).unwrap();
            let err = file.into_spec(Some("b")).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = toml::from_str::<SpecFile>("port = 1\ncmd = [\"x\"]\nlayout = \"random\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("random"), "{err}");
        let err = toml::from_str::<SpecFile>("port = 1\ncmd = [\"x\"]\nclient_address = \"lo\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        let nameless: SpecFile = toml::from_str("port = 1\ncmd = [\"x\"]\n").unwrap();
        assert_eq!(nameless.client_address, ClientAddress::Link);
        assert!(nameless.into_spec(None).is_err());
    }
}
