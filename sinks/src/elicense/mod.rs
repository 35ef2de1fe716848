//! The shared e-licence store: consumes `gov.elicense.licence.v1` into sled, and serves the
//! licences to department systems with a verify API and a hash-chained use log.
//!
//! [`store`] keeps the licences and the log; [`sink`] applies the topic's records (at least
//! once, idempotently: an event id is applied once, an older record never overwrites a
//! newer one, the lifecycle is enforced, the rest goes to the dead-letter topic); [`api`]
//! answers `GET /v1/licences/{id}`, `GET /v1/holders/{holder}/licences`,
//! `POST /v1/licences/{id}/verify` and `GET /v1/licences/{id}/uses`.

pub mod api;
pub mod component;
pub mod sink;
pub mod store;

pub use store::{LicenceStore, Status, StoredLicence};

/// The topic the store is built from.
pub const TOPIC: &str = govex_schemas::records::LICENCE_TOPIC;
