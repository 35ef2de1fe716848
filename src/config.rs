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
//!
//! Each section is owned by the part it configures: `bus` by [`govex_bus::config`], the
//! listeners, TLS and tokens by [`govex_http::config`], `intake` by the intake, `bridge` by the
//! level bridges. This module puts them together into a node's configuration and loads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use govex_adapters::intake::config::IntakeConfig;
use govex_bus::config::{BusConfig, ConfigError, LogConfig, RegistryTlsConfig};
use govex_http::config::{ApiConfig, ListenConfig, ReadAccess};
use govex_schemas::Division;
use govex_sinks::{level_bridge::config::BridgeConfig, use_log::AuditConfig};

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
    /// Subscriptions: how long owners have to answer, and the working-day calendar.
    #[serde(default)]
    pub governance: govex_sinks::governance::GovernanceConfig,
    /// Front-end databases (前置库): department tables polled into the intake.
    #[serde(default, skip_serializing_if = "FrontDbConfig::is_empty")]
    pub frontdb: FrontDbConfig,
    /// The sled stores under `data_dir`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The time zone times are shown to people in (API answers, the command line):
    /// `Asia/Shanghai` (the default), another of China's zones, `UTC`, or `+HH:MM`.
    #[serde(default)]
    pub time_zone: govex_schemas::zone::TimeZone,
    /// The parts of a node this process runs. Empty (the default): all of them, except the
    /// registry when `registry.url` names another. A Kubernetes deployment splits one node
    /// into processes: intake in a Deployment, the registry and the stores in StatefulSets,
    /// bridges apart.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// `[storage]`: the sled databases a process opens (the e-licence pod opens several: the
/// store, the dossier, the case statistics, the use log, the governance views).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The page cache of each database, in MiB (sled's own default is 1 GiB each). A pod's
    /// memory limit must hold this times the databases it opens, with room for the rest.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
}

fn default_cache_mib() -> u64 {
    64
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { cache_mib: default_cache_mib() }
    }
}

/// `[frontdb]`: the front-end databases this node reads department records from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontDbConfig {
    /// `[[frontdb.sources]]`: tables polled into the intake, run by the process that runs the
    /// intake.
    #[serde(default)]
    pub sources: Vec<govex_adapters::frontdb::SourceConfig>,
    /// `[[frontdb.tables]]`: down-tables a department's system reads what it receives from,
    /// run by the process that runs the dossier (whose subscriptions decide what is shared).
    #[serde(default)]
    pub tables: Vec<govex_sinks::down_table::DownTableConfig>,
}

impl FrontDbConfig {
    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.tables.is_empty()
    }
}

/// `GOVEX_*` variables that belong to a command's own options, not to the node's settings.
/// An operator with `GOVEX_TOKEN` set for `govex dlq` or `govex backup` must still be able to
/// run `govex restore` or a node from the same shell.
const COMMAND_VARIABLES: [&str; 4] = ["CONFIG", "REGISTRY_URL", "TOKEN", "API_URL"];

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

fn default_true() -> bool {
    true
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { url: None, token: None, http_writes: true, read_access: ReadAccess::Open, tls: None, writer_url: None }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("govex-data")
}

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
            governance: Default::default(),
            frontdb: Default::default(),
            storage: Default::default(),
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
            // names the file itself, GOVEX_REGISTRY_URL the registry `govex schema` talks to,
            // GOVEX_TOKEN and GOVEX_API_URL the token and node of `govex dlq` and `govex backup`.
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
}
