//! The intake pipeline every department input goes through, whatever carried it (HTTP, a
//! file): parse, JSON Schema, domain checks, map, encode, publish, and only then answer.
//!
//! [`Intake::check`] is the CPU part and runs anywhere; [`Intake::accept`] and
//! [`Intake::accept_batch`] publish through the no-loss producer and return only once the
//! broker has acknowledged. [`http`] serves it to department systems.

/// Department tokens live in `bus`, shared with the sinks' APIs.
pub use govex_bus::auth;
pub mod http;
pub mod idempotency;

use std::{collections::HashMap, sync::Arc, time::Instant};

use govex_bus::{
    producer::{Delivered, Outgoing, Producer},
    Department, Division, Encoder, Envelope, Metrics, RegistryClient,
};
use govex_schemas::{bundled::value_subject, bundled_json_schemas, bundled_schemas};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    common::CheckContext,
    record::RecordSpec,
    validation::{JsonValidator, Violation},
};

/// A record the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The event id (UUIDv7) in the record's headers.
    pub event_id: Uuid,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
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

struct Prepared {
    spec: RecordSpec,
    validator: JsonValidator,
    encoder: Encoder,
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

#[derive(Clone)]
struct IntakeMetrics {
    records: Family<RecordLabels, Counter>,
    latency: Family<DepartmentLabels, Histogram>,
    in_flight: Gauge,
}

/// The intake of one node.
pub struct Intake {
    records: HashMap<(Department, &'static str), Prepared>,
    producer: Producer,
    origin: Division,
    metrics: IntakeMetrics,
}

/// A record type the node does not take.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A record type without a bundled JSON Schema or Avro schema.
    #[error("record {0} has no bundled JSON Schema or Avro schema")]
    MissingSchema(String),
    /// A schema that does not compile or register.
    #[error("schema of {record} cannot be used: {reason}")]
    Schema {
        /// The record.
        record: String,
        /// Why.
        reason: String,
    },
}

impl Intake {
    /// Prepares every record type in `records`: compiles its JSON Schema, registers its Avro
    /// schema and keeps an encoder for it.
    pub async fn new(
        records: Vec<RecordSpec>,
        registry: &RegistryClient,
        producer: Producer,
        origin: Division,
        metrics: &Metrics,
    ) -> Result<Self, IntakeError> {
        let mut prepared = HashMap::new();
        for spec in records {
            let name = format!("{}/{}", spec.department, spec.record);
            let json = bundled_json_schemas()
                .find(|s| s.department == spec.department.as_str() && s.record == spec.json_schema_name())
                .ok_or_else(|| IntakeError::MissingSchema(name.clone()))?;
            let avro = bundled_schemas()
                .find(|s| s.topic == spec.topic)
                .ok_or_else(|| IntakeError::MissingSchema(name.clone()))?;
            let validator =
                JsonValidator::new(json.text).map_err(|reason| IntakeError::Schema { record: name.clone(), reason })?;
            let encoder = Encoder::register(registry, &value_subject(spec.topic), avro.text)
                .await
                .map_err(|e| IntakeError::Schema { record: name.clone(), reason: e.to_string() })?;
            prepared.insert((spec.department, spec.record), Prepared { spec, validator, encoder });
        }
        let intake_metrics = IntakeMetrics {
            records: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            in_flight: Gauge::default(),
        };
        metrics.register(|r| {
            r.register(
                "intake_records",
                "Department records accepted or rejected, by reason",
                intake_metrics.records.clone(),
            );
            r.register(
                "intake_latency_seconds",
                "Time from request to broker acknowledgement",
                intake_metrics.latency.clone(),
            );
            r.register("intake_in_flight_requests", "Intake requests being handled", intake_metrics.in_flight.clone());
        });
        Ok(Self { records: prepared, producer, origin, metrics: intake_metrics })
    }

    /// Whether the node takes `record` from `department`.
    pub fn knows(&self, department: Department, record: &str) -> bool {
        self.records.keys().any(|(d, r)| *d == department && *r == record)
    }

    /// The record types taken, as (department, record, topic).
    pub fn record_types(&self) -> Vec<(Department, &'static str, &'static str)> {
        let mut all: Vec<_> = self.records.values().map(|p| (p.spec.department, p.spec.record, p.spec.topic)).collect();
        all.sort_by_key(|(d, r, _)| (d.as_str(), *r));
        all
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
        self.check_with_id(department, record, body, context, None)
    }

    /// [`Intake::check`], with the event id given (`None`: a fresh one).
    pub fn check_with_id(
        &self,
        department: Department,
        record: &str,
        body: &[u8],
        context: &CheckContext,
        event_id: Option<Uuid>,
    ) -> Result<Checked, Rejection> {
        // An unknown record type is named before the body is looked at.
        self.prepared(department, record)?;
        self.check_parsed(department, record, &Self::parse(body)?, context, event_id)
    }

