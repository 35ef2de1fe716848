//! Integration tests of the whole node, on the embedded broker. One binary, so the workspace
//! links once.

mod bridge;
mod child;
mod codec;
mod components;
mod config;
mod console;
mod dead_letters;
mod delivery;
mod demo;
mod deploy;
mod dossier;
mod elicense;
mod fault_suite;
mod faults;
mod frontdb;
mod governance;
mod import;
mod intake;
mod layers;
mod leaks;
mod live_schema;
mod new_department;
mod node;
mod openapi;
mod personal_data;
mod process;
mod python_client;
mod registry;
mod registry_topic;
mod steward;
mod stores;
mod support;
mod tls;
mod tokens;
