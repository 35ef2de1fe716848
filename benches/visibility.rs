//! `cargo bench --bench visibility`
//!
//! How soon a licence the intake accepted can be verified: from the intake's `202 Accepted`
//! to the first `verify` that answers `valid`, on a `govex node` in its own process.
//!
//! - Single licences on an idle node: one at a time, each polled every millisecond.
//! - A steady 500 licences/s, open loop (each sent when it is due, whatever the node's pace):
//!   every tenth licence is polled every two milliseconds, so that the polling stays a small
//!   part of the load it measures.
//!
//! Both on the embedded default (the node started with no `[bus]` section, as a new user
//! starts it) and against `govex broker` in a process of its own, configured the way
//! `govex broker` says (`fetch_wait_max_ms = 10`: the mock cluster holds every fetch for the
//! whole wait, where a real broker answers as records arrive). The baseline, measured in
//! the same run, is the round trip of one accepted record itself: how long the intake takes to
//! answer `202`, which a licence cannot be visible before.

mod support;

use std::time::{Duration, Instant};

use support::{ms, percentile};

const SINGLE: u32 = 200;
const RATE: u32 = 500;
const STEADY_SECONDS: u32 = 20;
const PROBE_EVERY: u32 = 10;
const ISSUER: &str = "bench-token-of-the-platform";
const READER: &str = "bench-token-of-provident-fund";

#[derive(Default)]
struct Measured {
    accepted: Vec<Duration>,
    visible: Vec<Duration>,
    errors: u64,
}

impl Measured {
    /// Notes what sending one licence measured, or its error.
    fn add(&mut self, outcome: Result<(Duration, Option<Duration>), String>) {
        match outcome {
            Ok((accepted, visible)) => {
                self.accepted.push(accepted);
                self.visible.extend(visible);
            }
            Err(e) => {
                eprintln!("{e}");
                self.errors += 1;
            }
        }
    }
}

/// Sends licence `n` and, when `probe`, polls `verify` every `poll` until it is valid; the time
/// the intake took to accept it and, when probed, from acceptance to `valid`.
async fn licence(
    client: &reqwest::Client,
    api: &str,
    n: u32,
    probe: bool,
    poll: Duration,
) -> Result<(Duration, Option<Duration>), String> {
    let record = govex_adapters::samples::sample("platform", "licence", n).expect("a licence sample");
    let id = record["licence_id"].as_str().expect("id").to_owned();
    let verify = serde_json::json!({"purpose": "购房提取核验", "content_hash": record["content_hash"]});
    let sent = Instant::now();
    let response = client
        .post(format!("{api}/v1/platform/licence"))
        .bearer_auth(ISSUER)
        .json(&record)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != reqwest::StatusCode::ACCEPTED {
        return Err(format!("intake answered {}", response.status()));
    }
    let accepted = Instant::now();
    if !probe {
        return Ok((accepted - sent, None));
    }
    let deadline = accepted + Duration::from_secs(30);
    loop {
        let answer: serde_json::Value = client
            .post(format!("{api}/v1/licences/{id}/verify"))
            .bearer_auth(READER)
            .json(&verify)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["result"] == "valid" {
            return Ok((accepted - sent, Some(accepted.elapsed())));
        }
        if Instant::now() > deadline {
            return Err(format!("{id} not valid 30 s after it was accepted: {answer}"));
        }
        tokio::time::sleep(poll).await;
    }
}

async fn single(client: &reqwest::Client, api: &str, first: u32) -> Measured {
    let mut measured = Measured::default();
    for n in first..first + SINGLE {
        measured.add(licence(client, api, n, true, Duration::from_millis(1)).await);
    }
    measured
}

async fn steady(client: &reqwest::Client, api: &str, first: u32) -> Measured {
    let total = RATE * STEADY_SECONDS;
    let interval = Duration::from_secs_f64(1.0 / f64::from(RATE));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i).await;
        let (client, api) = (client.clone(), api.to_owned());
        tasks.push(tokio::spawn(async move {
            licence(&client, &api, first + i, i % PROBE_EVERY == 0, Duration::from_millis(2)).await
        }));
    }
    let mut measured = Measured::default();
    for task in tasks {
        measured.add(task.await.expect("task"));
    }
    measured
}

fn report(name: &str, mut measured: Measured, peak_mib: f64) {
    measured.accepted.sort();
    measured.visible.sort();
    let (a, v) = (&measured.accepted, &measured.visible);
    println!(
        "{name:<44} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>7} {:>9.0}",
        ms(percentile(a, 0.5)),
        ms(percentile(a, 0.99)),
        ms(percentile(v, 0.5)),
        ms(percentile(v, 0.99)),
        v.len(),
        measured.errors,
        peak_mib,
    );
}

async fn on(name: &str, bus_section: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let sections = format!(
        "{bus_section}\n[api]\nreads_per_second = 0\n{}{}",
        support::token_section("platform", ISSUER),
        support::token_section("provident-fund", READER)
    );
    let node = support::node(data.path(), &sections).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().expect("client");
    // Warm-up: schemas registered, connections open, the sink's group joined.
    single(&client, &node.api, 1_000_000).await;
    report(&format!("{name}, one at a time, idle"), single(&client, &node.api, 0).await, node.process.peak_mib());
    report(
        &format!("{name}, {RATE}/s steady (1 in {PROBE_EVERY} probed)"),
        steady(&client, &node.api, 10_000).await,
        node.process.peak_mib(),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        println!("licence accepted by the intake (202) -> verify answers valid; node in its own process on loopback");
        println!(
            "{:<44} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9}",
            "", "202 p50", "202 p99", "vis p50", "vis p99", "probes", "errors", "peak MiB"
        );
        on("embedded default", "").await;
        let (_broker, bootstrap) = support::broker();
        // As `govex broker` says to point a node at it.
        on("govex broker", &format!("[bus]\nbrokers = \"{bootstrap}\"\nfetch_wait_max_ms = 10")).await;
        println!("(ms; the 202 columns are the baseline: a licence cannot be visible before it is accepted)");
    });
}
