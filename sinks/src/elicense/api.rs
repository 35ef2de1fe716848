//! The e-licence API for department systems. Every call states its purpose (用证事由, at most
//! 200 characters) and is written to the use log; personal fields are masked unless the
//! catalogue entitles the caller's department to them.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::{NaiveDate, Utc};
use govex_bus::Metrics;
use govex_http::auth::{require_token, Role, Tokens};
use govex_http::problem::{problem, JsonBody, Refused};
use govex_schemas::identifiers::{mask, mask_name};
use govex_schemas::Department;
use govex_schemas::Resource;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::store::{LicenceStore, Status, StoredLicence};
use crate::use_log::{stated_purpose, ReadRequest, Use, UseAction};

/// What the API needs.
pub struct LicenceApi {
    /// The store.
    pub store: LicenceStore,
    /// Department tokens.
    pub tokens: Tokens,
    /// The catalogue entry of licences as the node started with it: used only while the
    /// live catalogue has no entry for the licence topic.
    pub resource: Resource,
    /// The live catalogue: who sees personal fields, and which fields are personal, as a
    /// steward's catalogue says now.
    pub catalog: govex_schemas::LiveCatalog,
    /// Metrics.
    pub metrics: ApiMetrics,
    /// The zone times are shown in.
    pub zone: govex_schemas::zone::TimeZone,
}

impl LicenceApi {
    /// The licence resource as the live catalogue has it (taken once per request).
    fn resource(&self) -> Resource {
        self.catalog.current().by_topic(super::TOPIC).cloned().unwrap_or_else(|| self.resource.clone())
    }
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

/// The routes, as the API port lists them to a caller that asked for another.
pub const ROUTES: &[&str] = &[
    "GET /v1/licences/{id}",
    "POST /v1/licences/{id}/verify",
    "GET /v1/licences/{id}/uses",
    "GET /v1/holders/{holder}/licences",
    "POST /v1/holders/licences",
    "GET /v1/usage",
];

/// The routes.
pub fn router(api: Arc<LicenceApi>) -> Router {
    Router::new()
        .route("/v1/licences/{id}", get(get_licence))
        .route("/v1/licences/{id}/verify", post(verify))
        .route("/v1/licences/{id}/uses", get(uses))
        .route("/v1/holders/{holder}/licences", get(by_holder))
        .route("/v1/holders/licences", post(by_holder_in_body))
        .route("/v1/usage", get(usage))
        .route_layer(axum::middleware::from_fn_with_state(api.tokens.clone(), require_token))
        .with_state(api)
}

/// The caller's department (and role) and stated purpose, or the problem to answer: the
/// token is checked, one unit of its read budget taken, and the purpose checked.
fn caller(
    api: &LicenceApi,
    authorization: Option<&str>,
    purpose: Option<&str>,
    roles: &[Role],
    limited_as: &'static str,
) -> Result<(Department, Role, String), Refused> {
    let caller = api.tokens.authorize_read(authorization, roles, limited_as)?;
    Ok((caller.department, caller.role, stated_purpose(purpose)?))
}

/// The 403 answer for a caller that sent or asked for personal fields it is not entitled to:
/// it names the fields and the rule, and is the same whatever the data holds.
fn not_entitled(resource: &Resource, department: Department, pointers: &[String]) -> Response {
    let errors: Vec<Value> = pointers
        .iter()
        .map(|pointer| {
            json!({
                "pointer": pointer,
                "rule": "personal-data-not-entitled",
                "message": format!("{department} is not entitled to the personal data of {}", resource.id),
            })
        })
        .collect();
    problem(
        StatusCode::FORBIDDEN,
        "personal-data",
        "Not entitled to personal data",
        format!(
            "the catalogue does not entitle {department} to personal fields of {}; leave them out, or ask {} (the owner) for access",
            resource.id, resource.owner
        ),
        Value::Array(errors),
    )
}

fn storage_failed(e: sled::Error) -> Response {
    tracing::error!(error = %e, "the e-licence store failed");
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The e-licence store failed", "retry later", Value::Null)
}

fn date(days: i32) -> String {
    govex_schemas::zone::epoch_date(days).map(|d| d.to_string()).unwrap_or_default()
}

/// The licence's fields, as the one declaration of them (`govex_schemas::records::Licence`)
/// serializes them, with times and dates in the forms callers send and see: `issued_at` in
/// RFC 3339 (in `zone`), `valid_from`/`valid_until` as `YYYY-MM-DD`, and `status_code` beside
/// `status`.
fn fields(licence: &StoredLicence, zone: &govex_schemas::zone::TimeZone) -> serde_json::Map<String, Value> {
    let mut fields = match serde_json::to_value(&licence.licence) {
        Ok(Value::Object(fields)) => fields,
        // A struct of strings, numbers and maps always serializes to an object.
        _ => serde_json::Map::new(),
    };
    fields.insert("issued_at".into(), json!(zone.rfc3339(licence.issued_at)));
    fields.insert("valid_from".into(), json!(date(licence.valid_from)));
    fields.insert("valid_until".into(), json!(licence.valid_until.map(date)));
    fields.insert("status_code".into(), json!(licence.status.code()));
    fields.insert("version".into(), json!(licence.version));
    // Fields a steward added after this node's build, carried along as the issuer wrote them.
    for (name, value) in &licence.extra {
        fields.entry(name.clone()).or_insert_with(|| value.clone());
    }
    fields
}

/// Fields a caller may not present for verification: the surface is presented key by key,
/// and a status or a time says nothing about the document in hand.
const NOT_PRESENTED: [&str; 4] = ["surface", "status", "issued_at", "previous_licence_id"];

/// The names of the licence's own fields a caller may present, from the licence's Avro
/// schema (which the one declaration is tested against); any other name is a surface key.
fn presentable(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let schema = govex_schemas::bundled_schemas().find(|s| s.topic == super::TOPIC).map(|s| s.text);
        let fields = schema
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|schema| schema["fields"].as_array().cloned())
            .unwrap_or_default();
        fields
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .chain(["version".to_owned(), "status_code".to_owned()])
            .filter(|n| !NOT_PRESENTED.contains(&n.as_str()))
            .collect()
    });
    names.iter().any(|n| n == name)
}

