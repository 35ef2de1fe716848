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
    /// On a record a steward replayed from a dead-letter topic: the one component (the
    /// `CONNECTOR` that refused it) that is to apply it; every other reader of the topic
    /// passes it by, having seen the original already.
    pub const REPLAY_FOR: &str = "govex.replay.for";
    /// On a replayed record: the dead letter it came from, `<dead-letter topic>/<partition>/<offset>`.
    pub const REPLAY_OF: &str = "govex.replay.of";
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

/// What a dead letter's headers say about it (see [`header`]); `None` where a header is
/// missing, on a record some other tool wrote to a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Context {
    /// The topic the record was read from.
    pub topic: Option<String>,
    /// Its partition there.
    pub partition: Option<i32>,
    /// Its offset there.
    pub offset: Option<i64>,
    /// The component that refused it.
    pub component: Option<String>,
    /// The stage at which it was refused.
    pub stage: Option<String>,
    /// The error's class.
    pub class: Option<String>,
    /// The error's message.
    pub message: Option<String>,
    /// The dead letter it was replayed from, when it was refused again after a replay.
    pub replay_of: Option<String>,
}

impl Context {
    /// Reads the context headers of a record of a dead-letter topic.
    pub fn of(letter: &Incoming) -> Self {
        // The last of each name: the one [`DeadLetterQueue::send`] appended (it drops any the
        // record came with, but a record some other tool wrote may carry both).
        let text = |name: &str| letter.headers_named(name).last().map(|v| String::from_utf8_lossy(v).into_owned());
        Self {
            topic: text(header::TOPIC),
            partition: text(header::PARTITION).and_then(|p| p.parse().ok()),
            offset: text(header::OFFSET).and_then(|o| o.parse().ok()),
            component: text(header::CONNECTOR),
            stage: text(header::STAGE),
            class: text(header::CLASS),
            message: text(header::MESSAGE),
            replay_of: text(header::REPLAY_OF),
        }
    }
}

/// Why a dead letter cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    /// It does not say which topic it came from or which component refused it.
    #[error("the dead letter has no {0} header: it was not written by govex")]
    NoContext(&'static str),
    /// It names a topic it cannot have come from.
    #[error("the dead letter names topic {0:?}, which is not the topic of its dead-letter topic")]
    WrongTopic(String),
}

/// The record that replays `letter`, a record of a dead-letter topic: the original key, value
/// and headers (its envelope, so the same event id, which every store drops the second time)
/// back on the topic it was read from, without the dead-letter context, marked for the
/// component that refused it alone ([`header::REPLAY_FOR`]).
pub fn replay(letter: &Incoming) -> Result<Outgoing, ReplayError> {
    let context = Context::of(letter);
    let topic = context.topic.ok_or(ReplayError::NoContext(header::TOPIC))?;
    let component = context.component.ok_or(ReplayError::NoContext(header::CONNECTOR))?;
    // A dead letter goes back only where it came from: a record in `a.dlq` claiming `b` is not
    // a way to write to `b`.
    if dlq_topic(&topic) != letter.topic() {
        return Err(ReplayError::WrongTopic(topic));
    }
    let of = format!("{}/{}/{}", letter.topic(), letter.partition(), letter.offset());
    let mut headers = OwnedHeaders::new();
    if let Some(existing) = letter.message().headers() {
        for h in
            existing.iter().filter(|h| !h.key.starts_with("__connect.errors.") && !h.key.starts_with("govex.replay."))
        {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    headers = headers
        .insert(Header { key: header::REPLAY_FOR, value: Some(component.as_bytes()) })
        .insert(Header { key: header::REPLAY_OF, value: Some(of.as_bytes()) });
    Ok(Outgoing {
        topic,
        key: letter.key().unwrap_or_default().to_vec(),
        payload: letter.payload().unwrap_or_default().to_vec(),
        headers,
    })
}

/// Whether a reader whose dead letters are labelled `component` (`None`: one without a
/// dead-letter topic) passes `record` by: a replay meant for another component.
pub fn passes_by(record: &Incoming, component: Option<&str>) -> bool {
    match record.header(header::REPLAY_FOR) {
        None => false,
        Some(target) => component.map(str::as_bytes) != Some(target),
    }
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

    /// The component its dead letters are labelled with.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Sends `original` to its topic's dead-letter topic and waits for the broker.
    pub async fn send(&self, original: &Incoming, letter: &DeadLetter) -> Result<Delivered, ProduceError> {
        let original = original.message();
        let partition = original.partition().to_string();
        let offset = original.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(existing) = original.headers() {
            // The context is this component's to say: a record that arrives carrying context
            // headers (a forged `connector.name`, a stale stage) loses them. A replay refused
            // again keeps which dead letter it was (`REPLAY_OF`) and loses whom it was for.
            let kept = |key: &str| !key.starts_with("__connect.errors.") && key != header::REPLAY_FOR;
            for h in existing.iter().filter(|h| kept(h.key)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(topic: &str, headers: &[(&str, &str)]) -> Incoming {
        let headers: Vec<(String, Vec<u8>)> =
            headers.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect();
        Incoming::new(topic, 0, 7, Some(b"k".to_vec()), Some(b"v".to_vec()), &headers)
    }

    #[test]
    fn a_replay_goes_back_where_it_came_from_for_the_component_that_refused_it_alone() {
        let dead = letter(
            "gov.a.v1.dlq",
            &[
                ("event_id", "e"),
                (header::CONNECTOR, "forged"),
                (header::TOPIC, "gov.a.v1"),
                (header::CONNECTOR, "elicense-store"),
                (header::STAGE, "apply"),
            ],
        );
        // The context is the last of each name: the one the component appended.
        assert_eq!(Context::of(&dead).component.as_deref(), Some("elicense-store"));
        let back = replay(&dead).unwrap();
        assert_eq!(
            (back.topic.as_str(), back.key.as_slice(), back.payload.as_slice()),
            ("gov.a.v1", &b"k"[..], &b"v"[..])
        );
        let back = Incoming::new(&back.topic, 0, 9, Some(back.key), Some(back.payload), &{
            back.headers.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect::<Vec<_>>()
        });
        assert!(back.header(header::CONNECTOR).is_none() && back.header(header::STAGE).is_none(), "no context");
        assert_eq!(back.header("event_id"), Some(&b"e"[..]), "the envelope as it was");
        assert_eq!(back.header(header::REPLAY_OF), Some(&b"gov.a.v1.dlq/0/7"[..]));
        assert!(!passes_by(&back, Some("elicense-store")));
        assert!(passes_by(&back, Some("dossier")) && passes_by(&back, None), "every other reader passes it by");
        assert!(!passes_by(&dead, None), "a record that is no replay is read by all");

        // A dead letter claiming another topic than its own is no way to write to that topic.
        let claims = letter("gov.a.v1.dlq", &[(header::TOPIC, "gov.b.v1"), (header::CONNECTOR, "dossier")]);
        assert_eq!(replay(&claims).unwrap_err(), ReplayError::WrongTopic("gov.b.v1".into()));
        let bare = letter("gov.a.v1.dlq", &[]);
        assert_eq!(replay(&bare).unwrap_err(), ReplayError::NoContext(header::TOPIC));
    }
}
