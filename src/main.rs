//! `govex`: parse the command line, set up logging, load config, run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use govex_bus::{config::LogFormat, embedded::EmbeddedBroker, telemetry, NodeConfig};

/// govex: a Kafka data-sharing exchange for government department systems.
///
/// With no arguments, runs a node on the embedded (in-memory) bus with the built-in
/// default configuration.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Node {
        /// TOML config file; without one the built-in default is used. `GOVEX_*` variables
        /// override either (see README).
        #[arg(long, short, env = "GOVEX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a standalone embedded broker and print its bootstrap address, so several govex
    /// processes on one machine can share one bus (in memory, for trial use).
    Broker {
        /// Number of brokers in the embedded cluster.
        #[arg(long, default_value_t = 3)]
        brokers: i32,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Node { config: None }) {
        Command::Node { config } => {
            let config = NodeConfig::load(config.as_deref(), std::env::vars())?;
            let format = if cli.log_json { LogFormat::Json } else { config.log.format };
            telemetry::init(format);
            govex::node::run(config, govex_bus::shutdown::signal()).await
        }
        Command::Broker { brokers } => {
            telemetry::init(if cli.log_json { LogFormat::Json } else { LogFormat::Text });
            let broker = EmbeddedBroker::start(brokers).context("the embedded broker could not start")?;
            tracing::warn!("the embedded broker keeps messages in memory only and is for trial use");
            // The mock cluster has no CreateTopics API, so the nodes sharing it could not make
            // their topics: make every bundled topic and its dead-letter topic here.
            let defaults = govex_bus::config::BusConfig::default();
            for schema in govex_schemas::bundled_schemas() {
                for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
                    broker
                        .create_topic(&topic, defaults.partitions, defaults.replication_factor)
                        .with_context(|| format!("topic {topic} could not be created"))?;
                }
            }
            println!("embedded broker running; bootstrap servers: {}", broker.bootstrap_servers());
            println!("point nodes at it with GOVEX_BUS__BROKERS={}", broker.bootstrap_servers());
            govex_bus::shutdown::signal().await;
            drop(broker);
            Ok(())
        }
    }
}
