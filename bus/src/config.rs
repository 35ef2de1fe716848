//! Node configuration: a TOML file, then `GOVEX_*` environment overrides, into typed structs.
//!
//! Every struct denies unknown fields so that a misspelt key fails at start instead of being
//! silently ignored. Nested keys are set from the environment with a double underscore
//! between levels: `GOVEX_BUS__BROKERS=kafka-1:9092` sets `bus.brokers`,
//! `GOVEX_DATA_DIR=/var/lib/govex` sets `data_dir`, and
//! `GOVEX_BUS__PROPERTIES__SASL_MECHANISM=SCRAM-SHA-512` sets the librdkafka property
//! `sasl.mechanism` (single underscores inside a property name become dots there).
//! `GOVEX_COMPONENTS=intake,bridge` sets a list (comma-separated).
//!
//! A string value in a config file may refer to environment variables as `${NAME}` (write
//! `$${` for a literal `${`), so that secrets such as a SASL password come from a Kubernetes
//! Secret instead of the file itself. A variable that is not set is an error naming it and
//! the key. Comments are not touched.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::division::Division;

/// The prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "GOVEX_";

/// Everything one node needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The GB/T 2260 code of the division this node serves, e.g. `"610921"`.
    pub division: Division,
    /// Directory for everything that must survive a restart (registry, stores, audit log).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The resource catalogue to go by (a steward's `catalog.toml`, a mounted ConfigMap); by
    /// default the one the binary bundles. Re-read when it changes, without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_file: Option<PathBuf>,
    /// The Kafka bus: an external cluster, or the embedded one when `brokers` is absent.
    #[serde(default)]
    pub bus: BusConfig,
    /// The schema registry the codec resolves ids through.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Addresses the node's HTTP servers bind.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Department intake over HTTP.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// Level bridges to the parent and child nodes' clusters.
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// Limits of the department-facing read APIs (licences, holders, dossiers).
    #[serde(default)]
    pub api: ApiConfig,
    /// The use log's replication to Kafka and its anchors.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The time zone times are shown to people in (API answers, the command line):
    /// `Asia/Shanghai` (the default), another of China's zones, `UTC`, or `+HH:MM`.
    #[serde(default)]
    pub time_zone: crate::zone::TimeZone,
    /// The parts of a node this process runs. Empty (the default): all of them, except the
    /// registry when `registry.url` names another. A Kubernetes deployment splits one node
    /// into processes: intake in a Deployment, the registry and the stores in StatefulSets,
    /// bridges apart.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// The use log outside the node's disk: every entry is published to `gov.audit.use-log.v1`
/// before the read it records is answered, and the chain's head to the compacted
/// `gov.audit.anchor.v1` regularly and at shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The name of this process's use log in the topics: stable across restarts and lost
    /// volumes (a StatefulSet pod's name), different for every e-licence replica. Default:
    /// `<division>-<HOSTNAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Seconds between anchors of the chain's head.
    #[serde(default = "default_anchor_interval_secs")]
    pub anchor_interval_secs: u64,
}

fn default_anchor_interval_secs() -> u64 {
    30
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { writer: None, anchor_interval_secs: default_anchor_interval_secs() }
    }
}

/// `GOVEX_*` variables that belong to a command's own options, not to the node's settings.
const COMMAND_VARIABLES: [&str; 2] = ["CONFIG", "REGISTRY_URL"];

impl NodeConfig {
    /// The name of this process's use log (see [`AuditConfig::writer`]).
    pub fn use_log_writer(&self) -> String {
        self.audit.writer.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into());
            format!("{}-{host}", self.division)
        })
    }
}

/// A part of a node, run by any process whose `components` list names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// The Confluent-compatible schema registry, stored under `data_dir/registry`.
    Registry,
    /// The department intake API (`POST /v1/{department}/{record}` and its `:validate`,
    /// batch and schema routes), `GET /` and `GET /catalog`.
    Intake,
    /// The e-licence store: its sink, and its licence, verify and use-log APIs.
    Elicense,
    /// The shared views per property unit: their sink and API.
    Dossier,
    /// Case statistics (on-time completion per division), exposed as metrics.
    Cases,
    /// The level bridges configured under `[bridge]`.
    Bridge,
}

impl Component {
    /// Every component, in start-up order (the order of the enum).
    pub const ALL: [Component; 6] = [
        Component::Registry,
        Component::Intake,
        Component::Elicense,
        Component::Dossier,
        Component::Cases,
        Component::Bridge,
    ];

    /// The name used in config files and `GOVEX_COMPONENTS`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Registry => "registry",
            Component::Intake => "intake",
            Component::Elicense => "elicense",
            Component::Dossier => "dossier",
            Component::Cases => "cases",
            Component::Bridge => "bridge",
        }
    }

    /// Whether the component serves routes on the API listener.
    pub fn serves_api(self) -> bool {
        matches!(self, Component::Intake | Component::Elicense | Component::Dossier)
    }
}

