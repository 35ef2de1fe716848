//! Operators' maintenance commands on a stopped node's stores: checking the use log's hash
//! chain, and rebuilding the e-licence store from its topic.

use crate::config::NodeConfig;
use anyhow::{bail, Context, Result};
use govex_bus::{Bus, Metrics, RegistryClient};
use govex_sinks::{
    elicense::{sink, LicenceStore},
    use_log,
};

/// Whether opening a sled database failed because another process holds it.
fn is_locked(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock"))
}

/// The registry a maintenance command reads schemas from: `registry.url`, else the node's
/// own store when the node is stopped, else (the node running, holding its store) the
/// registry it serves on `listen.registry`.
fn maintenance_registry(config: &NodeConfig) -> Result<RegistryClient> {
    if let Some(url) = &config.registry.url {
        return crate::registry::client(url, config);
    }
    let dir = config.data_dir.join("registry");
    if !dir.join("db").exists() {
        bail!(
            "the node's registry store {} does not exist: set registry.url to the registry that holds the node's schemas",
            dir.display()
        );
    }
    match govex_schemas::Registry::open(&dir) {
        Ok(store) => Ok(RegistryClient::local(store)),
        Err(_) => Ok(RegistryClient::http(&format!("http://{}", config.listen.registry))),
    }
}

/// `govex audit verify`: whether the use log is intact; prints what it found.
///
/// It walks the chain on disk; with a Kafka cluster (`bus.brokers`) it also compares the
/// chain with its replicated copy on `gov.audit.use-log.v1` and with its latest anchor on
/// `gov.audit.anchor.v1`, which finds a log rolled back (an older copy of the volume
/// restored), truncated or rewritten with fresh hashes. Against a running node, whose store
/// it cannot open, it checks the replicated copy and the anchor, read-only.
pub async fn audit_verify(config: &NodeConfig) -> Result<bool> {
    let dir = config.data_dir.join("elicense");
    // A check writes nothing: a data directory without a store is a mistake to name, not a
    // store to create.
    if !dir.join("db").exists() {
        bail!("no e-licence store at {} (is data_dir right?)", dir.display());
    }
    let store = match LicenceStore::open(&dir) {
        Ok(store) => Some(store),
        Err(e) if is_locked(&e) && config.bus.brokers.is_some() => None,
        Err(e) if is_locked(&e) => bail!(
            "{} is in use by a running node; with the embedded bus there is no replicated copy to check: stop the node first",
            dir.display()
        ),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{} cannot be opened", dir.display()))),
    };
    let mut intact = true;
    let local = match &store {
        Some(store) => {
            let (good, broken) = store.use_log().verify_chain()?;
            match broken {
                None => println!("use log: {good} entries, hash chain intact"),
                Some(link) => {
                    println!("use log BROKEN at entry {}: {}", link.seq, link.reason);
                    println!("entries 1 to {good} are intact");
                    intact = false;
                }
            }
            Some(store.use_log().entries()?)
        }
        None => {
            println!("the node is running (its store is in use): checking the replicated use log, read-only");
            None
        }
    };
    if config.bus.brokers.is_none() {
        return Ok(intact);
    }
    let writer = config.audit.writer(config.division);
    let registry = maintenance_registry(config)?;
    let bus = Bus::start(&config.bus, &Metrics::new())?;
    let (replicated, anchor) = use_log::replicated(&bus, &registry, &writer)
        .await
        .map_err(anyhow::Error::msg)
        .context("the replicated use log cannot be read")?;
    let anchored = anchor.as_ref().map_or("no anchor yet".to_owned(), |a| format!("anchored at entry {}", a.seq));
    println!("replicated use log {writer}: {} entries on {}, {anchored}", replicated.len(), use_log::USE_LOG_TOPIC);
    let findings = match &local {
        Some(local) => use_log::compare(local, &replicated, anchor.as_ref()),
        None => {
            // The replicated copy checked on its own: its chain, and the anchor against it.
            let walked = use_log::chain::findings(&replicated);
            let mut findings = walked;
            findings.extend(use_log::compare(&replicated, &[], anchor.as_ref()));
            findings
        }
    };
    for finding in &findings {
        println!("use log {finding}");
    }
    match (findings.is_empty(), local.is_some()) {
        (true, true) => println!("the use log on disk agrees with its replicated copy and its anchor"),
        (true, false) => println!(
            "the replicated use log is intact and agrees with its anchor (the running node's disk was not read)"
        ),
        (false, _) => {}
    }
    Ok(intact && findings.is_empty())
}

