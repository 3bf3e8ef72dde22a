//! Fuzzes the transmission phase: arbitrary bytes as a stream of requests against a real export
//! (a small checkpoint with zero and data pages in a temporary store). Nothing may panic; every
//! reply must be well-formed enough to write.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pager::nbd::handshake::{transmission_flags, ExportInfo, Negotiated};
use pager::nbd::{transmission, Export, ExportOptions, ExportSpec, ExportTable};
use pagestore::{PageStore, StoreConfig, PAGE_SIZE};

struct World {
    rt: tokio::runtime::Runtime,
    export: Arc<Export>,
    _home: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let home = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let src = home.path().join("img");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut data = vec![0u8; 16 * PAGE_SIZE];
        for (i, page) in data.chunks_mut(PAGE_SIZE).enumerate() {
            if i % 3 != 1 {
                page.fill(i as u8 + 1);
            }
        }
        std::fs::write(src.join("pages-1.img"), &data).expect("write");
        let export = rt.block_on(async {
            let store = Arc::new(
                PageStore::open(&StoreConfig::embedded(home.path()))
                    .await
                    .expect("store"),
            );
            let c = store.ingest("f", &src).await.expect("ingest").checkpoint;
            let spec = ExportSpec {
                checkpoint: c.id.to_string(),
                file: None,
            };
            let table = ExportTable::open(store, &[spec], &ExportOptions::default())
                .await
                .expect("exports");
            table.get("").expect("one export").clone()
        });
        World {
            rt,
            export,
            _home: home,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let w = world();
    let structured = mode & 1 != 0;
    let neg = Negotiated {
        export: ExportInfo {
            name: w.export.name().to_string(),
            size: w.export.size(),
            writable: false,
        },
        flags: transmission_flags(false, structured),
        structured,
        base_allocation: structured && mode & 2 != 0,
    };
    w.rt.block_on(async {
        let _ = transmission::serve(input, tokio::io::sink(), w.export.clone(), neg).await;
        // Let the request tasks finish before the next input.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    });
});
