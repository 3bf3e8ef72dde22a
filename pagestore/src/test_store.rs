//! Stores for the crate's unit tests: one place for the set-up several of them share.

use std::path::Path;
use std::sync::Arc;

use crate::page::PageId;
use crate::{PageStore, StoreConfig};

/// A store under `home` holding one checkpoint of an image of `pages` (`testkit::image`), opened
/// again without its local tier, so that every page not in memory is read from the cold tier;
/// and the checkpoint's non-zero pages in image order.
pub(crate) async fn cold_only_image(
    home: &Path,
    pages: &[(u8, u64)],
) -> (Arc<PageStore>, Vec<PageId>) {
    let src = home.join("src");
    testkit::image::write_image_dir(&src, pages, 1);
    // Its page files paged as CRIU's are (the library knows no format).
    let options = crate::ingest::IngestOptions {
        paged: crate::ingest::PagedFiles::named(|name| name.starts_with("pages-")),
        ..Default::default()
    };
    let checkpoint = PageStore::open(&StoreConfig::embedded(home))
        .await
        .unwrap()
        .ingest_with("t", &src, &options)
        .await
        .unwrap()
        .checkpoint;
    let mut cold_only = StoreConfig::embedded(home);
    cold_only.local.enabled = false;
    let store = Arc::new(PageStore::open(&cold_only).await.unwrap());
    let ids = store
        .manifest(&checkpoint)
        .await
        .unwrap()
        .non_zero_pages()
        .copied()
        .collect();
    (store, ids)
}
