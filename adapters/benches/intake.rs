//! `cargo bench -p govex-adapters --bench intake`
//!
//! Intake throughput for each department's record through the whole path (parse, JSON
//! Schema, domain checks, map, Avro encode, publish, every delivery report awaited), against
//!
//! - raw rdkafka produce of the same pre-encoded records (key, value, headers), with the
//!   same producer profile, to the same embedded broker, in the same run; and
//! - a Python peer doing the same work in one process with jsonschema, fastavro and
//!   confluent-kafka (`benches/python/intake_peer.py`), to the same broker, in the same run.
//!
//! Prints records per second and both ratios per department.

#[path = "../../benches/support/memory.rs"]
mod memory;

use std::{
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use govex_adapters::{common::CheckContext, intake::Intake, samples::sample};
use govex_bus::{
    config::{BusConfig, ClientRole},
    embedded::EmbeddedBroker,
    rdkafka::producer::{FutureProducer, FutureRecord},
    Bus, Metrics, RegistryClient,
};
use govex_schemas::Department;
use govex_schemas::Division;

const RECORDS: usize = 100_000;
/// The Python peer runs about 40 times slower: it gets a prefix of the records, so one run of
/// the benchmark stays under a minute or two; its rate is per record all the same.
const PYTHON_RECORDS: usize = 20_000;
const BATCH_LINES: usize = 5_000;
const ROUNDS: usize = 5;

async fn whole_path(intake: &Arc<Intake>, department: Department, record: &str, lines: &[Vec<u8>]) -> Duration {
    let started = Instant::now();
    for chunk in lines.chunks(BATCH_LINES) {
        for outcome in intake
            .accept_batch(
                department,
                record,
                chunk.iter().map(|l| axum::body::Bytes::from(l.clone())).collect(),
                govex_adapters::intake::EventIds::Fresh,
            )
            .await
        {
            outcome.expect("every sample is accepted");
        }
    }
    started.elapsed()
}

async fn raw_produce(
    producer: &FutureProducer,
    intake: &Intake,
    department: Department,
    record: &str,
    lines: &[Vec<u8>],
) -> Duration {
    // The same records the whole path sends, encoded before the clock starts.
    let context = CheckContext::now();
    let prebuilt: Vec<_> =
        lines.iter().map(|l| intake.check(department, record, l, &context).expect("valid").outgoing).collect();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(prebuilt.len());
    for outgoing in prebuilt {
        let mut future_record =
            FutureRecord::to(&outgoing.topic).key(&outgoing.key).payload(&outgoing.payload).headers(outgoing.headers);
        loop {
            match producer.send_result(future_record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    future_record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for report in futures::future::join_all(pending).await {
        report.expect("not cancelled").expect("delivered");
    }
    started.elapsed()
}

fn python_peer(
    bootstrap: &str,
    topic: &str,
    department: &str,
    json_schema: &Path,
    schema_id: u32,
    input: &Path,
) -> Result<f64, String> {
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python/intake_peer.py"))
        .args([
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--department",
            department,
            "--schema-id",
            &schema_id.to_string(),
        ])
        .arg("--json-schema")
        .arg(json_schema)
        .arg("--avro-schema")
        .arg(schemas.join(format!("avro/{topic}.avsc")))
        .arg("--input")
        .arg(input)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{}{}", stdout, String::from_utf8_lossy(&output.stderr)));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("records_per_second "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no rate in: {stdout}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let config = BusConfig::default();
        let broker = Arc::new(EmbeddedBroker::start(3).expect("embedded broker"));
        for schema in govex_schemas::bundled_schemas() {
            broker.create_topic(schema.topic, 3, 3).expect("topic");
        }
        let metrics = Metrics::new();
        let bus = Bus::on_embedded(&config, broker.clone(), &metrics).expect("bus");
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = RegistryClient::local(govex_schemas::Registry::open(&dir.path().join("registry")).expect("registry"));
        let division = Division::parse("610921").expect("division");
        let intake = Arc::new(Intake::new(&registry, &bus, division, &metrics).await.expect("intake"));
        let raw: FutureProducer = config.client_config(broker.bootstrap_servers(), ClientRole::Producer).create().expect("raw producer");

        println!("intake benchmark: {RECORDS} records per department and round (median of {ROUNDS} rounds; the Python peer: {PYTHON_RECORDS}), batches of {BATCH_LINES}, embedded broker (3 brokers), acks=all, idempotent, lz4");
        println!("{:<32} {:>12} {:>12} {:>8} {:>12} {:>8}", "record", "govex rec/s", "raw rec/s", "ratio", "python rec/s", "ratio");
        for (department, record, topic) in intake.record_types() {
            let (record, topic) = (record.as_str(), topic.as_str());
            let lines: Vec<Vec<u8>> = (0..RECORDS as u32).map(|n| sample(department.as_str(), record, n).expect("sample").to_string().into_bytes()).collect();
            // Warm up: connections, producer ids, caches.
            whole_path(&intake, department, record, &lines[..1_000]).await;
            let (mut govex_rates, mut raw_rates) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                raw_rates.push(RECORDS as f64 / raw_produce(&raw, &intake, department, record, &lines).await.as_secs_f64());
                govex_rates.push(RECORDS as f64 / whole_path(&intake, department, record, &lines).await.as_secs_f64());
            }
            let (govex_rate, raw_rate) = (median(govex_rates), median(raw_rates));
            let context = CheckContext::now();
            let started = Instant::now();
            for line in &lines {
                std::hint::black_box(intake.check(department, record, line, &context).expect("valid"));
            }
            let check_rate = RECORDS as f64 / started.elapsed().as_secs_f64();
            let input = dir.path().join(format!("{record}.ndjson"));
            std::fs::write(&input, lines[..PYTHON_RECORDS].iter().map(|l| String::from_utf8_lossy(l).into_owned() + "\n").collect::<String>()).expect("input file");
            let schema_id = registry.latest(&format!("{topic}-value")).await.expect("registered").0;
            // The Python peer maps the four department records of the brief's target; the
            // platform's licences and case events have no peer.
            let python = match department {
                Department::PLATFORM => Err(String::new()),
                _ => {
                    // The input contract the intake derived, as a department's validator has it.
                    let contract = dir.path().join(format!("{record}.schema.json"));
                    let derived = intake.record_type(department, record).expect("live").input_schema().to_string();
                    std::fs::write(&contract, derived).expect("contract file");
                    python_peer(broker.bootstrap_servers(), topic, department.as_str(), &contract, schema_id, &input)
                },
            };
            let (python_text, python_ratio) = match &python {
                Ok(rate) => (format!("{rate:.0}"), format!("{:.1}", govex_rate / rate)),
                Err(_) => ("n/a".to_owned(), "n/a".to_owned()),
            };
            println!(
                "{:<32} {:>12.0} {:>12.0} {:>8.2} {:>12} {:>8}",
                format!("{department}/{record}"),
                govex_rate,
                raw_rate,
                govex_rate / raw_rate,
                python_text,
                python_ratio
            );
            println!("  checks alone (parse, JSON Schema, domain, map, encode, envelope), one thread: {check_rate:.0} rec/s");
            if let (Err(e), false) = (python, department == Department::PLATFORM) {
                println!("  python peer failed (pip install 'confluent-kafka[avro,schemaregistry]' jsonschema fastavro): {}", e.lines().last().unwrap_or(""));
            }
        }
        // The node's part and the broker's share this process: its peak is the bound on both.
        println!("peak memory of this process (intake, producer and embedded broker): {:.0} MiB", memory::own_peak_mib());
        let _ = bus.producer().flush(Duration::from_secs(30));
    });
}
