//! Front-end database sources (前置库): a department's system writes the records it shares
//! into a table next to the exchange; a source polls the table and puts every row through the
//! intake's checks, as an HTTP record goes, onto the record type's topic.
//!
//! Modes, as Kafka Connect's JDBC source names them:
//! - `incrementing`: rows whose strictly increasing column passed the watermark;
//! - `timestamp`: rows whose timestamp passed it (all rows of one timestamp together);
//! - `timestamp+incrementing`: both, `(ts, id)` in order: rows changed in place are taken
//!   again, and no two rows tie.
//!
//! **Commit-delay guard.** A row is taken only once its timestamp is `commit_lag_ms` older than
//! the database's clock. A transaction that started first but commits last would otherwise
//! commit a row behind a watermark that already passed it, and the row would never be read
//! (the JDBC source's best-known way of losing rows). The lag must exceed the department's
//! longest transaction.
//!
//! **Exactly once across crashes.** Each row's event id is derived from the source, the table,
//! the row's key and its version (its timestamp and increment) and carries the row's timestamp
//! as its time (in `incrementing` mode, the time its batch was first read, kept with the
//! watermark): a row published again after a crash has the same id, and the sinks drop it.
//! The watermark is stored only after the broker acknowledged every row below it.
//!
//! **Refused rows** go, with their violations (pointer, rule, message: never a value), to the
//! source's reject table in the same database, where the department reads them; they are
//! counted, and the watermark moves past them (fix the row and touch its timestamp, or insert
//! it again, to send it again).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, TimeZone as _};
use govex_bus::{
    frontdb::{check_identifier, check_name, Bind, Dialect, FrontDb},
    Metrics,
};
use govex_schemas::{zone::TimeZone, Department};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    common::CheckContext,
    import::set_path,
    intake::{Checked, Intake},
};

/// How a source finds new rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// A strictly increasing column (an identity or sequence).
    #[serde(rename = "incrementing")]
    Incrementing,
    /// A last-modified timestamp.
    #[serde(rename = "timestamp")]
    Timestamp,
    /// A last-modified timestamp and an increasing column to order rows of one timestamp.
    #[serde(rename = "timestamp+incrementing")]
    TimestampIncrementing,
}

/// One `[[frontdb.sources]]` entry: a table a department's system writes its records into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source's name: in metrics, the reject table and every event id (`[a-z0-9-]`).
    pub name: String,
    /// The department whose records the table holds.
    pub department: String,
    /// The record type (`deed-tax-payment`).
    pub record: String,
    /// `postgres://user:${PASSWORD}@host/db` or `mysql://...`; the password through `${NAME}`.
    pub url: String,
    /// The table (or `schema.table`), or nothing when `query` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table: String,
    /// Instead of a table, one `SELECT` (a join, a filter) whose rows are read as a table's:
    /// the source adds its own conditions and order around it, as a subquery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The columns of its primary key.
    pub key: Vec<String>,
    /// How new rows are found.
    pub mode: Mode,
    /// The increasing column (`incrementing`, `timestamp+incrementing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incrementing_column: Option<String>,
    /// The last-modified timestamp column (`timestamp`, `timestamp+incrementing`; in
    /// `incrementing` mode, if given, the commit-delay guard uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_column: Option<String>,
    /// Field path (as the CSV import names them: `taxpayer.name`, `buyers[0].name`) → column.
    pub columns: BTreeMap<String, String>,
    /// How often the table is polled when the last poll found less than a batch, in ms.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Rows read, checked and published together.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Rows are taken once their timestamp is this much older than the database's clock, in ms.
    #[serde(default = "default_commit_lag_ms")]
    pub commit_lag_ms: u64,
    /// Where refused rows are written (see `examples/frontdb/` for its DDL); none: counted only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_table: Option<String>,
    /// Connections to the database at most.
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// How long one poll's query may run, in ms (Debezium's `database.query.timeout.ms`):
    /// the database cancels it after this (`statement_timeout`, `max_statement_time` or
    /// `max_execution_time`), and the source counts as down until a poll answers in time.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
}

fn default_query_timeout_ms() -> u64 {
    STATEMENT_WITHIN.as_millis() as u64
}

fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_batch_size() -> usize {
    1_000
}
fn default_commit_lag_ms() -> u64 {
    5_000
}
fn default_connections() -> u32 {
    2
}

/// The most rows one poll takes.
pub const MAX_BATCH: usize = 10_000;
/// The longest value a source reads from a column, in characters. A longer one is read only
/// that far and its row refused (no record field is nearly that long): one poll holds at most
/// `batch_size` × columns × this, whatever a table holds.
pub const MAX_CELL_CHARS: usize = 4_096;
/// The longest `query` a source may name (it is sent with every read).
pub const MAX_QUERY_CHARS: usize = 16_384;
/// How long one statement against a front-end database may take (a locked table, a lost
/// connection): then the poll fails, the source shows down, and it is tried again.
pub const STATEMENT_WITHIN: Duration = Duration::from_secs(60);

impl SourceConfig {
    /// What the source reads, as its event ids and messages name it: the table, or `query`.
    pub fn relation(&self) -> &str {
        if self.query.is_some() {
            "query"
        } else {
            &self.table
        }
    }

    /// What follows `FROM`: the quoted table, or the query as a subquery.
    fn read_from(&self, d: Dialect) -> String {
        match &self.query {
            Some(query) => format!("({query}) AS {}", d.quote("govex_source")),
            None => d.quote_table(&self.table),
        }
    }

