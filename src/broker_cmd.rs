//! `govex broker`: the embedded bus as a process of its own, for several nodes on one machine.

use anyhow::{Context as _, Result};
use govex_bus::{config::BusConfig, dlq::dlq_topic, embedded::EmbeddedBroker};

/// Runs an in-memory cluster of `brokers` brokers until `shutdown`, with every bundled topic
/// and its dead-letter topic made.
pub async fn run(brokers: i32, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let broker = EmbeddedBroker::start(brokers).context("the embedded broker could not start")?;
    tracing::warn!("the embedded broker keeps messages in memory only and is for trial use");
    // The mock cluster has no CreateTopics API, so the nodes sharing it could not make their
    // topics: make every bundled topic and its dead-letter topic here (the embedded cluster
    // makes the registry's and the governance topics itself).
    let defaults = BusConfig::default();
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), dlq_topic(schema.topic)] {
            broker
                .create_topic(&topic, defaults.partitions, defaults.replication_factor)
                .with_context(|| format!("topic {topic} could not be created"))?;
        }
    }
    println!("embedded broker running; bootstrap servers: {}", broker.bootstrap_servers());
    println!("point nodes at it with GOVEX_BUS__BROKERS={}", broker.bootstrap_servers());
    // The mock cluster holds each fetch for the whole `fetch.wait.max.ms`, records or not:
    // with a real broker's default wait a licence would take 100 ms to reach the store.
    println!("and GOVEX_BUS__FETCH_WAIT_MAX_MS=10: this broker holds every fetch for the whole wait");
    shutdown.await;
    drop(broker);
    Ok(())
}
