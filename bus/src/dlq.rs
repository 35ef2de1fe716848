//! Dead letters: a record a sink cannot apply goes, unchanged, to `<topic>.dlq`, with headers
//! that say where it came from and why, named as Kafka Connect names them so the same
//! tooling reads both.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::record::Incoming;

use crate::{
    metrics::Metrics,
    producer::{Delivered, Outgoing, ProduceError, Producer},
};

/// Kafka Connect's dead-letter header names (`errors.deadletterqueue.context.headers.enable`),
/// so that the same tooling reads both: where the record was read (topic, partition, offset),
/// which component gave up on it (connector) and at which stage, and the error's class and
/// message.
#[allow(missing_docs)] // each is named for what it holds, as Kafka Connect names it
pub mod header {
    pub const TOPIC: &str = "__connect.errors.topic";
    pub const PARTITION: &str = "__connect.errors.partition";
    pub const OFFSET: &str = "__connect.errors.offset";
    pub const CONNECTOR: &str = "__connect.errors.connector.name";
    pub const STAGE: &str = "__connect.errors.stage";
    pub const CLASS: &str = "__connect.errors.exception.class.name";
    pub const MESSAGE: &str = "__connect.errors.exception.message";
}

/// The stage at which a sink gave up on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Its headers are not a govex envelope.
    Envelope,
    /// Its value does not decode.
    Decode,
    /// Its schema cannot be used here (a bridge: unknown to the neighbour, refused locally).
    Schema,
    /// It came from where it may not (a bridge: a child's record from outside the child).
    Origin,
    /// It decodes, but the store refuses it (a licence lifecycle it does not allow).
    Apply,
}

impl Stage {
    /// The name in the `__connect.errors.stage` header and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Envelope => "envelope",
            Stage::Decode => "decode",
            Stage::Schema => "schema",
            Stage::Origin => "origin",
            Stage::Apply => "apply",
        }
    }
}

/// An error a record can be dead-lettered for: its message (which must not contain a
/// personal identifier in full) and a short, stable class naming its kind.
pub trait Refusal: std::fmt::Display {
    /// The class: a variant's name in snake case, such as `unknown_schema_id`.
    fn class(&self) -> &'static str;
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The stage that failed.
    pub stage: Stage,
    /// The class of the error ([`Refusal::class`]).
    pub error_class: &'static str,
    /// The error's message. Must not contain a personal identifier in full.
    pub message: String,
}

impl DeadLetter {
    /// The dead letter of a record refused at `stage` for `error`.
    pub fn new(stage: Stage, error: &impl Refusal) -> Self {
        Self { stage, error_class: error.class(), message: error.to_string() }
    }
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    component: String,
    topic: String,
    stage: String,
}

/// Writes dead letters for one component.
#[derive(Clone)]
pub struct DeadLetterQueue {
    producer: Producer,
    component: String,
    dead_letters: Family<DeadLetterLabels, Counter>,
}

impl DeadLetterQueue {
    /// A dead-letter writer for `component` (named in every dead letter's headers).
    pub fn new(producer: Producer, component: impl Into<String>, metrics: &Metrics) -> Self {
        let dead_letters = metrics.shared("bus_dead_letters", "Records sent to a dead-letter topic");
        Self { producer, component: component.into(), dead_letters }
    }

    /// Sends `original` to its topic's dead-letter topic and waits for the broker.
    pub async fn send(&self, original: &Incoming, letter: &DeadLetter) -> Result<Delivered, ProduceError> {
        let original = original.message();
        let partition = original.partition().to_string();
        let offset = original.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(existing) = original.headers() {
            for h in existing.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let context: [(&str, &str); 7] = [
            (header::TOPIC, original.topic()),
            (header::PARTITION, &partition),
            (header::OFFSET, &offset),
            (header::CONNECTOR, &self.component),
            (header::STAGE, letter.stage.as_str()),
            (header::CLASS, letter.error_class),
            (header::MESSAGE, &letter.message),
        ];
        for (key, value) in context {
            headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let record = Outgoing {
            topic: dlq_topic(original.topic()),
            key: original.key().unwrap_or_default().to_vec(),
            payload: original.payload().unwrap_or_default().to_vec(),
            headers,
        };
        let delivered = self.producer.publish(record).await?;
        self.dead_letters
            .get_or_create(&DeadLetterLabels {
                component: self.component.clone(),
                topic: original.topic().to_owned(),
                stage: letter.stage.as_str().to_owned(),
            })
            .inc();
        tracing::warn!(
            topic = original.topic(),
            partition = original.partition(),
            offset = original.offset(),
            stage = letter.stage.as_str(),
            class = letter.error_class,
            "record sent to the dead-letter topic"
        );
        Ok(delivered)
    }
}
