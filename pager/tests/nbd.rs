//! The NBD server against real clients from Debian (libnbd's nbdinfo, nbdcopy, nbdsh; qemu-img,
//! qemu-io), plus raw-socket abuse. The server runs in-process on a loopback port.
// Fixtures and helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pager::nbd::{ExportOptions, ExportSpec, ExportTable, NbdServer};
use pagestore::{CheckpointRef, PageStore, StoreConfig, PAGE_SIZE};
use testkit::nbd::{has_tool, is_zero_page, make_image_dir, run_ok, self_signed_cert, uri};

const PAGES: usize = 700;

struct Fixture {
    home: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    store: Arc<PageStore>,
    checkpoint: CheckpointRef,
    /// The bytes of pages-1.img as ingested.
    data: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let src = home.path().join("img");
        let data = make_image_dir(&src, PAGES);
        let (store, checkpoint) = rt.block_on(async {
            let store = PageStore::open(&StoreConfig::embedded(home.path()))
                .await
                .unwrap();
            let c = store
                .ingest_with("web", &src, &criu_image::ingest_options())
                .await
                .unwrap()
                .checkpoint;
            (Arc::new(store), c)
        });
        Fixture {
            home,
            rt,
            store,
            checkpoint,
            data,
        }
    }

    /// Serves `checkpoint` (all its page files) and returns the server's address.
    fn serve(&self, checkpoint: &CheckpointRef, writable: bool) -> SocketAddr {
        let spec = ExportSpec {
            checkpoint: checkpoint.id.to_string(),
            file: None,
        };
        let options = ExportOptions { writable };
        let store = self.store.clone();
        self.rt.block_on(async move {
            let table = ExportTable::open(store, &[spec], &options).await.unwrap();
            let server = NbdServer::bind("127.0.0.1:0".parse().unwrap(), Arc::new(table))
                .await
                .unwrap();
            let addr = server.local_addr().unwrap();
            tokio::spawn(server.run());
            addr
        })
    }

    fn export(&self, checkpoint: &CheckpointRef) -> String {
        format!("{}/pages-1.img", checkpoint.id)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

/// The client programs a test needs; a missing one fails the test (deploy/setup.sh installs them).
fn need(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools.iter().filter(|t| !has_tool(t)).collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not installed: run deploy/setup.sh (apt-get install libnbd-bin qemu-utils nbdkit)"
    );
    true
}

#[test]
fn nbdinfo_lists_exports_and_maps_zero_pages_as_holes() {
    if !need(&["nbdinfo"]) {
        return;
    }
    let f = Fixture::new();
    let addr = f.serve(&f.checkpoint, false);
    let out = run_ok(Command::new("nbdinfo").arg("--list").arg(uri(addr, "")));
    let listing = String::from_utf8_lossy(&out.stdout);
    for file in ["pages-1.img", "pages-2.img"] {
        let name = format!("{}/{file}", f.checkpoint.id);
        assert!(listing.contains(&name), "{name} not in:\n{listing}");
    }
    assert!(
        !listing.contains("core-1.img"),
        "inline files are not exports"
    );

    let out = run_ok(
        Command::new("nbdinfo")
            .args(["--map", "--json"])
            .arg(uri(addr, &f.export(&f.checkpoint))),
    );
    let map: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected: Vec<(u64, u64, u64)> = Vec::new(); // offset, length, type
    for i in 0..PAGES {
        let kind = if is_zero_page(i) { 3 } else { 0 };
        match expected.last_mut() {
            Some((_, len, k)) if *k == kind => *len += PAGE_SIZE as u64,
            _ => expected.push(((i * PAGE_SIZE) as u64, PAGE_SIZE as u64, kind)),
        }
    }
    let got: Vec<(u64, u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["type"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(got.iter().any(|e| e.2 == 3) && got.iter().any(|e| e.2 == 0));
}

#[test]
fn nbdcopy_and_qemu_img_see_what_materialize_writes() {
    if !need(&["nbdcopy", "qemu-img"]) {
        return;
    }
    let f = Fixture::new();
    let addr = f.serve(&f.checkpoint, false);
    let dir = f.path("materialized");
    f.rt.block_on(f.store.materialize(&f.checkpoint, &dir))
        .unwrap();
    for file in ["pages-1.img", "pages-2.img"] {
        let export = uri(addr, &format!("{}/{file}", f.checkpoint.id));
        let copy = f.path(&format!("copy-{file}"));
        run_ok(Command::new("nbdcopy").arg(&export).arg(&copy));
        let want = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), want, "{file} differs");
        run_ok(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "raw"])
                .arg(dir.join(file))
                .arg(&export),
        );
    }
    assert_eq!(
        std::fs::read(dir.join("pages-1.img")).unwrap(),
        f.data,
        "materialize is byte-identical"
    );
}

