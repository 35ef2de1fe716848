//! No loss and no duplicates: broker faults, consumer restarts, shutdown with queued records.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use govex_bus::{
    config::BusConfig,
    consumer::{ConsumerSettings, HandlerError},
    envelope::Envelope,
    rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr},
    Outgoing,
};
use govex_schemas::Department;
use govex_schemas::Division;
use tokio_util::sync::CancellationToken;

use crate::support;

fn record(topic: &str, key: &str, seq: u64) -> Outgoing {
    let envelope = Envelope::new(Department::TAX, Division::parse("610921").unwrap(), "test");
    Outgoing::new(topic, key.as_bytes().to_vec(), seq.to_be_bytes().to_vec(), &envelope)
}

fn seq_of(payload: Option<&[u8]>) -> u64 {
    u64::from_be_bytes(payload.expect("payload").try_into().expect("8 bytes"))
}

/// A one-partition `topic` holding records `0..count`, record `seq` keyed `key(seq)`.
async fn topic_holding(test: &support::TestBus, topic: &str, count: u64, key: impl Fn(u64) -> String) {
    test.broker.create_topic(topic, 1, 3).unwrap();
    let records = (0..count).map(|seq| record(topic, &key(seq), seq)).collect::<Vec<_>>();
    for result in test.bus.producer().publish_all(records).await {
        result.unwrap();
    }
}

/// Consumes `topic` in `group` (a new group reads from the start) until `expected` records
/// arrived; returns (key, seq) in arrival order.
async fn consume_all(test: &support::TestBus, topic: &str, group: &str, expected: usize) -> Vec<(String, u64)> {
    let consumer = test
        .bus
        .consumer(ConsumerSettings {
            group_id: group.into(),
            topics: vec![topic.into()],
            lanes: 1,
            lane_capacity: 1024,
        })
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let sink = seen.clone();
    let run = tokio::spawn(consumer.run(
        move |message| {
            let sink = sink.clone();
            async move {
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                sink.lock().unwrap().push((key, seq_of(message.payload())));
                Ok(())
            }
        },
        None,
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} records arrived",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    seen
}

#[tokio::test]
async fn nothing_is_lost_or_duplicated_under_injected_errors_and_a_broker_outage() {
    let test = support::test_bus(BusConfig { delivery_timeout_ms: 60_000, ..support::bus_config() });
    let topic = "gov.test.faults.v1";
    test.broker.create_topic(topic, 3, 3).unwrap();
    const KEYS: u64 = 40;
    const PER_BATCH: u64 = 1_000;
    let producer = test.bus.producer().clone();
    let batch = |from: u64| {
        (from..from + PER_BATCH).map(|seq| record(topic, &format!("unit-{}", seq % KEYS), seq)).collect::<Vec<_>>()
    };

    // Batch 1 is delivered normally, batch 2 meets retriable Produce errors, batch 3 is sent
    // while broker 1 is down and delivered once it is back.
    let first = producer.publish_all(batch(0)).await;
    let retriable = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    test.broker.request_errors(RDKafkaApiKey::Produce, &retriable).unwrap();
    let second = producer.publish_all(batch(PER_BATCH)).await;

    test.broker.broker_down(1).unwrap();
    let mut pending = Vec::new();
    for record in batch(2 * PER_BATCH) {
        pending.push(producer.enqueue(record).await);
    }
    // The outage lasts a while; delivery reports for partitions led by broker 1 must wait.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    test.broker.broker_up(1).unwrap();
    let third = futures::future::join_all(pending).await;

    for (i, result) in first.into_iter().chain(second).chain(third).enumerate() {
        result.unwrap_or_else(|e| panic!("record {i} not delivered: {e}"));
    }
    let total = (3 * PER_BATCH) as usize;
    assert_eq!(
        support::records_in_topic(test.bus.bootstrap_servers(), topic, 3),
        total as i64,
        "the log holds each record exactly once"
    );

    let seen = consume_all(&test, topic, "faults-check", total).await;
    let distinct: HashSet<u64> = seen.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(distinct.len(), total, "every record arrived, none twice");
    let mut last_per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, seq) in &seen {
        if let Some(previous) = last_per_key.insert(key, *seq) {
            assert!(previous < *seq, "key {key}: {seq} arrived after {previous}");
        }
    }
}

