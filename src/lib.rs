//! The `govex` node: composes the workspace's crates into one running node.
//!
//! [`node::start`] brings a node up from a [`NodeConfig`](crate::config::NodeConfig) in a fixed
//! order (data directory, listeners, registry, bus, schemas and topics, servers) and returns a
//! [`node::RunningNode`] that knows its bound addresses; [`node::RunningNode::shutdown`]
//! takes it down in the order the brief prescribes. `main.rs` only parses the command line.

pub mod config;
pub mod demo;
pub mod id_cmd;
pub mod import_cmd;
pub mod maintenance;
pub mod node;
pub mod registry;
pub mod schema_cmd;
