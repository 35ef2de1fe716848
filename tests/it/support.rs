//! Shared set-up: an embedded cluster, a registry on disk, a node's config, the record the
//! tests send, and [`eventually`], the one way a test waits for something.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use govex::config::NodeConfig;

use govex_bus::{
    config::BusConfig,
    embedded::EmbeddedBroker,
    rdkafka::{
        consumer::{BaseConsumer, Consumer},
        ClientConfig,
    },
    Bus, Metrics, RegistryClient,
};
use govex_schemas::Registry;
use serde::{Deserialize, Serialize};

/// A bus config for tests: short session timeout so groups settle quickly.
pub fn bus_config() -> BusConfig {
    BusConfig { session_timeout_ms: 6_000, linger_ms: 5, ..BusConfig::default() }
}

/// A running embedded cluster and a bus on it.
pub struct TestBus {
    pub broker: Arc<EmbeddedBroker>,
    pub bus: Bus,
}

pub fn test_bus(config: BusConfig) -> TestBus {
    let broker = Arc::new(EmbeddedBroker::start(3).expect("embedded cluster starts"));
    let metrics = Metrics::new();
    let bus = Bus::on_embedded(&config, broker.clone(), &metrics).expect("bus connects");
    TestBus { broker, bus }
}

/// A registry store in a temporary directory, and a client of it.
pub fn local_registry() -> (tempfile::TempDir, Registry, RegistryClient) {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&dir.path().join("registry")).expect("registry opens");
    let client = RegistryClient::local(registry.clone());
    (dir, registry, client)
}

/// Sum over partitions of (high watermark − low watermark): records actually in the log.
pub fn records_in_topic(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("client");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
            high - low
        })
        .sum()
}

/// The record most tests publish: several Avro types, a natural key and a sequence number.
pub const PERMIT_SCHEMA: &str = r#"{
  "type": "record", "name": "TestPermit", "namespace": "cn.gov.exchange.test",
  "fields": [
    {"name": "key", "type": "string"},
    {"name": "seq", "type": "long"},
    {"name": "holder_count", "type": "int"},
    {"name": "area", "type": "double"},
    {"name": "active", "type": "boolean"},
    {"name": "stage", "type": {"type": "enum", "name": "Stage", "symbols": ["ACCEPTED", "APPROVED", "REJECTED"]}},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "surface", "type": {"type": "map", "values": "string"}},
    {"name": "issued_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
  ]
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    Accepted,
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestPermit {
    pub key: String,
    pub seq: i64,
    pub holder_count: i32,
    pub area: f64,
    pub active: bool,
    pub stage: Stage,
    pub note: Option<String>,
    pub tags: Vec<String>,
    pub surface: std::collections::BTreeMap<String, String>,
    pub issued_at: i64,
}

pub fn permit(key: &str, seq: i64) -> TestPermit {
    TestPermit {
        key: key.to_owned(),
        seq,
        holder_count: 2,
        area: 89.5 + seq as f64,
        active: seq % 2 == 0,
        stage: if seq % 3 == 0 { Stage::Approved } else { Stage::Accepted },
        note: (seq % 5 == 0).then(|| format!("第{seq}号 note")),
        tags: vec!["住房".into(), format!("t{seq}")],
        surface: [("坐落".to_owned(), "汉阴县城关镇".to_owned()), ("seq".to_owned(), seq.to_string())].into(),
        issued_at: 1_790_000_000_000 + seq,
    }
}

/// A consumer that hands every record it receives to the test, in a channel.
pub struct Collector {
    rx: tokio::sync::mpsc::UnboundedReceiver<govex_bus::Incoming>,
    stop: tokio_util::sync::CancellationToken,
    run: tokio::task::JoinHandle<govex_bus::consumer::RunStats>,
}

