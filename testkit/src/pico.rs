//! Driving the `pico` binary: a temporary home, commands with checked output, and a worker daemon
//! that removes its tenants and stops when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `pico` binary bound to one home directory.
pub struct Pico {
    pub bin: PathBuf,
    pub home: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Pico {
    /// A fresh home in a temporary directory (removed on drop).
    pub fn new(bin: &str) -> Pico {
        let temp = tempfile::Builder::new()
            .prefix("pico-home-")
            .tempdir()
            .unwrap();
        Pico {
            bin: PathBuf::from(bin),
            home: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--home").arg(&self.home).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pico {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "pico {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Writes `text` as this home's `pico.toml` (before starting a worker: it reads it once).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.home.join("pico.toml"), text).unwrap();
    }

    /// The worker's unix socket (the embedded default), where its HTTP API answers.
    pub fn socket(&self) -> PathBuf {
        self.home.join("worker.sock")
    }

    /// Starts `pico worker run` on this home.
    pub fn start_worker(&self) -> Worker<'_> {
        self.start_worker_with_env(&[])
    }

    /// Starts `pico worker run` on this home with `env` set (its log goes on in `worker.log`,
    /// appended across restarts).
    pub fn start_worker_with_env(&self, env: &[(&str, &str)]) -> Worker<'_> {
        self.start_worker_with(&[], env)
    }

    /// Starts `pico worker run ARGS...` on this home with `env` set.
    pub fn start_worker_with(&self, args: &[&str], env: &[(&str, &str)]) -> Worker<'_> {
        let _ = std::fs::remove_file(self.socket());
        let mut command = self.command(&[&["worker", "run"], args].concat());
        let child = spawn_logged(command.envs(env.iter().copied()), self.worker_log_file());
        let worker = Worker {
            pico: self,
            daemon: Daemon { child: Some(child) },
        };
        self.wait_socket();
        worker
    }

    /// Waits (at most 20 s) for a worker starting on this home to serve its unix socket.
    pub fn wait_socket(&self) {
        let socket = self.socket();
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "worker did not start: {}",
                self.worker_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `pico worker run ARGS...` on this home under `launcher` (a program that runs its
    /// arguments, such as `systemd-socket-activate -l PORT` or `nsenter --net=...`), without
    /// waiting for it to serve: such a launcher may start it only on its first connection.
    pub fn spawn_worker_via(&self, launcher: &[&str], args: &[&str]) -> Worker<'_> {
        let mut command = self.command_via(launcher, &[&["worker", "run"], args].concat());
        self.spawn_worker_command(&mut command)
    }

    /// Starts `command`, a `pico worker run` however launched (a guide's step, say) on this
    /// home: its output into `worker.log`, the daemon's guard returned (no wait for its socket).
    pub fn spawn_worker_command(&self, command: &mut Command) -> Worker<'_> {
        let _ = std::fs::remove_file(self.socket());
        let child = spawn_logged(command, self.worker_log_file());
        Worker {
            pico: self,
            daemon: Daemon { child: Some(child) },
        }
    }

    /// `pico --home HOME ARGS...` run by `launcher` (a program that runs its arguments).
    pub fn command_via(&self, launcher: &[&str], args: &[&str]) -> Command {
        let (program, launcher_args) = launcher.split_first().expect("a launcher");
        let mut command = Command::new(program);
        command
            .args(launcher_args)
            .arg(&self.bin)
            .arg("--home")
            .arg(&self.home)
            .args(args);
        command
    }

    /// Starts `pico hub run` on this home (its `[hub]` in `pico.toml`) and waits until its API
    /// listens on `api_port`; its log goes on in `hub.log`. Stopped (SIGTERM) on drop.
    pub fn start_hub(&self, api_port: u16) -> Hub<'_> {
        self.start_hub_with(api_port, &[], &[])
    }

    /// Starts `pico hub run ARGS...` with `env` set, as [`Pico::start_hub`].
    pub fn start_hub_with(&self, api_port: u16, args: &[&str], env: &[(&str, &str)]) -> Hub<'_> {
        let mut command = self.command(&[&["hub", "run"], args].concat());
        self.hub_started(command.envs(env.iter().copied()), || {
            crate::net::is_listening(api_port)
        })
    }

    /// Starts `pico hub run` under `launcher` (as [`Pico::spawn_worker_via`]) and waits until
    /// `listening` says its API is up.
    pub fn start_hub_via(&self, launcher: &[&str], listening: impl Fn() -> bool) -> Hub<'_> {
        self.hub_started(&mut self.command_via(launcher, &["hub", "run"]), listening)
    }

    /// Starts `command`, a `pico hub run` however launched (a guide's step, say), its output
    /// into this home's `hub.log`, and waits until `listening` says its API is up.
    pub fn hub_started(&self, command: &mut Command, listening: impl Fn() -> bool) -> Hub<'_> {
        let child = spawn_logged(command, self.log_file("hub.log"));
        let mut hub = Hub {
            pico: self,
            daemon: Daemon { child: Some(child) },
        };
        let started = Instant::now();
        while !listening() {
            assert!(
                !hub.exited_within(Duration::ZERO) && started.elapsed() < Duration::from_secs(20),
                "hub did not start: {}",
                self.hub_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        hub
    }

    pub fn hub_log(&self) -> String {
        std::fs::read_to_string(self.home.join("hub.log")).unwrap_or_default()
    }

    /// The worker's Prometheus scrape (`GET /metrics` on its socket).
    pub fn metrics(&self) -> String {
        let socket = self.socket();
        let (status, text) = crate::net::curl(&[
            "--unix-socket",
            socket.to_str().unwrap(),
            "http://localhost/metrics",
        ]);
        assert_eq!(status, 200, "{text}");
        text
    }

    /// One value of the scrape: the line `name value`, as a number.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// `worker.log`, opened for a worker's stdout and stderr (appended across restarts).
    fn worker_log_file(&self) -> std::fs::File {
        self.log_file("worker.log")
    }

    /// `name` in the home, opened to append a daemon's output to.
    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join(name))
            .unwrap()
    }

    pub fn worker_log(&self) -> String {
        std::fs::read_to_string(self.home.join("worker.log")).unwrap_or_default()
    }

    pub fn home(&self) -> &Path {
        &self.home
    }
}

