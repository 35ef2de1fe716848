//! One node: its registry, its bus, its HTTP servers, and their start-up and shutdown order.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::config::Component;
use crate::config::NodeConfig;
use anyhow::{bail, Context, Result};
use axum::{routing::get, Json, Router};
use govex_adapters::intake::{
    auth::Tokens,
    http::{router as intake_router, IntakeServer},
    idempotency::IdempotencyStore,
    Intake,
};
use govex_bus::schema_log::{Role as SchemaLogRole, SchemaLog};
use govex_bus::{Bus, Metrics, RegistryClient};
use govex_http::auth::RegistryAccess;
use govex_http::ops::{self, Readiness};
use govex_http::problem::with_route_list;
use govex_http::server::serve;
use govex_http::server::Stop;
use govex_schemas::{bundled_schemas, Catalog, LiveCatalog, Registry};
use govex_sinks::{
    dossier::{self, api::DossierApi, DossierSink, DossierStore},
    elicense::{
        self,
        api::{ApiMetrics, LicenceApi},
        sink::{LicenceSink, SinkMetrics},
        LicenceStore,
    },
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
    /// registry); dropped last.
    _schema_log: Option<SchemaLog>,
    /// The node's metrics.
    pub metrics: Metrics,
    /// Topics the node registered schemas for and created.
    pub topics: Vec<String>,
    /// The department intake (none when the intake component does not run here).
    intake: Option<Arc<Intake>>,
    intake_stop: CancellationToken,
    /// Cuts every listener's connections when the shutdown grace period runs out.
    cut: CancellationToken,
    intake_tasks: TaskTracker,
    background: CancellationToken,
    background_tasks: TaskTracker,
}

/// Makes sure `dir` exists and can be written, before anything is started.
fn check_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("data directory {} cannot be created", dir.display()))?;
    let probe = dir.join(".govex-write-probe");
    std::fs::write(&probe, b"ok").with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn open_registry(dir: PathBuf) -> Result<Registry> {
    let registry = Registry::open(&dir).with_context(|| {
        format!(
            "schema registry store {} cannot be opened (is another govex node using this data directory?)",
            dir.display()
        )
    })?;
    // A department record type that cannot be compiled into a contract is refused at push,
    // so it never reaches an intake.
    Ok(registry.with_contract_check(Arc::new(|subject: &str, text: &str, history: &[(String, String, bool)]| {
        govex_adapters::contract::usable(subject, text, history).map_err(|e| e.to_string())
    })))
}

/// How long start-up keeps trying a registry that does not answer yet. In Kubernetes the
/// registry's pod may start after the others; waiting here beats a crash loop.
const REGISTRY_WAIT: Duration = Duration::from_secs(120);

