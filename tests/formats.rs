//! Every later version reads what this one wrote.
//!
//! `tests/fixtures/store-formats-1/` is a small store and the records around it, as the code
//! of the commit that added it wrote them ([docs/store-format.md](../docs/store-format.md#format-versions)):
//! - `cold/`: a directory cold tier holding two tenants' checkpoints (`alpha` generations 1 and
//!   2, `beta` generation 1: a page both share, a zero page, each image's files and the tenant's
//!   record and files archive), manifests of version 3 (alpha's generation 2 a delta against
//!   generation 1, a full one), packs of version 1 (fast, lz4) and 2 (dense, zstd frames, by
//!   gc's recompression), alpha's locality pack, alpha's ActiveSet (a metadata object) and the
//!   hub's record (`hub/state/`);
//! - `tenants/`: a worker's registry, one `tenant.json` per tenant;
//! - `expected.txt`: the BLAKE3 hash of every file of every checkpoint, taken from the files
//!   before they were ingested.
//!
//! The tests read a copy of it (never the fixture in place) with today's code: every checkpoint
//! materialized byte for byte, verify clean, the registry, the ActiveSet and the hub's record
//! as written; and each format's version raised past the newest known is refused by name.
//!
//! The fixture is never rewritten. A new version of a format adds a new fixture directory next
//! to this one (written by that version, with a test like this one), and this one stays, read
//! by every later version.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hub::durable::DurableState;
use hub::registry::{HubRecord, TenantRecord, WorkerRecord};
use pager::activeset::{ActivePage, ActiveSet, RestoreTrace};
use pagestore::cold::ColdTier;
use pagestore::config::ColdConfig;
use pagestore::locality::PagePos;
use pagestore::pack::FOOTER_LEN;
use pagestore::{CheckpointRef, Manifest, PageId, PageStore, StoreConfig, PAGE_SIZE};
use testkit::fixture::{lcg_page, repeated_line_page};
use worker::tenant::{ClientAddress, TenantDirs, TenantInfo, TenantSpec, TenantState};
use worker::tenant_files::{record_of, unpack, FILES_ARCHIVE, RECORD_FILE};

/// The tenants: name, public port, seed of their own random page.
const TENANTS: [(&str, u16, u64); 2] = [("alpha", 8081, 11), ("beta", 8082, 22)];
/// When the tenants were last active, as their records say.
const LAST_ACTIVE_MS: u64 = 1_700_000_000_000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-formats-1")
}

// ---- What the fixture holds, regenerated ----------------------------------------------------

fn text_page(tag: &str) -> Vec<u8> {
    repeated_line_page(&format!("picocenter fixture page: {tag}\n"))
}

/// The page every tenant holds (stored once).
fn shared_page() -> Vec<u8> {
    text_page("shared by alpha and beta")
}

/// The image files of `tenant`'s checkpoint `generation`: its pages (the shared page, a zero
/// page, a random page of its own, a page that generation 2 changes, and one that generation 2
/// adds), a small file that changes and one that does not.
fn image(tenant: &str, seed: u64, generation: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut pages = vec![
        shared_page(),
        vec![0; PAGE_SIZE],
        lcg_page(seed),
        text_page(&format!("{tenant}'s own page")),
    ];
    if generation == 2 {
        pages[3] = text_page(&format!("{tenant}'s own page, changed in generation 2"));
        pages.push(lcg_page(seed + 100));
    }
    vec![
        (
            "core-1.img",
            format!("core of {tenant}, generation {generation}\n").into_bytes(),
        ),
        (
            "mm-1.img",
            format!("mm of {tenant}: the same in every generation\n").into_bytes(),
        ),
        ("pages-1.img", pages.concat()),
    ]
}

/// The tenant's own files at `generation`: its working directory's `state.txt`, and its log.
fn own_files(tenant: &str, generation: u64) -> (Vec<u8>, Vec<u8>) {
    let state = format!("{tenant} visits: {generation}\n").into_bytes();
    let log: String = (1..=generation)
        .map(|g| format!("{tenant} served, then swapped out ({g})\n"))
        .collect();
    (state, log.into_bytes())
}

