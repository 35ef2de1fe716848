//! The intake's HTTP API: `POST /v1/{department}/{record}` for one JSON record and
//! `POST /v1/{department}/{record}:batch` for NDJSON. Answers come only after the broker
//! acknowledged; errors are RFC 9457 problem details listing every violation with its JSON
//! pointer and rule, and never the value of a field.
//!
//! Each route has a `:validate` form (`{record}:validate`, `{record}:batch:validate`) that
//! runs every check and publishes nothing: integrators use it while they build their side.

use std::sync::Arc;

use crate::intake::config::IntakeConfig;
use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use govex_schemas::Department;
use serde_json::json;

use super::{
    auth::{Role, Tokens},
    idempotency::{self, IdempotencyStore, KeyRecord, StoredAnswer},
    EventIds, Intake, Rejection,
};
use crate::validation::Violation;

pub use govex_http::problem::PROBLEM_JSON;

/// What the intake server needs.
pub struct IntakeServer {
    /// The pipeline.
    pub intake: Arc<Intake>,
    /// The departments' tokens.
    pub tokens: Tokens,
    /// Remembered answers.
    pub idempotency: IdempotencyStore,
    /// Limits.
    pub limits: IntakeConfig,
    /// The memory all request bodies being handled may hold together, in KiB permits
    /// (`intake.max_in_flight_bytes`).
    pub budget: Arc<tokio::sync::Semaphore>,
    /// Where requests run once their body is read: shutdown waits for them (a client that
    /// hangs up or a connection cut at shutdown must not stop a publish half done).
    pub tasks: tokio_util::task::TaskTracker,
}

impl IntakeServer {
    /// The server, with the memory budget its limits give.
    pub fn new(
        intake: Arc<Intake>,
        tokens: Tokens,
        idempotency: IdempotencyStore,
        limits: IntakeConfig,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        let budget = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight_bytes.div_ceil(1024)));
        Self { intake, tokens, idempotency, limits, budget, tasks }
    }
}

/// The intake routes, as the API port lists them to a caller that asked for another.
pub const ROUTES: &[&str] = &[
    "POST /v1/{department}/{record}",
    "POST /v1/{department}/{record}:batch",
    "POST /v1/{department}/{record}:validate",
    "POST /v1/{department}/{record}:batch:validate",
    "GET /v1/{department}/{record}/schema",
];

/// The intake routes.
pub fn router(server: Arc<IntakeServer>) -> Router {
    Router::new()
        .route("/v1/{department}/{record}", post(handle))
        .route("/v1/{department}/{record}/schema", get(input_contract))
        .with_state(server)
}

/// An answer: status, content type, body.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, [(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
    }
}

/// A problem-details answer, kept as text so that an idempotent retry can be given it again.
fn problem(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>, errors: &[Violation]) -> Answer {
    let errors = if errors.is_empty() { serde_json::Value::Null } else { json!(errors) };
    Answer {
        status,
        content_type: PROBLEM_JSON,
        body: govex_http::problem::problem_body(status, kind, title, detail, errors),
    }
}

fn rejection_answer(rejection: &Rejection) -> Answer {
    match rejection {
        Rejection::Malformed(detail) => {
            problem(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", detail.clone(), &[])
        }
        Rejection::Invalid(violations) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The record breaks schema or domain rules",
            format!("{} violation(s); nothing was published", violations.len()),
            violations,
        ),
        Rejection::Unavailable(detail) => {
            tracing::error!(error = %detail, "a checked record could not be published");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The exchange could not publish the record",
                "retry with the same Idempotency-Key",
                &[],
            )
        }
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// `GET /v1/{department}/{record}/schema`: the input contract the intake checks records of a
/// type against now (the JSON Schema derived from its latest registered version), for any
/// authenticated caller: a department's developers validate against it before they send.
async fn input_contract(
    State(server): State<Arc<IntakeServer>>,
    Path((department, record)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = server.tokens.authenticate(authorization) {
        return govex_http::auth::unauthenticated(e);
    }
    let found = Department::known(&department).and_then(|d| server.intake.record_type(d, &record).ok());
    let Some(record_type) = found else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record type",
            // The path is the caller's and is not echoed.
            "no such record type: GET /catalog lists who sends what",
            &[],
        )
        .into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/schema+json".to_owned()),
            (header::HeaderName::from_static("govex-schema-version"), record_type.version.to_string()),
        ],
        record_type.input_schema().to_string(),
    )
        .into_response()
}

