//! The access log: which pages of which image files a restore read, in order, and when.
//!
//! This is the raw material of the ActiveSet. Each record names the page both by position (file
//! and page index) and by content (page id), so a learned set survives a new checkpoint that moves
//! the same content, and notices when the content at an address changes.

use std::sync::Mutex;
use std::time::Instant;

use pagestore::PageId;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct PageAccess {
    /// Image file, e.g. `pages-1.img`.
    pub file: String,
    /// Page index within the file.
    pub page: u64,
    #[serde(serialize_with = "hex_id")]
    pub id: PageId,
    /// Microseconds since the mount.
    pub at_us: u64,
    /// Size of the read request that touched it (a fault reads one page; CRIU's background
    /// copy reads up to 4 MiB).
    pub request_len: u32,
    /// Which read request, in arrival order (pages of one request share it).
    pub request: u64,
}

fn hex_id<S: serde::Serializer>(id: &PageId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

pub struct AccessLog {
    started: Instant,
    records: Mutex<Vec<PageAccess>>,
    requests: std::sync::atomic::AtomicU64,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            started: Instant::now(),
            records: Mutex::new(Vec::new()),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl AccessLog {
    pub fn record(&self, file: &str, first_page: u64, ids: &[PageId], request_len: u32) {
        let at_us = self.elapsed_us();
        let request = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for (i, id) in ids.iter().enumerate() {
            let page = first_page + i as u64;
            tracing::debug!(file, page, id = %id, at_us, request_len, "page read");
            records.push(PageAccess {
                file: file.to_string(),
                page,
                id: *id,
                at_us,
                request_len,
                request,
            });
        }
    }

    /// Microseconds since the mount.
    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// When the latest page read arrived (µs since the mount), if any has.
    pub fn last_at_us(&self) -> Option<u64> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map(|r| r.at_us)
    }

    /// A copy of every record so far, in the order the reads arrived.
    pub fn snapshot(&self) -> Vec<PageAccess> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes `accesses` to `path` as JSON lines, one record per line, in the order given (the
/// worker saves each lazy restore's log so, as `tenants/NAME/access-GEN.jsonl`).
pub fn write_jsonl(path: &std::path::Path, accesses: &[PageAccess]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for a in accesses {
        serde_json::to_writer(&mut out, a)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