impl NodeConfig {
    /// The components this process runs (see [`NodeConfig::components`]).
    pub fn components(&self) -> Vec<Component> {
        if self.components.is_empty() {
            return Component::ALL
                .into_iter()
                .filter(|c| *c != Component::Registry || self.registry.url.is_none())
                .collect();
        }
        let mut listed = self.components.clone();
        listed.sort();
        listed.dedup();
        listed
    }

    /// Whether this process runs `component`.
    pub fn runs(&self, component: Component) -> bool {
        self.components().contains(&component)
    }

    /// Whether any component of this process serves the API (and so reads tokens).
    pub fn serves_api(&self) -> bool {
        self.components().iter().any(|c| c.serves_api())
    }
}

/// Level bridges: this node pulls down-routes from its parent's cluster and up-routes from
/// each child's cluster into its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The parent node's cluster; its division is derived from this node's unless given.
    #[serde(default)]
    pub parent: Option<LinkConfig>,
    /// Child nodes' clusters.
    #[serde(default)]
    pub children: Vec<LinkConfig>,
    /// Topics that travel up, child to parent (case events, statistics). Default:
    /// `gov.case.event.v1`.
    #[serde(default = "default_up_topics")]
    pub up_topics: Vec<String>,
    /// Topics that travel down, parent to child (licences and their revocations, catalogue
    /// changes). Default: `gov.elicense.licence.v1`.
    #[serde(default = "default_down_topics")]
    pub down_topics: Vec<String>,
    /// Forward only records whose origin division starts with one of these; empty: all.
    #[serde(default)]
    pub origin_prefixes: Vec<String>,
    /// Forward only these record types; empty: all.
    #[serde(default)]
    pub record_types: Vec<String>,
}

/// One neighbour's cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// The neighbour's division (required for children; derived for the parent when absent).
    #[serde(default)]
    pub division: Option<Division>,
    /// The neighbour cluster's bootstrap servers.
    pub brokers: String,
    /// The neighbour's schema registry (`http://...`). Schema ids belong to a registry: a
    /// forwarded record's id is looked up there and translated to this node's registry.
    #[serde(default)]
    pub registry: Option<String>,
    /// A token for reading the neighbour's registry, when it wants one for reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_token: Option<String>,
    /// TLS for an `https://` neighbour registry (its CA; a client certificate for mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_tls: Option<RegistryTlsConfig>,
    /// librdkafka properties for this cluster (SASL/TLS).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            parent: None,
            children: Vec::new(),
            up_topics: default_up_topics(),
            down_topics: default_down_topics(),
            origin_prefixes: Vec::new(),
            record_types: Vec::new(),
        }
    }
}

fn default_up_topics() -> Vec<String> {
    // Use-log anchors go up too: the parent keeps each child's latest head, off the
    // child's own cluster.
    vec![govex_schemas::records::topics::CASE_EVENT.into(), govex_schemas::records::topics::ANCHOR.into()]
}
fn default_down_topics() -> Vec<String> {
    vec![govex_schemas::records::topics::LICENCE.into()]
}

/// Department intake: limits, idempotency, and the departments' tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Largest body of a single-record request.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest body of a batch (NDJSON) request.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Most lines in one batch; counted as the body arrives, so a batch over the limit is
    /// refused before it is read whole.
    #[serde(default = "default_max_batch_lines")]
    pub max_batch_lines: usize,
    /// The bytes of request bodies the intake holds at once, over all requests; a request
    /// that would pass it is answered 503 (retry later) while it is still being read. Bounds
    /// the intake's memory: checking and publishing take about three times the body.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Seconds a client may take to send a whole body, however steadily it sends: a client
    /// trickling a large body must not hold its share of `max_in_flight_bytes` for ever.
    #[serde(default = "default_max_body_secs")]
    pub max_body_secs: u64,
    /// How long an `Idempotency-Key` and its first answer are remembered.
    #[serde(default = "default_idempotency_window_secs")]
    pub idempotency_window_secs: u64,
    /// How often the intake asks the registry for newer versions of the record types, in
    /// milliseconds: a version a steward pushes is taken within this time (and one registry
    /// read), without a restart. At least 100.
    #[serde(default = "default_schema_refresh_ms")]
    pub schema_refresh_ms: u64,
    /// Department tokens, stored only as SHA-256 hashes (`govex token new <department>`
    /// makes one).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// A TOML file of further `[[tokens]]` entries, read at start: a mounted Kubernetes Secret,
    /// so that token hashes are managed apart from the rest of the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
}

/// The shape of `intake.tokens_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenConfig>,
}

