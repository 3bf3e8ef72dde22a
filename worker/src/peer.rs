//! This worker as a peer tier of another, and another worker as this one's
//! ([`pagestore::peer`]): during a move, the destination reads the pages it does not hold from
//! the source's local tier, over the source's API (`POST /v1/pages`, the API's bearer token),
//! before it asks the cold tier.
//!
//! The workers of a cluster share one API token (the hub presents it too), so a worker asks a
//! peer with its own. The peer is registered when a tenant is adopted from a worker that still
//! holds its pages (a move), for that tenant's restore: removed once the restore has every page,
//! and at most [`PEER_LASTS`] after the adoption whatever happens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use pagestore::codec::Codec;
use pagestore::peer::{wire, PeerFetch, PeerTier};
use pagestore::{PageId, PageStore};
use tracing::info;

use crate::api::client::call_bytes;
use crate::error::{Error, Result};
use crate::host::Worker;
use crate::protocol::PeerRef;

/// The route a peer's page requests come to.
pub(crate) const PAGES_PATH: &str = "/v1/pages";

/// How long a peer's request waits at most for this worker's newest pages to reach its local
/// tier.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// How long a peer is asked at most after an adoption.
pub(crate) const PEER_LASTS: Duration = Duration::from_secs(600);

/// Answers a peer's request for pages: each as this worker's local tier holds it, or not held.
pub(crate) async fn serve(store: Arc<PageStore>, request: Bytes) -> Result<Vec<u8>> {
    let ids = Arc::new(wire::decode_request(&request).map_err(Error::BadRequest)?);
    let mut pages = local_pages(&store, &ids, None).await?;
    if pages.iter().any(Option::is_none) {
        // A checkpoint's pages reach the local tier just behind its commit, and a move asks
        // for them right after: wait for that (briefly: a busy host is always caching
        // something), then look again for the missing ones.
        let _ = tokio::time::timeout(SETTLE_WAIT, store.local_settled()).await;
        pages = local_pages(&store, &ids, Some(pages)).await?;
    }
    Ok(wire::encode_answer(&pages))
}

/// Pages as the local tier keeps them (`None`: not held).
type LocalPages = Vec<Option<(Codec, Vec<u8>)>>;

/// `ids` as the local tier holds them; those `found` has already are kept as they are.
async fn local_pages(
    store: &Arc<PageStore>,
    ids: &Arc<Vec<PageId>>,
    found: Option<LocalPages>,
) -> Result<LocalPages> {
    let (store, ids) = (store.clone(), ids.clone());
    tokio::task::spawn_blocking(move || {
        let mut pages = found.unwrap_or_else(|| vec![None; ids.len()]);
        let Some(local) = store.local() else {
            return pages;
        };
        for (page, id) in pages.iter_mut().zip(ids.iter()) {
            if page.is_none() {
                *page = match local.get(id) {
                    Ok(Some((codec, data))) if codec.is_single_page() => Some((codec, data)),
                    _ => None,
                };
            }
        }
        pages
    })
    .await
    .map_err(|source| Error::TaskFailed {
        task: "peer pages",
        source,
    })
}

/// Another worker's local tier, through its API.
struct HttpPeer {
    name: String,
    api: SocketAddr,
    token: String,
}

impl PeerTier for HttpPeer {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(&'a self, ids: &'a [PageId]) -> PeerFetch<'a> {
        Box::pin(async move {
            let answer = call_bytes(
                "peer",
                self.api,
                &self.token,
                PAGES_PATH,
                wire::encode_request(ids),
            )
            .await
            .map_err(|e| e.to_string())?;
            wire::decode_answer(answer, ids.len())
        })
    }
}

impl Worker {
    /// Reads the pages of `tenant`'s restore from `peer` (before the cold tier) from now until
    /// the restore has them all, at most [`PEER_LASTS`]. Needs this worker's API token, which
    /// the cluster's workers share; without one (no TCP API) the peer is not used.
    pub(crate) fn read_from_peer(&self, tenant: &str, peer: &PeerRef) {
        let token = match crate::api::api_token(&self.config) {
            Ok(Some(token)) => token.text().to_string(),
            _ => {
                info!(peer = %peer.name, "no API token to ask a peer with: its pages come from the cold tier");
                return;
            }
        };
        let http = HttpPeer {
            name: format!("worker {} ({})", peer.name, peer.api),
            api: peer.api,
            token,
        };
        info!(peer = %http.name, "reading this tenant's pages from its previous worker first");
        self.store.peers().add(tenant, Arc::new(http), PEER_LASTS);
    }

    /// Stops asking a peer for `tenant`'s pages (its restore has them all).
    pub(crate) fn done_with_peer(&self, tenant: &str) {
        done_with_peer(&self.store, tenant);
    }
}

/// Stops asking a peer for `tenant`'s pages in `store` (also for a restore's background, which
/// holds the store, not the worker).
pub(crate) fn done_with_peer(store: &PageStore, tenant: &str) {
    if store.peers().remove(tenant) {
        info!(
            tenant,
            "its restore has every page: the peer is no longer asked"
        );
    }
}
