//! Down-tables (回流): the records of a resource a department may read, written into a table of
//! its front-end database, where its system reads them without calling an API.
//!
//! - Access is the API's: [`crate::governance::access`] for the department and the table's
//!   purpose at the moment a record is written; a record it may not read is not written, and
//!   every personal field it is not entitled to is masked exactly as the shared view masks it.
//! - One row per natural key (the record's Kafka key), upserted with its event id, its version
//!   (the event time in ms) and when it was received. An older version never overwrites a
//!   newer one, and the same version again changes nothing: replays are harmless.
//! - Rows are written in one transaction per flush; the consumer stores no offset before the
//!   transaction committed, so a crash loses nothing (the records come again and are upserted
//!   again, to the same effect).
//! - A value the database refuses (too long for its column, say) would be refused for ever:
//!   the batch is then written row by row, and each refused record goes to its topic's
//!   dead-letter topic as the table's own component (`down-table-<name>`), where a steward
//!   finds it and, once the column is fixed, replays it to this table alone. Its offset is
//!   stored only after the dead letter is on the broker.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use govex_bus::{
    consumer::HandlerError,
    dlq::{DeadLetter, DeadLetterQueue, Stage},
    frontdb::{check_identifier, check_name, Bind, Dialect, FrontDb, FrontDbError},
    Incoming, Metrics, RegistryClient,
};
use govex_schemas::{zone::TimeZone, Department, LiveCatalog};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{dossier::Decoders, governance::Subscriptions};

/// One `[[frontdb.tables]]` entry: a resource written into a department's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownTableConfig {
    /// The table's name in metrics and its consumer group (`[a-z0-9-]`).
    pub name: String,
    /// The department the table is for: what it may read, it gets.
    pub department: String,
    /// The catalogued resource (`housing.contract-filing`).
    pub resource: String,
    /// The purpose the department reads it for (as a read over HTTP states one): a
    /// subscription grants for a purpose.
    pub purpose: String,
    /// `postgres://…` or `mysql://…`; the password through `${NAME}`.
    pub url: String,
    /// The table (see `examples/frontdb/` for its DDL).
    pub table: String,
    /// Field path (`buyers[0].name`) → column. Every value is written as text.
    pub columns: BTreeMap<String, String>,
    /// Connections to the database at most.
    #[serde(default = "default_connections")]
    pub connections: u32,
}

fn default_connections() -> u32 {
    2
}