/// The form a request sends its records in, from the path's `:batch` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// One JSON record (`application/json`).
    Single,
    /// Many records, one JSON document per line.
    Batch,
}

impl Form {
    /// The content types the form is sent with; the first is the one an error names.
    fn media_types(self) -> &'static [&'static str] {
        match self {
            Form::Single => &["application/json"],
            Form::Batch => &["application/x-ndjson", "application/jsonl", "application/json-seq"],
        }
    }
}

/// A request the intake will read the body of: its caller may send this record type, in this
/// form and content type.
struct Admitted {
    department: Department,
    record: String,
    form: Form,
    /// `:validate`: check only, publish nothing.
    validate_only: bool,
    idempotency_key: Option<String>,
}

/// `POST /v1/{department}/{record}[:batch][:validate]`.
async fn handle(
    State(server): State<Arc<IntakeServer>>,
    Path((department, record)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    // Everything but the body is checked first: a caller who may not send learns nothing
    // more and costs no memory.
    let request = match admit(&server, &department, record, &headers) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let body = match read_body(&server, body, request.form).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    match request.validate_only {
        true => validate(&server, request, body).await,
        false => publish(server, request, body).await,
    }
}

/// Checks who calls, what record type and form they send, the content type and the
/// idempotency key.
fn admit(server: &IntakeServer, department: &str, record: String, headers: &HeaderMap) -> Result<Admitted, Answer> {
    let (record, validate_only) = match record.strip_suffix(":validate") {
        Some(record) => (record.to_owned(), true),
        None => (record, false),
    };
    let (record, form) = match record.strip_suffix(":batch") {
        Some(record) => (record.to_owned(), Form::Batch),
        None => (record, Form::Single),
    };
    let department = authorize(server, department, headers)?;
    if !server.intake.knows(department, &record) {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record type",
            format!("{department} does not send that record type: GET /catalog lists who sends what"),
            &[],
        ));
    }
    let accepted = form.media_types();
    if !accepted.contains(&media_type(headers).as_str()) {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported content type",
            format!("send Content-Type: {}", accepted[0]),
            &[],
        ));
    }
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(key.to_owned())
        }
        Some(_) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "idempotency-key",
                "Invalid Idempotency-Key",
                "use 1 to 255 visible ASCII characters",
                &[],
            ))
        }
    };
    Ok(Admitted { department, record, form, validate_only, idempotency_key })
}

/// The department the caller's token belongs to, when it is a department's token and the
/// path names that same department.
fn authorize(server: &IntakeServer, department: &str, headers: &HeaderMap) -> Result<Department, Answer> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match server.tokens.authenticate(authorization) {
        Ok(caller) if caller.role == Role::Department => caller.department,
        Ok(caller) => {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "role",
                "Not allowed for this token's role",
                format!("a {} token cannot send records; use the department system's token", caller.role.as_str()),
                &[],
            ))
        }
        Err(e) => {
            let (title, detail) = e.title_and_detail();
            return Err(problem(StatusCode::UNAUTHORIZED, "unauthenticated", title, detail, &[]));
        }
    };
    let Some(department) = Department::known(department) else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown department",
            // The path segment is the caller's and is not echoed (it may be anything).
            "no such department: GET /catalog lists who sends what",
            &[],
        ));
    };
    if caller != department {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Another department's record",
            format!("a {caller} token cannot submit {department} records"),
            &[],
        ));
    }
    Ok(department)
}

/// `:validate`: checks the body, publishes nothing, and so remembers nothing (an
/// idempotency key, if any, is not used).
async fn validate(server: &IntakeServer, request: Admitted, body: ReadBody) -> Answer {
    let (intake, max_lines) = (server.intake.clone(), server.limits.max_batch_lines);
    let Admitted { department, record, .. } = request;
    tokio::task::spawn_blocking(move || validation_answer(&intake, department, &record, body, max_lines))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "an intake validation failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "retry", &[])
        })
}

