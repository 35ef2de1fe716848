//! Dead letters for people: what a sink refused and why, with personal fields masked, and
//! replays of one, a range or all of them once a steward fixed the cause (a schema, a missing
//! licence).
//!
//! A replay puts the record back on the topic it came from, as it was (its envelope, so its
//! event id), marked for the component that refused it alone
//! ([`govex_bus::dlq::header::REPLAY_FOR`]): every other reader saw the original and passes it
//! by, and the component's store drops an event id it already applied. Replaying the same
//! dead letter twice therefore applies it at most once. What was replayed, when and by whom,
//! is a record of the compacted topic [`TOPIC`] (so `list` shows it and `replay` skips it
//! unless asked `again`), and every replay is in the hash-chained use log.
//!
//! A replay carries the record's own event time. A licence change that was refused because
//! its licence had not arrived applies once the licence's issue is in the store; if what
//! arrived since is newer than the change, the store keeps the newer state and counts the
//! replay stale, as it would have done had the change arrived late in the first place.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use govex_bus::{
    dlq::{self, dlq_topic, Context},
    Bus, Decoder, Incoming, RegistryClient,
};
use govex_http::{
    auth::{require_token, Role, Tokens},
    problem::{problem, JsonBody, Refused},
};
use govex_schemas::{identifiers::mask, Catalog, Division, LiveCatalog};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    api::invalid,
    view::{outgoing, Governed, View},
};
use crate::use_log::{Use, UseAction, UseLog};

pub use govex_schemas::catalog::REPLAY_TOPIC as TOPIC;

/// The purpose the use log gives a steward's look at a dead letter and a replay.
const PURPOSE: &str = "死信处置";
/// The most dead letters one list answers with.
const MAX_LIST: usize = 500;
/// The most dead letters one replay request puts back; a steward asks again for the rest
/// (those replayed are skipped), so that one request holds the node for a bounded time.
pub const MAX_REPLAY: usize = 1_000;
/// How long one request may spend reading the dead-letter topics.
const READ_WITHIN: Duration = Duration::from_secs(30);
/// The largest body a dead-letter route reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A dead letter a steward put back, as the topic [`TOPIC`] records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The dead letter and what it held: [`marker_id`].
    pub id: String,
    /// The dead letter: `<dead-letter topic>/<partition>/<offset>`.
    pub dead_letter: String,
    /// The event id it carries, when its envelope reads.
    pub event_id: Option<String>,
    /// The component it was put back for.
    pub component: String,
    /// Where the replay landed: topic, partition, offset.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The steward's department, and the token's label where it has one.
    pub by: String,
    /// When, in ms since the epoch.
    pub at_ms: u64,
    /// How many times it was put back.
    pub times: u64,
}

impl Governed for Replay {
    const TOPIC: &'static str = TOPIC;
    const TREE: &'static str = "dead-letter-replays";
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> u64 {
        self.times
    }
}

/// The replays' view.
pub type Replays = View<Replay>;

/// The id of a dead letter: `<dead-letter topic>/<partition>/<offset>`.
pub fn letter_id(letter: &Incoming) -> String {
    format!("{}/{}/{}", letter.topic(), letter.partition(), letter.offset())
}

/// What a dead letter carries, to tell it from another at the same place: its event id, or a
/// hash of its value where it has no envelope.
fn fingerprint(letter: &Incoming) -> String {
    match letter.envelope() {
        Ok(envelope) => envelope.event_id.to_string(),
        Err(_) => {
            use sha2::{Digest, Sha256};
            govex_bus::hex(&Sha256::digest(letter.payload().unwrap_or_default())[..16])
        }
    }
}

/// The id a replay is recorded under: the dead letter's place and what it held. A place alone
/// is not enough: a dead-letter topic made again (a new embedded bus, a topic deleted and
/// created, another cluster) numbers its records from 0 again, and a new dead letter at an
/// old place must not read as put back.
pub fn marker_id(letter: &Incoming) -> String {
    format!("{}#{}", letter_id(letter), fingerprint(letter))
}

