//! The HTTP parts every govex API shares, in one small place: the intake, the e-licence and
//! dossier APIs, the schema registry and the ops port all go through these.
//!
//! Read in this order: [`config`] (listeners, TLS, tokens, read limits), [`server`] (every
//! listener: bounded connections, header and body time, TLS), [`problem`] (RFC 9457 problem
//! details, the one error shape), [`auth`] (bearer tokens, roles and the per-token read
//! limit), [`ops`] (`/metrics`, `/healthz`, `/readyz`), then [`context`]: what a component
//! joins a node through, adding its routes and tasks.
//!
//! Nothing here knows a department's records; the APIs that serve them live with their
//! components (`adapters/src/intake/`, `sinks/src/elicense/` ...).

pub mod auth;
pub mod config;
pub mod context;
pub mod ops;
pub mod problem;
pub mod server;

pub use auth::{Caller, Role, Tokens};
pub use context::{failed, Context, StartError};
pub use problem::problem;
