//! The registry's REST API, shaped like Confluent Schema Registry's so that its clients work
//! unchanged: the same paths, JSON bodies, status codes and `error_code`s, and content type
//! `application/vnd.schemaregistry.v1+json`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::{header, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::{
    compat::Compatibility,
    store::{Mode, Registry, RegistryError, Setting, VersionSelector},
};

/// The content type Confluent's registry answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Who may read and write the registry over HTTP. The node decides (it knows the tokens
/// and their roles); this crate only asks, before any handler runs.
pub trait Access: Send + Sync + 'static {
    /// Whether a request with this `Authorization` header value may go on; `write` tells a
    /// change (register, delete, set a level or mode) from a read.
    fn check(&self, authorization: Option<&str>, write: bool) -> Result<(), Refusal>;
}

/// Why a request is refused, as Confluent's API says it: 401 with 40101 when no valid
/// credential came, 403 with 40301 when the credential may not do this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401 or 403.
    pub status: StatusCode,
    /// 40101 or 40301.
    pub code: u32,
    /// What to do about it, never the credential.
    pub message: String,
}

impl Refusal {
    /// No credential, or one nobody has.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code: 40101, message: message.into() }
    }

    /// A credential that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, code: 40301, message: message.into() }
    }
}

/// Anyone may do anything: for a registry nobody else can reach (tests, tools run against
/// a scratch store).
pub struct Open;

impl Access for Open {
    fn check(&self, _: Option<&str>, _: bool) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Whether a request changes the registry. `POST /subjects/{subject}` (is this schema
/// registered?) and `POST /compatibility/...` (would it be compatible?) only read.
fn is_write(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => {
            let lookup = path.starts_with("/subjects/") && path.matches('/').count() == 2;
            !(lookup || path.starts_with("/compatibility/"))
        }
        _ => true,
    }
}

/// The subject a path names, percent-decoded to bytes (`/subjects/{s}...`, `/config/{s}`,
/// `/mode/{s}`, `/compatibility/subjects/{s}/...`).
fn subject_in_path(path: &str) -> Option<Vec<u8>> {
    let rest = ["/compatibility/subjects/", "/subjects/", "/config/", "/mode/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))?;
    let raw = rest.split('/').next().unwrap_or_default();
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Checks access, then the subject's name, before any handler: a refused request reads and
/// stores nothing. A subject that is not UTF-8 (an unpaired surrogate, say) or holds a
/// control character is refused with Confluent's 42208.
async fn guard(State(access): State<Arc<dyn Access>>, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let write = is_write(request.method(), request.uri().path());
    if let Err(refusal) = access.check(authorization, write) {
        let mut response = reply(refusal.status, json!({ "error_code": refusal.code, "message": refusal.message }));
        if refusal.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer, Basic"));
        }
        return response;
    }
    if let Some(subject) = subject_in_path(request.uri().path()) {
        let checked = match std::str::from_utf8(&subject) {
            Ok(subject) => crate::store::check_subject(subject),
            Err(_) => Err(RegistryError::InvalidSubject("it is not valid UTF-8")),
        };
        if let Err(error) = checked {
            return ApiError::from(error).into_response();
        }
    }
    next.run(request).await
}

/// The registry routes, to be served at the root of their own listener; `access` decides
/// who may read and who may write.
pub fn router(registry: Registry, access: Arc<dyn Access>) -> Router {
    routes(registry).route_layer(middleware::from_fn_with_state(access, guard))
}

fn routes(registry: Registry) -> Router {
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
        .route("/config", get(get_global_setting::<Compatibility>).put(put_global_setting::<Compatibility>))
        .route(
            "/config/{subject}",
            get(get_subject_setting::<Compatibility>)
                .put(put_subject_setting::<Compatibility>)
                .delete(delete_subject_setting::<Compatibility>),
        )
        .route("/mode", get(get_global_setting::<Mode>).put(put_global_setting::<Mode>))
        .route(
            "/mode/{subject}",
            get(get_subject_setting::<Mode>).put(put_subject_setting::<Mode>).delete(delete_subject_setting::<Mode>),
        )
        .route("/compatibility/subjects/{subject}/versions", post(test_compatibility))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(test_compatibility))
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
        E::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
        E::Storage(_) | E::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        // Confluent's "operation timed out": the change may be retried.
        E::Log(_) => (StatusCode::SERVICE_UNAVAILABLE, 50002),
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let (status, code) = status_and_code(&error);
        if code == 50001 || code == 50002 {
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

/// Runs a write off the async threads: a registry that is a view of its topic waits for the
/// broker and for its own view there, up to the journal's bound.
async fn off_thread<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(write).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(RegistryError::Log(format!("the write did not finish: {e}")).into()),
    }
}

fn ok(body: serde_json::Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

/// The query flags Confluent's API takes; unknown ones (`normalize`, `format`, ...) are ignored.
/// A flag is true when it says `true` in any case (Confluent's server reads them with Java's
/// `Boolean.valueOf`, and its Python client sends `True`/`False`); anything else is false.
#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "flag")]
    permanent: bool,
    #[serde(default, deserialize_with = "flag")]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal", deserialize_with = "flag")]
    default_to_global: bool,
}

fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(text.eq_ignore_ascii_case("true"))
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
    let id = off_thread(move || registry.register(&subject, &request.schema)).await?;
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
    ok(json!(off_thread(move || registry.delete_subject(&subject, flags.permanent)).await?))
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
    let selector = parse_version(&version)?;
    ok(json!(off_thread(move || registry.delete_version(&subject, selector, flags.permanent)).await?))
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

/// How `/config` and `/mode` speak a [`Setting`]: the field a `GET` (and a `DELETE`) answers
/// with, the field a `PUT` sends and answers with, and how a `PUT`'s value is read.
trait Served: Setting {
    const GET_FIELD: &'static str;
    const PUT_FIELD: &'static str;
    /// What a `PUT` sends, in an error about its body.
    const WHAT: &'static str;
    /// Confluent's error code for a body that does not parse.
    const BAD_BODY: u32;
    fn parse(text: &str) -> Result<Self, RegistryError>;
}

impl Served for Compatibility {
    const GET_FIELD: &'static str = "compatibilityLevel";
    const PUT_FIELD: &'static str = "compatibility";
    const WHAT: &'static str = "compatibility level";
    const BAD_BODY: u32 = 42203;
    fn parse(text: &str) -> Result<Self, RegistryError> {
        text.to_uppercase().parse().map_err(|_| RegistryError::InvalidCompatibilityLevel(text.to_owned()))
    }
}

impl Served for Mode {
    const GET_FIELD: &'static str = "mode";
    const PUT_FIELD: &'static str = "mode";
    const WHAT: &'static str = "mode";
    const BAD_BODY: u32 = 42204;
    fn parse(text: &str) -> Result<Self, RegistryError> {
        text.to_uppercase().parse()
    }
}

/// `{"<field>": "<value>"}`.
fn setting_answer(field: &str, value: &str) -> Result<Response, ApiError> {
    ok(Value::Object([(field.to_owned(), Value::from(value))].into_iter().collect()))
}

/// A `PUT`'s body: `{"<PUT_FIELD>": "<value>"}`.
fn parse_setting<S: Served>(body: &[u8]) -> Result<S, ApiError> {
    let request: serde_json::Map<String, Value> = parse_body(body, S::BAD_BODY, S::WHAT)?;
    let Some(Value::String(text)) = request.get(S::PUT_FIELD) else {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: S::BAD_BODY,
            message: format!("Invalid {}: the field `{}` must be there, as a string", S::WHAT, S::PUT_FIELD),
        });
    };
    Ok(S::parse(text)?)
}