/// The components that dead-letter records of this cluster's own topics, whose replays go back
/// to them. A bridge reads its neighbour's cluster: its dead letters are fixed and sent again at
/// their source, not put back here, where the neighbours' bridges would forward what this one
/// refused. Each down-table (`down-table-<name>`) reads this cluster's topics too.
pub const REPLAYABLE: [&str; 2] = ["elicense-store", "dossier"];

/// Whether the dead letters of `component` can be put back here (see [`REPLAYABLE`]).
pub fn replayable(component: &str) -> bool {
    REPLAYABLE.contains(&component) || component.starts_with("down-table-")
}

/// The dead-letter topics of `catalog`'s resources, in name order.
pub fn dead_letter_topics(catalog: &Catalog) -> Vec<String> {
    let topics: BTreeSet<String> = catalog.resources.iter().map(|r| dlq_topic(&r.topic)).collect();
    topics.into_iter().collect()
}

/// A dead letter as a steward sees it: where it came from, who refused it and why, what it
/// carries (its key masked), and whether it was put back.
fn summary(letter: &Incoming, replayed: Option<&Replay>) -> Value {
    let context = Context::of(letter);
    let envelope = letter.envelope().ok();
    let key = letter.key().map(|k| mask(&String::from_utf8_lossy(k)));
    json!({
        "id": letter_id(letter),
        "dead_lettered_at_ms": letter.timestamp_ms(),
        "from": {"topic": context.topic, "partition": context.partition, "offset": context.offset},
        "component": context.component,
        "stage": context.stage,
        "class": context.class,
        "message": context.message,
        "replay_of": context.replay_of,
        "key": key,
        "event_id": envelope.as_ref().map(|e| e.event_id.to_string()),
        "record_type": envelope.as_ref().map(|e| e.record_type.clone()),
        "source_department": envelope.as_ref().map(|e| e.source_department.to_string()),
        "origin_division": envelope.as_ref().map(|e| e.origin_division.to_string()),
        "replayed": replayed,
    })
}

/// Which dead letters a request is about.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Dead letters of this topic only (the topic the records came from, or its `.dlq`).
    pub topic: Option<String>,
    /// Of this partition of the dead-letter topic only.
    pub partition: Option<i32>,
    /// From this offset of the dead-letter topic (inclusive).
    pub from: Option<i64>,
    /// Up to this offset (inclusive).
    pub to: Option<i64>,
    /// Refused by this component only.
    pub component: Option<String>,
    /// `open` (never put back), `replayed`, or every one (absent).
    pub state: Option<String>,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Refused {
    tracing::error!(%error, "{what}");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Dead letters unavailable",
        format!("{what}; retry later"),
        Value::Null,
    )
    .into()
}

impl Selection {
    /// The dead-letter topics it reads, of those `known`; an unknown topic is refused.
    fn topics(&self, known: &[String]) -> Result<Vec<String>, Refused> {
        if !matches!(self.state.as_deref(), None | Some("open" | "replayed")) {
            return Err(invalid("/state", "enum", "open or replayed"));
        }
        let Some(topic) = &self.topic else {
            if self.partition.is_some() || self.from.is_some() || self.to.is_some() {
                return Err(invalid("/topic", "topic-required", "a partition or a range is of one topic: name it"));
            }
            return Ok(known.to_vec());
        };
        let topic = if topic.ends_with(".dlq") { topic.clone() } else { dlq_topic(topic) };
        if !known.contains(&topic) {
            return Err(invalid(
                "/topic",
                "topic-unknown",
                "no catalogued resource has this topic: GET /catalog lists them",
            ));
        }
        if (self.from.is_some() || self.to.is_some()) && self.partition.is_none() {
            return Err(invalid("/partition", "partition-required", "a range of offsets is of one partition: name it"));
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(invalid("/to", "range", "to is at or after from"));
            }
        }
        Ok(vec![topic])
    }

    fn keeps(&self, letter: &Incoming, replayed: Option<&Replay>) -> bool {
        let in_range = self.partition.is_none_or(|p| p == letter.partition())
            && self.from.is_none_or(|from| letter.offset() >= from)
            && self.to.is_none_or(|to| letter.offset() <= to);
        let by = || self.component.as_deref().is_none_or(|c| Context::of(letter).component.as_deref() == Some(c));
        let state = match self.state.as_deref() {
            Some("open") => replayed.is_none(),
            Some("replayed") => replayed.is_some(),
            _ => true,
        };
        in_range && state && by()
    }
}