impl IntakeConfig {
    /// The tokens of the config file and of `tokens_file`, together.
    pub fn all_tokens(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        let mut tokens = self.tokens.clone();
        if let Some(path) = &self.tokens_file {
            let origin = format!("tokens file {}", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                origin: origin.clone(),
                key: String::new(),
                message: format!("cannot read it: {e}"),
            })?;
            let file: TokensFile = toml::from_str(&text).map_err(|e| ConfigError {
                origin,
                key: "tokens".into(),
                message: e.message().to_owned(),
            })?;
            tokens.extend(file.tokens);
        }
        Ok(tokens)
    }
}

/// One bearer token: a department system's, a data steward's or an auditor's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The department the token belongs to (`land-registry`, `housing`, `tax`,
    /// `provident-fund`, `platform`); a steward's or auditor's token names the department
    /// they work for, for the use log.
    pub department: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// A label for logs (the calling system), never the token.
    #[serde(default)]
    pub label: Option<String>,
    /// What the token may do (default `department`).
    #[serde(default)]
    pub role: Role,
}

/// What a token may do. Roles do not add up: a steward's token cannot send records, a
/// department's token cannot write the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A department system: sends its own records, reads what the catalogue shares with it.
    #[default]
    Department,
    /// A data steward: writes the schema registry (registers, deletes, sets levels and modes).
    Steward,
    /// An auditor: reads every entry of the use log; sends and reads no records.
    Auditor,
}

impl Role {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::Steward => "steward",
            Role::Auditor => "auditor",
        }
    }
}

/// Limits of the department-facing read APIs. Each token has its own budget, so one
/// department's load (or one stolen token) cannot starve the others, and a caller trying
/// guesses gets a few hundred answers a second at most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Sustained reads (licence, holder, verify, use-log and dossier calls) per second per
    /// token; 0 turns the limit off.
    #[serde(default = "default_reads_per_second")]
    pub reads_per_second: u32,
    /// Reads a token may make at once above the sustained rate (the bucket's size).
    #[serde(default = "default_read_burst")]
    pub read_burst: u32,
}

fn default_reads_per_second() -> u32 {
    100
}
fn default_read_burst() -> u32 {
    200
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { reads_per_second: default_reads_per_second(), read_burst: default_read_burst() }
    }
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_batch_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_max_batch_lines() -> usize {
    10_000
}
fn default_max_body_secs() -> u64 {
    // 32 MiB at 2 Mbit/s.
    150
}
fn default_max_in_flight_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_schema_refresh_ms() -> u64 {
    2_000
}

fn default_idempotency_window_secs() -> u64 {
    24 * 60 * 60
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            max_batch_bytes: default_max_batch_bytes(),
            max_batch_lines: default_max_batch_lines(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            max_body_secs: default_max_body_secs(),
            idempotency_window_secs: default_idempotency_window_secs(),
            schema_refresh_ms: default_schema_refresh_ms(),
            tokens: Vec::new(),
            tokens_file: None,
        }
    }
}

/// Kafka settings shared by every producer and consumer of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Bootstrap servers of an external Kafka cluster (`host:port,host:port`). When absent the
    /// node runs an embedded in-memory bus, for trial use only.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Number of brokers of the embedded bus.
    #[serde(default = "default_embedded_brokers")]
    pub embedded_brokers: i32,
    /// Partitions of each topic the node creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of each topic the node creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Retention of the event topics and dead-letter topics the node creates, in ms (-1:
    /// for ever). The topics a store is rebuilt from (`bus.compacted_topics`) are compacted
    /// and kept for ever whatever this says.
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// Topics that are a system of record for a store (rebuilt from them): created compacted,
    /// with unlimited retention.
    #[serde(default = "default_compacted_topics")]
    pub compacted_topics: Vec<String>,
    /// How long the producer keeps retrying one record before it reports a failure.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// How long the producer waits to fill a batch.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Batch compression: `none`, `gzip`, `lz4` or `snappy`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Consumer group prefix; each sink appends its own name.
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Consumer session timeout.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// librdkafka properties passed through unchanged to every client, for SASL and TLS
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Whether the cluster is librdkafka's mock cluster (the embedded bus, the demo), which
    /// differs from a real broker in two ways that cost seconds:
    /// - its classic consumer groups wait `group.initial.rebalance.delay.ms` (3 s, not
    ///   settable from a client) before the first assignment, so consumers use KIP-848's
    ///   consumer group protocol (`group.protocol=consumer`), which has no such wait;
    /// - it holds every fetch for the whole `fetch.wait.max.ms` (500 ms by default) even when
    ///   records arrive, where a real broker answers at once, so consumers wait 50 ms.
    ///
    /// Not a setting: on a Kafka 4 cluster an operator may set `properties."group.protocol"`.
    #[serde(skip)]
    pub mock_cluster: bool,
}

