//! One node: what this process runs of it, started in order from its configuration (plan,
//! listeners, bus, registry, topics, catalogue, then each component's builder), served, and
//! stopped in the order the brief prescribes.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use axum::{routing::get, Json};
use govex_adapters::intake::{auth::Tokens, Intake};
use govex_bus::{schema_log::SchemaLog, Bus, Metrics, RegistryClient};
use govex_http::{
    context::Parts,
    ops::{self, Readiness},
    problem::with_route_list,
    server::{acceptor, serve, Stop, TlsAcceptor},
    Context,
};
use govex_schemas::{bundled_schemas, Catalog, LiveCatalog};
use tokio::net::TcpListener;

use crate::{
    config::{Component, NodeConfig},
    registry,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long shutdown waits for the producer to deliver what it still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A started node (or the part of one that this process runs: see `components`).
pub struct RunningNode {
    /// The configuration it runs with.
    pub config: NodeConfig,
    /// The components this process runs.
    pub components: Vec<Component>,
    /// Where the department-facing API listens (none when no component here serves it).
    api_addr: Option<SocketAddr>,
    /// Where the in-process schema registry listens (none when an external one is used).
    pub registry_addr: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub ops_addr: SocketAddr,
    /// The node's bus.
    pub bus: Bus,
    /// The node's registry client.
    pub registry: RegistryClient,
    /// What keeps this process's registry view following its topic (none with an external
    /// registry); dropped before the context, whose bus it follows.
    _schema_log: Option<SchemaLog>,
    /// The node's metrics.
    pub metrics: Metrics,
    /// Topics the node registered schemas for and created.
    pub topics: Vec<String>,
    /// The department intake (none when the intake component does not run here).
    intake: Option<Arc<Intake>>,
    /// Stops the API listener; cancelled first at shutdown.
    intake_stop: CancellationToken,
    /// What the components started and shared: its `requests` are the API's work, its
    /// `stop` and `tasks` the background's, its `cut` ends every connection when the grace
    /// period runs out; its stores stay open while the node runs.
    context: Context,
}

/// Makes sure `dir` exists and can be written, before anything is started.
fn check_data_dir(dir: &Path) -> Result<()> {
    govex_schemas::backup::check_no_restore_cut_short(dir).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(dir).with_context(|| format!("data directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".govex-write-probe");
    std::fs::write(&probe, b"ok").with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The catalogue in `path`, checked against the registry's latest schemas of its topics.
async fn read_catalog(path: &std::path::Path, registry: &RegistryClient) -> Result<Catalog> {
    // A catalogue of a city's thousands of resources is well under this; a file far over it
    // is a mistake, and is not read into memory again and again.
    const MAX_CATALOG_BYTES: u64 = 4 * 1024 * 1024;
    let size = tokio::fs::metadata(path).await.context("cannot be read")?.len();
    if size > MAX_CATALOG_BYTES {
        anyhow::bail!("is {size} bytes; a catalogue has at most {MAX_CATALOG_BYTES}");
    }
    let text = tokio::fs::read_to_string(path).await.context("cannot be read")?;
    let mut schemas = Vec::new();
    for topic in Catalog::topics_named(&text)? {
        // A topic without a schema is left out here and named by parse_against.
        if let Ok(latest) = registry.version(&format!("{topic}-value"), "latest").await {
            schemas.push((topic, latest.schema));
        }
    }
    Ok(Catalog::parse_against(&text, &schemas)?)
}

/// Re-reads the catalogue file whenever it changes (checked every `every`) until `stop`.
/// A file that does not parse, or names what the registry lacks, is reported once and the
/// catalogue before it stays.
async fn follow_catalog(
    path: PathBuf,
    registry: RegistryClient,
    live: LiveCatalog,
    every: Duration,
    stop: CancellationToken,
) {
    let stamp = |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()));
    let mut taken = stamp(&path);
    let mut reported = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = stamp(&path);
        if now == taken {
            continue;
        }
        match read_catalog(&path, &registry).await {
            Ok(catalog) => {
                taken = now;
                reported = None;
                tracing::info!(file = %path.display(), resources = catalog.resources.len(), "catalogue reloaded");
                live.replace(catalog);
            }
            // Tried again every round (a schema pushed meanwhile may make it valid), and
            // reported once per change of the file.
            Err(e) if reported != Some(now) => {
                reported = Some(now);
                tracing::error!(file = %path.display(), error = %format!("{e:#}"), "the changed catalogue is refused; the one before it stays");
            }
            Err(_) => {}
        }
    }
}

/// How often a tokens file is read again: a revoked token is refused within this.
const TOKENS_EVERY: Duration = Duration::from_secs(2);

/// Follows `intake.tokens_file` (a Kubernetes Secret, whose mounted file the kubelet
/// replaces when the Secret changes): a changed file that parses replaces the tokens of every
/// API in this process at once; one that does not is reported and the tokens before it stay
/// (a half-written file must not lock every department out). Compared by content, not by
/// time stamp: a Secret swapped within one second has the same one.
async fn follow_tokens(config: NodeConfig, tokens: Tokens, metrics: Metrics, stop: CancellationToken) {
    // Registered on every process that serves an API, for the alert on refused reloads.
    let reloads = govex_http::auth::ReloadCounter::register(&metrics);
    let Some(path) = config.intake.tokens_file.clone() else { return };
    let read = |path: &std::path::Path| std::fs::read(path).ok();
    // Nothing counts as taken at first: the file may have changed between the start's read
    // and this task's, and the first round reads it again (a reload to the same set is
    // harmless).
    let mut taken: Option<Vec<u8>> = None;
    let mut reported = None;
    let mut missing_reported = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TOKENS_EVERY) => {}
        }
        let now = read(&path);
        if now.is_none() {
            // Kept as they are (a Secret being swapped, a volume gone): said once, counted.
            if !missing_reported {
                missing_reported = true;
                reloads.count(false);
                tracing::error!(file = %path.display(), "the tokens file cannot be read; the tokens before it stay");
            }
            continue;
        }
        missing_reported = false;
        if now == taken {
            continue;
        }
        let in_file = config.intake.tokens.len();
        let name = |i: usize| match i < in_file {
            true => format!("intake.tokens[{i}]"),
            false => format!("tokens[{}] of intake.tokens_file {}", i - in_file, path.display()),
        };
        let reloaded = config.intake.all_tokens().map_err(|e| e.to_string()).and_then(|all| {
            // No token at all (a file emptied or cut short, and none in the config file) would
            // lock every department out: refused, as a broken file is. Revoking a division's
            // last token is a restart's business.
            if all.is_empty() {
                return Err("no token left; refusing to lock every department out".to_owned());
            }
            tokens.reload(&all, name)
        });
        match reloaded {
            Ok(count) => {
                taken = now;
                reported = None;
                reloads.count(true);
                tracing::info!(file = %path.display(), tokens = count, "tokens reloaded");
            }
            Err(error) if reported != now => {
                reported = now;
                reloads.count(false);
                tracing::error!(file = %path.display(), %error, "the changed tokens file is refused; the tokens before it stay");
            }
            Err(_) => {}
        }
    }
}

