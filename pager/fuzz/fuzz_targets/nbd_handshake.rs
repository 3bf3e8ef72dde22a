//! Fuzzes the NBD handshake and the pure decoders: arbitrary bytes from a client must never panic
//! the server, only end in a negotiated export, a polite abort, or an error.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pager::nbd::handshake::{negotiate, Catalog, ExportInfo};
use pager::nbd::proto::{InfoRequest, MetaContextRequest, OptionHeader, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Two;

impl Catalog for Two {
    fn lookup(&self, name: &str) -> Option<ExportInfo> {
        let (size, writable) = match name {
            "" | "a/pages-1.img" => (1 << 20, false),
            "b" => (4097, true),
            _ => return None,
        };
        Some(ExportInfo {
            name: if name.is_empty() { "a/pages-1.img".into() } else { name.into() },
            size,
            writable,
        })
    }
    fn names(&self) -> Vec<String> {
        vec!["a/pages-1.img".into(), "b".into()]
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Request::decode(data);
    let _ = OptionHeader::decode(data);
    let _ = InfoRequest::decode(data);
    let _ = MetaContextRequest::decode(data);

    runtime().block_on(async {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let feed = async {
            // The server may stop reading early; a failed write is fine.
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let serve = async {
            let r = negotiate(&mut server, &Two).await;
            drop(server);
            if let Ok(Some(n)) = r {
                assert!(Two.lookup(&n.export.name).is_some());
            }
        };
        tokio::join!(feed, serve);
    });
});
