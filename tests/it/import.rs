//! `govex import`: an import killed mid-way and rerun publishes each line exactly once, a
//! batch interrupted between its send and its checkpoint is not sent again, and the
//! fix-and-retry loop (a fixed rejects file, a fixed source file) publishes what is new and
//! nothing twice.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Child,
    sync::Arc,
    time::{Duration, Instant},
};

use govex_adapters::samples::sample;
use govex_bus::{embedded::EmbeddedBroker, Bus, Metrics};

use crate::{support, support::test_node_config};

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
    let args = [std::ffi::OsStr::new("import"), "tax".as_ref(), "deed-tax-payment".as_ref(), file.as_os_str()];
    let env = [("GOVEX_BUS__BROKERS", bootstrap.to_owned()), ("GOVEX_LISTEN__REGISTRY", registry.to_owned())];
    crate::child::govex(&args, &env).args(["--batch-lines", batch]).spawn().unwrap()
}

/// Runs `govex import` of `file` to its end, waiting off the async workers.
fn import_to_end(
    file: &Path,
    bootstrap: &str,
    registry: &str,
    batch: &str,
) -> impl std::future::Future<Output = std::process::Output> {
    let child = spawn_import(file, bootstrap, registry, batch);
    async move { tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap() }
}

fn done_through(file: &Path) -> usize {
    let state = file.with_file_name("govex-import.tax.deed-tax-payment.state.json");
    std::fs::read(state)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["done_through"].as_u64())
        .unwrap_or(0) as usize
}

struct Setup {
    broker: Arc<EmbeddedBroker>,
    node: govex::node::RunningNode,
    /// The broker's bootstrap servers and the node's registry, for `govex import`.
    bootstrap: String,
    registry: String,
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
    let (bootstrap, registry) = (broker.bootstrap_servers().to_owned(), node.registry_addr.unwrap().to_string());
    Setup { broker, node, bootstrap, registry, _data: data }
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
    let (setup, work) = (setup().await, tempfile::tempdir().unwrap());
    let ((file, valid), bootstrap, registry) = (write_file(work.path(), 20_000), &setup.bootstrap, &setup.registry);

