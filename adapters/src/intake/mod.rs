//! The intake pipeline every department input goes through, whatever carried it (HTTP, a
//! file): parse, JSON Schema, domain checks, map, encode, publish, and only then answer.
//!
//! [`Intake::check`] is the CPU part and runs anywhere; [`Intake::accept`] and
//! [`Intake::accept_batch`] publish through the no-loss producer and return only once the
//! broker has acknowledged. [`http`] serves it to department systems.

/// Department tokens live in `bus`, shared with the sinks' APIs.
pub use govex_http::auth;
pub mod component;
pub mod config;
pub mod http;
pub mod idempotency;

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use govex_bus::{
    producer::{Delivered, Outgoing, Producer},
    registry_client::SubjectVersion,
    Bus, Envelope, Metrics, RegistryClient,
};
use govex_schemas::Department;
use govex_schemas::Division;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    common::CheckContext,
    contract::{self, RecordType},
    validation::Violation,
};

/// A record the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The event id (UUIDv7) in the record's headers.
    pub event_id: Uuid,
    /// The topic it is on.
    pub topic: String,
    /// Its partition there (records of one key share one).
    pub partition: i32,
    /// Its position in that partition: with the topic and partition, where a reader finds it.
    pub offset: i64,
}

/// Why a record was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON at all.
    Malformed(String),
    /// Schema or domain violations.
    Invalid(Vec<Violation>),
    /// The broker did not take it; nothing was acknowledged, the caller may retry.
    Unavailable(String),
}

impl Rejection {
    /// The violations to report for the refused record: a body that is not JSON, or a
    /// broker that did not take it, is one violation at the record's root.
    pub fn violations(&self) -> Vec<Violation> {
        match self {
            Self::Invalid(violations) => violations.clone(),
            Self::Malformed(detail) => vec![Violation::new("", "malformed-json", detail.clone())],
            Self::Unavailable(detail) => vec![Violation::new("", "unavailable", detail.clone())],
        }
    }

    /// A short reason for metrics labels.
    pub fn reason(&self) -> &str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Invalid(violations) => violations.first().map_or("invalid", |v| v.rule.as_str()),
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A record that passed every check, encoded and ready to publish.
pub struct Checked {
    /// Its envelope.
    pub envelope: Envelope,
    /// The record to publish.
    pub outgoing: Outgoing,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    department: String,
    record: String,
    outcome: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepartmentLabels {
    department: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    department: String,
    record: String,
}

/// The intake's latency buckets: from half a millisecond (a record the broker acknowledges at
/// once) to seconds (a broker under strain).
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone)]
struct IntakeMetrics {
    records: Family<RecordLabels, Counter>,
    latency: Family<DepartmentLabels, Histogram>,
    in_flight: Gauge,
    versions: Family<TypeLabels, Gauge>,
    refresh_errors: Counter,
}

/// The record types live at one moment, by department and name. Replaced whole when the
/// registry has a newer version of any of them: a request holds the `Arc` it started with.
type Types = HashMap<Department, HashMap<String, Arc<RecordType>>>;

/// The intake of one node.
pub struct Intake {
    types: RwLock<Arc<Types>>,
    registry: RegistryClient,
    /// Makes the topic of a record type before it goes live.
    bus: Bus,
    producer: Producer,
    origin: Division,
    metrics: IntakeMetrics,
    /// Schema ids whose contract failed to compile, so each is logged once, not every poll.
    refused: std::sync::Mutex<std::collections::HashSet<u32>>,
}