/// Seeds the registry with the bundled schemas whose subjects it does not have
/// (TopicNameStrategy), retrying while it is unreachable, and returns the topics to make:
/// the bundled ones and those of record types stewards added.
async fn seed_schemas(registry: &RegistryClient) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + REGISTRY_WAIT;
    let mut delay = Duration::from_millis(200);
    loop {
        match govex_adapters::intake::seed(registry).await {
            Ok(()) => break,
            Err(govex_adapters::intake::IntakeError::Registry(e))
                if matches!(e, govex_bus::registry_client::RegistryClientError::Unavailable { .. })
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(registry = %registry.describe(), error = %e, "schema registry not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("the registry {} cannot be seeded", registry.describe())),
        }
    }
    let subjects = registry.subjects().await.with_context(|| format!("{} lists no subjects", registry.describe()))?;
    let mut topics: Vec<String> = bundled_schemas().map(|s| s.topic.to_owned()).collect();
    // The topics of record types stewards added; a subject that is not one (a steward's own,
    // another system's) gets no topic from govex.
    for subject in subjects {
        let Some(topic) = govex_adapters::contract::topic_of(&subject) else { continue };
        if topics.iter().any(|t| t == topic) {
            continue;
        }
        let latest = registry.version(&subject, "latest").await.with_context(|| format!("{subject} cannot be read"))?;
        let schema = apache_avro::Schema::parse_str(&latest.schema);
        if schema.is_ok_and(|s| govex_adapters::contract::declared(&s).is_ok_and(|d| d.is_some())) {
            topics.push(topic.to_owned());
        }
    }
    Ok(topics)
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

/// The client of the external registry at `url`, with the configured token and TLS.
pub fn registry_client(url: &str, config: &NodeConfig) -> Result<RegistryClient> {
    let token = config.registry.token.as_deref();
    Ok(match &config.registry.tls {
        Some(tls) => {
            RegistryClient::https(url, token, tls).map_err(anyhow::Error::msg).context("invalid configuration")?
        }
        None => RegistryClient::http_with_token(url, token),
    })
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
        registry_client(url, config)?;
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

/// Starts a node, or the components of one that `config.components` names. Fails fast,
/// naming the cause, when a port is taken or the data directory is unusable; nothing is left
/// running on failure.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    let Plan { components, registry_url, tokens, links: bridge_links } = plan(&config)?;
    let runs = |c: Component| components.contains(&c);
    check_data_dir(&config.data_dir)?;
    let api_listener = match config.serves_api() {
        true => Some(ops::bind("API", config.listen.api).await?),
        false => None,
    };
    let ops_listener = ops::bind("ops endpoints", config.listen.ops).await?;
    // Certificates are read before anything runs, so that a bad file stops the start cleanly.
    let api_tls = match (&api_listener, &config.listen.tls) {
        (Some(_), Some(tls)) => Some(govex_http::server::acceptor(tls, "listen.tls")?),
        _ => None,
    };
    let registry_tls = match (&registry_url, &config.listen.registry_tls) {
        (None, Some(tls)) => Some(govex_http::server::acceptor(tls, "listen.registry_tls")?),
        _ => None,
    };
    let registry_listener = match (&registry_url, runs(Component::Registry)) {
        (None, true) => Some(ops::bind("schema registry", config.listen.registry).await?),
        _ => None,
    };
    // A read replica keeps its view in memory: the topic is its data, the writer's volume the
    // only one.
    let registry_store = match (&registry_url, runs(Component::Registry), &config.registry.writer_url) {
        (None, true, None) => Some(open_registry(config.data_dir.join("registry"))?),
        _ => None,
    };

    if config.serves_api() && tokens.is_empty() {
        tracing::warn!("no department tokens configured: the APIs refuse every request; add [[intake.tokens]] (govex token new <department>)");
    }
    let metrics = Metrics::new();
    let tokens = match config.serves_api() {
        true => tokens.with_read_limit(&config.api, &metrics),
        false => tokens,
    };
    let bus = Bus::start(&config.bus, &metrics)?;
    // The registry is a view of its topic: the registry component writes it, every other
    // process without a registry URL follows it into a view of its own.
    let (registry, schema_log) = match (&registry_url, registry_store) {
        (Some(url), _) => (registry_client(url, &config)?, None),
        (None, store) => {
            let (store, role) = match store {
                Some(store) => (store, SchemaLogRole::Writer),
                // A process with no registry component, or a read replica: a view of the
                // topic that takes no writes of its own.
                None => (
                    Registry::temporary().context("an in-memory registry view cannot be made")?,
                    SchemaLogRole::Follower,
                ),
            };
            let (view, log) = SchemaLog::start(&bus, store, role)
                .await
                .with_context(|| format!("the registry's topic {} cannot be used", govex_schemas::journal::TOPIC))?;
            (RegistryClient::local(view), Some(log))
        }
    };
    // A registry on its own writes only its own topic: it leaves the event topics to the
    // processes that use them.
    let uses_bus = components.iter().any(|c| *c != Component::Registry);
    let topics = match seed_schemas(&registry).await {
        Ok(topics) => topics,
        // A registry that refuses the bundled schemas (a steward deleted one and set READONLY,
        // say) must still come up on its own, or nothing could put it right.
        Err(e) if !uses_bus => {
            tracing::error!(error = %format!("{e:#}"), "the registry refuses a bundled schema; serving it so that a steward can repair it");
            bundled_schemas().map(|s| s.topic.to_owned()).collect()
        }
        Err(e) => {
            return Err(e.context(
                "if the registry refuses it (read-only, incompatible), start the registry alone \
                 (components = [\"registry\"]) and let a steward repair it",
            ))
        }
    };
    if uses_bus {
        bus.ensure_topics(&topics).await?;
    }
    // After seeding: a steward's catalogue is checked against the registry's schemas.
    let catalog = match &config.catalog_file {
        Some(path) => {
            read_catalog(path, &registry).await.with_context(|| format!("catalog_file {}", path.display()))?
        }
        None => Catalog::bundled().context("the bundled resource catalogue is invalid")?,
    };

    let intake_stop = CancellationToken::new();
    let cut = CancellationToken::new();
    let intake_tasks = TaskTracker::new();
    let background = CancellationToken::new();
    let background_tasks = TaskTracker::new();
    let group = |sink: &str| format!("{}-{}-{sink}", config.bus.group_prefix, config.division);
    let live_catalog = LiveCatalog::new(catalog.clone());
    if let Some(path) = config.catalog_file.clone() {
        // A steward's change to the catalogue file (a ConfigMap, say) is taken without a
        // restart, once it parses and matches the registry's schemas.
        let every = Duration::from_millis(config.intake.schema_refresh_ms.max(100));
        background_tasks.spawn(follow_catalog(path, registry.clone(), live_catalog.clone(), every, background.clone()));
    }

    let info =
        NodeInfo { division: config.division.to_string(), components: components.clone(), topics: topics.clone() };
    let mut api_router = Router::new()
        .route("/", get(move || async move { Json(info) }))
        .route("/openapi.json", openapi::route(openapi::API));
    // What this node's API port serves, for the answer to a route it does not.
    let mut api_routes: Vec<&str> = vec!["GET /", "GET /openapi.json"];
    let mut intake = None;
    if runs(Component::Intake) {
        let idempotency_dir = config.data_dir.join("intake");
        let idempotency =
            IdempotencyStore::open(&idempotency_dir, Duration::from_secs(config.intake.idempotency_window_secs))
                .with_context(|| format!("intake store {} cannot be opened", idempotency_dir.display()))?;
        let accepting = Arc::new(Intake::new(&registry, &bus, config.division, &metrics).await?);
        // Versions stewards push go live without a restart.
        background_tasks.spawn(
            accepting
                .clone()
                .follow(Duration::from_millis(config.intake.schema_refresh_ms.max(100)), background.clone()),
        );
        let server = Arc::new(IntakeServer::new(
            accepting.clone(),
            tokens.clone(),
            idempotency,
            config.intake.clone(),
            intake_tasks.clone(),
        ));
        let catalog = live_catalog.clone();
        api_router = api_router
            .route("/catalog", get(move || async move { Json(catalog.current().as_ref().clone()) }))
            .merge(intake_router(server));
        api_routes.push("GET /catalog");
        api_routes.extend(govex_adapters::intake::http::ROUTES);
        intake = Some(accepting);
    }
    // The e-licence store's database also holds the use log, which the dossier API writes
    // too: every read of personal data lands in one chain.
    let licences = match runs(Component::Elicense) || runs(Component::Dossier) {
        true => {
            let elicense_dir = config.data_dir.join("elicense");
            Some(
                LicenceStore::open(&elicense_dir)
                    .with_context(|| format!("e-licence store {} cannot be opened", elicense_dir.display()))?,
            )
        }
        false => None,
    };
    // The use log outside the node's disk: restored from its topic where the disk lacks
    // entries (a lost or older volume), then replicated before every answer and anchored.
    if let Some(licences) = &licences {
        let writer = config.use_log_writer();
        let use_log = licences.use_log().clone();
        let (replicated, _) = govex_sinks::use_log::replicated(&bus, &registry, &writer)
            .await
            .map_err(anyhow::Error::msg)
            .context("the replicated use log cannot be read")?;
        let restored = use_log.restore(&replicated).context("the use log cannot be restored from its topic")?;
        if restored > 0 {
            tracing::warn!(restored, writer, "use-log entries missing on disk were restored from the topic");
        }
        let replication = govex_sinks::use_log::Replication::new(&bus, &registry, writer, config.division).await?;
        use_log.replicate(Arc::new(replication));
        let (stop, every) = (background.clone(), Duration::from_secs(config.audit.anchor_interval_secs.max(1)));
        background_tasks.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                let stopping = tokio::select! {
                    _ = stop.cancelled() => true,
                    _ = ticks.tick() => false,
                };
                match use_log.anchor().await {
                    Ok(Some(anchor)) if stopping => tracing::info!(seq = anchor.seq, "use log anchored at shutdown"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "the use log could not be anchored; trying again"),
                }
                if stopping {
                    break;
                }
            }
        });
    }
    let dossiers = match runs(Component::Dossier) {
        true => {
            let dossier_dir = config.data_dir.join("dossier");
            Some(
                DossierStore::open(&dossier_dir)
                    .with_context(|| format!("dossier store {} cannot be opened", dossier_dir.display()))?,
            )
        }
        false => None,
    };
    if let (true, Some(licences)) = (runs(Component::Elicense), &licences) {
        let licence_resource =
            catalog.by_topic(elicense::TOPIC).cloned().context("the catalogue has no entry for e-licences")?;
        let licence_api = Arc::new(LicenceApi {
            store: licences.clone(),
            tokens: tokens.clone(),
            resource: licence_resource,
            catalog: live_catalog.clone(),
            metrics: ApiMetrics::register(&metrics),
            zone: config.time_zone.clone(),
        });
        api_router = api_router.merge(elicense::api::router(licence_api));
        api_routes.extend(elicense::api::ROUTES);
        let sink = Arc::new(LicenceSink::new(licences.clone(), registry.clone(), SinkMetrics::register(&metrics)));
        let (bus, metrics, stop, group_id) = (bus.clone(), metrics.clone(), background.clone(), group("elicense"));
        background_tasks.spawn(async move {
            if let Err(e) = elicense::sink::run(sink, &bus, group_id, &metrics, stop).await {
                tracing::error!(error = %e, "the e-licence sink could not start");
            }
        });
    }
    if let (Some(dossiers), Some(licences)) = (dossiers, &licences) {
        let dossier_api = Arc::new(DossierApi {
            store: dossiers.clone(),
            tokens: tokens.clone(),
            catalog: live_catalog.clone(),
            use_log: licences.use_log().clone(),
        });
        api_router = api_router.merge(dossier::api::router(dossier_api));
        api_routes.extend(dossier::api::ROUTES);
        let sink = Arc::new(DossierSink::new(dossiers, registry.clone(), config.time_zone.clone()));
        let (bus, metrics, stop, group_id) = (bus.clone(), metrics.clone(), background.clone(), group("dossier"));
        let catalog = live_catalog.clone();
        background_tasks.spawn(async move {
            if let Err(e) = dossier::run(sink, &bus, group_id, &metrics, catalog, stop).await {
                tracing::error!(error = %e, "the dossier sink could not start");
            }
        });
    }
    if runs(Component::Cases) {
        let cases_dir = config.data_dir.join("cases");
        let case_stats = Arc::new(
            govex_sinks::case_stats::CaseStats::open(&cases_dir, registry.clone(), &metrics)
                .with_context(|| format!("case statistics store {} cannot be opened", cases_dir.display()))?,
        );
        let (bus, stop, group_id) = (bus.clone(), background.clone(), group("cases"));
        background_tasks.spawn(async move {
            if let Err(e) = govex_sinks::case_stats::run(case_stats, &bus, group_id, stop).await {
                tracing::error!(error = %e, "the case statistics sink could not start");
            }
        });
    }
    if runs(Component::Bridge) {
        // Level bridges: pull up-routes from the children's clusters, down-routes from the parent's.
        if bridge_links.is_empty() && !config.components.is_empty() {
            tracing::warn!(
                "the bridge component runs, but [bridge] configures no parent or children: nothing to forward"
            );
        }
        if !bridge_links.is_empty() {
            let bridge = Arc::new(govex_sinks::level_bridge::Bridge::new(
                config.division,
                bus.clone(),
                registry.clone(),
                config.bridge.clone(),
                govex_sinks::level_bridge::BridgeMetrics::register(&metrics),
                govex_bus::dlq::DeadLetterQueue::new(bus.producer().clone(), "level-bridge", &metrics),
            ));
            for link in bridge_links {
                let (bridge, stop, prefix) = (bridge.clone(), background.clone(), config.bus.group_prefix.clone());
                let catalog = live_catalog.clone();
                tracing::info!(link = %link.name, remote = %link.bootstrap, topics = ?link.topics, "bridge link starting");
                background_tasks.spawn(async move {
                    let name = link.name.clone();
                    if let Err(e) = bridge.run_link(link, &prefix, catalog, stop).await {
                        tracing::error!(link = %name, error = %e, "a bridge link could not start");
                    }
                });
            }
        }
    }

    let limits = config.listen.limits();
    let api_addr = match api_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let connections = intake_tasks.clone();
            let stop = Stop { stop: intake_stop.clone(), cut: cut.clone() };
            let api_router = with_route_list(api_router, api_routes.iter().map(|r| r.to_string()).collect());
            intake_tasks.spawn(serve(listener, api_tls, api_router, limits, stop, connections));
            Some(addr)
        }
        None => None,
    };
    let ops_addr = ops_listener.local_addr()?;
    let readiness = Readiness { bus: uses_bus.then(|| bus.clone()), registry: registry.clone() };
    let ops_router = ops::router(metrics.clone(), readiness.watch(background.clone()))
        .route("/openapi.json", openapi::route(openapi::OPS));
    let ops_router = with_route_list(ops_router, openapi::routes(openapi::OPS));
    // The ops port has connections of its own: a flood on the API leaves the probes answering.
    let connections = background_tasks.clone();
    let stop = Stop { stop: background.clone(), cut: cut.clone() };
    background_tasks.spawn(serve(ops_listener, None, ops_router, limits, stop, connections));
    let registry_addr = match (registry_listener, registry.local_store()) {
        // A read replica serves its view too.
        (Some(listener), Some(store)) => {
            let addr = listener.local_addr()?;
            let access = Arc::new(RegistryAccess {
                tokens: tokens.clone(),
                http_writes: config.registry.http_writes,
                read_access: config.registry.read_access,
            });
            // The document is open to read, whatever the registry's access rules.
            let mut router = govex_schemas::http::router(store.clone(), access)
                .route("/openapi.json", openapi::route(openapi::REGISTRY));
            if let Some(writer) = &config.registry.writer_url {
                router = router.layer(axum::middleware::from_fn_with_state(
                    Arc::new(forward::Writer::new(writer, store.clone())),
                    forward::writes_to_the_writer,
                ));
            }
            let router = with_route_list(router, openapi::routes(openapi::REGISTRY));
            let connections = background_tasks.clone();
            let stop = Stop { stop: background.clone(), cut: cut.clone() };
            background_tasks.spawn(serve(listener, registry_tls, router, limits, stop, connections));
            Some(addr)
        }
        _ => None,
    };
    tracing::info!(division = %config.division, components = ?components, api_addr = ?api_addr, %ops_addr, topics = topics.len(), "node started");
    Ok(RunningNode {
        config,
        components,
        api_addr,
        registry_addr,
        ops_addr,
        bus,
        registry,
        _schema_log: schema_log,
        metrics,
        topics,
        intake,
        intake_stop,
        cut,
        intake_tasks,
        background,
        background_tasks,
    })
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
        self.background.clone()
    }

    /// Runs a background component (a sink's consumer) under the node's shutdown.
    pub fn spawn_background<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.background_tasks.spawn(task);
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
            let cut = self.cut.clone();
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
        cut_at_deadline(self.intake_tasks.clone(), "intake").await;

        tracing::info!("draining consumers");
        self.background.cancel();
        cut_at_deadline(self.background_tasks.clone(), "consumers, ops and registry").await;

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

