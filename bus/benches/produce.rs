//! `cargo bench -p govex-bus --bench produce`
//!
//! The wire-format publish path (envelope, Avro encode through the schema-aware serde writer,
//! Confluent framing, no-loss producer, every delivery report awaited) against raw rdkafka
//! produce of the same pre-encoded records (key, framed value and envelope headers, built
//! before the clock starts), with the same producer profile, to the same embedded broker, in
//! the same run. Prints records per second of both and their ratio.
//! Rounds alternate so that drift of the machine hits both sides alike.

#[path = "../../benches/support/memory.rs"]
mod memory;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use govex_bus::{
    config::{BusConfig, ClientRole},
    embedded::EmbeddedBroker,
    envelope::Envelope,
    rdkafka::{
        message::OwnedHeaders,
        producer::{FutureProducer, FutureRecord, Producer as _},
    },
    Bus, Encoder, Metrics, Outgoing, RegistryClient,
};
use govex_schemas::{Department, Division};
use serde::Serialize;

const RECORDS: usize = 200_000;
const ROUNDS: usize = 5;

/// A 14-field record shaped like a contract filing (the brief's cost reference).
const SCHEMA: &str = r#"{"type": "record", "name": "BenchFiling", "namespace": "cn.gov.exchange.bench", "fields": [
  {"name": "filing_number", "type": "string"}, {"name": "contract_number", "type": "string"},
  {"name": "project", "type": "string"}, {"name": "building", "type": "string"},
  {"name": "unit", "type": "string"}, {"name": "room", "type": "string"},
  {"name": "property_unit_number", "type": "string"}, {"name": "buyer_count", "type": "int"},
  {"name": "seller_credit_code", "type": "string"}, {"name": "total_price_cents", "type": "long"},
  {"name": "area", "type": "double"}, {"name": "filed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["FILED", "CANCELLED"]}},
  {"name": "remark", "type": ["null", "string"], "default": null}]}"#;

#[derive(Serialize, Clone)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    Filed,
}

#[derive(Serialize, Clone)]
struct BenchFiling {
    filing_number: String,
    contract_number: String,
    project: String,
    building: String,
    unit: String,
    room: String,
    property_unit_number: String,
    buyer_count: i32,
    seller_credit_code: String,
    total_price_cents: i64,
    area: f64,
    filed_at: i64,
    status: Status,
    remark: Option<String>,
}

fn filing(i: usize) -> BenchFiling {
    BenchFiling {
        filing_number: format!("WQBA-610921-{i:08}"),
        contract_number: format!("HT2026{i:010}"),
        project: "汉阴县月河新城三期".into(),
        building: format!("{}", i % 30),
        unit: format!("{}", i % 4),
        room: format!("{}", 100 + i % 2000),
        property_unit_number: format!("610921001001GB{:05}F{:08}", i % 100_000, i),
        buyer_count: 2,
        seller_credit_code: "91610921MA6YABCD1X".into(),
        total_price_cents: 56_800_000 + i as i64,
        area: 98.76,
        filed_at: 1_790_000_000_000 + i as i64,
        status: Status::Filed,
        remark: None,
    }
}

async fn wire_path(bus: &Bus, encoder: &Encoder, topic: &str, records: &[BenchFiling]) -> Duration {
    let division = Division::parse("610921").expect("valid division");
    let start = Instant::now();
    let mut pending = Vec::with_capacity(records.len());
    for record in records {
        let envelope = Envelope::new(Department::HOUSING, division, "contract-filing");
        let payload = encoder.encode(record).expect("encodes");
        let outgoing = Outgoing::new(topic, record.property_unit_number.as_bytes().to_vec(), payload, &envelope);
        pending.push(bus.producer().enqueue(outgoing).await);
    }
    for report in futures::future::join_all(pending).await {
        report.expect("delivered");
    }
    start.elapsed()
}

