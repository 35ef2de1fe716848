//! The parallel-review dossier: per property unit number, the latest contract filing
//! (housing), deed-tax payment (tax) and registration (land registry), so that the land
//! registry clerk sees what the other departments already hold (brief §6).
//!
//! [`DossierStore`] keeps, per unit and kind, the newest record by event time, as JSON with
//! decimals and times spelled out; [`DossierSink`] fills it from the three topics, at least
//! once and idempotently; [`api`] serves `GET /v1/dossiers/{unit}` honouring the catalogue's
//! sharing classes and masking personal fields.

pub mod api;

use govex_bus::zone::TimeZone;
use std::{path::Path, sync::Arc};

use apache_avro::{schema::RecordSchema, types::Value as Avro, Schema};
use govex_bus::{
    consumer::{ConsumerSettings, HandlerError, RunStats},
    dlq::{DeadLetter, DeadLetterQueue},
    envelope::Envelope,
    record::{Message, OwnedMessage},
    Bus, CodecError, Decoder, Metrics, RegistryClient,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The topics a dossier is made of, and the kind each one fills.
pub const PARTS: [(&str, &str); 3] = [
    (govex_schemas::records::topics::CONTRACT_FILING, "contract_filing"),
    (govex_schemas::records::topics::DEED_TAX_PAYMENT, "deed_tax_payment"),
    (govex_schemas::records::topics::REGISTRATION, "registration"),
];

/// One part of a dossier as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The topic it came from.
    pub topic: String,
    /// The event that carried it.
    pub event_id: Uuid,
    /// Its event time (ms since the epoch).
    pub event_ms: u64,
    /// The department that sent it.
    pub source_department: String,
    /// The record, as JSON.
    pub record: Value,
}

/// The dossier store: key `unit \0 kind`, value [`Part`] (JSON).
#[derive(Clone)]
pub struct DossierStore {
    parts: sled::Tree,
    group_flush: Arc<crate::flush::GroupFlush>,
}

impl DossierStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        let db = govex_schemas::store::open_sled(dir)?;
        Ok(Self { parts: db.open_tree("parts")?, group_flush: Arc::new(crate::flush::GroupFlush::new(db)) })
    }

    /// Keeps `part` as the `kind` of `unit` unless a newer one is there; whether it changed
    /// anything.
    pub async fn apply(&self, unit: &str, kind: &str, part: &Part) -> Result<bool, sled::Error> {
        let key = format!("{unit}\0{kind}");
        if let Some(existing) = self.parts.get(&key)?.and_then(|b| serde_json::from_slice::<Part>(&b).ok()) {
            if existing.event_id == part.event_id || existing.event_ms > part.event_ms {
                return Ok(false);
            }
        }
        self.parts.insert(key, serde_json::to_vec(part).unwrap_or_default())?;
        self.group_flush.flush().await?;
        Ok(true)
    }

    /// Every part held for `unit`, by kind.
    pub fn dossier(&self, unit: &str) -> Result<Vec<(String, Part)>, sled::Error> {
        let prefix = format!("{unit}\0");
        let mut out = Vec::new();
        for entry in self.parts.scan_prefix(prefix.as_bytes()) {
            let (key, value) = entry?;
            if let Ok(part) = serde_json::from_slice(&value) {
                out.push((String::from_utf8_lossy(&key[prefix.len()..]).into_owned(), part));
            }
        }
        Ok(out)
    }
}