/// Where the schema registry is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible registry. When absent the node serves its own
    /// registry, stored under `data_dir`, on `listen.registry`.
    #[serde(default)]
    pub url: Option<String>,
    /// A steward token this process sends to the registry at `url` (as `${NAME}`, from a
    /// Secret). Needed only where the registry lacks a bundled schema this process would
    /// register; reads are sent with it too, for registries that require a token to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Whether the served registry takes writes over HTTP at all (from steward tokens only).
    /// Off, every write is refused (403, 40301); the node still registers its bundled
    /// schemas in process.
    #[serde(default = "default_true")]
    pub http_writes: bool,
    /// Who may read the served registry: `open` (anyone who reaches the port, as Confluent's
    /// registry without authentication) or `token` (any configured token).
    #[serde(default)]
    pub read_access: ReadAccess,
    /// TLS towards the registry at an `https://` `url`: the CA to trust and, for a registry
    /// that wants mutual TLS, this process's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTlsConfig>,
    /// Makes this process's registry a read replica: it serves the registry's API from its
    /// own view of the registry's topic and forwards every write to the registry at this
    /// URL (the one writer). Absent: this process's registry is the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_url: Option<String>,
}

/// TLS of this process towards an external registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTlsConfig {
    /// PEM file with the CA certificates the registry's certificate must chain to (an
    /// `https://` registry needs one: no public roots are built in).
    pub ca_path: PathBuf,
    /// PEM file with this process's certificate chain, for a registry that wants mutual TLS.
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// PEM file with that certificate's private key.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { url: None, token: None, http_writes: true, read_access: ReadAccess::Open, tls: None, writer_url: None }
    }
}

/// Who may read the served registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAccess {
    /// Anyone who reaches the port.
    #[default]
    Open,
    /// Any configured token (department, steward or auditor).
    Token,
}

/// Listen addresses. Port 0 picks a free port; the node prints what it bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Department-facing APIs.
    #[serde(default = "default_api_listen")]
    pub api: SocketAddr,
    /// The in-process schema registry (unused when `registry.url` is set).
    #[serde(default = "default_registry_listen")]
    pub registry: SocketAddr,
    /// Operations: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_ops_listen")]
    pub ops: SocketAddr,
    /// TLS for the API listener; with `client_ca_path`, mutual TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// TLS for the registry listener; with `client_ca_path`, mutual TLS: a client without a
    /// certificate from that CA cannot connect, whatever token it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_tls: Option<TlsConfig>,
    /// Connections each listener serves at once; more are closed as they arrive, so that a
    /// flood on one port leaves the others, and the health checks, answering.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers, counted from when the
    /// connection is ready for the next request.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client may pause while sending a body; a longer pause is answered 408.
    #[serde(default = "default_header_read_timeout_secs")]
    pub body_timeout_secs: u64,
    /// Seconds a TLS client may take to finish its handshake.
    #[serde(default = "default_header_read_timeout_secs")]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit idle between requests before it is closed
    /// (at most `header_read_timeout_secs`, which also runs while a connection waits).
    #[serde(default = "default_keep_alive_idle_secs")]
    pub keep_alive_idle_secs: u64,
    /// Seconds shutdown lets requests in progress finish; then their connections are cut (a
    /// publish that started still completes and is flushed). Keep it well below the
    /// orchestrator's kill deadline (the chart's `terminationGracePeriodSeconds`, 60), which
    /// must also cover draining the consumers and flushing the producer.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout_secs() -> u64 {
    10
}
fn default_keep_alive_idle_secs() -> u64 {
    5
}
fn default_shutdown_grace_secs() -> u64 {
    15
}

