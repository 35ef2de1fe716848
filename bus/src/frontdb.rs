//! Front-end databases (前置库): the PostgreSQL and MySQL/MariaDB databases beside the exchange
//! that department systems write the records they share into, and read what they receive
//! from. This is the one place that speaks to them (as `rdkafka` is spoken to in one place):
//! connecting, the two dialects, reading rows as text, and writing in one transaction.
//!
//! Rows are read as text (`CAST(col AS TEXT)`, `CAST(col AS CHAR)`), typed by the caller from
//! the record type's JSON Schema, so that no column type of a department's choosing can make
//! a value unreadable. Sessions run in the source's time zone, so that a `timestamp` without a
//! zone means what the department's system meant by it.

use std::{sync::Arc, time::Duration};

use sqlx::{mysql::MySqlPoolOptions, postgres::PgPoolOptions, Executor, MySqlPool, PgPool, Row};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`.
    MySql,
}

impl Dialect {
    /// The dialect of `url`, or why it has none.
    pub fn of(url: &str) -> Result<Self, FrontDbError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(FrontDbError::Url("the URL starts with postgres:// or mysql://".into())),
        }
    }

    /// `name` quoted as an identifier. Names come from configuration, never from a request, and
    /// are checked by [`check_identifier`] first; quoting keeps reserved words usable.
    pub fn quote(self, name: &str) -> String {
        match self {
            Self::Postgres => format!("\"{name}\""),
            Self::MySql => format!("`{name}`"),
        }
    }

    /// `table` (or `schema.table`) quoted part by part.
    pub fn quote_table(self, table: &str) -> String {
        table.split('.').map(|part| self.quote(part)).collect::<Vec<_>>().join(".")
    }

    /// The `n`th (1-based) bind placeholder.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            Self::MySql => "?".to_owned(),
        }
    }

    /// `column` read as text.
    pub fn as_text(self, column: &str) -> String {
        match self {
            Self::Postgres => format!("CAST({} AS TEXT)", self.quote(column)),
            Self::MySql => format!("CAST({} AS CHAR)", self.quote(column)),
        }
    }

    /// The placeholder `n` compared with a column of `data_type`: PostgreSQL compares a text
    /// bind only with text, so it is cast to the column's own type; MySQL converts by itself.
    pub fn typed_placeholder(self, n: usize, data_type: &str) -> String {
        match self {
            Self::Postgres => format!("CAST(${n} AS {data_type})"),
            Self::MySql => "?".to_owned(),
        }
    }

    /// The database's own clock, comparable with a column of `data_type`.
    pub fn now(self, data_type: &str) -> &'static str {
        let zoned = data_type.contains("with time zone") || data_type == "timestamptz";
        match self {
            Self::Postgres if zoned => "CURRENT_TIMESTAMP",
            Self::Postgres => "LOCALTIMESTAMP",
            Self::MySql => "NOW(6)",
        }
    }

    /// `column` read as text, cut after `chars` characters (a longer value is seen to be
    /// longer without being read whole).
    pub fn as_text_at_most(self, column: &str, chars: usize) -> String {
        format!("LEFT({}, {chars})", self.as_text(column))
    }

    /// The database's own clock less `lag_ms`, comparable with a column of `data_type`.
    pub fn now_less(self, lag_ms: u64, data_type: &str) -> String {
        let zoned = data_type.contains("with time zone") || data_type == "timestamptz";
        match self {
            Self::Postgres if zoned => format!("(CURRENT_TIMESTAMP - INTERVAL '{lag_ms} milliseconds')"),
            Self::Postgres => format!("(LOCALTIMESTAMP - INTERVAL '{lag_ms} milliseconds')"),
            Self::MySql => format!("(NOW(6) - INTERVAL {} MICROSECOND)", lag_ms * 1000),
        }
    }
}

/// Whether `name` may be used as a table or column name: letters, digits and `_`, at most 63
/// characters, optionally one `schema.` prefix. Anything else is refused at configuration
/// time, so that no configured name is SQL.
pub fn check_identifier(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a table or column name (letters, digits and _, at most 63; one schema. prefix)"))
    }
}

/// Whether `name` may name a source or a down-table: it is part of metrics, consumer groups
/// and event ids, so lower-case letters, digits and `-` only.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(()).ok_or("name: lower-case letters, digits and -")
}

/// A front-end database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FrontDbError {
    /// The URL is not one this node can use.
    #[error("URL: {0}")]
    Url(String),
    /// The database did not answer or refused.
    #[error("{0}")]
    Database(String),
    /// The database cancelled the statement when its time bound ran out.
    #[error("the database cancelled the statement: it ran past its time bound")]
    TimedOut,
    /// The database refused a value of the statement (too long for its column, not of its
    /// type, a constraint): the same statement will be refused again. Its message is not
    /// kept, since both servers quote the refused value in it.
    #[error("the database refused a value: SQLSTATE {sqlstate}{}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    Refused {
        /// The SQLSTATE (class 22, data exception, or 23, integrity constraint violation).
        sqlstate: String,
        /// The column, where the server names one.
        column: Option<String>,
    },
}

/// MySQL's errors of a refused value whose SQLSTATE is not of class 22 or 23: 1265 data
/// truncated (`01000`: an ENUM, an integer or decimal that does not parse), 1292 incorrect
/// datetime value, 1366 incorrect value for a column, 1411 incorrect value for a function.
const MYSQL_REFUSED_VALUE: [u16; 4] = [1265, 1292, 1366, 1411];
/// A statement cancelled at its time bound: MariaDB's 1969 (`max_statement_time`), MySQL's
/// 3024 (`max_execution_time`); PostgreSQL's is SQLSTATE 57014 (`statement_timeout`).
const MYSQL_TIMED_OUT: [u16; 2] = [1969, 3024];

impl FrontDbError {
    /// Whether the database cancelled the statement at its time bound.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut)
    }
}

impl From<sqlx::Error> for FrontDbError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mysql_number = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|m| m.number());
            if sqlstate == "57014" || mysql_number.is_some_and(|n| MYSQL_TIMED_OUT.contains(&n)) {
                return Self::TimedOut;
            }
            let refused = sqlstate.starts_with("22")
                || sqlstate.starts_with("23")
                || mysql_number.is_some_and(|n| MYSQL_REFUSED_VALUE.contains(&n));
            if refused {
                let column = match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => pg.column().map(str::to_owned),
                    // MySQL names the column last, `... for column 'name' at row 1`, MariaDB as
                    // `` `db`.`table`.`name` ``: the last "column " of the message is after any
                    // quoted value, and only its last quoted part is taken.
                    None => db.message().rsplit_once("column ").and_then(|(_, rest)| {
                        let quoted = rest.split(" at row").next()?.trim();
                        let name = quoted.rsplit('.').next()?.trim_matches(|c| c == '\'' || c == '`');
                        check_identifier(name).is_ok().then(|| name.to_owned())
                    }),
                };
                return Self::Refused { sqlstate, column };
            }
        }
        // sqlx's messages carry no bound values; a URL is never part of them.
        Self::Database(e.to_string())
    }
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// Text, or NULL.
    Text(Option<String>),
    /// An integer.
    Int(i64),
}