/// Whether a field a caller presents for verification is personal data: the holder's
/// identifier and name, and every surface key the catalogue does not name as public.
fn is_personal(resource: &Resource, field: &str) -> bool {
    match presentable(field) {
        true => resource.personal_fields.iter().any(|path| path == field),
        false => resource.is_personal_map_key("surface", field),
    }
}

/// The licence as a caller sees it: personal fields masked unless `entitled`.
fn view(licence: &StoredLicence, entitled: bool, resource: &Resource, zone: &govex_schemas::zone::TimeZone) -> Value {
    let mut view = fields(licence, zone);
    let (number, name) = if entitled {
        (licence.holder_identifier_number.clone(), licence.holder_name.clone())
    } else {
        (mask(&licence.holder_identifier_number), mask_name(&licence.holder_name))
    };
    for key in ["holder_identifier_type", "holder_identifier_number", "holder_name"] {
        view.remove(key);
    }
    view.insert(
        "holder".into(),
        json!({ "identifier_type": licence.holder_identifier_type, "identifier_number": number, "name": name, "masked": !entitled }),
    );
    if !entitled {
        let mut surface = licence.surface.clone();
        for (key, value) in surface.iter_mut() {
            if resource.is_personal_map_key("surface", key) {
                *value = mask(value);
            }
        }
        view.insert("surface".into(), json!(surface));
    }
    if !entitled {
        // A field this node does not know is masked by the catalogue's paths like any other,
        // whatever its shape; one the catalogue does not name as personal is shown.
        let mut record = Value::Object(std::mem::take(&mut view));
        for path in &resource.personal_fields {
            if licence.extra.contains_key(path.split(['.', '[']).next().unwrap_or_default()) {
                crate::dossier::api::mask_path(&mut record, path);
            }
        }
        if let Value::Object(masked) = record {
            view = masked;
        }
    }
    view.insert("superseded_by".into(), json!(licence.superseded_by));
    // The content includes the holder's identifier and name: its hash would let a caller
    // not entitled to them test guesses offline. It may still present a hash to verify.
    view.insert("content_hash".into(), json!(entitled.then_some(&licence.content_hash)));
    Value::Object(view)
}

