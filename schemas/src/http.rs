//! The registry's REST API, shaped like Confluent Schema Registry's so that its clients work
//! unchanged: the same paths, JSON bodies, status codes and `error_code`s, and content type
//! `application/vnd.schemaregistry.v1+json`.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    compat::Compatibility,
    store::{Mode, Registry, RegistryError, VersionSelector},
};

/// The content type Confluent's registry answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry routes, to be served at the root of their own listener.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup_schema).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/schemas/ids/{id}/schema", get(get_schema_text))
        .route("/schemas/ids/{id}/versions", get(get_schema_versions))
        .route("/schemas/ids/{id}/subjects", get(get_schema_subjects))
        .route("/schemas/types", get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }))
        .route("/config", get(get_global_config).put(put_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/mode", get(get_global_mode).put(put_global_mode))
        .route("/mode/{subject}", get(get_subject_mode).put(put_subject_mode).delete(delete_subject_mode))
        .route("/compatibility/subjects/{subject}/versions", post(test_all_versions))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(test_version))
        .with_state(registry)
}

/// A registry error as Confluent reports it: an HTTP status and an `error_code`.
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

/// Confluent's HTTP status and error code for a registry error.
pub fn status_and_code(error: &RegistryError) -> (StatusCode, u32) {
    use RegistryError as E;
    match error {
        E::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
        E::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
        E::SchemaNotFound(_) | E::SchemaNotInSubject => (StatusCode::NOT_FOUND, 40403),
        E::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
        E::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
        E::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
        E::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
        E::SubjectCompatibilityNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
        E::SubjectModeNotConfigured(_) => (StatusCode::NOT_FOUND, 40409),
        E::Incompatible { .. } => (StatusCode::CONFLICT, 409),
        E::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
        E::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
        E::InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
        E::InvalidMode(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
        E::ReadOnly(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
        E::Storage(_) | E::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let (status, code) = status_and_code(&error);
        if code == 50001 {
            tracing::error!(error = %error, "registry storage failed");
        }
        Self { status, code, message: error.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.status, json!({ "error_code": self.code, "message": self.message }))
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn ok(body: serde_json::Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

/// The query flags Confluent's API takes; unknown ones (`normalize`, `format`, ...) are ignored.
#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

fn parse_request(body: &[u8]) -> Result<SchemaRequest, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: 42201,
        message: format!("Invalid schema: the request body is not a schema request: {e}"),
    })?;
    match request.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {other} is not supported: this registry holds AVRO schemas"
            ))
            .into())
        }
    }
    if !request.references.is_empty() {
        return Err(RegistryError::InvalidSchema("schema references are not supported".into()).into());
    }
    Ok(request)
}

fn parse_version(version: &str) -> Result<VersionSelector, ApiError> {
    Ok(version.parse::<VersionSelector>()?)
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8], code: u32, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code,
        message: format!("Invalid {what}: {e}"),
    })
}

async fn list_subjects(State(registry): State<Registry>, Query(flags): Query<Flags>) -> Result<Response, ApiError> {
    ok(json!(registry.subjects(flags.deleted)?))
}

async fn list_versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    ok(json!(registry.versions(&subject, flags.deleted)?))
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let id = registry.register(&subject, &request.schema)?;
    ok(json!({ "id": id }))
}

/// `POST /subjects/{subject}`: is this schema registered under the subject, and as what?
async fn lookup_schema(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    ok(json!(registry.lookup(&subject, &request.schema, flags.deleted)?))
}

async fn delete_subject(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    ok(json!(registry.delete_subject(&subject, flags.permanent)?))
}

async fn get_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    ok(json!(registry.version(&subject, parse_version(&version)?, flags.deleted)?))
}

async fn delete_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    ok(json!(registry.delete_version(&subject, parse_version(&version)?, flags.permanent)?))
}

async fn get_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let found = registry.version(&subject, parse_version(&version)?, flags.deleted)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], found.schema).into_response())
}

/// Schema references are not supported, so no schema refers to another.
async fn referenced_by(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    registry.version(&subject, parse_version(&version)?, false)?;
    ok(json!([]))
}

