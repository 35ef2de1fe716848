//! The subscription routes: a department files a request for a resource, the owner answers
//! it (approves, narrows or rejects, with a reason) and may revoke it; both list what
//! concerns them. Every change is on the subscription topic before it is answered, and in the
//! hash-chained use log.
//!
//! A caller that is neither the consumer nor the owner of a subscription learns nothing about
//! it: it is answered as if the id did not exist.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use chrono::NaiveDate;
use govex_bus::Bus;
use govex_http::{
    auth::{require_token, Role, Tokens},
    problem::{problem, JsonBody, Refused},
};
use govex_schemas::{calendar::WorkingCalendar, Department, Division, LiveCatalog, Sharing};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    objection::{Objection, Objections, Outcome},
    today,
    view::{self, outgoing, Governed, View},
    State as Stage, Subscription, Subscriptions,
};
use crate::use_log::{checked_purpose, Use, UseAction, UseLog};

/// The longest reason an owner may give.
const MAX_REASON_CHARS: usize = 500;
/// The longest period a subscription may ask for, in days: sharing is reviewed, not granted for ever.
const MAX_PERIOD_DAYS: i64 = 3 * 366;
/// The most requests one department may have waiting at once: each is held in memory and
/// on every view, and a department that files more than its owners can answer is told so.
const MAX_PENDING_PER_CONSUMER: usize = 200;
/// The largest body a subscription route reads.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the routes need.
pub struct GovernanceApi {
    /// The subscriptions' view (and, in this process, the writer).
    pub view: Subscriptions,
    /// The objections' view (and writer).
    pub objections: Objections,
    /// The shared view of every catalogued resource: an objection is to a record held there.
    pub records: crate::dossier::DossierStore,
    /// Where changes are published.
    pub bus: Bus,
    /// Department tokens.
    pub tokens: Tokens,
    /// The catalogue, as the node goes by it now.
    pub catalog: LiveCatalog,
    /// Where every request and decision is recorded.
    pub use_log: UseLog,
    /// The calendar due days are counted in.
    pub calendar: WorkingCalendar,
    /// Working days an owner has to answer.
    pub answer_within: u32,
    /// This node's division (the envelope's origin).
    pub division: Division,
    /// One change at a time: a change reads a subscription's state, publishes the next one and
    /// applies it; two at once could both build on the same state.
    pub writing: tokio::sync::Mutex<()>,
    /// The subscription metrics.
    pub metrics: super::component::GovernanceMetrics,
}

/// The routes, as the API port lists them.
pub const ROUTES: &[&str] = &[
    "GET /v1/subscriptions",
    "POST /v1/subscriptions",
    "GET /v1/subscriptions/{id}",
    "POST /v1/subscriptions/{id}/decision",
    "POST /v1/subscriptions/{id}/revoke",
    "GET /v1/objections",
    "POST /v1/objections",
    "GET /v1/objections/{id}",
    "POST /v1/objections/{id}/resolution",
];

/// The routes.
pub fn router(api: Arc<GovernanceApi>) -> Router {
    Router::new()
        .route("/v1/subscriptions", get(list).post(file))
        .route("/v1/subscriptions/{id}", get(show))
        .route("/v1/subscriptions/{id}/decision", post(decide))
        .route("/v1/subscriptions/{id}/revoke", post(revoke))
        .route("/v1/objections", get(list_objections).post(raise))
        .route("/v1/objections/{id}", get(show_objection))
        .route("/v1/objections/{id}/resolution", post(resolve))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(api.tokens.clone(), require_token))
        .with_state(api)
}

/// The 422 answer naming the member and the rule a request breaks.
pub(super) fn invalid(pointer: &str, rule: &str, message: impl Into<String>) -> Refused {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "Invalid request",
        "the request breaks a rule",
        json!([{ "pointer": pointer, "rule": rule, "message": message.into() }]),
    )
    .into()
}

fn not_found() -> Refused {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such subscription",
        "GET /v1/subscriptions lists yours",
        Value::Null,
    )
    .into()
}