/// The tenant's record as it ran (the record carried in its checkpoints).
fn running(tenant: &str, port: u16) -> TenantInfo {
    let mut spec = TenantSpec::new(tenant, port, vec!["/usr/bin/app".into(), "--serve".into()]);
    spec.deterministic = true;
    spec.env.insert("APP_MODE".into(), "fixture".into());
    let mut info = TenantInfo::started(spec, 4242, vec![], None);
    info.last_active = Some(LAST_ACTIVE_MS);
    // Written before tenants chose the address they see their clients at: they saw the loopback.
    info.client_address = ClientAddress::Loopback;
    info
}

/// The tenant's record in the worker's registry, after its swap-out to `checkpoint`.
fn swapped_out(tenant: &str, port: u16, checkpoint: &CheckpointRef) -> TenantInfo {
    let mut info = running(tenant, port);
    info.state = TenantState::SwappedOut;
    info.pid = None;
    info.checkpoint = Some(checkpoint.id.to_string());
    info.generation = Some(checkpoint.generation);
    info.rss_bytes = Some(5 * PAGE_SIZE as u64);
    info
}

/// alpha's ActiveSet, learned by a restore of `checkpoint`.
fn activeset(checkpoint: &CheckpointRef) -> ActiveSet {
    let mut set = ActiveSet::new("alpha");
    let trace = RestoreTrace {
        checkpoint: checkpoint.id.to_string(),
        generation: checkpoint.generation,
        pages: vec![
            ActivePage {
                pagemap: "pagemap-1.img".into(),
                vaddr: 0x7f00_0000_0000,
                id: PageId::of(&shared_page()).to_hex(),
            },
            ActivePage {
                pagemap: "pagemap-1.img".into(),
                vaddr: 0x7f00_0000_2000,
                id: PageId::of(&lcg_page(11)).to_hex(),
            },
        ],
        eager_pages: 0,
        faults: 2,
        foreseen: 0,
    };
    set.record(trace, 4);
    set
}

/// The hub's record of the tenants, on one worker, at their newest checkpoints.
fn hub_record(newest: &BTreeMap<String, CheckpointRef>) -> HubRecord {
    let mut record = HubRecord::default();
    record.workers.insert(
        "w1".into(),
        WorkerRecord {
            api: "127.0.0.1:7070".parse().unwrap(),
            public_addr: "127.0.0.1".parse().unwrap(),
            draining: false,
        },
    );
    for (tenant, port, _) in TENANTS {
        let checkpoint = &newest[tenant];
        record.tenants.insert(
            tenant.into(),
            TenantRecord {
                worker: "w1".into(),
                port,
                checkpoint: Some(checkpoint.id.to_string()),
                generation: Some(checkpoint.generation),
                placed_because: "added on worker w1".into(),
            },
        );
    }
    record
}

/// A store over the cold tier at `cold`, without a local tier (every page from cold).
fn store_config(home: &Path, cold: &Path) -> StoreConfig {
    let mut config = StoreConfig::embedded(home);
    config.cold = ColdConfig::Dir {
        path: cold.to_path_buf(),
    };
    config.local.enabled = false;
    config
}

fn cold_tier(root: &Path) -> ColdTier {
    ColdTier::open(&ColdConfig::Dir {
        path: root.join("cold"),
    })
    .unwrap()
}

// ---- The program that wrote the fixture -----------------------------------------------------

