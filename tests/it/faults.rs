//! Faults, hostile clients and operators' mistakes, each on a node in a child process and a
//! real socket: nothing lost, nothing doubled, nothing stuck.

use std::{collections::HashSet, time::Duration};

use govex_adapters::samples::sample;
use govex_bus::rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    ClientConfig, Offset, TopicPartitionList,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    child::{child_config, child_token, ChildBroker, ChildNode, CHILD_OPERATOR_TOKEN},
    support::{records_in_topic, until},
};

const CASES: &str = "gov.case.event.v1";
const LICENCES: &str = "gov.elicense.licence.v1";
const LICENCES_TOPIC: &str = LICENCES;

/// NDJSON of `n` samples of `record` starting at `first`.
fn batch(record: &str, first: u32, n: u32) -> String {
    (first..first + n).map(|i| sample("platform", record, i).unwrap().to_string() + "\n").collect()
}

/// Records in every partition of `topic` (high − low watermark).
pub fn records_on(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    records_in_topic(bootstrap, topic, metadata.topics()[0].partitions().len() as i32)
}

/// Every record's event id on `topic`, read from the start to the end offsets.
pub fn event_ids(bootstrap: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "faults-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        remaining += high - low;
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ids = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (ids.len() as i64) < remaining {
        assert!(std::time::Instant::now() < deadline, "read {} of {remaining}", ids.len());
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message.headers().unwrap();
            let id = headers.iter().find(|h| h.key == "govex-event-id").and_then(|h| h.value).unwrap();
            ids.push(String::from_utf8_lossy(id).into_owned());
        }
    }
    ids
}

/// Sends a whole request on a raw socket, and hangs up `after` it was sent.
async fn send_and_hang_up(api: &str, path: &str, token: &str, key: &str, body: &str, after: Duration) {
    let addr = api.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/x-ndjson\r\n\
         idempotency-key: {key}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(after).await;
    drop(stream);
}

async fn post_batch(api: &str, record: &str, key: Option<&str>, body: String) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{api}/v1/platform/{record}:batch"))
        .bearer_auth(child_token("platform"))
        .header("content-type", "application/x-ndjson")
        .body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn answered_ids(answer: &Value) -> Vec<String> {
    answer["results"].as_array().unwrap().iter().filter_map(|r| r["event_id"].as_str().map(str::to_owned)).collect()
}

