//! Department adapters: where department systems hand records to the exchange.
//!
//! A department record type is data: its annotated Avro schema under `schemas/avro/`,
//! registered in the schema registry. [`contract`] compiles a registered version into what
//! the intake needs: the input contract (a JSON Schema derived from the Avro schema), the
//! [`plan`] that maps JSON to Avro by walking the schema, with the named checks it lists, and
//! the cross-field rules it names. A department folder ([`land_registry`], [`tax`],
//! [`provident_fund`], [`platform`]) holds only the rules of its own records that a schema
//! cannot say; a department without such rules (housing, and any added as data) has no
//! folder. Around them: [`identifiers`] (check characters of citizen ids, credit codes,
//! licence ids; division codes), [`validation`] (JSON Schema violations with pointers and
//! rules), [`common`] (money, instants), [`intake`] (the pipeline every input goes through,
//! following the registry, and its HTTP server), [`import`] (NDJSON and CSV files,
//! resumable) and [`frontdb`] (front-end database tables polled into the intake).
//!
//! Adapters depend on `bus` and `schemas`, never on sinks or on each other.

pub mod common;
pub mod contract;
pub mod frontdb;
/// The identifier rules live in `bus`, where sinks reach them too.
pub use govex_schemas::identifiers;
pub mod import;
pub mod intake;
pub mod land_registry;
pub mod plan;
pub mod platform;
pub mod provident_fund;
pub mod samples;
pub mod tax;
pub mod validation;
