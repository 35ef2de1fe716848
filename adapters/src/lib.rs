//! Department adapters: where department systems hand records to the exchange.
//!
//! One folder per department ([`land_registry`], [`housing`], [`tax`], [`provident_fund`])
//! holds its input binding, domain checks, mapping to the Avro record, topic and key; each
//! exposes `records()`, a list of [`record::RecordSpec`]. Around them: [`identifiers`] (check
//! characters of citizen ids, credit codes, licence ids; division codes), [`validation`]
//! (JSON Schema violations with pointers and rules), [`common`] (money, instants, parties),
//! [`intake`] (the pipeline every input goes through, and its HTTP server) and [`import`]
//! (NDJSON and CSV files, resumable).
//!
//! Adapters depend on `bus` and `schemas`, never on sinks or on each other.

pub mod common;
pub mod housing;
/// The identifier rules live in `bus`, where sinks reach them too.
pub use govex_bus::identifiers;
pub mod import;
pub mod intake;
pub mod land_registry;
pub mod plan;
pub mod platform;
pub mod provident_fund;
pub mod record;
pub mod samples;
pub mod tax;
pub mod validation;

use record::RecordSpec;

/// Every record type of every department. A new department is one folder and one line here.
pub fn all_records() -> Vec<RecordSpec> {
    [land_registry::records(), housing::records(), tax::records(), provident_fund::records(), platform::records()]
        .concat()
}
