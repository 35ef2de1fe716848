//! The codec's view of the schema registry: the node's own store in process, or any
//! Confluent-compatible registry over its REST API. Schemas by id are immutable, so they are
//! cached for the life of the process.

use std::{collections::HashMap, sync::Arc, time::Duration};

use apache_avro::Schema;
use parking_lot::RwLock;
use serde::Deserialize;

use govex_schemas::{Registry, RegistryError, VersionSelector};

use crate::config::RegistryTlsConfig;

/// A failed registry call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryClientError {
    /// The registry has no schema with this id.
    #[error("schema id {0} is not known to the registry")]
    UnknownSchemaId(u32),
    /// The registry has no such subject (the registry's own sentence).
    #[error("{0}")]
    UnknownSubject(String),
    /// The subject has no such version (the registry's own sentence).
    #[error("{0}")]
    UnknownVersion(String),
    /// The registry rejected the schema.
    #[error("the registry rejected the schema: {0}")]
    Rejected(String),
    /// The registry could not be reached or answered with something unexpected.
    #[error("schema registry at {url} failed: {reason}")]
    Unavailable {
        /// The registry's base URL, or `in-process`.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry answered, with an error of its own (its store failed, say): not a reason
    /// to wait for it, as an unreachable registry is.
    #[error("schema registry at {url} answered HTTP {status}, error code {code}: {message}")]
    Failed {
        /// The registry's base URL, or `in-process`.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Confluent's `error_code`.
        code: u32,
        /// The registry's message (a store error names the store).
        message: String,
    },
    /// The registry refused this process's credentials (401 or 403).
    #[error(
        "schema registry at {url} refused the request ({message}); set registry.token to a steward's token for it"
    )]
    Refused {
        /// The registry's base URL.
        url: String,
        /// The registry's message.
        message: String,
    },
    /// The registry returned a schema that does not parse.
    #[error("schema id {id} from the registry does not parse: {reason}")]
    BadSchema {
        /// The id.
        id: u32,
        /// The parse error.
        reason: String,
    },
}

enum Source {
    Local(Registry),
    Http { base_url: String, client: reqwest::Client, token: Option<String> },
}

/// One version of a subject, as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The global schema id.
    pub id: u32,
    /// The version within the subject.
    pub version: u32,
    /// The schema text.
    pub schema: String,
}

/// A cached registry client. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    source: Arc<Source>,
    by_id: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
}

/// The `error_code` body Confluent registries answer errors with.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    #[serde(default)]
    message: String,
}

impl RegistryClient {
    /// A client of the node's own in-process registry.
    pub fn local(registry: Registry) -> Self {
        Self { source: Arc::new(Source::Local(registry)), by_id: Arc::default() }
    }

    /// A client of a Confluent-compatible registry at `base_url` (e.g. `http://registry:8081`).
    pub fn http(base_url: &str) -> Self {
        Self::http_with_token(base_url, None)
    }

    /// A client of the registry at `base_url` that sends `token` (a steward's, for a registry
    /// that takes writes only from stewards or wants a token for reads) as a bearer token.
    pub fn http_with_token(base_url: &str, token: Option<&str>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::http_client(base_url, token, client)
    }

