//! A node (or a broker) as a child process of the test: what a crash, a memory bound or a
//! shutdown is tested on. A crash is SIGKILL of the child, never an aborted task.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use govex::config::NodeConfig;
use govex_http::config::Role;

/// The token a child node gives `department`'s system.
pub fn child_token(department: &str) -> String {
    format!("child-token-of-{department}")
}

/// The token of a child node's operator (backups).
pub const CHILD_OPERATOR_TOKEN: &str = "child-token-of-the-operator";

/// Reads a pipe into a shared buffer until it closes.
pub fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buffer
}

/// A `govex` child process.
pub struct ChildProcess {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

/// `govex args...` with `env`, logging warnings, its output piped: every child process a test
/// starts is made here.
pub fn govex<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_govex"));
    command.args(args).env("RUST_LOG", "warn").envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

impl ChildProcess {
    /// Starts `govex args...` with `env`.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = govex(args, env).spawn().expect("govex starts");
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Self { child, stdout, stderr }
    }

    /// The value after `label` on the process's start-up lines (`  API   http://...`).
    pub async fn printed(&self, label: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let text = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
            if let Some(line) = text.lines().find(|l| l.trim_start().starts_with(label)) {
                return line.split_whitespace().last().unwrap().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child did not print {label}: {text}\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Peak resident memory of the child so far (`VmHWM`), in bytes.
    pub fn peak_memory(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:") * 1024
    }

    /// SIGKILL: no shutdown, no flush, as when the machine loses power.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits up to `limit` for the exit; the time it took.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = std::time::Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                self.kill9();
                panic!("the child did not stop within {limit:?} of SIGTERM:\n{}", self.stderr_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A standalone broker in a child process, which outlives the nodes killed on it.
pub struct ChildBroker {
    /// Held so that the broker lives as long as this (it is killed on drop).
    _process: ChildProcess,
    pub bootstrap: String,
}

impl ChildBroker {
    pub async fn start() -> Self {
        let process = ChildProcess::spawn(&["broker"], &[]);
        let bootstrap = process.printed("embedded broker running").await;
        Self { _process: process, bootstrap }
    }
}

/// A node in a child process, with its addresses.
pub struct ChildNode {
    pub process: ChildProcess,
    pub api: String,
    pub ops: String,
    pub bootstrap: String,
}

/// A configuration for a child node in `dir`: every department (and the platform) has a
/// department token ([`child_token`]), listeners on free ports, the given broker or the
/// embedded one.
pub fn child_config(dir: &Path, brokers: Option<&str>) -> NodeConfig {
    let mut config = NodeConfig::embedded_default();
    config.data_dir = dir.join("data");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.api = any;
    config.listen.registry = any;
    config.listen.ops = any;
    config.bus.session_timeout_ms = 6_000;
    config.bus.brokers = brokers.map(str::to_owned);
    config.intake.tokens = ["land-registry", "housing", "tax", "provident-fund", "platform"]
        .into_iter()
        .map(|department| govex_http::config::TokenConfig::of(department, &child_token(department), Role::Department))
        .chain([govex_http::config::TokenConfig::of("platform", CHILD_OPERATOR_TOKEN, Role::Operator)])
        .collect();
    config
}

impl ChildNode {
    /// Starts `govex node --config` with `config` (written to `dir/node.toml`).
    pub async fn start(dir: &Path, config: &NodeConfig) -> Self {
        let path: PathBuf = dir.join("node.toml");
        std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
        let process = ChildProcess::spawn(&["node", "--config", path.to_str().unwrap()], &[]);
        let api = process.printed("API").await.trim_end_matches('/').to_owned();
        let ops = process.printed("metrics").await.trim_end_matches("/metrics").to_owned();
        let bootstrap = process.printed("bus").await;
        Self { process, api, ops, bootstrap }
    }

    /// One metric's value from `/metrics` (the sum over the samples whose line starts with
    /// `name`, labels included in `name` when given).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.ops)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}
