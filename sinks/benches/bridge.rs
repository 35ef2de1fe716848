//! `cargo bench -p govex-sinks --bench bridge`
//!
//! Bridge forwarding rate against two raw copies of the same records between the same two
//! embedded clusters, in the same run:
//!
//! - the pipelined copy, the way MirrorMaker 2 works: one consumer, every record produced at
//!   once without waiting, source offsets stored as the target acknowledges them, in order
//!   (the baseline the bridge is held to);
//! - the waiting copy: the consumer's lanes, each producing one record and waiting for its
//!   ack before the next (what the bridge did before it pipelined).
//!
//! All store a source offset only after the target acknowledged the record; the bridge also
//! parses the envelope, checks the trail, translates the schema id and rewrites the headers.
//! Then hop latency: records published at a steady rate while the bridge runs, from each
//! record's origin event time (its UUIDv7) to its append time on the target. Peak memory is
//! this process's (both clusters, the copies and the bridge).

#[path = "../../benches/support/memory.rs"]
mod memory;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use govex_bus::{
    config::BusConfig, consumer::ConsumerSettings, dlq::DeadLetterQueue, embedded::EmbeddedBroker, envelope::Envelope,
    Bus, Metrics, Outgoing, RegistryClient,
};
use govex_schemas::Department;
use govex_schemas::Division;
use govex_schemas::Registry;
use govex_sinks::level_bridge::config::BridgeConfig;
use govex_sinks::level_bridge::config::LinkConfig;
use govex_sinks::level_bridge::{links, Bridge, BridgeMetrics};
use tokio_util::sync::CancellationToken;

const RECORDS: usize = 50_000;
const ROUNDS: usize = 3;
const TOPIC: &str = "gov.case.event.v1";
const RAW_TOPIC: &str = "bench.raw-forward";
const PIPELINED_TOPIC: &str = "bench.pipelined-copy";

/// The pipelined copy: consumes `TOPIC` from `source` and produces each record to
/// `PIPELINED_TOPIC` on `target` without waiting; stores each source offset once the target
/// acknowledged it (acks taken in the order sent), until `RECORDS` are copied. Returns the
/// time from the first record received to the last acknowledged (the group's join is not
/// the copy's work, as the bridge's clock starts at its first record too).
async fn pipelined_copy(config: &BusConfig, source: &str, target: &Bus, group: &str) -> Duration {
    use futures::StreamExt;
    use govex_bus::rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = config
        .client_config(source, govex_bus::config::ClientRole::Consumer { group_id: group })
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut acks = futures::stream::FuturesOrdered::new();
    let mut copied = 0;
    let mut first = None;
    while copied < RECORDS {
        tokio::select! {
            Some((delivered, topic, partition, offset)) = acks.next(), if !acks.is_empty() => {
                let delivered: Result<_, govex_bus::producer::ProduceError> = delivered;
                delivered.expect("delivered");
                consumer.store_offset(String::as_str(&topic), partition, offset).expect("offset stored");
                copied += 1;
            }
            received = consumer.recv() => {
                first.get_or_insert_with(Instant::now);
                let message = govex_bus::Incoming::from(received.expect("a record").detach());
                let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
                let ack = target.producer().enqueue(message.copy_to(PIPELINED_TOPIC)).await;
                acks.push_back(async move { (ack.await, topic, partition, offset) });
            }
        }
    }
    first.map_or(Duration::ZERO, |first| first.elapsed())
}

/// Records `first..first + count`, each with its own key (one case each).
/// A consumer of the bench's topic in `group`, with `lanes` lanes of `lane_capacity` records.
fn consumer_of(bus: &Bus, group: &str, lanes: usize, lane_capacity: usize) -> govex_bus::AtLeastOnceConsumer {
    let settings = ConsumerSettings { group_id: group.into(), topics: vec![TOPIC.into()], lanes, lane_capacity };
    bus.consumer(settings).expect("consumer")
}

fn records(origin: Division, first: usize, count: usize) -> Vec<Outgoing> {
    (first..first + count)
        .map(|n| {
            let envelope = Envelope::new(Department::PLATFORM, origin, "case-event");
            // The wire format with schema id 1 (the case schema, the first the source registry
            // holds); the bridge reads no further than the id.
            let mut payload = vec![0u8; 150];
            payload[4] = 1;
            Outgoing::new(TOPIC, format!("BJ-{n:08}"), payload, &envelope)
        })
        .collect()
}