/// Publishes the body's records and answers once the broker has them (or answers again what
/// an earlier request with the same idempotency key was answered).
async fn publish(server: Arc<IntakeServer>, request: Admitted, body: ReadBody) -> Answer {
    let Admitted { department, record, idempotency_key, .. } = request;
    // From here on the request runs in a task of its own: a client that hangs up must not
    // cancel a publish half done (its records would be on the topic with no answer kept).
    let tasks = server.tasks.clone();
    let task = tasks.spawn(async move {
        let Some(key) = idempotency_key else {
            return answer(&server, department, &record, body, EventIds::Fresh).await;
        };
        // One key per department and record type, whichever form carried it: the same key
        // on the single-record and the batch endpoint is the same request, or a refused one
        // (the form is part of the fingerprint).
        let scoped = format!("{department}/{record}/{key}");
        let guard = server.idempotency.lock(&scoped).await;
        let fresh = answer_once(&server, department, &record, body, &scoped).await;
        drop(guard);
        server.idempotency.release(&scoped);
        fresh
    });
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "an intake request failed");
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "retry with the same Idempotency-Key",
            &[],
        )
    })
}

/// A request body read within the limits, and the share of the intake's memory budget it
/// holds until its answer is given.
struct ReadBody {
    form: Form,
    bytes: Bytes,
    /// The non-blank lines (a batch) or the whole body (one record).
    lines: Vec<Bytes>,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

/// Reads a body chunk by chunk and refuses it the moment it passes a limit: its size, its
/// number of lines (counted as they arrive), or the memory all bodies being handled may take
/// together (`intake.max_in_flight_bytes`).
async fn read_body(server: &IntakeServer, body: Body, form: Form) -> Result<ReadBody, Answer> {
    use futures::StreamExt;
    let limits = &server.limits;
    let (limit, max_lines) = match form {
        Form::Single => (limits.max_body_bytes, usize::MAX),
        Form::Batch => (limits.max_batch_bytes, limits.max_batch_lines),
    };
    let too_large =
        |detail: String| problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request body too large", detail, &[]);
    let busy = || {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "The intake is busy",
            "other requests hold the intake's memory; retry in a moment",
            &[],
        )
    };
    let mut budget = server.budget.clone().try_acquire_many_owned(0).map_err(|_| busy())?;
    let mut buffer = Vec::new();
    let mut lines = LineCounter::default();
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(limits.max_body_secs.max(1));
    let too_slow =
        |detail: &str| problem(StatusCode::REQUEST_TIMEOUT, "too-slow", "Body too slow", detail.to_owned(), &[]);
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
            return Err(too_slow("the whole body must arrive within intake.max_body_secs"));
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) if govex_http::server::is_body_timeout(&e) => {
                return Err(too_slow("the client paused too long while sending the body"))
            }
            Err(_) => {
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "body",
                    "The body could not be read",
                    "the connection failed while the body was sent",
                    &[],
                ))
            }
        };
        if buffer.len() + chunk.len() > limit {
            return Err(too_large(format!("the limit is {limit} bytes")));
        }
        // The budget is charged for the bytes held, in KiB: many small chunks cost what
        // their sum costs, not a KiB each.
        let needed = permits(buffer.len() + chunk.len()).saturating_sub(budget.num_permits() as u32);
        if needed > 0 {
            let more = server.budget.clone().try_acquire_many_owned(needed).map_err(|_| busy())?;
            budget.merge(more);
        }
        lines.feed(&chunk);
        if lines.count > max_lines {
            return Err(too_large(format!("the limit is {max_lines} lines per batch")));
        }
        buffer.extend_from_slice(&chunk);
    }
    let bytes = Bytes::from(buffer);
    let lines = match form {
        Form::Single => vec![bytes.clone()],
        Form::Batch => split_lines(&bytes),
    };
    Ok(ReadBody { form, bytes, lines, _budget: budget })
}