/// A read of the dead letters a selection keeps.
struct Letters<'a> {
    api: &'a DeadLetterApi,
    selection: &'a Selection,
    /// Topics still to read, the next last.
    topics: Vec<String>,
    reading: Option<tokio::sync::mpsc::Receiver<Result<Incoming, govex_bus::BusError>>>,
    deadline: tokio::time::Instant,
}

impl Letters<'_> {
    /// The next dead letter kept, with its replay if it was put back; `None` at the end.
    async fn next(&mut self) -> Result<Option<(Incoming, Option<Replay>)>, Refused> {
        match tokio::time::timeout_at(self.deadline, self.step()).await {
            Ok(next) => next,
            Err(_) => Err(unavailable(
                "the dead-letter topics took too long to read; name one topic, or ask again",
                "timeout",
            )),
        }
    }

    async fn step(&mut self) -> Result<Option<(Incoming, Option<Replay>)>, Refused> {
        let failed = |e: govex_bus::BusError| unavailable("the dead-letter topics could not be read", e);
        loop {
            let records = match &mut self.reading {
                Some(records) => records,
                None => {
                    let Some(topic) = self.topics.pop() else { return Ok(None) };
                    let mut from = BTreeMap::new();
                    if let Some(partition) = self.selection.partition {
                        // One partition: the others are read from their ends, that is not at all.
                        let ends = self.api.bus.high_watermarks(&topic).await.map_err(failed)?;
                        from.extend(ends.into_iter().filter(|(p, _)| *p != partition));
                        from.insert(partition, self.selection.from.unwrap_or(0).max(0));
                    }
                    self.reading.insert(self.api.bus.read_to_end(&topic, &from).await.map_err(failed)?)
                }
            };
            let Some(record) = records.recv().await else {
                self.reading = None;
                continue;
            };
            let letter = record.map_err(failed)?;
            // Past the range's end: the rest of the partition is not wanted.
            if self.selection.partition == Some(letter.partition())
                && self.selection.to.is_some_and(|to| letter.offset() > to)
            {
                self.reading = None;
                continue;
            }
            let replayed = self.api.replays.get(&marker_id(&letter));
            if self.selection.keeps(&letter, replayed.as_ref()) {
                return Ok(Some((letter, replayed)));
            }
        }
    }
}

/// What the routes need.
pub struct DeadLetterApi {
    /// Where the dead letters are read and put back.
    pub bus: Bus,
    /// Where their schemas are looked up (to show a record).
    pub registry: RegistryClient,
    /// The catalogue: which topics have dead letters, and which fields are personal.
    pub catalog: LiveCatalog,
    /// Steward and auditor tokens.
    pub tokens: Tokens,
    /// Where every look and every replay is recorded.
    pub use_log: UseLog,
    /// What was put back.
    pub replays: Replays,
    /// The time zone times are shown in.
    pub zone: govex_schemas::zone::TimeZone,
    /// This node's division.
    pub division: Division,
    /// One replay request at a time: two could both put back the same dead letter.
    pub replaying: tokio::sync::Mutex<()>,
}

/// The routes, as the API port lists them.
pub const ROUTES: &[&str] =
    &["GET /v1/dead-letters", "GET /v1/dead-letters/{topic}/{partition}/{offset}", "POST /v1/dead-letters/replay"];

/// The routes.
pub fn router(api: Arc<DeadLetterApi>) -> Router {
    Router::new()
        .route("/v1/dead-letters", get(list))
        .route("/v1/dead-letters/{topic}/{partition}/{offset}", get(show))
        .route("/v1/dead-letters/replay", post(replay))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(api.tokens.clone(), require_token))
        .with_state(api)
}