async fn high(bus: &Bus, topic: &str) -> i64 {
    bus.high_watermarks(topic).await.map(|w| w.values().sum()).unwrap_or(0)
}

/// Waits until `topic` on `bus` holds `target` records; returns the time from the arrival of
/// the first record past `from` to the last.
async fn time_until(bus: &Bus, topic: &str, from: i64, target: i64) -> Duration {
    let mut first = None;
    loop {
        let now = high(bus, topic).await;
        if now > from && first.is_none() {
            first = Some(Instant::now());
        }
        if now >= target {
            return first.map_or(Duration::ZERO, |f| f.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (source, target) =
            (Arc::new(EmbeddedBroker::start(3).expect("broker")), Arc::new(EmbeddedBroker::start(3).expect("broker")));
        for broker in [&source, &target] {
            for topic in [TOPIC, RAW_TOPIC, PIPELINED_TOPIC] {
                broker.create_topic(topic, 3, 3).expect("topic");
            }
        }
        // Both clusters are librdkafka's mock cluster: every client, the bridge's link to its
        // parent included, takes the settings the node gives it (the consumer group protocol,
        // a short fetch wait, since the mock holds each fetch for all of it).
        let config = BusConfig { mock_cluster: true, ..BusConfig::default() };
        let source_bus = Bus::on_embedded(&config, source.clone(), &Metrics::new()).expect("bus");
        let target_bus = Bus::on_embedded(&config, target.clone(), &Metrics::new()).expect("bus");
        let county = Division::parse("610921").expect("division");
        for result in source_bus.producer().publish_all(records(county, 0, RECORDS)).await {
            result.expect("delivered");
        }

        // Raw consume-and-produce: the consumer's lanes, each producing and awaiting the ack.
        let consumer = consumer_of(&source_bus, "raw", 256, 16);
        let stop = CancellationToken::new();
        let forwarded = Arc::new(AtomicU64::new(0));
        let (producer, counter) = (target_bus.producer().clone(), forwarded.clone());
        let raw = tokio::spawn(consumer.run(
            move |message| {
                let (producer, counter) = (producer.clone(), counter.clone());
                async move {
                    let outgoing = message.copy_to(RAW_TOPIC);
                    producer.publish(outgoing).await.map_err(|e| govex_bus::HandlerError::Retry(e.to_string()))?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
            None,
            stop.clone(),
        ));
        let raw_took = time_until(&target_bus, RAW_TOPIC, 0, RECORDS as i64).await;
        stop.cancel();
        let _ = raw.await;

        // The bridge, pulling the same topic into the target cluster.
        let bridge_config = BridgeConfig {
            parent: Some(LinkConfig::new(source.bootstrap_servers(), "http://127.0.0.1:9")),
            down_topics: vec![TOPIC.into()],
            ..BridgeConfig::default()
        };
        // The target plays a county (610922) pulling from its parent; any division not in the
        // records' trail would do.
        let mut link =
            links(Division::parse("610922").expect("division"), &config, &bridge_config).expect("link").remove(0);
        // Each cluster's registry, in process: the bridge translates schema id 1 once, then
        // from its cache.
        let registries = tempfile::tempdir().expect("temp dir");
        let case_schema = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).expect("case schema").text;
        let source_registry = Registry::open(&registries.path().join("source")).expect("registry");
        assert_eq!(source_registry.register(&format!("{TOPIC}-value"), case_schema).expect("registers"), 1);
        link.registry = RegistryClient::local(source_registry);
        let target_registry =
            RegistryClient::local(Registry::open(&registries.path().join("target")).expect("registry"));
        let metrics = Metrics::new();
        let bridge = Arc::new(Bridge::new(
            Division::parse("610922").expect("division"),
            target_bus.clone(),
            target_registry,
            bridge_config,
            BridgeMetrics::register(&metrics),
            DeadLetterQueue::new(target_bus.producer().clone(), "bench-bridge", &metrics),
        ));
        // Rounds, the pipelined copy and the bridge in turn, each reading the whole topic in a
        // group of its own: the medians are compared (one round alone varies by a third on
        // this machine).
        let (mut pipelined_took, mut bridge_took) = (Vec::new(), Vec::new());
        let mut last_round = None;
        for round in 0..ROUNDS {
            let group = format!("pipelined-{round}");
            pipelined_took.push(pipelined_copy(&config, source.bootstrap_servers(), &target_bus, &group).await);
            let stop = CancellationToken::new();
            let running = tokio::spawn({
                let (bridge, link, stop, prefix) = (bridge.clone(), link.clone(), stop.clone(), format!("bench{round}"));
                // An empty catalogue: the link pulls only its configured topics.
                let catalog = govex_schemas::LiveCatalog::new(govex_schemas::Catalog::default());
                async move { bridge.run_link(link, &prefix, catalog, stop).await }
            });
            let (from, to) = ((round * RECORDS) as i64, ((round + 1) * RECORDS) as i64);
            bridge_took.push(time_until(&target_bus, TOPIC, from, to).await);
            // The last round's bridge keeps running for the latency measurement.
            match round + 1 < ROUNDS {
                true => {
                    stop.cancel();
                    let _ = running.await;
                }
                false => last_round = Some((stop, running)),
            }
        }
        let (stop, running) = last_round.expect("a round");

        // Hop latency: a steady 2,000 records/s for 3 s while the bridge runs.
        let started = Instant::now();
        let mut pending = Vec::new();
        for i in 0..6_000usize {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + Duration::from_micros(500 * i as u64)))
                .await;
            // Made at send time, so the origin time in its event id is the send time; a key of
            // its own, as distinct cases have (one key is handled in order, one at a time).
            let record = records(county, RECORDS + i, 1).remove(0);
            pending.push(source_bus.producer().enqueue(record).await);
        }
        for delivery in futures::future::join_all(pending).await {
            delivery.expect("delivered");
        }
        let total = (ROUNDS * RECORDS) as i64 + 6_000;
        time_until(&target_bus, TOPIC, 0, total).await;
        stop.cancel();
        let _ = running.await;

        // Read the steady-rate records back from the target: append time minus origin time.
        let reader = consumer_of(&target_bus, "latency", 1, 1024);
        let latencies = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (seen, lat, stop_reading) = (Arc::new(AtomicU64::new(0)), latencies.clone(), CancellationToken::new());
        let (seen_in, stop_in) = (seen.clone(), stop_reading.clone());
        let read = tokio::spawn(reader.run(
            move |message| {
                let (lat, seen, stop) = (lat.clone(), seen_in.clone(), stop_in.clone());
                async move {
                    if let (Ok(envelope), Some(appended)) = (message.envelope(), message.timestamp_ms()) {
                        if let Some(origin) = envelope.event_time_millis() {
                            lat.lock().push((origin, appended.saturating_sub(origin as i64)));
                        }
                    }
                    if seen.fetch_add(1, Ordering::SeqCst) + 1 == total as u64 {
                        stop.cancel();
                    }
                    Ok(())
                }
            },
            None,
            stop_reading.clone(),
        ));
        let _ = read.await;
        let mut all = latencies.lock().clone();
        // The steady-rate records are the newest ones by origin time.
        all.sort_by_key(|(origin, _)| *origin);
        let mut steady: Vec<i64> = all.iter().rev().take(6_000).map(|(_, l)| *l).collect();
        steady.sort_unstable();
        let pick = |p: f64| {
            steady.get(((steady.len() as f64 * p) as usize).min(steady.len().saturating_sub(1))).copied().unwrap_or(0)
        };

        let median = |mut took: Vec<Duration>| {
            took.sort();
            RECORDS as f64 / took[took.len() / 2].as_secs_f64()
        };
        let raw_rate = RECORDS as f64 / raw_took.as_secs_f64();
        let (pipelined_rate, bridge_rate) = (median(pipelined_took), median(bridge_took));
        println!("bridge benchmark: {RECORDS} records of 150 bytes, one key each, between two embedded clusters (3 brokers each), median of {ROUNDS} rounds");
        println!("pipelined raw copy (MirrorMaker 2's way):    {pipelined_rate:>10.0} records/s");
        println!("waiting raw copy (256 lanes, ack each):      {raw_rate:>10.0} records/s");
        println!("bridge forwarding:                           {bridge_rate:>10.0} records/s");
        println!("ratio bridge/pipelined copy:                 {:>10.2}", bridge_rate / pipelined_rate);
        println!("ratio bridge/waiting copy:                   {:>10.2}", bridge_rate / raw_rate);
        println!("peak memory of this process:                 {:>10.0} MiB", memory::own_peak_mib());
        println!(
            "hop latency at 2,000 records/s (origin event time to append on the target): p50 {} ms, p99 {} ms",
            pick(0.50),
            pick(0.99)
        );
    });
}