async fn get_global_setting<S: Served>(State(registry): State<Registry>) -> Result<Response, ApiError> {
    setting_answer(S::GET_FIELD, registry.global_setting::<S>()?.as_str())
}

async fn put_global_setting<S: Served>(State(registry): State<Registry>, body: Bytes) -> Result<Response, ApiError> {
    let value = parse_setting::<S>(&body)?;
    off_thread(move || registry.set_setting(None, value)).await?;
    setting_answer(S::PUT_FIELD, value.as_str())
}

async fn get_subject_setting<S: Served>(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response, ApiError> {
    let value = match (registry.subject_setting::<S>(&subject)?, flags.default_to_global) {
        (Some(value), _) => value,
        (None, true) => registry.global_setting::<S>()?,
        (None, false) => return Err(S::not_configured(&subject).into()),
    };
    setting_answer(S::GET_FIELD, value.as_str())
}

async fn put_subject_setting<S: Served>(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = parse_setting::<S>(&body)?;
    off_thread(move || registry.set_setting(Some(&subject), value)).await?;
    setting_answer(S::PUT_FIELD, value.as_str())
}

async fn delete_subject_setting<S: Served>(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let previous = off_thread(move || registry.delete_setting::<S>(&subject)).await?;
    setting_answer(S::GET_FIELD, previous.as_str())
}

/// The path of a compatibility test: against one version of the subject, or (no version)
/// against every version its compatibility setting says to check.
#[derive(Deserialize)]
struct CompatibilityPath {
    subject: String,
    version: Option<String>,
}

async fn test_compatibility(
    State(registry): State<Registry>,
    Path(path): Path<CompatibilityPath>,
    Query(flags): Query<Flags>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse_request(&body)?;
    let version = path.version.as_deref().map(parse_version).transpose()?;
    let messages = registry.test_compatibility(&path.subject, version, &request.schema)?;
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if flags.verbose {
        body["messages"] = json!(messages);
    }
    ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_from_reads() {
        for (method, path, write) in [
            (Method::GET, "/subjects", false),
            (Method::POST, "/subjects/a-value", false),
            (Method::POST, "/compatibility/subjects/a-value/versions/latest", false),
            (Method::POST, "/subjects/a-value/versions", true),
            (Method::PUT, "/config", true),
            (Method::PUT, "/mode/a-value", true),
            (Method::DELETE, "/subjects/a-value", true),
        ] {
            assert_eq!(is_write(&method, path), write, "{method} {path}");
        }
    }

    #[test]
    fn subjects_are_read_from_paths_percent_decoded() {
        assert_eq!(subject_in_path("/subjects/a%00x/versions").unwrap(), b"a\0x");
        assert_eq!(subject_in_path("/compatibility/subjects/a%2Fb/versions").unwrap(), b"a/b");
        assert_eq!(subject_in_path("/config/%ED%A0%80").unwrap(), [0xED, 0xA0, 0x80]);
        assert_eq!(subject_in_path("/config").as_deref(), None);
        assert_eq!(subject_in_path("/subjects/100%").unwrap(), b"100%");
    }
}
