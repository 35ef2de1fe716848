//! `GET /v1/dossiers/{unit}?purpose=...`: what every department holds about one property
//! unit, as far as the catalogue lets the caller see it. A dossier holds personal data
//! (buyers, taxpayers, right holders), so every read states its purpose and lands in the
//! use log before it is answered, like a licence read.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use govex_http::auth::{require_token, Role, Tokens};
use govex_http::problem::{problem, Refused};
use govex_schemas::identifiers::{mask, mask_name};
use govex_schemas::{Department, LiveCatalog};
use serde_json::{json, Value};

use super::DossierStore;
use crate::governance::Access;
use crate::use_log::{stated_purpose, ReadRequest, Use, UseAction, UseLog};

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
    /// The subscriptions owners approved, which widen the catalogue's readers.
    pub subscriptions: Option<crate::governance::Subscriptions>,
    /// The objections raised to shared records: a record with an open one is shown disputed.
    pub objections: Option<crate::governance::Objections>,
}

impl DossierApi {
    /// The open objections to record `key` of `resource`, as every reader is shown them.
    fn disputes(&self, resource: &govex_schemas::Resource, key: &str) -> Value {
        let disputes = self.objections.as_ref().map(|o| o.disputes(&resource.id, key)).unwrap_or_default();
        Value::Array(disputes)
    }

    /// What `caller` may do with `resource` today.
    fn access(&self, resource: &govex_schemas::Resource, caller: Department, purpose: &str) -> Access {
        let (view, today) = (self.subscriptions.as_ref(), crate::governance::today());
        crate::governance::access(resource, caller.as_str(), view, today, Some(purpose))
    }
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

/// Masks what is at `path` (`a.b`, `list[].c`, `map.key`) in `value`, failing closed: a
/// string by [`mask`] (a name, at a path ending in `name`, to its surname); a number or a
/// boolean to a fixed mask; an array or an object as a whole, every member and every key of
/// it, however deep. A masked value is always a string, whatever the field's type.
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
    let targets: Vec<&mut Value> = match (into_array, field) {
        (true, Value::Array(items)) => items.iter_mut().collect(),
        (_, field) => vec![field],
    };
    for target in targets {
        match rest {
            Some(rest) => mask_path(target, rest),
            None => mask_all(target, name.ends_with("name")),
        }
    }
}

/// The mask of a value that is not a string: it says nothing of the value, not even its
/// length.
const OPAQUE_MASK: &str = "******";

fn mask_all(target: &mut Value, is_name: bool) {
    match target {
        Value::String(text) => *target = json!(if is_name { mask_name(text) } else { mask(text) }),
        Value::Number(_) | Value::Bool(_) => *target = json!(OPAQUE_MASK),
        Value::Array(items) => items.iter_mut().for_each(|item| mask_all(item, is_name)),
        Value::Object(members) => {
            // Keys too: a map's keys may be the personal part (names, numbers).
            let masked: serde_json::Map<String, Value> = std::mem::take(members)
                .into_iter()
                .enumerate()
                .map(|(n, (key, mut member))| {
                    mask_all(&mut member, key.ends_with("name"));
                    (format!("{}#{n}", mask(&key)), member)
                })
                .collect();
            *members = masked;
        }
        Value::Null => {}
    }
}

/// How a record key is named in the use log: its mask and a SHA-256 prefix, so that an
/// auditor who holds a key can tell whether it was read, while the log (kept for ever,
/// replicated) never holds a key that is a personal identifier in full.
pub(crate) fn logged_key(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    format!("{}#{}", mask(key), govex_bus::hex(&digest[..8]))
}

/// The longest record key the shared view looks up: keys are identifiers and numbers, and
/// every read, found or not, is a use-log entry.
const MAX_KEY_BYTES: usize = 256;

/// The department a department's token reading `what` belongs to, within the token's read
/// limit; or the answer that refuses it.
fn reader(api: &DossierApi, read: &ReadRequest, what: &'static str) -> Result<Department, Refused> {
    Ok(api.tokens.authorize_read(read.authorization.as_deref(), &[Role::Department], what)?.department)
}

/// A record as a caller with `access` may see it, and whether some personal field was masked.
fn as_seen_by(mut record: Value, resource: &govex_schemas::Resource, access: &Access) -> (Value, bool) {
    for path in resource.personal_fields.iter().filter(|path| !access.sees(path)) {
        mask_path(&mut record, path);
    }
    (record, access.masks_any(resource))
}

