//! A consumed record as govex's handlers see it: topic, partition, offset, key, value and the
//! envelope in its headers. Only this crate names rdkafka's types; an `Incoming` owns the
//! consumed message without copying it, and its clones share it (a lane hands a clone to each
//! try of a handler: copying the headers is a C allocation per header).

use rdkafka::message::{Headers, Message, OwnedMessage};

use crate::envelope::{Envelope, EnvelopeError};

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Incoming(std::sync::Arc<OwnedMessage>);

impl Incoming {
    /// A record as it would be consumed (tests and benchmarks hand these to handlers):
    /// `headers` as (name, value) pairs, the envelope's among them.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        headers: &[(String, Vec<u8>)],
    ) -> Self {
        let headers = headers.iter().fold(rdkafka::message::OwnedHeaders::new(), |all, (name, value)| {
            all.insert(rdkafka::message::Header { key: name, value: Some(value) })
        });
        Self::from(OwnedMessage::new(
            payload,
            key,
            topic.to_owned(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            Some(headers),
        ))
    }

    /// The topic it was consumed from.
    pub fn topic(&self) -> &str {
        self.0.topic()
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.0.partition()
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.0.offset()
    }

    /// Its key, if it has one.
    pub fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }

    /// Its value; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        self.0.payload()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value)
    }

    /// The values of every header named `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.headers().into_iter().flat_map(|h| h.iter()).filter(move |h| h.key == name).filter_map(|h| h.value)
    }

    /// When the producer made it (or the broker appended it, for a topic that says so), in
    /// ms since the epoch.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.0.timestamp().to_millis()
    }

    /// The same record, headers and all, to be produced to `topic` (a raw copy, as
    /// MirrorMaker makes one).
    pub fn copy_to(&self, topic: &str) -> crate::Outgoing {
        crate::Outgoing {
            topic: topic.to_owned(),
            key: self.key().unwrap_or_default().to_vec(),
            payload: self.payload().unwrap_or_default().to_vec(),
            headers: self.0.headers().cloned().unwrap_or_default(),
        }
    }

    /// The envelope its headers carry.
    pub fn envelope(&self) -> Result<Envelope, EnvelopeError> {
        Envelope::from_message(self.0.as_ref())
    }

    pub(crate) fn message(&self) -> &OwnedMessage {
        &self.0
    }
}

impl From<OwnedMessage> for Incoming {
    fn from(message: OwnedMessage) -> Self {
        Self(std::sync::Arc::new(message))
    }
}
