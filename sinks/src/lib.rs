//! Sinks: components that consume the exchange's topics.
//!
//! One folder per sink (e-licence store, shared views, level bridge) will live here, each
//! built on `bus`'s at-least-once consumer. The foundation issue leaves this crate empty: it
//! exists so the dependency direction (`sinks` → `bus`, never → `adapters`) is fixed from
//! the start.

pub use govex_bus as bus;