/// Budget permits for `n` bytes: one per KiB, rounded up (a semaphore counts in `u32`).
fn permits(n: usize) -> u32 {
    u32::try_from(n.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Counts non-blank lines as chunks arrive (a line may span chunks).
#[derive(Default)]
struct LineCounter {
    count: usize,
    /// Whether the line being read has a character other than white space.
    current_has_text: bool,
}

impl LineCounter {
    fn feed(&mut self, chunk: &[u8]) {
        for byte in chunk {
            match byte {
                b'\n' => self.current_has_text = false,
                // RS starts a record in application/json-seq; it is not content.
                b if b.is_ascii_whitespace() || *b == 0x1e => {}
                _ if !self.current_has_text => {
                    self.current_has_text = true;
                    self.count += 1;
                }
                _ => {}
            }
        }
    }
}

/// The non-blank lines of a batch, as slices of one buffer.
fn split_lines(bytes: &Bytes) -> Vec<Bytes> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr_newlines(bytes).chain(std::iter::once(bytes.len())) {
        let mut line = bytes.slice(start..end);
        start = end + 1;
        if line.ends_with(b"\r") {
            line.truncate(line.len() - 1);
        }
        // application/json-seq (RFC 7464) starts each record with RS (0x1E).
        if line.first() == Some(&0x1e) {
            line = line.slice(1..);
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
    }
    lines
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i)
}

/// Answers a request under an idempotency key: the stored answer, a refusal when the key
/// came with another body, or a fresh answer (kept once it is definitive). The key is
/// recorded as pending before anything is published.
async fn answer_once(
    server: &Arc<IntakeServer>,
    department: Department,
    record: &str,
    body: ReadBody,
    scoped: &str,
) -> Answer {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(match body.form {
        Form::Batch => b"batch\0" as &[u8],
        Form::Single => b"single\0",
    });
    hasher.update(&body.bytes);
    let fingerprint = govex_bus::hex(&hasher.finalize());
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "the idempotency store failed");
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The exchange could not record the request",
            "retry with the same Idempotency-Key",
            &[],
        )
    };
    let store = server.idempotency.clone();
    let key = scoped.to_owned();
    let found = match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return unavailable(&e),
        Err(e) => return unavailable(&e),
    };
    let record_of_key = match found {
        Some(known) if known.fingerprint != fingerprint => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused with another body",
                "this key was first sent with a different body; use a new key for a new request",
                &[],
            )
        }
        Some(KeyRecord { answer: Some(stored), .. }) => {
            let content_type = if stored.content_type == PROBLEM_JSON { PROBLEM_JSON } else { "application/json" };
            return Answer {
                status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                content_type,
                body: stored.body,
            };
        }
        // Pending: the process that first took it stopped before answering. Publishing again
        // with the same event ids lets the sinks drop what arrived then.
        Some(pending) => pending,
        None => {
            let pending = KeyRecord { fingerprint, first_seen_ms: idempotency::now_ms(), answer: None };
            let (store, key, record) = (server.idempotency.clone(), scoped.to_owned(), pending.clone());
            let written =
                tokio::task::spawn_blocking(move || store.put_pending(&key, &record.fingerprint, record.first_seen_ms))
                    .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return unavailable(&e),
                Err(e) => return unavailable(&e),
            }
            pending
        }
    };
    let ids = EventIds::derived(department, scoped, record_of_key.first_seen_ms);
    let fresh = answer(server, department, record, body, ids).await;
    // A 503 stays pending, so that its retry publishes for real (with the same ids).
    if !fresh.status.is_server_error() {
        let stored = StoredAnswer {
            status: fresh.status.as_u16(),
            content_type: fresh.content_type.to_owned(),
            body: fresh.body.clone(),
        };
        let (store, key) = (server.idempotency.clone(), scoped.to_owned());
        match tokio::task::spawn_blocking(move || store.put_answer(&key, &record_of_key, stored)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "an idempotency answer could not be stored"),
            Err(e) => tracing::error!(error = %e, "an idempotency answer could not be stored"),
        }
    }
    fresh
}

