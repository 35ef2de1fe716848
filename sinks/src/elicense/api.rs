//! The e-licence API for department systems. Every call states its purpose (用证事由, at most
//! 200 characters) and is written to the use log; personal fields are masked unless the
//! catalogue entitles the caller's department to them.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{NaiveDate, Utc};
use govex_bus::{auth::Tokens, identifiers::mask, problem::problem, Department, Metrics};
use govex_schemas::Resource;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::store::{LicenceStore, Status, StoredLicence};

/// What the API needs.
pub struct LicenceApi {
    /// The store.
    pub store: LicenceStore,
    /// Department tokens.
    pub tokens: Tokens,
    /// The catalogue entry of licences (who sees personal fields).
    pub resource: Resource,
    /// Metrics.
    pub metrics: ApiMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Verification metrics.
#[derive(Clone)]
pub struct ApiMetrics {
    verifications: Family<ResultLabels, Counter>,
    latency: Histogram,
}

impl ApiMetrics {
    /// Registers the API's metrics.
    pub fn register(metrics: &Metrics) -> Self {
        let api = Self {
            verifications: Family::default(),
            latency: Histogram::new([0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1]),
        };
        metrics.register(|r| {
            r.register("elicense_verifications", "Licence verifications by result", api.verifications.clone());
            r.register("elicense_verify_latency_seconds", "Time to answer a verification", api.latency.clone());
        });
        api
    }
}

/// The routes.
pub fn router(api: Arc<LicenceApi>) -> Router {
    Router::new()
        .route("/v1/licences/{id}", get(get_licence))
        .route("/v1/licences/{id}/verify", post(verify))
        .route("/v1/licences/{id}/uses", get(uses))
        .route("/v1/holders/{holder}/licences", get(by_holder))
        .with_state(api)
}

const MAX_PURPOSE_CHARS: usize = 200;

/// The caller's department and stated purpose, or the problem to answer.
fn caller(api: &LicenceApi, headers: &HeaderMap, purpose: Option<&str>) -> Result<(Department, String), Box<Response>> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (department, _) = api.tokens.authenticate(authorization).map_err(|_| {
        problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            "send Authorization: Bearer <department token>",
            Value::Null,
        )
    })?;
    let purpose = purpose.map(str::trim).unwrap_or_default();
    if purpose.is_empty() {
        let errors = json!([{ "pointer": "/purpose", "rule": "purpose-required", "message": "state the purpose of the use (用证事由)" }]);
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "purpose",
            "Purpose required",
            "every use of a licence states its purpose",
            errors,
        )));
    }
    if purpose.chars().count() > MAX_PURPOSE_CHARS {
        let errors = json!([{ "pointer": "/purpose", "rule": "purpose-too-long", "message": format!("at most {MAX_PURPOSE_CHARS} characters") }]);
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            "purpose",
            "Purpose too long",
            "shorten the purpose",
            errors,
        )));
    }
    Ok((department, purpose.to_owned()))
}

fn storage_failed(e: sled::Error) -> Response {
    tracing::error!(error = %e, "the e-licence store failed");
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The e-licence store failed", "retry later", Value::Null)
}

/// A name masked to its first character.
fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|first| std::iter::once(first).chain(chars.map(|_| '*')).collect()).unwrap_or_default()
}

fn date(days: i32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(days))))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// The licence as a caller sees it.
fn view(licence: &StoredLicence, entitled: bool) -> Value {
    let (number, name) = if entitled {
        (licence.holder_identifier_number.clone(), licence.holder_name.clone())
    } else {
        (mask(&licence.holder_identifier_number), mask_name(&licence.holder_name))
    };
    json!({
        "licence_id": licence.licence_id,
        "version": licence.version,
        "type_code": licence.type_code,
        "type_name": licence.type_name,
        "licence_number": licence.licence_number,
        "issuer_code": licence.issuer_code,
        "issuer_name": licence.issuer_name,
        "holder": { "identifier_type": licence.holder_identifier_type, "identifier_number": number, "name": name, "masked": !entitled },
        "issued_at": chrono::DateTime::<Utc>::from_timestamp_millis(licence.issued_at).map(|t| t.to_rfc3339()),
        "valid_from": date(licence.valid_from),
        "valid_until": licence.valid_until.map(date),
        "status": licence.status,
        "status_code": licence.status.code(),
        "surface": licence.surface,
        "previous_licence_id": licence.previous_licence_id,
        "superseded_by": licence.superseded_by,
        "content_hash": licence.content_hash,
    })
}

#[derive(Deserialize)]
struct PurposeQuery {
    purpose: Option<String>,
    #[serde(rename = "type")]
    type_code: Option<String>,
}