/// Writes one checkpoint of `tenant` as a worker's swap-out would (its image files, then its
/// record and files archive staged beside them), and adds its files' hashes to `expected`.
async fn write_checkpoint(
    store: &PageStore,
    staging: &Path,
    (tenant, port, seed): (&str, u16, u64),
    generation: u64,
    expected: &mut String,
) -> CheckpointRef {
    let dir = staging.join(format!("{tenant}-{generation}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in image(tenant, seed, generation) {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let dirs = TenantDirs::new(staging, tenant);
    std::fs::create_dir_all(dirs.cwd()).unwrap();
    let (state, log) = own_files(tenant, generation);
    std::fs::write(dirs.cwd().join("state.txt"), state).unwrap();
    std::fs::write(dirs.log(), log).unwrap();
    worker::tenant_files::stage(&running(tenant, port), &dirs, &dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let hash = blake3::hash(&std::fs::read(dir.join(&name)).unwrap());
        expected.push_str(&format!("{tenant} {generation} {name} {}\n", hash.to_hex()));
    }
    let mut options = criu_image::ingest_options();
    if generation == 2 {
        options.locality = [0, 2, 3, 4]
            .into_iter()
            .map(|page| PagePos {
                file: "pages-1.img".into(),
                page,
            })
            .collect();
    }
    store
        .ingest_with(tenant, &dir, &options)
        .await
        .unwrap()
        .checkpoint
}

/// The program that wrote `tests/fixtures/store-formats-1`, kept only to show how it was made
/// (`PICO_FIXTURE_OUT=DIR cargo nextest run --test formats --run-ignored only`, then DIR copied
/// in). It must never be re-run to "update" that fixture: the fixture's worth is that it is
/// what an earlier version wrote. A new format version adds a new fixture directory next to it,
/// written by this program as that version has it.
#[tokio::test]
#[ignore = "writes a fixture once; never re-run to update one"]
async fn write_the_fixture() {
    let out = PathBuf::from(
        std::env::var("PICO_FIXTURE_OUT")
            .expect("PICO_FIXTURE_OUT=DIR: a directory that does not exist yet"),
    );
    assert!(
        !out.exists(),
        "{}: a fixture is never rewritten",
        out.display()
    );
    let home = tempfile::tempdir().unwrap();
    let store = PageStore::open(&store_config(home.path(), &out.join("cold")))
        .await
        .unwrap();
    let staging = home.path().join("staging");
    let mut expected = String::new();
    let mut newest = BTreeMap::new();
    // Generation 1 of both tenants, then gc: their fast packs rewritten dense (version 2).
    for tenant in TENANTS {
        let c = write_checkpoint(&store, &staging, tenant, 1, &mut expected).await;
        newest.insert(tenant.0.to_string(), c);
    }
    assert!(store.gc().await.unwrap().packs_recompressed > 0);
    // alpha's generation 2: a delta against generation 1, its new pages in a fast pack
    // (version 1), and a locality pack; the ActiveSet its restore of generation 1 learned.
    let alpha_1 = newest["alpha"].clone();
    let c = write_checkpoint(&store, &staging, TENANTS[0], 2, &mut expected).await;
    newest.insert("alpha".into(), c);
    worker::store_activeset(&store, "alpha", &activeset(&alpha_1))
        .await
        .unwrap();
    for (tenant, port, _) in TENANTS {
        let dirs = TenantDirs::new(&out.join("tenants"), tenant);
        std::fs::create_dir_all(&dirs.root).unwrap();
        swapped_out(tenant, port, &newest[tenant])
            .save(&dirs)
            .unwrap();
    }
    let (mut hub, _) = DurableState::load(cold_tier(&out)).await.unwrap();
    hub.save(&hub_record(&newest)).await.unwrap();
    std::fs::write(out.join("expected.txt"), expected).unwrap();
}

// ---- Reading it ------------------------------------------------------------------------------

/// A copy of the fixture (at `root`) and a store over its cold tier.
struct Copy {
    home: tempfile::TempDir,
    root: PathBuf,
    store: PageStore,
}

async fn open_copy() -> Copy {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("fixture");
    testkit::fixture::copy_dir(&fixture(), &root);
    let store = PageStore::open(&store_config(home.path(), &root.join("cold")))
        .await
        .unwrap();
    Copy { home, root, store }
}

/// `expected.txt`: (tenant, generation) → file name → BLAKE3 hex.
fn expected() -> BTreeMap<(String, u64), BTreeMap<String, String>> {
    let text = std::fs::read_to_string(fixture().join("expected.txt")).unwrap();
    let mut out: BTreeMap<(String, u64), BTreeMap<String, String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [tenant, generation, name, hash] = f[..] else {
            panic!("bad line {line:?}");
        };
        out.entry((tenant.into(), generation.parse().unwrap()))
            .or_default()
            .insert(name.into(), hash.into());
    }
    out
}

fn seed_of(tenant: &str) -> u64 {
    TENANTS.iter().find(|t| t.0 == tenant).unwrap().2
}

fn port_of(tenant: &str) -> u16 {
    TENANTS.iter().find(|t| t.0 == tenant).unwrap().1
}

/// Each tenant's newest checkpoint.
async fn newest(store: &PageStore) -> BTreeMap<String, CheckpointRef> {
    store
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.tenant.clone(), c))
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test]
async fn every_checkpoint_reads_byte_for_byte_and_verify_finds_nothing_wrong() {
    let copy = open_copy().await;
    let checkpoints = copy.store.checkpoints().await.unwrap();
    let expected = expected();
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| (c.tenant.clone(), c.generation))
            .collect::<Vec<_>>(),
        expected.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(expected.len(), 3);
    for c in &checkpoints {
        let out = copy
            .home
            .path()
            .join(format!("out-{}-{}", c.tenant, c.generation));
        copy.store.materialize(c, &out).await.unwrap();
        let mut got = BTreeMap::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            got.insert(
                entry.file_name().into_string().unwrap(),
                blake3::hash(&bytes).to_hex().to_string(),
            );
        }
        assert_eq!(got, expected[&(c.tenant.clone(), c.generation)], "{c:?}");
        for (name, want) in image(&c.tenant, seed_of(&c.tenant), c.generation) {
            let bytes = std::fs::read(out.join(name)).unwrap();
            assert!(bytes == want, "{name} of {} {}", c.tenant, c.generation);
        }
    }
    let report = copy.store.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.manifests, report.locality_packs), (3, 1));
}

