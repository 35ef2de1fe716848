//! The schemas a govex node speaks, and the schema registry that serves them.
//!
//! Next to this crate, `avro/*.avsc` holds one Avro schema per topic, named after the topic
//! (`gov.case.event.v1.avsc`); `json/<department>/<record>.v1.schema.json` the JSON Schema of
//! each department-facing input; `catalog.toml` the resource catalogue. [`bundled`] embeds
//! them at build time so a bare binary carries them, and [`catalog`] reads the catalogue.
//! [`compat`] is our own implementation of Avro's schema-resolution rules and Confluent's
//! compatibility levels. [`store`] is the registry itself, persisted in sled: subjects,
//! versions, globally stable ids, levels and modes. [`http`] serves the store over the
//! Confluent Schema Registry REST API so existing Kafka tooling works unchanged. [`records`]
//! holds the typed views of records that code needs (the e-licence), each declared once and
//! tested against its schema.
//!
//! [`domain`] holds what every part shares and no part does I/O with: departments, division
//! codes, the identifiers records carry, and the clock and calendar people read.
//!
//! This crate knows nothing of Kafka; `bus` builds on it.

pub mod backup;
pub mod bundled;
pub mod catalog;
pub mod compat;
pub mod diff;
pub mod domain;
pub mod http;
pub mod journal;
pub mod lint;
pub mod records;
pub mod store;

pub use bundled::{bundled_schemas, BundledSchema};
pub use catalog::{Catalog, Flow, LiveCatalog, Resource, Sharing};
pub use compat::{can_read, Compatibility, Incompatibility};
pub use domain::{calendar, identifiers, zone, Department, Division};
pub use journal::{Change, Journal};
pub use store::{Mode, Registry, RegistryError, Setting, SubjectVersion, VersionSelector};
