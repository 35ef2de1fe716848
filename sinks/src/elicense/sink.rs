//! Applies `gov.elicense.licence.v1` to the store, at least once and idempotently. An
//! offset is stored only after the sled write is flushed; a redelivery after a crash finds
//! the event id applied and changes nothing.

use std::{collections::BTreeMap, time::Duration};

use apache_avro::Schema;
use govex_bus::{
    consumer::HandlerError,
    dlq::{Refusal as _, Stage},
    Bus, CodecError, Decoder, Incoming, Metrics, RegistryClient,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use super::{
    store::{Applied, Licence, LicenceStore, StoredLicence},
    TOPIC,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
    reason: String,
}

/// The sink's metrics.
#[derive(Clone, Default)]
pub struct SinkMetrics {
    records: Family<OutcomeLabels, Counter>,
    licences: Gauge,
}

impl SinkMetrics {
    /// Registers the sink's metrics.
    pub fn register(metrics: &Metrics) -> Self {
        let sink = Self::default();
        metrics.register(|r| {
            r.register("elicense_records", "Licence records applied, skipped or rejected", sink.records.clone());
            r.register("elicense_store_licences", "Licences in the store", sink.licences.clone());
        });
        sink
    }

    fn count(&self, outcome: &str, reason: &str) {
        self.records.get_or_create(&OutcomeLabels { outcome: outcome.into(), reason: reason.into() }).inc();
    }
}

/// Applies licence records.
pub struct LicenceSink {
    store: LicenceStore,
    decoder: Decoder,
    metrics: SinkMetrics,
    /// The fields of the licence schema this node reads with.
    known: Vec<String>,
}

impl LicenceSink {
    /// A sink writing to `store`, reading values with the bundled licence schema.
    pub fn new(store: LicenceStore, registry: RegistryClient, metrics: SinkMetrics) -> Self {
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).map(|s| s.text).unwrap_or_default();
        let schema =
            Schema::parse_str(text).unwrap_or_else(|e| unreachable!("the bundled licence schema parses (tested): {e}"));
        metrics.licences.set(store.len() as i64);
        let known = match &schema {
            Schema::Record(record) => record.fields.iter().map(|f| f.name.clone()).collect(),
            _ => Vec::new(),
        };
        Self { store, decoder: Decoder::new(registry, &schema), metrics, known }
    }

    /// The fields of a record written with a newer schema that the licence type does not
    /// declare, as JSON (times in UTC): carried along, not dropped.
    fn unknown_fields(
        &self,
        written: &apache_avro::types::Value,
        schema: &Schema,
    ) -> BTreeMap<String, serde_json::Value> {
        let utc = govex_schemas::zone::TimeZone::parse("UTC").unwrap_or_default();
        match crate::dossier::avro_to_json(written, schema, &utc) {
            serde_json::Value::Object(fields) => {
                fields.into_iter().filter(|(name, _)| !self.known.iter().any(|k| k == name)).collect()
            }
            _ => BTreeMap::new(),
        }
    }

    /// Applies one record; `Ok` only once the store has it durably.
    pub async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        self.write(message).await?;
        self.store.flush().await.map_err(|e| HandlerError::Retry(e.to_string()))
    }

    /// Writes one record to the store; durable after the store's next flush.
    pub async fn write(&self, message: &Incoming) -> Result<(), HandlerError> {
        let envelope = message.envelope().map_err(|e| HandlerError::refused(Stage::Envelope, &e))?;
        let decoded = self.decoder.decode_into_carrying::<Licence>(message.payload().unwrap_or_default()).await;
        let (record, written) = match decoded {
            Ok(decoded) => decoded,
            Err(CodecError::Registry(e)) => return Err(HandlerError::Retry(e.to_string())),
            Err(e) => {
                self.metrics.count("rejected", e.class());
                return Err(HandlerError::refused(Stage::Decode, &e));
            }
        };
        let version = govex_schemas::identifiers::licence_id(&record.licence_id).map(|id| id.version).unwrap_or(0);
        let incoming = StoredLicence {
            version,
            licence: record,
            superseded_by: None,
            last_event_id: envelope.event_id,
            // A parsed envelope's id is a UUIDv7 (`Envelope::from_headers` refuses others).
            last_event_ms: envelope.event_time_millis().unwrap_or_default(),
            extra: written.map(|(value, schema)| self.unknown_fields(&value, schema)).unwrap_or_default(),
        };
        let applied = self.store.apply(incoming, envelope.event_id).map_err(|e| HandlerError::Retry(e.to_string()))?;
        match applied {
            Ok(Applied::Inserted) => {
                self.metrics.count("applied", "");
                self.metrics.licences.inc();
            }
            Ok(Applied::Updated) => self.metrics.count("applied", ""),
            Ok(Applied::Duplicate) => self.metrics.count("skipped", "duplicate"),
            Ok(Applied::Stale) => self.metrics.count("skipped", "stale"),
            Err(e) => {
                self.metrics.count("rejected", e.class());
                return Err(HandlerError::refused(Stage::Apply, &e));
            }
        }
        Ok(())
    }
}