async fn get_licence(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    read: ReadRequest,
) -> Result<Response, Refused> {
    let (department, _, purpose) =
        caller(&api, read.authorization.as_deref(), read.purpose.as_deref(), &[Role::Department], "licences")?;
    let found = api.store.get(&id).map_err(storage_failed)?;
    let result = if found.is_some() { "found" } else { "not_found" };
    let entry = Use { caller: department.as_str(), purpose: &purpose, action: UseAction::Get, subject: &id, result };
    api.store.use_log().log_use(entry).await.map_err(storage_failed)?;
    Ok(match found {
        Some(licence) => {
            let resource = api.resource();
            Json(view(&licence, resource.may_see_personal_data(department.as_str()), &resource, &api.zone))
                .into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such licence",
            "the store has no licence with this identifier",
            Value::Null,
        ),
    })
}

async fn by_holder(
    State(api): State<Arc<LicenceApi>>,
    Path(holder): Path<String>,
    read: ReadRequest,
) -> Result<Response, Refused> {
    holder_licences(&api, read.authorization.as_deref(), &holder, read.purpose.as_deref(), read.type_code.as_deref())
        .await
}

/// `POST /v1/holders/licences`: the same look-up with the identifier in the body, because
/// paths end up in ingress and proxy access logs and bodies do not.
#[derive(Deserialize)]
struct HolderQuery {
    holder: String,
    purpose: Option<String>,
    #[serde(rename = "type")]
    type_code: Option<String>,
}

async fn by_holder_in_body(
    State(api): State<Arc<LicenceApi>>,
    read: ReadRequest,
    JsonBody(query): JsonBody<HolderQuery>,
) -> Result<Response, Refused> {
    let authorization = read.authorization.as_deref();
    holder_licences(&api, authorization, &query.holder, query.purpose.as_deref(), query.type_code.as_deref()).await
}

async fn holder_licences(
    api: &LicenceApi,
    authorization: Option<&str>,
    holder: &str,
    purpose: Option<&str>,
    type_code: Option<&str>,
) -> Result<Response, Refused> {
    let (department, _, purpose) = caller(api, authorization, purpose, &[Role::Department], "holders")?;
    // Whether a holder has licences is itself personal data: a caller not entitled to it
    // must not be able to test guessed identifiers against the store.
    let resource = api.resource();
    if !resource.may_see_personal_data(department.as_str()) {
        return Err(not_entitled(&resource, department, &["/holder".to_owned()]).into());
    }
    let licences = api.store.by_holder(holder, type_code).map_err(storage_failed)?;
    // One use per licence shown (or one "not_found"), made durable together by one flush
    // before the answer.
    let log = api.store.use_log();
    let masked = mask(holder);
    let shown: Vec<(&str, &str)> = match licences.is_empty() {
        true => vec![(&masked, "not_found")],
        false => licences.iter().map(|licence| (licence.licence_id.as_str(), "found")).collect(),
    };
    for (subject, result) in shown {
        let entry = Use { caller: department.as_str(), purpose: &purpose, action: UseAction::Holder, subject, result };
        log.record_use(entry).map_err(storage_failed)?;
    }
    log.flush().await.map_err(storage_failed)?;
    let views: Vec<Value> = licences.iter().map(|l| view(l, true, &resource, &api.zone)).collect();
    Ok(Json(json!({ "holder": holder, "licences": views })).into_response())
}

/// A misspelt member (`FIELDS`) would otherwise be skipped and the licence answered `valid`
/// without anything compared.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    purpose: Option<String>,
    content_hash: Option<String>,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

/// The stored value a presented field is compared with: the licence's own fields by name,
/// then its surface fields by key. Nothing else (the masked view, say) is ever compared, so
/// what a caller learns from a verdict is only what it presented.
fn presented_field(licence: &StoredLicence, name: &str) -> Option<Value> {
    match presentable(name) {
        // The zone only shapes `issued_at`, which cannot be presented.
        true => fields(licence, &govex_schemas::zone::TimeZone::default()).remove(name),
        false => Some(json!(licence.surface.get(name)?)),
    }
}