/// Starts a collector in its own consumer group on `topics`.
pub fn collect(bus: &Bus, group: &str, topics: &[&str]) -> Collector {
    let consumer = bus
        .consumer(govex_bus::ConsumerSettings {
            group_id: group.into(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            lanes: 1,
            lane_capacity: 64,
        })
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(consumer.run(
        move |message| {
            let tx = tx.clone();
            async move {
                // A closed channel only means the test stopped listening.
                let _ = tx.send(message);
                Ok(())
            }
        },
        None,
        stop.clone(),
    ));
    Collector { rx, stop, run }
}

impl Collector {
    /// The next record; fails the test after 30 s without one.
    pub async fn next(&mut self) -> govex_bus::Incoming {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("a record arrives")
            .expect("the consumer runs")
    }

    /// Stops the consumer and waits for it to drain.
    pub async fn stop(self) -> govex_bus::consumer::RunStats {
        self.stop.cancel();
        self.run.await.unwrap()
    }
}

/// Retries `attempt` every 50 ms until it gives `Some`, and returns that; fails the test,
/// naming `what`, when `within` passes first. The one deadline loop the tests share.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let nothing = || "nothing yet".to_owned();
    eventually_saw(what, within, || {
        let attempted = attempt();
        async move { attempted.await.ok_or_else(nothing) }
    })
    .await
}

/// Waits until `url` (a `/readyz`) answers 200; fails the test after 60 s, with the last
/// answer. Readiness is worked out in the background, once the consumers have caught up.
pub async fn wait_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = reqwest::get(url).await.unwrap();
        if answer.status() == 200 {
            return;
        }
        let text = answer.text().await.unwrap();
        assert!(tokio::time::Instant::now() < deadline, "never ready: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback address that is free now, for a listener a test must name before it starts (a
/// node's registry that its neighbour's bridge is told of). It is taken below Linux's
/// ephemeral range (32768–60999): a port the OS handed out from that range and that was then
/// let go is the next outgoing connection's local port as readily as anyone's, and a Kafka
/// client makes many; a node that then binds it finds it in use. Tests in other processes pick
/// from a start of their own, and a port is checked free before it is given.
pub fn reserved_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const PORTS: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let start = (std::process::id() ^ nanos) as u16 % PORTS;
    let _ = NEXT.compare_exchange(0, start.max(1), Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..PORTS {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % PORTS;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + PORTS)
}

/// A node config on the embedded bus with every port chosen by the OS.
pub fn test_node_config(data_dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::embedded_default();
    config.data_dir = data_dir.to_path_buf();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.api = any;
    config.listen.registry = any;
    config.listen.ops = any;
    config.bus.session_timeout_ms = 6_000;
    // A data steward's token, for the tests that write the registry over HTTP.
    config.intake.tokens = vec![govex_http::config::TokenConfig {
        department: "platform".into(),
        sha256: govex_http::auth::hash_token(STEWARD_TOKEN),
        label: Some("steward".into()),
        role: govex_http::auth::Role::Steward,
    }];
    config
}

/// The token of the steward [`test_node_config`] configures.
pub const STEWARD_TOKEN: &str = "test-token-of-steward";

/// Sends `request` and reads the answer as JSON: a test's way of asking a node.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The token the test configurations give `department` (`test-token-of-<department>`).
pub fn token(department: &str) -> String {
    format!("test-token-of-{department}")
}

/// Like [`eventually`], and a failure says what the last attempt saw: `attempt` answers
/// `Ok(done)`, or `Err(what it saw)`.
pub async fn eventually_saw<T, F: std::future::Future<Output = Result<T, String>>>(
    what: &str,
    within: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let started = tokio::time::Instant::now();
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(saw) => {
                assert!(started.elapsed() < within, "{what} did not happen within {within:?}; last seen: {saw}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `done` holds, checking every 50 ms; fails the test naming `what` after `within`.
pub async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    eventually(what, within, || std::future::ready(done().then_some(()))).await
}

/// `POST`s `body` to `url` as `department` (with [`token`]).
pub async fn post(url: &str, department: &str, body: &serde_json::Value) -> reqwest::Response {
    let request = reqwest::Client::new().post(url).bearer_auth(token(department)).json(body);
    request.send().await.unwrap()
}