/// Why the intake could not start or follow the registry.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The registry did not answer, or answered with an error.
    #[error("the schema registry: {0}")]
    Registry(#[from] govex_bus::registry_client::RegistryClientError),
    /// The registry lists none of the record types taken: a registry on an empty volume, or
    /// the wrong one. The record types stay live.
    #[error("the schema registry lists none of the {0} record types taken now (an empty or wrong registry?); they stay live")]
    Emptied(usize),
    /// The topic of a new record type could not be made.
    #[error("the topic of a new record type cannot be made: {0}")]
    Topic(String),
    /// A bundled schema could not seed the registry.
    #[error("the bundled schema of {subject} cannot be registered: {reason}")]
    Seed {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

/// What a refresh from the registry changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// Record types now taken at a new version (or for the first time), as
    /// `department/record@version`.
    pub live: Vec<String>,
    /// Record types no longer taken (their subject was deleted).
    pub gone: Vec<String>,
    /// Versions that could not be used, with why (the previous version stays live).
    pub refused: Vec<String>,
}

impl Intake {
    /// The intake, taking every department record type the registry has, at its latest
    /// version. Bundled schemas seed subjects the registry does not have yet; they never
    /// replace a version a steward pushed.
    pub async fn new(
        registry: &RegistryClient,
        bus: &Bus,
        origin: Division,
        metrics: &Metrics,
    ) -> Result<Self, IntakeError> {
        seed(registry).await?;
        let latency: Family<_, _> = Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS_SECONDS));
        let intake_metrics = IntakeMetrics {
            records: metrics.add(
                "intake_records",
                "Department records accepted or rejected, by reason",
                Family::default(),
            ),
            latency: metrics.add("intake_latency_seconds", "Time from request to broker acknowledgement", latency),
            in_flight: metrics.add("intake_in_flight_requests", "Intake requests being handled", Gauge::default()),
            versions: metrics.add(
                "intake_schema_version",
                "The schema version each type is encoded by",
                Family::default(),
            ),
            refresh_errors: metrics.add(
                "intake_schema_refresh_errors",
                "Failed reads of the registry while following it (the versions in use stay live)",
                Counter::default(),
            ),
        };
        let intake = Self {
            types: RwLock::new(Arc::default()),
            registry: registry.clone(),
            bus: bus.clone(),
            producer: bus.producer().clone(),
            origin,
            metrics: intake_metrics,
            refused: Default::default(),
        };
        // The caller has made the topics of what the registry holds (a node at start, an
        // import of a node's records): the broker need not answer yet.
        intake.go_live(false).await?;
        Ok(intake)
    }

    /// Reads the registry's latest versions and goes live on every one that changed. A
    /// version that cannot be used is reported and the one before it stays live.
    pub async fn refresh(&self) -> Result<Refreshed, IntakeError> {
        self.go_live(true).await
    }

    async fn go_live(&self, make_topics: bool) -> Result<Refreshed, IntakeError> {
        let outcome = self.read_registry().await;
        if outcome.is_err() {
            self.metrics.refresh_errors.inc();
        }
        let (next, refreshed) = outcome?;
        if refreshed.live.is_empty() && refreshed.gone.is_empty() {
            return Ok(refreshed);
        }
        // A record type goes live only once its topic exists: a department must not be told
        // its record was taken while the topic it goes to is still missing.
        let current = self.snapshot();
        let known_topics: std::collections::HashSet<&str> =
            current.values().flat_map(HashMap::values).map(|t| t.topic.as_str()).collect();
        let new_topics: Vec<String> = next
            .values()
            .flat_map(HashMap::values)
            .filter(|t| !known_topics.contains(t.topic.as_str()))
            .map(|t| t.topic.clone())
            .collect();
        if make_topics && !new_topics.is_empty() {
            if let Err(e) = self.bus.ensure_topics(&new_topics).await {
                self.metrics.refresh_errors.inc();
                return Err(IntakeError::Topic(e.to_string()));
            }
        }
        for types in next.values() {
            for t in types.values() {
                let labels = TypeLabels { department: t.department.to_string(), record: t.record.clone() };
                self.metrics.versions.get_or_create(&labels).set(i64::from(t.version));
            }
        }
        for gone in &refreshed.gone {
            if let Some((department, record)) = gone.split_once('/') {
                let labels = TypeLabels { department: department.to_owned(), record: record.to_owned() };
                self.metrics.versions.remove(&labels);
            }
        }
        *self.types.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        for live in &refreshed.live {
            tracing::info!(record_type = %live, "record type live");
        }
        for gone in &refreshed.gone {
            tracing::warn!(record_type = %gone, "record type no longer taken: its subject was deleted or its latest version is not one");
        }
        Ok(refreshed)
    }

    async fn read_registry(&self) -> Result<(Types, Refreshed), IntakeError> {
        let current = self.snapshot();
        let mut next: Types = HashMap::new();
        let mut refreshed = Refreshed::default();
        let mut seen = std::collections::HashSet::new();
        for subject in self.registry.subjects().await? {
            if contract::topic_of(&subject).is_none() {
                continue;
            }
            let latest = self.registry.version(&subject, "latest").await?;
            let known = current
                .values()
                .flat_map(HashMap::values)
                .find(|t| contract::topic_of(&subject) == Some(t.topic.as_str()));
            let (record_type, is_new) = match known {
                Some(known) if known.schema_id == latest.id => (Arc::clone(known), false),
                _ => match self.compile(&subject, &latest) {
                    Ok(Some(compiled)) => (Arc::new(compiled), true),
                    Ok(None) => continue,
                    Err(reason) => {
                        refreshed.refused.push(format!("{subject} version {}: {reason}", latest.version));
                        match known {
                            Some(known) => (Arc::clone(known), false),
                            None => continue,
                        }
                    }
                },
            };
            let name = format!("{}/{}", record_type.department, record_type.record);
            if !seen.insert(name.clone()) {
                // The node's registry refuses a second subject for one record type; another
                // registry may hold one. Reported once per schema id, never taken.
                if self.refused.lock().unwrap_or_else(PoisonError::into_inner).insert(latest.id) {
                    tracing::error!(record_type = %name, subject, "another subject already declares this record type; this one is not taken");
                }
                continue;
            }
            if is_new {
                refreshed.live.push(format!("{name}@{}", record_type.version));
            }
            next.entry(record_type.department).or_default().insert(record_type.record.clone(), record_type);
        }
        for t in current.values().flat_map(HashMap::values) {
            if !seen.contains(&format!("{}/{}", t.department, t.record)) {
                refreshed.gone.push(format!("{}/{}", t.department, t.record));
            }
        }
        // A registry that lists none of the record types taken now has lost its volume or is
        // the wrong one: taking that as "every subject deleted" would stop every department.
        if next.is_empty() && !current.is_empty() {
            return Err(IntakeError::Emptied(current.values().map(HashMap::len).sum()));
        }
        Ok((next, refreshed))
    }

    fn compile(&self, subject: &str, latest: &SubjectVersion) -> Result<Option<RecordType>, String> {
        match RecordType::compile(subject, latest.id, latest.version, &latest.schema) {
            Ok(compiled) => Ok(compiled),
            Err(e) => {
                // The node's own registry refuses such a schema at push; another registry
                // may not. Logged once per schema id, not once per poll.
                if self.refused.lock().unwrap_or_else(PoisonError::into_inner).insert(latest.id) {
                    tracing::error!(subject, version = latest.version, error = %e, "a registered version cannot be used; the version before it stays live");
                }
                Err(e.to_string())
            }
        }
    }

    /// Follows the registry every `every` until `shutdown`: a version a steward pushes goes
    /// live within `every` and a registry read (bounded by the client's timeout).
    pub async fn follow(self: Arc<Self>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.refresh().await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the schema registry answers again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the schema registry; the versions in use stay live");
                }
                Err(_) => {}
            }
        }
    }

    fn snapshot(&self) -> Arc<Types> {
        Arc::clone(&self.types.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the node takes `record` from `department`.
    pub fn knows(&self, department: Department, record: &str) -> bool {
        self.record_type(department, record).is_ok()
    }

    /// The record types taken, as (department, record, topic).
    pub fn record_types(&self) -> Vec<(Department, String, String)> {
        let types = self.snapshot();
        let mut all: Vec<_> = types
            .values()
            .flat_map(HashMap::values)
            .map(|t| (t.department, t.record.clone(), t.topic.clone()))
            .collect();
        all.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        all
    }

    /// The live version of a record type: a request keeps it to the end, whatever goes live
    /// meanwhile.
    pub fn record_type(&self, department: Department, record: &str) -> Result<Arc<RecordType>, Rejection> {
        let types = self.snapshot();
        types.get(&department).and_then(|t| t.get(record)).cloned().ok_or_else(|| {
            Rejection::Invalid(vec![Violation::new(
                "",
                "record-type",
                format!("{department} does not send '{record}' records to this exchange"),
            )])
        })
    }

    /// Parses and checks one input and encodes it: everything but publishing. The record gets
    /// a fresh event id.
    pub fn check(
        &self,
        department: Department,
        record: &str,
        body: &[u8],
        context: &CheckContext,
    ) -> Result<Checked, Rejection> {
        let record_type = self.record_type(department, record)?;
        self.check_body(&record_type, body, context, None)
    }

    /// [`Intake::check`] of one version of a record type, with the event id given (`None`: a
    /// fresh one).
    pub fn check_body(
        &self,
        record_type: &RecordType,
        body: &[u8],
        context: &CheckContext,
        event_id: Option<Uuid>,
    ) -> Result<Checked, Rejection> {
        self.check_value(record_type, Self::parse(body)?, context, event_id)
    }

    /// A body as JSON, or why it is not.
    pub fn parse(body: &[u8]) -> Result<serde_json::Value, Rejection> {
        // serde_json's message names the position and the kind of error, not the input.
        serde_json::from_slice(body).map_err(|e| Rejection::Malformed(format!("the body is not valid JSON: {e}")))
    }

    /// [`Intake::check`] of a body already parsed (an import hashes it first).
    pub fn check_parsed(
        &self,
        department: Department,
        record: &str,
        input: serde_json::Value,
        context: &CheckContext,
        event_id: Option<Uuid>,
    ) -> Result<Checked, Rejection> {
        let record_type = self.record_type(department, record)?;
        self.check_value(&record_type, input, context, event_id)
    }

    fn check_value(
        &self,
        record_type: &RecordType,
        input: serde_json::Value,
        context: &CheckContext,
        event_id: Option<Uuid>,
    ) -> Result<Checked, Rejection> {
        let (key, payload) = record_type.check(input, context).map_err(Rejection::Invalid)?;
        let mut envelope = Envelope::new(record_type.department, self.origin, record_type.record.clone());
        if let Some(event_id) = event_id {
            envelope.event_id = event_id;
        }
        let outgoing = Outgoing::new(&record_type.topic, key.into_bytes(), payload, &envelope);
        Ok(Checked { envelope, outgoing })
    }

    /// Checks, publishes and waits for the broker: one record.
    pub async fn accept(
        &self,
        department: Department,
        record: &str,
        body: &[u8],
        ids: EventIds,
    ) -> Result<Accepted, Rejection> {
        let started = Instant::now();
        let _in_flight = InFlight::new(&self.metrics.in_flight);
        let checked = self
            .record_type(department, record)
            .and_then(|t| self.check_body(&t, body, &CheckContext::now(), ids.id(0)));
        let outcome = match checked {
            Ok(checked) => self.publish(checked).await,
            Err(rejection) => Err(rejection),
        };
        self.count(department, record, std::slice::from_ref(&outcome));
        self.metrics
            .latency
            .get_or_create(&DepartmentLabels { department: department.to_string() })
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Checks every line, publishes the valid ones together (all in flight at once) and
    /// answers line by line, in order.
    ///
    /// The CPU work runs off the async workers, in chunks checked on as many threads as the
    /// machine has cores, and each chunk is enqueued as soon as it is checked, so checking
    /// the next chunk overlaps with the broker taking this one.
    pub async fn accept_batch(
        self: &Arc<Self>,
        department: Department,
        record: &str,
        lines: Vec<axum::body::Bytes>,
        ids: EventIds,
    ) -> Vec<Result<Accepted, Rejection>> {
        use futures::StreamExt;
        const CHUNK_LINES: usize = 256;
        let started = Instant::now();
        let _in_flight = InFlight::new(&self.metrics.in_flight);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Every line of a batch is taken by the version live when it began.
        let record_type = match self.record_type(department, record) {
            Ok(record_type) => record_type,
            Err(rejection) => {
                let outcomes = vec![Err(rejection); lines.len()];
                self.count(department, record, &outcomes);
                return outcomes;
            }
        };
        let context = CheckContext::now();
        let mut chunks = Vec::with_capacity(lines.len() / CHUNK_LINES + 1);
        let mut lines = lines.into_iter().enumerate().peekable();
        while lines.peek().is_some() {
            chunks.push(lines.by_ref().take(CHUNK_LINES).collect::<Vec<_>>());
        }
        let mut checked_chunks = futures::stream::iter(chunks)
            .map(|chunk| {
                let intake = Arc::clone(self);
                let record_type = Arc::clone(&record_type);
                let lines = chunk.len();
                let task = tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|(n, line)| intake.check_body(&record_type, line, &context, ids.id(*n)))
                        .collect::<Vec<_>>()
                });
                // A chunk whose checking failed answers each of its lines: the answer stays
                // line for line, whatever happened.
                async move {
                    task.await.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "checking a chunk of a batch failed");
                        (0..lines).map(|_| Err(Rejection::Unavailable("checking this line failed".into()))).collect()
                    })
                }
            })
            .buffered(workers);
        let mut pending = Vec::new();
        while let Some(checked) = checked_chunks.next().await {
            for item in checked {
                pending.push(match item {
                    Ok(Checked { envelope, outgoing }) => {
                        Ok((envelope.event_id, self.producer.enqueue(outgoing).await))
                    }
                    Err(rejection) => Err(rejection),
                });
            }
        }
        let topic = record_type.topic.as_str();
        let mut outcomes = Vec::with_capacity(pending.len());
        for item in pending {
            outcomes.push(match item {
                Ok((event_id, delivery)) => delivery
                    .await
                    .map(|d| accepted(event_id, d, topic))
                    .map_err(|e| Rejection::Unavailable(e.to_string())),
                Err(rejection) => Err(rejection),
            });
        }
        self.count(department, record, &outcomes);
        self.metrics
            .latency
            .get_or_create(&DepartmentLabels { department: department.to_string() })
            .observe(started.elapsed().as_secs_f64());
        outcomes
    }

    /// Publishes checked records together (all in flight at once) and waits for each, in order.
    pub async fn publish_all(&self, checked: Vec<Checked>) -> Vec<Result<Accepted, Rejection>> {
        let mut pending = Vec::with_capacity(checked.len());
        for Checked { envelope, outgoing } in checked {
            let topic = outgoing.topic.clone();
            pending.push((envelope.event_id, topic, self.producer.enqueue(outgoing).await));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for (event_id, topic, delivery) in pending {
            outcomes.push(
                delivery
                    .await
                    .map(|d| accepted(event_id, d, &topic))
                    .map_err(|e| Rejection::Unavailable(e.to_string())),
            );
        }
        outcomes
    }

    /// Publishes a checked record and waits for the broker.
    pub async fn publish(&self, checked: Checked) -> Result<Accepted, Rejection> {
        let topic = checked.outgoing.topic.clone();
        let delivered =
            self.producer.publish(checked.outgoing).await.map_err(|e| Rejection::Unavailable(e.to_string()))?;
        Ok(accepted(checked.envelope.event_id, delivered, &topic))
    }

    fn count(&self, department: Department, record: &str, outcomes: &[Result<Accepted, Rejection>]) {
        // Counted per batch: one label lookup per distinct outcome, not per record.
        let mut tally: HashMap<(&str, &str), u64> = HashMap::new();
        for outcome in outcomes {
            let key = match outcome {
                Ok(_) => ("accepted", ""),
                Err(rejection) => ("rejected", rejection.reason()),
            };
            *tally.entry(key).or_default() += 1;
        }
        for ((outcome, reason), n) in tally {
            let labels = RecordLabels {
                department: department.to_string(),
                record: record.to_owned(),
                outcome: outcome.into(),
                reason: reason.into(),
            };
            self.metrics.records.get_or_create(&labels).inc_by(n);
        }
    }
}

