//! An ingest's packing: the pack being filled, the pages it already packed, and the full packs
//! uploading (at most [`PACKS_IN_FLIGHT`]) while the next ones are built; a pack's commit.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};

use super::IngestReport;
use crate::blocking::blocking;
use crate::error::Result;
use crate::pack::PackBuilder;
use crate::page::{self, PageId};
use crate::store::PageStore;

/// Full packs uploading (and being cached locally) while the next ones are built.
const PACKS_IN_FLIGHT: usize = 2;

impl PageStore {
    /// Uploads a pack and, once it is durable, makes its pages known and queues them for the
    /// local tier (cached behind the commit: [`crate::local::Filler`]).
    pub(super) async fn commit_pack(&self, builder: PackBuilder) -> Result<PackCommitted> {
        // Sealing hashes the whole pack: off the thread that builds the next one.
        let (pack, data, entries) = blocking(move || Ok(builder.finish())).await?;
        let (pack, data) = self.unused_name(pack, data);
        let data = bytes::Bytes::from(data);
        // Keep the encoded pages (shared, not copied) to warm the local tier once the pack is
        // durable.
        let local_copy = self.read_path.filler().is_some().then(|| data.clone());
        let len = self.put_pack(pack, data, &entries).await?;
        if let (Some(filler), Some(data)) = (self.read_path.filler().cloned(), local_copy) {
            // Waits only while the fill queue is full.
            blocking(move || {
                filler.submit(data, entries);
                Ok(())
            })
            .await?;
        }
        Ok(PackCommitted { bytes: len })
    }
}

/// A pack that is durable in the cold tier.
pub(super) struct PackCommitted {
    bytes: u64,
}

impl PackCommitted {
    fn add_to(&self, report: &mut IngestReport) {
        report.packs_written += 1;
        report.bytes_uploaded += self.bytes;
    }
}

pub(super) type Upload<'a> = futures::future::BoxFuture<'a, Result<PackCommitted>>;

/// The packing state of one ingest: the pack being filled, the pages this ingest already
/// packed, and the full packs still uploading.
pub(super) struct Packing<'a> {
    /// [`IngestOptions::keep_in_memory`](super::IngestOptions::keep_in_memory).
    pub(super) keep_in_memory: bool,
    pub(super) builder: PackBuilder,
    pub(super) seen: page::PageSet,
    /// Pages a running gc deletes: stored again, never referenced ([`crate::lock`]).
    pub(super) doomed: Option<Arc<page::PageSet>>,
    uploads: FuturesUnordered<Upload<'a>>,
}

impl<'a> Packing<'a> {
    pub(super) fn new(keep_in_memory: bool, doomed: Option<Arc<page::PageSet>>) -> Packing<'a> {
        Packing {
            keep_in_memory,
            builder: PackBuilder::new(),
            seen: page::PageSet::default(),
            doomed,
            uploads: FuturesUnordered::new(),
        }
    }

    /// Commits the last pack, partly filled, and waits until every pack is durable.
    pub(super) async fn finish(
        &mut self,
        store: &'a PageStore,
        report: &mut IngestReport,
    ) -> Result<()> {
        let last = std::mem::take(&mut self.builder);
        if !last.is_empty() {
            self.uploads.push(Box::pin(store.commit_pack(last)));
        }
        while let Some(done) = self.uploads.next().await {
            done?.add_to(report);
        }
        Ok(())
    }

    pub(super) fn is_doomed(&self, id: &PageId) -> bool {
        self.doomed.as_ref().is_some_and(|d| d.contains(id))
    }

    /// Runs `work` while the uploads in flight make progress.
    pub(super) async fn uploading<T>(
        &mut self,
        report: &mut IngestReport,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                Some(done) = self.uploads.next(), if !self.uploads.is_empty() => {
                    done?.add_to(report);
                }
            }
        }
    }

    /// Queues an upload, first waiting for one to finish if [`PACKS_IN_FLIGHT`] are under way.
    pub(super) async fn start_upload(
        &mut self,
        report: &mut IngestReport,
        upload: impl std::future::Future<Output = Result<PackCommitted>> + Send + 'a,
    ) -> Result<()> {
        while self.uploads.len() >= PACKS_IN_FLIGHT {
            if let Some(done) = self.uploads.next().await {
                done?.add_to(report);
            }
        }
        self.uploads.push(Box::pin(upload));
        Ok(())
    }
}
