//! Level bridges: county ▸ city ▸ province. Each node pulls the up-routes (case events) of its
//! children's clusters and the down-routes (licences and their revocations) of its parent's
//! cluster into its own cluster.
//!
//! A forwarded record keeps its key, value, event id and trace (continued by a child span);
//! the bridge appends its division to the hop trail and never forwards a record to a node
//! already in its trail (its origin counts as visited), so a two-way link cannot loop. The
//! producer is the node's idempotent one, and a source offset is stored only after the
//! local produce is acknowledged; duplicates after a restart are absorbed downstream by
//! event id.
//!
//! Schema ids belong to a registry, and each level has its own: a forwarded value's id is
//! looked up in the neighbour's registry, registered (or found) in this node's registry
//! under `<topic>-value`, and the value's 4-byte id rewritten; translations are cached per
//! link. A record that cannot be forwarded as it is (no readable envelope, a schema id the
//! neighbour does not know, a schema this node's registry refuses, a child's record whose
//! origin is not under that child) goes to this node's dead-letter topic with its reason,
//! never silently away.

pub mod component;
pub mod config;

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::level_bridge::config::BridgeConfig;
use crate::level_bridge::config::LinkConfig;
use govex_bus::{
    config::BusConfig,
    consumer::{Ack, AtLeastOnceConsumer, ConsumerSettings, HandlerError, RunStats},
    dlq::{DeadLetterQueue, Refusal, Stage},
    envelope::Envelope,
    registry_client::RegistryClientError,
    Bus, Incoming, Metrics, Outgoing, RegistryClient,
};
use govex_schemas::Division;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use tokio_util::sync::CancellationToken;

/// Which way a link carries records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a child to this node.
    Up,
    /// From the parent to this node.
    Down,
}

/// One link: a neighbour's cluster and the topics pulled from it.
#[derive(Clone)]
pub struct Link {
    /// `up-from-610921`, `down-from-610000`.
    pub name: String,
    /// The neighbour's division.
    pub remote: Division,
    /// Its cluster.
    pub config: BusConfig,
    /// Its bootstrap servers.
    pub bootstrap: String,
    /// The topics pulled.
    pub topics: Vec<String>,
    /// Which way.
    pub direction: Direction,
    /// The neighbour's schema registry.
    pub registry: RegistryClient,
}

impl Link {
    /// The topics this link pulls: its configured ones and those `catalog` says flow its way,
    /// sorted, without repeats.
    pub fn topics_with(&self, catalog: &govex_schemas::Catalog) -> Vec<String> {
        let flow = match self.direction {
            Direction::Up => govex_schemas::Flow::Up,
            Direction::Down => govex_schemas::Flow::Down,
        };
        let mut topics = self.topics.clone();
        topics.extend(catalog.topics_flowing(flow));
        topics.sort();
        topics.dedup();
        topics
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("bootstrap", &self.bootstrap)
            .field("topics", &self.topics)
            .field("registry", &self.registry.describe())
            .finish_non_exhaustive()
    }
}

/// A bridge setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bridge: {0}")]
pub struct BridgeError(String);