/// Counts a request in flight for as long as it lives: a request that panics is not left
/// counted.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How the event ids of one request are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIds {
    /// A fresh UUIDv7 per record.
    Fresh,
    /// Derived from the department and the idempotency key, and from the line: a retry of
    /// the same request (after a crash left its key pending) publishes the same ids, which
    /// the sinks have already applied and drop. Still UUIDv7, with the time the key was first
    /// seen, so ids stay time-ordered and carry the event time.
    Derived {
        /// SHA-256 of the department and the scoped key.
        seed: [u8; 32],
        /// When the key was first seen (ms since the epoch).
        first_seen_ms: u64,
    },
}

impl EventIds {
    /// The ids of a request sent by `department` under `scoped_key`, first seen at
    /// `first_seen_ms`.
    pub fn derived(department: Department, scoped_key: &str, first_seen_ms: u64) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(department.as_str().as_bytes());
        hash.update([0]);
        hash.update(scoped_key.as_bytes());
        Self::Derived { seed: hash.finalize().into(), first_seen_ms }
    }

    /// The id of line `n` (0-based; a single record is line 0); `None` means a fresh one.
    pub fn id(&self, n: usize) -> Option<Uuid> {
        use sha2::{Digest, Sha256};
        let Self::Derived { seed, first_seen_ms } = self else { return None };
        let mut hash = Sha256::new();
        hash.update(seed);
        hash.update((n as u64).to_be_bytes());
        let digest = hash.finalize();
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        Some(uuid::Builder::from_unix_timestamp_millis(*first_seen_ms, &random).into_uuid())
    }
}

fn accepted(event_id: Uuid, delivered: Delivered, topic: &str) -> Accepted {
    Accepted { event_id, topic: topic.to_owned(), partition: delivered.partition, offset: delivered.offset }
}

/// Registers every bundled schema whose subject the registry does not have: the bundled
/// schemas seed an empty registry and never pin what a node takes.
pub async fn seed(registry: &RegistryClient) -> Result<(), IntakeError> {
    let existing = registry.subjects().await?;
    for bundled in govex_schemas::bundled_schemas() {
        let subject = bundled.subject();
        if existing.contains(&subject) {
            continue;
        }
        registry
            .register(&subject, bundled.text)
            .await
            .map_err(|e| IntakeError::Seed { subject: subject.clone(), reason: e.to_string() })?;
    }
    Ok(())
}