/// Removes a half-built directory unless the rebuild got as far as swapping it in: a
/// failed rebuild leaves nothing behind.
struct Debris(Option<std::path::PathBuf>);

impl Drop for Debris {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("the unfinished rebuild at {} could not be removed: {e}", dir.display());
            }
        }
    }
}

/// `govex sink elicense --rebuild`: builds a new store from the topic beside the old one,
/// then swaps them, keeping the old one under a dated name.
///
/// Schemas come from the node's own registry store (`data_dir/registry`, opened directly:
/// the node is stopped) when the node serves its own registry, else from `registry.url`. A
/// rebuild that could not read every record swaps nothing and removes what it built.
pub async fn rebuild_elicense(config: &NodeConfig) -> Result<()> {
    if config.bus.brokers.is_none() {
        bail!("a rebuild reads the topic from the node's Kafka cluster: set bus.brokers (the embedded bus keeps nothing across restarts)");
    }
    let live = config.data_dir.join("elicense");
    // Opened first: a running node holds it, and the rebuild must not start beside it.
    let old = match live.exists() {
        true => match LicenceStore::open(&live) {
            Ok(store) => Some(store),
            Err(e) if is_locked(&e) => bail!("{} is in use by a running node: stop the node first", live.display()),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{} cannot be opened", live.display()))),
        },
        false => None,
    };
    let registry = match &config.registry.url {
        Some(url) => crate::registry::client(url, config)?,
        None => {
            let dir = config.data_dir.join("registry");
            if !dir.exists() {
                bail!("the node's registry store {} does not exist: nothing could decode the topic", dir.display());
            }
            let store = govex_schemas::Registry::open(&dir).with_context(|| {
                format!("the node's registry store {} cannot be opened (stop the node first)", dir.display())
            })?;
            RegistryClient::local(store)
        }
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let fresh = config.data_dir.join(format!("elicense.rebuild-{stamp}"));
    let kept = config.data_dir.join(format!("elicense.before-rebuild-{stamp}"));
    let mut debris = Debris(Some(fresh.clone()));
    let bus = Bus::start(&config.bus, &Metrics::new())?;
    let store = LicenceStore::open(&fresh).with_context(|| format!("{} cannot be created", fresh.display()))?;
    let report = sink::rebuild(store.clone(), &bus, registry).await?;
    if report.unreadable > 0 {
        bail!(
            "rebuild refused: {} of {} records could not be read (see the warnings above); the live store is untouched",
            report.unreadable,
            report.read
        );
    }
    if let Some(old) = &old {
        let entries = store.use_log().copy_use_log_from(old.use_log())?;
        println!("kept the use log: {entries} entries");
    }
    store.flush().await?;
    let licences = store.len();
    drop((store, old));
    if live.exists() {
        std::fs::rename(&live, &kept)
            .with_context(|| format!("{} cannot be moved aside (is the node running?)", live.display()))?;
    }
    std::fs::rename(&fresh, &live)?;
    debris.0 = None;
    println!(
        "rebuilt {} from {} records: {licences} licences ({} refused as the live store refused them)",
        live.display(),
        report.read,
        report.refused
    );
    if kept.exists() {
        println!("the previous store is kept at {} (its use log included; move it back to restore)", kept.display());
    }
    Ok(())
}

/// `govex store check`: opens every sled store under `data_dir` (a folder with sled's `conf`
/// and `db` files, at any depth) with the configured cache, reads every entry of every tree,
/// and prints per store its format version, trees, entries and bytes, then the process's
/// peak resident memory. Whether every store opened and read.
pub fn store_check(config: &NodeConfig) -> Result<bool> {
    let cache_mib = config.storage.cache_mib;
    if cache_mib == 0 || cache_mib > 65_536 {
        bail!("invalid configuration: storage.cache_mib: 1 to 65536 (MiB per database)");
    }
    govex_schemas::store::set_cache_bytes(cache_mib << 20);
    if !config.data_dir.is_dir() {
        bail!("no data directory at {} (is data_dir right?)", config.data_dir.display());
    }
    let mut stores = Vec::new();
    let mut folders = vec![config.data_dir.clone()];
    while let Some(folder) = folders.pop() {
        if folder.join("conf").is_file() && folder.join("db").is_file() {
            stores.push(folder);
            continue;
        }
        let entries = std::fs::read_dir(&folder).with_context(|| format!("{} cannot be listed", folder.display()))?;
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                folders.push(entry.path());
            }
        }
    }
    stores.sort();
    let mut all_read = true;
    for dir in &stores {
        match check_one(dir) {
            Ok((format, trees, entries, bytes)) => println!(
                "{}: format {format}, {trees} trees, {entries} entries, {:.1} MiB",
                dir.display(),
                bytes as f64 / f64::from(1 << 20)
            ),
            Err(e) if is_locked(&e) => {
                all_read = false;
                println!("{}: in use by a running node; stop it first", dir.display());
            }
            Err(e) => {
                all_read = false;
                println!("{}: CANNOT BE READ: {e}", dir.display());
            }
        }
    }
    println!(
        "{} stores; peak memory {:.0} MiB with storage.cache_mib = {cache_mib} per database",
        stores.len(),
        peak_mib()
    );
    Ok(all_read)
}

