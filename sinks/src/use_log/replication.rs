//! The use log outside the node's disk: each entry on [`USE_LOG_TOPIC`] before its read is
//! answered, the chain's head on the compacted [`ANCHOR_TOPIC`], and reading both back.

use serde::{Deserialize, Serialize};

use super::chain::{Anchor, AuditEntry};

/// The topic every use-log entry is published to before its read is answered.
pub const USE_LOG_TOPIC: &str = govex_schemas::records::topics::USE_LOG;
/// The compacted topic of the chains' heads, one per use log.
pub const ANCHOR_TOPIC: &str = govex_schemas::records::topics::ANCHOR;

/// An entry as it travels on [`USE_LOG_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EntryRecord {
    writer: String,
    seq: i64,
    prev_hash: String,
    at_ms: i64,
    caller: String,
    purpose: String,
    action: String,
    subject: String,
    result: String,
    hash: String,
}

impl EntryRecord {
    pub(super) fn new(writer: &str, e: &AuditEntry) -> Self {
        Self {
            writer: writer.to_owned(),
            seq: e.seq as i64,
            prev_hash: e.prev_hash.clone(),
            at_ms: e.at_ms as i64,
            caller: e.caller.clone(),
            purpose: e.purpose.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            result: e.result.clone(),
            hash: e.hash.clone(),
        }
    }

    pub(super) fn entry(self) -> AuditEntry {
        AuditEntry {
            seq: self.seq as u64,
            prev_hash: self.prev_hash,
            at_ms: self.at_ms as u64,
            caller: self.caller,
            purpose: self.purpose,
            action: self.action,
            subject: self.subject,
            result: self.result,
            hash: self.hash,
        }
    }
}

fn schema_text(topic: &str) -> &'static str {
    govex_schemas::bundled_schemas().find(|s| s.topic == topic).map(|s| s.text).unwrap_or_default()
}

/// Where a use log is replicated: the node's producer and the two topics' encoders.
pub struct Replication {
    pub(super) producer: govex_bus::Producer,
    pub(super) writer: String,
    pub(super) origin: govex_schemas::Division,
    pub(super) entries: govex_bus::Encoder,
    pub(super) anchors: govex_bus::Encoder,
    /// One publisher at a time: concurrent readers share one round of acknowledgements.
    pub(super) publishing: tokio::sync::Mutex<()>,
}

impl Replication {
    /// Replication of the use log named `writer` to `bus`, with the topics' schemas
    /// registered in `registry`.
    ///
    /// It has a producer of its own that sends at once (`linger.ms` 0): every entry holds
    /// up a read's answer, where the node's producer lingers to fill batches. Its metrics
    /// are not exported (the node's producer's are).
    pub async fn new(
        bus: &govex_bus::Bus,
        registry: &govex_bus::RegistryClient,
        writer: String,
        origin: govex_schemas::Division,
    ) -> Result<Self, ReplicationError> {
        let config = govex_bus::config::BusConfig { linger_ms: 0, ..bus.config().clone() };
        let producer = govex_bus::Producer::new(&config, bus.bootstrap_servers(), &govex_bus::Metrics::new())
            .map_err(govex_bus::BusError::Client)?;
        let entries =
            govex_bus::Encoder::register(registry, &format!("{USE_LOG_TOPIC}-value"), schema_text(USE_LOG_TOPIC))
                .await?;
        let anchors =
            govex_bus::Encoder::register(registry, &format!("{ANCHOR_TOPIC}-value"), schema_text(ANCHOR_TOPIC)).await?;
        Ok(Self { producer, writer, origin, entries, anchors, publishing: Default::default() })
    }

    pub(super) fn outgoing(
        &self,
        topic: &str,
        key: String,
        payload: Vec<u8>,
        record_type: &str,
    ) -> govex_bus::Outgoing {
        let envelope = govex_bus::Envelope::new(govex_schemas::Department::PLATFORM, self.origin, record_type);
        govex_bus::Outgoing::new(topic, key, payload, &envelope)
    }
}

/// Why the use log cannot be replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The topics' schemas could not be registered.
    #[error("the use-log topics' schemas cannot be registered: {0}")]
    Schema(#[from] govex_bus::CodecError),
    /// The producer could not be made.
    #[error("the use log's producer cannot be created: {0}")]
    Client(#[from] govex_bus::BusError),
}

/// This use log's entries on [`USE_LOG_TOPIC`], in order (each sequence number once), and
/// its latest anchor on [`ANCHOR_TOPIC`], read from the beginning to the end offsets.
pub async fn replicated(
    bus: &govex_bus::Bus,
    registry: &govex_bus::RegistryClient,
    writer: &str,
) -> Result<(Vec<AuditEntry>, Option<Anchor>), String> {
    let parse = |topic: &str| {
        apache_avro::Schema::parse_str(schema_text(topic)).map_err(|e| format!("the bundled schema of {topic}: {e}"))
    };
    let entries_decoder = govex_bus::Decoder::new(registry.clone(), &parse(USE_LOG_TOPIC)?);
    let anchors_decoder = govex_bus::Decoder::new(registry.clone(), &parse(ANCHOR_TOPIC)?);
    let prefix = format!("{writer}\0");
    let mut entries = std::collections::BTreeMap::new();
    let mut records = bus.read_to_end(USE_LOG_TOPIC, &Default::default()).await.map_err(|e| e.to_string())?;
    while let Some(message) = records.recv().await {
        let message = message.map_err(|e| e.to_string())?;
        if !message.key().is_some_and(|k| k.starts_with(prefix.as_bytes())) {
            continue;
        }
        let record: EntryRecord =
            entries_decoder.decode_into(message.payload().unwrap_or_default()).await.map_err(|e| {
                format!("{USE_LOG_TOPIC} partition {} offset {}: {e}", message.partition(), message.offset())
            })?;
        entries.insert(record.seq, record.entry());
    }
    let mut anchor = None;
    let mut records = bus.read_to_end(ANCHOR_TOPIC, &Default::default()).await.map_err(|e| e.to_string())?;
    while let Some(message) = records.recv().await {
        let message = message.map_err(|e| e.to_string())?;
        if message.key() != Some(writer.as_bytes()) {
            continue;
        }
        // One key, one partition: the last read is the latest.
        let record: Anchor = anchors_decoder.decode_into(message.payload().unwrap_or_default()).await.map_err(|e| {
            format!("{ANCHOR_TOPIC} partition {} offset {}: {e}", message.partition(), message.offset())
        })?;
        anchor = Some(record);
    }
    Ok((entries.into_values().collect(), anchor))
}