/// A node process with the test configuration, on a broker process of its own.
async fn node_on_its_broker() -> (ChildBroker, tempfile::TempDir, govex::config::NodeConfig, ChildNode) {
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = child_config(dir.path(), Some(&broker.bootstrap));
    let node = ChildNode::start(dir.path(), &config).await;
    (broker, dir, config, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_batch_gets_its_batch_published_once() {
    const LINES: u32 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let node = ChildNode::start(dir.path(), &child_config(dir.path(), None)).await;
    let body = batch("case-event", 0, LINES);

    send_and_hang_up(
        &node.api,
        "/v1/platform/case-event:batch",
        &child_token("platform"),
        "k-1",
        &body,
        Duration::from_millis(50),
    )
    .await;
    // The retry waits for the first request, which the hang-up did not cancel, and gets its
    // answer: nothing is published twice.
    let (status, answer) = post_batch(&node.api, "case-event", Some("k-1"), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], LINES, "{}", answer["rejected"]);
    let ids = answered_ids(&answer);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), LINES as usize);
    let on_topic = event_ids(&node.bootstrap, CASES);
    assert_eq!(on_topic.len(), LINES as usize, "acknowledged = on the topic");
    assert_eq!(on_topic.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());

    // The same key with another body is refused (IETF Idempotency-Key draft: 422).
    let (status, answer) = post_batch(&node.api, "case-event", Some("k-1"), batch("case-event", 1, LINES)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["type"].as_str().unwrap().rsplit(':').next(), Some("idempotency-key-reused"));

    // Without a key, the answer says line by line what was published.
    let (status, answer) = post_batch(&node.api, "case-event", None, batch("case-event", LINES, 10)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(10)), "{answer}");
    assert_eq!(records_on(&node.bootstrap, CASES), i64::from(LINES) + 10);

    assert_eq!(node.metric("govex_bus_producer_in_flight_records").await, 0.0, "the gauge returns to zero");
    assert_eq!(node.metric("govex_intake_in_flight_requests").await, 0.0);
    let accepted = node
        .metric("govex_intake_records_total{department=\"platform\",record=\"case-event\",outcome=\"accepted\"")
        .await;
    assert_eq!(accepted, f64::from(LINES) + 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_republishes_the_same_event_ids_and_the_store_holds_each_licence_once() {
    const LINES: u32 = 3_000;
    let (broker, dir, config, mut node) = node_on_its_broker().await;
    let body = batch("licence", 0, LINES);
    let sending = {
        let (api, body) = (node.api.clone(), body.clone());
        // Its client sees the connection drop.
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            http.post(format!("{api}/v1/platform/licence:batch"))
                .bearer_auth(child_token("platform"))
                .header("content-type", "application/x-ndjson")
                .header("idempotency-key", "crash-1")
                .body(body)
                .send()
                .await
        })
    };
    // Kill the node while the batch is half on the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let on_topic = records_on(&broker.bootstrap, LICENCES);
        if on_topic > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing was published");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.process.kill9();
    let _ = sending.await;
    let first_attempt: HashSet<String> = event_ids(&broker.bootstrap, LICENCES).into_iter().collect();
    assert!(!first_attempt.is_empty());

    let node = ChildNode::start(dir.path(), &config).await;
    let (status, answer) = post_batch(&node.api, "licence", Some("crash-1"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], LINES);
    let answered: HashSet<String> = answered_ids(&answer).into_iter().collect();
    assert!(first_attempt.is_subset(&answered), "the retry republished the first attempt's event ids");
    let on_topic: HashSet<String> = event_ids(&broker.bootstrap, LICENCES).into_iter().collect();
    assert_eq!(on_topic, answered, "every id on the topic is one the answer gives, and each line has one");

    // The store applies each licence once, whatever arrived twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while node.metric("govex_elicense_store_licences").await < f64::from(LINES) {
        assert!(std::time::Instant::now() < deadline, "the store did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut node = node;
    node.process.terminate(Duration::from_secs(60)).await;
    let store = govex_sinks::elicense::LicenceStore::open(&config.data_dir.join("elicense")).unwrap();
    assert_eq!(store.len(), LINES as usize, "acknowledged = applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_cannot_take_more_memory_than_the_limits_allow() {
    let dir = tempfile::tempdir().unwrap();
    let node = ChildNode::start(dir.path(), &child_config(dir.path(), None)).await;
    let http = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        http.post(format!("{}/v1/platform/case-event:batch", node.api))
            .bearer_auth(child_token("platform"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    // A warm-up batch, so that the baseline includes the pipeline's own buffers.
    let (status, _) = post_batch(&node.api, "case-event", None, batch("case-event", 0, 1_000)).await;
    assert_eq!(status, 200);
    let baseline = node.process.peak_memory();

    // 32 MiB of one-character lines: refused at line 10,001, long before the body is read.
    let lines = b"1\n".repeat(16 * 1024 * 1024);
    let answer = send(lines).await;
    match answer {
        Ok(answer) => {
            assert_eq!(answer.status(), 413);
            let text = answer.text().await.unwrap();
            assert!(text.contains("10000 lines"), "{text}");
        }
        // The node may close the connection while the client still sends.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // Four full-size batches at once: what one request may hold is bounded, and so is what
    // they hold together (intake.max_in_flight_bytes); the ones over it are answered 503 (or
    // cut off while still sending, which the client sees as an error: 0 here).
    // Lines of about 3 KiB (a field the schema does not know: each is checked and refused),
    // 10,000 of them: a batch just under 32 MiB.
    let mut line = sample("platform", "case-event", 1).unwrap();
    line["note"] = "备注".repeat(500).into();
    let big: Vec<u8> = std::iter::repeat_n(format!("{line}\n"), 10_000).collect::<String>().into_bytes();
    assert!(big.len() < 32 * 1024 * 1024 && big.len() > 30 * 1024 * 1024, "{}", big.len());
    let answers = futures::future::join_all((0..4).map(|_| send(big.clone()))).await;
    let statuses: Vec<u16> = answers.into_iter().map(|a| a.map_or(0, |a| a.status().as_u16())).collect();
    // The budget (64 MiB) holds two such bodies: the others are told to come back.
    assert!(statuses.iter().all(|s| [200, 503, 0].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.iter().any(|s| *s != 200), "{statuses:?}");

    // Lines with hundreds of unknown fields each: the violations listed are capped, so the
    // answer stays a small multiple of the lines, not of the fields.
    let fields: String = (0..380).map(|i| format!("\"p{i}\":0")).collect::<Vec<_>>().join(",");
    let amplifying: Vec<u8> = std::iter::repeat_n(format!("{{{fields}}}\n"), 9_900).collect::<String>().into_bytes();
    let answer = send(amplifying).await.unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert!(text.len() < 8 * 1024 * 1024, "an answer of {} bytes", text.len());
    let answer: Value = serde_json::from_str(&text).unwrap();
    let first = &answer["results"][0]["errors"];
    assert_eq!(first.as_array().unwrap().len(), govex_adapters::validation::MAX_VIOLATIONS, "{first}");
    assert_eq!(first[govex_adapters::validation::MAX_VIOLATIONS - 1]["rule"], "more-violations");

    let peak = node.process.peak_memory();
    let grown_mib = peak.saturating_sub(baseline) / (1024 * 1024);
    eprintln!(
        "peak memory: {} MiB before, {} MiB after a 32 MiB batch of 16M lines, four full batches at once ({statuses:?}) and 9,900 lines of 380 unknown fields",
        baseline / (1024 * 1024),
        peak / (1024 * 1024)
    );
    // The 64 MiB budget, and the checked records of what it admits (about twice the body).
    assert!(grown_mib < 250, "peak memory grew by {grown_mib} MiB (baseline {} MiB)", baseline / (1024 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_do_not_hold_a_shutdown_and_a_publish_in_progress_completes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::tls::Pki::new("faults CA");
    let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"]);
    let broker = ChildBroker::start().await;
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    // Timeouts far longer than the grace period: only the grace period can end these.
    config.listen.header_read_timeout_secs = 120;
    config.listen.body_timeout_secs = 120;
    config.listen.tls_handshake_timeout_secs = 120;
    config.listen.keep_alive_idle_secs = 120;
    config.listen.shutdown_grace_secs = 2;
    config.listen.registry_tls = Some(govex_http::config::TlsConfig {
        cert_path: crate::tls::write(dir.path(), "cert.pem", &cert),
        key_path: crate::tls::write(dir.path(), "key.pem", &key),
        client_ca_path: None,
    });
    let mut node = ChildNode::start(dir.path(), &config).await;
    let registry = node.process.printed("schema registry").await;
    let registry = registry.trim_start_matches("https://").trim_end_matches("/subjects").to_owned();
    let api = node.api.trim_start_matches("http://").to_owned();

    let mut held = Vec::new();
    // Idle after one request (kept alive).
    let mut idle = tokio::net::TcpStream::connect(&api).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 4096];
    let n = idle.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    held.push(idle);
    // Half-sent headers.
    let mut half = tokio::net::TcpStream::connect(&api).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    held.push(half);
    // A stalled body.
    let mut stalled = tokio::net::TcpStream::connect(&api).await.unwrap();
    let head = format!(
        "POST /v1/platform/case-event HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
        child_token("platform")
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    held.push(stalled);
    // TLS that never sends a ClientHello.
    held.push(tokio::net::TcpStream::connect(&registry).await.unwrap());
    // And a batch being published when SIGTERM comes.
    let publishing = {
        let api = node.api.clone();
        tokio::spawn(async move { post_batch(&api, "case-event", None, batch("case-event", 0, 5_000)).await })
    };
    // SIGTERM once the batch is being published: a node loaded by other tests may take
    // longer than any fixed pause to get that far, and a batch it never received proves nothing.
    let bootstrap = node.bootstrap.clone();
    until("the batch's first records on the topic", Duration::from_secs(60), || records_on(&bootstrap, CASES) > 0)
        .await;
    let (status, took) = node.process.terminate(Duration::from_secs(45)).await;
    assert!(status.success(), "{status}: {}", node.process.stderr_text());
    // Grace (2 s), then the drain and the flush; far below the 120 s the clients could hold.
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
    // The batch either was answered or its client was cut at the end of the grace period;
    // either way the publish ran to its end and was flushed before the node exited.
    if let Ok((200, answer)) = publishing.await {
        assert_eq!(answer["accepted"], 5_000);
    }
    assert_eq!(records_on(&bootstrap, CASES), 5_000, "every line of the batch is on the topic");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_counted_completed_once_and_a_completion_without_acceptance_apart() {
    let dir = tempfile::tempdir().unwrap();
    let node = ChildNode::start(dir.path(), &child_config(dir.path(), None)).await;
    let event = |n: u32, stage: &str, at: &str| {
        let mut event = sample("platform", "case-event", n).unwrap();
        event["stage"] = stage.into();
        event["occurred_at"] = at.into();
        event.to_string() + "\n"
    };
    // Case 1 accepted and completed twice (a department resent it, with new event ids);
    // case 2 completed with no acceptance.
    let lines = [
        event(1, "ACCEPTED", "2026-11-20T09:00:00+08:00"),
        event(1, "COMPLETED", "2026-11-23T09:00:00+08:00"),
        event(1, "COMPLETED", "2026-11-23T10:00:00+08:00"),
        event(2, "COMPLETED", "2026-11-23T09:00:00+08:00"),
    ];
    for line in lines {
        let (status, answer) = post_batch(&node.api, "case-event", None, line).await;
        assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node.metric("govex_case_completed_without_acceptance_total").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the case statistics did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.metric("govex_case_completed_total{division=\"610921\",on_time=\"true\"}").await, 1.0);
    assert_eq!(node.metric("govex_case_completed_total").await, 1.0, "one case, counted once");
    assert_eq!(node.metric("govex_case_completed_without_acceptance_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_the_sinks_have_caught_up_and_asking_costs_no_client() {
    const LICENCES_SENT: u32 = 2_000;
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let mut node = ChildNode::start(first.path(), &child_config(first.path(), Some(&broker.bootstrap))).await;
    let (status, answer) = post_batch(&node.api, "licence", None, batch("licence", 0, LICENCES_SENT)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(u64::from(LICENCES_SENT))));
    node.process.terminate(Duration::from_secs(60)).await;

    // A new node, new consumer groups: a backlog of 2,000 licences to apply before it is ready.
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    config.bus.group_prefix = "second".into();
    let node = ChildNode::start(dir.path(), &config).await;
    let readyz = format!("{}/readyz", node.ops);
    let early = reqwest::get(&readyz).await.unwrap();
    let early = (early.status().as_u16(), early.text().await.unwrap());
    crate::support::wait_ready(&readyz).await;
    let applied = node.metric("govex_elicense_store_licences").await;
    assert_eq!(applied, f64::from(LICENCES_SENT), "ready before the store caught up (first answer: {early:?})");

    // Asking is free: 300 questions make no Kafka client. Each librdkafka client has one
    // thread named "rdk:main" (its broker threads come and go with connections), so clients
    // are counted exactly by those; every other thread of the node may come and go with its
    // blocking pool, and is held only to a bound far below one per question. The node's own
    // clients are made first: one governance round (2 s) after ready, nothing is left to make.
    let threads = |pid: u32| -> (usize, usize) {
        let mut clients = 0;
        let mut all = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
            all += 1;
            clients += usize::from(name.trim() == "rdk:main");
        }
        (clients, all)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (clients_before, all_before) = threads(node.process.child.id());
    assert!(clients_before > 0, "the node's own clients show as rdk:main threads");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        assert_eq!(http.get(&readyz).send().await.unwrap().status(), 200);
    }
    let (clients_after, all_after) = threads(node.process.child.id());
    assert_eq!(clients_after, clients_before, "asking /readyz made a Kafka client");
    assert!(all_after <= all_before + 32, "threads grew from {all_before} to {all_after} over 300 questions");
}

/// Waits until `metric` of `node` reaches `at_least`.
async fn wait_metric(node: &ChildNode, metric: &str, at_least: f64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let value = node.metric(metric).await;
        if value >= at_least {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {metric} is {value}, waited for {at_least}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elicense_sink_killed_mid_stream_and_restarted_neither_loses_nor_duplicates() {
    const HALF: u32 = 3_000;
    let (broker, dir, config, mut node) = node_on_its_broker().await;
    let (status, answer) = post_batch(&node.api, "licence", None, batch("licence", 0, HALF)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(u64::from(HALF))));
    // SIGKILL while the sink is part way through: no drain, no final commit.
    wait_metric(&node, "govex_elicense_store_licences", 500.0, "the sink never started").await;
    node.process.kill9();

    let mut node = ChildNode::start(dir.path(), &config).await;
    let (status, answer) = post_batch(&node.api, "licence", None, batch("licence", HALF, HALF)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(u64::from(HALF))));
    wait_metric(&node, "govex_elicense_store_licences", f64::from(2 * HALF), "the restarted sink stalled").await;
    let redelivered = node.metric("govex_elicense_records_total{outcome=\"skipped\"").await;
    node.process.terminate(Duration::from_secs(60)).await;

    let acknowledged = 2 * HALF as usize;
    let on_topic = event_ids(&broker.bootstrap, LICENCES);
    assert_eq!(on_topic.len(), acknowledged, "acknowledged = on the topic");
    let store = govex_sinks::elicense::LicenceStore::open(&config.data_dir.join("elicense")).unwrap();
    assert_eq!(store.len(), acknowledged, "on the topic = applied (each licence once)");
    eprintln!(
        "killed mid-stream: {acknowledged} acknowledged, on the topic and applied; {redelivered} redeliveries skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_mid_stream_and_restarted_loses_nothing_and_forwards_each_record_once() {
    const HALF: u32 = 2_000;
    let (city_broker, county_broker) = (ChildBroker::start().await, ChildBroker::start().await);
    let (city_dir, county_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut city_config = child_config(city_dir.path(), Some(&city_broker.bootstrap));
    city_config.division = govex_schemas::Division::parse("610900").unwrap();
    let city = ChildNode::start(city_dir.path(), &city_config).await;
    let mut county_config = child_config(county_dir.path(), Some(&county_broker.bootstrap));
    county_config.division = govex_schemas::Division::parse("610921").unwrap();
    let city_registry = city.process.printed("schema registry").await.trim_end_matches("/subjects").to_owned();
    county_config.bridge.parent = Some(govex_sinks::level_bridge::config::LinkConfig {
        division: None,
        brokers: city_broker.bootstrap.clone(),
        registry: Some(city_registry),
        registry_token: None,
        registry_tls: None,
        properties: Default::default(),
    });
    let mut county = ChildNode::start(county_dir.path(), &county_config).await;

    let (status, _) = post_batch(&city.api, "licence", None, batch("licence", 0, HALF)).await;
    assert_eq!(status, 200);
    // SIGKILL the county while its bridge is part way through.
    // Polled tightly: the kill must land while the bridge is still forwarding.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while records_on(&county_broker.bootstrap, LICENCES) < 200 {
        assert!(std::time::Instant::now() < deadline, "the bridge forwarded nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    county.process.kill9();
    let (status, _) = post_batch(&city.api, "licence", None, batch("licence", HALF, HALF)).await;
    assert_eq!(status, 200);

    let mut county = ChildNode::start(county_dir.path(), &county_config).await;
    wait_metric(&county, "govex_elicense_store_licences", f64::from(2 * HALF), "the restarted bridge stalled").await;
    county.process.terminate(Duration::from_secs(60)).await;
    let sent: HashSet<String> = event_ids(&city_broker.bootstrap, LICENCES).into_iter().collect();
    let arrived = event_ids(&county_broker.bootstrap, LICENCES);
    let distinct: HashSet<String> = arrived.iter().cloned().collect();
    assert_eq!(sent.len(), 2 * HALF as usize);
    assert_eq!(distinct, sent, "nothing lost, nothing made up");
    let store = govex_sinks::elicense::LicenceStore::open(&county_config.data_dir.join("elicense")).unwrap();
    assert_eq!(store.len(), 2 * HALF as usize, "each licence applied once");
    eprintln!(
        "bridge killed mid-stream: {} forwarded, {} twice (same event ids)",
        arrived.len(),
        arrived.len() - distinct.len()
    );
}

/// Runs `govex sink elicense --rebuild` on the node configured in `dir/node.toml`.
fn rebuild(dir: &std::path::Path) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["sink", "elicense", "--rebuild", "--config"])
        .arg(dir.join("node.toml"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn leftovers(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("elicense.rebuild-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_a_stopped_node_uses_its_own_registry_ends_at_the_end_offsets_and_refuses_what_it_cannot_read() {
    use govex_bus::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const LICENCES_SENT: u32 = 500;
    let (broker, dir, config, mut node) = node_on_its_broker().await;
    let (status, _) = post_batch(&node.api, "licence", None, batch("licence", 0, LICENCES_SENT)).await;
    assert_eq!(status, 200);
    wait_metric(&node, "govex_elicense_store_licences", f64::from(LICENCES_SENT), "the sink stalled").await;
    node.process.terminate(Duration::from_secs(60)).await;
    let live_dir = config.data_dir.join("elicense");
    let before = govex_sinks::elicense::LicenceStore::open(&live_dir).unwrap().all().unwrap();

    // Offsets without a record to read, as compaction leaves: transaction markers at the end
    // of every partition (a rebuild that counted records would wait for them for ever).
    let copies: Vec<_> = {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).set("group.id", "copier").create().unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..3 {
            assignment.add_partition_offset(LICENCES, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut copies = Vec::new();
        while copies.len() < 3 {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                copies.push((m.key().unwrap().to_vec(), m.payload().unwrap().to_vec(), m.headers().unwrap().detach()));
            }
        }
        copies
    };
    let transactional: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("transactional.id", "faults-markers")
        .create()
        .unwrap();
    transactional.init_transactions(Duration::from_secs(30)).unwrap();
    transactional.begin_transaction().unwrap();
    for (p, (key, payload, headers)) in copies.iter().enumerate() {
        // Records sent again (the same events: the store changes nothing), one per partition.
        let record = BaseRecord::to(LICENCES).partition(p as i32).key(key).payload(payload).headers(headers.clone());
        transactional.send(record).unwrap();
    }
    transactional.commit_transaction(Duration::from_secs(30)).unwrap();
    drop(transactional);

    // The node is stopped, and so is the registry it serves: the rebuild reads the node's
    // registry store, stops at each partition's end, and ends with the live store's content.
    let (ok, text) = rebuild(dir.path());
    assert!(ok, "{text}");
    assert!(text.contains(&format!("from {} records: {LICENCES_SENT} licences", LICENCES_SENT + 3)), "{text}");
    let rebuilt = govex_sinks::elicense::LicenceStore::open(&live_dir).unwrap();
    assert_eq!(rebuilt.all().unwrap(), before, "the same content as the live store");
    drop(rebuilt);

    // A record that cannot be read: the rebuild swaps nothing and leaves nothing behind.
    let plain: BaseProducer = ClientConfig::new().set("bootstrap.servers", &broker.bootstrap).create().unwrap();
    let (key, _, headers) = &copies[0];
    plain
        .send(BaseRecord::to(LICENCES).key(key).payload(&b"\x00\x00\x00\x00\x01garbage"[..]).headers(headers.clone()))
        .unwrap();
    plain.flush(Duration::from_secs(10)).unwrap();
    let (ok, text) = rebuild(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("rebuild refused: 1 of {} records could not be read", LICENCES_SENT + 4)), "{text}");
    assert!(leftovers(&config.data_dir).is_empty(), "a refused rebuild leaves nothing behind");
    assert_eq!(govex_sinks::elicense::LicenceStore::open(&live_dir).unwrap().all().unwrap(), before, "untouched");
}

/// `n` verifications (each one use in the log) by the tax department.
async fn uses(node: &ChildNode, n: u32, first: u32) {
    let http = reqwest::Client::new();
    for i in first..first + n {
        let answer = http
            .post(format!("{}/v1/licences/L{i}/verify", node.api))
            .bearer_auth(child_token("tax"))
            .json(&serde_json::json!({ "purpose": "契税征收核验" }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
}

/// Sends housing's sample contract filing `n` to `node`; its property unit number.
async fn send_filing(node: &ChildNode, n: u32) -> String {
    let filing = sample("housing", "contract-filing", n).unwrap();
    let sent = reqwest::Client::new()
        .post(format!("{}/v1/housing/contract-filing", node.api))
        .bearer_auth(child_token("housing"))
        .json(&filing)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    filing["property_unit_number"].as_str().unwrap().to_owned()
}

/// The filing of `unit` in the shared view of the node at `api`, read by land registry until
/// it is there; every read is a use in the log, found or not, and is counted in `reads`.
async fn read_shared_filing(api: String, unit: &str, reads: &std::sync::atomic::AtomicU64) -> Value {
    crate::support::eventually_saw("the filing in the shared view", Duration::from_secs(60), || async {
        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = reqwest::Client::new()
            .get(format!("{api}/v1/resources/housing.contract-filing/records/{unit}"))
            .query(&[("purpose", "登记审核")])
            .bearer_auth(child_token("land-registry"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => response.json::<Value>().await.map_err(|e| e.to_string()),
            other => Err(other.to_string()),
        }
    })
    .await
}

/// Runs `govex audit verify` on the node configured in `dir/node.toml`.
fn audit_verify(dir: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["audit", "verify", "--config"])
        .arg(dir.join("node.toml"))
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_lost_or_rewritten_use_log_is_found_and_no_answered_use_is_lost() {
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    config.audit.writer = Some("610900-elicense-0".into());
    let live = config.data_dir.join("elicense");
    let backup = dir.path().join("backup");

    let mut node = ChildNode::start(dir.path(), &config).await;
    uses(&node, 11, 0).await;
    node.process.terminate(Duration::from_secs(60)).await;
    copy_dir(&live, &backup);
    let mut node = ChildNode::start(dir.path(), &config).await;
    uses(&node, 10, 11).await;
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("21 entries, hash chain intact") && text.contains("anchored at entry 21"), "{text}");

    // An older copy of the volume restored: the chain on disk is intact by itself (11
    // entries), and the anchor and the replicated copy show what was erased.
    std::fs::remove_dir_all(&live).unwrap();
    copy_dir(&backup, &live);
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("11 entries, hash chain intact"), "{text}");
    assert!(
        text.contains("ROLLED BACK: the anchor") && text.contains("names entry 21; the disk ends at entry 11"),
        "{text}"
    );
    assert!(text.contains("TRUNCATED or ROLLED BACK") && text.contains("(10 missing)"), "{text}");

    // The node restores the erased uses from the topic at start, and the log goes on.
    let mut node = ChildNode::start(dir.path(), &config).await;
    uses(&node, 1, 21).await;
    // Against the running node, read-only: the replicated copy and its anchor.
    let registry = node.process.printed("schema registry").await.trim_end_matches("/subjects").to_owned();
    let (ok, text) = audit_verify(dir.path(), &[("GOVEX_REGISTRY__URL", &registry)]);
    assert!(ok, "{text}");
    assert!(text.contains("the node is running") && text.contains("22 entries on gov.audit.use-log.v1"), "{text}");
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok && text.contains("22 entries, hash chain intact"), "{text}");

    // The volume lost altogether: not one answered use is lost.
    std::fs::remove_dir_all(&live).unwrap();
    let mut node = ChildNode::start(dir.path(), &config).await;
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok && text.contains("22 entries, hash chain intact"), "{text}");

    // Rewritten with fresh hashes (a chain intact by itself): the replicated copy disagrees.
    {
        let log = govex_sinks::use_log::UseLog::open_dir(&live).unwrap();
        let mut previous = "0".repeat(64);
        for mut entry in log.entries().unwrap() {
            if entry.seq == 5 {
                entry.purpose = "另有用途".into();
            }
            entry.prev_hash = previous;
            entry.hash = entry.compute_hash();
            previous = entry.hash.clone();
            log.audit_tree().insert(entry.seq.to_be_bytes(), serde_json::to_vec(&entry).unwrap()).unwrap();
        }
        log.audit_tree().flush().unwrap();
    }
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("22 entries, hash chain intact") && text.contains("REWRITTEN: entry 5"), "{text}");
    assert!(text.contains("REWRITTEN: entry 22 on disk does not carry the anchored hash"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_small_chunks_costs_its_size_and_a_key_is_one_request_whatever_the_form() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::intake::intake_config(dir.path());
    config.intake.max_batch_lines = 10_000;
    config.intake.max_batch_bytes = 4 * 1024 * 1024;
    config.intake.max_in_flight_bytes = 4 * 1024 * 1024;
    let node = govex::node::start(config).await.unwrap();
    let api = node.api_addr().unwrap();
    // A 2 MB batch in 300-byte chunks: it is charged 2 MB of the 4 MB budget, not a KiB per
    // chunk (which made it 503 for ever).
    let body = batch("case-event", 0, 9_500);
    assert!(body.len() > 2_000_000, "{}", body.len());
    let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let head =
        "POST /v1/platform/case-event:batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-token-of-platform\r\n\
                content-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(300) {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        stream.write_all(chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{}", &answer[..answer.len().min(300)]);

    // The same key on the single-record endpoint after the batch one: another request, refused.
    let http = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: String| {
        http.post(format!("http://{api}{path}"))
            .bearer_auth("test-token-of-platform")
            .header("content-type", content_type)
            .header("idempotency-key", "one-key")
            .body(body)
            .send()
    };
    let line = batch("case-event", 9_000, 1);
    let first = post("/v1/platform/case-event:batch", "application/x-ndjson", line.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = post("/v1/platform/case-event", "application/json", line.trim_end().to_owned()).await.unwrap();
    assert_eq!(second.status(), 422, "{}", second.text().await.unwrap());
    node.shutdown().await.unwrap();
}

#[test]
fn audit_verify_on_a_directory_without_a_store_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-a-data-dir");
    for brokers in [None, Some("127.0.0.1:9")] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_govex"));
        command.args(["audit", "verify"]).env("GOVEX_DATA_DIR", &missing).env("RUST_LOG", "warn");
        if let Some(brokers) = brokers {
            command.env("GOVEX_BUS__BROKERS", brokers);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no e-licence store at"), "{stderr}");
        assert!(!missing.exists(), "a check created {}", missing.display());
    }
}

/// The whole data volume lost (a disk gone, a PVC deleted) is restored from the topics, which
/// are the backup of every store: the new, empty stores rewind their consumer groups (whose
/// committed offsets belonged to the stores that were lost) and read everything again, the
/// use log comes back from its replicated topic with its chain intact, and nothing is doubled,
/// though the refill is killed twice on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_volume_is_restored_from_the_topics_with_every_licence_record_and_use() {
    const LICENCES: u32 = 300;
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    config.audit.writer = Some("610900-elicense-0".into());
    let mut node = ChildNode::start(dir.path(), &config).await;
    let (status, answer) = post_batch(&node.api, "licence", None, batch("licence", 0, LICENCES)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(u64::from(LICENCES))));
    wait_metric(&node, "govex_elicense_store_licences", f64::from(LICENCES), "licences applied").await;
    // A housing filing in the shared view, and uses in the log.
    let unit = send_filing(&node, 7).await;
    // Every read of the shared view is a use in the log, found or not: they are counted.
    let reads = std::sync::atomic::AtomicU64::new(0);
    let shared = |api: String| read_shared_filing(api, &unit, &reads);
    let before = shared(node.api.clone()).await;
    uses(&node, 5, 0).await;
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok, "{text}");
    let entries = |text: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with("use log: ") && l.contains("hash chain intact"))?;
        line.trim_start_matches("use log: ").split_whitespace().next()?.parse().ok()
    };
    let before_entries = entries(&text).expect("the chain line");

    // The volume is gone: every store with it. The refill is killed (SIGKILL) at once, and
    // again once some licences are back; a refill cut short is done again at the next start.
    std::fs::remove_dir_all(&config.data_dir).unwrap();
    let mut node = ChildNode::start(dir.path(), &config).await;
    node.process.kill9();
    let mut node = ChildNode::start(dir.path(), &config).await;
    wait_metric(&node, "govex_elicense_store_licences", 1.0, "the refill began").await;
    node.process.kill9();
    let mut node = ChildNode::start(dir.path(), &config).await;
    wait_metric(&node, "govex_elicense_store_licences", f64::from(LICENCES), "licences restored from the topic").await;
    let read_before = reads.load(std::sync::atomic::Ordering::Relaxed);
    let after = shared(node.api.clone()).await;
    let reads_since = reads.load(std::sync::atomic::Ordering::Relaxed) - read_before;
    assert_eq!(after["record"], before["record"], "the shared view as it was");
    // Nothing doubled: the store holds each licence once, and the topic was not written again.
    assert_eq!(node.metric("govex_elicense_store_licences").await, f64::from(LICENCES));
    assert_eq!(records_on(&broker.bootstrap, "gov.elicense.licence.v1"), i64::from(LICENCES));
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok, "{text}");
    // Every use before the loss, and the reads of the shared view since.
    assert_eq!(entries(&text), Some(before_entries + reads_since), "the use log restored whole: {text}");
    assert!(text.contains("agrees with its replicated copy and its anchor"), "{text}");
}

/// Runs `govex` with `args` (and the operator's token), returning success and what it printed.
fn govex(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(args)
        .env("GOVEX_TOKEN", CHILD_OPERATOR_TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A backup taken from a running node (`govex backup`, with an operator's token and a
/// purpose) brings every store back on its own: the node is killed (SIGKILL), its volume and
/// its whole cluster are lost, the backup is restored into an empty data directory
/// (`govex restore`), and the node started on new, empty brokers holds every licence, the
/// shared view's record and the use log's whole chain (the backup itself one of its entries),
/// which it writes back to the new topic. Only an operator takes one; a client that goes
/// away part way leaves the node able to take the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_store_after_the_volume_and_the_cluster_are_lost() {
    const LICENCES: u32 = 200;
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    config.audit.writer = Some("610900-elicense-0".into());
    let mut node = ChildNode::start(dir.path(), &config).await;
    let (status, answer) = post_batch(&node.api, "licence", None, batch("licence", 0, LICENCES)).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(u64::from(LICENCES))));
    wait_metric(&node, "govex_elicense_store_licences", f64::from(LICENCES), "licences applied").await;
    let unit = send_filing(&node, 11).await;
    let http = reqwest::Client::new();
    let reads = std::sync::atomic::AtomicU64::new(0);
    let shared = |api: String| read_shared_filing(api, &unit, &reads);
    let before = shared(node.api.clone()).await;
    uses(&node, 5, 0).await;

    // Only an operator's token takes a backup, and it states why.
    let ask = |token: &str, purpose: Option<&str>| {
        let mut request = http.get(format!("{}/v1/backup", node.api)).bearer_auth(token);
        if let Some(purpose) = purpose {
            request = request.query(&[("purpose", purpose)]);
        }
        request.send()
    };
    assert_eq!(ask(&child_token("tax"), Some("备份")).await.unwrap().status(), 403);
    assert_eq!(ask("not-a-token", Some("备份")).await.unwrap().status(), 401);
    assert_eq!(ask(CHILD_OPERATOR_TOKEN, None).await.unwrap().status(), 400);
    let head =
        http.head(format!("{}/v1/backup", node.api)).bearer_auth(CHILD_OPERATOR_TOKEN).query(&[("purpose", "备份")]);
    assert_eq!(head.send().await.unwrap().status(), 405, "a HEAD takes (and logs) no backup");
    // A place the backup could not be kept is refused before the node is asked (and logged).
    for out in [dir.path().join("no-such-folder").join("b.govexbak"), dir.path().join("folder/")] {
        let (ok, text) =
            govex(&["backup".as_ref(), "--api".as_ref(), node.api.as_ref(), "--out".as_ref(), out.as_os_str()]);
        assert!(!ok && text.contains("--out"), "{text}");
    }
    // A client that goes away after the first bytes: the next backup is taken all the same.
    let mut cut = ask(CHILD_OPERATOR_TOKEN, Some("演练")).await.unwrap();
    assert_eq!(cut.status(), 200);
    assert!(cut.chunk().await.unwrap().is_some_and(|c| c.starts_with(b"GOVEXBAK")));
    drop(cut);

    let file = dir.path().join("node.govexbak");
    let (ok, text) = crate::support::eventually_saw("a second backup", Duration::from_secs(30), || async {
        match govex(&["backup".as_ref(), "--api".as_ref(), node.api.as_ref(), "--out".as_ref(), file.as_os_str()]) {
            (true, text) => Ok((true, text)),
            (false, text) if text.contains("409") => Err(text),
            (false, text) => Ok((false, text)),
        }
    })
    .await;
    assert!(ok, "{text}");
    assert!(file.exists() && !dir.path().join("node.govexbak.partial").exists(), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "for its owner only");

    // The node dies, and its volume and its cluster with it.
    node.process.kill9();
    drop(broker);
    std::fs::remove_dir_all(&config.data_dir).unwrap();
    let node_toml = dir.path().join("node.toml");
    let (ok, text) = govex(&["restore".as_ref(), file.as_os_str(), "--config".as_ref(), node_toml.as_os_str()]);
    assert!(ok, "{text}");
    assert!(text.contains("elicense: ") && text.contains("refills from the start of its topics"), "{text}");
    let (ok, text) = govex(&["restore".as_ref(), file.as_os_str(), "--config".as_ref(), node_toml.as_os_str()]);
    assert!(!ok && text.contains("already holds a store"), "a restore never writes over a store: {text}");

    let broker = ChildBroker::start().await;
    config.bus.brokers = Some(broker.bootstrap.clone());
    let mut node = ChildNode::start(dir.path(), &config).await;
    wait_metric(&node, "govex_elicense_store_licences", f64::from(LICENCES), "licences restored").await;
    let after = shared(node.api.clone()).await;
    assert_eq!(after["record"], before["record"], "the shared view as it was");
    assert_eq!(records_on(&broker.bootstrap, LICENCES_TOPIC), 0, "nothing came from the new cluster's topics");
    node.process.terminate(Duration::from_secs(60)).await;
    let (ok, text) = audit_verify(dir.path(), &[]);
    assert!(ok, "{text}");
    // Every read of the shared view, the five verifications and the two backups taken.
    let reads = reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(text.contains(&format!("use log: {} entries", reads + 5 + 2)), "{text}");
    assert!(text.contains("agrees with its replicated copy and its anchor"), "written back to the new topic: {text}");
}