/// The format version, trees, entries and bytes of the store in `dir`, every entry read.
fn check_one(dir: &std::path::Path) -> Result<(u64, usize, u64, u64), sled::Error> {
    let db = govex_schemas::store::open_sled(dir)?;
    let format = govex_schemas::store::format_of(&db)?.unwrap_or(0);
    let names = db.tree_names();
    let (mut entries, mut bytes) = (0u64, 0u64);
    for name in &names {
        for entry in govex_schemas::store::scan(&db.open_tree(name)?) {
            let (key, value) = entry?;
            entries += 1;
            bytes += (key.len() + value.len()) as u64;
        }
    }
    Ok((format, names.len(), entries, bytes))
}

/// This process's peak resident memory (`VmHWM`), in MiB; 0 where /proc has none.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// `govex store refill`: marks the stores a consumer group fills (the e-licence store, the
/// dossier, the case statistics) to be refilled from the start of their topics at the node's next start. Run it
/// with the node stopped, after restoring a volume snapshot. Whether every store was marked.
pub fn store_refill(config: &NodeConfig) -> Result<bool> {
    let mut all = true;
    for name in ["elicense", "dossier", "cases"] {
        let dir = config.data_dir.join(name);
        if !dir.join("db").exists() {
            println!("{}: no store", dir.display());
            continue;
        }
        match govex_schemas::store::open_sled(&dir).and_then(|db| govex_schemas::store::clear_refilled(&db)) {
            Ok(_) => println!("{}: refills from the start of its topics at the next start", dir.display()),
            Err(e) if is_locked(&e) => {
                all = false;
                println!("{}: in use by a running node; stop it first", dir.display());
            }
            Err(e) => {
                all = false;
                println!("{}: CANNOT BE MARKED: {e}", dir.display());
            }
        }
    }
    Ok(all)
}