async fn dossier(
    State(api): State<Arc<DossierApi>>,
    Path(unit): Path<String>,
    read: ReadRequest,
) -> Result<Response, Refused> {
    let caller = reader(&api, &read, "dossiers")?;
    let purpose = stated_purpose(read.purpose.as_deref())?;
    let unavailable = |e: sled::Error| {
        tracing::error!(error = %e, "the dossier store failed");
        problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The dossier store failed", "retry later", Value::Null)
    };
    let parts = api.store.dossier(&unit).map_err(unavailable)?;
    // One catalogue for the whole answer, and its log entry.
    let catalog = api.catalog.current();
    // Found or not, as far as the caller may read: the caller reads its own use-log entries.
    let readable = |topic: &str| catalog.by_topic(topic).is_some_and(|r| api.access(r, caller, &purpose).read);
    let result = if parts.iter().any(|(_, part)| readable(&part.topic)) { "found" } else { "not_found" };
    let entry = Use { caller: caller.as_str(), purpose: &purpose, action: UseAction::Dossier, subject: &unit, result };
    api.use_log.log_use(entry).await.map_err(unavailable)?;
    let mut body = serde_json::Map::new();
    // A kind the caller may not read is withheld whether or not a record of it exists, and
    // decides nothing about the answer: what the caller learns is only what it may read.
    let mut withheld = serde_json::Map::new();
    for (topic, kind) in super::PARTS {
        if let Some(resource) = catalog.by_topic(topic).filter(|r| !api.access(r, caller, &purpose).read) {
            withheld.insert(
                kind.to_owned(),
                json!({ "withheld": format!("{} is not shared with {caller} ({:?})", resource.id, resource.sharing) }),
            );
        }
    }
    for (kind, part) in parts {
        let Some(resource) = catalog.by_topic(&part.topic) else { continue };
        let access = api.access(resource, caller, &purpose);
        if !access.read {
            continue;
        }
        let (record, masked) = as_seen_by(part.record, resource, &access);
        body.insert(
            kind,
            json!({
                "source_department": part.source_department,
                "event_id": part.event_id,
                "personal_data_masked": masked,
                "disputed": api.disputes(resource, &unit),
                "record": record,
            }),
        );
    }
    let found_readable = !body.is_empty();
    body.extend(withheld);
    if !found_readable {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No dossier",
            "no department has sent a record about this property unit",
            Value::Null,
        )
        .into());
    }
    Ok(Json(json!({ "property_unit_number": unit, "parts": body })).into_response())
}

/// The answer for a key no record of a resource has.
pub(crate) fn no_such_record() -> Refused {
    let detail = "no record of this resource has that key";
    problem(StatusCode::NOT_FOUND, "not-found", "No such record", detail, Value::Null).into()
}

/// `GET /v1/resources/{id}/records/{key}?purpose=...`: the newest record of a catalogued
/// resource by its key, for a department the catalogue lets read it, with personal fields
/// masked unless it is entitled to them. Whether the caller may read the resource is decided
/// before the store is read, so a caller without the right learns nothing about which keys
/// exist; every read states its purpose and lands in the use log before it is answered.
async fn resource_record(
    State(api): State<Arc<DossierApi>>,
    Path((id, key)): Path<(String, String)>,
    read: ReadRequest,
) -> Result<Response, Refused> {
    let caller = reader(&api, &read, "resources")?;
    let catalog = api.catalog.current();
    // Licences and the audit topics have APIs of their own, with their own rules (surface
    // keys, a department's own use-log entries): they are not served here.
    let Some(resource) = catalog.resources.iter().find(|r| r.id == id && !super::has_own_api(&r.topic)) else {
        // The id is the caller's and is not echoed; the catalogue is public.
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            "GET /catalog lists the resources",
            Value::Null,
        )
        .into());
    };
    // A subscription covers the purpose it was approved for: the stated purpose decides too.
    let access = api.access(resource, caller, read.purpose.as_deref().map(str::trim).unwrap_or_default());
    if !access.read {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not shared with this department",
            format!(
                "{} is not shared with {caller} ({:?}) and no approved subscription of {caller} covers this \
                 purpose; its owner is {}",
                resource.id, resource.sharing, resource.owner
            ),
            Value::Null,
        )
        .into());
    }
    let purpose = stated_purpose(read.purpose.as_deref())?;
    if key.len() > MAX_KEY_BYTES {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "key",
            "Key too long",
            format!("a record key has at most {MAX_KEY_BYTES} bytes"),
            Value::Null,
        )
        .into());
    }
    let unavailable = |e: sled::Error| {
        tracing::error!(error = %e, "the shared view failed");
        problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The shared view failed", "retry later", Value::Null)
    };
    let found = api.store.record(&resource.topic, &key).map_err(unavailable)?;
    let result = if found.is_some() { "found" } else { "not_found" };
    let subject = format!("{}/{}", resource.id, logged_key(&key));
    let entry =
        Use { caller: caller.as_str(), purpose: &purpose, action: UseAction::Resource, subject: &subject, result };
    api.use_log.log_use(entry).await.map_err(unavailable)?;
    let Some(part) = found else { return Err(no_such_record()) };
    let (record, masked) = as_seen_by(part.record, resource, &access);
    Ok(Json(json!({
        "resource": resource.id,
        "source_department": part.source_department,
        "event_id": part.event_id,
        "personal_data_masked": masked,
        "disputed": api.disputes(resource, &key),
        "record": record,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_personal_path_is_masked_whatever_is_there() {
        let mut record = json!({
            "pid": "11010519491231002X",
            "full_name": "张三",
            "aliases": ["11010519491231002X", "110105194912310021"],
            "matrix": [["110105194912310021"]],
            "ids": {"11010519491231002X": "passport E12345678"},
            "contacts": [{"id_number": "11010519491231002X", "phone": "13800138000"}],
            "account_no": 6222020200112233u64,
            "holders": [{"name": "李四", "id": "11010519491231002X"}],
            "public": "kept"
        });
        for path in ["pid", "full_name", "aliases", "matrix[]", "ids", "contacts", "account_no", "holders[].id"] {
            mask_path(&mut record, path);
        }
        let text = record.to_string();
        for secret in
            ["11010519491231002X", "110105194912310021", "E12345678", "13800138000", "6222020200112233", "张三"]
        {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(record["account_no"], OPAQUE_MASK);
        assert_eq!(record["holders"][0]["name"], "李四", "a field not listed is not masked");
        assert_eq!(record["public"], "kept");
        assert!(
            logged_key("11010519491231002X").starts_with("110105")
                && !logged_key("11010519491231002X").contains("1231002X")
        );
    }
}
