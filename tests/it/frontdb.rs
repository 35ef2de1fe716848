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
            "buyers[0].identifier_number" => buyer_id.map_or(record["buyers"][0]["identifier_number"].clone(), Value::from),
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
    let written = db
        .fetch_text(&format!("SELECT source, row_key, violations FROM {rejects}"), &[])
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    let violations = written[0][2].clone().unwrap();
    assert!(violations.contains("/buyers/0/identifier_number"), "{violations}");
    assert!(!violations.contains(&bad_id), "a refused value is never written: {violations}");
    assert_eq!((written[0][0].as_deref(), written[0][1].as_deref()), (Some("housing-filings"), Some("3")));
    node.shutdown().await.unwrap();
}
