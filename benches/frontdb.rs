//! `cargo bench --bench frontdb`
//!
//! 200,000 rows of a 14-column deed-tax table in PostgreSQL through a front-end database
//! source on a `govex node` in its own process, its brokers (`govex broker`) in another: read,
//! checked, encoded, published and acknowledged, the watermark stored after each batch.
//! Against, in the same run:
//!
//! - a raw `COPY (SELECT …) TO STDOUT` of the same table (how fast the rows can leave the
//!   database at all);
//! - the node's plain HTTP intake taking the same records as NDJSON batches (what a
//!   department system calling the API gets).
//!
//! Prints rows/s, the ratios, rows/s per core of this machine, the CPU time the node, the
//! brokers and PostgreSQL spent on the source's rows (rows per node CPU-second is the
//! per-core figure a capture tool is measured by), and the node's peak memory (`VmHWM`). For
//! scale: Debezium's PostgreSQL capture through Kafka Connect is reported at
//! about 30,000 msg/s per core using about 7 GB.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sqlx::Connection as _;

const ROWS: i64 = 200_000;
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const TOKEN: &str = "bench-token-of-tax";
const BATCH_LINES: u32 = 2_000;

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

async fn metric(client: &reqwest::Client, ops: &str, series: &str) -> f64 {
    // A kept-alive connection the node closed as idle just as it was reused is reset: ask again.
    for _ in 0..5 {
        let Ok(response) = client.get(format!("{ops}/metrics")).send().await else { continue };
        let Ok(text) = response.text().await else { continue };
        return text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0);
    }
    panic!("the node's /metrics does not answer");
}

async fn fill(pg: &mut sqlx::PgConnection, table: &str) {
    let citizen = govex_adapters::samples::citizen_id(1);
    let create = format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now() - interval '1 hour', \
         voucher_no TEXT NOT NULL, taxpayer_id_type TEXT, taxpayer_id_number TEXT, taxpayer_name TEXT, unit_number TEXT, \
         taxable_base NUMERIC(14,2), tax_rate NUMERIC(6,4), tax_amount NUMERIC(14,2), paid_at TIMESTAMPTZ, \
         tax_authority TEXT, division TEXT, remark TEXT)"
    );
    sqlx::raw_sql(&create).execute(&mut *pg).await.expect("create");
    let insert = format!(
        "INSERT INTO {table} (voucher_no, taxpayer_id_type, taxpayer_id_number, taxpayer_name, unit_number, taxable_base, \
         tax_rate, tax_amount, paid_at, tax_authority, division, remark) \
         SELECT 'WS-610921-' || lpad(n::text, 8, '0'), 'CITIZEN_ID', '{citizen}', '王小明', \
         '610921001001GB' || lpad((n % 100000)::text, 5, '0') || 'F' || lpad(n::text, 8, '0'), 568000.00, 0.0150, 8520.00, \
         TIMESTAMPTZ '2026-11-19 15:00:00+08', '11100000000013338W', '610921', '基准' \
         FROM generate_series(1, {ROWS}) AS n"
    );
    sqlx::raw_sql(&insert).execute(&mut *pg).await.expect("insert");
}