/// The links a node's configuration describes.
pub fn links(local: Division, bus: &BusConfig, bridge: &BridgeConfig) -> Result<Vec<Link>, BridgeError> {
    let link = |neighbour: &LinkConfig, remote: Division, direction: Direction, key: String| {
        let registry_url = neighbour.registry.as_deref().ok_or_else(|| {
            BridgeError(format!(
                "{key}.registry is required: the neighbour's schema registry URL, to translate the schema ids of the records it forwards"
            ))
        })?;
        let token = neighbour.registry_token.as_deref();
        let registry = match &neighbour.registry_tls {
            Some(tls) => {
                RegistryClient::https(registry_url, token, tls).map_err(|e| BridgeError(format!("{key}.{e}")))?
            }
            None if registry_url.starts_with("https://") => {
                return Err(BridgeError(format!("{key}.registry_tls.ca_path is required for an https registry")))
            }
            None => RegistryClient::http_with_token(registry_url, token),
        };
        let mut config = bus.clone();
        config.brokers = Some(neighbour.brokers.clone());
        config.properties.extend(neighbour.properties.clone());
        let (prefix, topics) = match direction {
            Direction::Up => ("up-from", bridge.up_topics.clone()),
            Direction::Down => ("down-from", bridge.down_topics.clone()),
        };
        Ok::<_, BridgeError>(Link {
            name: format!("{prefix}-{remote}"),
            remote,
            config,
            bootstrap: neighbour.brokers.clone(),
            topics,
            direction,
            registry,
        })
    };
    let mut out = Vec::new();
    if let Some(parent) = &bridge.parent {
        let remote = parent
            .division
            .or_else(|| local.parent())
            .ok_or_else(|| BridgeError(format!("{local} is a province: name the parent's division")))?;
        out.push(link(parent, remote, Direction::Down, "bridge.parent".into())?);
    }
    for (i, child) in bridge.children.iter().enumerate() {
        let remote = child.division.ok_or_else(|| BridgeError(format!("bridge.children[{i}].division is required")))?;
        out.push(link(child, remote, Direction::Up, format!("bridge.children[{i}]"))?);
    }
    Ok(out)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabels {
    link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    link: String,
    topic: String,
}

/// Hop latency buckets, from a millisecond (a neighbour on the same network) to ten seconds.
const HOP_BUCKETS_SECONDS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The bridges' metrics.
#[derive(Clone)]
pub struct BridgeMetrics {
    forwarded: Family<TopicLabels, Counter>,
    dropped_loops: Family<LinkLabels, Counter>,
    filtered: Family<LinkLabels, Counter>,
    /// Per link: a province's children can be near or far.
    hop_latency: Family<LinkLabels, Histogram>,
    link_up: Family<LinkLabels, Gauge>,
    heartbeat: Family<LinkLabels, Gauge>,
}

impl BridgeMetrics {
    /// Registers the bridges' metrics.
    pub fn register(metrics: &Metrics) -> Self {
        let hop_latency: Family<_, _> = Family::new_with_constructor(|| Histogram::new(HOP_BUCKETS_SECONDS));
        Self {
            forwarded: metrics.add("bridge_forwarded_records", "Records a bridge forwarded", Family::default()),
            dropped_loops: metrics.add(
                "bridge_dropped_loop_records",
                "Records dropped because this node is already in their hop trail",
                Family::default(),
            ),
            filtered: metrics.add(
                "bridge_filtered_records",
                "Records not forwarded by the origin or record-type filters",
                Family::default(),
            ),
            hop_latency: metrics.add(
                "bridge_hop_latency_seconds",
                "From a record's origin event time to its arrival here",
                hop_latency,
            ),
            link_up: metrics.add(
                "bridge_link_up",
                "1 when the link's remote cluster answered the last heartbeat",
                Family::default(),
            ),
            heartbeat: metrics.add(
                "bridge_heartbeat_timestamp_seconds",
                "When the link's remote cluster last answered",
                Family::default(),
            ),
        }
    }
}

/// What to do with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward with this envelope.
    Forward(Envelope),
    /// This node is already in the record's trail.
    Loop,
    /// A filter excludes it.
    Filtered,
}

/// The forwarding rule, apart from Kafka.
pub fn decide(local: Division, envelope: &Envelope, bridge: &BridgeConfig) -> Decision {
    let visited = envelope.hop_trail.contains(&local) || envelope.origin_division == local;
    if visited {
        return Decision::Loop;
    }
    let origin = envelope.origin_division.as_str();
    if !bridge.origin_prefixes.is_empty() && !bridge.origin_prefixes.iter().any(|p| origin.starts_with(p.as_str())) {
        return Decision::Filtered;
    }
    if !bridge.record_types.is_empty() && !bridge.record_types.contains(&envelope.record_type) {
        return Decision::Filtered;
    }
    let mut forwarded = envelope.clone();
    if forwarded.hop_trail.is_empty() {
        forwarded.hop_trail.push(envelope.origin_division);
    }
    forwarded.hop_trail.push(local);
    forwarded.traceparent = envelope.traceparent.child();
    Decision::Forward(forwarded)
}

/// One node's bridges.
pub struct Bridge {
    local: Division,
    bus: Bus,
    /// This node's registry, where forwarded schemas are registered.
    registry: RegistryClient,
    config: BridgeConfig,
    metrics: BridgeMetrics,
    /// (link, the neighbour's schema id) → this node's schema id.
    ids: parking_lot::Mutex<HashMap<(String, u32), u32>>,
    /// This node's dead-letter topics.
    dlq: DeadLetterQueue,
}

