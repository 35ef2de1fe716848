//! The intake's part of a node's configuration (`[intake]`): body and batch limits,
//! idempotency, how often record types are refreshed, and the tokens of the department
//! systems that call it.

use std::path::PathBuf;

use govex_bus::config::ConfigError;
use govex_http::config::TokenConfig;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use govex_http::config::Role;
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
}
