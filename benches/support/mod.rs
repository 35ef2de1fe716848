//! What the node-level benchmarks share: a `govex broker` and `govex node` as child processes
//! on loopback, their peak memory, and percentiles.

#![allow(dead_code)] // each benchmark uses its own part of this

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The binary under test, built by `cargo bench` with the benchmarks.
pub const GOVEX: &str = env!("CARGO_BIN_EXE_govex");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// The process's peak resident memory so far (`VmHWM`), in MiB.
    pub fn peak_mib(&self) -> f64 {
        memory::peak_mib(self.0.id())
    }
}

pub mod memory;

/// `govex broker` in a process of its own; its bootstrap servers.
pub fn broker() -> (Killed, String) {
    let mut broker = Command::new(GOVEX)
        .arg("broker")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("govex broker");
    let mut lines = BufReader::new(broker.stdout.take().expect("stdout")).lines();
    let line = lines.by_ref().map_while(Result::ok).find(|l| l.contains("bootstrap servers:")).expect("bootstrap line");
    // The broker keeps writing to its stdout; a closed pipe would stop it.
    std::thread::spawn(move || lines.for_each(drop));
    let bootstrap = line.rsplit(' ').next().expect("address").to_owned();
    (Killed(broker), bootstrap)
}

/// A `govex node` on loopback.
pub struct Node {
    pub process: Killed,
    /// `http://127.0.0.1:<api port>`.
    pub api: String,
    pub registry: String,
    pub ops: String,
}

/// Starts `govex node` with `sections` (TOML) after its ports and data directory, and waits
/// until `/readyz` says it is ready.
pub async fn node(data_dir: &Path, sections: &str) -> Node {
    let (api, registry, ops) = (free_port(), free_port(), free_port());
    let config = format!(
        "division = \"610921\"\ndata_dir = \"{}\"\n{sections}\n[listen]\napi = \"127.0.0.1:{api}\"\nregistry = \"127.0.0.1:{registry}\"\nops = \"127.0.0.1:{ops}\"\n",
        data_dir.display(),
    );
    let config_path = data_dir.join("node.toml");
    std::fs::write(&config_path, config).expect("config");
    let process = Command::new(GOVEX)
        .args(["node", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("govex node");
    let node = Node {
        process: Killed(process),
        api: format!("http://127.0.0.1:{api}"),
        registry: format!("http://127.0.0.1:{registry}"),
        ops: format!("http://127.0.0.1:{ops}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while client.get(format!("{}/readyz", node.ops)).send().await.map_or(true, |r| !r.status().is_success()) {
        assert!(Instant::now() < deadline, "the node did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node
}

/// A token section for `department` with token `token`.
pub fn token_section(department: &str, token: &str) -> String {
    format!("[[intake.tokens]]\ndepartment = \"{department}\"\nsha256 = \"{}\"\n", govex_http::auth::hash_token(token))
}

/// The `p`-quantile of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
