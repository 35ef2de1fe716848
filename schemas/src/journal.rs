//! The registry's log: every change to the registry as a record of a compacted Kafka topic,
//! the way Confluent's registry keeps `_schemas`.
//!
//! The topic is the registry's primary data. A registry's sled store is a view of it: a
//! view that lost its volume is rebuilt by reading the topic from the start, and several
//! processes keep views of their own (every intake follows the topic to go live).
//!
//! Each record sets the state of one key, and a tombstone removes it, so the view after
//! reading the topic depends only on the last record of each key. That is exactly what
//! compaction keeps: a view rebuilt from a compacted topic equals one that read every
//! record.
//!
//! | key (JSON)                                         | value (JSON)                       |
//! |----------------------------------------------------|------------------------------------|
//! | `{"kind":"schema","id":7}`                         | `{"schema":"…"}` (never removed)   |
//! | `{"kind":"version","subject":"s","version":2}`     | `{"id":7,"deleted":false}`, or none (deleted for good) |
//! | `{"kind":"compatibility","subject":"s"}` (`""`: global) | `{"compatibilityLevel":"FULL"}`, or none |
//! | `{"kind":"mode","subject":"s"}` (`""`: global)     | `{"mode":"READONLY"}`, or none     |
//!
//! A schema record is never tombstoned, so an id keeps its meaning for as long as the topic
//! lives, even after every version using it is deleted for good.
//!
//! One process writes (the registry component); it makes sure every change it acknowledges
//! is on the topic and in its own view first.

use serde::{Deserialize, Serialize};

/// The registry's topic: one partition, compacted, kept for ever.
pub const TOPIC: &str = "gov.registry.schemas.v1";

/// A record of the registry's topic as bytes: its key, and its value (`None`: a tombstone).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// One change to the registry's state; one record of its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Schema `id` is `text`.
    Schema {
        /// The global id.
        id: u32,
        /// The schema text as first registered.
        text: String,
    },
    /// Version `version` of `subject` is schema `id`, soft-deleted or not.
    Version {
        /// The subject.
        subject: String,
        /// The version, from 1.
        version: u32,
        /// The schema id.
        id: u32,
        /// Whether it is soft-deleted.
        deleted: bool,
    },
    /// Version `version` of `subject` is deleted for good.
    Purge {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The compatibility level of `subject` (`""`: the global one); `None` removes it.
    Compatibility {
        /// The subject, or `""`.
        subject: String,
        /// The level's name, as Confluent spells it.
        level: Option<String>,
    },
    /// The mode of `subject` (`""`: the global one); `None` removes it.
    Mode {
        /// The subject, or `""`.
        subject: String,
        /// The mode's name.
        mode: Option<String>,
    },
}