/// Who called: `(department, label)`, if its role is one of `roles`.
fn caller(api: &DeadLetterApi, headers: &HeaderMap, roles: &[Role]) -> Result<String, Refused> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = api.tokens.authorize_read(authorization, roles, "dead-letters")?;
    Ok(match caller.label {
        Some(label) => format!("{} ({label})", caller.department),
        None => caller.department.to_string(),
    })
}

impl DeadLetterApi {
    /// The dead letters `selection` keeps, each partition in offset order, read one at a time
    /// ([`Letters::next`]); the whole read is bounded by [`READ_WITHIN`] from now.
    fn letters<'a>(&'a self, selection: &'a Selection, deadline: tokio::time::Instant) -> Result<Letters<'a>, Refused> {
        let known = dead_letter_topics(&self.catalog.current());
        let mut topics = selection.topics(&known)?;
        topics.reverse();
        Ok(Letters { api: self, selection, topics, reading: None, deadline })
    }

    /// The record a dead letter carries, decoded with the schema it was written with and with
    /// every personal field of its resource masked; or why it cannot be shown.
    async fn record(&self, letter: &Incoming) -> Value {
        let catalog = self.catalog.current();
        // The topic the dead-letter topic belongs to, not what a header claims.
        let Some(topic) = letter.topic().strip_suffix(".dlq") else { return json!({"unreadable": "no source topic"}) };
        let Some(resource) = catalog.resources.iter().find(|r| r.topic == topic) else {
            return json!({"unreadable": "the topic is no catalogued resource's"});
        };
        let schema = match govex_schemas::bundled_schemas().find(|s| s.topic == topic) {
            Some(bundled) => match apache_avro::Schema::parse_str(bundled.text) {
                Ok(schema) => Arc::new(schema),
                Err(e) => return json!({"unreadable": e.to_string()}),
            },
            None => match self.registry.latest(&format!("{topic}-value")).await {
                Ok((_, schema)) => schema,
                Err(e) => return json!({"unreadable": e.to_string()}),
            },
        };
        let decoder = Decoder::new(self.registry.clone(), &schema);
        match decoder.decode_as_written(letter.payload().unwrap_or_default()).await {
            Ok((value, written_with)) => {
                let mut record = crate::dossier::avro_to_json(&value, written_with, &self.zone);
                // A steward repairs the flow, not the data: every personal field masked, as
                // for a department that is not entitled to it.
                for path in &resource.personal_fields {
                    crate::dossier::api::mask_path(&mut record, path);
                }
                json!({"resource": resource.id, "value": record, "personal_data_masked": !resource.personal_fields.is_empty()})
            }
            // The codec's messages carry no value (`value_free`).
            Err(e) => json!({"resource": resource.id, "unreadable": e.to_string()}),
        }
    }