#[test]
fn nbdsh_edge_cases() {
    if !need(&["/usr/bin/nbdsh"]) {
        return;
    }
    let f = Fixture::new();
    let addr = f.serve(&f.checkpoint, false);
    let expect = f.path("expect.img");
    std::fs::write(&expect, &f.data).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nbd_edge.py");
    let out = run_ok(
        Command::new("/usr/bin/nbdsh")
            // nbdsh runs `python3 -m nbd`: Debian's python3 has the module, pyenv's does not.
            .env("PATH", "/usr/bin:/bin")
            .env("NBD_URI", uri(addr, &f.export(&f.checkpoint)))
            .env("NBD_EXPECT", &expect)
            .arg("-n")
            .arg("-c")
            .arg(format!(
                "exec(open({:?}).read())",
                script.display().to_string()
            )),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nbdsh edge cases: ok"));
}

/// A minimal raw client: handshake with NBD_OPT_EXPORT_NAME (no zeroes), returns the stream.
fn raw_connect(addr: SocketAddr, export: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut opt = b"IHAVEOPT".to_vec();
    opt.extend_from_slice(&1u32.to_be_bytes());
    opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
    opt.extend_from_slice(export.as_bytes());
    s.write_all(&opt).unwrap();
    let mut info = [0u8; 10];
    s.read_exact(&mut info).unwrap();
    s
}

fn request(command: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&command.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

/// Reads until the server closes the connection (or errors), returning what it sent.
fn drain(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn a_cold_read_of_many_pages_is_one_ranged_get() {
    let f = Fixture::new();
    f.rt.block_on(f.store.local_settled()).unwrap();
    f.store.evict_hot();
    f.store.evict_local().unwrap();
    let addr = f.serve(&f.checkpoint, false);
    let pages = 16;
    let len = pages * PAGE_SIZE;
    let data_pages = (0..pages).filter(|&i| !is_zero_page(i)).count();
    assert!(data_pages > 8, "the range holds {data_pages} stored pages");
    let gets = || f.store.counters().cold_requests.load(Ordering::Relaxed);
    let before = gets();

    let mut s = raw_connect(addr, &f.export(&f.checkpoint));
    s.write_all(&request(0, 7, 0, len as u32)).unwrap();
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..4], 0x6744_6698u32.to_be_bytes(), "simple reply");
    assert_eq!(reply[4..8], [0; 4], "no error");
    let mut data = vec![0u8; len];
    s.read_exact(&mut data).unwrap();
    assert!(data == f.data[..len], "the bytes ingested");
    // The request's stored pages went to the store in one call: neighbours in one pack, one GET.
    assert_eq!(gets() - before, 1, "cold GETs for {data_pages} pages");
}

#[test]
fn malformed_input_closes_only_that_connection() {
    if !need(&["nbdinfo"]) {
        return;
    }
    let f = Fixture::new();
    let addr = f.serve(&f.checkpoint, false);
    let export = f.export(&f.checkpoint);

    // Garbage instead of client flags / options.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    drain(s);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(&[0xff; 300]).unwrap();
    drain(s);
    // An option that claims a huge payload, then hangs up.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT\0\0\0\x07\xff\xff\xff\xff").unwrap();
    drop(s);
    // Unknown export name.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT\0\0\0\x01\0\0\0\x0b../../etc/x")
        .unwrap();
    let got = drain(s);
    assert_eq!(got.len(), 18, "only the greeting, then closed");

    // A truncated request, then hang up.
    let mut s = raw_connect(addr, &export);
    s.write_all(&request(0, 1, 0, 4096)[..20]).unwrap();
    drop(s);
    // A request with a bad magic closes the connection.
    let mut s = raw_connect(addr, &export);
    let mut bad = request(0, 1, 0, 4096);
    bad[0] = 0;
    s.write_all(&bad).unwrap();
    assert!(drain(s).is_empty());
    // A WRITE announcing more than the maximum block size closes the connection.
    let mut s = raw_connect(addr, &export);
    s.write_all(&request(1, 1, 0, u32::MAX)).unwrap();
    assert!(drain(s).is_empty());

    // Out-of-range, unknown and forbidden requests get errors and the connection carries on.
    let mut s = raw_connect(addr, &export);
    let size = f.data.len() as u64;
    for (cmd, off, len, errno) in [
        (0u16, size, 1u32, 22u32),    // read past the end: EINVAL
        (0, u64::MAX - 10, 4096, 22), // offset overflow: EINVAL
        (0, 0, 64 << 20, 22),         // larger than the maximum block size: EINVAL
        (7, 0, 4096, 22),             // block status without a context: EINVAL
        (42, 0, 0, 22),               // unknown command: EINVAL
        (4, 0, 4096, 1),              // trim on a read-only export: EPERM
    ] {
        s.write_all(&request(cmd, 7, off, len)).unwrap();
        let mut reply = [0u8; 16];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..4], &0x6744_6698u32.to_be_bytes());
        assert_eq!(
            u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]),
            errno,
            "command {cmd}"
        );
    }
    s.write_all(&request(0, 8, 4096 + 3, 100)).unwrap();
    let mut reply = [0u8; 116];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[4..8], &[0; 4]);
    assert_eq!(&reply[16..], &f.data[4099..4199]);
    s.write_all(&request(2, 9, 0, 0)).unwrap();
    assert!(drain(s).is_empty(), "DISC closes without a reply");

    // A client that connects and says nothing does not stop others.
    let _idle = TcpStream::connect(addr).unwrap();
    // And after all that, a normal client still works.
    let out = run_ok(Command::new("nbdinfo").arg(uri(addr, &export)));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}", size)));
}