    /// Checks what can be checked without the database; errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        let at = |what: &str| format!("frontdb.sources {:?}: {what}", self.name);
        check_name(&self.name).map_err(at)?;
        Department::parse(&self.department).map_err(|e| at(&format!("department: {e}")))?;
        Dialect::of(&self.url).map_err(|e| at(&e.to_string()))?;
        match (self.table.is_empty(), &self.query) {
            (false, None) => check_identifier(&self.table).map_err(|e| at(&format!("table: {e}")))?,
            (true, Some(query)) => {
                if query.chars().count() > MAX_QUERY_CHARS {
                    return Err(at("query: at most 16,384 characters"));
                }
                let head = query.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
                if !matches!(head.as_str(), "select" | "with") || query.contains(';') {
                    return Err(at("query: one SELECT (or WITH … SELECT), without ;"));
                }
                // It is wrapped as a subquery: a comment or an unbalanced parenthesis would
                // reach past the wrapper (it is also read in a read-only transaction).
                if query.contains("--") || query.contains("/*") || query.contains('#') {
                    return Err(at("query: no comments (--, /* */, #)"));
                }
                let mut depth = 0i32;
                for c in query.chars() {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if depth < 0 {
                        break;
                    }
                }
                if depth != 0 {
                    return Err(at("query: unbalanced parentheses"));
                }
            }
            _ => return Err(at("name a table or a query, not both")),
        }
        if self.key.is_empty() {
            return Err(at("key: name the primary key's columns"));
        }
        let named = self.key.iter().chain(&self.incrementing_column).chain(&self.timestamp_column);
        for column in named.chain(self.columns.values()).chain(&self.reject_table) {
            check_identifier(column).map_err(|e| at(&e))?;
        }
        if self.mode == Mode::Timestamp && self.key.len() != 1 {
            return Err(at(
                "mode timestamp orders rows of one timestamp by a one-column key; use timestamp+incrementing",
            ));
        }
        match (self.mode, &self.incrementing_column, &self.timestamp_column) {
            (Mode::Incrementing, None, _) => return Err(at("mode incrementing needs incrementing_column")),
            (Mode::Timestamp, _, None) => return Err(at("mode timestamp needs timestamp_column")),
            (Mode::TimestampIncrementing, None, _) | (Mode::TimestampIncrementing, _, None) => {
                return Err(at("mode timestamp+incrementing needs timestamp_column and incrementing_column"))
            }
            _ => {}
        }
        if self.columns.is_empty() {
            return Err(at("columns: map the record's field paths to columns"));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(at(&format!("batch_size: 1 to {MAX_BATCH}")));
        }
        if !(100..=3_600_000).contains(&self.query_timeout_ms) {
            return Err(at("query_timeout_ms: 100 to 3,600,000"));
        }
        if self.poll_interval_ms < 50 {
            return Err(at("poll_interval_ms: at least 50"));
        }
        if self.connections == 0 || self.connections > 16 {
            return Err(at("connections: 1 to 16"));
        }
        Ok(())
    }
}

/// What a source has read up to: the last row's timestamp (as the database wrote it as text)
/// and increment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The timestamp, as text.
    pub ts: Option<String>,
    /// The increment.
    pub inc: Option<i64>,
    /// In `timestamp` mode, the key of the last row of the last timestamp read: rows of one
    /// timestamp are read in key order, so that a batch may end inside a timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A batch read but not yet acknowledged, kept so that its rows get the same ids when it is
/// read again after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    from: Watermark,
    first_read_ms: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowLabels {
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// `govex_frontdb_source_rows_total{source,outcome}` (read, published, refused, and
/// reject_unwritten: refused rows the reject table would not take),
/// `govex_frontdb_source_watermark{source}` (the increment, or the timestamp in seconds since
/// the epoch), `govex_frontdb_source_lag_seconds{source}` (the newest row's timestamp less the
/// watermark's), `govex_frontdb_source_behind_rows{source}` (increments not read yet) and
/// `govex_frontdb_source_up{source}`.
#[derive(Clone)]
pub struct SourceMetrics {
    rows: Family<RowLabels, Counter>,
    watermark: Family<SourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    lag: Family<SourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    behind: Family<SourceLabel, Gauge>,
    up: Family<SourceLabel, Gauge>,
}

impl SourceMetrics {
    /// Registered once per process (every source shares the families).
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            rows: metrics.shared("frontdb_source_rows", "Front-end database rows read, published and refused"),
            watermark: metrics.shared(
                "frontdb_source_watermark",
                "What a source has read up to: the increment, or the timestamp in seconds since the epoch",
            ),
            lag: metrics.shared(
                "frontdb_source_lag_seconds",
                "The newest row's timestamp less the source's watermark, in seconds",
            ),
            behind: metrics.shared("frontdb_source_behind_rows", "Increments written but not read yet"),
            up: metrics.shared("frontdb_source_up", "1 while the source's database answers"),
        }
    }

    fn count(&self, source: &str, outcome: &str, n: usize) {
        let labels = RowLabels { source: source.to_owned(), outcome: outcome.to_owned() };
        self.rows.get_or_create(&labels).inc_by(n as u64);
    }

    fn label(source: &str) -> SourceLabel {
        SourceLabel { source: source.to_owned() }
    }
}

/// What the JSON Schema expects at a field path: the text of a column is made into this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    DateTime,
}

fn kind_at(schema: &Value, path: &str) -> Kind {
    let mut node = schema;
    for step in path.split('.') {
        let (name, indexed) = match step.split_once('[') {
            Some((name, _)) => (name, true),
            None => (step, false),
        };
        node = &node["properties"][name];
        if indexed {
            node = &node["items"];
        }
    }
    let types: Vec<&str> = match &node["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        Kind::Integer
    } else if types.contains(&"number") {
        Kind::Number
    } else if types.contains(&"boolean") {
        Kind::Boolean
    } else if node["format"] == "date-time" {
        Kind::DateTime
    } else {
        Kind::Text
    }
}

/// A timestamp as a database writes it as text (`2026-11-19 15:00:00.5+08`, or without a zone,
/// which is `zone`'s), as an instant.
pub fn db_instant(text: &str, zone: FixedOffset) -> Option<DateTime<FixedOffset>> {
    let text = text.trim().replace('T', " ");
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(instant) = DateTime::parse_from_str(&text, format) {
            return Some(instant);
        }
    }
    let naive = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    zone.from_local_datetime(&naive).single()
}