    let mut first = spawn_import(&file, bootstrap, registry, "20");
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
    assert_eq!(
        second.status.code(),
        Some(2),
        "finished with rejects: {out}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(out.contains("published before"), "{out}");

    let counts = published_lines(&setup.broker).await;
    assert_eq!(counts.len(), valid, "every valid line arrived");
    assert!(
        counts.values().all(|n| *n == 1),
        "no line arrived twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).take(5).collect::<Vec<_>>()
    );
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), valid as i64);
    let errors = std::fs::read_to_string(work.path().join("payments.ndjson.errors.ndjson")).unwrap();
    let mut lines: Vec<u64> = errors
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["line"].as_u64().unwrap())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), 2_000, "each invalid line's errors are listed once");
    assert_eq!(errors.lines().count(), 2_000);
    let rejects_path = work.path().join("payments.ndjson.rejects.ndjson");
    let rejects = std::fs::read_to_string(&rejects_path).unwrap();
    assert_eq!(rejects.lines().count(), 2_000, "each invalid line is in the rejects file once");
    assert!(rejects.lines().all(|l| l.contains("11100000000013338X")), "the lines as they were");

    // Fixed, the rejects file imports as it is: the 2,000 arrive, nothing else again.
    std::fs::write(&rejects_path, rejects.replace("11100000000013338X", "11100000000013338W")).unwrap();
    let third = tokio::task::spawn_blocking({
        let (file, bootstrap, registry) = (rejects_path.clone(), bootstrap.clone(), registry.clone());
        move || spawn_import(&file, &bootstrap, &registry, "500").wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stdout));
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), 20_000);
    assert!(published_lines(&setup.broker).await.values().all(|n| *n == 1));
    setup.node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_before_a_crash_is_not_sent_again() {
    let (setup, work) = (setup().await, tempfile::tempdir().unwrap());
    let ((file, valid), bootstrap, registry) = (write_file(work.path(), 100), &setup.bootstrap, &setup.registry);
    let run = |batch: &str| import_to_end(&file, bootstrap, registry, batch);
    assert_eq!(run("10").await.status.code(), Some(2), "finished, with rejects");
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), valid as i64);

    // What a crash right after the last batch's send leaves behind: the batch pending in the
    // folder's state, and its 9 published records missing from the ledger.
    let ledger_path = work.path().join("govex-import.tax.deed-tax-payment.published");
    let ledger = std::fs::read_to_string(&ledger_path).unwrap();
    let hashes: Vec<&str> = ledger.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(hashes.len(), valid);
    std::fs::write(&ledger_path, hashes[..valid - 9].join("\n")).unwrap();
    let state_path = work.path().join("govex-import.tax.deed-tax-payment.state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["published"] = (valid - 9).into();
    state["done_through"] = 90.into();
    state["pending"] = serde_json::json!({
        "file": file.display().to_string(), "first_line": 91, "last_line": 100,
        "watermarks": { "0": 0, "1": 0, "2": 0 },
    });
    std::fs::write(&state_path, state.to_string()).unwrap();

    // The next import in the folder, even of a copy of the file, finds the batch first.
    let copy = work.path().join("payments-copy.ndjson");
    std::fs::copy(&file, &copy).unwrap();
    let output = import_to_end(&copy, bootstrap, registry, "10").await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), valid as i64, "the pending batch was already there");
    let ledger = std::fs::read_to_string(&ledger_path).unwrap();
    assert_eq!(ledger.lines().filter(|l| !l.is_empty()).count(), valid, "the arrived batch is in the ledger again");

    // The same records written otherwise (no spaces, keys in another order) are the same.
    let reformatted = work.path().join("payments-reformatted.ndjson");
    let text: String = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut pairs: Vec<(String, serde_json::Value)> = value.as_object().unwrap().clone().into_iter().collect();
            pairs.reverse();
            let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\" :  {v}")).collect();
            format!("{{ {} }}\n", fields.join(" , "))
        })
        .collect();
    std::fs::write(&reformatted, text).unwrap();
    let output = import_to_end(&reformatted, bootstrap, registry, "10").await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), valid as i64, "a reformatted file is the same records");

    // A ledger that lost lines is refused, not taken as "nothing published"; lines that are not
    // hashes are named.
    std::fs::write(&ledger_path, format!("{}\nnot a hash\n{}x\n", hashes[..10].join("\n"), &hashes[0][..31])).unwrap();
    let output = run("10").await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it lost lines"), "{stderr}");
    assert!(stderr.contains("unreadable=2"), "{stderr}");
    assert_eq!(support::records_in_topic(bootstrap, TOPIC, 3), valid as i64);
    setup.node.shutdown().await.unwrap();
}