/// Refuses `caller` unless it is `owner`, the department that owns `resource` and alone
/// `does` this (decides, revokes, resolves).
fn only_the_owner(owner: &str, caller: Department, does: &str, resource: &str) -> Result<(), Refused> {
    if owner == caller.as_str() {
        return Ok(());
    }
    let title = format!("Only the owner {does}");
    Err(problem(StatusCode::FORBIDDEN, "forbidden", &title, format!("{owner} owns {resource}"), Value::Null).into())
}

/// Which sides of a list `?as=` asks for: the caller's own (`asker`: `consumer`, `raiser`),
/// the owner's, or both when absent.
fn sides(role: Option<&str>, asker: &str) -> Result<(bool, bool), Refused> {
    match role {
        None => Ok((true, true)),
        Some("owner") => Ok((false, true)),
        Some(side) if side == asker => Ok((true, false)),
        Some(_) => Err(invalid("/as", "enum", format!("{asker} or owner"))),
    }
}

fn conflict(detail: String) -> Refused {
    problem(StatusCode::CONFLICT, "state", "Not in a state that allows this", detail, Value::Null).into()
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Refused {
    tracing::error!(%error, "{what}");
    problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Subscriptions unavailable", "retry later", Value::Null)
        .into()
}

impl GovernanceApi {
    fn caller(&self, headers: &axum::http::HeaderMap) -> Result<Department, Refused> {
        let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(self.tokens.authorize_read(authorization, &[Role::Department], "subscriptions")?.department)
    }

    /// Makes `next` the record's state, as `caller`'s doing: in the use log first (so that no
    /// change is in force without its entry), then on the topic (waiting for the broker), then
    /// read back from the topic into `view`. The topic decides between two processes that
    /// changed the same record at once: a change that another one beat to the topic is not in
    /// force, is logged as `not_applied`, and is answered 409.
    async fn change<T: Governed>(
        &self,
        caller: Department,
        view: &View<T>,
        next: &T,
        logged: Logged<'_>,
    ) -> Result<(), Refused> {
        let subject = match &logged.about {
            Some(about) => format!("{}/{} {about}", logged.kind, next.id()),
            None => format!("{}/{}", logged.kind, next.id()),
        };
        let entry = |result| Use {
            caller: caller.as_str(),
            purpose: logged.purpose,
            action: logged.action,
            subject: &subject,
            result,
        };
        self.use_log.log_use(entry(logged.result)).await.map_err(|e| unavailable("the use log failed", e))?;
        let published = async {
            let record = outgoing(caller, self.division, next)
                .map_err(|e| unavailable("a record could not be serialized", e))?;
            let delivered = self.bus.producer().publish(record).await;
            delivered.map_err(|e| unavailable("a governance record could not be published", e))?;
            view::catch_up(&self.bus, view)
                .await
                .map_err(|e| unavailable("a governance topic could not be read", e))?;
            Ok::<_, Refused>(view.get(next.id()).as_ref() == Some(next))
        };
        let outcome = published.await;
        self.metrics.observe(&self.view, &self.objections, today());
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = self.use_log.log_use(entry("not_applied")).await;
                Err(conflict("another change to it came first; read it again".into()))
            }
            Err(refused) => {
                // Whether it reached the topic is not known: the follower applies it if it did.
                let _ = self.use_log.log_use(entry("not_confirmed")).await;
                Err(refused)
            }
        }
    }

    /// Publishes a subscription's next state.
    async fn change_subscription(&self, caller: Department, next: Subscription) -> Result<Subscription, Refused> {
        let logged = Logged {
            kind: "subscription",
            about: Some(next.resource.clone()),
            purpose: &next.purpose,
            action: UseAction::Subscription,
            result: next.state.as_str(),
        };
        self.change(caller, &self.view, &next, logged).await?;
        Ok(next)
    }
}

/// How a change is written in the use log.
struct Logged<'a> {
    kind: &'static str,
    /// What the record is about (a resource, a masked key), after its id in the subject.
    about: Option<String>,
    purpose: &'a str,
    action: UseAction,
    result: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRequest {
    resource: String,
    purpose: String,
    #[serde(default)]
    fields: Vec<String>,
    until: NaiveDate,
}