fn typed(text: String, kind: Kind, zone: FixedOffset) -> Value {
    // A text the kind does not read stays text: the checks then refuse it, naming the field.
    match kind {
        Kind::Text => Value::String(text),
        Kind::Integer => text.trim().parse::<i64>().map(Value::from).unwrap_or(Value::String(text)),
        Kind::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(text)),
        Kind::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" => Value::Bool(true),
            "f" | "false" | "0" => Value::Bool(false),
            _ => Value::String(text),
        },
        Kind::DateTime => match db_instant(&text, zone) {
            Some(instant) => Value::String(instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => Value::String(text),
        },
    }
}

/// The event id of a row: derived from the source, the table, the key and the version, with
/// `ms` as its time. The same row version read again gets the same id.
pub fn row_event_id(source: &str, table: &str, key: &[Option<String>], version: &str, ms: u64) -> Uuid {
    let mut hash = Sha256::new();
    for part in [source, table] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for part in key {
        hash.update(part.as_deref().unwrap_or("\u{0}null").as_bytes());
        hash.update([0]);
    }
    hash.update(version.as_bytes());
    let digest = hash.finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid()
}

/// One source at work.
pub struct Source {
    config: SourceConfig,
    db: FrontDb,
    intake: Arc<Intake>,
    state: sled::Tree,
    metrics: SourceMetrics,
    zone: FixedOffset,
    /// When the lag gauges were last set.
    observed: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A refused row: its key, its version and the rules it broke.
type Refusal = (Vec<Option<String>>, String, Vec<crate::validation::Violation>);

/// A row read, to be made into its record and checked.
struct Input {
    key: Vec<Option<String>>,
    version: String,
    /// Its own time (the timestamp modes); the batch's first read otherwise.
    ms: Option<u64>,
    event_id: Uuid,
    /// The mapped columns' text, in the order of the plan's fields.
    cells: Vec<Option<String>>,
}

/// The record input of a row's mapped `cells`, or the values too long to have been read whole.
fn row_input(
    fields: &[(String, Kind)],
    cells: Vec<Option<String>>,
    zone: FixedOffset,
) -> Result<Value, Vec<crate::validation::Violation>> {
    let mut input = Value::Object(Map::new());
    let mut too_long = Vec::new();
    for ((path, kind), cell) in fields.iter().zip(cells) {
        let Some(text) = cell else { continue };
        if text.chars().count() > MAX_CELL_CHARS {
            let pointer = format!("/{}", path.replace(['.', '['], "/").replace(']', ""));
            let message = format!("longer than {MAX_CELL_CHARS} characters in the source table");
            too_long.push(crate::validation::Violation::new(&pointer, "too-long-in-source", message));
            continue;
        }
        set_path(&mut input, path, typed(text, *kind, zone));
    }
    if too_long.is_empty() {
        Ok(input)
    } else {
        Err(too_long)
    }
}

/// A batch read past `from`, up to `last`.
struct Batch {
    from: Watermark,
    last: Watermark,
    inputs: Vec<Input>,
    department: Department,
    fields: Arc<Vec<(String, Kind)>>,
}

/// How often the lag gauges ask the table for its newest row.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);

/// What one poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Polled {
    /// Rows read.
    pub read: usize,
    /// Rows published (acknowledged).
    pub published: usize,
    /// Rows refused.
    pub refused: usize,
}

/// The columns a poll selects, in order, and what each is.
struct Plan {
    sql: String,
    keys: usize,
    has_ts: bool,
    has_inc: bool,
    /// A column says whether the row is still within the commit lag (`incrementing` mode).
    has_wait: bool,
    binds: Vec<Bind>,
    /// (field path, kind) of each mapped column, after the key, ts and inc columns.
    fields: Vec<(String, Kind)>,
}

impl Source {
    /// A source reading `config`'s table into `intake`, its state in `state_db`.
    pub fn new(
        config: SourceConfig,
        intake: Arc<Intake>,
        state_db: &sled::Db,
        metrics: SourceMetrics,
        zone: &TimeZone,
    ) -> Result<Self, String> {
        config.validate()?;
        let offset_minutes = zone.offset().local_minus_utc() / 60;
        let db = FrontDb::connect(&config.url, config.connections, offset_minutes)
            .map_err(|e| format!("frontdb.sources {:?}: {e}", config.name))?;
        let state = state_db.open_tree(format!("source:{}", config.name)).map_err(|e| e.to_string())?;
        Ok(Self { config, db, intake, state, metrics, zone: zone.offset(), observed: Default::default() })
    }

    /// The source's configuration.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The database (for `govex config check` and the tests).
    pub fn db(&self) -> &FrontDb {
        &self.db
    }

    /// The stored watermark.
    pub fn watermark(&self) -> Result<Watermark, String> {
        self.read_state("watermark").map(Option::unwrap_or_default)
    }

