//! Front-end databases (前置库) against the real PostgreSQL and MariaDB servers on loopback
//! (`.ci/run` starts or installs them): a housing contract filing inserted into a PostgreSQL
//! table reaches the shared view; tax's deed-tax payments come from a MariaDB table; refused
//! rows land in the reject table with their violations and never their values; a transaction
//! that commits after a later one loses no row behind the commit-delay guard.

use std::{collections::BTreeMap, time::Duration};

use govex::config::NodeConfig;
use govex_adapters::{
    frontdb::{Mode, SourceConfig},
    samples::{citizen_id, property_unit_number, sample},
};
use govex_bus::frontdb::{Bind, FrontDb};
use serde_json::Value;

use crate::support::{self, token};

/// The PostgreSQL database the machine runs (trust authentication).
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The MariaDB database the machine runs (root, no password).
pub const MARIADB: &str = "mysql://root@127.0.0.1:3306/test";

/// A table name no other test (or earlier run) uses.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap())
}

pub async fn execute(db: &FrontDb, sql: &str) {
    db.execute_all(&[(sql.to_owned(), Vec::new())]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The contract-filing columns of a front-end table, as a housing DBA would make them.
pub const FILING_COLUMNS: &[(&str, &str)] = &[
    ("filing_number", "filing_no"),
    ("contract_number", "contract_no"),
    ("project_name", "project_name"),
    ("building", "building"),
    ("unit", "unit_no"),
    ("room", "room"),
    ("property_unit_number", "unit_number"),
    ("buyers[0].identifier_type", "buyer_id_type"),
    ("buyers[0].identifier_number", "buyer_id_number"),
    ("buyers[0].name", "buyer_name"),
    ("seller_credit_code", "seller_credit_code"),
    ("total_price", "total_price"),
    ("area_m2", "area_m2"),
    ("filed_at", "filed_at"),
    ("status", "status"),
    ("division", "division"),
];

/// Makes a PostgreSQL contract-filing table and its reject table.
pub async fn filing_tables(db: &FrontDb, table: &str, rejects: &str) {
    execute(
        db,
        &format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
             filing_no TEXT NOT NULL, contract_no TEXT, project_name TEXT, building TEXT, unit_no TEXT, room TEXT, \
             unit_number TEXT, buyer_id_type TEXT, buyer_id_number TEXT, buyer_name TEXT, seller_credit_code TEXT, \
             total_price NUMERIC(14,2), area_m2 NUMERIC(10,2), filed_at TIMESTAMPTZ, status TEXT, division TEXT)"
        ),
    )
    .await;
    execute(
        db,
        &format!(
            "CREATE TABLE {rejects} (source TEXT NOT NULL, row_key TEXT NOT NULL, version TEXT NOT NULL, \
             violations TEXT NOT NULL, rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (source, row_key, version))"
        ),
    )
    .await;
}

/// The INSERT of filing `n` (its buyer's identity number replaced by `buyer_id` if given).
pub fn insert_filing(table: &str, n: u32, buyer_id: Option<&str>) -> (String, Vec<Bind>) {
    let record = sample("housing", "contract-filing", n).unwrap();
    let mut values = Vec::new();
    for (path, _) in FILING_COLUMNS {
        let value = match *path {
            "buyers[0].identifier_type" => record["buyers"][0]["identifier_type"].clone(),
            "buyers[0].identifier_number" => {
                buyer_id.map_or(record["buyers"][0]["identifier_number"].clone(), Value::from)
            }
            "buyers[0].name" => record["buyers"][0]["name"].clone(),
            other => record[other].clone(),
        };
        values.push(Bind::Text(value.as_str().map(str::to_owned)));
    }
    let columns: Vec<&str> = FILING_COLUMNS.iter().map(|(_, c)| *c).collect();
    let placeholders: Vec<String> = (1..=columns.len())
        .map(|i| match columns[i - 1] {
            "total_price" | "area_m2" => format!("CAST(${i} AS NUMERIC)"),
            "filed_at" => format!("CAST(${i} AS TIMESTAMPTZ)"),
            _ => format!("${i}"),
        })
        .collect();
    (format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders.join(", ")), values)
}

/// A source of contract filings from `table`.
pub fn filing_source(name: &str, url: &str, table: &str, rejects: Option<&str>) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        department: "housing".into(),
        record: "contract-filing".into(),
        url: url.into(),
        table: table.into(),
        query: None,
        key: vec!["id".into()],
        mode: Mode::TimestampIncrementing,
        incrementing_column: Some("id".into()),
        timestamp_column: Some("updated_at".into()),
        columns: FILING_COLUMNS.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect::<BTreeMap<_, _>>(),
        poll_interval_ms: 100,
        batch_size: 500,
        commit_lag_ms: 300,
        reject_table: rejects.map(str::to_owned),
        connections: 2,
        query_timeout_ms: 60_000,
    }
}

