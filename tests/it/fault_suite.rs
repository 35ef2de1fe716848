//! The fault suite: a node in a child process under a steady load of licence batches, on a
//! cluster this test controls (librdkafka's mock cluster), through every fault the cluster
//! can inject and a SIGKILL at random points. After each fault it counts: acknowledged = on
//! the topic = applied in the store, nothing lost, nothing doubled; and prints one table.
//!
//! The load is what a department system does: each batch carries an Idempotency-Key and is
//! sent again with the same key until it is answered 200.

use std::{collections::HashSet, sync::Arc, time::Duration};

use govex_bus::{
    embedded::EmbeddedBroker,
    rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr},
};
use serde_json::Value;

use crate::{
    child::{child_config, child_token, ChildNode},
    faults::event_ids,
};

const LICENCES: &str = "gov.elicense.licence.v1";
const BATCH: u32 = 250;

/// Sends batch `n` (licences `n * BATCH ..`) under key `batch-n` until it is answered 200;
/// the event ids it was answered with.
async fn send_until_acknowledged(api: &str, n: u32) -> Vec<String> {
    let body: String = (n * BATCH..(n + 1) * BATCH)
        .map(|i| govex_adapters::samples::sample("platform", "licence", i).unwrap().to_string() + "\n")
        .collect();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let answer = http
            .post(format!("{api}/v1/platform/licence:batch"))
            .bearer_auth(child_token("platform"))
            .header("content-type", "application/x-ndjson")
            .header("idempotency-key", format!("batch-{n}"))
            .body(body.clone())
            .send()
            .await;
        if let Ok(answer) = answer {
            if answer.status() == 200 {
                let answer: Value = answer.json().await.unwrap();
                let ids: Vec<String> = answer["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|r| r["event_id"].as_str().map(str::to_owned))
                    .collect();
                if ids.len() == BATCH as usize {
                    return ids;
                }
                // Lines the broker did not take are answered `unavailable`: the department
                // sends the batch again (same key: what was published keeps its ids).
            }
        }
        assert!(std::time::Instant::now() < deadline, "batch {n} was never acknowledged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Counts {
    acknowledged: HashSet<String>,
    /// Records on the topic whose event id an earlier record already had (sent again after
    /// a crash under the same key: the store drops them), up to the last check.
    repeats: usize,
}

struct Row {
    fault: &'static str,
    records: usize,
    lost: usize,
    duplicated: usize,
    repeats: usize,
}

impl Counts {
    /// Waits for the store to hold every acknowledged licence, then counts.
    async fn check(&mut self, node: &ChildNode, bootstrap: &str, fault: &'static str, before: usize) -> Row {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut applied;
        loop {
            applied = node.metric("govex_elicense_store_licences").await as usize;
            if applied >= self.acknowledged.len() || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all = event_ids(bootstrap, LICENCES);
        let on_topic: HashSet<String> = all.iter().cloned().collect();
        let repeats = all.len() - on_topic.len();
        let new_repeats = repeats - self.repeats;
        self.repeats = repeats;
        let lost_from_topic = self.acknowledged.difference(&on_topic).count();
        let lost = lost_from_topic + self.acknowledged.len().saturating_sub(applied);
        // On the topic but never acknowledged: a batch published twice under new ids.
        let duplicated =
            on_topic.difference(&self.acknowledged).count() + applied.saturating_sub(self.acknowledged.len());
        Row { fault, records: self.acknowledged.len() - before, lost, duplicated, repeats: new_repeats }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_nothing_lost_nothing_doubled() {
    let broker = Arc::new(EmbeddedBroker::start(3).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            broker.create_topic(&topic, 3, 3).unwrap();
        }
    }
    let bootstrap = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&bootstrap));
    // Fixed ports: the load finds the node again after each restart.
    config.listen.api = crate::support::reserved_addr();
    config.listen.ops = crate::support::reserved_addr();
    config.listen.registry = crate::support::reserved_addr();
    let mut node = ChildNode::start(dir.path(), &config).await;
    let api = node.api.clone();
    let mut counts = Counts { acknowledged: HashSet::new(), repeats: 0 };
    let mut rows = Vec::new();
    let mut batch = 0u32;

    // Sends `batches` batches, with `during` run once the first is under way.
    macro_rules! under_load {
        ($fault:expr, $batches:expr, $during:expr) => {{
            let before = counts.acknowledged.len();
            let first = batch;
            batch += $batches;
            let load = {
                let api = api.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in first..first + $batches {
                        ids.extend(send_until_acknowledged(&api, n).await);
                    }
                    ids
                })
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            $during;
            counts.acknowledged.extend(load.await.unwrap());
            rows.push(counts.check(&node, &bootstrap, $fault, before).await);
        }};
    }

    under_load!("none (baseline)", 4, {});
    use RDKafkaRespErr::{
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE as COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS as NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT as REQUEST_TIMED_OUT,
    };
    under_load!("produce errors NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT", 4, {
        broker.request_errors(RDKafkaApiKey::Produce, &[NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT].repeat(10)).unwrap();
    });
    under_load!("offset-commit errors", 4, {
        let errors = [REQUEST_TIMED_OUT, COORDINATOR_NOT_AVAILABLE].repeat(5);
        broker.request_errors(RDKafkaApiKey::OffsetCommit, &errors).unwrap();
    });
    under_load!("a broker down and up again", 4, {
        broker.broker_down(1).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        broker.broker_up(1).unwrap();
    });
    under_load!("a leader change", 4, {
        for partition in 0..3 {
            broker.partition_leader(LICENCES, partition, 1 + (partition + 1) % 3).unwrap();
        }
    });
    for round in 0..3u64 {
        // A random point of the steady load: from the clock, so that every run differs.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let after = Duration::from_millis(200 + u64::from(nanos) % 1_500);
        under_load!("SIGKILL of the node at a random point", 6, {
            tokio::time::sleep(after).await;
            node.process.kill9();
            eprintln!("round {round}: killed after {after:?}");
            node = ChildNode::start(dir.path(), &config).await;
        });
    }
    node.process.terminate(Duration::from_secs(60)).await;

    println!(
        "\n{:<56} {:>8} {:>6} {:>11} {:>22}",
        "fault", "records", "lost", "duplicated", "resent, same id (dropped)"
    );
    for row in &rows {
        println!("{:<56} {:>8} {:>6} {:>11} {:>22}", row.fault, row.records, row.lost, row.duplicated, row.repeats);
    }
    let store = govex_sinks::elicense::LicenceStore::open(&config.data_dir.join("elicense")).unwrap();
    println!("{:<56} {:>8} (store: {} licences)", "total acknowledged", counts.acknowledged.len(), store.len());
    assert!(rows.iter().all(|r| r.lost == 0 && r.duplicated == 0), "a fault lost or doubled records");
    assert_eq!(store.len(), counts.acknowledged.len(), "acknowledged = applied");
}