fn source_section(table: &str) -> String {
    let columns = [
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
    let mapping: String = columns.iter().map(|(p, c)| format!("\"{p}\" = \"{c}\"\n")).collect();
    format!(
        "[[frontdb.sources]]\nname = \"bench\"\ndepartment = \"tax\"\nrecord = \"deed-tax-payment\"\nurl = \"{POSTGRES}\"\n\
         table = \"{table}\"\nkey = [\"id\"]\nmode = \"incrementing\"\nincrementing_column = \"id\"\n\
         timestamp_column = \"created_at\"\ncommit_lag_ms = 1000\npoll_interval_ms = 100\nbatch_size = 5000\n\
         [frontdb.sources.columns]\n{mapping}"
    )
}

async fn run() {
    let mut pg =
        sqlx::PgConnection::connect(POSTGRES).await.expect("PostgreSQL on 127.0.0.1:5432 (bash .ci/databases)");
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (staging, table) = (format!("bench_staging_{}", &suffix[..10]), format!("bench_dtp_{}", &suffix[..10]));
    fill(&mut pg, &staging).await;

    // 1. Raw COPY of the same rows.
    let started = Instant::now();
    let mut copied = pg.copy_out_raw(&format!("COPY (SELECT * FROM {staging}) TO STDOUT")).await.expect("copy");
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = copied.next().await {
        let chunk = chunk.expect("chunk");
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    drop(copied);
    let copy_rate = lines as f64 / started.elapsed().as_secs_f64();
    assert_eq!(lines as i64, ROWS);

    // 2. The source, on a node in its own process; the table appears under its name once the
    //    node is ready, so the time is the source's alone.
    // The brokers in a process of their own (`govex broker`), as a Kafka cluster would be:
    // the node's CPU is then the exchange's own work, as Kafka Connect's is measured apart
    // from its brokers.
    let (broker, bootstrap) = support::broker();
    let data = tempfile::tempdir().expect("temp dir");
    let sections = format!(
        "{}\n{}\n[bus]\nbrokers = \"{bootstrap}\"\n",
        support::token_section("tax", TOKEN),
        source_section(&table)
    );
    let node = support::node(data.path(), &sections).await;
    let client = reqwest::Client::new();
    sqlx::raw_sql(&format!("ALTER TABLE {staging} RENAME TO {table}")).execute(&mut pg).await.expect("rename");
    let published = "govex_frontdb_source_rows_total{source=\"bench\",outcome=\"published\"}";
    let refused = "govex_frontdb_source_rows_total{source=\"bench\",outcome=\"refused\"}";
    let node_pid = node.process.0.id();
    let (first_at, first) = loop {
        let n = metric(&client, &node.ops, published).await;
        if n > 0.0 {
            break (Instant::now(), n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // CPU time from the first published row on: the node's (its embedded brokers included)
    // and PostgreSQL's backends'.
    let broker_pid = broker.0.id();
    let (node_cpu_at_first, pg_cpu_at_first, broker_cpu_at_first) = (
        support::memory::cpu_seconds(node_pid),
        support::memory::cpu_seconds_of("postgres"),
        support::memory::cpu_seconds(broker_pid),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = metric(&client, &node.ops, published).await;
        let r = metric(&client, &node.ops, refused).await;
        if n + r >= ROWS as f64 {
            assert_eq!(r, 0.0, "every bench row passes the checks");
            break;
        }
        assert!(Instant::now() < deadline, "the source did not finish: {n} published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let source_rate = (ROWS as f64 - first) / first_at.elapsed().as_secs_f64();
    let node_cpu = support::memory::cpu_seconds(node_pid) - node_cpu_at_first;
    let pg_cpu = support::memory::cpu_seconds_of("postgres") - pg_cpu_at_first;
    let broker_cpu = support::memory::cpu_seconds(broker_pid) - broker_cpu_at_first;
    let source_peak = node.process.peak_mib();

    // 3. The same records over the HTTP intake, NDJSON batches of 2,000, four at once.
    let records: Vec<String> = (0..ROWS as u32)
        .map(|n| govex_adapters::samples::sample("tax", "deed-tax-payment", 1_000_000 + n).expect("sample").to_string())
        .collect();
    let bodies: Vec<String> = records.chunks(BATCH_LINES as usize).map(|c| c.join("\n")).collect();
    let started = Instant::now();
    let url = format!("{}/v1/tax/deed-tax-payment:batch", node.api);
    let sent = futures::stream::iter(bodies)
        .map(|body| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .expect("batch");
                let answer: serde_json::Value = response.json().await.expect("answer");
                answer["accepted"].as_u64().unwrap_or(0)
            }
        })
        .buffer_unordered(4)
        .fold(0u64, |all, n| async move { all + n })
        .await;
    let http_rate = sent as f64 / started.elapsed().as_secs_f64();
    assert_eq!(sent, ROWS as u64, "every record accepted over HTTP");

    println!("{ROWS} rows of a 14-column table, PostgreSQL on loopback, node and brokers each in a process of their own, {} cores", cores());
    println!("{:<52} {:>12} {:>8} {:>12}", "", "rows/s", "ratio", "rows/s/core");
    println!(
        "{:<52} {:>12.0} {:>8} {:>12.0}",
        "raw COPY (SELECT *) TO STDOUT (baseline)",
        copy_rate,
        "1.00",
        copy_rate / cores()
    );
    println!(
        "{:<52} {:>12.0} {:>8.2} {:>12.0}",
        "front-end source: read, checked, published, acked",
        source_rate,
        source_rate / copy_rate,
        source_rate / cores()
    );
    println!(
        "{:<52} {:>12.0} {:>8.2} {:>12.0}",
        "HTTP intake, NDJSON batches of 2,000 (4 at once)",
        http_rate,
        http_rate / copy_rate,
        http_rate / cores()
    );
    println!("source / HTTP intake: {:.2}", source_rate / http_rate);
    // Per core as a capture tool is measured: rows over the CPU time the exchange itself spent
    // (Debezium's ~30,000 msg/s per core is Kafka Connect's CPU, the database's not counted).
    let source_rows = ROWS as f64 - first;
    println!(
        "front-end source CPU: node {node_cpu:.1} s ({:.2} cores busy) = {:.0} rows per node CPU-second; \
         brokers {broker_cpu:.1} s; PostgreSQL {pg_cpu:.1} s; all three: {:.0} rows per CPU-second",
        node_cpu / (source_rows / source_rate),
        source_rows / node_cpu.max(0.01),
        source_rows / (node_cpu + pg_cpu + broker_cpu).max(0.01)
    );
    println!(
        "node peak memory (VmHWM) after the source run: {source_peak:.0} MiB; after the HTTP run: {:.0} MiB",
        node.process.peak_mib()
    );
    println!("COPY moved {:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    sqlx::raw_sql(&format!("DROP TABLE {table}")).execute(&mut pg).await.expect("drop");
    // The node before its brokers: else it reports them gone.
    drop(node);
    drop(broker);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}