/// The answer of a `:validate` route: every check of the record (or of each line), nothing
/// published. One record: 200 `{"valid": true, ...}` or the 422 its submission would get. A
/// batch: 200 with each line's verdict.
fn validation_answer(
    intake: &Intake,
    department: Department,
    record: &str,
    body: ReadBody,
    max_lines: usize,
) -> Answer {
    let context = crate::common::CheckContext::now();
    if body.form == Form::Single {
        return match intake.check(department, record, &body.bytes, &context) {
            Ok(checked) => Answer {
                status: StatusCode::OK,
                content_type: "application/json",
                body: json!({ "valid": true, "topic": checked.outgoing.topic, "detail": "every check passed; nothing was published" })
                    .to_string(),
            },
            Err(rejection) => rejection_answer(&rejection),
        };
    }
    if body.lines.len() > max_lines {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Too many lines",
            format!("the limit is {max_lines} lines per batch"),
            &[],
        );
    }
    if body.lines.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "empty-batch", "Empty batch", "send one JSON record per line", &[]);
    }
    let mut valid = 0;
    let mut listed = 0;
    let results: Vec<serde_json::Value> = body
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| match intake.check(department, record, line, &context) {
            Ok(_) => {
                valid += 1;
                json!({ "line": i + 1, "status": "valid" })
            }
            Err(rejection) => {
                json!({ "line": i + 1, "status": "invalid", "errors": listed_errors(&rejection, &mut listed) })
            }
        })
        .collect();
    let body = json!({ "valid": valid, "invalid": results.len() - valid, "results": results });
    Answer { status: StatusCode::OK, content_type: "application/json", body: body.to_string() }
}

/// The most violations one batch answer lists, over all its lines (each line's are capped
/// already): past them a rejected line shows its first.
const MAX_LISTED: usize = 10_000;

/// A refused line's errors in a batch answer, counting them into `listed` (see
/// [`MAX_LISTED`]).
fn listed_errors(rejection: &Rejection, listed: &mut usize) -> Vec<Violation> {
    let mut violations = rejection.violations();
    if *listed + violations.len() > MAX_LISTED {
        violations.truncate(1);
    }
    *listed += violations.len();
    violations
}

async fn answer(server: &IntakeServer, department: Department, record: &str, body: ReadBody, ids: EventIds) -> Answer {
    if body.form == Form::Single {
        return match server.intake.accept(department, record, &body.bytes, ids).await {
            Ok(accepted) => Answer {
                status: StatusCode::ACCEPTED,
                content_type: "application/json",
                body: json!(accepted).to_string(),
            },
            Err(rejection) => rejection_answer(&rejection),
        };
    }
    let ReadBody { lines, _budget, .. } = body;
    if lines.len() > server.limits.max_batch_lines {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Too many lines",
            format!("the limit is {} lines per batch", server.limits.max_batch_lines),
            &[],
        );
    }
    if lines.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "empty-batch", "Empty batch", "send one JSON record per line", &[]);
    }
    let outcomes = server.intake.accept_batch(department, record, lines, ids).await;
    let mut accepted = 0;
    let mut listed = 0;
    let results: Vec<serde_json::Value> = outcomes
        .iter()
        .enumerate()
        .map(|(i, outcome)| match outcome {
            Ok(a) => {
                accepted += 1;
                json!({ "line": i + 1, "status": "accepted", "event_id": a.event_id, "topic": a.topic, "partition": a.partition, "offset": a.offset })
            }
            // Acknowledged lines keep their answer; a line the broker did not take is reported
            // as such, so the caller resubmits that line alone (under a new key).
            Err(Rejection::Unavailable(_)) => json!({ "line": i + 1, "status": "unavailable", "errors": [Violation::new("", "unavailable", "not published; resubmit this line")] }),
            Err(rejection) => {
                json!({ "line": i + 1, "status": "rejected", "errors": listed_errors(rejection, &mut listed) })
            }
        })
        .collect();
    let unavailable = outcomes.iter().filter(|o| matches!(o, Err(Rejection::Unavailable(_)))).count();
    let body = json!({ "accepted": accepted, "rejected": results.len() - accepted - unavailable, "unavailable": unavailable, "results": results });
    Answer { status: StatusCode::OK, content_type: "application/json", body: body.to_string() }
}