#[test]
fn writable_export_commits_a_new_generation_on_flush() {
    if !need(&["qemu-io", "nbdcopy"]) {
        return;
    }
    let f = Fixture::new();
    let addr = f.serve(&f.checkpoint, true);
    run_ok(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 0xab 0 1M", "-c", "flush"])
            .arg(uri(addr, &f.export(&f.checkpoint))),
    );
    let latest =
        f.rt.block_on(f.store.latest("web"))
            .unwrap()
            .expect("a checkpoint");
    assert_eq!(latest.generation, f.checkpoint.generation + 1);
    let manifest = f.rt.block_on(f.store.manifest(&latest)).unwrap();
    assert_eq!(manifest.parent.as_ref(), Some(&f.checkpoint.id));

    // The flushed generation, served read-only by a new server, has the pattern...
    let addr2 = f.serve(&latest, false);
    let copy = f.path("new.img");
    run_ok(
        Command::new("nbdcopy")
            .arg(uri(addr2, &f.export(&latest)))
            .arg(&copy),
    );
    let got = std::fs::read(&copy).unwrap();
    assert_eq!(got.len(), f.data.len());
    assert!(got[..1 << 20].iter().all(|&b| b == 0xab));
    assert_eq!(&got[1 << 20..], &f.data[1 << 20..]);
    // ...as have other connections (nbdcopy opens several) to the writable export itself
    // (CAN_MULTI_CONN: one overlay per export, shared by all connections)...
    let copy = f.path("writable.img");
    run_ok(
        Command::new("nbdcopy")
            .arg(uri(addr, &f.export(&f.checkpoint)))
            .arg(&copy),
    );
    assert_eq!(std::fs::read(&copy).unwrap(), got);
    // ...and the original generation is unchanged.
    let addr3 = f.serve(&f.checkpoint, false);
    let copy = f.path("old.img");
    run_ok(
        Command::new("nbdcopy")
            .arg(uri(addr3, &f.export(&f.checkpoint)))
            .arg(&copy),
    );
    assert_eq!(std::fs::read(&copy).unwrap(), f.data);
    // Unflushed writes are visible on the export but do not make a generation.
    run_ok(
        Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "read -P 0xab 0 1M",
                "-c",
                "write -P 0x11 4097 10",
                "-c",
                "read -P 0x11 4097 10",
                "-c",
                "read -P 0xab 4107 1000",
            ])
            .arg(uri(addr, &f.export(&f.checkpoint))),
    );
}

#[test]
fn tls_is_required_once_configured_and_works_with_libnbd() {
    if !need(&["nbdinfo", "nbdcopy", "openssl"]) {
        return;
    }
    let f = Fixture::new();
    let (cert, key) = self_signed_cert(f.home.path());
    let acceptor = pager::nbd::tls::acceptor(&cert, &key).unwrap();
    let spec = ExportSpec {
        checkpoint: f.checkpoint.id.to_string(),
        file: None,
    };
    let store = f.store.clone();
    let addr = f.rt.block_on(async move {
        let table = ExportTable::open(store, &[spec], &ExportOptions::default())
            .await
            .unwrap();
        let server = NbdServer::bind_tls("127.0.0.1:0".parse().unwrap(), Arc::new(table), acceptor)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.run());
        addr
    });
    let export = f.export(&f.checkpoint);
    let pki = f.path("pki");
    let tls_uri = format!("nbds://{addr}/{export}?tls-certificates={}", pki.display());
    let out = run_ok(Command::new("nbdinfo").arg(&tls_uri));
    assert!(String::from_utf8_lossy(&out.stdout).contains("with TLS"));
    let copy = f.path("tls.img");
    run_ok(Command::new("nbdcopy").arg(&tls_uri).arg(&copy));
    assert_eq!(std::fs::read(&copy).unwrap(), f.data);

    // Plaintext clients learn nothing: no export, no listing.
    let out = Command::new("nbdinfo")
        .arg(uri(addr, &export))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new("nbdinfo")
        .arg("--list")
        .arg(uri(addr, ""))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&export));
}