/// The key of a record. Field order is fixed, so one key is always the same bytes (which
/// compaction compares).
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Key {
    Schema { id: u32 },
    Version { subject: String, version: u32 },
    Compatibility { subject: String },
    Mode { subject: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaValue {
    schema: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionValue {
    id: u32,
    deleted: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CompatibilityValue {
    compatibility_level: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeValue {
    mode: String,
}

/// Why a record of the registry's topic is not a change this code knows.
#[derive(Debug, thiserror::Error)]
#[error("not a registry change: {0}")]
pub struct BadRecord(String);

impl Change {
    /// The record's key and value (`None`: a tombstone).
    pub fn encode(&self) -> Record {
        fn json<T: Serialize>(value: &T) -> Vec<u8> {
            // Plain structs of strings and numbers: serializing them cannot fail.
            serde_json::to_vec(value).expect("plain structs serialize")
        }
        match self {
            Self::Schema { id, text } => {
                (json(&Key::Schema { id: *id }), Some(json(&SchemaValue { schema: text.clone() })))
            }
            Self::Version { subject, version, id, deleted } => (
                json(&Key::Version { subject: subject.clone(), version: *version }),
                Some(json(&VersionValue { id: *id, deleted: *deleted })),
            ),
            Self::Purge { subject, version } => {
                (json(&Key::Version { subject: subject.clone(), version: *version }), None)
            }
            Self::Compatibility { subject, level } => (
                json(&Key::Compatibility { subject: subject.clone() }),
                level.as_ref().map(|l| json(&CompatibilityValue { compatibility_level: l.clone() })),
            ),
            Self::Mode { subject, mode } => (
                json(&Key::Mode { subject: subject.clone() }),
                mode.as_ref().map(|m| json(&ModeValue { mode: m.clone() })),
            ),
        }
    }

    /// The change a record stands for, refusing what the registry never writes: an id or
    /// version outside 1..=2^31-1, a level or mode Confluent does not name, a subject the
    /// registry would refuse.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, BadRecord> {
        let change = Self::parse(key, value)?;
        // Compaction tells keys apart by their bytes: a key spelled otherwise (members in
        // another order, spaces, escapes) would outlive the registry's record of the same key.
        if change.encode().0 != key {
            return Err(BadRecord("the key is not spelled as the registry spells it".into()));
        }
        let number = |what: &str, n: u32| match (1..=crate::store::MAX_ID).contains(&n) {
            true => Ok(()),
            false => Err(BadRecord(format!("{what} {n} is outside 1..={}", crate::store::MAX_ID))),
        };
        let subject = |s: &str| crate::store::check_subject(s).map_err(|e| BadRecord(e.to_string()));
        match &change {
            Self::Schema { id, .. } => number("schema id", *id)?,
            Self::Version { subject: s, version, id, .. } => {
                subject(s)?;
                number("version", *version)?;
                number("schema id", *id)?;
            }
            Self::Purge { subject: s, version } => {
                subject(s)?;
                number("version", *version)?;
            }
            Self::Compatibility { level: Some(level), .. } if level.parse::<crate::Compatibility>().is_err() => {
                return Err(BadRecord(format!("compatibility level {level:?}")))
            }
            Self::Mode { mode: Some(mode), .. } if mode.parse::<crate::Mode>().is_err() => {
                return Err(BadRecord(format!("mode {mode:?}")))
            }
            _ => {}
        }
        Ok(change)
    }

    fn parse(key: &[u8], value: Option<&[u8]>) -> Result<Self, BadRecord> {
        fn parse_optional<T: serde::de::DeserializeOwned>(value: Option<&[u8]>) -> serde_json::Result<Option<T>> {
            value.map(serde_json::from_slice).transpose()
        }
        let bad = |what: &str, e: serde_json::Error| BadRecord(format!("{what}: {e}"));
        let key: Key = serde_json::from_slice(key).map_err(|e| bad("key", e))?;
        Ok(match (key, value) {
            (Key::Schema { id }, Some(value)) => {
                let value: SchemaValue = serde_json::from_slice(value).map_err(|e| bad("schema value", e))?;
                Self::Schema { id, text: value.schema }
            }
            (Key::Schema { id }, None) => {
                return Err(BadRecord(format!("schema {id} removed: a schema id is never removed")))
            }
            (Key::Version { subject, version }, Some(value)) => {
                let value: VersionValue = serde_json::from_slice(value).map_err(|e| bad("version value", e))?;
                Self::Version { subject, version, id: value.id, deleted: value.deleted }
            }
            (Key::Version { subject, version }, None) => Self::Purge { subject, version },
            // A setting's tombstone removes it.
            (Key::Compatibility { subject }, value) => {
                let value: Option<CompatibilityValue> =
                    parse_optional(value).map_err(|e| bad("compatibility value", e))?;
                Self::Compatibility { subject, level: value.map(|c| c.compatibility_level) }
            }
            (Key::Mode { subject }, value) => {
                let value: Option<ModeValue> = parse_optional(value).map_err(|e| bad("mode value", e))?;
                Self::Mode { subject, mode: value.map(|m| m.mode) }
            }
        })
    }
}

/// Where a registry's changes go when it is a view of its topic. Both calls block (the
/// registry's callers run them off the async threads) and are bounded in time.
pub trait Journal: Send + Sync {
    /// Waits until the view has applied every record on the topic now, so that a change is
    /// decided on the newest state.
    fn catch_up(&self) -> Result<(), String>;
    /// Writes `changes` to the topic in order, and returns once the broker acknowledged all
    /// of them and the view applied them. Refused by a process that only follows the topic.
    fn append(&self, changes: &[Change]) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_round_trips_and_keys_are_stable_bytes() {
        let changes = [
            Change::Schema { id: 7, text: r#"{"type":"string"}"#.into() },
            Change::Version { subject: "s-value".into(), version: 2, id: 7, deleted: true },
            Change::Purge { subject: "s-value".into(), version: 2 },
            Change::Compatibility { subject: String::new(), level: Some("FULL".into()) },
            Change::Compatibility { subject: "s".into(), level: None },
            Change::Mode { subject: "s".into(), mode: Some("READONLY".into()) },
            Change::Mode { subject: String::new(), mode: None },
        ];
        for change in &changes {
            let (key, value) = change.encode();
            assert_eq!(&Change::decode(&key, value.as_deref()).unwrap(), change);
        }
        // A soft delete and a purge of one version share a key, so compaction keeps the last.
        assert_eq!(changes[1].encode().0, changes[2].encode().0);
        assert_eq!(changes[1].encode().0, br#"{"kind":"version","subject":"s-value","version":2}"#);
    }

    #[test]
    fn records_this_code_did_not_write_are_refused_with_the_reason() {
        let err = |k: &str, v: Option<&str>| Change::decode(k.as_bytes(), v.map(str::as_bytes)).unwrap_err().0;
        assert!(err(r#"{"kind":"schema","id":1}"#, None).contains("never removed"));
        assert!(err(r#"{"kind":"nope"}"#, None).starts_with("key"));
        assert!(err(r#"{"kind":"version","subject":"s","version":1}"#, Some("{}")).starts_with("version value"));
        assert!(err("not json", None).starts_with("key"));
    }
}
