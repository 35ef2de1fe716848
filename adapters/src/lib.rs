//! Department adapters: where department systems hand records to the exchange.
//!
//! One folder per department (land registry, housing, tax, provident fund) will hold its
//! input schema binding, domain checks, mapping to Avro, topic and key; beside them the HTTP
//! intake server and the batch file importer. The foundation issue leaves this crate empty:
//! it exists so the dependency direction (`adapters` → `bus`, never → `sinks`) is fixed
//! from the start.

pub use govex_bus as bus;
