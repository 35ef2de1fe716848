//! RFC 9457 problem details, the one error shape every govex HTTP API answers with.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem-details response: `type` is `urn:govex:problem:<kind>`; `errors`, when not
/// null, lists violations (`pointer`, `rule`, `message`).
pub fn problem(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>, errors: Value) -> Response {
    let mut body = json!({
        "type": format!("urn:govex:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if !errors.is_null() {
        body["errors"] = errors;
    }
    (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body.to_string()).into_response()
}