/// `POST /v1/subscriptions`: a department asks for a resource.
async fn file(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<FileRequest>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let catalog = api.catalog.current();
    let Some(resource) = catalog.resources.iter().find(|r| r.id == request.resource) else {
        return Err(invalid("/resource", "resource-unknown", "no such resource: GET /catalog lists them"));
    };
    if resource.sharing == Sharing::NotShared {
        return Err(invalid("/resource", "resource-not-shared", format!("{} is not shared (不予共享)", resource.id)));
    }
    if resource.owner == caller.as_str() {
        return Err(invalid("/resource", "own-resource", "a department does not ask for its own resource"));
    }
    // Licences and the audit topics are read through APIs of their own, which a subscription
    // does not widen: a grant there would be a promise nothing keeps.
    if crate::dossier::has_own_api(&resource.topic) {
        return Err(invalid(
            "/resource",
            "resource-not-subscribable",
            format!("{} is read through its own API", resource.id),
        ));
    }
    if resource.sharing == Sharing::Unconditional && request.fields.is_empty() {
        return Err(invalid(
            "/fields",
            "nothing-to-grant",
            format!("{} is shared with every department already", resource.id),
        ));
    }
    let purpose =
        checked_purpose(Some(&request.purpose)).map_err(|(rule, message)| invalid("/purpose", rule, message))?;
    let mut fields = request.fields;
    fields.sort();
    fields.dedup();
    // A path is the catalogue's vocabulary, not a personal value: it may be named.
    if let Some(unknown) = fields.iter().find(|f| !resource.personal_fields.contains(f)) {
        return Err(invalid(
            "/fields",
            "field-not-personal",
            format!("{unknown} is not a personal field of {}; GET /catalog lists them", resource.id),
        ));
    }
    let filed_on = today();
    if request.until <= filed_on || (request.until - filed_on).num_days() > MAX_PERIOD_DAYS {
        return Err(invalid("/until", "period", format!("a day after today and at most {MAX_PERIOD_DAYS} days ahead")));
    }
    let due = api.calendar.add_working_days(filed_on, api.answer_within).map_err(|e| {
        // The calendar cannot count the deadline: say so, do not guess one.
        unavailable("a due day cannot be counted", &e);
        Refused::from(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "calendar",
            "No working-day calendar",
            e.to_string(),
            Value::Null,
        ))
    })?;
    let _one = api.writing.lock().await;
    // A request whose end date passed unanswered cannot be approved any more: it does not count.
    let waiting =
        api.view.list(|s| s.consumer == caller.as_str() && s.state == Stage::Pending && s.until >= filed_on).len();
    if waiting >= MAX_PENDING_PER_CONSUMER {
        return Err(conflict(format!(
            "{caller} has {waiting} requests waiting for an answer, the most it may have at once"
        )));
    }
    let subscription = Subscription {
        id: uuid::Uuid::now_v7().to_string(),
        resource: resource.id.clone(),
        consumer: caller.as_str().to_owned(),
        owner: resource.owner.clone(),
        purpose,
        fields,
        until: request.until,
        filed_on,
        due,
        state: Stage::Pending,
        granted_fields: Vec::new(),
        granted_until: None,
        decided_on: None,
        reason: None,
        version: 1,
    };
    let filed = api.change_subscription(caller, subscription).await?;
    Ok((StatusCode::CREATED, Json(filed)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `consumer` (asked by the caller) or `owner` (for the caller to answer); both by default.
    #[serde(rename = "as")]
    role: Option<String>,
    state: Option<Stage>,
}

/// `GET /v1/subscriptions`: the caller's requests and those it has to answer.
async fn list(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let (consumer, owner) = sides(query.role.as_deref(), "consumer")?;
    let me = caller.as_str();
    let today = today();
    let found = api.view.list(|s| {
        ((consumer && s.consumer == me) || (owner && s.owner == me)) && query.state.is_none_or(|state| s.state == state)
    });
    let shown: Vec<Value> = found.iter().map(|s| with_overdue(s, today)).collect();
    Ok(Json(json!({ "subscriptions": shown })).into_response())
}

fn with_overdue(subscription: &Subscription, today: NaiveDate) -> Value {
    let mut value = serde_json::to_value(subscription).unwrap_or(Value::Null);
    value["overdue"] = json!(subscription.is_overdue(today));
    value["answered_on_time"] = json!(subscription.answered_on_time());
    // Approved and within its period today: what reads go by.
    let running = subscription.state == Stage::Approved && subscription.granted_until.is_some_and(|u| today <= u);
    value["running"] = json!(running);
    value
}

/// The subscription `id` if `caller` is its consumer or its owner.
fn concerning(api: &GovernanceApi, id: &str, caller: Department) -> Result<Subscription, Refused> {
    api.view.get(id).filter(|s| s.consumer == caller.as_str() || s.owner == caller.as_str()).ok_or_else(not_found)
}

/// `GET /v1/subscriptions/{id}`.
async fn show(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    Ok(Json(with_overdue(&concerning(&api, &id, caller)?, today())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    decision: String,
    /// The personal fields granted (of those asked); all of them when absent.
    fields: Option<Vec<String>>,
    /// The last day granted (no later than asked); as asked when absent.
    until: Option<NaiveDate>,
    reason: Option<String>,
}

fn checked_reason(reason: Option<String>, needed: bool) -> Result<Option<String>, Refused> {
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    match reason {
        None if needed => {
            Err(invalid("/reason", "reason-required", "a rejection, a narrowing or a revocation gives its reason"))
        }
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            Err(invalid("/reason", "reason-too-long", format!("at most {MAX_REASON_CHARS} characters")))
        }
        other => Ok(other),
    }
}

/// `POST /v1/subscriptions/{id}/decision`: the owner approves (perhaps narrowed) or rejects.
async fn decide(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    JsonBody(decision): JsonBody<Decision>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let _one = api.writing.lock().await;
    let current = concerning(&api, &id, caller)?;
    only_the_owner(&current.owner, caller, "decides", &current.resource)?;
    if current.state != Stage::Pending {
        return Err(conflict(format!("the subscription is {}, not pending", current.state.as_str())));
    }
    let today = today();
    let next = match decision.decision.as_str() {
        "approve" => {
            let mut fields = decision.fields.unwrap_or_else(|| current.fields.clone());
            fields.sort();
            fields.dedup();
            if let Some(extra) = fields.iter().find(|f| !current.fields.contains(f)) {
                return Err(invalid(
                    "/fields",
                    "not-asked",
                    format!("{extra} was not asked for: a decision only narrows"),
                ));
            }
            let until = decision.until.unwrap_or(current.until);
            if until > current.until || until < today {
                return Err(invalid("/until", "period", "from today up to the day asked for: a decision only narrows"));
            }
            let narrowed = fields.len() < current.fields.len() || until < current.until;
            let reason = checked_reason(decision.reason, narrowed)?;
            Subscription {
                state: Stage::Approved,
                granted_fields: fields,
                granted_until: Some(until),
                decided_on: Some(today),
                reason,
                version: current.version + 1,
                ..current
            }
        }
        "reject" => Subscription {
            state: Stage::Rejected,
            decided_on: Some(today),
            reason: checked_reason(decision.reason, true)?,
            version: current.version + 1,
            ..current
        },
        _ => return Err(invalid("/decision", "enum", "approve or reject")),
    };
    Ok(Json(api.change_subscription(caller, next).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    reason: Option<String>,
}

/// `POST /v1/subscriptions/{id}/revoke`: the owner ends an approved subscription, at once.
async fn revoke(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    JsonBody(revocation): JsonBody<Revocation>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let _one = api.writing.lock().await;
    let current = concerning(&api, &id, caller)?;
    only_the_owner(&current.owner, caller, "revokes", &current.resource)?;
    if current.state != Stage::Approved {
        return Err(conflict(format!("the subscription is {}, not approved", current.state.as_str())));
    }
    let next = Subscription {
        state: Stage::Revoked,
        reason: checked_reason(revocation.reason, true)?,
        version: current.version + 1,
        ..current
    };
    Ok(Json(api.change_subscription(caller, next).await?).into_response())
}

/// The most objections one department may have open at once.
const MAX_OPEN_PER_RAISER: usize = 500;
/// The longest record key or JSON pointer an objection names.
const MAX_KEY_BYTES: usize = 256;
/// The purpose an objection is logged under.
const OBJECTION_PURPOSE: &str = "数据异议";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaiseRequest {
    resource: String,
    key: String,
    pointer: String,
    reason: String,
}

/// `POST /v1/objections`: a department that may read a record objects to a field of it.
async fn raise(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    JsonBody(request): JsonBody<RaiseRequest>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let catalog = api.catalog.current();
    let served = |r: &&govex_schemas::Resource| r.id == request.resource && !crate::dossier::has_own_api(&r.topic);
    let Some(resource) = catalog.resources.iter().find(served) else {
        return Err(invalid(
            "/resource",
            "resource-unknown",
            "no such resource in the shared view: GET /catalog lists them",
        ));
    };
    if resource.owner == caller.as_str() {
        return Err(invalid("/resource", "own-resource", "an owner corrects its own records by sending them again"));
    }
    // Decided before the store is read: a department that may not read the resource learns
    // nothing about which keys exist.
    if !super::access(resource, caller.as_str(), Some(&api.view), today(), None).read {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not shared with this department",
            format!("{} is not shared with {caller}: a department objects to what it reads", resource.id),
            Value::Null,
        )
        .into());
    }
    if request.key.is_empty() || request.key.len() > MAX_KEY_BYTES {
        return Err(invalid("/key", "key", format!("1 to {MAX_KEY_BYTES} bytes")));
    }
    if !request.pointer.starts_with('/') || request.pointer.len() > MAX_KEY_BYTES {
        return Err(invalid(
            "/pointer",
            "pointer",
            format!("a JSON pointer (`/field`), at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    let reason = checked_reason(Some(request.reason), true)?.unwrap_or_default();
    let record =
        api.records.record(&resource.topic, &request.key).map_err(|e| unavailable("the shared view failed", e))?;
    // Looking a key up is a read like any other: whatever it finds, it is in the use log
    // before it is answered, under the key masked as every read of the shared view logs it.
    let probed = match &record {
        None => Some("not_found"),
        Some(part) if part.record.pointer(&request.pointer).is_none() => Some("no_such_field"),
        Some(_) => None,
    };
    if let Some(result) = probed {
        let subject = format!("{}/{}", resource.id, crate::dossier::api::logged_key(&request.key));
        let entry = Use {
            caller: caller.as_str(),
            purpose: OBJECTION_PURPOSE,
            action: UseAction::Objection,
            subject: &subject,
            result,
        };
        api.use_log.log_use(entry).await.map_err(|e| unavailable("the use log failed", e))?;
    }
    let Some(record) = record else { return Err(crate::dossier::api::no_such_record()) };
    if record.record.pointer(&request.pointer).is_none() {
        return Err(invalid("/pointer", "pointer-not-found", "the record has no field there"));
    }
    let _one = api.writing.lock().await;
    let open = api.objections.list(|o| o.raised_by == caller.as_str() && o.outcome == Outcome::Open).len();
    if open >= MAX_OPEN_PER_RAISER {
        return Err(conflict(format!("{caller} has {open} objections open, the most it may have at once")));
    }
    let objection = Objection {
        id: uuid::Uuid::now_v7().to_string(),
        resource: resource.id.clone(),
        key: request.key,
        pointer: request.pointer,
        reason,
        raised_by: caller.as_str().to_owned(),
        owner: resource.owner.clone(),
        objected_event_id: record.event_id.to_string(),
        raised_at_ms: govex_schemas::zone::now_ms(),
        outcome: Outcome::Open,
        correcting_event_id: None,
        resolution: None,
        resolved_at_ms: None,
        version: 1,
    };
    let about = Some(format!("{}/{}", objection.resource, crate::dossier::api::logged_key(&objection.key)));
    let logged =
        Logged { kind: "objection", about, purpose: OBJECTION_PURPOSE, action: UseAction::Objection, result: "open" };
    api.change(caller, &api.objections, &objection, logged).await?;
    Ok((StatusCode::CREATED, Json(objection)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectionQuery {
    /// `raiser` (raised by the caller) or `owner` (for the caller to resolve); both by default.
    #[serde(rename = "as")]
    role: Option<String>,
    outcome: Option<Outcome>,
}

/// `GET /v1/objections`: the caller's objections and those it has to resolve.
async fn list_objections(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Query(query): Query<ObjectionQuery>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let (raiser, owner) = sides(query.role.as_deref(), "raiser")?;
    let me = caller.as_str();
    let found = api.objections.list(|o| {
        ((raiser && o.raised_by == me) || (owner && o.owner == me)) && query.outcome.is_none_or(|x| o.outcome == x)
    });
    Ok(Json(json!({ "objections": found })).into_response())
}

/// The objection `id` if `caller` raised it or owns its resource.
fn objection_concerning(api: &GovernanceApi, id: &str, caller: Department) -> Result<Objection, Refused> {
    let concerns = |o: &Objection| o.raised_by == caller.as_str() || o.owner == caller.as_str();
    api.objections.get(id).filter(concerns).ok_or_else(|| {
        problem(StatusCode::NOT_FOUND, "not-found", "No such objection", "GET /v1/objections lists yours", Value::Null)
            .into()
    })
}

/// `GET /v1/objections/{id}`.
async fn show_objection(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    Ok(Json(objection_concerning(&api, &id, caller)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resolution {
    outcome: String,
    correcting_event_id: Option<String>,
    reason: Option<String>,
}

/// `POST /v1/objections/{id}/resolution`: the owner resolves an open objection.
async fn resolve(
    State(api): State<Arc<GovernanceApi>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    JsonBody(resolution): JsonBody<Resolution>,
) -> Result<Response, Refused> {
    let caller = api.caller(&headers)?;
    let _one = api.writing.lock().await;
    let current = objection_concerning(&api, &id, caller)?;
    only_the_owner(&current.owner, caller, "resolves", &current.resource)?;
    if current.outcome != Outcome::Open {
        return Err(conflict(format!("the objection is {}, not open", current.outcome.as_str())));
    }
    let (outcome, correcting, reason) = match resolution.outcome.as_str() {
        "corrected" => {
            let Some(correcting) = resolution.correcting_event_id else {
                return Err(invalid("/correcting_event_id", "required", "the event id of the record that corrects it"));
            };
            // The correction must be the record the shared view holds now, and a newer one
            // than the record objected to: a flag cleared on a promise would hide an error.
            let catalog = api.catalog.current();
            let topic = catalog.resources.iter().find(|r| r.id == current.resource).map(|r| r.topic.clone());
            let held = match topic {
                Some(topic) => {
                    api.records.record(&topic, &current.key).map_err(|e| unavailable("the shared view failed", e))?
                }
                None => None,
            };
            let is_current = held.is_some_and(|part| part.event_id.to_string() == correcting);
            if !is_current || correcting == current.objected_event_id {
                return Err(invalid(
                    "/correcting_event_id",
                    "not-the-correction",
                    "not the event id of a newer record of this key in the shared view: send the corrected record first",
                ));
            }
            (Outcome::Corrected, Some(correcting), checked_reason(resolution.reason, false)?)
        }
        "rejected" => (Outcome::Rejected, None, checked_reason(resolution.reason, true)?),
        _ => return Err(invalid("/outcome", "enum", "corrected or rejected")),
    };
    let resolved_at = govex_schemas::zone::now_ms();
    let next = Objection {
        outcome,
        correcting_event_id: correcting,
        resolution: reason,
        resolved_at_ms: Some(resolved_at),
        version: current.version + 1,
        ..current
    };
    let about = Some(format!("{}/{}", next.resource, crate::dossier::api::logged_key(&next.key)));
    let logged = Logged {
        kind: "objection",
        about,
        purpose: OBJECTION_PURPOSE,
        action: UseAction::Objection,
        result: outcome.as_str(),
    };
    api.change(caller, &api.objections, &next, logged).await?;
    api.metrics.resolved(resolved_at.saturating_sub(next.raised_at_ms));
    Ok(Json(next).into_response())
}
