//! The bus: everything of a govex node that touches Kafka, and the plumbing every component
//! shares.
//!
//! Read in this order: [`config`] (what a node is told), [`division`] (where it is),
//! [`identifiers`] (the check characters of the identifiers records carry),
//! [`envelope`] (the headers every record carries), [`codec`] and [`registry_client`] (the
//! Confluent wire format and the schemas behind it), [`producer`] and [`consumer`] (the
//! no-loss and at-least-once profiles), [`dlq`] (dead letters), [`embedded`] (the in-memory
//! cluster for trial use), [`bus`] (a node's connection tying these together), then
//! [`metrics`], [`ops`], [`server`] (every listener), [`telemetry`] and [`shutdown`].
//!
//! Only this crate talks to rdkafka; the rest of the workspace goes through these types.

pub mod auth;
pub mod bus;
pub mod client_log;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod division;
pub mod dlq;
pub mod embedded;
pub mod envelope;
pub mod identifiers;
pub mod metrics;
pub mod ops;
pub mod problem;
pub mod producer;
pub mod registry_client;
pub mod schema_log;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod zone;

pub use bus::{Bus, BusError};

pub mod record;
pub use codec::{CodecError, Decoder, Encoder};
pub use config::{ConfigError, NodeConfig};
pub use consumer::{AtLeastOnceConsumer, ConsumerSettings, HandlerError};
pub use division::Division;
pub use envelope::{hex, Department, Envelope};
pub use metrics::Metrics;
pub use producer::{Delivered, Outgoing, Producer};
pub use record::Incoming;
pub use registry_client::RegistryClient;

/// Re-exported so that tests and benchmarks elsewhere in the workspace can inject faults and
/// read messages without depending on rdkafka themselves.
pub use rdkafka;