/// The fixture holds what it is kept for: a delta manifest against a full one, packs of both
/// versions, a locality pack, a page two tenants share and a zero page.
#[tokio::test]
async fn the_fixture_holds_every_kind_of_object_it_is_kept_for() {
    let copy = open_copy().await;
    let cold = cold_tier(&copy.root);
    let checkpoints = copy.store.checkpoints().await.unwrap();
    let mut bases = Vec::new();
    for c in &checkpoints {
        let bytes = cold.get(&c.object_key()).await.unwrap();
        assert_eq!(
            pagestore::manifest::version_in(&c.object_key(), &bytes).unwrap(),
            3
        );
        bases.push(Manifest::base_of(&bytes).unwrap().map(|b| b.generation));
    }
    assert_eq!(
        bases,
        [None, Some(1), None],
        "alpha 2 is a delta against alpha 1"
    );

    let footer_version = |data: &[u8]| {
        let at = data.len() - FOOTER_LEN + 12;
        u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
    };
    let mut versions = std::collections::BTreeSet::new();
    for obj in cold.list("packs/").await.unwrap() {
        versions.insert(footer_version(&cold.get(&obj.key).await.unwrap()));
    }
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), [1, 2]);

    let alpha_2 = copy.store.manifest(&checkpoints[1]).await.unwrap();
    let locality = alpha_2.locality.expect("alpha 2 has a locality pack");
    assert_eq!(locality.pages, 4);
    let key = locality.object_key("alpha", 2);
    assert_eq!(footer_version(&cold.get(&key).await.unwrap()), 2);

    let shared = PageId::of(&shared_page());
    for c in &checkpoints {
        let pages = copy
            .store
            .manifest(c)
            .await
            .unwrap()
            .file("pages-1.img")
            .unwrap()
            .pages()
            .to_vec();
        assert_eq!((pages[0], pages[1]), (shared, PageId::ZERO), "{c:?}");
    }
}

/// The worker's registry, a tenant's record and files carried in its checkpoint, its
/// ActiveSet, and the hub's record read as written.
#[tokio::test]
async fn the_registry_the_tenant_records_the_activeset_and_the_hub_record_read() {
    let copy = open_copy().await;
    let newest = newest(&copy.store).await;

    let registry = worker::tenant::load_registry(&copy.root.join("tenants")).unwrap();
    assert_eq!(registry.len(), 2);
    for (_, info) in &registry {
        let want = swapped_out(&info.name, port_of(&info.name), &newest[&info.name]);
        assert_eq!(json(info), json(&want), "{}", info.name);
    }

    let alpha_2 = &newest["alpha"];
    let out = copy.home.path().join("alpha-2");
    copy.store.materialize(alpha_2, &out).await.unwrap();
    let record = record_of(&std::fs::read(out.join(RECORD_FILE)).unwrap()).unwrap();
    assert_eq!(json(&record), json(&running("alpha", 8081)));
    let (cwd, log) = (out.join("cwd"), out.join("tenant.log"));
    unpack(&std::fs::read(out.join(FILES_ARCHIVE)).unwrap(), &cwd, &log).unwrap();
    let (state, log_text) = own_files("alpha", 2);
    assert_eq!(std::fs::read(cwd.join("state.txt")).unwrap(), state);
    assert_eq!(std::fs::read(&log).unwrap(), log_text);

    let checkpoints = copy.store.checkpoints().await.unwrap();
    let set = worker::load_activeset(&copy.store, "alpha")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json(&set), json(&activeset(&checkpoints[0])));
    assert!(worker::load_activeset(&copy.store, "beta")
        .await
        .unwrap()
        .is_none());

    let (_, record) = DurableState::load(cold_tier(&copy.root)).await.unwrap();
    assert_eq!(record, hub_record(&newest));
}

