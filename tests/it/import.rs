//! `govex import`: an import killed mid-way and rerun publishes each line exactly once, and
//! a batch interrupted between its send and its checkpoint is not sent again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use govex_adapters::samples::sample;
use govex_bus::{embedded::EmbeddedBroker, Bus, Metrics};

use crate::{node::test_node_config, support};

const TOPIC: &str = "gov.tax.deed-tax-payment.v1";

/// Writes `lines` deed-tax payments, every tenth with a wrong credit code; returns the path
/// and the number of valid lines.
fn write_file(dir: &Path, lines: u32) -> (PathBuf, usize) {
    let path = dir.join("payments.ndjson");
    let mut text = String::new();
    let mut valid = 0;
    for n in 0..lines {
        let mut record = sample("tax", "deed-tax-payment", n).unwrap();
        if n % 10 == 9 {
            record["tax_authority"] = serde_json::json!("11100000000013338X");
        } else {
            valid += 1;
        }
        text.push_str(&record.to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    (path, valid)
}

fn spawn_import(file: &Path, bootstrap: &str, registry: &str, batch: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["import", "tax", "deed-tax-payment"])
        .arg(file)
        .args(["--batch-lines", batch])
        .env("GOVEX_BUS__BROKERS", bootstrap)
        .env("GOVEX_LISTEN__REGISTRY", registry)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn done_through(file: &Path) -> usize {
    let checkpoint = file.with_file_name("payments.ndjson.govex-checkpoint.json");
    std::fs::read(checkpoint)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["done_through"].as_u64())
        .unwrap_or(0) as usize
}

struct Setup {
    broker: Arc<EmbeddedBroker>,
    node: govex::node::RunningNode,
    _data: tempfile::TempDir,
}

async fn setup() -> Setup {
    let broker = Arc::new(EmbeddedBroker::start(3).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            broker.create_topic(&topic, 3, 3).unwrap();
        }
    }
    let data = tempfile::tempdir().unwrap();
    let mut config = test_node_config(data.path());
    config.bus.brokers = Some(broker.bootstrap_servers().to_owned());
    let node = govex::node::start(config).await.unwrap();
    Setup { broker, node, _data: data }
}

/// Import header values on the topic: line → how many times it was published.
async fn published_lines(broker: &Arc<EmbeddedBroker>) -> HashMap<String, usize> {
    let bus = Bus::on_embedded(&support::bus_config(), broker.clone(), &Metrics::new()).unwrap();
    let mut counts = HashMap::new();
    for value in bus.scan_header(TOPIC, &Default::default(), "govex-import").await.unwrap() {
        *counts.entry(value).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_way_and_rerun_publishes_each_line_exactly_once() {
    let setup = setup().await;
    let work = tempfile::tempdir().unwrap();
    let (file, valid) = write_file(work.path(), 20_000);
    let registry = setup.node.registry_addr.unwrap().to_string();
    let bootstrap = setup.broker.bootstrap_servers().to_owned();

    let mut first = spawn_import(&file, &bootstrap, &registry, "20");
    let deadline = Instant::now() + Duration::from_secs(120);
    while done_through(&file) < 2_000 {
        assert!(Instant::now() < deadline, "the import made no progress");
        assert!(first.try_wait().unwrap().is_none(), "the import ended before it could be interrupted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap(); // SIGKILL: no chance to write a last checkpoint
    first.wait().unwrap();
    let killed_at = done_through(&file);
    assert!(killed_at < 20_000, "killed before the end");

    let second = tokio::task::spawn_blocking({
        let (file, bootstrap, registry) = (file.clone(), bootstrap.clone(), registry.clone());
        move || spawn_import(&file, &bootstrap, &registry, "500").wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out}\n{}", String::from_utf8_lossy(&second.stderr));
    assert!(out.contains("done by an earlier run"), "{out}");

    let counts = published_lines(&setup.broker).await;
    assert_eq!(counts.len(), valid, "every valid line arrived");
    assert!(
        counts.values().all(|n| *n == 1),
        "no line arrived twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).take(5).collect::<Vec<_>>()
    );
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), valid as i64);
    let rejects = std::fs::read_to_string(work.path().join("payments.ndjson.rejects.ndjson")).unwrap();
    let mut lines: Vec<u64> = rejects
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 2_000, "each invalid line is in the reject file once");
    assert_eq!(rejects.lines().count(), 2_000);
    setup.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_before_a_crash_is_not_sent_again() {
    let setup = setup().await;
    let work = tempfile::tempdir().unwrap();
    let (file, valid) = write_file(work.path(), 100);
    let registry = setup.node.registry_addr.unwrap().to_string();
    let bootstrap = setup.broker.bootstrap_servers().to_owned();
    let run = |batch: &'static str| {
        let (file, bootstrap, registry) = (file.clone(), bootstrap.clone(), registry.clone());
        tokio::task::spawn_blocking(move || {
            spawn_import(&file, &bootstrap, &registry, batch).wait_with_output().unwrap()
        })
    };
    assert!(run("10").await.unwrap().status.success());
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), valid as i64);

    // Make the checkpoint say what a crash right after the last batch's send leaves behind:
    // lines 91-100 pending, nothing after line 90 checkpointed.
    let checkpoint_path = work.path().join("payments.ndjson.govex-checkpoint.json");
    let mut checkpoint: serde_json::Value = serde_json::from_slice(&std::fs::read(&checkpoint_path).unwrap()).unwrap();
    let rejects_path = work.path().join("payments.ndjson.rejects.ndjson");
    let rejects = std::fs::read_to_string(&rejects_path).unwrap();
    let kept: usize = rejects
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap() <= 90)
        .map(|l| l.len() + 1)
        .sum();
    checkpoint["done_through"] = 90.into();
    checkpoint["reject_bytes"] = kept.into();
    checkpoint["pending"] =
        serde_json::json!({ "first_line": 91, "last_line": 100, "watermarks": { "0": 0, "1": 0, "2": 0 } });
    std::fs::write(&checkpoint_path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();

    let output = run("10").await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), valid as i64, "the pending batch was already there");
    assert_eq!(std::fs::read_to_string(&rejects_path).unwrap(), rejects, "its rejected line is written once");
    setup.node.shutdown().await.unwrap();
}
