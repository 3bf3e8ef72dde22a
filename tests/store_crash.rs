//! Crash safety of the page store, as a test: `pico store ingest` and `pico store gc` are killed
//! with SIGKILL at random moments; after every kill `pico store verify` passes, every earlier
//! checkpoint materializes byte-identical, and re-running the killed command completes.

// A test file: its helpers panic on purpose.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::synth;

/// Processes killed mid-run, for ingest and for gc each (runs that finish before their kill
/// moment do not count; at most twice as many runs are tried).
const KILLS: usize = 20;

struct Pico {
    home: PathBuf,
}

impl Pico {
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pico"));
        c.arg("--home").arg(&self.home).env("RUST_LOG", "error");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run pico");
        assert!(
            out.status.success(),
            "pico {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ingest(&self, tenant: &str, dir: &Path) -> String {
        let out = self.run(&["store", "ingest", "--tenant", tenant, dir.to_str().unwrap()]);
        out.lines().last().unwrap().trim().to_string()
    }

    /// Starts `args`, kills it with SIGKILL after `after`; if it finished first, says how soon.
    fn kill_after(&self, args: &[&str], after: Duration) -> Option<Duration> {
        let mut child = self
            .cmd()
            .args(args)
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
    fn check(&self, tmp: &Path, good: &[(String, PathBuf)], when: &str) {
        let out = self.cmd().args(["store", "verify"]).output().unwrap();
        assert!(
            out.status.success(),
            "verify failed {when}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for (id, src) in good {
            let dst = tmp.join("check");
            let _ = std::fs::remove_dir_all(&dst);
            self.run(&["store", "materialize", id, dst.to_str().unwrap()]);
            assert!(
                synth::same_files(src, &dst).unwrap(),
                "checkpoint {id} differs {when}"
            );
        }
    }
}

fn checkpoint(dir: &Path, parts: &[(u64, usize)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let data: Vec<u8> = parts
        .iter()
        .flat_map(|&(seed, pages)| synth::page_file(seed, pages))
        .collect();
    std::fs::write(dir.join("pages-1.img"), data).unwrap();
    std::fs::write(dir.join("core-1.img"), format!("{parts:?}")).unwrap();
    dir.to_path_buf()
}

#[test]
fn kill_9_during_ingest_and_gc_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pico = Pico {
        home: tmp.path().join("home"),
    };
    std::fs::create_dir_all(&pico.home).unwrap();
    // Repack eagerly, so that gc has packs to rewrite as well as to delete.
    std::fs::write(pico.home.join("pico.toml"), "[gc]\nrepack_below = 0.9\n").unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill moments seed: {seed}");
    let mut rng = synth::Rng::new(seed);

    let mut good = Vec::new();
    for (i, tenant) in ["alpha", "beta"].iter().enumerate() {
        let src = checkpoint(
            &tmp.path().join(format!("base{i}")),
            &[(100, 300), (101 + i as u64, 300)],
        );
        good.push((pico.ingest(tenant, &src), src));
    }
    // How long one large ingest takes here, to spread the kills over it.
    let big = |n: u64| checkpoint(&tmp.path().join("big"), &[(100, 200), (1000 + n, 1500)]);
    let src = big(0);
    let started = Instant::now();
    good.push((pico.ingest("gamma", &src), tmp.path().join("gamma0")));
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
        match pico.kill_after(&args, after) {
            None => killed += 1,
            // It finished first: aim the next kills inside the time a run takes.
            Some(took) => span = span.min(took.as_millis() as u64).max(1),
        }
        pico.check(
            tmp.path(),
            &good,
            &format!("after ingest kill {n} at {after:?}"),
        );
    }
    // Re-running the killed ingest completes.
    let last = tmp.path().join("gamma-last");
    std::fs::rename(big(n + 1), &last).unwrap();
    good.push((pico.ingest("gamma", &last), last));
    pico.check(tmp.path(), &good, "after the ingest re-run");
    assert!(killed >= KILLS, "only {killed} ingests were killed");

    // gc: each round forgets a tenant that shares pages with the kept ones, then kills gc. The
    // first gc (with the orphans of the killed ingests to delete) gives the time to spread over.
    let started = Instant::now();
    pico.run(&["store", "gc"]);
    let mut gc_span = started.elapsed().as_millis() as u64 + 50;
    pico.check(tmp.path(), &good, "after the first gc");
    let mut gc_killed = 0;
    let mut n = 0;
    while gc_killed < KILLS && n < 2 * KILLS as u64 {
        n += 1;
        let src = checkpoint(&tmp.path().join("tmp"), &[(100, 200), (5000 + n, 400)]);
        pico.ingest("scratch", &src);
        pico.run(&["store", "forget", "--tenant", "scratch"]);
        let after = Duration::from_millis(rng.next_u64() % gc_span);
        match pico.kill_after(&["store", "gc"], after) {
            None => gc_killed += 1,
            Some(took) => gc_span = gc_span.min(took.as_millis() as u64).max(1),
        }
        pico.check(
            tmp.path(),
            &good,
            &format!("after gc kill {n} at {after:?}"),
        );
    }
    pico.run(&["store", "gc"]);
    pico.check(tmp.path(), &good, "after the gc re-run");
    eprintln!("killed {killed} ingests and {gc_killed} gcs mid-run");
    assert!(gc_killed >= KILLS, "only {gc_killed} gcs were killed");
}
