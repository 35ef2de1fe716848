//! RFC 9457 problem details, the one error shape every govex HTTP API answers with.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of a problem-details answer: `type` is `urn:govex:problem:<kind>`; `errors`,
/// when not null, lists violations (`pointer`, `rule`, `message`).
pub fn problem_body(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>, errors: Value) -> String {
    let mut body = json!({
        "type": format!("urn:govex:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if !errors.is_null() {
        body["errors"] = errors;
    }
    body.to_string()
}

/// A problem-details response (see [`problem_body`]).
pub fn problem(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>, errors: Value) -> Response {
    (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], problem_body(status, kind, title, detail, errors)).into_response()
}