#[tokio::test]
async fn a_restarted_consumer_resumes_after_the_stored_offsets() {
    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.resume.v1";
    topic_holding(&test, topic, 100, |seq| format!("k{}", seq % 7)).await;
    let settings =
        || ConsumerSettings { group_id: "resume".into(), topics: vec![topic.into()], lanes: 4, lane_capacity: 64 };

    // First run: records 0..50 become durable; from 50 on the handler keeps failing, so no
    // offset past 49 may be stored, whatever the other lanes finish.
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let stop = CancellationToken::new();
    let first = test.bus.consumer(settings()).unwrap();
    let log = handled.clone();
    let run = tokio::spawn(first.run(
        move |message| {
            let log = log.clone();
            async move {
                let seq = seq_of(message.payload());
                if seq >= 50 {
                    return Err(HandlerError::Retry("store unavailable".into()));
                }
                log.lock().unwrap().insert(seq);
                Ok(())
            }
        },
        None,
        stop.clone(),
    ));
    crate::support::until("first run did not handle 50 records", Duration::from_secs(60), || {
        handled.lock().unwrap().len() >= 50
    })
    .await;
    stop.cancel();
    let stats = run.await.unwrap();
    assert!(stats.received > 50, "the first run fetched past the failing record");
    assert_eq!(stats.finished, 50);

    // Second run, same group: it must be assigned the partition and start at record 50.
    let second = test.bus.consumer(settings()).unwrap();
    let mut assignment = second.assignment();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stop = CancellationToken::new();
    let run = tokio::spawn(second.run(
        move |message| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(seq_of(message.payload()));
                Ok(())
            }
        },
        None,
        stop.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), assignment.wait_for(|a| a.contains(&(topic.to_owned(), 0))))
        .await
        .expect("the restarted consumer is assigned the partition")
        .unwrap();
    crate::support::until("the second run did not receive 50 records", Duration::from_secs(60), || {
        seen.lock().unwrap().len() >= 50
    })
    .await;
    stop.cancel();
    run.await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (50..100).collect::<Vec<u64>>(), "nothing skipped, nothing stored redelivered");
}

#[tokio::test]
async fn records_still_queued_at_shutdown_are_delivered_by_the_flush() {
    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.flush.v1";
    test.broker.create_topic(topic, 3, 3).unwrap();
    // A node on this cluster with a long linger, so records sit in the producer's queue.
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_node_config(dir.path());
    config.bus.brokers = Some(test.bus.bootstrap_servers().to_owned());
    config.bus.linger_ms = 3_000;
    // The mock cluster has no CreateTopics API: make the node's own topics beforehand, as an
    // operator of a real cluster might.
    for schema in govex_schemas::bundled_schemas() {
        for name in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            test.broker.create_topic(&name, 3, 3).unwrap();
        }
    }
    let node = govex::node::start(config).await.unwrap();
    let mut reports = Vec::new();
    for seq in 0..2_000u64 {
        reports.push(node.bus.producer().enqueue(record(topic, &format!("k{seq}"), seq)).await);
    }
    assert!(node.bus.producer().in_flight() > 0, "records are still queued when shutdown starts");
    node.shutdown().await.unwrap();
    for report in futures::future::join_all(reports).await {
        report.expect("delivered before shutdown returned");
    }
    assert_eq!(support::records_in_topic(test.bus.bootstrap_servers(), topic, 3), 2_000);
}