/// What a verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid today, as presented.
    Valid,
    /// No licence with this identifier.
    NotFound,
    /// A presented field or the content hash differs from the licence's.
    Mismatch,
    /// Past its last day, or expired.
    Expired,
    /// Before its first day.
    NotYetValid,
    /// Suspended.
    Suspended,
    /// Revoked.
    Revoked,
    /// Withdrawn.
    Withdrawn,
    /// Cancelled.
    Cancelled,
    /// Transferred.
    Transferred,
    /// Any other status.
    Invalid,
}

impl Outcome {
    /// The name answers, metrics and the use log carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::NotFound => "not_found",
            Self::Mismatch => "mismatch",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
            Self::Withdrawn => "withdrawn",
            Self::Cancelled => "cancelled",
            Self::Transferred => "transferred",
            Self::Invalid => "invalid",
        }
    }
}

/// The verdict on a presented licence: the outcome and every reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What the verification found.
    pub outcome: Outcome,
    /// Why, field by field (names, never values).
    pub reasons: Vec<String>,
}

/// The verdict on a presented licence.
pub fn verdict(
    stored: Option<&StoredLicence>,
    content_hash: Option<&str>,
    fields: &serde_json::Map<String, Value>,
    today: NaiveDate,
) -> Verdict {
    let Some(licence) = stored else {
        return Verdict {
            outcome: Outcome::NotFound,
            reasons: vec!["the store has no licence with this identifier".into()],
        };
    };
    let mut mismatches = Vec::new();
    if let Some(hash) = content_hash {
        if !hash.eq_ignore_ascii_case(&licence.content_hash) {
            mismatches.push("content_hash differs from the licence's".to_owned());
        }
    }
    for (name, presented) in fields {
        if presented_field(licence, name).as_ref() != Some(presented) {
            // Name the field, never its value.
            mismatches.push(format!("{name} differs from the licence's"));
        }
    }
    if !mismatches.is_empty() {
        return Verdict { outcome: Outcome::Mismatch, reasons: mismatches };
    }
    let days_today = govex_schemas::zone::epoch_days(today);
    let mut reasons = Vec::new();
    if let Some(newer) = &licence.superseded_by {
        reasons.push(format!("superseded by {newer}"));
    }
    let outcome = match licence.status {
        Status::Valid if licence.valid_until.is_some_and(|until| until < days_today) => {
            reasons.push(format!("valid until {}", date(licence.valid_until.unwrap_or_default())));
            Outcome::Expired
        }
        Status::Valid if licence.valid_from > days_today => {
            reasons.push(format!("valid from {}", date(licence.valid_from)));
            Outcome::NotYetValid
        }
        Status::Valid => Outcome::Valid,
        Status::Suspended => Outcome::Suspended,
        Status::Revoked => Outcome::Revoked,
        Status::Expired => Outcome::Expired,
        Status::Withdrawn => Outcome::Withdrawn,
        Status::Cancelled => Outcome::Cancelled,
        Status::Transferred => Outcome::Transferred,
        Status::Other => Outcome::Invalid,
    };
    if outcome != Outcome::Valid && reasons.is_empty() {
        reasons.push(format!("status {} ({:?})", licence.status.code(), licence.status));
    }
    Verdict { outcome, reasons }
}