impl ListenConfig {
    /// The limits every listener is served with.
    pub fn limits(&self) -> crate::server::ServeLimits {
        crate::server::ServeLimits {
            max_connections: self.max_connections,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs.max(1)),
            tls_handshake_timeout: std::time::Duration::from_secs(self.tls_handshake_timeout_secs.max(1)),
            keep_alive_idle: std::time::Duration::from_secs(self.keep_alive_idle_secs.max(1)),
        }
    }

    /// How long shutdown lets requests in progress finish.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// TLS of the department-facing API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain.
    pub cert_path: PathBuf,
    /// PEM file with the server's private key.
    pub key_path: PathBuf,
    /// PEM file with the CA certificates department systems' client certificates must chain
    /// to. When set, a client without such a certificate cannot connect (mutual TLS); the
    /// bearer token is still required.
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors. The level filter comes from `RUST_LOG`.
    #[serde(default)]
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("govex-data")
}
fn default_embedded_brokers() -> i32 {
    3
}
fn default_partitions() -> i32 {
    3
}
fn default_retention_ms() -> i64 {
    // 30 days: a month for a sink that was down, or a replay, to read the events again.
    30 * 24 * 3_600_000
}
fn default_compacted_topics() -> Vec<String> {
    // The e-licence store is rebuilt from its topic; the use log is restored from its topic
    // (each entry has a key of its own, so compaction keeps them all); an anchor is the latest
    // head per use log.
    vec![
        govex_schemas::records::topics::LICENCE.into(),
        govex_schemas::records::topics::USE_LOG.into(),
        govex_schemas::records::topics::ANCHOR.into(),
    ]
}
fn default_replication_factor() -> i32 {
    3
}
fn default_delivery_timeout_ms() -> u64 {
    120_000
}
fn default_linger_ms() -> u64 {
    5
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_group_prefix() -> String {
    "govex".into()
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_registry_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl BusConfig {
    /// The settings every topic the node creates gets, as Kafka topic configs: compacted
    /// and kept for ever for a topic a store is rebuilt from (a broker's default 7-day
    /// retention would delete licences from their system of record), deleted after
    /// `retention_ms` otherwise; and `min.insync.replicas` = min(2, replication factor), so
    /// that `acks=all` means at least two copies wherever there can be two.
    pub fn topic_settings(&self, topic: &str) -> Vec<(&'static str, String)> {
        let min_insync = self.replication_factor.clamp(1, 2);
        // The registry's topic is its primary data: compacted and kept whatever the list says.
        let compacted = topic == govex_schemas::journal::TOPIC || self.compacted_topics.iter().any(|t| t == topic);
        let mut settings = match compacted {
            true => vec![("cleanup.policy", "compact".to_owned()), ("retention.ms", "-1".to_owned())],
            false => vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", self.retention_ms.to_string())],
        };
        settings.push(("min.insync.replicas", min_insync.to_string()));
        settings
    }

    /// What in an existing topic's configs contradicts [`BusConfig::topic_settings`]: a
    /// message per setting, naming it, what the topic has and what it needs.
    pub fn topic_contradictions(
        &self,
        topic: &str,
        existing: &std::collections::HashMap<String, String>,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for (name, wanted) in self.topic_settings(topic) {
            let Some(actual) = existing.get(name) else { continue };
            let contradicts = match name {
                // More copies than asked for is not a contradiction.
                "min.insync.replicas" => actual.parse::<i32>().is_ok_and(|a| a < wanted.parse().unwrap_or(1)),
                "retention.ms" if wanted == "-1" => actual != "-1",
                "retention.ms" => {
                    actual != "-1" && actual.parse::<i64>().is_ok_and(|a| a < wanted.parse().unwrap_or(i64::MAX))
                }
                "cleanup.policy" if wanted == "compact" => !actual.split(',').any(|p| p.trim() == "compact"),
                _ => false,
            };
            if contradicts {
                found.push(format!("topic {topic}: {name} is {actual}, govex needs {wanted}"));
            }
        }
        found
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            embedded_brokers: default_embedded_brokers(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            retention_ms: default_retention_ms(),
            compacted_topics: default_compacted_topics(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            linger_ms: default_linger_ms(),
            compression: default_compression(),
            group_prefix: default_group_prefix(),
            session_timeout_ms: default_session_timeout_ms(),
            properties: BTreeMap::new(),
            mock_cluster: false,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            api: default_api_listen(),
            registry: default_registry_listen(),
            ops: default_ops_listen(),
            tls: None,
            registry_tls: None,
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            body_timeout_secs: default_header_read_timeout_secs(),
            tls_handshake_timeout_secs: default_header_read_timeout_secs(),
            keep_alive_idle_secs: default_keep_alive_idle_secs(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
        }
    }
}

/// A configuration error: where it came from, which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `config file <path>`, `environment variable GOVEX_...` or `built-in default config`.
    pub origin: String,
    /// The dotted key, empty when the error is not about one key (a TOML syntax error).
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: key `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    /// The built-in configuration `govex` runs with no arguments: division 610900 (Ankang),
    /// the embedded bus, the in-process registry, data under `./govex-data`.
    pub fn embedded_default() -> Self {
        Self {
            division: Division::parse("610900").unwrap_or_else(|_| unreachable!("610900 is a valid division code")),
            data_dir: default_data_dir(),
            catalog_file: None,
            bus: BusConfig::default(),
            registry: RegistryConfig::default(),
            listen: ListenConfig::default(),
            log: LogConfig::default(),
            intake: IntakeConfig::default(),
            bridge: BridgeConfig::default(),
            api: ApiConfig::default(),
            audit: AuditConfig::default(),
            time_zone: Default::default(),
            components: Vec::new(),
        }
    }

    /// Loads `file` (or the built-in default when `None`) and applies the `GOVEX_*`
    /// variables of `env` on top.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file_origin = match file {
            Some(path) => format!("config file {}", path.display()),
            None => "built-in default config".to_owned(),
        };
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    origin: file_origin.clone(),
                    key: String::new(),
                    message: format!("cannot read it: {e}"),
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError {
                    origin: file_origin.clone(),
                    key: String::new(),
                    message: e.to_string().trim_end().to_owned(),
                })?
            }
            None => to_table(&Self::embedded_default()),
        };
        // Values (not comments, not keys) may refer to the environment: `${NAME}`.
        interpolate_table(&mut table, &env, "").map_err(|(key, message)| ConfigError {
            origin: file_origin.clone(),
            key,
            message,
        })?;
        let defaults = to_table(&Self::embedded_default());
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            // The commands' own variables, read by the command line, not here: GOVEX_CONFIG
            // names the file itself, GOVEX_REGISTRY_URL the registry `govex schema` talks to.
            // A node's settings always have a double underscore between sections.
            if COMMAND_VARIABLES.contains(&rest) || rest.is_empty() {
                continue;
            }
            let path = env_key_path(rest);
            set_path(&mut table, &path, &value, &defaults);
            from_env.push((path.join("."), name));
        }
        let deserializer = toml::Value::Table(table);
        serde_path_to_error::deserialize::<_, NodeConfig>(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let origin = from_env
                .iter()
                .find(|(path, _)| {
                    key == *path
                        || key.starts_with(&format!("{path}."))
                        || key.starts_with(&format!("{path}["))
                        || path.starts_with(&format!("{key}."))
                })
                .map_or(file_origin.clone(), |(_, name)| format!("environment variable {name}"));
            ConfigError { origin, key, message: e.into_inner().to_string() }
        })
    }
}

/// Applies [`interpolate`] to every string value under `table`; an error names the key.
fn interpolate_table(table: &mut toml::Table, env: &[(String, String)], prefix: &str) -> Result<(), (String, String)> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        interpolate_value(value, env, &path)?;
    }
    Ok(())
}

fn interpolate_value(value: &mut toml::Value, env: &[(String, String)], path: &str) -> Result<(), (String, String)> {
    match value {
        toml::Value::String(text) if text.contains('$') => {
            *text = interpolate(text, env).map_err(|message| (path.to_owned(), message))?;
        }
        toml::Value::Table(table) => interpolate_table(table, env, path)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, env, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces `${NAME}` with the value of the environment variable `NAME` (looked up in `env`);
/// `$${` stands for a literal `${`. Any other `$` is left as it is.
fn interpolate(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err("a `${` is not closed by `}` (write `$${` for a literal `${`)".into());
        };
        let name = &body[..end];
        let well_formed = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(format!("`${{{name}}}` is not an environment variable reference (letters, digits, `_`)"));
        }
        let value = env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .ok_or_else(|| format!("it refers to the environment variable {name}, which is not set"))?;
        out.push_str(value);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn to_table(config: &NodeConfig) -> toml::Table {
    match toml::Value::try_from(config) {
        Ok(toml::Value::Table(table)) => table,
        // A struct always serialises to a table; anything else is a bug in this module.
        other => unreachable!("NodeConfig serialised to {other:?}"),
    }
}

/// `BUS__PROPERTIES__SASL_MECHANISM` → `["bus", "properties", "sasl.mechanism"]`.
fn env_key_path(rest: &str) -> Vec<String> {
    let parts: Vec<&str> = rest.split("__").collect();
    let in_properties =
        parts.len() == 3 && parts[0].eq_ignore_ascii_case("bus") && parts[1].eq_ignore_ascii_case("properties");
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let lower = part.to_ascii_lowercase();
            if in_properties && i == 2 {
                lower.replace('_', ".")
            } else {
                lower
            }
        })
        .collect()
}

/// Sets `path` in `table` to `raw`, typed like the default value at that path: numbers and
/// booleans are parsed, everything else stays a string (division codes look like numbers).
fn set_path(table: &mut toml::Table, path: &[String], raw: &str, defaults: &toml::Table) {
    let default_here = path.iter().try_fold(None::<&toml::Value>, |node, key| {
        let next = match node {
            None => defaults.get(key),
            Some(toml::Value::Table(t)) => t.get(key),
            Some(_) => None,
        };
        next.map(Some)
    });
    let value = match default_here.flatten() {
        // Lists are comma-separated.
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        Some(toml::Value::Integer(_)) => raw.parse().map(toml::Value::Integer).unwrap_or_else(|_| raw.into()),
        Some(toml::Value::Boolean(_)) => raw.parse().map(toml::Value::Boolean).unwrap_or_else(|_| raw.into()),
        Some(toml::Value::Float(_)) => raw.parse().map(toml::Value::Float).unwrap_or_else(|_| raw.into()),
        _ => toml::Value::String(raw.to_owned()),
    };
    let mut node = table;
    for key in &path[..path.len() - 1] {
        let entry = node.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        node = match entry {
            toml::Value::Table(t) => t,
            _ => unreachable!("made a table just above"),
        };
    }
    node.insert(path[path.len() - 1].clone(), value);
}

/// What a Kafka client is for; each gets its own profile on top of the shared settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole<'a> {
    /// The no-loss producer.
    Producer,
    /// An at-least-once consumer in this group.
    Consumer {
        /// The full consumer group id.
        group_id: &'a str,
    },
    /// Metadata and administration.
    Admin,
}

/// A client context that logs nothing: the clients `check_properties` makes without brokers
/// would otherwise say so.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: rdkafka::error::KafkaError, _: &str) {}
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl BusConfig {
    /// Whether librdkafka takes every property this config gives its producers and
    /// consumers (`bus.compression`, `bus.properties`), checked the way a client's creation
    /// checks them but without starting one: `govex config check` catches what start would
    /// refuse. The error names the setting and librdkafka's reason.
    pub fn check_properties(&self, what: &str) -> Result<(), String> {
        for role in [ClientRole::Producer, ClientRole::Consumer { group_id: "config-check" }] {
            let config = self.client_config("localhost:9092", role);
            let mut created = config.create_native_config().map(drop);
            if created.is_ok() {
                // Some rules span properties and are checked only when a client is made
                // (session.timeout.ms with group.protocol=consumer, say): make one, without
                // brokers, so that it reaches nothing, and quiet (it would say it has none).
                let mut offline = config.clone();
                offline.remove("bootstrap.servers");
                created = match role {
                    ClientRole::Producer => {
                        offline.create_with_context::<_, rdkafka::producer::BaseProducer<Quiet>>(Quiet).map(drop)
                    }
                    _ => offline.create_with_context::<_, rdkafka::consumer::BaseConsumer<Quiet>>(Quiet).map(drop),
                };
            }
            if let Err(error) = created {
                let reason = match &error {
                    rdkafka::error::KafkaError::ClientConfig(_, reason, key, _) => {
                        let setting = match key.as_str() {
                            "compression.type" | "compression.codec" => format!("{what}.compression"),
                            other => format!("{what}.properties.\"{other}\""),
                        };
                        // librdkafka's reason quotes the value: fine for a compression name,
                        // and a secret (sasl.password) takes any value, so never fails here.
                        format!("{setting}: {reason}")
                    }
                    rdkafka::error::KafkaError::ClientCreation(reason) => format!("{what}.properties: {reason}"),
                    other => format!("{what}: {other}"),
                };
                return Err(reason);
            }
        }
        Ok(())
    }

    /// The one place configuration becomes librdkafka properties.
    ///
    /// The profiles are set first and `properties` last, so an operator can override
    /// anything (knowingly) for a real cluster's security settings.
    pub fn client_config(&self, bootstrap: &str, role: ClientRole<'_>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        match role {
            ClientRole::Producer => {
                // The no-loss profile: the broker acknowledges only once every in-sync replica
                // has the record, and the idempotent producer keeps retries from duplicating or
                // reordering it.
                config
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("max.in.flight.requests.per.connection", "5")
                    .set("delivery.timeout.ms", self.delivery_timeout_ms.to_string())
                    .set("linger.ms", self.linger_ms.to_string())
                    .set("compression.type", &self.compression)
                    .set("queue.buffering.max.messages", "1000000");
            }
            ClientRole::Consumer { group_id } => {
                // The at-least-once profile: offsets are stored by the consumer only after the
                // handler says its write is durable; librdkafka then commits what was stored.
                config
                    .set("group.id", group_id)
                    .set("enable.auto.commit", "true")
                    .set("enable.auto.offset.store", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("enable.partition.eof", "false");
                // The consumer protocol has the broker keep the session: librdkafka refuses
                // session.timeout.ms with it.
                let consumer_protocol =
                    self.mock_cluster || self.properties.get("group.protocol").map(String::as_str) == Some("consumer");
                if self.mock_cluster {
                    config.set("group.protocol", "consumer").set("fetch.wait.max.ms", "50");
                }
                if !consumer_protocol {
                    config.set("session.timeout.ms", self.session_timeout_ms.to_string());
                }
            }
            ClientRole::Admin => {}
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_keep_division_a_string_and_parse_numbers() {
        let config = NodeConfig::load(
            None,
            env(&[
                ("GOVEX_DIVISION", "610921"),
                ("GOVEX_BUS__PARTITIONS", "6"),
                ("GOVEX_BUS__BROKERS", "k1:9092"),
                ("GOVEX_BUS__PROPERTIES__SASL_MECHANISM", "SCRAM-SHA-512"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.division.as_str(), "610921");
        assert_eq!(config.bus.partitions, 6);
        assert_eq!(config.bus.brokers.as_deref(), Some("k1:9092"));
        assert_eq!(config.bus.properties["sasl.mechanism"], "SCRAM-SHA-512");
    }

    #[test]
    fn an_env_error_names_the_variable_and_the_key() {
        let error = NodeConfig::load(None, env(&[("GOVEX_BUS__PARTITIONS", "many")])).unwrap_err();
        assert_eq!(error.origin, "environment variable GOVEX_BUS__PARTITIONS");
        assert_eq!(error.key, "bus.partitions");
        assert!(error.message.contains("expected i32"), "{error}");
    }

    #[test]
    fn components_default_to_all_but_an_external_registry_and_come_from_a_comma_list() {
        let all = NodeConfig::load(None, env(&[])).unwrap();
        assert_eq!(all.components(), Component::ALL.to_vec());
        let external = NodeConfig::load(None, env(&[("GOVEX_REGISTRY__URL", "http://registry:8081")])).unwrap();
        assert!(!external.runs(Component::Registry) && external.runs(Component::Intake));
        let split = NodeConfig::load(None, env(&[("GOVEX_COMPONENTS", "bridge, intake")])).unwrap();
        assert_eq!(split.components(), [Component::Intake, Component::Bridge]);
        let error = NodeConfig::load(None, env(&[("GOVEX_COMPONENTS", "intake,mailroom")])).unwrap_err();
        assert_eq!(error.origin, "environment variable GOVEX_COMPONENTS");
        assert!(error.key.starts_with("components"), "{error}");
        assert!(error.message.contains("mailroom"), "{error}");
    }

    #[test]
    fn a_config_file_takes_secrets_from_the_environment_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "# a comment may mention ${ANYTHING}\ndivision = \"610921\"\n[bus.properties]\n\"sasl.password\" = \"${KAFKA_PASSWORD}\"\n\"x.literal\" = \"$${KEEP} costs $5\"\n",
        )
        .unwrap();
        let config = NodeConfig::load(Some(&path), env(&[("KAFKA_PASSWORD", "s3cret")])).unwrap();
        assert_eq!(config.bus.properties["sasl.password"], "s3cret");
        assert_eq!(config.bus.properties["x.literal"], "${KEEP} costs $5");
        let error = NodeConfig::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(error.origin, format!("config file {}", path.display()));
        assert_eq!(error.key, "bus.properties.sasl.password");
        assert!(error.message.contains("KAFKA_PASSWORD") && error.message.contains("not set"), "{error}");
    }

    #[test]
    fn tokens_file_adds_to_the_configured_tokens_and_its_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let hash = "a".repeat(64);
        std::fs::write(&path, format!("[[tokens]]\ndepartment = \"tax\"\nsha256 = \"{hash}\"\n")).unwrap();
        let intake = IntakeConfig {
            tokens: vec![TokenConfig {
                department: "housing".into(),
                sha256: "b".repeat(64),
                label: None,
                role: Role::Department,
            }],
            tokens_file: Some(path.clone()),
            ..IntakeConfig::default()
        };
        let tokens = intake.all_tokens().unwrap();
        assert_eq!(tokens.iter().map(|t| t.department.as_str()).collect::<Vec<_>>(), ["housing", "tax"]);
        std::fs::write(&path, "[[tokens]]\ndepartment = \"tax\"\n").unwrap();
        let error = intake.all_tokens().unwrap_err();
        assert_eq!(error.origin, format!("tokens file {}", path.display()));
        assert!(error.message.contains("sha256"), "{error}");
    }

    #[test]
    fn topics_are_created_with_explicit_settings_and_contradictions_are_named() {
        let bus = BusConfig { replication_factor: 3, ..BusConfig::default() };
        let settings = |t: &str| bus.topic_settings(t).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(
            settings("gov.elicense.licence.v1"),
            ["cleanup.policy=compact", "retention.ms=-1", "min.insync.replicas=2"]
        );
        assert_eq!(
            settings("gov.case.event.v1"),
            ["cleanup.policy=delete", "retention.ms=2592000000", "min.insync.replicas=2"]
        );
        let single = BusConfig { replication_factor: 1, ..BusConfig::default() };
        assert_eq!(single.topic_settings("gov.case.event.v1")[2], ("min.insync.replicas", "1".to_owned()));

        let existing = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let broker_default =
            existing(&[("cleanup.policy", "delete"), ("retention.ms", "604800000"), ("min.insync.replicas", "1")]);
        let found = bus.topic_contradictions("gov.elicense.licence.v1", &broker_default);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("cleanup.policy is delete, govex needs compact"), "{found:?}");
        let found = bus.topic_contradictions("gov.case.event.v1", &broker_default);
        assert_eq!(found.len(), 2, "a shorter retention and one in-sync replica: {found:?}");
        let generous =
            existing(&[("cleanup.policy", "compact,delete"), ("retention.ms", "-1"), ("min.insync.replicas", "3")]);
        assert!(bus.topic_contradictions("gov.case.event.v1", &generous).is_empty());
        assert!(bus.topic_contradictions("gov.elicense.licence.v1", &generous).is_empty());
    }
}