impl DownTableConfig {
    /// Checks what can be checked without the database; errors name the setting.
    pub fn validate(&self) -> Result<(), String> {
        let at = |what: &str| format!("frontdb.tables {:?}: {what}", self.name);
        check_name(&self.name).map_err(at)?;
        Department::parse(&self.department).map_err(|e| at(&format!("department: {e}")))?;
        Dialect::of(&self.url).map_err(|e| at(&e.to_string()))?;
        check_identifier(&self.table).map_err(|e| at(&format!("table: {e}")))?;
        for column in self.columns.values() {
            check_identifier(column).map_err(|e| at(&e))?;
            if ["natural_key", "event_id", "version", "received_at"].contains(&column.as_str()) {
                return Err(at(&format!("{column} is one of the columns govex keeps itself")));
            }
        }
        crate::use_log::checked_purpose(Some(&self.purpose))
            .map_err(|(_, message)| at(&format!("purpose: {message}")))?;
        if self.connections == 0 || self.connections > 16 {
            return Err(at("connections: 1 to 16"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowLabels {
    table: String,
    outcome: String,
}

/// `govex_frontdb_table_rows_total{table,outcome}`: `written` (committed), `refused` (the
/// database refused a value; dead-lettered), `not_shared` (a record the department may not
/// read), `no_key`.
#[derive(Clone)]
pub struct TableMetrics {
    rows: Family<RowLabels, Counter>,
}

impl TableMetrics {
    /// Registered once per process.
    pub fn register(metrics: &Metrics) -> Self {
        Self { rows: metrics.shared("frontdb_table_rows", "Records written into front-end database down-tables") }
    }

    fn count(&self, table: &str, outcome: &str, n: u64) {
        self.rows.get_or_create(&RowLabels { table: table.to_owned(), outcome: outcome.to_owned() }).inc_by(n);
    }
}

/// The value at `a.b[0].c` of `record`, as the text a column gets.
fn text_at(record: &Value, path: &str) -> Option<String> {
    let mut node = record;
    for step in path.split('.') {
        let (name, index) = match step.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (step, None),
        };
        node = node.get(name)?;
        if let Some(index) = index {
            node = node.get(index)?;
        }
    }
    match node {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// A department's down-table.
pub struct DownTable {
    config: DownTableConfig,
    department: Department,
    db: FrontDb,
    decoders: Decoders,
    catalog: LiveCatalog,
    subscriptions: Option<Subscriptions>,
    zone: TimeZone,
    metrics: TableMetrics,
    /// Upserts written by `apply` and not yet committed; `flush` commits them. One flush at a
    /// time (the lock is held over the commit): a flush that answers `Ok` has seen every
    /// upsert written before it committed, its own lane's included.
    pending: tokio::sync::Mutex<Vec<(Incoming, Vec<Bind>)>>,
    /// Where a record whose values the database refuses goes.
    dead_letters: DeadLetterQueue,
    /// The upsert, made at the first commit from the table's column types (PostgreSQL takes
    /// a text bind into a NUMERIC or DATE column only through a cast).
    upsert: tokio::sync::Mutex<Option<String>>,
}

impl DownTable {
    /// The table `config` names, its records decoded through `registry`.
    pub fn new(
        config: DownTableConfig,
        registry: RegistryClient,
        catalog: LiveCatalog,
        subscriptions: Option<Subscriptions>,
        zone: TimeZone,
        metrics: TableMetrics,
        dead_letters: &dyn Fn(String) -> DeadLetterQueue,
    ) -> Result<Self, String> {
        config.validate()?;
        let department = Department::parse(&config.department).map_err(|e| e.to_string())?;
        let db = FrontDb::connect(&config.url, config.connections, zone.offset().local_minus_utc() / 60)
            .map_err(|e| format!("frontdb.tables {:?}: {e}", config.name))?;
        Ok(Self {
            department,
            db,
            decoders: Decoders::new(registry),
            catalog,
            subscriptions,
            zone,
            metrics,
            pending: Default::default(),
            dead_letters: dead_letters(group_name(&config.name)),
            upsert: Default::default(),
            config,
        })
    }

    /// The topic it reads (the resource's), if the catalogue has the resource.
    pub fn topic(&self) -> Option<String> {
        self.catalog.current().resources.iter().find(|r| r.id == self.config.resource).map(|r| r.topic.clone())
    }

    /// Its configuration.
    pub fn config(&self) -> &DownTableConfig {
        &self.config
    }

    async fn write(&self, message: &Incoming) -> Result<(), HandlerError> {
        let catalog = self.catalog.current();
        let Some(resource) = catalog.resources.iter().find(|r| r.id == self.config.resource) else {
            return Ok(());
        };
        let envelope = message.envelope().map_err(|e| HandlerError::refused(Stage::Envelope, &e))?;
        let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).filter(|k| !k.is_empty()) else {
            self.metrics.count(&self.config.name, "no_key", 1);
            return Ok(());
        };
        let today = crate::governance::today();
        let access = crate::governance::access(
            resource,
            self.department.as_str(),
            self.subscriptions.as_ref(),
            today,
            Some(&self.config.purpose),
        );
        if !access.read {
            self.metrics.count(&self.config.name, "not_shared", 1);
            return Ok(());
        }
        let mut record = self.decoders.record(message, &self.zone).await?;
        for path in resource.personal_fields.iter().filter(|p| !access.sees(p)) {
            crate::dossier::api::mask_path(&mut record, path);
        }
        let version = envelope.event_time_millis().unwrap_or_default() as i64;
        let mut binds =
            vec![Bind::Text(Some(key)), Bind::Text(Some(envelope.event_id.to_string())), Bind::Int(version)];
        binds.extend(self.config.columns.keys().map(|path| Bind::Text(text_at(&record, path))));
        self.pending.lock().await.push((message.clone(), binds));
        Ok(())
    }

    /// Runs `statements` in one transaction, given at most 60 s (a locked table, a lost
    /// connection).
    async fn execute_within(&self, statements: &[(String, Vec<Bind>)]) -> Result<(), FrontDbError> {
        match tokio::time::timeout(Duration::from_secs(60), self.db.execute_all(statements)).await {
            Ok(written) => written,
            Err(_) => Err(FrontDbError::Database("the commit took too long".into())),
        }
    }

    async fn commit(&self) -> Result<(), String> {
        let mut pending = self.pending.lock().await;
        if pending.is_empty() {
            return Ok(());
        }
        let at = |e: String| format!("down-table {} ({}): {e}", self.config.name, self.db.described());
        let upsert = {
            let mut upsert = self.upsert.lock().await;
            match &*upsert {
                Some(statement) => statement.clone(),
                None => {
                    let types: BTreeMap<String, String> =
                        self.db.columns(&self.config.table).await.map_err(|e| at(e.to_string()))?.into_iter().collect();
                    if types.is_empty() {
                        return Err(at(format!("table {} not found", self.config.table)));
                    }
                    upsert.insert(upsert_statement(self.db.dialect(), &self.config, &types)).clone()
                }
            }
        };
        let statements: Vec<(String, Vec<Bind>)> =
            pending.iter().map(|(_, binds)| (upsert.clone(), binds.clone())).collect();
        match self.execute_within(&statements).await {
            Ok(()) => self.metrics.count(&self.config.name, "written", pending.len() as u64),
            // One value refused fails the whole transaction: each row alone, then, and the
            // refused ones to the dead-letter topic.
            Err(FrontDbError::Refused { .. }) => {
                let (mut written, mut refused) = (0, 0);
                for (statement, (message, _)) in statements.chunks(1).zip(pending.iter()) {
                    match self.execute_within(statement).await {
                        Ok(()) => written += 1,
                        Err(error @ FrontDbError::Refused { .. }) => {
                            let letter = DeadLetter::new(Stage::Apply, &RefusedByDatabase(error.to_string()));
                            self.dead_letters.send(message, &letter).await.map_err(|e| at(e.to_string()))?;
                            refused += 1;
                        }
                        Err(other) => {
                            // What is written stays written; the batch comes again whole and
                            // its upserts change nothing twice.
                            self.metrics.count(&self.config.name, "written", written);
                            self.metrics.count(&self.config.name, "refused", refused);
                            return Err(at(other.to_string()));
                        }
                    }
                }
                self.metrics.count(&self.config.name, "written", written);
                self.metrics.count(&self.config.name, "refused", refused);
            }
            Err(other) => return Err(at(other.to_string())),
        }
        pending.clear();
        Ok(())
    }
}

/// A value of a record the down-table's database refused (its message names the SQLSTATE and
/// the column, never the value).
struct RefusedByDatabase(String);

impl std::fmt::Display for RefusedByDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl govex_bus::dlq::Refusal for RefusedByDatabase {
    fn class(&self) -> &'static str {
        "refused_by_database"
    }
}

/// The upsert of one row: newer versions replace, the same or older change nothing.
fn upsert_statement(d: Dialect, config: &DownTableConfig, types: &BTreeMap<String, String>) -> String {
    let table = d.quote_table(&config.table);
    let mut columns = vec!["natural_key".to_owned(), "event_id".into(), "version".into(), "received_at".into()];
    columns.extend(config.columns.values().cloned());
    let quoted: Vec<String> = columns.iter().map(|c| d.quote(c)).collect();
    // `received_at` is the database's clock at the commit; every other column is bound.
    let mut bound = 0;
    let values: Vec<String> = columns
        .iter()
        .map(|column| match column.as_str() {
            "received_at" => match d {
                Dialect::Postgres => "CURRENT_TIMESTAMP".to_owned(),
                Dialect::MySql => "NOW(6)".to_owned(),
            },
            other => {
                bound += 1;
                match (d, types.get(other)) {
                    (Dialect::Postgres, Some(data_type)) if !matches!(data_type.as_str(), "user-defined" | "array") => {
                        d.typed_placeholder(bound, data_type)
                    }
                    _ => d.placeholder(bound),
                }
            }
        })
        .collect();
    let updated = &quoted[1..];
    match d {
        Dialect::Postgres => format!(
            "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT (natural_key) DO UPDATE SET {} WHERE {table}.version < EXCLUDED.version",
            quoted.join(", "),
            values.join(", "),
            updated.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect::<Vec<_>>().join(", ")
        ),
        Dialect::MySql => {
            // Each column takes the new value only if the row's version is older; `version`
            // itself last, so that the others still compare with the old one.
            let version = d.quote("version");
            let mut sets: Vec<String> = updated
                .iter()
                .filter(|c| **c != version)
                .map(|c| format!("{c} = IF(VALUES({version}) > {version}, VALUES({c}), {c})"))
                .collect();
            sets.push(format!("{version} = GREATEST({version}, VALUES({version}))"));
            format!("INSERT INTO {table} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}", quoted.join(", "), values.join(", "), sets.join(", "))
        }
    }
}

impl crate::sink::Sink for DownTable {
    const NAME: &'static str = "down-table";
    const LANES: crate::sink::Lanes = crate::sink::Lanes { lanes: 4, lane_capacity: 256 };
    const DEAD_LETTERS: Option<&'static str> = Some("down-table");

    fn dead_letter_component(&self) -> Option<String> {
        Some(self.dead_letters.component().to_owned())
    }

    fn topics(&self, _: &govex_schemas::Catalog) -> Vec<String> {
        self.topic().into_iter().collect()
    }

    async fn apply(&self, record: &Incoming) -> Result<(), HandlerError> {
        self.write(record).await
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.commit().await.map_err(|e| sled::Error::Io(std::io::Error::other(e)))
    }
}

/// The consumer group of down-table `name`, after the node's prefix and division.
pub fn group_name(name: &str) -> String {
    format!("down-table-{name}")
}

/// What `govex config check` asks of each down-table: its database answers, the table has
/// the columns govex keeps (`natural_key` its primary key, `event_id`, `version`,
/// `received_at`) and every mapped column; errors name the table, the database (without its
/// password) and what is missing.
pub async fn check_table(config: &DownTableConfig, zone: &TimeZone) -> Result<(), String> {
    config.validate()?;
    let db = FrontDb::connect(&config.url, 1, zone.offset().local_minus_utc() / 60)
        .map_err(|e| format!("frontdb.tables {:?}: {e}", config.name))?;
    let at = |what: String| format!("frontdb.tables {:?} ({}): {what}", config.name, db.described());
    let columns: BTreeMap<String, String> =
        db.columns(&config.table).await.map_err(|e| at(e.to_string()))?.into_iter().collect();
    if columns.is_empty() {
        return Err(at(format!("table {} not found (examples/frontdb/ has its DDL)", config.table)));
    }
    let kept = ["natural_key", "event_id", "version", "received_at"].into_iter().map(str::to_owned);
    let missing: Vec<String> =
        kept.chain(config.columns.values().cloned()).filter(|c| !columns.contains_key(c)).collect();
    if !missing.is_empty() {
        return Err(at(format!("table {} has no column {missing:?}", config.table)));
    }
    Ok(())
}

/// Starts one sink per configured down-table, each in its own consumer group
/// (`<prefix>-<division>-down-table-<name>`).
pub fn start(
    cx: &govex_http::Context,
    tables: &[DownTableConfig],
    subscriptions: Option<Subscriptions>,
) -> Result<(), String> {
    if tables.is_empty() {
        return Ok(());
    }
    let metrics = TableMetrics::register(&cx.metrics);
    for config in tables {
        let table = DownTable::new(
            config.clone(),
            cx.registry.clone(),
            cx.catalog.clone(),
            subscriptions.clone(),
            cx.time_zone.clone(),
            metrics.clone(),
            &|component| DeadLetterQueue::new(cx.bus.producer().clone(), component, &cx.metrics),
        )?;
        let group = cx.group(&group_name(&config.name));
        let (bus, node_metrics, catalog, stop) =
            (cx.bus.clone(), cx.metrics.clone(), cx.catalog.clone(), cx.stop.clone());
        let table = Arc::new(table);
        cx.spawn("down-table", async move {
            crate::sink::run(table, &bus, group, &node_metrics, catalog, stop).await.map(drop)
        });
    }
    Ok(())
}
