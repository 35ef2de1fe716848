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

/// An answer that ends a handler before its work: a refused token, a missing purpose, a store
/// that failed. Handlers return `Result<Response, Refused>` so that each check is one `?`
/// instead of a `match` that returns; it is boxed because a `Response` is large and most
/// results are not refusals.
pub struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl From<Box<Response>> for Refused {
    fn from(response: Box<Response>) -> Self {
        Self(response)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A JSON request body of type `T`. A body that is not JSON, or does not fit `T`, is answered
/// with problem details naming the place (a JSON pointer) and the rule, never the value found
/// there: axum's own `Json` echoes serde's message, which quotes the value (a citizen
/// identity number sent as a number, say).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "media-type",
                "Unsupported media type",
                "send Content-Type: application/json",
                Value::Null,
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            match crate::server::is_body_timeout(&rejection) {
                true => problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "too-slow",
                    "Body too slow",
                    "the client paused too long while sending the body",
                    Value::Null,
                ),
                false => problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Body too large",
                    "the body is larger than this route takes (its limit is in the OpenAPI document)",
                    Value::Null,
                ),
            }
        })?;
        let malformed = |inner: &serde_json::Error| {
            // Syntax errors name a position, never the input.
            let detail = format!("the body is not valid JSON (line {}, column {})", inner.line(), inner.column());
            problem(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON", detail, Value::Null)
        };
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
            Ok(value) => {
                deserializer.end().map_err(|e| malformed(&e))?;
                Ok(Self(value))
            }
            Err(error) => {
                let inner = error.inner();
                if inner.is_data() {
                    let pointer: String = error
                        .path()
                        .iter()
                        .map(|segment| format!("/{}", segment.to_string().replace('~', "~0").replace('/', "~1")))
                        .collect();
                    let errors = json!([{ "pointer": pointer, "rule": "type", "message": "missing, or not of the expected type" }]);
                    Err(problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        "Invalid request",
                        "the body does not have the expected shape",
                        errors,
                    ))
                } else {
                    Err(malformed(inner))
                }
            }
        }
    }
}

/// `router`, answering a path it does not serve (404) or a method a path does not take (405)
/// with problem details that list `routes` (`"POST /v1/{department}/{record}"`), so that a
/// client with a typo learns what is there instead of reading an empty body.
pub fn with_route_list(router: axum::Router, routes: Vec<String>) -> axum::Router {
    let routes: std::sync::Arc<[String]> = routes.into();
    let listed = routes.clone();
    router
        .fallback(move |request: axum::extract::Request| {
            let routes = routes.clone();
            async move { unknown_route(StatusCode::NOT_FOUND, request.method(), &routes) }
        })
        .method_not_allowed_fallback(move |request: axum::extract::Request| {
            let routes = listed.clone();
            async move { unknown_route(StatusCode::METHOD_NOT_ALLOWED, request.method(), &routes) }
        })
}

fn unknown_route(status: StatusCode, method: &axum::http::Method, routes: &[String]) -> Response {
    // The path is the caller's own, but may carry an identifier (`/v1/licences/{id}`): it is
    // not echoed, only the method.
    let (kind, title, what) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method-not-allowed", "Method not allowed", format!("{method} is not served on this path"))
        }
        _ => ("unknown-route", "No such route", "nothing is served on this path".to_owned()),
    };
    let body = json!({
        "type": format!("urn:govex:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": format!("{what}; this port serves: {}", routes.join(", ")),
        "routes": routes,
        // Confluent's clients read these on the registry port; elsewhere they repeat the rest.
        "error_code": status.as_u16(),
        "message": title,
    });
    (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body.to_string()).into_response()
}