/// A temporary home is removed with what a stopped worker left mounted in it: a tenant asleep
/// when its worker stopped keeps its network namespace pinned there for the next worker, and a
/// test that stops its worker without removing its tenants would otherwise leave the mount, and
/// so the home, behind.
impl Drop for Pico {
    fn drop(&mut self) {
        if self._temp.is_some() {
            remove_what_killed_workers_left(&self.home, 4);
            worker::mounts::detach_below(&self.home);
        }
    }
}

/// Kills the tenants a killed worker left running in `dir` (its `tenants/NAME/tenant.json`
/// records, `depth` directories down at most) and removes the cgroups it left. By the time a
/// home goes, every worker of it has stopped or removed its tenants, or was killed (`kill -9`
/// leaves its tenants for the next worker to adopt): a test that ends without one would leave
/// them running for good, each PID 1 of its own PID namespace, and their cgroups and the
/// worker's group behind (~160 such groups had piled up on this machine). Only a pid that is
/// still a tenant's (in a `picocenter` cgroup) is killed.
fn remove_what_killed_workers_left(dir: &Path, depth: usize) {
    use worker::tenant::TenantState;
    if dir.file_name().is_some_and(|n| n == "tenants") {
        for (_, info) in worker::tenant::load_registry(dir).unwrap_or_default() {
            let asleep = matches!(
                info.state,
                TenantState::SwappedOut | TenantState::Exited | TenantState::Failed
            );
            let Some(pid) = info.pid.and_then(|p| i32::try_from(p).ok()) else {
                continue;
            };
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
            if !asleep && pid > 1 && cgroup.is_ok_and(|c| c.contains("/picocenter/")) {
                // SAFETY: kill(2) of a pid; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Their cgroups, and the worker's group, which a killed worker leaves.
        worker::cgroup::remove_leftover_cgroups(dir);
        return;
    }
    let Some(depth) = depth.checked_sub(1) else {
        return;
    };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_what_killed_workers_left(&entry.path(), depth);
        }
    }
}

/// Starts `command` with no input, its stdout and stderr into `log`.
fn spawn_logged(command: &mut Command, log: std::fs::File) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A daemon this test started (`pico worker run`, `pico hub run`): killed, stopped or waited for.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited_within(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => {
                    self.child = None;
                    return true;
                }
                Some(Ok(None)) if started.elapsed() >= limit => return false,
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Waits up to `limit` for the daemon to exit on its own; its exit status if it did.
    fn exit_status_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            let status = self.child.as_mut()?.try_wait().ok()?;
            match status {
                Some(status) => {
                    self.child = None;
                    return Some(status);
                }
                None if started.elapsed() >= limit => return None,
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// A running worker. On drop it removes every tenant (killing their processes) and stops.
pub struct Worker<'a> {
    pico: &'a Pico,
    daemon: Daemon,
}

impl Worker<'_> {
    /// The worker's process id (`None` once it was stopped or killed).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.child.as_ref().map(|c| c.id())
    }

    /// Kills the worker (SIGKILL, nothing is cleaned up) and waits for it.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Waits up to `limit` for the worker to exit on its own; whether it did.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        self.daemon.exited_within(limit)
    }

    /// Waits up to `limit` for the worker to exit on its own; its exit status if it did.
    pub fn exit_status_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.daemon.exit_status_within(limit)
    }

    /// Stops the worker (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        if self.daemon.child.is_some() {
            if let Ok(out) = self.pico.command(&["--json", "tenant", "ls"]).output() {
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
                for t in list.as_array().into_iter().flatten() {
                    if let Some(name) = t["name"].as_str() {
                        let _ = self.pico.command(&["tenant", "rm", name]).output();
                    }
                }
            }
        }
        self.stop();
    }
}

/// A running hub, stopped (SIGTERM) on drop.
pub struct Hub<'a> {
    pub pico: &'a Pico,
    daemon: Daemon,
}

impl Hub<'_> {
    /// Waits up to `limit` for the hub to exit on its own; whether it did.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        self.daemon.exited_within(limit)
    }

    /// Kills the hub (SIGKILL: nothing saved on the way out) and waits for it.
    pub fn kill(&mut self) {
        self.daemon.kill();
    }

    /// Stops the hub (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

impl Drop for Hub<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}
