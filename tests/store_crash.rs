//! Crash safety of the page store, as a test: `pico store ingest` and `pico store gc` are killed
//! with SIGKILL at random moments; after every kill `pico store verify` passes, every earlier
//! checkpoint materializes byte-identical, and re-running the killed command completes.
//!
//! One test body, run on each local-tier engine over the dir cold tier, and over a real S3 cold
//! tier (Garage on loopback, started by `deploy/garage.sh`; never mocked, never skipped).

// A test file: its helpers panic on purpose.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::garage::Garage;
use testkit::pico::Pico;
use testkit::synth;

/// Processes killed mid-run, for ingest and for gc each (runs that finish before their kill
/// moment do not count; at most twice as many runs are tried).
const KILLS: usize = 20;

fn ingest(pico: &Pico, tenant: &str, dir: &Path) -> String {
    let out = pico.ok(&["store", "ingest", "--tenant", tenant, dir.to_str().unwrap()]);
    out.lines().last().unwrap().trim().to_string()
}

/// Starts `args`, kills it with SIGKILL after `after`; if it finished first, says how soon.
fn kill_after(pico: &Pico, args: &[&str], after: Duration) -> Option<Duration> {
    let mut child = pico
        .command(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pico");
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// verify passes and every (checkpoint, source dir) materializes byte-identical.
fn check(pico: &Pico, tmp: &Path, good: &[(String, PathBuf)], when: &str) {
    let out = pico.run(&["store", "verify"]);
    assert!(
        out.status.success(),
        "verify failed {when}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, src) in good {
        let dst = tmp.join("check");
        let _ = std::fs::remove_dir_all(&dst);
        let out = pico.run(&["store", "materialize", id, dst.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "checkpoint {id} does not materialize {when}: {}\nstore ls:\n{}",
            String::from_utf8_lossy(&out.stderr),
            pico.ok(&["store", "ls"])
        );
        assert!(
            synth::same_files(src, &dst).unwrap(),
            "checkpoint {id} differs {when}"
        );
    }
}

/// Where the store under test lives, and how large its checkpoints are.
struct Setup {
    /// Sections of `pico.toml` beyond `[gc]`.
    toml: String,
    /// Pages of the checkpoint each killed ingest writes (its new part).
    ingest_pages: usize,
    /// New pages of the scratch checkpoint each gc round makes garbage of.
    gc_pages: usize,
}

fn local_engine(engine: &str) -> String {
    format!("[local]\nengine = \"{engine}\"\n")
}

#[test]
fn kill_9_during_ingest_and_gc_loses_nothing_sled() {
    kill_9_during_ingest_and_gc_loses_nothing(Setup {
        toml: local_engine("sled"),
        ingest_pages: 1500,
        gc_pages: 400,
    });
}

#[test]
fn kill_9_during_ingest_and_gc_loses_nothing_fjall() {
    kill_9_during_ingest_and_gc_loses_nothing(Setup {
        toml: local_engine("fjall"),
        ingest_pages: 1500,
        gc_pages: 400,
    });
}

#[test]
fn kill_9_during_ingest_and_gc_on_s3_loses_nothing() {
    let garage = Garage::start();
    // Smaller checkpoints: every check reads the whole store back through S3.
    kill_9_during_ingest_and_gc_loses_nothing(Setup {
        toml: garage.cold_toml.clone(),
        ingest_pages: 600,
        gc_pages: 200,
    });
}

fn kill_9_during_ingest_and_gc_loses_nothing(setup: Setup) {
    let tmp = tempfile::tempdir().unwrap();
    let pico = Pico::new(env!("CARGO_BIN_EXE_pico"));
    // Repack eagerly, so that gc has packs to rewrite as well as to delete; keep every
    // checkpoint (the default retention would drop the early ones this test checks after each
    // kill).
    let toml = format!(
        "[gc]\nrepack_below = 0.9\n\n[retention]\nkeep_last = 0\n\n{}",
        setup.toml
    );
    pico.write_config(&toml);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill moments seed: {seed}");
    let mut rng = synth::Rng::new(seed);

    let mut good = Vec::new();
    for (i, tenant) in ["alpha", "beta"].iter().enumerate() {
        let src = synth::checkpoint_of_parts(
            &tmp.path().join(format!("base{i}")),
            &[(100, 300), (101 + i as u64, 300)],
        )
        .unwrap();
        good.push((ingest(&pico, tenant, &src), src));
    }
    // How long one large ingest takes here, to spread the kills over it.
    let big = |n: u64| {
        synth::checkpoint_of_parts(
            &tmp.path().join("big"),
            &[(100, 200), (1000 + n, setup.ingest_pages)],
        )
        .unwrap()
    };
    let src = big(0);
    let started = Instant::now();
    good.push((ingest(&pico, "gamma", &src), tmp.path().join("gamma0")));
    std::fs::rename(&src, tmp.path().join("gamma0")).unwrap();
    let mut span = started.elapsed().as_millis() as u64 + 50;

    let mut killed = 0;
    let mut n = 0;
    while killed < KILLS && n < 2 * KILLS as u64 {
        n += 1;
        let src = big(n);
        let after = Duration::from_millis(rng.next_u64() % span);
        let args = [
            "store",
            "ingest",
            "--tenant",
            "gamma",
            src.to_str().unwrap(),
        ];
        match kill_after(&pico, &args, after) {
            None => killed += 1,
            // It finished first: aim the next kills inside the time a run takes.
            Some(took) => span = span.min(took.as_millis() as u64).max(1),
        }
        check(
            &pico,
            tmp.path(),
            &good,
            &format!("after ingest kill {n} at {after:?}"),
        );
    }
    // Re-running the killed ingest completes.
    let last = tmp.path().join("gamma-last");
    std::fs::rename(big(n + 1), &last).unwrap();
    good.push((ingest(&pico, "gamma", &last), last));
    check(&pico, tmp.path(), &good, "after the ingest re-run");
    assert!(killed >= KILLS, "only {killed} ingests were killed");

    // gc: each round forgets a tenant that shares pages with the kept ones, then kills gc. The
    // first gc (with the orphans of the killed ingests to delete) gives the time to spread over.
    let started = Instant::now();
    pico.ok(&["store", "gc"]);
    let mut gc_span = started.elapsed().as_millis() as u64 + 50;
    check(&pico, tmp.path(), &good, "after the first gc");
    let mut gc_killed = 0;
    let mut n = 0;
    while gc_killed < KILLS && n < 2 * KILLS as u64 {
        n += 1;
        let src = synth::checkpoint_of_parts(
            &tmp.path().join("tmp"),
            &[(100, 200), (5000 + n, setup.gc_pages)],
        )
        .unwrap();
        ingest(&pico, "scratch", &src);
        pico.ok(&["store", "forget", "--tenant", "scratch"]);
        let after = Duration::from_millis(rng.next_u64() % gc_span);
        match kill_after(&pico, &["store", "gc"], after) {
            None => gc_killed += 1,
            Some(took) => gc_span = gc_span.min(took.as_millis() as u64).max(1),
        }
        check(
            &pico,
            tmp.path(),
            &good,
            &format!("after gc kill {n} at {after:?}"),
        );
    }
    pico.ok(&["store", "gc"]);
    check(&pico, tmp.path(), &good, "after the gc re-run");
    eprintln!("killed {killed} ingests and {gc_killed} gcs mid-run");
    assert!(gc_killed >= KILLS, "only {gc_killed} gcs were killed");
}