#[tokio::test]
async fn a_record_the_handler_cannot_apply_goes_to_the_dlq_with_connect_headers() {
    use govex_bus::dlq::{header, DeadLetter, DeadLetterQueue, Stage};

    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.dlq.v1";
    test.broker.create_topic(&format!("{topic}.dlq"), 1, 3).unwrap();
    topic_holding(&test, topic, 10, |seq| format!("k{seq}")).await;
    let dlq = DeadLetterQueue::new(test.bus.producer().clone(), "test-sink", &govex_bus::Metrics::new());
    let applied = Arc::new(Mutex::new(Vec::new()));
    let log = applied.clone();
    let consumer = test
        .bus
        .consumer(ConsumerSettings { group_id: "dlq".into(), topics: vec![topic.into()], lanes: 2, lane_capacity: 8 })
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(consumer.run(
        move |message| {
            let log = log.clone();
            async move {
                let seq = seq_of(message.payload());
                if seq == 4 {
                    return Err(HandlerError::DeadLetter(DeadLetter {
                        stage: Stage::Apply,
                        error_class: "lifecycle",
                        message: "a revoked licence cannot be renewed".into(),
                    }));
                }
                log.lock().unwrap().push(seq);
                Ok(())
            }
        },
        Some(dlq),
        stop.clone(),
    ));
    crate::support::until("records did not arrive", Duration::from_secs(60), || applied.lock().unwrap().len() >= 9)
        .await;
    stop.cancel();
    let stats = run.await.unwrap();
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!((stats.finished, stats.received), (10, 10));

    // Read the dead letter back.
    let dlq_topic = format!("{topic}.dlq");
    let mut reader = support::collect(&test.bus, "dlq-reader", &[&dlq_topic]);
    let letter = reader.next().await;
    reader.stop().await;
    assert_eq!(seq_of(letter.payload()), 4, "the value is kept unchanged");
    assert_eq!(letter.key(), Some(b"k4".as_slice()));
    let get = |name: &str| letter.header(name).map(|v| String::from_utf8(v.to_vec()).unwrap());
    assert_eq!(get(header::TOPIC).as_deref(), Some(topic));
    assert_eq!(get(header::PARTITION).as_deref(), Some("0"));
    assert_eq!(get(header::OFFSET).as_deref(), Some("4"));
    assert_eq!(get(header::STAGE).as_deref(), Some("apply"));
    assert_eq!(get(header::CLASS).as_deref(), Some("lifecycle"));
    assert_eq!(get(header::MESSAGE).as_deref(), Some("a revoked licence cannot be renewed"));
    assert_eq!(get(header::CONNECTOR).as_deref(), Some("test-sink"));
    assert!(letter.envelope().is_ok(), "the original envelope travels with the dead letter");
}

