//! The intake's HTTP API: `POST /v1/{department}/{record}` for one JSON record and
//! `POST /v1/{department}/{record}:batch` for NDJSON. Answers come only after the broker
//! acknowledged; errors are RFC 9457 problem details listing every violation with its JSON
//! pointer and rule, and never the value of a field.

use std::sync::Arc;

use axum::{
    body::{to_bytes, Body},
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use govex_bus::{config::IntakeConfig, Department};
use serde_json::json;

use super::{
    auth::{AuthError, Role, Tokens},
    idempotency::IdempotencyStore,
    Intake, Rejection,
};
use crate::validation::Violation;

pub use govex_bus::problem::PROBLEM_JSON;

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
}

/// The intake routes.
pub fn router(server: Arc<IntakeServer>) -> Router {
    Router::new().route("/v1/{department}/{record}", post(handle)).with_state(server)
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
        body: govex_bus::problem::problem_body(status, kind, title, detail, errors),
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

async fn handle(
    State(server): State<Arc<IntakeServer>>,
    Path((department, record)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (record, batch) = match record.strip_suffix(":batch") {
        Some(record) => (record.to_owned(), true),
        None => (record, false),
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match server.tokens.authenticate(authorization) {
        Ok(caller) if caller.role == Role::Department => caller.department,
        Ok(caller) => {
            return problem(
                StatusCode::FORBIDDEN,
                "role",
                "Not allowed for this token's role",
                format!("a {} token cannot send records; use the department system's token", caller.role.as_str()),
                &[],
            )
        }
        Err(AuthError::Missing) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                "send Authorization: Bearer <department token>",
                &[],
            )
        }
        Err(AuthError::Unknown) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication failed",
                "the token is not valid",
                &[],
            )
        }
    };
    let Ok(department) = department.parse::<Department>() else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown department",
            format!("'{department}' is not a department"),
            &[],
        );
    };
    if caller != department {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Another department's record",
            format!("a {caller} token cannot submit {department} records"),
            &[],
        );
    }
    if !server.intake.knows(department, &record) {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-record",
            "Unknown record type",
            format!("{department} does not send '{record}' records"),
            &[],
        );
    }
    let media = media_type(&headers);
    let accepted_media: &[&str] = if batch {
        &["application/x-ndjson", "application/jsonl", "application/json-seq"]
    } else {
        &["application/json"]
    };
    if !accepted_media.contains(&media.as_str()) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported content type",
            format!("send Content-Type: {}", accepted_media[0]),
            &[],
        );
    }
    let limit = if batch { server.limits.max_batch_bytes } else { server.limits.max_body_bytes };
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) if govex_bus::server::is_body_timeout(&e) => {
            return problem(
                StatusCode::REQUEST_TIMEOUT,
                "too-slow",
                "Body too slow",
                "the client paused too long while sending the body",
                &[],
            )
        }
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
                format!("the limit is {limit} bytes"),
                &[],
            )
        }
    };

    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Some(key) = idempotency_key else {
        return answer(&server, department, &record, batch, &bytes).await;
    };
    if key.is_empty() || key.len() > 255 {
        return problem(
            StatusCode::BAD_REQUEST,
            "idempotency-key",
            "Invalid Idempotency-Key",
            "use 1 to 255 characters",
            &[],
        );
    }
    let scoped = format!("{department}/{record}{}/{key}", if batch { ":batch" } else { "" });
    let guard = server.idempotency.lock(&scoped).await;
    if let Some(stored) = server.idempotency.get(&scoped) {
        drop(guard);
        server.idempotency.release(&scoped);
        let content_type = if stored.content_type == PROBLEM_JSON { PROBLEM_JSON } else { "application/json" };
        return Answer {
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
            content_type,
            body: stored.body,
        };
    }
    let fresh = answer(&server, department, &record, batch, &bytes).await;
    // Only definitive answers are remembered: a 503 must be retried for real.
    if !fresh.status.is_server_error() {
        if let Err(e) = server.idempotency.put(&scoped, fresh.status.as_u16(), fresh.content_type, &fresh.body) {
            tracing::error!(error = %e, "an idempotency key could not be stored");
        }
    }
    drop(guard);
    server.idempotency.release(&scoped);
    fresh
}

async fn answer(server: &IntakeServer, department: Department, record: &str, batch: bool, bytes: &[u8]) -> Answer {
    if !batch {
        return match server.intake.accept(department, record, bytes).await {
            Ok(accepted) => Answer {
                status: StatusCode::ACCEPTED,
                content_type: "application/json",
                body: json!(accepted).to_string(),
            },
            Err(rejection) => rejection_answer(&rejection),
        };
    }
    let lines: Vec<Vec<u8>> = bytes
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        // application/json-seq (RFC 7464) starts each record with RS (0x1E).
        .map(|line| line.strip_prefix(b"\x1e").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect();
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
    let outcomes = server.intake.accept_batch(department, record, lines).await;
    let mut accepted = 0;
    let results: Vec<serde_json::Value> = outcomes
        .iter()
        .enumerate()
        .map(|(i, outcome)| match outcome {
            Ok(a) => {
                accepted += 1;
                json!({ "line": i + 1, "status": "accepted", "event_id": a.event_id, "topic": a.topic, "partition": a.partition, "offset": a.offset })
            }
            Err(Rejection::Malformed(detail)) => {
                json!({ "line": i + 1, "status": "rejected", "errors": [Violation::new("", "malformed-json", detail.clone())] })
            }
            Err(Rejection::Invalid(violations)) => json!({ "line": i + 1, "status": "rejected", "errors": violations }),
            // Acknowledged lines keep their answer; a line the broker did not take is reported
            // as such, so the caller resubmits that line alone (under a new key).
            Err(Rejection::Unavailable(_)) => json!({ "line": i + 1, "status": "unavailable", "errors": [Violation::new("", "unavailable", "not published; resubmit this line")] }),
        })
        .collect();
    let unavailable = outcomes.iter().filter(|o| matches!(o, Err(Rejection::Unavailable(_)))).count();
    let body = json!({ "accepted": accepted, "rejected": results.len() - accepted - unavailable, "unavailable": unavailable, "results": results });
    Answer { status: StatusCode::OK, content_type: "application/json", body: body.to_string() }
}