/// What a configuration asks of this process, worked out and checked before anything
/// starts: the components and the registry agree, the tokens (including
/// `intake.tokens_file`) parse, the bridge links resolve. `start` runs on it, and
/// `govex config check` prints it.
pub struct Plan {
    /// The components this process runs.
    pub components: Vec<Component>,
    /// The registry to use over HTTP; none when this process serves its own or follows the
    /// registry's topic (no registry component here).
    pub registry_url: Option<String>,
    /// The department tokens (read only by processes that serve the API).
    pub tokens: Tokens,
    /// The level-bridge links (only when the bridge component runs).
    pub links: Vec<govex_sinks::level_bridge::Link>,
}

/// Works out and checks the [`Plan`] of `config`.
pub fn plan(config: &NodeConfig) -> Result<Plan> {
    if config.storage.cache_mib == 0 || config.storage.cache_mib > 65_536 {
        bail!("invalid configuration: storage.cache_mib: 1 to 65536 (MiB per database)");
    }
    let components = config.components();
    let runs_registry = components.contains(&Component::Registry);
    let registry_url = match (&config.registry.url, runs_registry) {
        (Some(_), true) => bail!(
            "invalid configuration: components includes registry, but registry.url points at another registry; \
             run the registry here or use that one, not both"
        ),
        (_, false) if config.registry.writer_url.is_some() => bail!(
            "invalid configuration: registry.writer_url makes this process's registry a read replica, but components \
             does not include registry"
        ),
        (None, true) if config.registry.writer_url.is_some() && config.bus.brokers.is_none() => bail!(
            "invalid configuration: a read replica (registry.writer_url) follows the registry's topic on a shared \
             cluster: set bus.brokers (the embedded bus is this process's own)"
        ),
        // No registry here and none named: this process follows the registry's topic on a
        // cluster it shares with the registry component, which only a real cluster can be.
        (None, false) if config.bus.brokers.is_none() => bail!(
            "invalid configuration: this process does not run the registry component, so registry.url must \
             name the registry to use, or bus.brokers must name the cluster whose registry topic it follows \
             (the embedded bus is this process's own)"
        ),
        (url, _) => url.clone(),
    };
    // Only the processes that serve an API read tokens (and mount a tokens file): the
    // department API, and the registry (whose writes need a steward's token).
    let tokens = match config.serves_api() || runs_registry {
        true => {
            let configured = config.intake.all_tokens().context("invalid configuration")?;
            let in_file = config.intake.tokens.len();
            let file = config.intake.tokens_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let name = |i: usize| match i < in_file {
                true => format!("intake.tokens[{i}]"),
                false => format!("tokens[{}] of intake.tokens_file {file}", i - in_file),
            };
            Tokens::from_config_named(&configured, name).map_err(anyhow::Error::msg).context("invalid configuration")?
        }
        false => Tokens::default(),
    };
    let intake = &config.intake;
    let listen = &config.listen;
    let zero: Vec<&str> = [
        ("intake.max_body_bytes", intake.max_body_bytes as u64),
        ("intake.max_batch_bytes", intake.max_batch_bytes as u64),
        ("intake.max_batch_lines", intake.max_batch_lines as u64),
        ("intake.max_body_secs", intake.max_body_secs),
        ("intake.idempotency_window_secs", intake.idempotency_window_secs),
        ("listen.max_connections", listen.max_connections as u64),
        ("listen.header_read_timeout_secs", listen.header_read_timeout_secs),
        ("listen.body_timeout_secs", listen.body_timeout_secs),
        ("listen.tls_handshake_timeout_secs", listen.tls_handshake_timeout_secs),
        ("listen.keep_alive_idle_secs", listen.keep_alive_idle_secs),
        ("audit.anchor_interval_secs", config.audit.anchor_interval_secs),
    ]
    .into_iter()
    .filter_map(|(key, value)| (value == 0).then_some(key))
    .collect();
    if !zero.is_empty() {
        bail!("invalid configuration: {} must be at least 1", zero.join(", "));
    }
    if components.contains(&Component::Intake)
        && (intake.max_batch_bytes > intake.max_in_flight_bytes || intake.max_body_bytes > intake.max_in_flight_bytes)
    {
        bail!(
            "invalid configuration: intake.max_in_flight_bytes ({}) must be at least intake.max_batch_bytes ({}) \
             and intake.max_body_bytes ({}), or a full batch could never be taken",
            intake.max_in_flight_bytes,
            intake.max_batch_bytes,
            intake.max_body_bytes
        );
    }
    // The division must be one the intake itself would take as a record's division.
    // The division must be one the intake itself would take as a record's division.
    let code = config.division.to_string();
    match govex_schemas::identifiers::division(&code) {
        Err(rule) => bail!("invalid configuration: division {code} is not a GB/T 2260 division in force ({rule})"),
        Ok(current) if current != code => {
            bail!("invalid configuration: division {code} was retired; its successor is {current}")
        }
        Ok(_) => {}
    }
    check_ports(config, runs_registry && registry_url.is_none())?;
    let mut names = std::collections::HashSet::new();
    let mut tables = std::collections::HashSet::new();
    for source in &config.frontdb.sources {
        source.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if !names.insert(&source.name) {
            bail!("invalid configuration: frontdb.sources: two sources are named {:?}", source.name);
        }
        // A source's name is part of its rows' event ids: two on one table would publish every
        // row twice under two ids.
        // (A query is its source's own: two queries may read one table, each its own rows.)
        let relation = match &source.query {
            Some(_) => format!("query of {}", source.name),
            None => source.table.to_ascii_lowercase(),
        };
        let table = (govex_bus::frontdb::describe(&source.url), relation);
        if !tables.insert(table) {
            bail!(
                "invalid configuration: frontdb.sources {:?} reads a table another source reads; one table, one source",
                source.name
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    for table in &config.frontdb.tables {
        table.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if !names.insert(&table.name) {
            bail!("invalid configuration: frontdb.tables: two tables are named {:?}", table.name);
        }
    }
    check_data_dir_can_be_made(&config.data_dir)?;
    let links = match components.contains(&Component::Bridge) {
        true => govex_sinks::level_bridge::links(config.division, &config.bus, &config.bridge)?,
        false => Vec::new(),
    };
    Ok(Plan { components, registry_url, tokens, links })
}

/// What `govex config check` runs: [`plan`], and what start does next with the config short
/// of the network — librdkafka takes the properties of the node's clients and of each bridge
/// link (made offline), and the certificates, keys and CA files read. Start itself does these
/// as it goes (it makes the clients and reads the files), so they are not done twice there.
pub fn preflight(config: &NodeConfig) -> Result<Plan> {
    let plan = plan(config)?;
    if plan.components.iter().any(|c| *c != Component::Registry) {
        config.bus.check_properties("bus").map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    }
    for link in &plan.links {
        let what = format!("bridge link {}", link.name);
        link.config.check_properties(&what).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    }
    if let Some(url) = &plan.registry_url {
        registry::client(url, config)?;
    }
    if let (true, Some(tls)) = (config.serves_api(), &config.listen.tls) {
        govex_http::server::acceptor(tls, "listen.tls")?;
    }
    if let (None, Some(tls)) = (&plan.registry_url, &config.listen.registry_tls) {
        govex_http::server::acceptor(tls, "listen.registry_tls")?;
    }
    Ok(plan)
}

/// Two listeners of this process on one port would make the second bind fail at start
/// (`0.0.0.0` takes the port on every address; port 0 picks a free one).
fn check_ports(config: &NodeConfig, serves_registry: bool) -> Result<()> {
    let listen = &config.listen;
    let mut listeners = vec![("listen.ops", listen.ops)];
    if config.serves_api() {
        listeners.push(("listen.api", listen.api));
    }
    if serves_registry {
        listeners.push(("listen.registry", listen.registry));
    }
    for (i, (name, addr)) in listeners.iter().enumerate() {
        for (other, other_addr) in &listeners[i + 1..] {
            let overlap =
                addr.ip() == other_addr.ip() || addr.ip().is_unspecified() || other_addr.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == other_addr.port() && overlap {
                bail!(
                    "invalid configuration: {name} ({addr}) and {other} ({other_addr}) use the same port; give each listener its own"
                );
            }
        }
    }
    Ok(())
}

/// Whether the data directory exists as a writable directory or can be made: the nearest
/// existing ancestor must be a writable directory. Nothing is left behind (a probe file is
/// made and removed where the directory would be made).
fn check_data_dir_can_be_made(dir: &Path) -> Result<()> {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut existing = absolute.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    let cannot =
        |why: String| anyhow::anyhow!("invalid configuration: data_dir {} cannot be used: {why}", dir.display());
    if !existing.is_dir() {
        return Err(cannot(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".govex-config-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| cannot(format!("{} is not writable ({e})", existing.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

impl Plan {
    /// Whether this process uses the event topics: any component but a registry on its own.
    pub fn uses_bus(&self) -> bool {
        self.components.iter().any(|c| *c != Component::Registry)
    }

    /// What `govex config check` prints.
    pub fn summary(&self, config: &NodeConfig) -> Vec<String> {
        let names: Vec<&str> = self.components.iter().map(|c| c.name()).collect();
        let registry = match &self.registry_url {
            Some(url) => url.clone(),
            None if self.components.contains(&Component::Registry) => match &config.registry.writer_url {
                Some(writer) => format!(
                    "read replica served here on {}, following topic {}; writes forwarded to {writer}",
                    config.listen.registry,
                    govex_schemas::journal::TOPIC
                ),
                None => {
                    format!(
                        "served here on {}, kept in topic {}",
                        config.listen.registry,
                        govex_schemas::journal::TOPIC
                    )
                }
            },
            None => format!("followed in topic {}", govex_schemas::journal::TOPIC),
        };
        let links = match (self.links.is_empty(), config.division.parent()) {
            // The parent's division follows from the code; its cluster and registry do not.
            (true, Some(parent)) if self.components.contains(&Component::Bridge) => format!(
                "none (to link to the parent {parent}, set [bridge.parent] brokers and registry: its division is derived from {})",
                config.division
            ),
            (true, _) => "none".to_owned(),
            (false, _) => self.links.iter().map(|l| format!("{} ({})", l.name, l.bootstrap)).collect::<Vec<_>>().join(", "),
        };
        let mut lines = vec![
            format!("division     {}", config.division),
            format!("components   {}", names.join(", ")),
            format!("bus          {}", config.bus.brokers.as_deref().unwrap_or("embedded (in memory)")),
            format!("registry     {registry}"),
            format!("tokens       {}", self.tokens.len()),
            format!("bridge links {links}"),
            format!("data         {}", config.data_dir.display()),
            format!("time zone    {} (times shown to people)", config.time_zone),
            format!(
                "topics       created with {} partitions, replication factor {} (existing ones are left as they are, with a warning where they contradict these):",
                config.bus.partitions, config.bus.replication_factor
            ),
        ];
        for schema in bundled_schemas() {
            for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
                let settings: Vec<String> =
                    config.bus.topic_settings(&topic).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                lines.push(format!("  {topic:<42} {}", settings.join(" ")));
            }
        }
        lines
    }
}

/// A bound listener and the TLS it is served with.
pub type Listener = (TcpListener, Option<TlsAcceptor>);

/// The listeners of this process, bound (and their certificates read) before anything
/// starts, so that a taken port or a bad file stops the start cleanly.
struct Listeners {
    api: Option<Listener>,
    ops: TcpListener,
    registry: Option<Listener>,
}

impl Listeners {
    async fn bind(config: &NodeConfig, plan: &Plan) -> Result<Self> {
        let listen = &config.listen;
        let api = match config.serves_api() {
            true => Some((
                ops::bind("API", listen.api).await?,
                listen.tls.as_ref().map(|tls| acceptor(tls, "listen.tls")).transpose()?,
            )),
            false => None,
        };
        let ops = ops::bind("ops endpoints", listen.ops).await?;
        let registry = match (&plan.registry_url, plan.components.contains(&Component::Registry)) {
            (None, true) => Some((
                ops::bind("schema registry", listen.registry).await?,
                listen.registry_tls.as_ref().map(|tls| acceptor(tls, "listen.registry_tls")).transpose()?,
            )),
            _ => None,
        };
        Ok(Self { api, ops, registry })
    }
}

/// The certificates this process's TLS listeners serve, for their expiry gauge.
fn certificate_gauges(config: &NodeConfig, listeners: &Listeners, metrics: &Metrics) {
    let served: Vec<(&'static str, &std::path::Path)> = [
        ("api", listeners.api.as_ref().and(config.listen.tls.as_ref())),
        ("registry", listeners.registry.as_ref().and(config.listen.registry_tls.as_ref())),
    ]
    .into_iter()
    .filter_map(|(listener, tls)| Some((listener, tls?.cert_path.as_path())))
    .collect();
    govex_http::server::certificate_expiry_gauges(metrics, &served);
}

/// Starts a node, or the components of one that `config.components` names. Fails fast,
/// naming the cause, when a port is taken or the data directory is unusable; a component that
/// fails to start stops every one started before it, so nothing is left running on failure.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    let plan = plan(&config)?;
    govex_schemas::store::set_cache_bytes(config.storage.cache_mib << 20);
    check_data_dir(&config.data_dir)?;
    let mut listeners = Listeners::bind(&config, &plan).await?;
    if config.serves_api() && plan.tokens.is_empty() {
        tracing::warn!("no department tokens configured: the APIs refuse every request; add [[intake.tokens]] (govex token new <department>)");
    }
    let metrics = Metrics::new();
    certificate_gauges(&config, &listeners, &metrics);
    let bus = Bus::start(&config.bus, &metrics)?;
    let (registry, schema_log) = registry::view(&config, &plan, &bus).await?;
    let topics = registry::seed(&plan, &registry, &bus).await?;
    // After seeding: a steward's catalogue is checked against the registry's schemas.
    let catalog = match &config.catalog_file {
        Some(path) => {
            read_catalog(path, &registry).await.with_context(|| format!("catalog_file {}", path.display()))?
        }
        None => Catalog::bundled().context("the bundled resource catalogue is invalid")?,
    };
    let tokens = match config.serves_api() {
        true => plan.tokens.clone().with_read_limit(&config.api, &metrics),
        false => plan.tokens.clone(),
    };
    let mut cx = Context::new(Parts {
        division: config.division,
        data_dir: config.data_dir.clone(),
        time_zone: config.time_zone.clone(),
        group_prefix: config.bus.group_prefix.clone(),
        bus,
        registry,
        metrics,
        tokens,
        catalog: LiveCatalog::new(catalog),
        refresh: Duration::from_millis(config.intake.schema_refresh_ms.max(100)),
    });
    if let Some(store) = cx.registry.local_store().filter(|_| registry::keeps_store(&config, &plan)) {
        cx.stores.add("registry", store.db());
    }
    if let Some(path) = config.catalog_file.clone() {
        // A steward's change to the catalogue file (a ConfigMap, say) is taken without a
        // restart, once it parses and matches the registry's schemas.
        let (registry, live, every, stop) = (cx.registry.clone(), cx.catalog.clone(), cx.refresh, cx.stop.clone());
        cx.tasks.spawn(follow_catalog(path, registry, live, every, stop));
    }
    if config.serves_api() || plan.components.contains(&Component::Registry) {
        let (tokens, metrics, stop) = (cx.tokens.clone(), cx.metrics.clone(), cx.stop.clone());
        cx.tasks.spawn(follow_tokens(config.clone(), tokens, metrics, stop));
    }
    if plan.components.contains(&Component::Bridge) && plan.links.is_empty() && !config.components.is_empty() {
        tracing::warn!("the bridge component runs, but [bridge] configures no parent or children: nothing to forward");
    }
    let mut registry_addr = None;
    for component in plan.components.clone() {
        if let Err(e) = build(component, &config, &mut cx, &mut listeners, &mut registry_addr).await {
            // The registry's view stops following before the bus it follows goes.
            drop(schema_log);
            cx.abandon().await;
            return Err(e.context(format!("the {} component cannot start", component.name())));
        }
    }
    RunningNode::serve(config, plan, cx, listeners, registry_addr, schema_log, topics)
}

/// Builds `component` into the node `cx`: the one place that names every component.
async fn build(
    component: Component,
    config: &NodeConfig,
    cx: &mut Context,
    listeners: &mut Listeners,
    registry_addr: &mut Option<SocketAddr>,
) -> Result<()> {
    match component {
        Component::Registry => *registry_addr = registry::build(cx, config, listeners.registry.take())?,
        Component::Intake => {
            govex_adapters::intake::component::build(cx, &config.intake).await?;
            crate::frontdb::start_sources(cx, &config.frontdb.sources)?;
        }
        Component::Elicense => govex_sinks::elicense::component::build(cx, &config.audit).await?,
        Component::Dossier => {
            govex_sinks::dossier::component::build(cx, &config.audit, &config.governance, &config.frontdb.tables)
                .await?
        }
        Component::Cases => govex_sinks::case_stats::component::build(cx)?,
        Component::Bridge => govex_sinks::level_bridge::component::build(cx, &config.bridge)?,
    }
    Ok(())
}

impl RunningNode {
    /// Serves the department API the components built and the ops endpoints, once every
    /// component started.
    fn serve(
        config: NodeConfig,
        plan: Plan,
        mut cx: Context,
        listeners: Listeners,
        registry_addr: Option<SocketAddr>,
        schema_log: Option<SchemaLog>,
        topics: Vec<String>,
    ) -> Result<Self> {
        let limits = config.listen.limits();
        let intake_stop = CancellationToken::new();
        let (api_router, component_routes) = cx.take_api();
        let api_addr = match listeners.api {
            Some((listener, tls)) => {
                let info = NodeInfo {
                    division: config.division.to_string(),
                    components: plan.components.clone(),
                    topics: topics.clone(),
                };
                let router = api_router
                    .route("/", get(move || async move { Json(info) }))
                    .route("/openapi.json", openapi::route(openapi::API));
                // The console asks this router, in process, as the person signed in.
                let console =
                    crate::console::router(router.clone(), cx.tokens.clone(), cx.registry.clone(), tls.is_some());
                let router = router.merge(console);
                let use_log = cx.shared::<govex_sinks::elicense::LicenceStore>().map(|s| s.use_log().clone());
                let router = router.merge(crate::backup::router(&cx, use_log));
                let routes = ["GET /", "GET /openapi.json"]
                    .into_iter()
                    .chain(crate::console::ROUTES.iter().copied())
                    .chain(crate::backup::ROUTES.iter().copied())
                    .map(String::from)
                    .chain(component_routes);
                let router = with_route_list(router, routes.collect());
                let stop = Stop { stop: intake_stop.clone(), cut: cx.cut.clone() };
                let addr = listener.local_addr()?;
                cx.requests.spawn(serve(listener, tls, router, limits, stop, cx.requests.clone()));
                Some(addr)
            }
            None => None,
        };
        let ops_addr = listeners.ops.local_addr()?;
        let degraded = cx.shared::<govex_adapters::frontdb::DownSources>().map(|down| {
            let lines = move || {
                down.list().into_iter().map(|(name, why)| format!("front-end database source {name}: {why}")).collect()
            };
            std::sync::Arc::new(lines) as govex_http::ops::Degraded
        });
        // A down-table waits for its department's database without taking the node out of
        // service: its consumer group is degraded when behind, not a reason to be unready.
        let optional_groups = match plan.components.contains(&Component::Dossier) {
            true => {
                config.frontdb.tables.iter().map(|t| cx.group(&govex_sinks::down_table::group_name(&t.name))).collect()
            }
            false => Vec::new(),
        };
        let readiness = Readiness {
            bus: plan.uses_bus().then(|| cx.bus.clone()),
            registry: cx.registry.clone(),
            degraded,
            optional_groups,
        };
        let ops_router = ops::router(cx.metrics.clone(), readiness.watch(cx.stop.clone()))
            .route("/openapi.json", openapi::route(openapi::OPS));
        let ops_router = with_route_list(ops_router, openapi::routes(openapi::OPS));
        // The ops port has connections of its own: a flood on the API leaves the probes answering.
        let stop = Stop { stop: cx.stop.clone(), cut: cx.cut.clone() };
        cx.tasks.spawn(serve(listeners.ops, None, ops_router, limits, stop, cx.tasks.clone()));
        tracing::info!(division = %config.division, components = ?plan.components, api_addr = ?api_addr, %ops_addr, topics = topics.len(), "node started");
        Ok(RunningNode {
            components: plan.components,
            intake: cx.shared::<Arc<Intake>>(),
            config,
            api_addr,
            registry_addr,
            ops_addr,
            bus: cx.bus.clone(),
            registry: cx.registry.clone(),
            _schema_log: schema_log,
            metrics: cx.metrics.clone(),
            topics,
            intake_stop,
            context: cx,
        })
    }
}

/// The OpenAPI 3.1 documents of the node's three ports, kept beside the handlers they
/// describe (`src/openapi/`); `tests/it/openapi.rs` holds them and the routers together and
/// the API fuzzer in CI checks every answer against them.
pub mod openapi {
    /// The department API port: intake, licences, holders, dossiers, use log, catalogue.
    pub const API: &str = include_str!("openapi/api.json");
    /// The schema registry port (Confluent's REST API).
    pub const REGISTRY: &str = include_str!("openapi/registry.json");
    /// The ops port: metrics and health.
    pub const OPS: &str = include_str!("openapi/ops.json");

    /// Every operation of `document`, as `"GET /path"`.
    pub fn routes(document: &str) -> Vec<String> {
        let document: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
        let mut routes = Vec::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for method in ["get", "post", "put", "delete"] {
                if item.get(method).is_some() {
                    routes.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        routes
    }

    /// `GET /openapi.json` serving `document`.
    pub fn route(document: &'static str) -> axum::routing::MethodRouter {
        axum::routing::get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document) })
    }
}

/// The body of `GET /` on the API port: what a node says about itself.
#[derive(Clone, serde::Serialize)]
struct NodeInfo {
    division: String,
    components: Vec<Component>,
    topics: Vec<String>,
}

impl RunningNode {
    /// Prints where the node's endpoints listen, for the person who started it.
    pub fn print_endpoints(&self) {
        println!("govex node for division {} is running", self.config.division);
        if !self.config.components.is_empty() {
            let names: Vec<&str> = self.components.iter().map(|c| c.name()).collect();
            println!("  components        {}", names.join(", "));
        }
        let scheme = if self.config.listen.tls.is_some() { "https" } else { "http" };
        if let Some(addr) = self.api_addr {
            println!("  API               {scheme}://{addr}/");
        }
        match self.registry_addr {
            Some(addr) => {
                let scheme = if self.config.listen.registry_tls.is_some() { "https" } else { "http" };
                println!("  schema registry   {scheme}://{addr}/subjects");
            }
            None if self.registry.local_store().is_some() => {
                println!("  schema registry   followed in topic {}", govex_schemas::journal::TOPIC)
            }
            None => println!("  schema registry   {} (external)", self.registry.describe()),
        }
        println!("  metrics           http://{}/metrics", self.ops_addr);
        println!("  health            http://{0}/healthz  http://{0}/readyz", self.ops_addr);
        match self.bus.embedded() {
            Some(_) => println!("  bus               embedded, in memory only, at {}", self.bus.bootstrap_servers()),
            None => println!("  bus               {}", self.bus.bootstrap_servers()),
        }
        println!("  data              {}", self.config.data_dir.display());
        println!("Stop with Ctrl-C.");
    }

    /// Where the department-facing API listens; an error when no component of this process
    /// serves it.
    pub fn api_addr(&self) -> Result<SocketAddr> {
        self.api_addr.context("this process runs no component that serves the API (intake, elicense, dossier)")
    }

    /// The department intake; an error when the intake component does not run here.
    pub fn intake(&self) -> Result<&Arc<Intake>> {
        self.intake.as_ref().context("this process does not run the intake component")
    }

    /// Token that background components (consumers) stop on; they must be spawned on
    /// [`RunningNode::spawn_background`] so shutdown waits for them to drain.
    pub fn background_token(&self) -> CancellationToken {
        self.context.stop.clone()
    }

    /// Runs a background component (a sink's consumer) under the node's shutdown.
    pub fn spawn_background<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.context.tasks.spawn(task);
    }

    /// Shuts down in order: stop intake, drain the sinks, flush the producer; the sinks'
    /// consumers store and commit their offsets as they drain.
    ///
    /// Requests in progress get `listen.shutdown_grace_secs` to finish; then every connection
    /// is cut (a slow or stalled client must not hold a shutdown until the orchestrator's
    /// SIGKILL, which would skip the drain and the flush). A publish that started is not cut:
    /// it runs in a task of its own and is waited for, then flushed.
    pub async fn shutdown(self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.listen.shutdown_grace();
        let cut_at_deadline = |tasks: TaskTracker, what: &'static str| {
            let cut = self.context.cut.clone();
            async move {
                tasks.close();
                if tokio::time::timeout_at(deadline, tasks.wait()).await.is_err() {
                    tracing::warn!(what, "the shutdown grace period ran out: cutting the connections still open");
                    cut.cancel();
                    tasks.wait().await;
                }
            }
        };
        tracing::info!("stopping intake");
        self.intake_stop.cancel();
        cut_at_deadline(self.context.requests.clone(), "intake").await;

        tracing::info!("draining consumers");
        self.context.stop.cancel();
        cut_at_deadline(self.context.tasks.clone(), "consumers, ops and registry").await;
        self.context.stores.clear();

        tracing::info!(in_flight = self.bus.producer().in_flight(), "flushing the producer");
        self.bus
            .producer()
            .flush(FLUSH_TIMEOUT)
            .context("the producer could not deliver every queued record before shutdown")?;
        tracing::info!("node stopped");
        Ok(())
    }
}

/// Runs a node until `shutdown` resolves, then stops it in order. A shutdown that comes
/// while the node is still starting (waiting for a registry that does not answer, say) ends
/// the start at once: an orchestrator's SIGTERM must not wait two minutes.
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let node = tokio::select! {
        started = start(config) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    node.print_endpoints();
    shutdown.await;
    node.shutdown().await
}
