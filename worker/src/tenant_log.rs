//! A tenant's log (its stdout and stderr, [`TenantDirs::log`]) as `pico tenant logs` shows it:
//! the last lines, read backwards from the end, so that a large log costs what is shown and not
//! what it holds.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::Worker;
#[cfg(doc)]
use crate::tenant::TenantDirs;

/// Lines shown when the request names no number.
pub const DEFAULT_TAIL_LINES: usize = 200;

/// The most bytes read from the end of a log, however many lines were asked for (a log of
/// very long lines is shown in part).
const MAX_TAIL_BYTES: u64 = 4 << 20;

/// Bytes read per step backwards.
const CHUNK_BYTES: u64 = 64 << 10;

/// The end of a tenant's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantLog {
    pub tenant: String,
    pub path: PathBuf,
    /// The last lines, oldest first (invalid UTF-8 replaced).
    pub lines: Vec<String>,
}

impl Worker {
    /// The last `lines` lines of tenant `name`'s log ([`DEFAULT_TAIL_LINES`] if `None`).
    pub async fn log_tail(&self, name: &str, lines: Option<usize>) -> Result<TenantLog> {
        let path = self.slot(name)?.dirs.log();
        let wanted = lines.unwrap_or(DEFAULT_TAIL_LINES);
        let read_from = path.clone();
        let lines = tokio::task::spawn_blocking(move || tail_of_file(&read_from, wanted))
            .await
            .map_err(|source| Error::TaskFailed {
                task: "log tail",
                source,
            })??;
        Ok(TenantLog {
            tenant: name.to_string(),
            path,
            lines,
        })
    }
}

fn tail_of_file(path: &Path, lines: usize) -> Result<Vec<String>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    tail(&mut file, lines, MAX_TAIL_BYTES).map_err(|e| Error::io(path, e))
}

/// The last `lines` lines of `file`, reading at most `max_bytes` from its end.
fn tail(
    file: &mut (impl Read + Seek),
    lines: usize,
    max_bytes: u64,
) -> std::io::Result<Vec<String>> {
    if lines == 0 {
        return Ok(Vec::new());
    }
    let end = file.seek(SeekFrom::End(0))?;
    let floor = end.saturating_sub(max_bytes);
    let mut start = end;
    let mut tail: Vec<u8> = Vec::new();
    let mut newlines = 0;
    // One newline more than lines wanted: the line before them ends there, so none is cut.
    while start > floor && newlines <= lines {
        let step = CHUNK_BYTES.min(start - floor);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; step as usize];
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&tail);
        tail = chunk;
    }
    let text = String::from_utf8_lossy(&tail);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        // Read from the middle of a line (or from just after the newline before the tail).
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    Ok(all[skip..].iter().map(|l| l.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn log(n: usize) -> Cursor<Vec<u8>> {
        let text: String = (1..=n).map(|i| format!("line {i}\n")).collect();
        Cursor::new(text.into_bytes())
    }

    #[test]
    fn the_last_lines_oldest_first() {
        assert_eq!(tail(&mut log(5), 2, 1 << 20).unwrap(), ["line 4", "line 5"]);
        assert_eq!(
            tail(&mut log(2), 10, 1 << 20).unwrap(),
            ["line 1", "line 2"]
        );
        assert!(tail(&mut log(2), 0, 1 << 20).unwrap().is_empty());
        assert!(tail(&mut log(0), 3, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn a_long_log_is_read_from_its_end_in_chunks() {
        // Beyond one chunk: ~80k lines of ~11 bytes.
        let lines = tail(&mut log(80_000), 3, 1 << 20).unwrap();
        assert_eq!(lines, ["line 79998", "line 79999", "line 80000"]);
        let many = tail(&mut log(80_000), 10_000, 1 << 20).unwrap();
        assert_eq!(many.len(), 10_000);
        assert_eq!(many[0], "line 70001");
    }

    #[test]
    fn a_last_line_without_newline_and_the_byte_bound() {
        let mut c = Cursor::new(b"a\nb\nc".to_vec());
        assert_eq!(tail(&mut c, 2, 1 << 20).unwrap(), ["b", "c"]);
        // 9 bytes allowed ("4\nline 5\n"): the cut line 4 is dropped.
        let cut = tail(&mut log(5), 3, 9).unwrap();
        assert_eq!(cut, ["line 5"]);
    }
}
