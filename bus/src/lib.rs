//! The bus: everything of a govex node that touches Kafka, and nothing else.
//!
//! Read in this order: [`config`] (the `[bus]` section and the one place it becomes
//! librdkafka properties), [`envelope`] (the headers every record carries), [`record`] (the
//! record a handler receives), [`codec`] and [`registry_client`] (the Confluent wire format and
//! the schemas behind it), [`producer`] and [`consumer`] (the no-loss and at-least-once
//! profiles), [`dlq`] (dead letters), [`embedded`] (the in-memory cluster for trial use),
//! [`schema_log`] (the registry's topic), [`bus`] (a node's connection tying these together),
//! then [`metrics`], [`telemetry`] and [`shutdown`].
//!
//! Only this crate talks to rdkafka; the rest of the workspace goes through these types
//! (`tests/it/layers.rs` checks it). The domain it carries (departments, divisions,
//! identifiers) sits below it in `govex_schemas::domain`; the HTTP parts every API shares sit
//! beside it in `govex_http`.

pub mod bus;
pub mod client_log;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod embedded;
pub mod envelope;
pub mod frontdb;
pub mod metrics;
pub mod producer;
pub mod record;
pub mod registry_client;
pub mod schema_log;
pub mod shutdown;
pub mod telemetry;

pub use bus::{Bus, BusError};

pub use codec::{CodecError, Decoder, Encoder};
pub use config::{BusConfig, ConfigError};
pub use consumer::{AtLeastOnceConsumer, ConsumerSettings, HandlerError};
pub use envelope::{hex, Envelope};
pub use metrics::Metrics;
pub use producer::{Delivered, Outgoing, Producer};
pub use record::Incoming;
pub use registry_client::RegistryClient;

/// Re-exported so that tests and benchmarks elsewhere in the workspace can inject faults and
/// read messages without depending on rdkafka themselves.
pub use rdkafka;
