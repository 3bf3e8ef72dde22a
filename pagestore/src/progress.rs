//! Progress of long work (an ingest, a gc, a verify) told to whoever runs it, so that a front end
//! can show it: the library never prints, and logs stay as they are.

/// Told as work advances. Every method has a default that does nothing.
pub trait Progress: Send + Sync {
    /// A stage of the work begins: `total` steps (0 when not known beforehand) of `bytes` bytes
    /// in all (0: not counted).
    fn stage(&self, _name: &str, _total: u64, _bytes: u64) {}
    /// `steps` more steps done, `bytes` more bytes through.
    fn advance(&self, _steps: u64, _bytes: u64) {}
}

/// Tells nobody.
pub struct Silent;

impl Progress for Silent {}

/// A [`Silent`] to borrow.
pub static SILENT: Silent = Silent;

/// A [`Progress`] to carry in options that are cloned and printed (`IngestOptions`); none by
/// default.
#[derive(Clone, Default)]
pub struct Reporter(Option<std::sync::Arc<dyn Progress>>);

impl Reporter {
    pub fn new(progress: std::sync::Arc<dyn Progress>) -> Reporter {
        Reporter(Some(progress))
    }

    /// What it reports to.
    pub fn get(&self) -> &dyn Progress {
        match &self.0 {
            Some(p) => p.as_ref(),
            None => &SILENT,
        }
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Reporter"
        } else {
            "Silent"
        })
    }
}
