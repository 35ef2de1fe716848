//! Sinks: components that consume the exchange's topics.
//!
//! One folder per sink: [`elicense`] (the shared e-licence store, its verify API and use
//! log), [`dossier`] (per property unit, what every department holds, for parallel review)
//! and [`level_bridge`] (county ▸ city ▸ province forwarding between clusters). Each is built on `bus`'s at-least-once consumer and stores in sled only after
//! which it lets its offsets be stored.
//!
//! Sinks depend on `bus` and `schemas`, never on adapters.

pub mod case_stats;
pub mod dossier;
pub mod elicense;
pub mod flush;
pub mod level_bridge;
pub mod use_log;