/// The same Kafka records the wire path sends (key, framed value, envelope headers), built
/// before the clock starts.
struct Prebuilt {
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

async fn raw_path(producer: &FutureProducer, topic: &str, records: Vec<Prebuilt>) -> Duration {
    let start = Instant::now();
    let mut pending = Vec::with_capacity(records.len());
    for prebuilt in records {
        let mut record =
            FutureRecord::to(topic).key(&prebuilt.key).payload(&prebuilt.payload).headers(prebuilt.headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    // Queue full: let the broker catch up, exactly as the wire path does.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for report in futures::future::join_all(pending).await {
        report.expect("not cancelled").expect("delivered");
    }
    start.elapsed()
}

fn rate(records: usize, took: Duration) -> f64 {
    records as f64 / took.as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let config = BusConfig::default();
        let broker = Arc::new(EmbeddedBroker::start(3).expect("embedded broker"));
        let metrics = Metrics::new();
        let bus = Bus::on_embedded(&config, broker.clone(), &metrics).expect("bus");
        for topic in ["bench.wire", "bench.raw"] {
            broker.create_topic(topic, 3, 3).expect("topic");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = RegistryClient::local(govex_schemas::Registry::open(dir.path()).expect("registry"));
        let encoder = Encoder::register(&registry, "bench.wire-value", SCHEMA).await.expect("schema registers");
        let raw: FutureProducer =
            config.client_config(broker.bootstrap_servers(), ClientRole::Producer).create().expect("raw producer");

        let records: Vec<BenchFiling> = (0..RECORDS).map(filing).collect();
        let division = Division::parse("610921").expect("valid division");
        let prebuild = |records: &[BenchFiling]| -> Vec<Prebuilt> {
            records
                .iter()
                .map(|r| Prebuilt {
                    key: r.property_unit_number.as_bytes().to_vec(),
                    payload: encoder.encode(r).expect("encodes"),
                    headers: Envelope::new(Department::HOUSING, division, "contract-filing").to_headers(),
                })
                .collect()
        };
        let bytes = prebuild(&records[..1000]).iter().map(|p| p.payload.len()).sum::<usize>() / 1000;
        println!("produce benchmark: {RECORDS} records of {bytes} bytes per round, {ROUNDS} rounds, embedded broker (3 brokers), acks=all, idempotent, lz4");

        // Warm both paths (connections, metadata, producer ids).
        wire_path(&bus, &encoder, "bench.wire", &records[..5_000]).await;
        raw_path(&raw, "bench.raw", prebuild(&records[..5_000])).await;

        let (mut wire_rates, mut raw_rates) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            let raw_rate = rate(RECORDS, raw_path(&raw, "bench.raw", prebuild(&records)).await);
            let wire_rate = rate(RECORDS, wire_path(&bus, &encoder, "bench.wire", &records).await);
            println!("  round {round}: raw produce {raw_rate:>10.0} rec/s   wire-format publish {wire_rate:>10.0} rec/s   ratio {:.2}", wire_rate / raw_rate);
            raw_rates.push(raw_rate);
            wire_rates.push(wire_rate);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (raw_median, wire_median) = (median(&mut raw_rates), median(&mut wire_rates));
        println!("raw rdkafka produce (pre-encoded):   {raw_median:>10.0} records/s (median)");
        println!("wire-format publish path:            {wire_median:>10.0} records/s (median)");
        println!("ratio wire/raw:                      {:>10.2}", wire_median / raw_median);
        // The node's part and the broker's share this process: its peak is the bound on both.
        println!("peak memory of this process (producer and embedded broker): {:.0} MiB", memory::own_peak_mib());

        // Encoding alone, for the record: the serde writer against apache-avro's Value path.
        let start = Instant::now();
        for record in &records {
            std::hint::black_box(encoder.encode(record).expect("encodes"));
        }
        let serde_rate = rate(RECORDS, start.elapsed());
        let start = Instant::now();
        for record in &records {
            let value = apache_avro::to_value(record).expect("to value").resolve(encoder.schema()).expect("resolves");
            std::hint::black_box(encoder.encode_value(&value).expect("encodes"));
        }
        let value_rate = rate(RECORDS, start.elapsed());
        let start = Instant::now();
        for _ in &records {
            std::hint::black_box(Envelope::new(Department::HOUSING, division, "contract-filing").to_headers());
        }
        println!("envelope and headers only: {:.0}/s", rate(RECORDS, start.elapsed()));
        println!("encode only: serde writer {serde_rate:.0}/s, apache-avro Value path {value_rate:.0}/s, ratio {:.2}", serde_rate / value_rate);
        let _ = raw.flush(Duration::from_secs(30));
        let _ = bus.producer().flush(Duration::from_secs(30));
    });
}