/// One link as it runs: its name, direction and neighbour, and the neighbour's registry.
struct Running {
    name: String,
    /// The link's metric labels, made once.
    labels: LinkLabels,
    remote: Division,
    direction: Direction,
    registry: RegistryClient,
}

/// Why a bridge cannot forward a record as it is; it goes to this node's dead-letter topic.
#[derive(Debug, thiserror::Error)]
enum Unforwardable {
    #[error("the record's envelope cannot be read: {0}")]
    Envelope(govex_bus::envelope::EnvelopeError),
    #[error("schema id {id} is not known to the registry of {remote}")]
    UnknownSchemaId { id: u32, remote: Division },
    #[error("schema id {id} of {remote} cannot be registered here: {reason}")]
    SchemaRefused { id: u32, remote: Division, reason: RegistryClientError },
    #[error("origin division {origin} is not under the child {child}")]
    OriginOutsideChild { origin: Division, child: Division },
    #[error("the value is not in the Confluent wire format (magic byte 0, 4-byte schema id)")]
    WireFormat,
}

impl Refusal for Unforwardable {
    fn class(&self) -> &'static str {
        match self {
            // The names dead letters have carried since the bridge was built: tools that
            // read `.dlq` topics filter on them.
            Self::Envelope(_) => "envelope",
            Self::UnknownSchemaId { .. } => "unknown-schema-id",
            Self::SchemaRefused { .. } => "schema-refused",
            Self::OriginOutsideChild { .. } => "origin-outside-child",
            Self::WireFormat => "wire-format",
        }
    }
}

impl Bridge {
    /// Bridges into `bus` (and `registry`) for the node at `local`; records that cannot be
    /// forwarded go to `dlq`.
    pub fn new(
        local: Division,
        bus: Bus,
        registry: RegistryClient,
        config: BridgeConfig,
        metrics: BridgeMetrics,
        dlq: DeadLetterQueue,
    ) -> Self {
        Self { local, bus, registry, config, metrics, ids: Default::default(), dlq }
    }

    /// This node's id for the neighbour's schema `id` of a value on `topic`.
    async fn translate(&self, link: &Running, topic: &str, id: u32) -> Result<u32, HandlerError> {
        if let Some(local) = self.ids.lock().get(&(link.name.clone(), id)) {
            return Ok(*local);
        }
        let text = match link.registry.schema_text_by_id(id).await {
            Ok(text) => text,
            Err(RegistryClientError::UnknownSchemaId(_)) => {
                return Err(HandlerError::refused(
                    Stage::Schema,
                    &Unforwardable::UnknownSchemaId { id, remote: link.remote },
                ))
            }
            Err(e) => return Err(HandlerError::Retry(e.to_string())),
        };
        let local = match self.registry.register(&format!("{topic}-value"), &text).await {
            Ok(local) => local,
            Err(e @ (RegistryClientError::Unavailable { .. } | RegistryClientError::Failed { .. })) => {
                // Retried: a registry that is down, or (in a process that only follows the
                // registry's topic) a schema a steward has yet to push here, may take it later.
                return Err(HandlerError::Retry(format!(
                    "this node's registry did not take schema {id} of {} yet: {e}",
                    link.remote
                )));
            }
            Err(e) => {
                return Err(HandlerError::refused(
                    Stage::Schema,
                    &Unforwardable::SchemaRefused { id, remote: link.remote, reason: e },
                ))
            }
        };
        self.ids.lock().insert((link.name.clone(), id), local);
        Ok(local)
    }

