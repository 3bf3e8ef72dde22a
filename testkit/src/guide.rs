//! A guide's shell steps run by a test, as written, so that the guide cannot drift from what is
//! tested. A step is a ```` ```sh ```` block right after a line `<!-- step: NAME -->`.
//!
//! The steps run on hosts of a [`netlab`](crate::netlab) LAN as on separate machines: each
//! [`GuideHost`] is a network namespace with `/etc/pico` and `/var/lib/pico` of its own. A step
//! runs in a mount namespace of its own where those two paths, the same on every host, show the
//! host's own directories (they are renamed under one test directory, as this machine's own
//! `/etc/pico` is not the test's to write), under `sh -eu`, after the guide's prelude step (its
//! environment), with the guide's shell variables set and `pico` the binary under test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::netlab::NetHost;
use crate::pico::Pico;

/// The paths a guide's steps name, each a host's own directory.
const ETC: &str = "/etc/pico";
const HOME: &str = "/var/lib/pico";

/// The marked steps of one guide.
pub struct Guide {
    path: PathBuf,
    steps: BTreeMap<String, String>,
    /// The step every other runs after (its environment).
    prelude: String,
    /// The steps a test took, to check that it took them all.
    taken: Mutex<BTreeSet<String>>,
}

impl Guide {
    /// The steps of the guide at `path`, `prelude` the one each runs after. Panics when a marker
    /// is not followed by a ```` ```sh ```` block, a name is used twice or `prelude` is missing.
    pub fn load(path: &Path, prelude: &str) -> Guide {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let steps = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let prelude = steps
            .get(prelude)
            .unwrap_or_else(|| panic!("{}: no step {prelude}", path.display()))
            .clone();
        Guide {
            path: path.to_path_buf(),
            steps,
            prelude,
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    /// The text of step `name`, recorded as taken.
    pub fn step(&self, name: &str) -> &str {
        let step = self
            .steps
            .get(name)
            .unwrap_or_else(|| panic!("{}: no step {name}", self.path.display()));
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        step
    }

    /// The marked steps no test took (the prelude counts as taken), by name.
    pub fn untaken(&self) -> Vec<String> {
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        self.steps
            .keys()
            .filter(|name| !taken.contains(*name) && self.steps[*name] != self.prelude)
            .cloned()
            .collect()
    }
}

/// The marked steps of a guide's `text`, by name.
fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut steps = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- step:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let name = name.trim().to_string();
        if lines.next().map(str::trim) != Some("```sh") {
            return Err(format!("step {name} is not followed by a ```sh block"));
        }
        let mut body = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        if steps.insert(name.clone(), body).is_some() {
            return Err(format!("step {name} is marked twice"));
        }
    }
    Ok(steps)
}

/// One machine of a guide: a host of the LAN, a `pico` home that is its `/var/lib/pico` (with
/// its `/etc/pico` inside), and its shell variables.
pub struct GuideHost {
    pub net: NetHost,
    pub pico: Pico,
    /// Where every host shows its `/etc/pico` and `/var/lib/pico` (the same on all).
    shared: PathBuf,
    vars: Vec<(String, String)>,
}

impl GuideHost {
    /// `net` as a machine of the guide, its own directories in `pico`'s home, showing at
    /// `shared`'s renamed `/etc/pico` and `/var/lib/pico`; `vars` the guide's shell variables
    /// there.
    pub fn new(net: NetHost, pico: Pico, shared: &Path, vars: &[(&str, &str)]) -> GuideHost {
        for dir in [shared_path(shared, ETC), shared_path(shared, HOME)] {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let host = GuideHost {
            net,
            pico,
            shared: shared.to_path_buf(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        std::fs::create_dir_all(host.etc()).unwrap();
        host
    }

    /// Its own `/etc/pico`, as this machine sees it.
    pub fn etc(&self) -> PathBuf {
        self.pico.home().join("etc")
    }

    /// What a path the guide names (under `/etc/pico` or `/var/lib/pico`) is on every host, as
    /// steps see it.
    pub fn guide_path(&self, path: &str) -> PathBuf {
        PathBuf::from(rename(&self.shared, path))
    }

    /// Step `name` of `guide`, after its prelude, run here as a command (not started).
    pub fn step(&self, guide: &Guide, name: &str) -> Command {
        self.script(&format!("{}{}", guide.prelude, guide.step(name)))
    }

    /// Step `name` of `guide`, one command that runs until stopped (`pico worker run`), as a
    /// command (not started) whose process becomes that daemon: the shell runs the prelude,
    /// then `exec`s the step, so that stopping or killing it reaches the daemon itself.
    pub fn daemon(&self, guide: &Guide, name: &str) -> Command {
        let step = guide.step(name).trim();
        assert!(
            !step.contains('\n') && !step.contains(';') && !step.contains('&'),
            "daemon step {name} must be one command: {step}"
        );
        self.script(&format!("{}exec {step}\n", guide.prelude))
    }

    /// `script` run here (not started).
    fn script(&self, script: &str) -> Command {
        let script = rename(&self.shared, script);
        let pico_dir = self.pico.bin.parent().expect("pico's directory");
        let path = std::env::var("PATH").unwrap_or_default();
        let views =
            "mount --bind \"$1\" \"$2\" && mount --bind \"$3\" \"$4\" && exec sh -euc \"$5\"";
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.net.netns))
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", views, "sh"])
            .arg(self.pico.home())
            .arg(shared_path(&self.shared, HOME))
            .arg(self.etc())
            .arg(shared_path(&self.shared, ETC))
            .arg(script)
            .env("PATH", format!("{}:{path}", pico_dir.display()))
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs step `name` here: its output, whether it succeeded or not.
    pub fn try_run(&self, guide: &Guide, name: &str) -> Output {
        self.step(guide, name)
            .output()
            .unwrap_or_else(|e| panic!("step {name}: {e}"))
    }

    /// Runs step `name` here and returns its stdout; panics with its output when it fails.
    pub fn run(&self, guide: &Guide, name: &str) -> String {
        let out = self.try_run(guide, name);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "step {name} on {} failed ({}):\nstdout: {stdout}\nstderr: {}",
            self.net.netns,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// `path` (one of the guide's directories) under `shared`.
fn shared_path(shared: &Path, path: &str) -> PathBuf {
    shared.join(path.trim_start_matches('/'))
}

/// `text` with the guide's directories renamed under `shared`.
fn rename(shared: &Path, text: &str) -> String {
    [ETC, HOME].iter().fold(text.to_string(), |text, dir| {
        text.replace(dir, &shared_path(shared, dir).display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_the_sh_block_after_its_marker() {
        let text = "# Guide\n<!-- step: env -->\n```sh\nexport A=1\n```\ntext\n\
                    ```sh\nnot a step\n```\n<!-- step: run -->\n```sh\necho $A\necho two\n```\n";
        let steps = parse(text).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps["env"], "export A=1\n");
        assert_eq!(steps["run"], "echo $A\necho two\n");
        let unmarked = parse("<!-- step: x -->\ntext\n```sh\nls\n```\n").unwrap_err();
        assert!(unmarked.contains("not followed"), "{unmarked}");
        let twice = "<!-- step: x -->\n```sh\n```\n<!-- step: x -->\n```sh\n```\n";
        assert!(parse(twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_guides_directories_are_renamed_under_the_shared_one() {
        let shared = Path::new("/tmp/t");
        assert_eq!(
            rename(shared, "cat /etc/pico/a >/var/lib/pico/b"),
            "cat /tmp/t/etc/pico/a >/tmp/t/var/lib/pico/b"
        );
    }
}
