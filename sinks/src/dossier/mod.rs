//! The parallel-review dossier: per property unit number, the latest contract filing
//! (housing), deed-tax payment (tax) and registration (land registry), so that the land
//! registry clerk sees what the other departments already hold (brief §6).
//!
//! [`DossierStore`] keeps, per unit and kind, the newest record by event time, as JSON with
//! decimals and times spelled out, and the same for every record of every catalogued
//! resource by its key (the shared view); [`DossierSink`] fills both, at least once and
//! idempotently, following the catalogue's topics; [`api`] serves `GET /v1/dossiers/{unit}`
//! and `GET /v1/resources/{id}/records/{key}`, honouring the catalogue's sharing classes and
//! masking personal fields.

pub mod api;
pub mod component;

use govex_schemas::zone::TimeZone;
use std::{path::Path, sync::Arc};

use apache_avro::{schema::RecordSchema, types::Value as Avro, Schema};
use govex_bus::{consumer::HandlerError, dlq::Stage, CodecError, Decoder, Incoming, RegistryClient};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
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

/// The dossier store: key `unit \0 kind`, value [`Part`] (JSON); and the shared view of every
/// catalogued resource: key `topic \0 record key`, value [`Part`], the newest by event time.
#[derive(Clone)]
pub struct DossierStore {
    parts: sled::Tree,
    records: sled::Tree,
    group_flush: Arc<crate::flush::GroupFlush>,
    /// To be refilled from the start of its topics (see [`crate::sink::Sink::fresh`]).
    fresh: bool,
    db: sled::Db,
}

impl DossierStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        let (db, fresh) = govex_schemas::store::open_sled_refillable(dir)?;
        Ok(Self {
            parts: db.open_tree("parts")?,
            records: db.open_tree("records")?,
            fresh,
            group_flush: Arc::new(crate::flush::GroupFlush::new(db.clone())),
            db,
        })
    }

    /// Whether the store is to be refilled from the start of its topics.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Its sled database (for backups).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Marks the store refilled (its group rewound).
    pub fn mark_refilled(&self) -> Result<(), sled::Error> {
        govex_schemas::store::mark_refilled(&self.db)
    }

    /// Keeps `part` as the `kind` of `unit` unless a newer one is there; whether it changed
    /// anything. Durable after the next [`flush`](Self::flush).
    pub fn apply(&self, unit: &str, kind: &str, part: &Part) -> Result<bool, sled::Error> {
        newest_wins(&self.parts, format!("{unit}\0{kind}"), part)
    }

    /// Keeps `part` as the record `key` of `topic` unless a newer one is there; whether it
    /// changed anything. Durable after the next [`flush`](Self::flush).
    pub fn apply_record(&self, topic: &str, key: &str, part: &Part) -> Result<bool, sled::Error> {
        newest_wins(&self.records, format!("{topic}\0{key}"), part)
    }

    /// Makes every write so far durable (concurrent callers share one flush).
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.group_flush.flush().await
    }

    /// The record `key` of `topic`, if one came.
    pub fn record(&self, topic: &str, key: &str) -> Result<Option<Part>, sled::Error> {
        Ok(self.records.get(format!("{topic}\0{key}"))?.and_then(|b| serde_json::from_slice(&b).ok()))
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

/// Writes `part` under `key` unless the same event or a newer one is there.
fn newest_wins(tree: &sled::Tree, key: String, part: &Part) -> Result<bool, sled::Error> {
    if let Some(existing) = tree.get(&key)?.and_then(|b| serde_json::from_slice::<Part>(&b).ok()) {
        if existing.event_id == part.event_id || existing.event_ms > part.event_ms {
            return Ok(false);
        }
    }
    let bytes =
        serde_json::to_vec(part).map_err(|e| sled::Error::Unsupported(format!("a part does not serialize: {e}")))?;
    tree.insert(key, bytes)?;
    Ok(true)
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
        (Avro::Date(days), _) => json!(govex_schemas::zone::epoch_date(*days).map(|d| d.to_string())),
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

/// Fills the dossier store from the three topics, and the shared view from every topic the
/// catalogue lists.
pub struct DossierSink {
    store: DossierStore,
    decoders: Decoders,
    /// The zone the records' times are shown in.
    zone: TimeZone,
}

/// The decoders of the catalogued topics, made as their first records arrive.
pub(crate) struct Decoders {
    registry: RegistryClient,
    decoders: std::sync::Mutex<std::collections::HashMap<String, Arc<Decoder>>>,
}

impl Decoders {
    pub(crate) fn new(registry: RegistryClient) -> Self {
        Self { registry, decoders: Default::default() }
    }

    /// The decoder of `topic`: records are kept as written, so the reader schema only
    /// decides which versions resolve (the bundled one, or the latest registered for a topic
    /// a steward added).
    pub(crate) async fn of(&self, topic: &str) -> Result<Arc<Decoder>, HandlerError> {
        if let Some(decoder) = self.decoders.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(topic) {
            return Ok(Arc::clone(decoder));
        }
        let schema = match govex_schemas::bundled_schemas().find(|s| s.topic == topic) {
            Some(bundled) => Arc::new(
                Schema::parse_str(bundled.text).unwrap_or_else(|e| unreachable!("bundled schemas parse (tested): {e}")),
            ),
            None => {
                self.registry.latest(&format!("{topic}-value")).await.map_err(|e| HandlerError::Retry(e.to_string()))?.1
            }
        };
        let decoder = Arc::new(Decoder::new(self.registry.clone(), &schema));
        self.decoders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.to_owned(), Arc::clone(&decoder));
        Ok(decoder)
    }

    /// A record of `message` as JSON (times in `zone`), or why not: a schema the registry
    /// did not give yet is retried, a value that does not decode is refused.
    pub(crate) async fn record(&self, message: &Incoming, zone: &TimeZone) -> Result<Value, HandlerError> {
        let decoder = self.of(message.topic()).await?;
        match decoder.decode_as_written(message.payload().unwrap_or_default()).await {
            Ok((value, written_with)) => Ok(avro_to_json(&value, written_with, zone)),
            Err(CodecError::Registry(e)) => Err(HandlerError::Retry(e.to_string())),
            Err(e) => Err(HandlerError::refused(Stage::Decode, &e)),
        }
    }
}

impl DossierSink {
    /// A sink writing to `store`, showing times in `zone`.
    pub fn new(store: DossierStore, registry: RegistryClient, zone: TimeZone) -> Self {
        Self { store, decoders: Decoders::new(registry), zone }
    }

    /// Applies one record; durable after the store's next flush.
    pub async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let envelope = message.envelope().map_err(|e| HandlerError::refused(Stage::Envelope, &e))?;
        // As written: a field a steward added in a newer version than this node's (a remark,
        // say) is carried to the clerk, not dropped.
        let record = self.decoders.record(message, &self.zone).await?;
        let part = Part {
            topic: message.topic().to_owned(),
            event_id: envelope.event_id,
            // A parsed envelope's id is a UUIDv7 (`Envelope::from_headers` refuses others).
            event_ms: envelope.event_time_millis().unwrap_or_default(),
            source_department: envelope.source_department.to_string(),
            record,
        };
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        if !key.is_empty() {
            self.store.apply_record(message.topic(), &key, &part).map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        if let Some((_, kind)) = PARTS.iter().find(|(topic, _)| *topic == message.topic()) {
            let Some(unit) = part.record.get("property_unit_number").and_then(Value::as_str).map(str::to_owned) else {
                return Err(HandlerError::refused(Stage::Apply, &NoUnit));
            };
            self.store.apply(&unit, kind, &part).map_err(|e| HandlerError::Retry(e.to_string()))?;
        }
        Ok(())
    }
}

/// A record of a dossier's part without the property unit it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("the record has no property_unit_number")]
struct NoUnit;

impl govex_bus::dlq::Refusal for NoUnit {
    fn class(&self) -> &'static str {
        "no_unit"
    }
}

