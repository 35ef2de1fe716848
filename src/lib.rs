//! The `govex` node: composes the workspace's crates into one running node.
//!
//! [`config`] is a node's configuration (each section owned by the part it configures) and
//! its loader. [`node::start`] brings a node up from it in a fixed order (plan, listeners,
//! bus, [`registry`] view and seeding, catalogue, then each component's builder) and returns a
//! [`node::RunningNode`] that knows its bound addresses; [`node::RunningNode::shutdown`] takes
//! it down in the order the brief prescribes. The `*_cmd` modules, [`backup`], [`maintenance`]
//! and [`demo`] are the other commands. `main.rs` only parses the command line.

pub mod backup;
pub mod broker_cmd;
pub mod config;
pub mod console;
pub mod demo;
pub mod dlq_cmd;
pub mod frontdb;
pub mod id_cmd;
pub mod import_cmd;
pub mod maintenance;
pub mod node;
pub mod registry;
pub mod schema_cmd;
pub mod token_cmd;