async fn get_schema(State(registry): State<Registry>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    ok(json!({ "schema": registry.schema_by_id(id)? }))
}

async fn get_schema_text(State(registry): State<Registry>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    let schema = registry.schema_by_id(id)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response())
}

async fn get_schema_versions(
    State(registry): State<Registry>,
    Path(id): Path<u32>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let pairs = registry.subject_versions_of(id, flags.deleted)?;
    ok(json!(pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect::<Vec<_>>()))
}

async fn get_schema_subjects(
    State(registry): State<Registry>,
    Path(id): Path<u32>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let mut subjects: Vec<String> =
        registry.subject_versions_of(id, flags.deleted)?.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn parse_level(body: &[u8]) -> Result<Compatibility, ApiError> {
    let request: ConfigRequest = parse_body(body, 42203, "compatibility level")?;
    Ok(request
        .compatibility
        .to_uppercase()
        .parse::<Compatibility>()
        .map_err(|_| RegistryError::InvalidCompatibilityLevel(request.compatibility))?)
}

async fn get_global_config(State(registry): State<Registry>) -> Result<Response, ApiError> {
    ok(json!({ "compatibilityLevel": registry.global_compatibility()?.as_str() }))
}

async fn put_global_config(State(registry): State<Registry>, body: Bytes) -> Result<Response, ApiError> {
    let level = parse_level(&body)?;
    registry.set_compatibility(None, level)?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn get_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let level = match (registry.subject_compatibility(&subject)?, flags.default_to_global) {
        (Some(level), _) => level,
        (None, true) => registry.global_compatibility()?,
        (None, false) => return Err(RegistryError::SubjectCompatibilityNotConfigured(subject).into()),
    };
    ok(json!({ "compatibilityLevel": level.as_str() }))
}

async fn put_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let level = parse_level(&body)?;
    registry.set_compatibility(Some(&subject), level)?;
    ok(json!({ "compatibility": level.as_str() }))
}

async fn delete_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    ok(json!({ "compatibilityLevel": registry.delete_compatibility(&subject)?.as_str() }))
}

#[derive(Deserialize)]
struct ModeRequest {
    mode: String,
}

fn parse_mode(body: &[u8]) -> Result<Mode, ApiError> {
    let request: ModeRequest = parse_body(body, 42204, "mode")?;
    Ok(request.mode.to_uppercase().parse::<Mode>()?)
}

async fn get_global_mode(State(registry): State<Registry>) -> Result<Response, ApiError> {
    ok(json!({ "mode": registry.global_mode()?.as_str() }))
}

async fn put_global_mode(State(registry): State<Registry>, body: Bytes) -> Result<Response, ApiError> {
    let mode = parse_mode(&body)?;
    registry.set_mode(None, mode)?;
    ok(json!({ "mode": mode.as_str() }))
}

async fn get_subject_mode(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let mode = match (registry.subject_mode(&subject)?, flags.default_to_global) {
        (Some(mode), _) => mode,
        (None, true) => registry.global_mode()?,
        (None, false) => return Err(RegistryError::SubjectModeNotConfigured(subject).into()),
    };
    ok(json!({ "mode": mode.as_str() }))
}

async fn put_subject_mode(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mode = parse_mode(&body)?;
    registry.set_mode(Some(&subject), mode)?;
    ok(json!({ "mode": mode.as_str() }))
}

async fn delete_subject_mode(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    ok(json!({ "mode": registry.delete_mode(&subject)?.as_str() }))
}

fn compatibility_reply(messages: Vec<String>, verbose: bool) -> Result<Response, ApiError> {
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        body["messages"] = json!(messages);
    }
    ok(body)
}

async fn test_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let messages = registry.test_compatibility(&subject, Some(parse_version(&version)?), &request.schema)?;
    compatibility_reply(messages, flags.verbose)
}

async fn test_all_versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let messages = registry.test_compatibility(&subject, None, &request.schema)?;
    compatibility_reply(messages, flags.verbose)
}
