//! A tenant's limits as its spec gives them: a memory limit and a CPU weight, checked and parsed.

use serde::{Deserialize, Serialize};

/// cgroup v2's range of `cpu.weight`, and its default.
pub const CPU_WEIGHT_MIN: u32 = 1;
pub const CPU_WEIGHT_MAX: u32 = 10_000;
pub const CPU_WEIGHT_DEFAULT: u32 = 100;

/// The smallest memory limit a tenant may have: below it nothing starts, and a limit of "256"
/// (bytes) was most likely meant as "256M".
pub const MEMORY_LIMIT_MIN: u64 = 1 << 20;

/// A tenant's limits, as its spec gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Its memory (RAM) limit in bytes; none: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Its CPU weight, 1..=10000 (cgroup v2's `cpu.weight`); none: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
}

impl Limits {
    /// Why these limits cannot be set, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if let Some(limit) = self.memory_limit {
            if limit < MEMORY_LIMIT_MIN {
                return Err(format!(
                    "memory_limit {limit} bytes is under the least of 1 MiB (write 256M for 256 MiB)"
                ));
            }
        }
        if let Some(weight) = self.cpu_weight {
            if !(CPU_WEIGHT_MIN..=CPU_WEIGHT_MAX).contains(&weight) {
                return Err(format!(
                    "cpu_weight {weight} is not in {CPU_WEIGHT_MIN}..={CPU_WEIGHT_MAX} (default {CPU_WEIGHT_DEFAULT})"
                ));
            }
        }
        Ok(())
    }
}

/// Parses a memory size: a number of bytes, or a whole number with a binary suffix `K`, `M`,
/// `G` or `T` (1024-based; `Ki`, `KiB`, `KB`... and lower case read the same): "268435456",
/// "256M", "256MiB", "1G".
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a memory size like 256M, 1G or a number of bytes");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// v1's `cpu.shares` for a v2 `cpu.weight` (100 ↔ 1024).
pub(crate) fn shares_of_weight(weight: u32) -> u64 {
    u64::from(weight) * 1024 / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_and_limits() {
        assert_eq!(parse_memory_size("268435456"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256M"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_memory_size("256mb"), Ok(256 << 20));
        assert_eq!(parse_memory_size("1G"), Ok(1 << 30));
        assert_eq!(parse_memory_size("512k"), Ok(512 << 10));
        assert_eq!(parse_memory_size("2T"), Ok(2 << 40));
        for bad in ["", "M", "1.5G", "-1", "12Q", "1 G B"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_memory_size("99999999999T").is_err());
        let ok = Limits {
            memory_limit: Some(1 << 20),
            cpu_weight: Some(10_000),
        };
        assert_eq!(ok.check(), Ok(()));
        let tiny = Limits {
            memory_limit: Some(256),
            ..Limits::default()
        };
        assert!(tiny.check().unwrap_err().contains("256M"));
        for weight in [0, 10_001] {
            let bad = Limits {
                cpu_weight: Some(weight),
                ..Limits::default()
            };
            assert!(bad.check().unwrap_err().contains("1..=10000"));
        }
    }
}
