//! Operators' maintenance commands on a stopped node's stores: checking the use log's hash
//! chain, and rebuilding the e-licence store from its topic.

use anyhow::{bail, Context, Result};
use govex_bus::{Bus, Metrics, NodeConfig, RegistryClient};
use govex_sinks::elicense::{sink, LicenceStore};

/// `govex audit verify`: whether the chain is intact; prints what it found.
pub fn audit_verify(config: &NodeConfig) -> Result<bool> {
    let dir = config.data_dir.join("elicense");
    if !dir.exists() {
        bail!("no e-licence store at {}", dir.display());
    }
    let store = LicenceStore::open(&dir)
        .with_context(|| format!("{} cannot be opened (stop the node first)", dir.display()))?;
    let (intact, broken) = store.use_log().verify_chain()?;
    match broken {
        None => {
            println!("use log: {intact} entries, hash chain intact");
            Ok(true)
        }
        Some(link) => {
            println!("use log BROKEN at entry {}: {}", link.seq, link.reason);
            println!("entries 1 to {intact} are intact");
            Ok(false)
        }
    }
}

/// `govex sink elicense --rebuild`: builds a new store from the topic beside the old one,
/// then swaps them, keeping the old one under a dated name.
pub async fn rebuild_elicense(config: &NodeConfig) -> Result<()> {
    if config.bus.brokers.is_none() {
        bail!("a rebuild reads the topic from the node's Kafka cluster: set bus.brokers (the embedded bus keeps nothing across restarts)");
    }
    let registry_url = config.registry.url.clone().unwrap_or_else(|| format!("http://{}", config.listen.registry));
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let live = config.data_dir.join("elicense");
    let fresh = config.data_dir.join(format!("elicense.rebuild-{stamp}"));
    let kept = config.data_dir.join(format!("elicense.before-rebuild-{stamp}"));
    let bus = Bus::start(&config.bus, &Metrics::new())?;
    let store = LicenceStore::open(&fresh).with_context(|| format!("{} cannot be created", fresh.display()))?;
    let read = sink::rebuild(store.clone(), &bus, RegistryClient::http(&registry_url)).await?;
    if live.exists() {
        let old = LicenceStore::open(&live)
            .with_context(|| format!("{} cannot be opened (stop the node first)", live.display()))?;
        let entries = store.use_log().copy_use_log_from(old.use_log())?;
        println!("kept the use log: {entries} entries");
    }
    store.flush().await?;
    let licences = store.len();
    drop(store);
    if live.exists() {
        std::fs::rename(&live, &kept)
            .with_context(|| format!("{} cannot be moved aside (is the node running?)", live.display()))?;
    }
    std::fs::rename(&fresh, &live)?;
    println!("rebuilt {} from {read} records: {licences} licences", live.display());
    println!("the previous store is kept at {} (its use log included; move it back to restore)", kept.display());
    Ok(())
}