    async fn log(&self, by: &str, subject: &str, result: &str) -> Result<(), Refused> {
        let entry = Use { caller: by, purpose: PURPOSE, action: UseAction::DeadLetter, subject, result };
        self.use_log.log_use(entry).await.map(drop).map_err(|e| unavailable("the use log failed", e))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    topic: Option<String>,
    partition: Option<i32>,
    from: Option<i64>,
    to: Option<i64>,
    component: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/dead-letters`: the dead letters a selection keeps, at most `limit` of them, and
/// how many it keeps in all.
async fn list(
    State(api): State<Arc<DeadLetterApi>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, Refused> {
    caller(&api, &headers, &[Role::Steward, Role::Auditor])?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(invalid("/limit", "range", format!("1 to {MAX_LIST}")));
    }
    let selection = Selection {
        topic: query.topic,
        partition: query.partition,
        from: query.from,
        to: query.to,
        component: query.component,
        state: query.state,
    };
    let (mut shown, mut total) = (Vec::new(), 0_u64);
    let mut letters = api.letters(&selection, tokio::time::Instant::now() + READ_WITHIN)?;
    while let Some((letter, replayed)) = letters.next().await? {
        total += 1;
        if shown.len() < limit {
            shown.push(summary(&letter, replayed.as_ref()));
        }
    }
    Ok(Json(json!({"dead_letters": shown, "total": total, "more": total > shown.len() as u64})).into_response())
}

/// `GET /v1/dead-letters/{topic}/{partition}/{offset}`: one dead letter and the record it
/// carries, masked. Logged: it shows a record of a department's.
async fn show(
    State(api): State<Arc<DeadLetterApi>>,
    headers: HeaderMap,
    Path((topic, partition, offset)): Path<(String, i32, i64)>,
) -> Result<Response, Refused> {
    let by = caller(&api, &headers, &[Role::Steward, Role::Auditor])?;
    let selection = Selection {
        topic: Some(topic),
        partition: Some(partition),
        from: Some(offset),
        to: Some(offset),
        ..Default::default()
    };
    let found = api.letters(&selection, tokio::time::Instant::now() + READ_WITHIN)?.next().await?;
    let Some((letter, replayed)) = found else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such dead letter",
            "GET /v1/dead-letters lists them",
            Value::Null,
        )
        .into());
    };
    let id = letter_id(&letter);
    api.log(&by, &format!("dead-letter/{id}"), "shown").await?;
    let mut answer = summary(&letter, replayed.as_ref());
    answer["record"] = api.record(&letter).await;
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// These dead letters, by id.
    #[serde(default)]
    ids: Vec<String>,
    /// Or those of this topic (and partition, and range) ...
    topic: Option<String>,
    partition: Option<i32>,
    from: Option<i64>,
    to: Option<i64>,
    /// ... refused by this component.
    component: Option<String>,
    /// Or every dead letter of every topic.
    #[serde(default)]
    all: bool,
    /// Put back also those put back before.
    #[serde(default)]
    again: bool,
}

/// The most refusals a replay answer lists one by one (the rest are counted).
const MAX_LISTED_REFUSALS: usize = 100;
/// How long one replay request may take, reading and putting back together.
const REPLAY_WITHIN: Duration = Duration::from_secs(120);

/// `POST /v1/dead-letters/replay`: puts dead letters back, for stewards only. Each goes in the
/// use log, then back on its topic, then into the replay topic, one at a time.
///
/// Skipped unless `again`: a dead letter put back before; and, when a topic or all are asked
/// for, a replay that was refused again (a new dead letter naming the one it came from):
/// without that, `--all` with the cause unfixed would put back and have refused the same
/// records for ever. Named by its id, a replay refused again is put back.
async fn replay(
    State(api): State<Arc<DeadLetterApi>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ReplayRequest>,
) -> Result<Response, Refused> {
    let by = caller(&api, &headers, &[Role::Steward])?;
    let chosen = [!request.ids.is_empty(), request.topic.is_some(), request.all].iter().filter(|c| **c).count();
    if chosen != 1 {
        return Err(invalid("", "selection", "name dead letters by ids, by a topic (and range), or all: one of them"));
    }
    if request.ids.len() > MAX_REPLAY {
        return Err(invalid("/ids", "too-many", format!("at most {MAX_REPLAY} at once")));
    }
    let known = dead_letter_topics(&api.catalog.current());
    let mut selections = Vec::new();
    let mut named = BTreeSet::new();
    for (n, id) in request.ids.iter().enumerate() {
        let wrong =
            || invalid(&format!("/ids/{n}"), "id", "<dead-letter topic>/<partition>/<offset> of a catalogued topic");
        let parsed = id.rsplitn(3, '/').collect::<Vec<_>>();
        let [offset, partition, topic] = parsed.as_slice() else { return Err(wrong()) };
        let (Ok(partition), Ok(offset)) = (partition.parse::<i32>(), offset.parse::<i64>()) else {
            return Err(wrong());
        };
        // The same id twice is one dead letter.
        if !named.insert((topic.to_string(), partition, offset)) {
            continue;
        }
        let selection = Selection {
            topic: Some((*topic).to_owned()),
            partition: Some(partition),
            from: Some(offset),
            to: Some(offset),
            component: request.component.clone(),
            state: None,
        };
        selection.topics(&known).map_err(|_| wrong())?;
        selections.push(selection);
    }
    if selections.is_empty() {
        selections.push(Selection {
            topic: request.topic,
            partition: request.partition,
            from: request.from,
            to: request.to,
            component: request.component,
            state: None,
        });
    }
    let by_id = !request.ids.is_empty();
    let _one = api.replaying.lock().await;
    let deadline = tokio::time::Instant::now() + REPLAY_WITHIN;
    let (mut replayed, mut refused, mut refusals, mut skipped) = (Vec::new(), Vec::new(), 0_u64, 0_u64);
    'selections: for selection in &selections {
        let mut letters = api.letters(selection, deadline)?;
        while let Some((letter, before)) = letters.next().await? {
            let refused_again = Context::of(&letter).replay_of.is_some();
            if !request.again && (before.is_some() || (refused_again && !by_id)) {
                skipped += 1;
                continue;
            }
            match replay_one(&api, &by, &letter, before).await? {
                Ok(marker) => replayed.push(marker),
                Err(reason) => {
                    refusals += 1;
                    if refused.len() < MAX_LISTED_REFUSALS {
                        refused.push(json!({"id": letter_id(&letter), "reason": reason}));
                    }
                }
            }
            // Only what was put back counts: dead letters that cannot be do not hold up the rest.
            if replayed.len() >= MAX_REPLAY {
                break 'selections;
            }
        }
    }
    let more = replayed.len() >= MAX_REPLAY;
    Ok(Json(json!({
        "replayed": replayed,
        "skipped": skipped,
        "refused": refused,
        "refused_total": refusals,
        "more": more,
    }))
    .into_response())
}

/// Puts one dead letter back: in the use log first (nothing goes back without its entry),
/// then on its topic, then recorded as replayed, in the topic and at once in this process's
/// view. Were the record lost (a crash between), the dead letter shows open and may be put
/// back again: its event id makes that a duplicate. `Ok(Err(reason))`: it cannot be put back.
async fn replay_one(
    api: &DeadLetterApi,
    by: &str,
    letter: &Incoming,
    before: Option<Replay>,
) -> Result<Result<Replay, String>, Refused> {
    let component = Context::of(letter).component.unwrap_or_default();
    if !replayable(&component) {
        return Ok(Err(format!(
            "refused by {component:?}, which does not read this cluster's topic: fix it and send it again at its source"
        )));
    }
    let record = match dlq::replay(letter) {
        Ok(record) => record,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let id = letter_id(letter);
    let subject = format!("dead-letter/{id}");
    api.log(by, &subject, "replayed").await?;
    let topic = record.topic.clone();
    let delivered = match api.bus.producer().publish(record).await {
        Ok(delivered) => delivered,
        Err(e) => {
            // Whether it reached the topic is not known; the log says so.
            let _ = api.log(by, &subject, "not_confirmed").await;
            return Err(unavailable("a replay could not be published", e));
        }
    };
    let marker = Replay {
        id: marker_id(letter),
        dead_letter: id,
        event_id: letter.envelope().ok().map(|e| e.event_id.to_string()),
        component,
        topic,
        partition: delivered.partition,
        offset: delivered.offset,
        by: by.to_owned(),
        at_ms: govex_schemas::zone::now_ms(),
        times: before.map_or(1, |b| b.times + 1),
    };
    let published = outgoing(govex_schemas::Department::PLATFORM, api.division, &marker)
        .map_err(|e| unavailable("a replay could not be recorded", e))?;
    api.bus.producer().publish(published).await.map_err(|e| unavailable("a replay could not be recorded", e))?;
    // Seen at once by this process (the next request, the list): the topic, read back by the
    // follower, holds it for the others.
    api.replays.apply(&marker).map_err(|e| unavailable("a replay could not be recorded", e))?;
    Ok(Ok(marker))
}
