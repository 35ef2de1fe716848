//! Node configuration: a TOML file, then `GOVEX_*` environment overrides, into typed structs.
//!
//! Every struct denies unknown fields so that a misspelt key fails at start instead of being
//! silently ignored. Nested keys are set from the environment with a double underscore
//! between levels: `GOVEX_BUS__BROKERS=kafka-1:9092` sets `bus.brokers`,
//! `GOVEX_DATA_DIR=/var/lib/govex` sets `data_dir`, and
//! `GOVEX_BUS__PROPERTIES__SASL_MECHANISM=SCRAM-SHA-512` sets the librdkafka property
//! `sasl.mechanism` (single underscores inside a property name become dots there).

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
    vec!["gov.case.event.v1".into()]
}
fn default_down_topics() -> Vec<String> {
    vec!["gov.elicense.licence.v1".into()]
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
    /// Most lines in one batch.
    #[serde(default = "default_max_batch_lines")]
    pub max_batch_lines: usize,
    /// How long an `Idempotency-Key` and its first answer are remembered.
    #[serde(default = "default_idempotency_window_secs")]
    pub idempotency_window_secs: u64,
    /// Department tokens, stored only as SHA-256 hashes (`govex token new <department>`
    /// makes one).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One department's bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The department the token authenticates (`land-registry`, `housing`, `tax`,
    /// `provident-fund`, `platform`).
    pub department: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
    /// A label for logs (the calling system), never the token.
    #[serde(default)]
    pub label: Option<String>,
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
fn default_idempotency_window_secs() -> u64 {
    24 * 60 * 60
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            max_batch_bytes: default_max_batch_bytes(),
            max_batch_lines: default_max_batch_lines(),
            idempotency_window_secs: default_idempotency_window_secs(),
            tokens: Vec::new(),
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
}

/// Where the schema registry is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible registry. When absent the node serves its own
    /// registry, stored under `data_dir`, on `listen.registry`.
    #[serde(default)]
    pub url: Option<String>,
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

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            embedded_brokers: default_embedded_brokers(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            linger_ms: default_linger_ms(),
            compression: default_compression(),
            group_prefix: default_group_prefix(),
            session_timeout_ms: default_session_timeout_ms(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { api: default_api_listen(), registry: default_registry_listen(), ops: default_ops_listen(), tls: None }
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
            bus: BusConfig::default(),
            registry: RegistryConfig::default(),
            listen: ListenConfig::default(),
            log: LogConfig::default(),
            intake: IntakeConfig::default(),
            bridge: BridgeConfig::default(),
        }
    }

    /// Loads `file` (or the built-in default when `None`) and applies the `GOVEX_*`
    /// variables of `env` on top.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
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
        let defaults = to_table(&Self::embedded_default());
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            // GOVEX_CONFIG names the file itself; it is read by the command line, not here.
            if rest == "CONFIG" || rest.is_empty() {
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
                    key == *path || key.starts_with(&format!("{path}.")) || path.starts_with(&format!("{key}."))
                })
                .map_or(file_origin.clone(), |(_, name)| format!("environment variable {name}"));
            ConfigError { origin, key, message: e.into_inner().to_string() }
        })
    }
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

impl BusConfig {
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
                    .set("session.timeout.ms", self.session_timeout_ms.to_string())
                    .set("enable.partition.eof", "false");
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
}