async fn get_licence(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Response {
    let (department, purpose) = match caller(&api, &headers, query.purpose.as_deref()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let found = match api.store.get(&id) {
        Ok(found) => found,
        Err(e) => return storage_failed(e),
    };
    let result = if found.is_some() { "found" } else { "not_found" };
    if let Err(e) = api.store.log_use(department.as_str(), &purpose, "get", &id, result).await {
        return storage_failed(e);
    }
    match found {
        Some(licence) => Json(view(&licence, api.resource.may_see_personal_data(department.as_str()))).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such licence",
            "the store has no licence with this identifier",
            Value::Null,
        ),
    }
}

async fn by_holder(
    State(api): State<Arc<LicenceApi>>,
    Path(holder): Path<String>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Response {
    let (department, purpose) = match caller(&api, &headers, query.purpose.as_deref()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let licences = match api.store.by_holder(&holder, query.type_code.as_deref()) {
        Ok(licences) => licences,
        Err(e) => return storage_failed(e),
    };
    // One use per licence shown (or one "not_found"), made durable together by one flush
    // before the answer.
    if licences.is_empty() {
        if let Err(e) = api.store.record_use(department.as_str(), &purpose, "holder", &mask(&holder), "not_found") {
            return storage_failed(e);
        }
    }
    for licence in &licences {
        if let Err(e) = api.store.record_use(department.as_str(), &purpose, "holder", &licence.licence_id, "found") {
            return storage_failed(e);
        }
    }
    if let Err(e) = api.store.flush().await {
        return storage_failed(e);
    }
    let entitled = api.resource.may_see_personal_data(department.as_str());
    Json(json!({ "holder": if entitled { holder.clone() } else { mask(&holder) }, "licences": licences.iter().map(|l| view(l, entitled)).collect::<Vec<_>>() })).into_response()
}

#[derive(Deserialize)]
struct VerifyRequest {
    purpose: Option<String>,
    content_hash: Option<String>,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

/// The verdict on a presented licence, and every reason for it.
pub fn verdict(
    stored: Option<&StoredLicence>,
    content_hash: Option<&str>,
    fields: &serde_json::Map<String, Value>,
    today: NaiveDate,
) -> (&'static str, Vec<String>) {
    let Some(licence) = stored else {
        return ("not_found", vec!["the store has no licence with this identifier".into()]);
    };
    let mut mismatches = Vec::new();
    if let Some(hash) = content_hash {
        if !hash.eq_ignore_ascii_case(&licence.content_hash) {
            mismatches.push("content_hash differs from the licence's".to_owned());
        }
    }
    let stored_fields = view(licence, true);
    for (name, presented) in fields {
        let actual = match name.as_str() {
            "holder_identifier_number" => json!(licence.holder_identifier_number),
            "holder_name" => json!(licence.holder_name),
            other => stored_fields
                .get(other)
                .cloned()
                .or_else(|| licence.surface.get(other).map(|v| json!(v)))
                .unwrap_or(Value::Null),
        };
        if &actual != presented {
            // Name the field, never its value.
            mismatches.push(format!("{name} differs from the licence's"));
        }
    }
    if !mismatches.is_empty() {
        return ("mismatch", mismatches);
    }
    let days_today = (today - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32;
    let mut reasons = Vec::new();
    if let Some(newer) = &licence.superseded_by {
        reasons.push(format!("superseded by {newer}"));
    }
    let result = match licence.status {
        Status::Valid if licence.valid_until.is_some_and(|until| until < days_today) => {
            reasons.push(format!("valid until {}", date(licence.valid_until.unwrap_or_default())));
            "expired"
        }
        Status::Valid if licence.valid_from > days_today => {
            reasons.push(format!("valid from {}", date(licence.valid_from)));
            "not_yet_valid"
        }
        Status::Valid => "valid",
        Status::Suspended => "suspended",
        Status::Revoked => "revoked",
        Status::Expired => "expired",
        Status::Withdrawn => "withdrawn",
        Status::Cancelled => "cancelled",
        Status::Transferred => "transferred",
        Status::Other => "invalid",
    };
    if result != "valid" && reasons.is_empty() {
        reasons.push(format!("status {} ({:?})", licence.status.code(), licence.status));
    }
    (result, reasons)
}

async fn verify(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(request): Json<VerifyRequest>,
) -> Response {
    let started = Instant::now();
    let (department, purpose) = match caller(&api, &headers, request.purpose.as_deref()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    // A verification the store could not answer counts as result="error": the error rate is
    // what the operators' alert watches.
    let counted = |result: &str| {
        api.metrics.verifications.get_or_create(&ResultLabels { result: result.into() }).inc();
        api.metrics.latency.observe(started.elapsed().as_secs_f64());
    };
    let stored = match api.store.get(&id) {
        Ok(stored) => stored,
        Err(e) => {
            counted("error");
            return storage_failed(e);
        }
    };
    let today = (Utc::now() + chrono::Duration::hours(8)).date_naive();
    let (result, reasons) = verdict(stored.as_ref(), request.content_hash.as_deref(), &request.fields, today);
    if let Err(e) = api.store.log_use(department.as_str(), &purpose, "verify", &id, result).await {
        counted("error");
        return storage_failed(e);
    }
    counted(result);
    Json(json!({ "licence_id": id, "result": result, "reasons": reasons, "status_code": stored.map(|s| s.status.code()) })).into_response()
}

async fn uses(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Response {
    let (department, purpose) = match caller(&api, &headers, query.purpose.as_deref()) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let uses = match api.store.uses_of(&id) {
        Ok(uses) => uses,
        Err(e) => return storage_failed(e),
    };
    if let Err(e) = api.store.log_use(department.as_str(), &purpose, "uses", &id, "listed").await {
        return storage_failed(e);
    }
    Json(json!({ "licence_id": id, "uses": uses })).into_response()
}