    /// A body as JSON, or why it is not.
    pub fn parse(body: &[u8]) -> Result<serde_json::Value, Rejection> {
        // serde_json's message names the position and the kind of error, not the input.
        serde_json::from_slice(body).map_err(|e| Rejection::Malformed(format!("the body is not valid JSON: {e}")))
    }

    /// [`Intake::check_with_id`] of a body already parsed (an import hashes it first).
    pub fn check_parsed(
        &self,
        department: Department,
        record: &str,
        input: &serde_json::Value,
        context: &CheckContext,
        event_id: Option<Uuid>,
    ) -> Result<Checked, Rejection> {
        let prepared = self.prepared(department, record)?;
        if !input.is_object() {
            return Err(Rejection::Invalid(vec![Violation::new("", "type", "the body must be a JSON object")]));
        }
        let schema_violations = prepared.validator.check(input);
        // The domain checks run even when the JSON Schema failed, wherever the record still
        // binds (an unknown field, a bad pattern): a sender fixes everything in one round. A
        // field the schema already refused is not reported twice.
        let mapped = match (prepared.spec.map)(input, context, &prepared.encoder) {
            Ok(mapped) if schema_violations.is_empty() => mapped,
            Ok(_) => return Err(Rejection::Invalid(schema_violations)),
            Err(domain) => {
                let mut violations = schema_violations;
                let schema_failed = !violations.is_empty();
                for violation in domain {
                    let said = violations.iter().any(|v| v.pointer == violation.pointer);
                    // `binding` and `encode` only say the record did not fit, which the
                    // schema's violations already explain.
                    let consequence = schema_failed && matches!(violation.rule.as_str(), "binding" | "encode");
                    if !said && !consequence {
                        violations.push(violation);
                    }
                }
                return Err(Rejection::Invalid(crate::validation::capped(violations)));
            }
        };
        let mut envelope = Envelope::new(department, self.origin, prepared.spec.record);
        if let Some(event_id) = event_id {
            envelope.event_id = event_id;
        }
        let outgoing = Outgoing::new(prepared.spec.topic, mapped.key.into_bytes(), mapped.payload, &envelope);
        Ok(Checked { envelope, outgoing })
    }

    fn prepared(&self, department: Department, record: &str) -> Result<&Prepared, Rejection> {
        self.records.iter().find(|((d, r), _)| *d == department && *r == record).map(|(_, p)| p).ok_or_else(|| {
            Rejection::Invalid(vec![Violation::new(
                "",
                "record-type",
                format!("{department} does not send '{record}' records to this exchange"),
            )])
        })
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
        self.metrics.in_flight.inc();
        let outcome = match self.check_with_id(department, record, body, &CheckContext::now(), ids.id(0)) {
            Ok(checked) => self.publish(checked).await,
            Err(rejection) => Err(rejection),
        };
        self.metrics.in_flight.dec();
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
        self.metrics.in_flight.inc();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let context = CheckContext::now();
        let mut chunks = Vec::with_capacity(lines.len() / CHUNK_LINES + 1);
        let mut lines = lines.into_iter().enumerate().peekable();
        while lines.peek().is_some() {
            chunks.push(lines.by_ref().take(CHUNK_LINES).collect::<Vec<_>>());
        }
        let mut checked_chunks = futures::stream::iter(chunks)
            .map(|chunk| {
                let intake = Arc::clone(self);
                let record = record.to_owned();
                tokio::task::spawn_blocking(move || {
                    chunk
                        .iter()
                        .map(|(n, line)| intake.check_with_id(department, &record, line, &context, ids.id(*n)))
                        .collect::<Vec<_>>()
                })
            })
            .buffered(workers);
        let mut pending = Vec::new();
        while let Some(checked) = checked_chunks.next().await {
            let checked = checked
                .unwrap_or_else(|e| vec![Err(Rejection::Unavailable(format!("checking the batch failed: {e}")))]);
            for item in checked {
                pending.push(match item {
                    Ok(Checked { envelope, outgoing }) => {
                        Ok((envelope.event_id, self.producer.enqueue(outgoing).await))
                    }
                    Err(rejection) => Err(rejection),
                });
            }
        }
        let topic = self.prepared(department, record).map(|p| p.spec.topic).unwrap_or_default();
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
        self.metrics.in_flight.dec();
        self.count(department, record, &outcomes);
        self.metrics
            .latency
            .get_or_create(&DepartmentLabels { department: department.to_string() })
            .observe(started.elapsed().as_secs_f64());
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
