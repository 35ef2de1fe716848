//! What every HTTP API of a node is configured with: the listeners and their limits, TLS, the
//! tokens and their roles, and the per-token read limit.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

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

impl TokenConfig {
    /// The entry of `token` (kept only as its hash) for `department`, with `role` and no label.
    pub fn of(department: &str, token: &str, role: Role) -> Self {
        Self { department: department.into(), sha256: crate::auth::hash_token(token), label: None, role }
    }
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
    /// An operator: takes backups of the node's stores (`GET /v1/backup`). A backup holds
    /// every record the node keeps, personal data included, so this token is as sensitive as
    /// the volume; it sends and reads no records through the APIs.
    Operator,
}

impl Role {
    /// Its name after "a" or "an" (`an auditor`, `an operator`).
    pub fn with_article(self) -> String {
        match self {
            Role::Auditor | Role::Operator => format!("an {}", self.as_str()),
            Role::Department | Role::Steward => format!("a {}", self.as_str()),
        }
    }

    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::Steward => "steward",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
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

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_registry_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
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