    /// A client of the `https://` registry at `base_url`, trusting the CA of `tls` and, for a
    /// registry that wants mutual TLS, presenting its client certificate. An error names the
    /// setting and the file.
    pub fn https(base_url: &str, token: Option<&str>, tls: &RegistryTlsConfig) -> Result<Self, String> {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("registry.tls.{key}: {}: {e}", path.display()))
        };
        let ca = reqwest::Certificate::from_pem(&read("ca_path", &tls.ca_path)?)
            .map_err(|e| format!("registry.tls.ca_path: {}: {e}", tls.ca_path.display()))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        match (&tls.client_cert_path, &tls.client_key_path) {
            (Some(cert), Some(key)) => {
                let pem = [read("client_cert_path", cert)?, read("client_key_path", key)?].join(&b"\n"[..]);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("registry.tls.client_cert_path/client_key_path: {e}"))?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err("registry.tls: client_cert_path and client_key_path go together".into()),
        }
        let client = builder.build().map_err(|e| format!("registry.tls: {e}"))?;
        Ok(Self::http_client(base_url, token, client))
    }

    fn http_client(base_url: &str, token: Option<&str>, client: reqwest::Client) -> Self {
        Self {
            source: Arc::new(Source::Http {
                base_url: base_url.trim_end_matches('/').to_owned(),
                client,
                token: token.map(str::to_owned),
            }),
            by_id: Arc::default(),
        }
    }

    /// The in-process registry this client reads, when it is one (what the registry's HTTP
    /// API serves).
    pub fn local_store(&self) -> Option<Registry> {
        match &*self.source {
            Source::Local(registry) => Some(registry.clone()),
            Source::Http { .. } => None,
        }
    }

    /// Where this client looks schemas up, for messages.
    pub fn describe(&self) -> String {
        match &*self.source {
            Source::Local(_) => "in-process registry".into(),
            Source::Http { base_url, .. } => base_url.clone(),
        }
    }

    /// The schema with this id, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryClientError> {
        if let Some(schema) = self.by_id.read().get(&id) {
            return Ok(schema.clone());
        }
        let text = match &*self.source {
            Source::Local(registry) => registry.schema_by_id(id).map_err(|e| self.local_error(e))?,
            Source::Http { .. } => {
                #[derive(Deserialize)]
                struct Body {
                    schema: String,
                }
                match self.get::<Body>(&format!("/schemas/ids/{id}")).await {
                    Ok(body) => body.schema,
                    Err(RegistryClientError::UnknownSchemaId(_)) => {
                        return Err(RegistryClientError::UnknownSchemaId(id))
                    }
                    Err(other) => return Err(other),
                }
            }
        };
        let schema = Arc::new(
            Schema::parse_str(&text).map_err(|e| RegistryClientError::BadSchema { id, reason: e.to_string() })?,
        );
        self.by_id.write().insert(id, schema.clone());
        Ok(schema)
    }

    /// The text of the schema with this id, as the registry holds it (not cached: a bridge
    /// asks once per id and keeps the translation).
    pub async fn schema_text_by_id(&self, id: u32) -> Result<String, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => registry.schema_by_id(id).map_err(|e| self.local_error(e)),
            Source::Http { .. } => {
                #[derive(Deserialize)]
                struct Body {
                    schema: String,
                }
                match self.get::<Body>(&format!("/schemas/ids/{id}")).await {
                    Ok(body) => Ok(body.schema),
                    Err(RegistryClientError::UnknownSchemaId(_)) => Err(RegistryClientError::UnknownSchemaId(id)),
                    Err(other) => Err(other),
                }
            }
        }
    }

    /// Registers `schema` under `subject` and returns its id (the existing id when the
    /// subject already has it).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => {
                // A registry that is a view of its topic waits for the broker: off the async
                // threads.
                let (registry, subject, schema) = (registry.clone(), subject.to_owned(), schema.to_owned());
                match tokio::task::spawn_blocking(move || registry.register(&subject, &schema)).await {
                    Ok(result) => result.map_err(|e| self.local_error(e)),
                    Err(e) => Err(self.local_error(RegistryError::Log(e.to_string()))),
                }
            }
            Source::Http { base_url, client, token } => {
                #[derive(Deserialize)]
                struct Body {
                    id: u32,
                }
                let body = serde_json::json!({ "schema": schema }).to_string();
                let send = |path: String| {
                    let request = client
                        .post(format!("{base_url}{path}"))
                        .header("content-type", govex_schemas::http::CONTENT_TYPE)
                        .body(body.clone());
                    match token {
                        Some(token) => request.bearer_auth(token),
                        None => request,
                    }
                };
                // Look up first: a registry that already has the schema answers without a
                // write, so processes that only use the schemas need no steward's token.
                let found = send(format!("/subjects/{subject}")).send().await.map_err(|e| self.unavailable(e))?;
                match self.read::<Body>(found).await {
                    Ok(body) => return Ok(body.id),
                    Err(RegistryClientError::UnknownSubject(_) | RegistryClientError::UnknownSchemaId(_)) => {}
                    Err(other) => return Err(other),
                }
                let response =
                    send(format!("/subjects/{subject}/versions")).send().await.map_err(|e| self.unavailable(e))?;
                Ok(self.read::<Body>(response).await?.id)
            }
        }
    }

    /// The id and schema of the latest version of `subject`.
    pub async fn latest(&self, subject: &str) -> Result<(u32, Arc<Schema>), RegistryClientError> {
        let id = match &*self.source {
            Source::Local(registry) => {
                registry.version(subject, VersionSelector::Latest, false).map_err(|e| self.local_error(e))?.id
            }
            Source::Http { .. } => {
                #[derive(Deserialize)]
                struct Body {
                    id: u32,
                }
                self.get::<Body>(&format!("/subjects/{subject}/versions/latest")).await?.id
            }
        };
        Ok((id, self.schema_by_id(id).await?))
    }

    /// Every live subject.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => registry.subjects(false).map_err(|e| self.local_error(e)),
            Source::Http { .. } => self.get("/subjects").await,
        }
    }

    /// The live version numbers of `subject`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => registry.versions(subject, false).map_err(|e| self.local_error(e)),
            Source::Http { .. } => self.get(&format!("/subjects/{subject}/versions")).await,
        }
    }

    /// One version of `subject` (`latest`, `-1` or a number).
    pub async fn version(&self, subject: &str, version: &str) -> Result<SubjectVersion, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => {
                let selector = version.parse().map_err(|e: RegistryError| self.local_error(e))?;
                let found = registry.version(subject, selector, false).map_err(|e| self.local_error(e))?;
                Ok(SubjectVersion {
                    subject: found.subject,
                    id: found.id,
                    version: found.version,
                    schema: found.schema,
                })
            }
            Source::Http { .. } => self.get(&format!("/subjects/{subject}/versions/{version}")).await,
        }
    }

    /// The compatibility level that applies to `subject` (its own, or the global one).
    pub async fn compatibility_level(&self, subject: &str) -> Result<String, RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => registry
                .effective_setting::<govex_schemas::Compatibility>(subject)
                .map(|l| l.as_str().to_owned())
                .map_err(|e| self.local_error(e)),
            Source::Http { .. } => {
                #[derive(Deserialize)]
                struct Body {
                    #[serde(rename = "compatibilityLevel")]
                    level: String,
                }
                Ok(self.get::<Body>(&format!("/config/{subject}?defaultToGlobal=true")).await?.level)
            }
        }
    }

    /// Succeeds when the registry answers; for readiness probes.
    pub async fn check_reachable(&self) -> Result<(), RegistryClientError> {
        match &*self.source {
            Source::Local(registry) => registry.subjects(false).map(drop).map_err(|e| self.local_error(e)),
            Source::Http { .. } => self.get::<serde_json::Value>("/subjects").await.map(drop),
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, RegistryClientError> {
        let Source::Http { base_url, client, token } = &*self.source else {
            unreachable!("get is only called for HTTP registries")
        };
        let request = client.get(format!("{base_url}{path}"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.unavailable(e))?;
        self.read(response).await
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, response: reqwest::Response) -> Result<T, RegistryClientError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unavailable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| self.unavailable(format!("unexpected answer: {e}")));
        }
        let error: ErrorBody = serde_json::from_slice(&body).map_err(|_| self.unavailable(format!("HTTP {status}")))?;
        Err(match error.error_code {
            // The caller knows which id it asked for and puts it in.
            40403 => RegistryClientError::UnknownSchemaId(0),
            40401 => RegistryClientError::UnknownSubject(error.message),
            40402 => RegistryClientError::UnknownVersion(error.message),
            42201 | 409 | 42205 | 42208 => RegistryClientError::Rejected(error.message),
            40101 | 40301 => RegistryClientError::Refused { url: self.describe(), message: error.message },
            code => RegistryClientError::Failed {
                url: self.describe(),
                status: status.as_u16(),
                code,
                message: error.message,
            },
        })
    }

    fn unavailable(&self, reason: impl ToString) -> RegistryClientError {
        RegistryClientError::Unavailable { url: self.describe(), reason: reason.to_string() }
    }

    fn local_error(&self, error: RegistryError) -> RegistryClientError {
        match error {
            RegistryError::SchemaNotFound(id) => RegistryClientError::UnknownSchemaId(id),
            // The registry's topic is out of reach (or this process only follows it): as an
            // unreachable registry, a reason to wait and retry.
            RegistryError::Log(reason) => RegistryClientError::Unavailable { url: self.describe(), reason },
            not_found @ RegistryError::SubjectNotFound(_) => RegistryClientError::UnknownSubject(not_found.to_string()),
            not_found @ RegistryError::VersionNotFound { .. } => {
                RegistryClientError::UnknownVersion(not_found.to_string())
            }
            rejected @ (RegistryError::InvalidSchema(_)
            | RegistryError::Incompatible { .. }
            | RegistryError::ReadOnly(_)
            | RegistryError::InvalidSubject(_)) => RegistryClientError::Rejected(rejected.to_string()),
            other => {
                let (status, code) = govex_schemas::http::status_and_code(&other);
                RegistryClientError::Failed {
                    url: self.describe(),
                    status: status.as_u16(),
                    code,
                    message: other.to_string(),
                }
            }
        }
    }
}
