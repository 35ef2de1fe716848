//! `GET /v1/dossiers/{unit}`: what every department holds about one property unit, as far
//! as the catalogue lets the caller see it.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use govex_bus::{auth::Tokens, identifiers::mask, problem::problem};
use govex_schemas::Catalog;
use serde_json::{json, Value};

use super::DossierStore;

/// What the API needs.
pub struct DossierApi {
    /// The store.
    pub store: DossierStore,
    /// Department tokens.
    pub tokens: Tokens,
    /// Sharing classes and personal fields.
    pub catalog: Catalog,
}

/// The route.
pub fn router(api: Arc<DossierApi>) -> Router {
    Router::new().route("/v1/dossiers/{unit}", get(dossier)).with_state(api)
}

/// Masks the strings at `path` (`a.b`, `list[].c`) in `value`.
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
            None => {
                if let Some(text) = target.as_str() {
                    *target = json!(mask(text));
                }
            }
        }
    }
}

async fn dossier(State(api): State<Arc<DossierApi>>, Path(unit): Path<String>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Ok((caller, _)) = api.tokens.authenticate(authorization) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            "send Authorization: Bearer <department token>",
            Value::Null,
        );
    };
    let parts = match api.store.dossier(&unit) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %e, "the dossier store failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The dossier store failed",
                "retry later",
                Value::Null,
            );
        }
    };
    let mut body = serde_json::Map::new();
    for (kind, part) in parts {
        let Some(resource) = api.catalog.by_topic(&part.topic) else { continue };
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