async fn verify(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    read: ReadRequest,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<Response, Refused> {
    let started = Instant::now();
    // The purpose of a verification is in its body, with what is presented.
    let (department, _, purpose) =
        caller(&api, read.authorization.as_deref(), request.purpose.as_deref(), &[Role::Department], "licences")?;
    // A caller not entitled to the holder's personal data may not present it either: a
    // verdict on a guessed identifier or name would tell it whether the guess is right.
    // The refusal is decided on the request alone, before the store is read.
    let resource = api.resource();
    if !resource.may_see_personal_data(department.as_str()) {
        let personal: Vec<String> = request
            .fields
            .keys()
            .filter(|name| is_personal(&resource, name))
            .map(|name| format!("/fields/{name}"))
            .collect();
        if !personal.is_empty() {
            api.metrics.verifications.get_or_create(&ResultLabels { result: "refused".into() }).inc();
            return Err(not_entitled(&resource, department, &personal).into());
        }
    }
    // A verification the store could not answer counts as result="error": the error rate is
    // what the operators' alert watches.
    let counted = |result: &str| {
        api.metrics.verifications.get_or_create(&ResultLabels { result: result.into() }).inc();
        api.metrics.latency.observe(started.elapsed().as_secs_f64());
    };
    let failed = |e: sled::Error| {
        counted("error");
        storage_failed(e)
    };
    let stored = api.store.get(&id).map_err(failed)?;
    let today = govex_schemas::zone::china_date(Utc::now());
    let Verdict { outcome, reasons } =
        verdict(stored.as_ref(), request.content_hash.as_deref(), &request.fields, today);
    let result = outcome.as_str();
    let entry = Use { caller: department.as_str(), purpose: &purpose, action: UseAction::Verify, subject: &id, result };
    api.store.use_log().log_use(entry).await.map_err(failed)?;
    counted(result);
    let status_code = stored.map(|s| s.status.code());
    Ok(Json(json!({ "licence_id": id, "result": result, "reasons": reasons, "status_code": status_code }))
        .into_response())
}

/// A licence's use log. A department sees only its own entries; the licences' owner and
/// auditors see every entry.
async fn uses(
    State(api): State<Arc<LicenceApi>>,
    Path(id): Path<String>,
    read: ReadRequest,
) -> Result<Response, Refused> {
    let roles = [Role::Department, Role::Auditor];
    let (department, role, purpose) =
        caller(&api, read.authorization.as_deref(), read.purpose.as_deref(), &roles, "licences")?;
    let log = api.store.use_log();
    // The log also holds dossier reads (by property unit) and holder look-ups that found
    // nothing (by masked holder): this route lists the uses of a licence, nothing else.
    let mut uses = match govex_schemas::identifiers::licence_id(&id) {
        Ok(_) => log.uses_of(&id).map_err(storage_failed)?,
        Err(_) => Vec::new(),
    };
    uses.retain(|entry| entry.action != UseAction::Dossier.as_str());
    let sees_all = role == Role::Auditor || department.as_str() == api.resource().owner;
    let listed: Vec<Value> = match sees_all {
        true => uses.iter().map(|entry| json!(entry)).collect(),
        // A department sees its own entries without their place in the chain: sequence
        // numbers and hashes would show how many reads others made between its own, and let
        // it test guesses at what they were.
        false => uses
            .iter()
            .filter(|entry| entry.caller == department.as_str())
            .map(|entry| {
                json!({ "at_ms": entry.at_ms, "caller": entry.caller, "purpose": entry.purpose,
                        "action": entry.action, "subject": entry.subject, "result": entry.result })
            })
            .collect(),
    };
    // An auditor's read is its own, not its department's: the department does not see it.
    let logged_as = match role {
        Role::Auditor => format!("{department} (auditor)"),
        _ => department.as_str().to_owned(),
    };
    let entry = Use { caller: &logged_as, purpose: &purpose, action: UseAction::Uses, subject: &id, result: "listed" };
    log.log_use(entry).await.map_err(storage_failed)?;
    Ok(Json(json!({ "licence_id": id, "uses": listed })).into_response())
}

/// `GET /v1/usage`: reads of shared data counted by resource, reading department, purpose
/// category and action, from the use log. An auditor sees every row; a department the rows
/// of its own reads and of reads of the resources it owns (who reads its data, and why).
/// The counts hold no personal data and are not themselves logged as a use.
async fn usage(State(api): State<Arc<LicenceApi>>, headers: axum::http::HeaderMap) -> Result<Response, Refused> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = api.tokens.authorize_read(authorization, &[Role::Department, Role::Auditor], "usage")?;
    let catalog = api.catalog.current();
    let me = caller.department.as_str();
    let owns = |resource: &str| catalog.resources.iter().any(|r| r.id == resource && r.owner == me);
    let rows: Vec<_> = api
        .store
        .use_log()
        .usage()
        .rows()
        .into_iter()
        .filter(|row| caller.role == Role::Auditor || row.department == me || owns(&row.resource))
        .collect();
    let categories: Vec<&str> = crate::use_log::usage::CATEGORIES.iter().map(|(name, _)| *name).collect();
    Ok(Json(json!({ "rows": rows, "categories": categories, "other": "other" })).into_response())
}