/// `a.b[0].c` paths and their text, as a CSV export would have them.
fn flatten(value: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(value, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, &format!("{prefix}[{i}]"), out);
            }
        }
        serde_json::Value::String(text) => out.push((prefix.to_owned(), text.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The fix-and-retry loop on a CSV export: the rejects keep their rows as they were (a row
/// that is not even a record too), in a file only its owner reads; after the source is
/// fixed, a rerun publishes the fixed and the new rows and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_csv_reimports_only_what_is_new() {
    let setup = setup().await;
    let work = tempfile::tempdir().unwrap();
    let (bootstrap, registry) = (setup.bootstrap.clone(), setup.registry.clone());
    let file = work.path().join("payments.csv");
    let row = |n: u32, authority: &str| {
        let mut record = sample("tax", "deed-tax-payment", n).unwrap();
        record["tax_authority"] = serde_json::json!(authority);
        let mut cells = Vec::new();
        flatten(&record, "", &mut cells);
        cells
    };
    let header = row(0, "").iter().map(|(p, _)| p.clone()).collect::<Vec<_>>().join(",");
    let line = |n: u32, authority: &str| row(n, authority).iter().map(|(_, v)| v.clone()).collect::<Vec<_>>().join(",");
    let (good, bad) = ("11100000000013338W", "11100000000013338X");
    let short_row = "V-short,CITIZEN_ID";
    let write = |rows: &[String]| std::fs::write(&file, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    write(&[line(1, good), line(2, good), line(3, good), line(4, bad), short_row.to_owned()]);
    let run = || import_to_end(&file, &bootstrap, &registry, "2");

    let output = run().await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), 3);
    let out = String::from_utf8_lossy(&output.stdout);
    let count = |label: &str| {
        out.lines().find(|l| l.starts_with(label)).and_then(|l| l.split_whitespace().last()).map(str::to_owned)
    };
    assert_eq!(count("published now").as_deref(), Some("3"), "{out}");
    assert_eq!(count("rejected now").as_deref(), Some("2"), "{out}");
    assert_eq!(count("csv-row").as_deref(), Some("1"), "{out}");
    let rejects_path = work.path().join("payments.csv.rejects.csv");
    let rejects = std::fs::read_to_string(&rejects_path).unwrap();
    assert_eq!(rejects, format!("{header}\n{}\n{short_row}\n", line(4, bad)), "the header and the rows as they were");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&rejects_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the rejects hold personal data");
    }
    let errors: Vec<serde_json::Value> = std::fs::read_to_string(work.path().join("payments.csv.errors.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["rejects_line"].as_u64()), (Some(5), Some(2)));
    assert_eq!(errors[0]["errors"][0]["pointer"], "/tax_authority");
    assert_eq!((errors[1]["line"].as_u64(), errors[1]["errors"][0]["rule"].as_str()), (Some(6), Some("csv-row")));
    assert_eq!(errors[1]["rejects_line"].as_u64(), Some(3), "the second reject is on the rejects file's line 3");
    assert!(!errors.iter().any(|e| e.to_string().contains(bad)), "no values in the errors");

    // A rejects file someone edited is not overwritten by a rerun of the source, and a link
    // planted where the rejects go is not followed.
    std::fs::write(&rejects_path, rejects.replace(bad, good)).unwrap();
    let output = run().await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("changed since an import wrote it"));
    assert_eq!(std::fs::read_to_string(&rejects_path).unwrap(), rejects.replace(bad, good), "the fixes are kept");
    std::fs::remove_file(&rejects_path).unwrap();
    let elsewhere = work.path().join("elsewhere.txt");
    std::fs::write(&elsewhere, "precious").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &rejects_path).unwrap();
    let output = run().await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is a symbolic link"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "precious");
    std::fs::remove_file(&rejects_path).unwrap();
    // The errors file too (it is opened without following links, not checked first).
    let errors_path = work.path().join("payments.csv.errors.ndjson");
    std::fs::remove_file(&errors_path).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &errors_path).unwrap();
    let output = run().await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("errors.ndjson: is a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "precious");
    std::fs::remove_file(&errors_path).unwrap();
    let _ = std::fs::remove_file(&rejects_path);
    // A state file that cannot be read is an error, not a fresh start.
    let state_path = work.path().join("govex-import.tax.deed-tax-payment.state.json");
    let state = std::fs::read(&state_path).unwrap();
    std::fs::remove_file(&state_path).unwrap();
    std::fs::create_dir(&state_path).unwrap();
    let output = run().await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    std::fs::remove_dir(&state_path).unwrap();
    std::fs::write(&state_path, state).unwrap();

    // The source is fixed and a row added: the fixed and the new rows arrive, nothing twice.
    write(&[line(1, good), line(2, good), line(3, good), line(4, good), line(5, good), line(6, good)]);
    let output = run().await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), 6);
    assert!(!rejects_path.exists(), "nothing rejected: no rejects file");
    let output = run().await;
    assert!(output.status.success());
    assert_eq!(support::records_in_topic(&bootstrap, TOPIC, 3), 6, "a rerun publishes nothing");
    let out = String::from_utf8_lossy(&output.stdout);
    let row = |label: &str| {
        out.lines().find(|l| l.starts_with(label)).map(|l| l.split_whitespace().last().unwrap_or("").to_owned())
    };
    assert_eq!(row("records in file").as_deref(), Some("6"), "{out}");
    assert_eq!(row("published before").as_deref(), Some("6"), "{out}");
    assert_eq!(row("published now").as_deref(), Some("0"), "{out}");
    assert!(published_lines(&setup.broker).await.values().all(|n| *n == 1));
    setup.node.shutdown().await.unwrap();
}
