//! The schemas a govex node speaks, and the schema registry that serves them.
//!
//! `avro/*.avsc` next to this crate holds one Avro schema per topic, named after the
//! topic (`gov.case.event.v1.avsc`); [`bundled`] embeds them at build time so a bare binary
//! carries them. [`store`] is the registry itself, persisted in sled: subjects, versions and
//! globally stable ids, compared by Parsing Canonical Form. [`http`] serves the store over the
//! Confluent Schema Registry REST API so existing Kafka tooling works unchanged.
//!
//! This crate knows nothing of Kafka; `bus` builds on it.

pub mod bundled;
pub mod compat;
pub mod http;
pub mod store;

pub use bundled::{bundled_schemas, BundledSchema};
pub use compat::{can_read, Compatibility, Incompatibility};
pub use store::{Mode, Registry, RegistryError, SubjectVersion, VersionSelector};
