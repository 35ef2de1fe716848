//! Stewards change record types on a running node: a compatible version goes live in the
//! intake without a restart and comes out through Confluent's deserializer; an incompatible
//! or unusable one is refused at push and the intake keeps what it had.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{intake::intake_config, support::STEWARD_TOKEN};

const SUBJECT: &str = "gov.housing.contract-filing.v1-value";
const TOPIC: &str = "gov.housing.contract-filing.v1";
const AVSC: &str = "schemas/avro/gov.housing.contract-filing.v1.avsc";

/// `govex schema push` from `dir`, as a steward.
fn push(dir: &Path, registry: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["schema", "push", "--registry", registry])
        .env("GOVEX_REGISTRY__TOKEN", STEWARD_TOKEN)
        .current_dir(dir)
        .output()
        .expect("govex runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// The working tree's contract-filing schema with `field` added before `division`.
fn add_field(dir: &Path, field: &str) {
    let path = dir.join(AVSC);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen(r#"    {"name": "division""#, &format!("    {field},\n    {{\"name\": \"division\""), 1);
    assert_ne!(edited, text);
    std::fs::write(path, edited).unwrap();
}

async fn submit(api: &str, record: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{api}/v1/housing/contract-filing"))
        .bearer_auth("test-token-of-housing")
        .json(record)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn filing(n: u32, extra: &[(&str, Value)]) -> Value {
    let mut record = govex_adapters::samples::sample("housing", "contract-filing", n).unwrap();
    for (name, value) in extra {
        record[*name] = value.clone();
    }
    record
}

fn rules(answer: &Value) -> Vec<(String, String)> {
    answer["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["pointer"].as_str().unwrap_or("").to_owned(), v["rule"].as_str().unwrap_or("").to_owned()))
        .collect()
}

// The steward's commands and Python run as child processes and block this thread while the
// node answers them, so the node needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_version_goes_live_without_a_restart_and_a_refused_one_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut config = intake_config(data.path());
    config.intake.schema_refresh_ms = 200;
    let partitions = config.bus.partitions;
    let node = govex::node::start(config).await.unwrap();
    let registry = format!("http://{}", node.registry_addr.unwrap());
    let api = format!("http://{}", node.api_addr().unwrap());
    let work = tempfile::tempdir().unwrap();
    crate::steward::copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &work.path().join("schemas"));
    let remark = ("remark", json!("二手房网签，买方首付三成"));

    // Version 1 does not know the field.
    let (status, answer) = submit(&api, &filing(1, std::slice::from_ref(&remark))).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(rules(&answer), [("/remark".to_owned(), "unknown-property".to_owned())]);

    // The steward adds an optional field and pushes: the registry takes version 2.
    add_field(
        work.path(),
        r#"{"name": "remark", "type": ["null", "string"], "default": null, "govex.json": {"maxLength": 200}, "doc": "备注。Remark."}"#,
    );
    let (code, out) = push(work.path(), &registry);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with(SUBJECT) && l.ends_with("registered")), "{out}");
    let v2 = node.registry.latest(SUBJECT).await.unwrap().0;

    // The intake takes it within its refresh interval, with no restart.
    let pushed = Instant::now();
    let first = loop {
        let (status, answer) = submit(&api, &filing(1, std::slice::from_ref(&remark))).await;
        match status {
            202 => break answer,
            422 if pushed.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("version 2 did not go live within 10 s: {status} {answer}"),
        }
    };
    println!("version 2 live {} ms after the push", pushed.elapsed().as_millis());
    assert_eq!(first["topic"], TOPIC, "{first}");
    // The input contract it serves says so too.
    let contract: Value = crate::support::json(
        reqwest::Client::new()
            .get(format!("{api}/v1/housing/contract-filing/schema"))
            .bearer_auth("test-token-of-housing"),
    )
    .await;
    assert_eq!(contract["properties"]["remark"]["maxLength"], 200, "{contract}");
    assert!(!contract["required"].as_array().unwrap().contains(&json!("remark")), "optional: {contract}");
    // Too long by the new contract.
    let (status, answer) = submit(&api, &filing(2, &[("remark", json!("长".repeat(201)))])).await;
    assert_eq!((status, rules(&answer)), (422, vec![("/remark".to_owned(), "max-length".to_owned())]));

    // An incompatible change (a required field without a default) is refused at push.
    add_field(work.path(), r#"{"name": "floor", "type": "string", "doc": "楼层。Floor."}"#);
    let (code, out) = push(work.path(), &registry);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(SUBJECT) && l.contains("REFUSED") && l.contains("incompatible")),
        "{out}"
    );
    // So is one whose contract cannot be used (a check no one knows), compatible or not.
    crate::steward::copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &work.path().join("schemas"));
    add_field(
        work.path(),
        r#"{"name": "remark", "type": ["null", "string"], "default": null, "govex.checks": ["gb99999-remark"], "doc": "备注。Remark."}"#,
    );
    let (code, out) = push(work.path(), &registry);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no check is named 'gb99999-remark'"), "{out}");
    assert_eq!(node.registry.versions(SUBJECT).await.unwrap(), [1, 2], "nothing refused was stored");

    // The intake is unchanged: version 2 still takes the remark and not the floor.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, answer) = submit(&api, &filing(3, &[("floor", json!("12"))])).await;
    assert_eq!((status, rules(&answer)), (422, vec![("/floor".to_owned(), "unknown-property".to_owned())]));
    let (status, second) = submit(&api, &filing(4, std::slice::from_ref(&remark))).await;
    assert_eq!(status, 202, "{second}");

    // What was acknowledged is on the topic, encoded by version 2, and Confluent's Python
    // deserializer reads the field from it.
    let bootstrap = node.bus.bootstrap_servers().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_topic.py"))
            .args(["--bootstrap", &bootstrap, "--registry", &registry, "--topic", TOPIC, "--count", "2"])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "python reader failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let read: Vec<(u32, Value)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RECORD "))
        .map(|l| {
            let (id, json) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), serde_json::from_str(json).unwrap())
        })
        .collect();
    assert_eq!(read.len(), 2, "{stdout}");
    let mut numbers: Vec<&str> = read.iter().map(|(_, r)| r["filing_number"].as_str().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        [filing(1, &[])["filing_number"].as_str().unwrap(), filing(4, &[])["filing_number"].as_str().unwrap()]
    );
    for (id, record) in &read {
        assert_eq!(*id, v2, "encoded by version 2: {record}");
        assert_eq!(record["remark"], remark.1, "{record}");
    }
    assert_eq!(
        crate::support::records_in_topic(node.bus.bootstrap_servers(), TOPIC, partitions),
        2,
        "acknowledged = on the topic"
    );
    node.shutdown().await.unwrap();
}