/// The value of one series of `/metrics`.
pub async fn metric(node: &govex::node::RunningNode, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

async fn node_with(sources: Vec<SourceConfig>) -> (tempfile::TempDir, govex::node::RunningNode) {
    crate::intake::intake_node_with(move |config: &mut NodeConfig| config.frontdb.sources = sources).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_filing_inserted_into_a_postgres_front_end_table_reaches_the_shared_view() {
    let db = FrontDb::connect(POSTGRES, 2, 480).unwrap();
    let (table, rejects) = (fresh("cf"), fresh("cf_rejects"));
    filing_tables(&db, &table, &rejects).await;
    let bad_id = format!("{}X", &citizen_id(3)[..17]);
    db.execute_all(&[
        insert_filing(&table, 1, None),
        insert_filing(&table, 2, None),
        insert_filing(&table, 3, Some(&bad_id)),
    ])
    .await
    .unwrap();
    let (_dir, node) = node_with(vec![filing_source("housing-filings", POSTGRES, &table, Some(&rejects))]).await;
    let base = format!("http://{}", node.api_addr().unwrap());
    let http = reqwest::Client::new();
    for n in [1, 2] {
        let url = format!("{base}/v1/resources/housing.contract-filing/records/{}", property_unit_number(n));
        support::eventually_saw("the filing in the shared view", Duration::from_secs(60), || async {
            let response = http.get(&url).query(&[("purpose", "登记审核")]).bearer_auth(token("land-registry"));
            let response = response.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match status.as_u16() {
                200 => Ok(body),
                other => Err(format!("{other} {body}")),
            }
        })
        .await;
    }
    // A row inserted while the node runs comes too.
    db.execute_all(&[insert_filing(&table, 4, None)]).await.unwrap();
    let published = "govex_frontdb_source_rows_total{source=\"housing-filings\",outcome=\"published\"}";
    support::eventually("the fourth row published", Duration::from_secs(60), || async {
        (metric(&node, published).await == 3.0).then_some(())
    })
    .await;
    let url = format!("{base}/v1/resources/housing.contract-filing/records/{}", property_unit_number(4));
    let record: Value = http
        .get(url)
        .query(&[("purpose", "登记审核")])
        .bearer_auth(token("land-registry"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["record"]["total_price"], "568000.00", "a NUMERIC column as the decimal text: {record}");
    assert_eq!(record["record"]["filing_number"], sample("housing", "contract-filing", 4).unwrap()["filing_number"]);

    // The refused row: counted, and in the reject table with its violation, not its value.
    let refused = "govex_frontdb_source_rows_total{source=\"housing-filings\",outcome=\"refused\"}";
    assert_eq!(metric(&node, refused).await, 1.0);
    let written = db.fetch_text(&format!("SELECT source, row_key, violations FROM {rejects}"), &[]).await.unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    let violations = written[0][2].clone().unwrap();
    assert!(violations.contains("/buyers/0/identifier_number"), "{violations}");
    assert!(!violations.contains(&bad_id), "a refused value is never written: {violations}");
    assert_eq!((written[0][0].as_deref(), written[0][1].as_deref()), (Some("housing-filings"), Some("3")));
    node.shutdown().await.unwrap();
}

/// The deed-tax columns of a MariaDB front-end table, as tax's DBA would make them.
const PAYMENT_COLUMNS: &[(&str, &str)] = &[
    ("voucher_number", "voucher_no"),
    ("taxpayer.identifier_type", "taxpayer_id_type"),
    ("taxpayer.identifier_number", "taxpayer_id_number"),
    ("taxpayer.name", "taxpayer_name"),
    ("property_unit_number", "unit_number"),
    ("taxable_base", "taxable_base"),
    ("tax_rate", "tax_rate"),
    ("tax_amount", "tax_amount"),
    ("paid_at", "paid_at"),
    ("tax_authority", "tax_authority"),
    ("division", "division"),
];

fn insert_payment(table: &str, n: u32) -> (String, Vec<Bind>) {
    let record = sample("tax", "deed-tax-payment", n).unwrap();
    let values = PAYMENT_COLUMNS
        .iter()
        .map(|(path, _)| {
            let value = match path.split_once('.') {
                Some((outer, inner)) => record[outer][inner].clone(),
                None => record[*path].clone(),
            };
            // A DATETIME holds the local time the department's system wrote.
            let text = match *path {
                "paid_at" => value.as_str().map(|t| t.replace("+08:00", "").replace('T', " ")),
                _ => value.as_str().map(str::to_owned),
            };
            Bind::Text(text)
        })
        .collect();
    let columns: Vec<&str> = PAYMENT_COLUMNS.iter().map(|(_, c)| *c).collect();
    let marks = vec!["?"; columns.len()].join(", ");
    (format!("INSERT INTO {table} ({}) VALUES ({marks})", columns.join(", ")), values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deed_tax_payments_come_from_a_mariadb_front_end_table() {
    let db = FrontDb::connect(MARIADB, 2, 480).unwrap();
    let table = fresh("dtp");
    execute(
        &db,
        &format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, voucher_no VARCHAR(40) NOT NULL, \
             taxpayer_id_type VARCHAR(20), taxpayer_id_number VARCHAR(18), taxpayer_name VARCHAR(50), \
             unit_number VARCHAR(28), taxable_base DECIMAL(14,2), tax_rate DECIMAL(6,4), tax_amount DECIMAL(14,2), \
             paid_at DATETIME, tax_authority VARCHAR(18), division VARCHAR(6)) CHARACTER SET utf8mb4"
        ),
    )
    .await;
    let rejects = fresh("dtp_rejects");
    execute(
        &db,
        &format!(
            "CREATE TABLE {rejects} (source VARCHAR(64) NOT NULL, row_key VARCHAR(255) NOT NULL, \
             version VARCHAR(100) NOT NULL, violations TEXT NOT NULL, rejected_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             PRIMARY KEY (source, row_key, version)) CHARACTER SET utf8mb4"
        ),
    )
    .await;
    db.execute_all(&[insert_payment(&table, 11), insert_payment(&table, 12)]).await.unwrap();
    let source = SourceConfig {
        name: "tax-payments".into(),
        department: "tax".into(),
        record: "deed-tax-payment".into(),
        url: MARIADB.into(),
        table: table.clone(),
        query: None,
        key: vec!["id".into()],
        mode: Mode::Incrementing,
        incrementing_column: Some("id".into()),
        timestamp_column: None,
        columns: PAYMENT_COLUMNS.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect(),
        poll_interval_ms: 100,
        batch_size: 1,
        commit_lag_ms: 0,
        reject_table: Some(rejects.clone()),
        connections: 1,
        query_timeout_ms: 60_000,
    };
    let (_dir, node) = node_with(vec![source]).await;
    db.execute_all(&[insert_payment(&table, 13)]).await.unwrap();
    let base = format!("http://{}", node.api_addr().unwrap());
    let http = reqwest::Client::new();
    for n in [11, 12, 13] {
        let url = format!("{base}/v1/dossiers/{}", property_unit_number(n));
        let payment = support::eventually_saw("the payment in the dossier", Duration::from_secs(60), || async {
            let request = http.get(&url).query(&[("purpose", "并联审核")]).bearer_auth(token("tax"));
            let view: Value =
                request.send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
            match view["parts"]["deed_tax_payment"]["record"].clone() {
                Value::Null => {
                    let ready =
                        reqwest::get(format!("http://{}/readyz", node.ops_addr)).await.map_err(|e| e.to_string())?;
                    let metrics =
                        reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.map_err(|e| e.to_string())?;
                    let metrics = metrics.text().await.unwrap_or_default();
                    let frontdb: Vec<&str> = metrics.lines().filter(|l| l.starts_with("govex_frontdb")).collect();
                    let refused = db.fetch_text(&format!("SELECT violations FROM {rejects}"), &[]).await;
                    Err(format!("{view} /readyz: {} {frontdb:?} {refused:?}", ready.text().await.unwrap_or_default()))
                }
                payment => Ok(payment),
            }
        })
        .await;
        assert_eq!(payment["tax_rate"], "0.0150");
        assert_eq!(payment["paid_at"], "2026-11-19T15:00:00+08:00", "a DATETIME in the source's zone");
        assert_eq!(payment["taxpayer_name"], "王小明", "utf8mb4 text as written: {payment}");
    }
    // One row a poll: three polls, each watermark stored after its row was acknowledged.
    let published = "govex_frontdb_source_rows_total{source=\"tax-payments\",outcome=\"published\"}";
    assert_eq!(metric(&node, published).await, 3.0);
    assert_eq!(metric(&node, "govex_frontdb_source_watermark{source=\"tax-payments\"}").await, 3.0);
    assert_eq!(metric(&node, "govex_frontdb_source_up{source=\"tax-payments\"}").await, 1.0);
    node.shutdown().await.unwrap();
}

/// Two transactions: the first inserts a row and commits late; the second inserts a later
/// row and commits at once. Behind the commit-delay guard the source takes neither until both
/// are older than the lag, so the late commit is not passed by; each row is published once.
/// A second source on the same table without the guard shows what it prevents: it loses the
/// late row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_transaction_commits_after_a_later_one_is_not_lost() {
    let db = FrontDb::connect(POSTGRES, 4, 480).unwrap();
    let (table, rejects) = (fresh("cf"), fresh("cf_rejects"));
    filing_tables(&db, &table, &rejects).await;
    let mut source = filing_source("late-commits", POSTGRES, &table, Some(&rejects));
    source.commit_lag_ms = 3_000;
    // The control reads the same rows through a view (one table, one source).
    execute(&db, &format!("CREATE VIEW {table}_v AS SELECT * FROM {table}")).await;
    let mut unguarded = filing_source("unguarded", POSTGRES, &format!("{table}_v"), None);
    unguarded.commit_lag_ms = 0;
    let (_dir, node) = node_with(vec![source, unguarded]).await;
    // The first transaction takes its row's id and timestamp now, and commits in 1.5 s.
    let pool = db.postgres().unwrap().clone();
    let (first, second) = (insert_filing(&table, 21, None), insert_filing(&table, 22, None));
    let late = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let mut query = sqlx::query(&first.0);
        for bind in &first.1 {
            let Bind::Text(text) = bind else { unreachable!() };
            query = query.bind(text.clone());
        }
        query.execute(&mut *tx).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second commits at once: a later timestamp and id, visible first.
    db.execute_all(&[second]).await.unwrap();
    late.await.unwrap();
    let published = "govex_frontdb_source_rows_total{source=\"late-commits\",outcome=\"published\"}";
    support::eventually("both rows published", Duration::from_secs(60), || async {
        (metric(&node, published).await == 2.0).then_some(())
    })
    .await;
    // And no more: each once.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(metric(&node, published).await, 2.0);
    let lost = "govex_frontdb_source_rows_total{source=\"unguarded\",outcome=\"published\"}";
    assert_eq!(metric(&node, lost).await, 1.0, "without the guard the late commit is passed by");
    let base = format!("http://{}", node.api_addr().unwrap());
    for n in [21, 22] {
        support::eventually_saw("the filing in the shared view", Duration::from_secs(30), || async {
            match reqwest::Client::new()
                .get(format!("{base}/v1/resources/housing.contract-filing/records/{}", property_unit_number(n)))
                .query(&[("purpose", "登记审核")])
                .bearer_auth(token("land-registry"))
                .send()
                .await
            {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
    node.shutdown().await.unwrap();
}

/// The licence columns of a platform's front-end table.
const LICENCE_COLUMNS: &[(&str, &str)] = &[
    ("licence_id", "licence_id"),
    ("type_code", "type_code"),
    ("type_name", "type_name"),
    ("licence_number", "licence_number"),
    ("issuer_code", "issuer_code"),
    ("issuer_name", "issuer_name"),
    ("holder.identifier_type", "holder_id_type"),
    ("holder.identifier_number", "holder_id_number"),
    ("holder.name", "holder_name"),
    ("issued_at", "issued_at"),
    ("valid_from", "valid_from"),
    ("status", "status"),
    ("surface.坐落", "location"),
    ("surface.面积", "area"),
    ("content_hash", "content_hash"),
    ("division", "division"),
];

/// Inserts licences `from..to` (as `samples` makes them) into `table`, in one transaction.
async fn insert_licences(db: &FrontDb, table: &str, from: u32, to: u32) {
    let columns: Vec<&str> = LICENCE_COLUMNS.iter().map(|(_, c)| *c).collect();
    let marks: Vec<String> = (1..=columns.len())
        .map(|i| match columns[i - 1] {
            "issued_at" => format!("CAST(${i} AS TIMESTAMPTZ)"),
            "valid_from" => format!("CAST(${i} AS DATE)"),
            _ => format!("${i}"),
        })
        .collect();
    let sql = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), marks.join(", "));
    let statements: Vec<(String, Vec<Bind>)> = (from..to)
        .map(|n| {
            let record = sample("platform", "licence", n).unwrap();
            let binds = LICENCE_COLUMNS
                .iter()
                .map(|(path, _)| {
                    let value = match path.split_once('.') {
                        Some((outer, inner)) => record[outer][inner].clone(),
                        None => record[*path].clone(),
                    };
                    Bind::Text(value.as_str().map(str::to_owned))
                })
                .collect();
            (sql.clone(), binds)
        })
        .collect();
    db.execute_all(&statements).await.unwrap();
}

/// The node is killed (SIGKILL) while a source is publishing a table of licences; started
/// again, it reads on from its stored watermark, republishing what the kill left
/// unacknowledged under the same event ids: every row is in the e-licence store exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_source_run_leaves_every_row_in_the_store_exactly_once() {
    use crate::{
        child::{child_config, ChildBroker, ChildNode},
        faults::{event_ids, records_on},
    };
    const ROWS: u32 = 6_000;
    let db = FrontDb::connect(POSTGRES, 2, 480).unwrap();
    let table = fresh("lic");
    execute(
        &db,
        &format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, licence_id TEXT NOT NULL, type_code TEXT, type_name TEXT, \
             licence_number TEXT, issuer_code TEXT, issuer_name TEXT, holder_id_type TEXT, holder_id_number TEXT, \
             holder_name TEXT, issued_at TIMESTAMPTZ, valid_from DATE, status TEXT, location TEXT, area TEXT, \
             content_hash TEXT, division TEXT)"
        ),
    )
    .await;
    insert_licences(&db, &table, 0, ROWS).await;
    let rejects = fresh("lic_rejects");
    execute(
        &db,
        &format!(
            "CREATE TABLE {rejects} (source TEXT NOT NULL, row_key TEXT NOT NULL, version TEXT NOT NULL, \
             violations TEXT NOT NULL, rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (source, row_key, version))"
        ),
    )
    .await;
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    config.frontdb.sources = vec![SourceConfig {
        name: "platform-licences".into(),
        department: "platform".into(),
        record: "licence".into(),
        url: POSTGRES.into(),
        table: table.clone(),
        query: None,
        key: vec!["id".into()],
        mode: Mode::Incrementing,
        incrementing_column: Some("id".into()),
        timestamp_column: None,
        columns: LICENCE_COLUMNS.iter().map(|(p, c)| ((*p).to_owned(), (*c).to_owned())).collect(),
        poll_interval_ms: 50,
        // Small batches: many watermarks, so that the kill falls between two of them.
        batch_size: 20,
        commit_lag_ms: 0,
        reject_table: Some(rejects.clone()),
        connections: 2,
        query_timeout_ms: 60_000,
    }];
    let mut node = ChildNode::start(dir.path(), &config).await;
    let topic = govex_schemas::records::topics::LICENCE;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while records_on(&broker.bootstrap, topic) < 300 {
        assert!(std::time::Instant::now() < deadline, "the source published nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.process.kill9();
    let before = records_on(&broker.bootstrap, topic);
    assert!(before < i64::from(ROWS), "the kill came too late: {before} published");
    eprintln!("killed with {before} of {ROWS} rows on the topic");
    let refused = db.fetch_text(&format!("SELECT row_key, violations FROM {rejects} LIMIT 3"), &[]).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let node = ChildNode::start(dir.path(), &config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while node.metric("govex_elicense_store_licences").await < f64::from(ROWS) {
        if std::time::Instant::now() > deadline {
            let text = reqwest::get(format!("{}/metrics", node.ops)).await.unwrap().text().await.unwrap();
            let lines: Vec<&str> =
                text.lines().filter(|l| l.starts_with("govex_frontdb") || l.starts_with("govex_elicense")).collect();
            panic!("the store did not fill: {lines:#?}\n{}", node.process.stderr_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_topic = event_ids(&broker.bootstrap, topic);
    let distinct: std::collections::HashSet<&String> = on_topic.iter().collect();
    assert_eq!(distinct.len(), ROWS as usize, "one event id per row, however often it was sent");
    eprintln!("{} records on the topic for {ROWS} rows", on_topic.len());
    let mut node = node;
    node.process.terminate(Duration::from_secs(60)).await;
    let store = govex_sinks::elicense::LicenceStore::open(&config.data_dir.join("elicense")).unwrap();
    assert_eq!(store.len(), ROWS as usize, "every row in the store exactly once");
}

/// `govex config check` asks each front-end database: its table fits the mapping, or the
/// error names the source, the database (never its password) and the missing column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_connects_to_each_front_end_database_and_checks_the_columns() {
    let db = FrontDb::connect(POSTGRES, 1, 480).unwrap();
    let (table, rejects) = (fresh("cf"), fresh("cf_rejects"));
    filing_tables(&db, &table, &rejects).await;
    let dir = tempfile::tempdir().unwrap();
    let check = |source: SourceConfig| {
        let mut config = crate::support::test_node_config(dir.path());
        config.frontdb.sources = vec![source];
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
            .args(["config", "check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, printed) = check(filing_source("housing-filings", POSTGRES, &table, Some(&rejects)));
    assert!(ok && printed.contains(&format!("table {table} fits")), "{printed}");
    let mut wrong = filing_source("housing-filings", POSTGRES, &table, Some(&rejects));
    wrong.columns.insert("room".into(), "room_no".into());
    let (ok, printed) = check(wrong);
    assert!(!ok && printed.contains("room_no") && printed.contains("housing-filings"), "{printed}");
    // A down-table is asked too: its table must have the columns govex keeps.
    let down_table = govex_sinks::down_table::DownTableConfig {
        name: "land-registry-filings".into(),
        department: "land-registry".into(),
        resource: "housing.contract-filing".into(),
        purpose: "不动产登记".into(),
        url: POSTGRES.into(),
        table: table.clone(),
        columns: [("filing_number".to_owned(), "filing_no".to_owned())].into(),
        connections: 1,
    };
    let mut config = crate::support::test_node_config(dir.path());
    config.frontdb.sources = vec![filing_source("housing-filings", POSTGRES, &table, Some(&rejects))];
    config.frontdb.tables = vec![down_table];
    let path = dir.path().join("with-table.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["config", "check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && printed.contains("natural_key"), "a source table is no down-table: {printed}");
    let down = filing_source("housing-filings", "postgres://govex:s3cret@127.0.0.1:1/test", &table, None);
    let (ok, printed) = check(down);
    assert!(!ok && printed.contains("postgres://govex@127.0.0.1:1/test"), "{printed}");
    assert!(!printed.contains("s3cret"), "a password is never printed: {printed}");
}

/// Down-tables: the land registry's table in PostgreSQL receives the contract filings the
/// catalogue shares with it, names and all; provident fund's (a subscriber, not entitled to
/// personal data) gets them with the buyers' names masked as the API masks them. An older
/// version arriving late changes nothing, nor does the same event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_land_registry_down_table_receives_what_the_catalogue_shares_with_it_and_no_more() {
    use govex_sinks::down_table::DownTableConfig;
    let db = FrontDb::connect(POSTGRES, 2, 480).unwrap();
    let (registry_table, fund_table) = (fresh("recv_lr"), fresh("recv_pf"));
    for table in [&registry_table, &fund_table] {
        execute(
            &db,
            &format!(
                "CREATE TABLE {table} (natural_key TEXT PRIMARY KEY, event_id TEXT NOT NULL, version BIGINT NOT NULL, \
                 received_at TIMESTAMPTZ NOT NULL, filing_no VARCHAR(40), buyer_name TEXT, buyer_id_number TEXT, \
                 total_price NUMERIC(14, 2))"
            ),
        )
        .await;
    }
    let columns: BTreeMap<String, String> = [
        ("filing_number", "filing_no"),
        ("buyers[0].name", "buyer_name"),
        ("buyers[0].identifier_number", "buyer_id_number"),
        ("total_price", "total_price"),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_owned(), c.to_owned()))
    .collect();
    let table = |name: &str, department: &str, table: &str| DownTableConfig {
        name: name.into(),
        department: department.into(),
        resource: "housing.contract-filing".into(),
        purpose: "不动产登记".into(),
        url: POSTGRES.into(),
        table: table.into(),
        columns: columns.clone(),
        connections: 2,
    };
    let tables = vec![
        table("land-registry-filings", "land-registry", &registry_table),
        table("fund-filings", "provident-fund", &fund_table),
    ];
    let (_dir, node) =
        crate::intake::intake_node_with(move |config: &mut NodeConfig| config.frontdb.tables = tables).await;
    let intake = node.intake().unwrap().clone();
    let housing = govex_schemas::Department::parse("housing").unwrap();
    let origin = govex_schemas::Division::parse("610921").unwrap();
    let (older, newer) = (
        govex_bus::envelope::Envelope::new(housing, origin, "contract-filing").event_id,
        govex_bus::envelope::Envelope::new(housing, origin, "contract-filing").event_id,
    );
    let filing = |price: &str, event_id| {
        let mut record = sample("housing", "contract-filing", 31).unwrap();
        record["total_price"] = Value::from(price);
        let context = govex_adapters::common::CheckContext::now();
        intake.check_parsed(housing, "contract-filing", record, &context, Some(event_id)).unwrap().outgoing
    };
    // The newer first, then the older arriving late, then the newer again.
    for outgoing in [filing("600000.00", newer), filing("500000.00", older), filing("600000.00", newer)] {
        node.bus.producer().publish(outgoing).await.unwrap();
    }
    let written = "govex_frontdb_table_rows_total{table=\"land-registry-filings\",outcome=\"written\"}";
    support::eventually("the three records written", Duration::from_secs(60), || async {
        (metric(&node, written).await >= 3.0).then_some(())
    })
    .await;
    let unit = property_unit_number(31);
    let row = |table: String| {
        let db = db.clone();
        async move {
            db.fetch_text(
                &format!(
                    "SELECT natural_key, event_id, CAST(version AS TEXT), buyer_name, buyer_id_number, \
                     CAST(total_price AS TEXT) FROM {table}"
                ),
                &[],
            )
            .await
            .unwrap()
        }
    };
    let rows = row(registry_table.clone()).await;
    assert_eq!(rows.len(), 1, "one row per natural key: {rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some(unit.as_str()), "the record's natural key (its property unit)");
    assert_eq!(rows[0][1].as_deref(), Some(newer.to_string().as_str()), "the newer version stays");
    assert_eq!(rows[0][5].as_deref(), Some("600000.00"), "an older version arriving late changes nothing");
    assert_eq!(rows[0][3].as_deref(), Some("王小明"), "land registry may read the buyers' names");
    assert_eq!(rows[0][4].as_deref(), Some(citizen_id(31).as_str()));
    // Provident fund reads the filings, the buyers masked as the API masks them.
    support::eventually("the fund's table written", Duration::from_secs(60), || async {
        (!row(fund_table.clone()).await.is_empty()).then_some(())
    })
    .await;
    let fund = row(fund_table.clone()).await;
    let (name, id) = (fund[0][3].clone().unwrap(), fund[0][4].clone().unwrap());
    assert!(name != "王小明" && id != citizen_id(31) && !id.contains(&citizen_id(31)[6..14]), "masked: {name} {id}");
    assert_eq!(fund[0][5].as_deref(), Some("600000.00"), "what is not personal is as sent");
    node.shutdown().await.unwrap();
}

/// The DDL README points a department's DBA to runs on the real servers, and the example
/// `[frontdb]` section loads and passes the checks made before any database is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_ddl_runs_on_both_servers_and_the_example_config_loads() {
    use sqlx::Connection as _;
    let schema = fresh("example");
    let mut pg = sqlx::PgConnection::connect(POSTGRES).await.unwrap();
    let script = format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; {}",
        include_str!("../../examples/frontdb/postgres.sql")
    );
    sqlx::raw_sql(&script).execute(&mut pg).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
        .bind(&schema)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(tables, 3);
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut pg).await.unwrap();

    let mut my = sqlx::MySqlConnection::connect(MARIADB).await.unwrap();
    let script =
        format!("CREATE DATABASE {schema}; USE {schema}; {}", include_str!("../../examples/frontdb/mysql.sql"));
    sqlx::raw_sql(&script).execute(&mut my).await.unwrap();
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = ?")
        .bind(&schema)
        .fetch_one(&mut my)
        .await
        .unwrap();
    assert_eq!(tables, 3);
    sqlx::raw_sql(&format!("DROP DATABASE {schema}")).execute(&mut my).await.unwrap();

    let env = ["HOUSING_DB_PASSWORD", "TAX_DB_PASSWORD", "LAND_DB_PASSWORD"].map(|n| (n.to_owned(), "pw".to_owned()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/frontdb/node.toml");
    let text = format!("division = \"610921\"\n{}", std::fs::read_to_string(&path).unwrap());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let config = NodeConfig::load(Some(file.path()), env).unwrap();
    assert_eq!((config.frontdb.sources.len(), config.frontdb.tables.len()), (2, 1));
    for source in &config.frontdb.sources {
        source.validate().unwrap();
    }
    config.frontdb.tables[0].validate().unwrap();
}

/// `timestamp` mode: 30 rows of one timestamp, read 10 at a time, all arrive (a batch may end
/// inside a timestamp: rows of one timestamp are read in key order), and a row whose timestamp
/// is NULL is not read and does not send the watermark back to the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_may_end_inside_one_timestamp_and_a_null_timestamp_moves_nothing() {
    let db = FrontDb::connect(POSTGRES, 2, 480).unwrap();
    let (table, rejects) = (fresh("cf"), fresh("cf_rejects"));
    filing_tables(&db, &table, &rejects).await;
    let mut rows: Vec<(String, Vec<Bind>)> = (41..71).map(|n| insert_filing(&table, n, None)).collect();
    rows.push((format!("UPDATE {table} SET updated_at = TIMESTAMPTZ '2026-11-30 08:00:00+08'"), Vec::new()));
    db.execute_all(&rows).await.unwrap();
    // A row without a timestamp (a column the DBA left nullable).
    execute(&db, &format!("ALTER TABLE {table} ALTER COLUMN updated_at DROP NOT NULL")).await;
    db.execute_all(&[insert_filing(&table, 71, None)]).await.unwrap();
    execute(&db, &format!("UPDATE {table} SET updated_at = NULL WHERE filing_no LIKE '%00000071'")).await;
    let mut source = filing_source("same-time", POSTGRES, &table, Some(&rejects));
    source.mode = Mode::Timestamp;
    source.incrementing_column = None;
    source.batch_size = 10;
    let (_dir, node) = node_with(vec![source]).await;
    let published = "govex_frontdb_source_rows_total{source=\"same-time\",outcome=\"published\"}";
    support::eventually("all 30 rows of one timestamp", Duration::from_secs(60), || async {
        (metric(&node, published).await == 30.0).then_some(())
    })
    .await;
    // Polls go on; nothing is read again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(metric(&node, published).await, 30.0);
    let read = "govex_frontdb_source_rows_total{source=\"same-time\",outcome=\"read\"}";
    assert_eq!(metric(&node, read).await, 30.0, "the NULL-timestamp row is not read, and nothing twice");
    node.shutdown().await.unwrap();
}

/// `incrementing` mode with the commit-delay guard on a timestamp column: a transaction takes
/// its time at its start (PostgreSQL's `now()`) and its id later, so a higher id can be older
/// than a lower one. The guard stops the batch at the first recent row in id order instead of
/// leaving that row out, so the lower id is not passed by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_incrementing_mode_a_higher_id_that_is_older_does_not_pass_a_lower_one_by() {
    let db = FrontDb::connect(POSTGRES, 4, 480).unwrap();
    let (table, rejects) = (fresh("cf"), fresh("cf_rejects"));
    filing_tables(&db, &table, &rejects).await;
    let mut source = filing_source("incrementing-guard", POSTGRES, &table, Some(&rejects));
    source.mode = Mode::Incrementing;
    source.commit_lag_ms = 1_000;
    let (_dir, node) = node_with(vec![source]).await;
    let published = "govex_frontdb_source_rows_total{source=\"incrementing-guard\",outcome=\"published\"}";
    for round in 0..3u32 {
        // A: its time now, its id after B's.
        let pool = db.postgres().unwrap().clone();
        let (a, b) = (insert_filing(&table, 80 + 2 * round, None), insert_filing(&table, 81 + 2 * round, None));
        let late = tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT now()").execute(&mut *tx).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut query = sqlx::query(&a.0);
            for bind in &a.1 {
                let Bind::Text(text) = bind else { unreachable!() };
                query = query.bind(text.clone());
            }
            query.execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        db.execute_all(&[b]).await.unwrap();
        late.await.unwrap();
        let expected = f64::from(2 * (round + 1));
        support::eventually("both rows of the round published", Duration::from_secs(30), || async {
            (metric(&node, published).await == expected).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(metric(&node, published).await, 6.0, "each row once, none passed by");
    node.shutdown().await.unwrap();
}

/// A land-registry down-table of licences in MariaDB, its status column `status_width`
/// characters wide: the database, the table's name and its configuration.
async fn licence_down_table(
    name: &str,
    status_width: u32,
) -> (FrontDb, String, govex_sinks::down_table::DownTableConfig) {
    let db = FrontDb::connect(MARIADB, 2, 480).unwrap();
    let table = fresh(&format!("licence_{}", name.replace('-', "_")));
    execute(
        &db,
        &format!(
            "CREATE TABLE {table} (natural_key VARCHAR(120) PRIMARY KEY, event_id VARCHAR(36) NOT NULL, \
             version BIGINT NOT NULL, received_at DATETIME(6) NOT NULL, licence_no VARCHAR(100), \
             status VARCHAR({status_width}), holder_name VARCHAR(200)) CHARACTER SET utf8mb4"
        ),
    )
    .await;
    let down = govex_sinks::down_table::DownTableConfig {
        name: name.into(),
        department: "land-registry".into(),
        resource: "elicense.licence".into(),
        purpose: "不动产登记".into(),
        url: MARIADB.into(),
        table: table.clone(),
        columns: [("licence_number", "licence_no"), ("status", "status"), ("holder_name", "holder_name")]
            .into_iter()
            .map(|(p, c)| (p.to_owned(), c.to_owned()))
            .collect(),
        connections: 2,
    };
    (db, table, down)
}

/// A county's down-table in MariaDB: a licence and then its revocation, arriving on the
/// county's licence topic as the bridge brings them down from the city, end as one row,
/// revoked (MySQL's upsert path: the newer version replaces every column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_revoked_upstream_reaches_a_county_down_table_in_mariadb() {
    use govex_sinks::elicense::Status;
    let (db, table, down) = licence_down_table("county-licences", 20).await;
    let (_dir, node) =
        crate::intake::intake_node_with(move |config: &mut NodeConfig| config.frontdb.tables = vec![down]).await;
    let holder = "11010519491231002X";
    let records = [
        crate::elicense::licence("SN7001", Status::Valid, holder),
        crate::elicense::licence("SN7001", Status::Revoked, holder),
    ];
    crate::elicense::publish_from(&node.bus, &node.registry, &records, "610900").await;
    let id = crate::elicense::licence_id("SN7001", 1);
    let rows = support::eventually_saw("the revocation in the county's table", Duration::from_secs(60), || async {
        let rows = db
            .fetch_text(&format!("SELECT natural_key, status, holder_name, CAST(version AS CHAR) FROM {table}"), &[])
            .await
            .map_err(|e| e.to_string())?;
        match rows.first().and_then(|r| r[1].as_deref()) {
            Some("REVOKED") => Ok(rows),
            _ => Err(format!("{rows:?}")),
        }
    })
    .await;
    assert_eq!(rows.len(), 1, "one row per licence: {rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some(id.as_str()));
    assert_eq!(rows[0][2].as_deref(), Some("王小明"), "land registry may read the holder");
    node.shutdown().await.unwrap();
}

/// A down-table whose database is down holds back only itself: started again with records
/// waiting for it, the node answers `/readyz` ready, with the down-table's group degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_table_whose_database_is_down_leaves_the_node_ready_and_says_so() {
    use govex_sinks::down_table::DownTableConfig;
    let broker = crate::child::ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let down = DownTableConfig {
        name: "unreachable".into(),
        department: "land-registry".into(),
        resource: "housing.contract-filing".into(),
        purpose: "不动产登记".into(),
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        table: "nowhere".into(),
        columns: [("filing_number".to_owned(), "filing_no".to_owned())].into(),
        connections: 1,
    };
    let configure = |config: &mut NodeConfig| {
        config.bus.brokers = Some(broker.bootstrap.clone());
        config.frontdb.tables = vec![down.clone()];
    };
    let mut config = crate::intake::intake_config(dir.path());
    configure(&mut config);
    let node = govex::node::start(config.clone()).await.unwrap();
    let base = format!("http://{}", node.api_addr().unwrap());
    let sent = support::post(
        &format!("{base}/v1/housing/contract-filing"),
        "housing",
        &sample("housing", "contract-filing", 91).unwrap(),
    )
    .await;
    assert_eq!(sent.status(), 202);
    node.shutdown().await.unwrap();

    let node = govex::node::start(config).await.unwrap();
    let ready = support::eventually_saw("ready, the down-table degraded", Duration::from_secs(60), || async {
        let response = reqwest::get(format!("http://{}/readyz", node.ops_addr)).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match (status.as_u16(), text.contains("degraded: consumer group") && text.contains("down-table-unreachable")) {
            (200, true) => Ok(text),
            other => Err(format!("{other:?} {text}")),
        }
    })
    .await;
    assert!(!ready.contains("postgres@"), "no database URL in /readyz: {ready}");
    node.shutdown().await.unwrap();
}

/// A value the down-table's database refuses (a revocation's status too long for a strict
/// MariaDB column) goes to the dead-letter topic as that table's, with the SQLSTATE and the
/// column and never the value; the table is not held back (a later licence is written); once
/// the DBA widens the column, a replay writes it, to that table alone, and a second replay
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_database_refuses_is_dead_lettered_and_replayed_once_the_column_is_fixed() {
    use govex_sinks::elicense::Status;
    let (db, table, down) = licence_down_table("narrow", 5).await;
    let (_dir, node) =
        crate::intake::intake_node_with(move |config: &mut NodeConfig| config.frontdb.tables = vec![down]).await;
    let holder = "11010519491231002X";
    let revoked = [
        crate::elicense::licence("SN7101", Status::Valid, holder),
        crate::elicense::licence("SN7101", Status::Revoked, holder),
    ];
    crate::elicense::publish_from(&node.bus, &node.registry, &revoked, "610900").await;
    let later = [crate::elicense::licence("SN7102", Status::Valid, holder)];
    crate::elicense::publish_from(&node.bus, &node.registry, &later, "610900").await;
    let statuses = || async {
        let rows = db
            .fetch_text(&format!("SELECT licence_no, status FROM {table} ORDER BY licence_no"), &[])
            .await
            .map_err(|e| e.to_string())?;
        // The licence number's serial (`…不动产权第SN7101号`) and the status.
        let serial = |n: &str| n.find("SN").map(|i| n[i..i + 6].to_owned()).unwrap_or_else(|| n.to_owned());
        Ok::<_, String>(
            rows.into_iter()
                .map(|r| {
                    format!("{}={}", serial(r[0].as_deref().unwrap_or_default()), r[1].clone().unwrap_or_default())
                })
                .collect::<Vec<_>>(),
        )
    };
    support::eventually_saw("the later licence written past the refused one", Duration::from_secs(60), || async {
        let rows = statuses().await?;
        (rows.len() == 2
            && metric(&node, "govex_frontdb_table_rows_total{table=\"narrow\",outcome=\"refused\"}").await == 1.0)
            .then_some(())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    assert_eq!(statuses().await.unwrap(), ["SN7101=VALID", "SN7102=VALID"]);

    // The steward sees it: the table's component, the SQLSTATE, the column, no value.
    let api = format!("http://{}", node.api_addr().unwrap());
    let http = reqwest::Client::new();
    let listed =
        support::json(http.get(format!("{api}/v1/dead-letters?state=open")).bearer_auth(token("steward"))).await;
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed}");
    let letter = &letters[0];
    assert_eq!(letter["component"], "down-table-narrow", "{letter}");
    let message = letter["message"].as_str().unwrap();
    assert!(message.contains("SQLSTATE 22001") && message.contains("column status"), "{message}");
    assert!(!message.contains("REVOKED") && !message.contains(holder), "no value in the reason: {message}");

    // Widened, replayed: written once; replayed again: the same row, nothing new.
    execute(&db, &format!("ALTER TABLE {table} MODIFY status VARCHAR(20)")).await;
    let replay = |again: bool| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let response = http
                .post(format!("{api}/v1/dead-letters/replay"))
                .bearer_auth(token("steward"))
                .json(&serde_json::json!({"all": true, "again": again}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let answer = replay(false).await;
    assert_eq!(answer["replayed"].as_array().map(Vec::len), Some(1), "{answer}");
    support::eventually_saw("the replay written", Duration::from_secs(60), || async {
        let rows = statuses().await?;
        (rows == ["SN7101=REVOKED", "SN7102=VALID"]).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;
    let written = metric(&node, "govex_frontdb_table_rows_total{table=\"narrow\",outcome=\"written\"}").await;
    assert_eq!(written, 3.0, "VALID, the later licence, the replayed revocation");
    replay(true).await;
    support::eventually_saw("the second replay written over itself", Duration::from_secs(60), || async {
        let now = metric(&node, "govex_frontdb_table_rows_total{table=\"narrow\",outcome=\"written\"}").await;
        (now == 4.0).then_some(()).ok_or(format!("{now}"))
    })
    .await;
    let version = db
        .fetch_text(
            &format!("SELECT CAST(version AS CHAR), event_id FROM {table} WHERE licence_no LIKE '%SN7101%'"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(version.len(), 1, "one row per licence");
    assert_eq!(statuses().await.unwrap(), ["SN7101=REVOKED", "SN7102=VALID"]);
    assert_eq!(metric(&node, "govex_frontdb_table_rows_total{table=\"narrow\",outcome=\"refused\"}").await, 1.0);
    node.shutdown().await.unwrap();
}

/// A source may read a query instead of a table (Kafka Connect's `query` form): here the
/// filings housing has not withdrawn, a join its DBA writes once. The query is checked as a
/// table is (prepared, its columns and their types), and its rows reach the shared view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_reads_a_query_as_it_reads_a_table() {
    let db = FrontDb::connect(POSTGRES, 2, 480).unwrap();
    let (table, rejects, withdrawn) = (fresh("cfq"), fresh("cfq_rejects"), fresh("cfq_withdrawn"));
    filing_tables(&db, &table, &rejects).await;
    execute(&db, &format!("CREATE TABLE {withdrawn} (filing_no TEXT PRIMARY KEY)")).await;
    db.execute_all(&[insert_filing(&table, 1, None), insert_filing(&table, 2, None), insert_filing(&table, 3, None)])
        .await
        .unwrap();
    let second = sample("housing", "contract-filing", 2).unwrap()["filing_number"].as_str().unwrap().to_owned();
    db.execute_all(&[(format!("INSERT INTO {withdrawn} VALUES ($1)"), vec![Bind::Text(Some(second))])]).await.unwrap();
    let mut source = filing_source("housing-current", POSTGRES, "", Some(&rejects));
    source.query = Some(format!(
        "SELECT f.* FROM {table} f WHERE NOT EXISTS (SELECT 1 FROM {withdrawn} w WHERE w.filing_no = f.filing_no)"
    ));
    let zone = govex_schemas::zone::TimeZone::default();
    govex_adapters::frontdb::check_source(&source, &zone).await.expect("the query fits its mapping");
    let mut wrong = source.clone();
    wrong.columns.insert("room".into(), "room_no".into());
    let error = govex_adapters::frontdb::check_source(&wrong, &zone).await.unwrap_err();
    assert!(error.contains("the query has no column") && error.contains("room_no"), "{error}");
    let mut both = source.clone();
    both.table = table.clone();
    assert!(both.validate().unwrap_err().contains("not both"));
    let mut two = source.clone();
    two.query = Some(format!("SELECT * FROM {table}; DROP TABLE {table}"));
    assert!(two.validate().unwrap_err().contains("without ;"));
    for escape in [format!("SELECT * FROM {table} --"), format!("SELECT * FROM {table}) x, (SELECT 1")] {
        let mut wrapped = source.clone();
        wrapped.query = Some(escape.clone());
        let error = wrapped.validate().unwrap_err();
        assert!(error.contains("comments") || error.contains("parentheses"), "{escape}: {error}");
    }
    // Read in a read-only transaction: a query that would write is refused by the database.
    let db_error = db
        .fetch_text_read_only(&format!("SELECT CAST(nextval('{table}_id_seq') AS TEXT)"), &[], Duration::from_secs(10))
        .await;
    assert!(db_error.is_err(), "nextval is a write: {db_error:?}");

    let (_dir, node) = node_with(vec![source]).await;
    let published = "govex_frontdb_source_rows_total{source=\"housing-current\",outcome=\"published\"}";
    support::eventually("the two current filings published", Duration::from_secs(60), || async {
        (metric(&node, published).await == 2.0).then_some(())
    })
    .await;
    let base = format!("http://{}", node.api_addr().unwrap());
    let http = reqwest::Client::new();
    for (n, status) in [(1, 200), (2, 404), (3, 200)] {
        let url = format!("{base}/v1/resources/housing.contract-filing/records/{}", property_unit_number(n));
        let got = support::eventually_saw("the shared view", Duration::from_secs(30), || async {
            let response = http.get(&url).query(&[("purpose", "登记审核")]).bearer_auth(token("land-registry"));
            let got = response.send().await.map_err(|e| e.to_string())?.status().as_u16();
            if got == status {
                Ok(got)
            } else {
                Err(format!("{got}"))
            }
        })
        .await;
        assert_eq!(got, status, "filing {n}");
    }
    // A row inserted while the node runs is read through the query too.
    db.execute_all(&[insert_filing(&table, 4, None)]).await.unwrap();
    support::eventually("the fourth row published", Duration::from_secs(60), || async {
        (metric(&node, published).await == 3.0).then_some(())
    })
    .await;
    node.shutdown().await.unwrap();
}

/// A poll's query that runs past `query_timeout_ms` is cancelled by the database itself, not
/// only given up here (where it would go on running there, holding its locks and a
/// connection): on PostgreSQL and on MariaDB, a query that sleeps 30 s under a 500 ms bound
/// shows its source down, naming the bound, and is no longer running on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_time_bound_is_cancelled_in_the_database_and_shows_its_source_down() {
    for (url, sleep, running) in [
        (
            POSTGRES,
            "CROSS JOIN (SELECT pg_sleep(30)) AS z",
            "SELECT CAST(COUNT(*) AS TEXT) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%{table}%'",
        ),
        (
            MARIADB,
            "CROSS JOIN (SELECT SLEEP(30) AS z) AS z",
            "SELECT CAST(COUNT(*) AS CHAR) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' AND ID <> CONNECTION_ID() AND INFO LIKE '%{table}%'",
        ),
    ] {
        let db = FrontDb::connect(url, 2, 480).unwrap();
        let (table, rejects) = (fresh("slow"), fresh("slow_rejects"));
        if url == POSTGRES {
            filing_tables(&db, &table, &rejects).await;
            db.execute_all(&[insert_filing(&table, 1, None)]).await.unwrap();
        } else {
            // The row is never read in time: its columns only have to be there.
            let columns: Vec<String> = FILING_COLUMNS.iter().map(|(_, c)| format!("{c} VARCHAR(100)")).collect();
            let ddl = format!(
                "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), {})",
                columns.join(", ")
            );
            execute(&db, &ddl).await;
            execute(&db, &format!("INSERT INTO {table} (filing_no) VALUES ('F1')")).await;
        }
        let mut source = filing_source("housing-slow", url, "", None);
        source.query = Some(format!("SELECT f.* FROM {table} f {sleep}"));
        source.query_timeout_ms = 500;
        let (_dir, node) = node_with(vec![source]).await;
        let ready = format!("http://{}/readyz", node.ops_addr);
        let why = support::eventually_saw("the source down", Duration::from_secs(30), || async {
            let text = reqwest::get(&ready).await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
            match text.contains("housing-slow") {
                true => Ok(text),
                false => Err(text),
            }
        })
        .await;
        assert!(why.contains("query_timeout_ms (500 ms)"), "{url}: {why}");
        assert_eq!(metric(&node, "govex_frontdb_source_up{source=\"housing-slow\"}").await, 0.0);
        // On the server, no poll is left sleeping (each was cancelled at 500 ms; the next
        // poll may be starting, so it is asked a few times).
        let count = running.replace("{table}", &table);
        let mut idle = false;
        for _ in 0..20 {
            let rows = db.fetch_text(&count, &[]).await.unwrap();
            if rows[0][0].as_deref() == Some("0") {
                idle = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(idle, "{url}: a poll past its bound still runs on the server");
        node.shutdown().await.unwrap();
    }
}