/// `sql` with `binds` bound, for either database (their query types differ, the binding does not).
macro_rules! bound {
    ($sql:expr, $binds:expr) => {{
        let mut query = sqlx::query($sql);
        for bind in $binds {
            query = match bind {
                Bind::Text(text) => query.bind(text.clone()),
                Bind::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}

#[derive(Clone)]
enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// A connection pool to one front-end database. Cheap to clone.
#[derive(Clone)]
pub struct FrontDb {
    pool: Pool,
    dialect: Dialect,
    described: String,
    /// Which MySQL-family server bounds a statement how, once a read found out: MariaDB
    /// (`max_statement_time`) or MySQL (`max_execution_time`). Each refuses the other's.
    statement_bound: Arc<std::sync::OnceLock<MySqlBound>>,
}

#[derive(Clone, Copy)]
enum MySqlBound {
    MariaDb,
    MySql,
}

impl MySqlBound {
    fn statement(self, ms: u128) -> String {
        match self {
            Self::MariaDb => format!("SET SESSION max_statement_time = {:.3}", ms as f64 / 1000.0),
            Self::MySql => format!("SET SESSION max_execution_time = {ms}"),
        }
    }
}

impl std::fmt::Debug for FrontDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

/// `url` without its password (in the authority or in the query string: the query string is
/// left out whole), for logs and errors.
pub fn describe(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => format!("{scheme}://{rest}"),
        },
        None => "(not a URL)".to_owned(),
    }
}

impl FrontDb {
    /// A pool to `url` of at most `connections`, whose sessions run at `utc_offset_minutes`.
    /// It connects lazily: a database that is down now is tried again at each use.
    pub fn connect(url: &str, connections: u32, utc_offset_minutes: i32) -> Result<Self, FrontDbError> {
        let dialect = Dialect::of(url)?;
        let (sign, minutes) =
            if utc_offset_minutes < 0 { ('-', -utc_offset_minutes) } else { ('+', utc_offset_minutes) };
        let offset = format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60);
        let acquire = Duration::from_secs(5);
        let pool = match dialect {
            Dialect::Postgres => {
                // The INTERVAL form reads the offset as ISO 8601 does (east positive).
                let set = format!("SET TIME ZONE INTERVAL '{offset}' HOUR TO MINUTE");
                let options = PgPoolOptions::new().max_connections(connections).acquire_timeout(acquire).after_connect(
                    move |connection, _| {
                        let set = set.clone();
                        Box::pin(async move { connection.execute(set.as_str()).await.map(drop) })
                    },
                );
                Pool::Postgres(options.connect_lazy(url).map_err(|e| FrontDbError::Url(e.to_string()))?)
            }
            Dialect::MySql => {
                // Strict in every session, whatever the server's default: a value too long for
                // its column is then refused (and dead-lettered), never cut short in silence.
                let set = format!(
                    "SET time_zone = '{offset}', sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')"
                );
                let options = MySqlPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(acquire)
                    .after_connect(move |connection, _| {
                        let set = set.clone();
                        Box::pin(async move { connection.execute(set.as_str()).await.map(drop) })
                    });
                Pool::MySql(options.connect_lazy(url).map_err(|e| FrontDbError::Url(e.to_string()))?)
            }
        };
        Ok(Self { pool, dialect, described: describe(url), statement_bound: Arc::default() })
    }

    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Its URL without the password.
    pub fn described(&self) -> &str {
        &self.described
    }

    /// Asks the database something trivial.
    pub async fn ping(&self) -> Result<(), FrontDbError> {
        self.fetch_text("SELECT 1", &[]).await.map(drop)
    }

    /// The columns of `table` and their types (`information_schema`'s `data_type`), in order;
    /// empty when the table does not exist.
    pub async fn columns(&self, table: &str) -> Result<Vec<(String, String)>, FrontDbError> {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
            None => (None, table.to_owned()),
        };
        let sql = match (self.dialect, &schema) {
            (Dialect::Postgres, None) => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
            (Dialect::Postgres, Some(_)) => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $2 AND table_name = $1 ORDER BY ordinal_position"
            }
            (Dialect::MySql, None) => {
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position"
            }
            (Dialect::MySql, Some(_)) => {
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns \
                 WHERE table_name = ? AND table_schema = ? ORDER BY ordinal_position"
            }
        };
        let mut binds = vec![Bind::Text(Some(name))];
        binds.extend(schema.map(|s| Bind::Text(Some(s))));
        let rows = self.fetch_text(sql, &binds).await?;
        Ok(rows
            .into_iter()
            .filter_map(|mut row| {
                let data_type = row.pop()??;
                let name = row.pop()??;
                Some((name, data_type.to_ascii_lowercase()))
            })
            .collect())
    }

    /// The columns `query` returns, each with its type named as `information_schema` names a
    /// table column's (`bigint`, `timestamp with time zone`, `datetime`), so that a query is
    /// checked as a table is. The database prepares the query and runs nothing.
    pub async fn query_columns(&self, query: &str) -> Result<Vec<(String, String)>, FrontDbError> {
        use sqlx::{Column, Statement, TypeInfo};
        let named = |name: &str, type_name: &str| {
            let type_name = type_name.to_ascii_lowercase();
            let type_name = match type_name.as_str() {
                "int2" => "smallint".to_owned(),
                "int4" => "integer".to_owned(),
                "int8" => "bigint".to_owned(),
                "timestamptz" => "timestamp with time zone".to_owned(),
                "timestamp" if self.dialect == Dialect::Postgres => "timestamp without time zone".to_owned(),
                "varchar" if self.dialect == Dialect::Postgres => "character varying".to_owned(),
                "bool" => "boolean".to_owned(),
                other => other.trim_end_matches(" unsigned").to_owned(),
            };
            (name.to_owned(), type_name)
        };
        Ok(match &self.pool {
            Pool::Postgres(pool) => {
                let statement = pool.prepare(query).await?;
                statement.columns().iter().map(|c| named(c.name(), c.type_info().name())).collect()
            }
            Pool::MySql(pool) => {
                let statement = pool.prepare(query).await?;
                statement.columns().iter().map(|c| named(c.name(), c.type_info().name())).collect()
            }
        })
    }

    /// Runs a query whose every column is text (or NULL) and returns its rows.
    pub async fn fetch_text(&self, sql: &str, binds: &[Bind]) -> Result<Vec<Vec<Option<String>>>, FrontDbError> {
        Ok(match &self.pool {
            Pool::Postgres(pool) => pg_text(&bound!(sql, binds).fetch_all(pool).await?)?,
            Pool::MySql(pool) => mysql_text(&bound!(sql, binds).fetch_all(pool).await?)?,
        })
    }

    /// As [`fetch_text`](Self::fetch_text), in a read-only transaction: what a source reads
    /// (a table, or an operator's query) can change nothing, whatever the query calls. The
    /// transaction is rolled back, also when the read is given up half-way. The database
    /// cancels the query once it ran for `within` ([`FrontDbError::TimedOut`]): giving up
    /// here alone would leave it running there, holding its locks and a connection.
    pub async fn fetch_text_read_only(
        &self,
        sql: &str,
        binds: &[Bind],
        within: std::time::Duration,
    ) -> Result<Vec<Vec<Option<String>>>, FrontDbError> {
        use sqlx::Connection;
        let ms = within.as_millis().max(1);
        Ok(match &self.pool {
            Pool::Postgres(pool) => {
                let mut connection = pool.acquire().await?;
                let mut tx = connection.begin().await?;
                (&mut *tx).execute("SET TRANSACTION READ ONLY").await?;
                (&mut *tx).execute(format!("SET LOCAL statement_timeout = {ms}").as_str()).await?;
                let rows = bound!(sql, binds).fetch_all(&mut *tx).await?;
                tx.rollback().await?;
                pg_text(&rows)?
            }
            Pool::MySql(pool) => {
                // MySQL sets a transaction's access mode before it starts.
                let mut connection = pool.acquire().await?;
                match self.statement_bound.get() {
                    Some(bound) => {
                        (&mut *connection).execute(bound.statement(ms).as_str()).await?;
                    }
                    // The first read asks which server this is by what it takes.
                    None => {
                        let bound = match (&mut *connection).execute(MySqlBound::MariaDb.statement(ms).as_str()).await {
                            Ok(_) => MySqlBound::MariaDb,
                            Err(_) => {
                                (&mut *connection).execute(MySqlBound::MySql.statement(ms).as_str()).await?;
                                MySqlBound::MySql
                            }
                        };
                        let _ = self.statement_bound.set(bound);
                    }
                }
                (&mut *connection).execute("SET TRANSACTION READ ONLY").await?;
                let mut tx = connection.begin().await?;
                let rows = bound!(sql, binds).fetch_all(&mut *tx).await?;
                tx.rollback().await?;
                mysql_text(&rows)?
            }
        })
    }

    /// Runs `statements` in one transaction: all of them or none.
    pub async fn execute_all(&self, statements: &[(String, Vec<Bind>)]) -> Result<(), FrontDbError> {
        match &self.pool {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for (sql, binds) in statements {
                    bound!(sql, binds).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Pool::MySql(pool) => {
                let mut tx = pool.begin().await?;
                for (sql, binds) in statements {
                    bound!(sql, binds).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The PostgreSQL pool, for what only PostgreSQL has (`COPY`, in the benchmark).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::MySql(_) => None,
        }
    }
}

/// PostgreSQL rows whose every column is text (or NULL).
fn pg_text(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
    rows.iter().map(|row| (0..row.len()).map(|i| row.try_get::<Option<String>, _>(i)).collect()).collect()
}

/// MySQL rows whose every column is text (or NULL): MySQL answers a CAST(... AS CHAR) as
/// text, or as bytes with a binary collation; both are read.
fn mysql_text(rows: &[sqlx::mysql::MySqlRow]) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i).or_else(|_| {
                        row.try_get::<Option<Vec<u8>>, _>(i)
                            .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_are_quoted_and_urls_described_without_passwords() {
        assert!(check_identifier("contract_filing_out").is_ok());
        assert!(check_identifier("qianzhi.contract_filing").is_ok());
        for bad in ["", "a b", "a;drop table x", "a\"b", "a.b.c", "1abc", &"x".repeat(64)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
        assert_eq!(Dialect::Postgres.quote("select"), "\"select\"");
        assert_eq!(Dialect::MySql.quote("select"), "`select`");
        assert_eq!(describe("postgres://govex:s3cret@db:5432/q"), "postgres://govex@db:5432/q");
        assert_eq!(describe("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
        assert_eq!(describe("postgres://db/q?user=u&password=s3cret"), "postgres://db/q");
        assert!(Dialect::of("sqlite://x").is_err());
        assert_eq!(Dialect::of("mariadb://x").unwrap(), Dialect::MySql);
    }
}
