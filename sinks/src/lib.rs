//! Sinks: components that consume the exchange's topics.
//!
//! One folder per sink: [`elicense`] (the shared e-licence store, its verify API and its
//! sink), [`dossier`] (per property unit, what every department holds, for parallel review;
//! and the shared view of every catalogued resource), [`case_stats`] (completed cases per
//! division, on time or late) and [`level_bridge`] (county ▸ city ▸ province forwarding
//! between clusters). [`governance`] holds the subscriptions owners grant on request, which
//! widen who reads a catalogued resource. [`use_log`] is the hash-chained log of every read of personal data;
//! [`flush`] the group commit the sinks' lanes share. Each sink is built on `bus`'s
//! at-least-once consumer: a record's effect is durable in sled (or acknowledged by the
//! local cluster, for a bridge) before its offset may be stored.
//!
//! Sinks depend on `bus` and `schemas`, never on adapters.

pub mod case_stats;
pub mod dossier;
pub mod down_table;
pub mod elicense;
pub mod flush;
pub mod governance;
pub mod level_bridge;
pub mod resubscribe;
pub mod sink;
pub mod use_log;