    fn read_state<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, String> {
        match self.state.get(key).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    async fn write_state<T: Serialize>(&self, key: &str, value: Option<&T>) -> Result<(), String> {
        match value {
            Some(value) => {
                let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
                self.state.insert(key, bytes).map_err(|e| e.to_string())?;
            }
            None => {
                self.state.remove(key).map_err(|e| e.to_string())?;
            }
        }
        self.state.flush_async().await.map(drop).map_err(|e| e.to_string())
    }

    /// Checks the table against the mapping ([`check_table`]) and the mapping's field paths
    /// against the record type. Returns the columns' types.
    pub async fn check_columns(&self) -> Result<BTreeMap<String, String>, String> {
        let at = |what: String| format!("frontdb.sources {:?} ({}): {what}", self.config.name, self.db.described());
        let columns = check_table(&self.config, &self.db).await?;
        let c = &self.config;
        let record = self
            .intake
            .record_type(Department::parse(&c.department).map_err(|e| at(e.to_string()))?, &c.record)
            .map_err(|_| at(format!("{} sends no record type {:?}", c.department, c.record)))?;
        let schema = record.input_schema();
        for path in c.columns.keys() {
            let head = path.split(['.', '[']).next().unwrap_or_default();
            if schema["properties"].get(head).is_none() {
                return Err(at(format!("{path}: {} {} has no such field", c.department, c.record)));
            }
        }
        Ok(columns)
    }

    fn plan(&self, types: &BTreeMap<String, String>, from: &Watermark, schema: &Value) -> Plan {
        let c = &self.config;
        let d = self.db.dialect();
        let mut select: Vec<String> = c.key.iter().map(|k| d.as_text(k)).collect();
        let ts = c.timestamp_column.as_deref();
        let inc = c.incrementing_column.as_deref();
        let has_ts = c.mode != Mode::Incrementing;
        let has_inc = c.mode != Mode::Timestamp;
        if has_ts {
            select.push(d.as_text(ts.unwrap_or_default()));
        }
        if has_inc {
            select.push(d.as_text(inc.unwrap_or_default()));
        }
        let ts_type = ts.and_then(|t| types.get(t)).map(String::as_str).unwrap_or("timestamp");
        let q = |name: &str| d.quote(name);
        // In `incrementing` mode the commit-delay guard stops the batch at the first row (in
        // id order) that is still recent, rather than leaving it out: a later id that is older
        // would otherwise move the watermark past it. A NULL or future time is no insert time
        // and does not hold the source up.
        let has_wait = c.mode == Mode::Incrementing && ts.is_some();
        if let (true, Some(ts)) = (has_wait, ts) {
            select.push(format!(
                "CASE WHEN {t} >= {cutoff} AND {t} <= {now} THEN '1' ELSE '0' END",
                t = q(ts),
                cutoff = d.now_less(c.commit_lag_ms, ts_type),
                now = d.now(ts_type)
            ));
        }
        let fields: Vec<(String, Kind)> = c.columns.keys().map(|path| (path.clone(), kind_at(schema, path))).collect();
        select.extend(c.columns.values().map(|column| d.as_text_at_most(column, MAX_CELL_CHARS + 1)));
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        match (c.mode, &from.ts, from.inc) {
            (Mode::Incrementing, _, Some(last)) => {
                binds.push(Bind::Int(last));
                conditions.push(format!("{} > {}", q(inc.unwrap_or_default()), d.placeholder(binds.len())));
            }
            (Mode::Timestamp, Some(last), _) => {
                binds.push(Bind::Text(Some(last.clone())));
                let first = d.typed_placeholder(binds.len(), ts_type);
                let t = q(ts.unwrap_or_default());
                match &from.key {
                    Some(key) => {
                        binds.push(Bind::Text(Some(last.clone())));
                        let second = d.typed_placeholder(binds.len(), ts_type);
                        binds.push(Bind::Text(Some(key.clone())));
                        let key_column = &c.key[0];
                        let key_type = types.get(key_column).map(String::as_str).unwrap_or("text");
                        let third = d.typed_placeholder(binds.len(), key_type);
                        conditions.push(format!("({t} > {first} OR ({t} = {second} AND {} > {third}))", q(key_column)));
                    }
                    None => conditions.push(format!("{t} > {first}")),
                }
            }
            (Mode::TimestampIncrementing, Some(last_ts), Some(last_inc)) => {
                binds.push(Bind::Text(Some(last_ts.clone())));
                let first = d.typed_placeholder(binds.len(), ts_type);
                binds.push(Bind::Text(Some(last_ts.clone())));
                let second = d.typed_placeholder(binds.len(), ts_type);
                binds.push(Bind::Int(last_inc));
                let third = d.placeholder(binds.len());
                let (t, i) = (q(ts.unwrap_or_default()), q(inc.unwrap_or_default()));
                conditions.push(format!("({t} > {first} OR ({t} = {second} AND {i} > {third}))"));
            }
            _ => {}
        }
        if let (false, Some(ts)) = (has_wait, ts) {
            // The commit-delay guard on the column the rows are read in the order of (a NULL is
            // never older than anything: such a row is not read, and cannot move the watermark
            // back to nothing).
            conditions.push(format!("{} < {}", q(ts), d.now_less(c.commit_lag_ms, ts_type)));
        }
        if let (true, Some(inc)) = (has_inc, inc) {
            conditions.push(format!("{} IS NOT NULL", q(inc)));
        }
        let order = match c.mode {
            Mode::Incrementing => q(inc.unwrap_or_default()),
            Mode::Timestamp => {
                let mut order = vec![q(ts.unwrap_or_default())];
                order.extend(c.key.iter().map(|k| q(k)));
                order.join(", ")
            }
            Mode::TimestampIncrementing => format!("{}, {}", q(ts.unwrap_or_default()), q(inc.unwrap_or_default())),
        };
        let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        // Each output column gets a name of its own: `CAST("id" AS TEXT)` is named `id`, and an
        // ORDER BY "id" would then sort by the text ("10" before "9"), not by the column.
        let select: Vec<String> =
            select.iter().enumerate().map(|(i, s)| format!("{s} AS {}", q(&format!("govex_{i}")))).collect();
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {order} LIMIT {}",
            select.join(", "),
            self.config.read_from(d),
            c.batch_size
        );
        Plan { sql, keys: c.key.len(), has_ts, has_inc, has_wait, binds, fields }
    }

    /// One poll: reads at most a batch past the watermark, checks and publishes it, writes the
    /// refused rows to the reject table, and only then stores the new watermark.
    pub async fn poll(&self, types: &BTreeMap<String, String>) -> Result<Polled, String> {
        let batch = self.read_batch(types, &self.watermark()?).await?;
        self.deliver(batch).await
    }