/// The sequence numbers, sorted, of the first `expected` records a consumer of `topic` in
/// `group` gets: on one partition, a record delivered again would come before the new ones.
async fn resumed(test: &support::TestBus, topic: &str, group: &str, expected: usize) -> Vec<u64> {
    let mut seen: Vec<u64> = consume_all(test, topic, group, expected).await.into_iter().map(|(_, seq)| seq).collect();
    seen.sort_unstable();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_but_never_made_durable_stores_no_offset() {
    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.durable.v1";
    topic_holding(&test, topic, 200, |seq| format!("k{}", seq % 5)).await;
    let settings =
        ConsumerSettings { group_id: "durable".into(), topics: vec![topic.into()], lanes: 4, lane_capacity: 64 };
    let (written, flushes) = (Arc::new(Mutex::new(HashSet::new())), Arc::new(Mutex::new(0u32)));
    let stop = CancellationToken::new();
    let (log, tries) = (written.clone(), flushes.clone());
    let run = tokio::spawn(test.bus.consumer(settings).unwrap().run_batched(
        move |message| {
            let log = log.clone();
            async move {
                log.lock().unwrap().insert(seq_of(message.payload()));
                Ok(None)
            }
        },
        // The disk is full: nothing written is ever durable.
        move || {
            *tries.lock().unwrap() += 1;
            std::future::ready(Err("no space left on device".to_owned()))
        },
        None,
        stop.clone(),
    ));
    crate::support::until("nothing was written and flushed", Duration::from_secs(60), || {
        !written.lock().unwrap().is_empty() && *flushes.lock().unwrap() >= 2
    })
    .await;
    stop.cancel();
    let stats = run.await.unwrap();
    assert!(stats.received > 0);
    assert_eq!(stats.finished, 0, "a record written but not durable is not finished");
    assert_eq!(resumed(&test, topic, "durable", 200).await, (0..200).collect::<Vec<u64>>(), "all redelivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_sent_on_whose_ack_fails_is_sent_again_with_those_after_it_in_order() {
    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.acks.v1";
    topic_holding(&test, topic, 100, |_| "one-key".into()).await;
    let settings =
        ConsumerSettings { group_id: "acks".into(), topics: vec![topic.into()], lanes: 2, lane_capacity: 64 };
    // "The target": takes records in the order they are sent and answers each in turn, in the
    // background whether or not anyone waits, as a producer does; record 10's first delivery
    // times out, so the records after it arrive before it is sent again.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    type Answer = tokio::sync::oneshot::Sender<Result<(), String>>;
    let (to_target, mut target) = tokio::sync::mpsc::unbounded_channel::<(u64, Answer)>();
    let (log, failed) = (acknowledged.clone(), failed_once.clone());
    tokio::spawn(async move {
        while let Some((seq, answer)) = target.recv().await {
            tokio::time::sleep(Duration::from_micros(200)).await;
            let result = match seq == 10 && !failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                true => Err("request timed out".to_owned()),
                false => {
                    log.lock().unwrap().push(seq);
                    Ok(())
                }
            };
            let _ = answer.send(result);
        }
    });
    let stop = CancellationToken::new();
    let run = tokio::spawn(test.bus.consumer(settings).unwrap().run_batched(
        move |message| {
            let to_target = to_target.clone();
            async move {
                let (answer, answered) = tokio::sync::oneshot::channel();
                to_target.send((seq_of(message.payload()), answer)).unwrap();
                let ack: govex_bus::consumer::Ack =
                    Box::pin(async move { answered.await.unwrap_or_else(|_| Err("the target went away".into())) });
                Ok(Some(ack))
            }
        },
        || std::future::ready(Ok(())),
        None,
        stop.clone(),
    ));
    crate::support::until("not every record was acknowledged", Duration::from_secs(60), || {
        acknowledged.lock().unwrap().iter().collect::<HashSet<_>>().len() == 100
    })
    .await;
    // The offsets follow the acks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let stats = run.await.unwrap();
    assert!(failed_once.load(std::sync::atomic::Ordering::SeqCst), "record 10's ack failed once");
    assert_eq!(stats.finished, 100);
    // The last copy of each record is in the partition's order: what a reader keeping the
    // newest of each key ends with is record 99, and no record overtook one before it.
    let acknowledged = acknowledged.lock().unwrap().clone();
    let last_copy: BTreeMap<u64, usize> = acknowledged.iter().enumerate().map(|(at, seq)| (*seq, at)).collect();
    let positions: Vec<usize> = last_copy.values().copied().collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "last copies out of order: {acknowledged:?}");
    assert!(acknowledged.iter().filter(|seq| **seq < 10).count() == 10, "records before the failed one are sent once");
    // Everything was stored: a consumer of the same group starts after record 99.
    let later = record(topic, "one-key", 100);
    test.bus.producer().publish(later).await.unwrap();
    assert_eq!(resumed(&test, topic, "acks", 1).await, vec![100], "nothing acknowledged is delivered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_on_but_never_acknowledged_store_no_offset_and_do_not_hold_up_shutdown() {
    let test = support::test_bus(support::bus_config());
    let topic = "gov.test.unacknowledged.v1";
    topic_holding(&test, topic, 50, |seq| format!("k{}", seq % 3)).await;
    let settings =
        ConsumerSettings { group_id: "unacked".into(), topics: vec![topic.into()], lanes: 2, lane_capacity: 64 };
    let sent = Arc::new(Mutex::new(0u32));
    let stop = CancellationToken::new();
    let counter = sent.clone();
    let run = tokio::spawn(test.bus.consumer(settings).unwrap().run_batched(
        move |_message| {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                // The target cluster never answers.
                let ack: govex_bus::consumer::Ack = Box::pin(std::future::pending());
                Ok(Some(ack))
            }
        },
        || std::future::ready(Ok(())),
        None,
        stop.clone(),
    ));
    crate::support::until("nothing was sent on", Duration::from_secs(60), || *sent.lock().unwrap() > 0).await;
    stop.cancel();
    let stats = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("shutdown does not wait for acks that never come")
        .unwrap();
    assert_eq!(stats.finished, 0, "no record counts as forwarded before its ack");
    assert_eq!(resumed(&test, topic, "unacked", 50).await, (0..50).collect::<Vec<u64>>(), "all redelivered");
}