/// A read replica's forwarding of registry writes to the writer, as Confluent's followers
/// forward to their leader: the caller's method, path, query, token and body, the writer's
/// answer unchanged. Reads (and the POSTs that only read: a lookup, a compatibility test) are
/// served from the replica's own view.
mod forward {
    use std::time::Duration;

    use axum::{
        body::{to_bytes, Body},
        extract::{Request, State},
        http::{header, Method, StatusCode},
        middleware::Next,
        response::{IntoResponse, Response},
    };

    /// The largest body forwarded: a schema, with room to spare.
    const MAX_BODY: usize = 4 * 1024 * 1024;

    pub struct Writer {
        base: String,
        client: reqwest::Client,
        /// This replica's view, which a forwarded write waits for before it is answered.
        view: govex_schemas::Registry,
    }

    impl Writer {
        pub fn new(base: &str, view: govex_schemas::Registry) -> Self {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default();
            Self { base: base.trim_end_matches('/').to_owned(), client, view }
        }
    }

    /// Whether a request changes the registry.
    fn is_write(method: &Method, path: &str) -> bool {
        match *method {
            Method::PUT | Method::DELETE => true,
            Method::POST => path.starts_with("/subjects/") && path.ends_with("/versions"),
            _ => false,
        }
    }

    fn failed(message: String) -> Response {
        let body = serde_json::json!({ "error_code": 50003, "message": message }).to_string();
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, govex_schemas::http::CONTENT_TYPE)], body)
            .into_response()
    }

    pub async fn writes_to_the_writer(
        State(writer): State<std::sync::Arc<Writer>>,
        request: Request,
        next: Next,
    ) -> Response {
        if !is_write(request.method(), request.uri().path()) {
            return next.run(request).await;
        }
        let (parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(body) = to_bytes(body, MAX_BODY).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large").into_response();
        };
        let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
            return failed("the method cannot be forwarded".into());
        };
        let mut forwarded = writer.client.request(method, format!("{}{path_and_query}", writer.base)).body(body);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
                forwarded = forwarded.header(name.as_str(), value);
            }
        }
        let answer = match forwarded.send().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(writer = %writer.base, error = %e, "a registry write could not be forwarded to the writer");
                return failed(format!("error while forwarding the request to the registry's writer: {e}"));
            }
        };
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(govex_schemas::http::CONTENT_TYPE)
            .to_owned();
        if status.is_success() {
            // Read-your-writes on this replica: its view takes the write before the answer.
            let view = writer.view.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || view.caught_up()).await {
                tracing::warn!(error = %e, "a forwarded write is answered before this replica's view has it");
            }
        }
        match answer.bytes().await {
            Ok(bytes) => (status, [(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response(),
            Err(e) => failed(format!("the registry's writer's answer could not be read: {e}")),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn writes_are_told_from_reads_that_post() {
            assert!(is_write(&Method::POST, "/subjects/a-value/versions"));
            assert!(is_write(&Method::PUT, "/config"));
            assert!(is_write(&Method::DELETE, "/subjects/a-value"));
            assert!(!is_write(&Method::POST, "/subjects/a-value"));
            assert!(!is_write(&Method::POST, "/compatibility/subjects/a-value/versions"));
            assert!(!is_write(&Method::GET, "/subjects/a-value/versions"));
        }
    }
}
