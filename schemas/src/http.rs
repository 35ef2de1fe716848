//! The registry's REST API, shaped like Confluent Schema Registry's so that its clients
//! (and govex's own codec) work unchanged: same paths, same JSON, same error codes, content
//! type `application/vnd.schemaregistry.v1+json`.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde::Deserialize;
use serde_json::json;

use crate::store::{Registry, RegistryError, VersionSelector};

/// The content type Confluent's registry answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry routes, to be served at the root of their own listener.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/schemas/types", get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }))
        .route("/subjects/{subject}", post(lookup_schema))
        .with_state(registry)
}

/// A registry error as Confluent reports it: an HTTP status and an `error_code`.
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn unprocessable(code: u32, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, code, message: message.into() }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let (status, code) = match &error {
            RegistryError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            RegistryError::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            RegistryError::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            RegistryError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            RegistryError::Storage(_) | RegistryError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        };
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

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

fn parse_request(body: &[u8]) -> Result<SchemaRequest, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: 422,
        message: format!("unrecognized request body: {e}"),
    })?;
    match request.schema_type.as_deref() {
        None | Some("AVRO") => Ok(request),
        Some(other) => Err(ApiError::unprocessable(
            42201,
            format!("schema type {other} is not supported: this registry holds AVRO schemas"),
        )),
    }
}

fn parse_version(version: &str) -> Result<VersionSelector, ApiError> {
    version.parse().map_err(|message: String| ApiError::unprocessable(42202, message))
}

async fn list_subjects(State(registry): State<Registry>) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, json!(registry.subjects()?)))
}

async fn list_versions(State(registry): State<Registry>, Path(subject): Path<String>) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, json!(registry.versions(&subject)?)))
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let id = registry.register(&subject, &request.schema)?;
    Ok(reply(StatusCode::OK, json!({ "id": id })))
}

/// `POST /subjects/{subject}`: is this schema registered under the subject, and as what?
async fn lookup_schema(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let wanted = apache_avro::Schema::parse_str(&request.schema)
        .map_err(|e| ApiError::unprocessable(42201, format!("invalid avro schema: {e}")))?
        .canonical_form();
    for version in registry.versions(&subject)? {
        let found = registry.version(&subject, VersionSelector::Number(version))?;
        let canonical = apache_avro::Schema::parse_str(&found.schema).map(|s| s.canonical_form()).ok();
        if canonical.as_deref() == Some(wanted.as_str()) {
            return Ok(reply(StatusCode::OK, json!(found)));
        }
    }
    Err(ApiError { status: StatusCode::NOT_FOUND, code: 40403, message: "schema not found".into() })
}

async fn get_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let found = registry.version(&subject, parse_version(&version)?)?;
    Ok(reply(StatusCode::OK, json!(found)))
}

async fn get_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let found = registry.version(&subject, parse_version(&version)?)?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], found.schema).into_response())
}

async fn get_schema(State(registry): State<Registry>, Path(id): Path<u32>) -> Result<Response, ApiError> {
    let schema = registry.schema_by_id(id)?;
    Ok(reply(StatusCode::OK, json!({ "schema": schema })))
}
