//! `GET /v1/dossiers/{unit}?purpose=...`: what every department holds about one property
//! unit, as far as the catalogue lets the caller see it. A dossier holds personal data
//! (buyers, taxpayers, right holders), so every read states its purpose and lands in the
//! use log before it is answered, like a licence read.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use govex_bus::{
    auth::{require_token, Role, Tokens},
    identifiers::{mask, mask_name},
    problem::problem,
};
use govex_schemas::LiveCatalog;
use serde::Deserialize;
use serde_json::{json, Value};

use super::DossierStore;
use crate::use_log::{checked_purpose, purpose_problem, UseLog};

/// What the API needs.
pub struct DossierApi {
    /// The store.
    pub store: DossierStore,
    /// Department tokens.
    pub tokens: Tokens,
    /// Sharing classes and personal fields, as the node goes by them now.
    pub catalog: LiveCatalog,
    /// Where every read is recorded (the node's use log).
    pub use_log: UseLog,
}

/// The route, as the API port lists it to a caller that asked for another.
pub const ROUTES: &[&str] = &["GET /v1/dossiers/{unit}", "GET /v1/resources/{id}/records/{key}"];

/// The route.
pub fn router(api: Arc<DossierApi>) -> Router {
    Router::new()
        .route("/v1/dossiers/{unit}", get(dossier))
        .route("/v1/resources/{id}/records/{key}", get(resource_record))
        .route_layer(axum::middleware::from_fn_with_state(api.tokens.clone(), require_token))
        .with_state(api)
}

/// Masks the strings at `path` (`a.b`, `list[].c`, `map.key`) in `value`: a name (a path
/// ending in `name`) to its surname, anything else as an identifier.
pub fn mask_path(value: &mut Value, path: &str) {
    let (step, rest) = match path.split_once('.') {
        Some((step, rest)) => (step, Some(rest)),
        None => (path, None),
    };
    let (name, into_array) = match step.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (step, false),
    };
    let Some(field) = value.get_mut(name) else { return };
    let targets: Vec<&mut Value> =
        if into_array { field.as_array_mut().map(|a| a.iter_mut().collect()).unwrap_or_default() } else { vec![field] };
    for target in targets {
        match rest {
            Some(rest) => mask_path(target, rest),
            None => match target {
                Value::String(text) => {
                    let is_name = name.ends_with("name");
                    *target = json!(if is_name { mask_name(text) } else { mask(text) });
                }
                // A personal map or record as a whole: every string in it, failing closed.
                Value::Object(members) => {
                    for (_, member) in members.iter_mut() {
                        if let Some(text) = member.as_str() {
                            *member = json!(mask(text));
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

#[derive(Deserialize)]
struct PurposeQuery {
    purpose: Option<String>,
}

async fn dossier(
    State(api): State<Arc<DossierApi>>,
    Path(unit): Path<String>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match api.tokens.authorize_read(authorization, &[Role::Department], "dossiers") {
        Ok(caller) => caller.department,
        Err(response) => return *response,
    };
    let purpose = match checked_purpose(query.purpose.as_deref()) {
        Ok(purpose) => purpose,
        Err((rule, message)) => return purpose_problem(rule, &message),
    };
    let unavailable = |e: sled::Error| {
        tracing::error!(error = %e, "the dossier store failed");
        problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The dossier store failed", "retry later", Value::Null)
    };
    let parts = match api.store.dossier(&unit) {
        Ok(parts) => parts,
        Err(e) => return unavailable(e),
    };
    let result = if parts.is_empty() { "not_found" } else { "found" };
    if let Err(e) = api.use_log.log_use(caller.as_str(), &purpose, "dossier", &unit, result).await {
        return unavailable(e);
    }
    let mut body = serde_json::Map::new();
    let catalog = api.catalog.current();
    for (kind, part) in parts {
        let Some(resource) = catalog.by_topic(&part.topic) else { continue };
        if !resource.may_read(caller.as_str()) {
            body.insert(
                kind,
                json!({ "withheld": format!("{} is not shared with {caller} ({:?})", resource.id, resource.sharing) }),
            );
            continue;
        }
        let mut record = part.record;
        let entitled = resource.may_see_personal_data(caller.as_str());
        if !entitled {
            for path in &resource.personal_fields {
                mask_path(&mut record, path);
            }
        }
        body.insert(
            kind,
            json!({ "source_department": part.source_department, "event_id": part.event_id, "personal_data_masked": !entitled, "record": record }),
        );
    }
    if body.is_empty() {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No dossier",
            "no department has sent a record about this property unit",
            Value::Null,
        );
    }
    Json(json!({ "property_unit_number": unit, "parts": body })).into_response()
}

/// `GET /v1/resources/{id}/records/{key}?purpose=...`: the newest record of a catalogued
/// resource by its key, for a department the catalogue lets read it, with personal fields
/// masked unless it is entitled to them. Whether the caller may read the resource is decided
/// before the store is read, so a caller without the right learns nothing about which keys
/// exist; every read states its purpose and lands in the use log before it is answered.
async fn resource_record(
    State(api): State<Arc<DossierApi>>,
    Path((id, key)): Path<(String, String)>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match api.tokens.authorize_read(authorization, &[Role::Department], "resources") {
        Ok(caller) => caller.department,
        Err(response) => return *response,
    };
    let catalog = api.catalog.current();
    // Licences and the audit topics have APIs of their own, with their own rules (surface
    // keys, a department's own use-log entries): they are not served here.
    let served = |topic: &str| !crate::dossier::OWN_API_TOPICS.iter().any(|own| topic.starts_with(own));
    let Some(resource) = catalog.resources.iter().find(|r| r.id == id && served(&r.topic)) else {
        // The id is the caller's and is not echoed; the catalogue is public.
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            "GET /catalog lists the resources",
            Value::Null,
        );
    };
    if !resource.may_read(caller.as_str()) {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not shared with this department",
            format!(
                "{} is not shared with {caller} ({:?}); its owner is {}",
                resource.id, resource.sharing, resource.owner
            ),
            Value::Null,
        );
    }
    let purpose = match checked_purpose(query.purpose.as_deref()) {
        Ok(purpose) => purpose,
        Err((rule, message)) => return purpose_problem(rule, &message),
    };
    let unavailable = |e: sled::Error| {
        tracing::error!(error = %e, "the shared view failed");
        problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The shared view failed", "retry later", Value::Null)
    };
    let found = match api.store.record(&resource.topic, &key) {
        Ok(found) => found,
        Err(e) => return unavailable(e),
    };
    let result = if found.is_some() { "found" } else { "not_found" };
    let subject = format!("{}/{key}", resource.id);
    if let Err(e) = api.use_log.log_use(caller.as_str(), &purpose, "resource", &subject, result).await {
        return unavailable(e);
    }
    let Some(part) = found else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such record",
            "no record of this resource has that key",
            Value::Null,
        );
    };
    let mut record = part.record;
    let entitled = resource.may_see_personal_data(caller.as_str());
    if !entitled {
        for path in &resource.personal_fields {
            mask_path(&mut record, path);
        }
    }
    Json(json!({
        "resource": resource.id,
        "source_department": part.source_department,
        "event_id": part.event_id,
        "personal_data_masked": !entitled,
        "record": record,
    }))
    .into_response()
}