/// Topics (by prefix) with APIs of their own and rules of their own, left out of the shared
/// view: licences (surface keys, verification) and the audit topics.
pub const OWN_API_TOPICS: [&str; 2] = [govex_schemas::records::topics::LICENCE, "gov.audit."];

/// Whether `topic` is one of [`OWN_API_TOPICS`]: not in the shared view, and no subscription
/// or objection is about it.
pub fn has_own_api(topic: &str) -> bool {
    OWN_API_TOPICS.iter().any(|own| topic.starts_with(own))
}

/// The topics the sink reads: the dossier's three and every other topic the catalogue lists.
fn topics_of(catalog: &govex_schemas::Catalog) -> Vec<String> {
    let mut topics: Vec<String> = PARTS.iter().map(|(t, _)| (*t).to_owned()).collect();
    for resource in &catalog.resources {
        if !has_own_api(&resource.topic) && !topics.contains(&resource.topic) {
            topics.push(resource.topic.clone());
        }
    }
    topics.sort();
    topics
}

impl crate::sink::Sink for DossierSink {
    const NAME: &'static str = "dossier";
    const LANES: crate::sink::Lanes = crate::sink::Lanes { lanes: 16, lane_capacity: 256 };
    const DEAD_LETTERS: Option<&'static str> = Some("dossier");

    fn fresh(&self) -> bool {
        self.store.fresh()
    }

    fn refilled(&self) -> Result<(), sled::Error> {
        self.store.mark_refilled()
    }

    /// The dossier's own topics and every catalogued resource's: a steward's new resource is
    /// subscribed to within seconds.
    fn topics(&self, catalog: &govex_schemas::Catalog) -> Vec<String> {
        topics_of(catalog)
    }

    async fn apply(&self, record: &Incoming) -> Result<(), HandlerError> {
        self.handle(record).await
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.store.flush().await
    }
}