/// What a rebuild read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Records read from the topic.
    pub read: u64,
    /// Records the live sink would also refuse (a lifecycle the store does not allow, say):
    /// they are in the dead-letter topic already, and the store ends the same without them.
    pub refused: u64,
    /// Records that could not be read (no envelope, a value that does not decode, a schema
    /// the registry did not give): a store built without them is not the live store.
    pub unreadable: u64,
}

/// How many times a rebuild asks again for a schema the registry did not give.
const REBUILD_ATTEMPTS: u32 = 5;

/// Rebuilds a store from the whole topic: reads every partition from its beginning up to
/// the high watermark it has when the rebuild starts (its gaps included, on a compacted
/// topic), into `store` (normally empty), without a consumer group.
pub async fn rebuild(store: LicenceStore, bus: &Bus, registry: RegistryClient) -> Result<Rebuilt, govex_bus::BusError> {
    let sink = LicenceSink::new(store, registry, SinkMetrics::default());
    let mut records = bus.read_to_end(TOPIC, &Default::default()).await?;
    let mut report = Rebuilt::default();
    while let Some(message) = records.recv().await {
        let message = message?;
        // As the live sink does: a replay meant for another component is passed by.
        if govex_bus::dlq::passes_by(&message, <LicenceSink as crate::sink::Sink>::DEAD_LETTERS) {
            continue;
        }
        report.read += 1;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match sink.handle(&message).await {
                Err(HandlerError::Retry(reason)) if attempt < REBUILD_ATTEMPTS => {
                    tracing::warn!(attempt, %reason, "a licence record could not be applied yet; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(()) => {}
            Err(HandlerError::DeadLetter(letter)) if letter.stage == Stage::Apply => report.refused += 1,
            Err(HandlerError::DeadLetter(letter)) => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    class = letter.error_class,
                    "a licence record could not be read"
                );
                report.unreadable += 1;
            }
            Err(HandlerError::Retry(reason)) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), %reason, "a licence record could not be read");
                report.unreadable += 1;
            }
        }
    }
    Ok(report)
}

impl crate::sink::Sink for LicenceSink {
    const NAME: &'static str = "elicense";
    const LANES: crate::sink::Lanes = crate::sink::Lanes { lanes: 16, lane_capacity: 64 };
    const DEAD_LETTERS: Option<&'static str> = Some("elicense-store");

    fn fresh(&self) -> bool {
        self.store.fresh()
    }

    fn refilled(&self) -> Result<(), sled::Error> {
        self.store.mark_refilled()
    }

    fn topics(&self, _: &govex_schemas::Catalog) -> Vec<String> {
        vec![TOPIC.into()]
    }

    async fn apply(&self, record: &Incoming) -> Result<(), HandlerError> {
        self.write(record).await
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.store.flush().await
    }
}