    /// Reads at most a batch past `from`, as rows to check and the watermark after them.
    /// Reads only: it may run while the batch before it is being delivered.
    async fn read_batch(&self, types: &BTreeMap<String, String>, from: &Watermark) -> Result<Batch, String> {
        let c = &self.config;
        let department = Department::parse(&c.department).map_err(|e| e.to_string())?;
        let record_type = self.intake.record_type(department, &c.record).map_err(|e| e.reason().to_owned())?;
        let plan = self.plan(types, from, record_type.input_schema());
        // The database cancels the query when its bound runs out; the wait here, a little
        // longer, covers a database that does not answer at all.
        let within = Duration::from_millis(c.query_timeout_ms);
        let too_long = || {
            format!(
                "the poll took longer than query_timeout_ms ({} ms): a locked table, or a query too slow",
                c.query_timeout_ms
            )
        };
        let fetched = tokio::time::timeout(
            within + Duration::from_secs(5),
            self.db.fetch_text_read_only(&plan.sql, &plan.binds, within),
        )
        .await;
        let mut rows = match fetched.map_err(|_| too_long())? {
            Ok(rows) => rows,
            Err(error) if error.is_timeout() => return Err(too_long()),
            Err(error) => return Err(error.to_string()),
        };
        if plan.has_wait {
            let wait_at = plan.keys + 1;
            if let Some(first_recent) = rows.iter().position(|r| r[wait_at].as_deref() == Some("1")) {
                rows.truncate(first_recent);
            }
        }
        let mut inputs = Vec::with_capacity(rows.len());
        let mut last = from.clone();
        for mut row in rows {
            let key = &row[..plan.keys];
            let mut at = plan.keys;
            let ts = plan.has_ts.then(|| {
                at += 1;
                row[at - 1].clone()
            });
            let inc = plan.has_inc.then(|| {
                at += 1;
                row[at - 1].clone()
            });
            if plan.has_wait {
                at += 1;
            }
            let ts = ts.flatten();
            let inc_value = match inc.flatten() {
                Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
                    // The watermark could not move past it: better to stop and say so.
                    format!("incrementing column value {text:?} is not a 64-bit integer")
                })?),
                None => None,
            };
            let version =
                format!("{}|{}", ts.as_deref().unwrap_or(""), inc_value.map(|i| i.to_string()).unwrap_or_default());
            let ms = match (&ts, plan.has_ts) {
                (Some(ts), true) => db_instant(ts, self.zone).map(|t| t.timestamp_millis().max(0) as u64),
                _ => None,
            };
            if c.mode == Mode::Timestamp {
                last.key = key[0].clone();
            }
            let cells = row.split_off(at);
            row.truncate(plan.keys);
            inputs.push(Input { key: row, version, ms, event_id: Uuid::nil(), cells });
            if plan.has_ts && ts.is_some() {
                last.ts = ts.clone();
            }
            if plan.has_inc {
                last.inc = inc_value.or(last.inc);
            }
        }
        Ok(Batch { from: from.clone(), last, inputs, department, fields: Arc::new(plan.fields) })
    }

    /// Checks and publishes `batch`, writes its refused rows, and stores the watermark after
    /// it once every row is acknowledged.
    async fn deliver(&self, batch: Batch) -> Result<Polled, String> {
        let c = &self.config;
        let Batch { from, last, mut inputs, department, fields } = batch;
        if inputs.is_empty() {
            return Ok(Polled::default());
        }
        // The time of a batch's ids in `incrementing` mode: kept before anything is published,
        // so that the same batch read again after a crash gets the same ids. (The timestamp
        // modes take each row's own time.)
        let first_read_ms = match (c.mode, self.read_state::<Pending>("pending")?) {
            (Mode::Incrementing, Some(p)) if p.from == from => p.first_read_ms,
            (Mode::Incrementing, _) => {
                let fresh = Pending { from: from.clone(), first_read_ms: govex_schemas::zone::now_ms() };
                self.write_state("pending", Some(&fresh)).await?;
                fresh.first_read_ms
            }
            _ => govex_schemas::zone::now_ms(),
        };
        for input in &mut inputs {
            input.event_id =
                row_event_id(&c.name, c.relation(), &input.key, &input.version, input.ms.unwrap_or(first_read_ms));
        }
        let read = inputs.len();
        self.metrics.count(&c.name, "read", read);
        let (checked, rejects) = self.check(department, fields, inputs).await?;
        let published = checked.len();
        for outcome in self.intake.publish_all(checked).await {
            // Nothing of this batch is marked read until every row of it is acknowledged: the
            // next poll reads it again, and its rows get the same ids.
            outcome.map_err(|e| format!("a row was not acknowledged: {}", e.reason()))?;
        }
        self.metrics.count(&c.name, "published", published);
        let refused = rejects.len();
        if !rejects.is_empty() {
            self.write_rejects(rejects).await?;
            self.metrics.count(&c.name, "refused", refused);
        }
        self.write_state("watermark", Some(&last)).await?;
        if c.mode == Mode::Incrementing {
            self.write_state::<Pending>("pending", None).await?;
        }
        // The lag gauges ask the table for its newest row: not at every batch of a backlog.
        let due = {
            let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = observed.is_none_or(|at| at.elapsed() >= OBSERVE_EVERY);
            if due {
                *observed = Some(std::time::Instant::now());
            }
            due
        };
        self.observe(&last, due).await;
        Ok(Polled { read, published, refused })
    }

    /// Checks the rows' inputs as the intake checks a batch: in chunks, on as many threads as
    /// the machine has cores, in order. The refused come back with their key, version and
    /// violations.
    async fn check(
        &self,
        department: Department,
        fields: Arc<Vec<(String, Kind)>>,
        inputs: Vec<Input>,
    ) -> Result<(Vec<Checked>, Vec<Refusal>), String> {
        use futures::StreamExt as _;
        const CHUNK: usize = 256;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let context = CheckContext::now();
        let mut chunks = Vec::with_capacity(inputs.len() / CHUNK + 1);
        let mut inputs = inputs.into_iter().peekable();
        while inputs.peek().is_some() {
            chunks.push(inputs.by_ref().take(CHUNK).collect::<Vec<_>>());
        }
        let (record, zone) = (self.config.record.clone(), self.zone);
        let mut results = futures::stream::iter(chunks)
            .map(|chunk| {
                let (intake, record, fields) = (self.intake.clone(), record.clone(), fields.clone());
                tokio::task::spawn_blocking(move || {
                    chunk
                        .into_iter()
                        .map(|Input { key, version, event_id, cells, ms: _ }| {
                            let input = match row_input(&fields, cells, zone) {
                                Ok(input) => input,
                                Err(too_long) => return Err((key, version, too_long)),
                            };
                            intake
                                .check_parsed(department, &record, input, &context, Some(event_id))
                                .map_err(|rejection| (key, version, rejection.violations()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .buffered(workers);
        let (mut checked, mut refused) = (Vec::new(), Vec::new());
        while let Some(chunk) = results.next().await {
            // A chunk whose checking failed fails the batch: nothing of it is marked read, and
            // the next poll reads it again.
            let chunk = chunk.map_err(|e| format!("checking a chunk of rows failed: {e}"))?;
            for result in chunk {
                match result {
                    Ok(ok) => checked.push(ok),
                    Err(refusal) => refused.push(refusal),
                }
            }
        }
        Ok((checked, refused))
    }

    async fn write_rejects(
        &self,
        rejects: Vec<(Vec<Option<String>>, String, Vec<crate::validation::Violation>)>,
    ) -> Result<(), String> {
        let Some(table) = &self.config.reject_table else {
            // Pointers and rules name no value: they may be logged.
            let first: Vec<String> = rejects
                .first()
                .map(|(_, _, v)| v.iter().map(|v| format!("{} {}", v.pointer, v.rule)).collect())
                .unwrap_or_default();
            tracing::warn!(source = %self.config.name, rows = rejects.len(), first = ?first, "rows refused (no reject_table to write them to)");
            return Ok(());
        };
        let d = self.db.dialect();
        let table = d.quote_table(table);
        let columns = "(source, row_key, version, violations)";
        let values =
            format!("({}, {}, {}, {})", d.placeholder(1), d.placeholder(2), d.placeholder(3), d.placeholder(4));
        // The same refusal written twice (a crash before the watermark) is one row.
        let sql = match d {
            Dialect::Postgres => format!("INSERT INTO {table} {columns} VALUES {values} ON CONFLICT DO NOTHING"),
            Dialect::MySql => format!("INSERT IGNORE INTO {table} {columns} VALUES {values}"),
        };
        let statements: Vec<(String, Vec<Bind>)> = rejects
            .into_iter()
            .map(|(key, version, violations)| {
                // One column's value as it is; several as a JSON array, so that no two keys meet.
                let key = match key.as_slice() {
                    [one] => one.clone().unwrap_or_default(),
                    many => serde_json::to_string(many).unwrap_or_default(),
                };
                let violations = serde_json::to_string(&violations).unwrap_or_default();
                let binds = vec![
                    Bind::Text(Some(self.config.name.clone())),
                    Bind::Text(Some(key)),
                    Bind::Text(Some(version)),
                    Bind::Text(Some(violations)),
                ];
                (sql.clone(), binds)
            })
            .collect();
        let rows = statements.len();
        let written = tokio::time::timeout(STATEMENT_WITHIN, self.db.execute_all(&statements)).await;
        match written.map_err(|_| "the reject table took too long".to_owned())? {
            Ok(()) => Ok(()),
            // A reject table whose columns refuse what is written to them (a row key longer
            // than its column) would refuse it at every retry and hold the whole source: the
            // rows stay refused and counted, the loss of their record is logged and counted,
            // and the source goes on. A reject table that does not answer is retried.
            Err(error @ govex_bus::frontdb::FrontDbError::Refused { .. }) => {
                tracing::error!(source = %self.config.name, rows, %error, "the reject table refused the record of refused rows; fix its columns (examples/frontdb/ has its DDL)");
                self.metrics.count(&self.config.name, "reject_unwritten", rows);
                Ok(())
            }
            Err(error) => Err(format!("the reject table: {error}")),
        }
    }

    /// Sets the watermark, lag and behind gauges.
    /// Sets the watermark gauge; every [`OBSERVE_EVERY`] (`lag`), also the lag and behind
    /// gauges, which ask the table for its newest row.
    async fn observe(&self, watermark: &Watermark, lag: bool) {
        let label = SourceMetrics::label(&self.config.name);
        let d = self.db.dialect();
        if let Some(inc) = watermark.inc {
            self.metrics.watermark.get_or_create(&label).set(inc as f64);
        }
        let ts_seconds = watermark
            .ts
            .as_deref()
            .and_then(|t| db_instant(t, self.zone))
            .map(|t| t.timestamp_millis() as f64 / 1000.0);
        if let (Some(seconds), None) = (ts_seconds, watermark.inc) {
            self.metrics.watermark.get_or_create(&label).set(seconds);
        }
        if !lag {
            return;
        }
        let table = self.config.read_from(d);
        let within = Duration::from_millis(self.config.query_timeout_ms);
        if let (Some(ts), Some(seconds)) = (&self.config.timestamp_column, ts_seconds) {
            // The newest row that is not in the future: one dated 2099 by mistake would show a
            // lag of decades for ever.
            let sql = format!(
                "SELECT {} AS govex_0 FROM {table} WHERE {t} <= {now} ORDER BY {t} DESC LIMIT 1",
                d.as_text(ts),
                t = d.quote(ts),
                now = d.now("timestamp with time zone")
            );
            if let Ok(rows) = self.db.fetch_text_read_only(&sql, &[], within).await {
                let newest = rows.first().and_then(|r| r[0].as_deref()).and_then(|t| db_instant(t, self.zone));
                if let Some(newest) = newest {
                    let lag = (newest.timestamp_millis() as f64 / 1000.0 - seconds).max(0.0);
                    self.metrics.lag.get_or_create(&label).set(lag);
                }
            }
        }
        if let (Some(inc), Some(last)) = (&self.config.incrementing_column, watermark.inc) {
            let sql =
                format!("SELECT {} AS govex_0 FROM {table} ORDER BY {} DESC LIMIT 1", d.as_text(inc), d.quote(inc));
            if let Ok(rows) = self.db.fetch_text_read_only(&sql, &[], within).await {
                if let Some(newest) =
                    rows.first().and_then(|r| r[0].as_deref()).and_then(|t| t.trim().parse::<i64>().ok())
                {
                    self.metrics.behind.get_or_create(&label).set((newest - last).max(0));
                }
            }
        }
    }

    /// Polls until `stop`: at once again after a full batch, after `poll_interval_ms`
    /// otherwise; a database that does not answer is tried again with backoff (1 s to 60 s),
    /// shown as `govex_frontdb_source_up 0` and in `down`, and the rest of the node goes on.
    pub async fn run(self, stop: CancellationToken, down: DownSources) {
        let label = SourceMetrics::label(&self.config.name);
        let mut backoff = Duration::from_secs(1);
        let mut types = None;
        // The next batch, read while the one before it was delivered: a backlog is read from
        // the database and published side by side.
        let mut next: Option<Batch> = None;
        loop {
            let result = async {
                let types = match &types {
                    Some(types) => types,
                    None => types.insert(self.check_columns().await?),
                };
                let batch = match next.take() {
                    Some(batch) => batch,
                    None => self.read_batch(types, &self.watermark()?).await?,
                };
                if batch.inputs.len() < self.config.batch_size {
                    return self.deliver(batch).await;
                }
                let after = batch.last.clone();
                let (delivered, read) = tokio::join!(self.deliver(batch), self.read_batch(types, &after));
                let delivered = delivered?;
                // What was read ahead is used only if the batch before it was delivered: else the
                // next poll reads again from the stored watermark.
                next = read.ok();
                Ok(delivered)
            }
            .await;
            let wait = match result {
                Ok(polled) => {
                    self.metrics.up.get_or_create(&label).set(1);
                    down.clear(&self.config.name);
                    backoff = Duration::from_secs(1);
                    if polled.read == self.config.batch_size {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(self.config.poll_interval_ms)
                    }
                }
                Err(error) => {
                    next = None;
                    self.metrics.up.get_or_create(&label).set(0);
                    down.set(&self.config.name, &error);
                    tracing::warn!(source = %self.config.name, db = %self.db.described(), %error, retry_in_ms = backoff.as_millis() as u64, "a front-end database source could not be read; trying again");
                    types = None;
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Connects to the source's database and checks its table: every column the source names
/// exists, and so does the reject table with the columns it writes. Errors name the source,
/// the database (without its password) and what is missing. Returns the columns' types.
pub async fn check_table(config: &SourceConfig, db: &FrontDb) -> Result<BTreeMap<String, String>, String> {
    let at = |what: String| format!("frontdb.sources {:?} ({}): {what}", config.name, db.described());
    let columns: BTreeMap<String, String> = match &config.query {
        Some(query) => db
            .query_columns(query)
            .await
            .map_err(|e| at(format!("the query does not prepare: {e}")))?
            .into_iter()
            .collect(),
        None => db.columns(&config.table).await.map_err(|e| at(e.to_string()))?.into_iter().collect(),
    };
    if columns.is_empty() {
        return Err(at(format!("table {} not found (or it has no columns this user can see)", config.table)));
    }
    let c = config;
    let named = c.key.iter().chain(&c.incrementing_column).chain(&c.timestamp_column).chain(c.columns.values());
    let missing: Vec<&String> = named.filter(|n| !columns.contains_key(n.as_str())).collect();
    if !missing.is_empty() {
        let what = if c.query.is_some() { "the query".to_owned() } else { format!("table {}", c.table) };
        return Err(at(format!("{what} has no column {missing:?}")));
    }
    // The watermark compares what it stores: an increment must be an integer column, a
    // timestamp a date or time column.
    if let Some(inc) = &c.incrementing_column {
        let kind = columns.get(inc).map(String::as_str).unwrap_or_default();
        if !["smallint", "integer", "bigint", "int", "tinyint", "mediumint"].contains(&kind) {
            return Err(at(format!("incrementing_column {inc} is {kind}, not an integer column")));
        }
    }
    if let Some(ts) = &c.timestamp_column {
        let kind = columns.get(ts).map(String::as_str).unwrap_or_default();
        if !(kind.contains("timestamp") || kind.contains("datetime")) {
            return Err(at(format!("timestamp_column {ts} is {kind}, not a timestamp or datetime column")));
        }
    }
    if let Some(rejects) = &c.reject_table {
        let have: Vec<String> =
            db.columns(rejects).await.map_err(|e| at(e.to_string()))?.into_iter().map(|(n, _)| n).collect();
        for needed in ["source", "row_key", "version", "violations"] {
            if !have.iter().any(|h| h == needed) {
                return Err(at(format!(
                    "reject table {rejects} has no column {needed} (examples/frontdb/ has its DDL)"
                )));
            }
        }
    }
    Ok(columns)
}

/// What `govex config check` asks of each source: its database answers and its table fits.
pub async fn check_source(config: &SourceConfig, zone: &TimeZone) -> Result<(), String> {
    config.validate()?;
    let db = FrontDb::connect(&config.url, 1, zone.offset().local_minus_utc() / 60)
        .map_err(|e| format!("frontdb.sources {:?}: {e}", config.name))?;
    check_table(config, &db).await.map(drop)
}

/// The sources whose database does not answer now, and why: `/readyz` lists them (without
/// failing: the rest of the node serves on).
#[derive(Clone, Default)]
pub struct DownSources(Arc<std::sync::Mutex<BTreeMap<String, String>>>);

impl DownSources {
    fn set(&self, name: &str, why: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_owned(), why.to_owned());
    }

    fn clear(&self, name: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
    }

    /// Each source down, with why.
    pub fn list(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn database_text_becomes_what_the_schema_expects() {
        let zone = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(typed("5".into(), Kind::Integer, zone), json!(5));
        assert_eq!(typed("5 days".into(), Kind::Integer, zone), json!("5 days"), "left for the checks to refuse");
        assert_eq!(typed("t".into(), Kind::Boolean, zone), json!(true));
        assert_eq!(typed("0".into(), Kind::Boolean, zone), json!(false));
        assert_eq!(typed("2026-11-19 15:00:00".into(), Kind::DateTime, zone), json!("2026-11-19T15:00:00+08:00"));
        assert_eq!(typed("2026-11-19 07:00:00.25+00".into(), Kind::DateTime, zone), json!("2026-11-19T07:00:00.250Z"));
        assert_eq!(typed("568000.00".into(), Kind::Text, zone), json!("568000.00"));
        let schema = json!({"properties": {
            "buyers": {"type": "array", "items": {"properties": {"name": {"type": "string"}}}},
            "days": {"type": ["integer", "null"]},
            "at": {"type": "string", "format": "date-time"},
        }});
        assert_eq!(kind_at(&schema, "buyers[0].name"), Kind::Text);
        assert_eq!(kind_at(&schema, "days"), Kind::Integer);
        assert_eq!(kind_at(&schema, "at"), Kind::DateTime);
        let mut record = json!({});
        set_path(&mut record, "buyers[0].name", json!("王小明"));
        set_path(&mut record, "taxpayer.identifier_type", json!("CITIZEN_ID"));
        assert_eq!(record, json!({"buyers": [{"name": "王小明"}], "taxpayer": {"identifier_type": "CITIZEN_ID"}}));
    }

    #[test]
    fn a_row_version_has_one_id_and_another_version_another() {
        let key = [Some("42".to_owned())];
        let a = row_event_id("s", "t", &key, "2026-11-19 15:00:00|7", 1_790_000_000_000);
        assert_eq!(a, row_event_id("s", "t", &key, "2026-11-19 15:00:00|7", 1_790_000_000_000));
        assert_ne!(a, row_event_id("s", "t", &key, "2026-11-19 15:00:01|7", 1_790_000_000_000));
        assert_ne!(a, row_event_id("other", "t", &key, "2026-11-19 15:00:00|7", 1_790_000_000_000));
        assert_eq!(a.get_version_num(), 7, "a UUIDv7, as every envelope's");
    }

    #[test]
    fn a_source_is_checked_before_it_touches_a_database() {
        let mut config = SourceConfig {
            name: "tax-payments".into(),
            department: "tax".into(),
            record: "deed-tax-payment".into(),
            url: "mysql://root@127.0.0.1/test".into(),
            table: "deed_tax_out".into(),
            query: None,
            key: vec!["id".into()],
            mode: Mode::TimestampIncrementing,
            incrementing_column: Some("id".into()),
            timestamp_column: Some("updated_at".into()),
            columns: [("voucher_number".to_owned(), "voucher_no".to_owned())].into(),
            poll_interval_ms: 1000,
            batch_size: 500,
            commit_lag_ms: 2000,
            reject_table: Some("deed_tax_rejects".into()),
            connections: 2,
            query_timeout_ms: 60_000,
        };
        assert!(config.validate().is_ok());
        config.columns.insert("taxpayer.name".into(), "name; DROP TABLE x".into());
        assert!(config.validate().unwrap_err().contains("not a table or column name"));
        config.columns.remove("taxpayer.name");
        config.timestamp_column = None;
        assert!(config.validate().unwrap_err().contains("timestamp+incrementing needs"));
        config.timestamp_column = Some("updated_at".into());

        // A query instead of a table: bounded in length (counted in characters, not bytes).
        config.table = String::new();
        let at_most = |chars: usize| format!("SELECT id FROM t WHERE note = '{}'", "登".repeat(chars - 32));
        config.query = Some(at_most(MAX_QUERY_CHARS));
        assert_eq!(config.query.as_ref().unwrap().chars().count(), MAX_QUERY_CHARS);
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        config.query = Some(at_most(MAX_QUERY_CHARS + 1));
        assert!(config.validate().unwrap_err().contains("at most 16,384 characters"));
    }

    #[test]
    fn a_cell_longer_than_the_bound_is_refused_by_its_field_and_one_at_the_bound_is_read() {
        let fields = vec![("voucher_number".to_owned(), Kind::Text), ("taxpayer.name".to_owned(), Kind::Text)];
        let zone = FixedOffset::east_opt(8 * 3600).unwrap();
        let at_bound = "票".repeat(MAX_CELL_CHARS);
        let input = row_input(&fields, vec![Some(at_bound.clone()), Some("张三".into())], zone).unwrap();
        assert_eq!(input["voucher_number"], json!(at_bound));
        let over = "票".repeat(MAX_CELL_CHARS + 1);
        let refused = row_input(&fields, vec![Some("V1".into()), Some(over)], zone).unwrap_err();
        assert_eq!(refused.len(), 1);
        let text = format!("{:?}", refused[0]);
        assert!(text.contains("/taxpayer/name") && text.contains("too-long-in-source"), "{text}");
        assert!(!text.contains("票票"), "the value is not echoed: {text}");
    }
}