/// Raises the version field of `bytes` at `at` to `version`.
fn with_version(mut bytes: Vec<u8>, at: usize, version: u32) -> Vec<u8> {
    bytes[at..at + 4].copy_from_slice(&version.to_le_bytes());
    bytes
}

/// Asserts that `err` refuses `object` of version `found` naming both versions.
fn refused(err: &dyn std::fmt::Display, object: &str, found: u32, newest: u32) {
    let text = err.to_string();
    assert!(
        text.contains(object)
            && text.contains(&format!("version {found}"))
            && text.contains(&format!("1 to {newest}"))
            && text.contains("newer"),
        "{text}"
    );
}

/// Each format one version newer than this build knows is refused by name, never misread.
#[tokio::test]
async fn a_newer_version_of_each_format_is_refused_by_name() {
    use pagestore::manifest::MANIFEST_VERSION_NEWEST;
    use pagestore::pack::PACK_VERSION_NEWEST;
    let copy = open_copy().await;
    let cold = cold_tier(&copy.root);
    let store = &copy.store;
    let newest = newest(store).await;

    // A manifest.
    let alpha_2 = &newest["alpha"];
    let key = alpha_2.object_key();
    let bytes = cold.get(&key).await.unwrap();
    let newer = MANIFEST_VERSION_NEWEST + 1;
    cold.put(&key, with_version(bytes, 8, newer)).await.unwrap();
    let err = store.manifest(alpha_2).await.unwrap_err();
    refused(&err, &key, newer, MANIFEST_VERSION_NEWEST);

    // The ActiveSet: its metadata object's frame, then its own format.
    let (key, body) = store
        .latest_meta_object("activeset", "alpha")
        .await
        .unwrap()
        .unwrap();
    let framed = pagestore::meta::encode(&body);
    cold.put(&key, with_version(framed, 8, 2)).await.unwrap();
    let err = worker::load_activeset(store, "alpha").await.unwrap_err();
    refused(&err, &key, 2, 1);
    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["format"] = (worker::ACTIVESET_FORMAT + 1).into();
    let newer = serde_json::to_vec(&value).unwrap();
    cold.put(&key, pagestore::meta::encode(&newer))
        .await
        .unwrap();
    let err = worker::load_activeset(store, "alpha").await.unwrap_err();
    refused(
        &err,
        &key,
        worker::ACTIVESET_FORMAT + 1,
        worker::ACTIVESET_FORMAT,
    );

    // The hub's record.
    let state = cold.list("hub/state/").await.unwrap().pop().unwrap().key;
    let body = pagestore::meta::decode(&state, &cold.get(&state).await.unwrap()).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["format"] = (hub::durable::FORMAT + 1).into();
    let newer = serde_json::to_vec(&value).unwrap();
    cold.put(&state, pagestore::meta::encode(&newer))
        .await
        .unwrap();
    let err = DurableState::load(cold_tier(&copy.root))
        .await
        .err()
        .unwrap();
    refused(&err, &state, hub::durable::FORMAT + 1, hub::durable::FORMAT);

    // The worker's registry.
    let path = TenantDirs::new(&copy.root.join("tenants"), "beta").state_file();
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    value["format"] = (worker::tenant::RECORD_FORMAT + 1).into();
    std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    let err = worker::tenant::load_registry(&copy.root.join("tenants")).unwrap_err();
    refused(
        &err,
        &path.display().to_string(),
        worker::tenant::RECORD_FORMAT + 1,
        worker::tenant::RECORD_FORMAT,
    );

    // A pack: the store does not open (a fresh home: no cached index of it).
    let pack = cold.list("packs/").await.unwrap().pop().unwrap().key;
    let bytes = cold.get(&pack).await.unwrap();
    let at = bytes.len() - FOOTER_LEN + 12;
    let newer = PACK_VERSION_NEWEST + 1;
    cold.put(&pack, with_version(bytes, at, newer))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let err = PageStore::open(&store_config(home.path(), &copy.root.join("cold")))
        .await
        .err()
        .unwrap();
    refused(&err, &pack, newer, PACK_VERSION_NEWEST);
}