    async fn forward(&self, link: &Running, message: &Incoming) -> Result<Option<Ack>, HandlerError> {
        let labels = &link.labels;
        let envelope =
            message.envelope().map_err(|e| HandlerError::refused(Stage::Envelope, &Unforwardable::Envelope(e)))?;
        if link.direction == Direction::Up && !envelope.origin_division.is_within(link.remote) {
            return Err(HandlerError::refused(
                Stage::Origin,
                &Unforwardable::OriginOutsideChild { origin: envelope.origin_division, child: link.remote },
            ));
        }
        match decide(self.local, &envelope, &self.config) {
            Decision::Loop => {
                self.metrics.dropped_loops.get_or_create(labels).inc();
                Ok(None)
            }
            Decision::Filtered => {
                self.metrics.filtered.get_or_create(labels).inc();
                Ok(None)
            }
            Decision::Forward(forwarded) => {
                let mut payload = message.payload().unwrap_or_default().to_vec();
                if payload.len() < 5 || payload[0] != 0 {
                    return Err(HandlerError::refused(Stage::Schema, &Unforwardable::WireFormat));
                }
                let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
                let local = self.translate(link, message.topic(), id).await?;
                payload[1..5].copy_from_slice(&local.to_be_bytes());
                let outgoing =
                    Outgoing::new(message.topic(), message.key().unwrap_or_default().to_vec(), payload, &forwarded);
                // Sent, not waited for: the lane waits for the ack with the rest of its batch.
                let delivery = self.bus.producer().enqueue(outgoing).await;
                let topic = TopicLabels { link: link.name.clone(), topic: message.topic().to_owned() };
                let (forwarded, hop) = (
                    self.metrics.forwarded.get_or_create(&topic).clone(),
                    self.metrics.hop_latency.get_or_create(labels).clone(),
                );
                let origin_ms = envelope.event_time_millis();
                let ack: Ack = Box::pin(async move {
                    delivery.await.map_err(|e| e.to_string())?;
                    forwarded.inc();
                    if let Some(origin_ms) = origin_ms {
                        let now_ms = govex_schemas::zone::now_ms();
                        hop.observe(now_ms.saturating_sub(origin_ms) as f64 / 1000.0);
                    }
                    Ok::<(), String>(())
                });
                Ok(Some(ack))
            }
        }
    }

