//! `pico config check` as an operator runs it: a bad file exits non-zero naming each bad key and
//! its line, a good one exits 0 saying which file it read; every other command reading the same
//! bad file fails with the same lines.
#![allow(clippy::unwrap_used)] // test set-up

use testkit::pico::Pico;

const BAD: &str = "[worker]\ncriu = \"criu\"\ncriuu = \"x\"\n\n[cold]\nkind = \"s3\"\n\
                   endpoint = \"http://127.0.0.1:3900\"\n";

#[test]
fn a_bad_file_is_refused_with_each_key_and_its_line() {
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let bad = p.home.join("bad.toml");
    std::fs::write(&bad, BAD).unwrap();
    let err = p.fails(&["config", "check", bad.to_str().unwrap()]);
    let lines: Vec<&str> = err.lines().collect();
    let file = bad.display();
    assert_eq!(
        lines,
        [
            format!("{file}:3:1: worker.criuu: unknown key; did you mean `criu`?"),
            format!("{file}:5:1: cold.bucket: missing: required here (it has no default)"),
        ],
        "{err}"
    );

    let out = p
        .command(&["--json", "config", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"][0]["key"], "worker.criuu");
    assert_eq!(json["problems"][0]["line"], 3);

    // Any command reading it says the same (`--config`), and so does the worker at start.
    let err = p.fails(&["--config", bad.to_str().unwrap(), "store", "ls"]);
    assert!(err.contains(&format!("{file}:3:1: worker.criuu")), "{err}");
    p.write_config(BAD);
    let err = p.fails(&["worker", "run"]);
    assert!(
        err.contains("pico.toml:3:1: worker.criuu: unknown key"),
        "{err}"
    );
}

#[test]
fn a_good_file_passes_and_the_default_file_is_the_one_pico_loads() {
    let p = Pico::new(env!("CARGO_BIN_EXE_pico"));
    let default = p.home.join("pico.toml");
    let out = p.ok(&["config", "check"]);
    assert_eq!(
        out.trim(),
        format!("{}: none, the embedded defaults apply", default.display())
    );

    p.write_config("[worker]\ncriu_log_level = 4\n\n[prices]\nput_per_1000 = 0.01\n");
    let out = p.ok(&["config", "check"]);
    assert!(
        out.starts_with(&format!("{}: ok;", default.display())),
        "{out}"
    );
    assert!(out.contains("sections given: prices, worker"), "{out}");
    let json = p.json(&["config", "check", "--effective"]);
    assert_eq!(json["ok"], true);
    assert_eq!(json["effective"]["worker"]["criu_log_level"], 4);
    assert_eq!(json["effective"]["hot"]["max_bytes"], 256 << 20);

    // --config (PICO_CONFIG) names the file pico loads, so the one checked.
    let other = p.home.join("other.toml");
    std::fs::write(&other, "[hot]\nmax_bytes = 0\n").unwrap();
    let out = p
        .command(&["config", "check"])
        .env("PICO_CONFIG", &other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.starts_with(&format!("{}: ok;", other.display())),
        "{out}"
    );
    // A file named must exist.
    let err = p.fails(&[
        "config",
        "check",
        p.home.join("nope.toml").to_str().unwrap(),
    ]);
    assert!(err.contains("nope.toml"), "{err}");
}