/// An Avro value as JSON, with decimals as exact strings, instants as RFC 3339 and dates
/// as `YYYY-MM-DD`, so that people and department systems read them as written.
pub fn avro_to_json(value: &Avro, schema: &Schema, zone: &TimeZone) -> Value {
    match (value, schema) {
        (Avro::Union(_, inner), Schema::Union(union)) => {
            let branch = union.variants().iter().find(|v| !matches!(v, Schema::Null)).unwrap_or(schema);
            match inner.as_ref() {
                Avro::Null => Value::Null,
                other => avro_to_json(other, branch, zone),
            }
        }
        (Avro::Record(fields), Schema::Record(RecordSchema { fields: schema_fields, .. })) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| {
                    let field_schema =
                        schema_fields.iter().find(|f| &f.name == name).map(|f| &f.schema).unwrap_or(&Schema::Null);
                    (name.clone(), avro_to_json(v, field_schema, zone))
                })
                .collect(),
        ),
        (Avro::Array(items), Schema::Array(array)) => {
            Value::Array(items.iter().map(|i| avro_to_json(i, &array.items, zone)).collect())
        }
        (Avro::Map(entries), Schema::Map(map)) => {
            Value::Object(entries.iter().map(|(k, v)| (k.clone(), avro_to_json(v, &map.types, zone))).collect())
        }
        (Avro::Decimal(decimal), Schema::Decimal(d)) => {
            let bytes = Vec::<u8>::try_from(decimal).unwrap_or_default();
            let mut wide = [if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 16];
            let n = bytes.len().min(16);
            wide[16 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
            let unscaled = i128::from_be_bytes(wide);
            let scale = 10i128.pow(d.scale as u32);
            let sign = if unscaled < 0 { "-" } else { "" };
            if d.scale == 0 {
                json!(format!("{unscaled}"))
            } else {
                json!(format!(
                    "{sign}{}.{:0width$}",
                    (unscaled / scale).abs(),
                    (unscaled % scale).abs(),
                    width = d.scale
                ))
            }
        }
        (Avro::TimestampMillis(ms), _) => {
            json!(zone.rfc3339(*ms))
        }
        (Avro::Date(days), _) => json!(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(*days))))
            .map(|d| d.to_string())),
        (Avro::Enum(_, symbol), _) => json!(symbol),
        (Avro::String(s), _) => json!(s),
        (Avro::Int(n), _) => json!(n),
        (Avro::Long(n), _) => json!(n),
        (Avro::Boolean(b), _) => json!(b),
        (Avro::Double(x), _) => json!(x),
        (Avro::Float(x), _) => json!(x),
        (Avro::Null, _) => Value::Null,
        (other, _) => json!(format!("{other:?}")),
    }
}

/// Fills the dossier store from the three topics.
pub struct DossierSink {
    store: DossierStore,
    decoders: Vec<(&'static str, &'static str, Decoder)>,
    /// The zone the records' times are shown in.
    zone: TimeZone,
}

impl DossierSink {
    /// A sink writing to `store`, showing times in `zone`.
    pub fn new(store: DossierStore, registry: RegistryClient, zone: TimeZone) -> Self {
        let decoders = PARTS
            .iter()
            .map(|(topic, kind)| {
                let text =
                    govex_schemas::bundled_schemas().find(|s| s.topic == *topic).map(|s| s.text).unwrap_or_default();
                let schema =
                    Schema::parse_str(text).unwrap_or_else(|e| unreachable!("bundled schemas parse (tested): {e}"));
                (*topic, *kind, Decoder::new(registry.clone(), &schema))
            })
            .collect();
        Self { store, decoders, zone }
    }

    /// Applies one record; `Ok` once it is durable (or was already there).
    pub async fn handle(&self, message: &OwnedMessage) -> Result<(), HandlerError> {
        let dead = |stage: &str, class: &str, message: String| {
            HandlerError::DeadLetter(DeadLetter { stage: stage.into(), error_class: class.into(), message })
        };
        let Some((_, kind, decoder)) = self.decoders.iter().find(|(topic, ..)| *topic == message.topic()) else {
            return Err(dead("route", "unknown_topic", format!("the dossier does not read {}", message.topic())));
        };
        let envelope = Envelope::from_message(message).map_err(|e| dead("envelope", "envelope", e.to_string()))?;
        // As written: a field a steward added in a newer version than this node's (a remark,
        // say) is carried to the clerk, not dropped.
        let (value, written_with) = match decoder.decode_as_written(message.payload().unwrap_or_default()).await {
            Ok(decoded) => decoded,
            Err(CodecError::Registry(e)) => return Err(HandlerError::Retry(e.to_string())),
            Err(e) => return Err(dead("decode", e.class(), e.to_string())),
        };
        let record = avro_to_json(&value, written_with, &self.zone);
        let Some(unit) = record.get("property_unit_number").and_then(Value::as_str).map(str::to_owned) else {
            return Err(dead("apply", "no_unit", "the record has no property_unit_number".into()));
        };
        let part = Part {
            topic: message.topic().to_owned(),
            event_id: envelope.event_id,
            event_ms: envelope.event_time_millis().unwrap_or(0),
            source_department: envelope.source_department.to_string(),
            record,
        };
        self.store.apply(&unit, kind, &part).await.map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(())
    }
}

/// Consumes the dossier's topics until `shutdown`.
pub async fn run(
    sink: Arc<DossierSink>,
    bus: &Bus,
    group_id: String,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<RunStats, govex_bus::BusError> {
    let consumer = bus.consumer(ConsumerSettings {
        group_id,
        topics: PARTS.iter().map(|(t, _)| (*t).to_owned()).collect(),
        lanes: 16,
        lane_capacity: 256,
    })?;
    let dlq = DeadLetterQueue::new(bus.producer().clone(), "dossier", metrics);
    Ok(consumer
        .run(
            move |message| {
                let sink = sink.clone();
                async move { sink.handle(&message).await }
            },
            Some(dlq),
            shutdown,
        )
        .await)
}