    /// Runs one link until `shutdown`: a heartbeat, and a consumer of the remote topics that
    /// stores each source offset only after the local produce is acknowledged.
    ///
    /// The topics pulled are the link's configured ones and those the live catalogue says
    /// flow this link's way; when the catalogue changes them (a steward onboarded a record
    /// type that travels up, say), the link subscribes again, without a restart.
    pub async fn run_link(
        self: Arc<Self>,
        link: Link,
        group_prefix: &str,
        catalog: govex_schemas::LiveCatalog,
        shutdown: CancellationToken,
    ) -> Result<RunStats, govex_bus::BusError> {
        let labels = LinkLabels { link: link.name.clone() };
        let heartbeat = {
            let (metrics, labels, config, bootstrap, stop) =
                (self.metrics.clone(), labels.clone(), link.config.clone(), link.bootstrap.clone(), shutdown.clone());
            tokio::spawn(async move {
                let probe = govex_bus::bus::Reachability::new(config, bootstrap);
                loop {
                    let up = probe.check(Duration::from_secs(2)).await.is_ok();
                    metrics.link_up.get_or_create(&labels).set(i64::from(up));
                    if up {
                        let now = (govex_schemas::zone::now_ms() / 1000) as i64;
                        metrics.heartbeat.get_or_create(&labels).set(now);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            })
        };
        let registry = link.registry.clone();
        let running = Arc::new(Running {
            name: link.name.clone(),
            labels: labels.clone(),
            remote: link.remote,
            direction: link.direction,
            registry,
        });
        let topics_of = {
            let link = link.clone();
            move |catalog: &govex_schemas::Catalog| link.topics_with(catalog)
        };
        let outcome = crate::resubscribe::on_catalogue_topics(catalog, topics_of, &link.name, shutdown, |topics, stop| {
            let (bridge, running) = (self.clone(), running.clone());
            let group_id = format!("{group_prefix}-{}-bridge-{}", self.local, link.remote);
            let (config, bootstrap) = (link.config.clone(), link.bootstrap.clone());
            async move {
                // Where the forwarded records go: a record type that travels may be new here.
                if let Err(e) = bridge.bus.ensure_topics(&topics).await {
                    tracing::warn!(link = %running.name, error = %e, "a topic the link writes to could not be made");
                }
                // A lane sends what it holds and waits for the acks together before the offsets
                // follow (see `run_batched`); lanes keep keys apart, so one slow key does not
                // hold up the others.
                // 64 × 64: at most about 8,000 records held per link (a lane's batch and its
                // queue), twice what the waiting lanes held (256 × 16), within the pod's memory.
                let settings = ConsumerSettings { group_id, topics, lanes: 64, lane_capacity: 64 };
                let consumer = AtLeastOnceConsumer::new(&config, &bootstrap, settings)
                    .map_err(govex_bus::BusError::Client)?
                    .with_lag_gauges(bridge.bus.lag_gauges());
                let dlq = bridge.dlq.clone();
                let forward = move |message: Incoming| {
                    let (bridge, running) = (bridge.clone(), running.clone());
                    async move { bridge.forward(&running, &message).await }
                };
                // What is forwarded is durable once acknowledged: nothing else to flush.
                let durable = || std::future::ready(Ok(()));
                let stats = consumer.run_batched(forward, durable, Some(dlq), stop).await;
                Ok(stats)
            }
        })
        .await;
        heartbeat.abort();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use govex_schemas::Department;

    fn division(code: &str) -> Division {
        Division::parse(code).unwrap()
    }

    #[test]
    fn a_record_is_forwarded_with_its_trail_and_never_back() {
        let config = BridgeConfig::default();
        let record = Envelope::new(Department::PLATFORM, division("610921"), "case-event");
        let Decision::Forward(at_city) = decide(division("610900"), &record, &config) else { panic!() };
        assert_eq!(at_city.hop_trail, vec![division("610921"), division("610900")]);
        assert_eq!(at_city.event_id, record.event_id, "the event id travels");
        assert_eq!(at_city.traceparent.trace_id, record.traceparent.trace_id, "the trace continues");
        let Decision::Forward(at_province) = decide(division("610000"), &at_city, &config) else { panic!() };
        assert_eq!(at_province.hop_trail.len(), 3);
        assert_eq!(decide(division("610921"), &at_city, &config), Decision::Loop, "the origin never gets it back");
        assert_eq!(decide(division("610900"), &at_province, &config), Decision::Loop);
    }

    #[test]
    fn filters_on_origin_and_record_type() {
        let config = BridgeConfig {
            origin_prefixes: vec!["6109".into()],
            record_types: vec!["case-event".into()],
            ..BridgeConfig::default()
        };
        let local = division("610000");
        assert!(matches!(
            decide(local, &Envelope::new(Department::PLATFORM, division("610921"), "case-event"), &config),
            Decision::Forward(_)
        ));
        assert_eq!(
            decide(local, &Envelope::new(Department::PLATFORM, division("610102"), "case-event"), &config),
            Decision::Filtered
        );
        assert_eq!(
            decide(local, &Envelope::new(Department::PLATFORM, division("610921"), "statistics"), &config),
            Decision::Filtered
        );
    }

    #[test]
    fn a_division_is_within_itself_and_its_ancestors_only() {
        assert!(division("610921").is_within(division("610921")));
        assert!(division("610921").is_within(division("610900")));
        assert!(division("610921").is_within(division("610000")));
        assert!(!division("610102").is_within(division("610900")));
        assert!(!division("610900").is_within(division("610921")));
    }

    #[test]
    fn the_parent_is_derived_and_children_are_named() {
        let neighbour = |division: Option<Division>, brokers: &str, registry: Option<&str>| LinkConfig {
            division,
            registry: registry.map(str::to_owned),
            ..LinkConfig::new(brokers, "")
        };
        let mut bridge = BridgeConfig {
            parent: Some(neighbour(None, "p:9092", Some("http://p:8081"))),
            children: vec![neighbour(Some(division("610921")), "c:9092", Some("http://c:8081"))],
            ..BridgeConfig::default()
        };
        let all = links(division("610900"), &BusConfig::default(), &bridge).unwrap();
        assert_eq!((all[0].name.as_str(), all[0].direction), ("down-from-610000", Direction::Down));
        assert_eq!((all[1].name.as_str(), all[1].direction), ("up-from-610921", Direction::Up));
        assert!(links(division("610000"), &BusConfig::default(), &bridge).is_err(), "a province has no derived parent");
        bridge.children[0].registry = None;
        let error = links(division("610900"), &BusConfig::default(), &bridge).unwrap_err().to_string();
        assert!(error.contains("bridge.children[0].registry is required"), "{error}");
        bridge.children[0].registry = Some("https://c:8081".into());
        let error = links(division("610900"), &BusConfig::default(), &bridge).unwrap_err().to_string();
        assert!(error.contains("bridge.children[0].registry_tls.ca_path is required"), "{error}");
    }
}
