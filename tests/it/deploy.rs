//! What the deployment files promise of the node: every metric the Grafana dashboard and the
//! Prometheus alerts query is one a running node exposes (so a renamed metric breaks this test,
//! not a dashboard in production), and the example records in `examples/records/` (used by the
//! CI's live scrape and by the README) pass the intake's checks.

use std::{collections::BTreeSet, path::Path, sync::Arc};

use govex_adapters::common::CheckContext;
use govex_bus::embedded::EmbeddedBroker;
use govex_schemas::Division;
use govex_sinks::level_bridge::config::LinkConfig;

use crate::support::test_node_config;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Labels the chart's ServiceMonitor adds to every series (they look like metric names).
const TARGET_LABELS: [&str; 2] = ["govex_division", "govex_component"];

/// `govex_...` metric names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("govex_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        if !TARGET_LABELS.contains(&&tail[..end]) {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Sample names a Prometheus text exposition can contain, from its `# TYPE` lines.
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exposed_by_a_node() {
    // A county node with a bridge link to its city's cluster, so the bridge metrics exist too.
    let city = Arc::new(EmbeddedBroker::start(1).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        city.create_topic(schema.topic, 3, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_node_config(dir.path());
    config.division = Division::parse("610921").unwrap();
    config.bridge.parent = Some(LinkConfig::new(city.bootstrap_servers(), "http://127.0.0.1:9"));
    // And a front-end database source and down-table (the real PostgreSQL on loopback), so
    // that the frontdb families exist.
    let db = govex_bus::frontdb::FrontDb::connect(crate::frontdb::POSTGRES, 1, 480).unwrap();
    let (table, rejects) = (crate::frontdb::fresh("cf_deploy"), crate::frontdb::fresh("cf_deploy_rejects"));
    crate::frontdb::filing_tables(&db, &table, &rejects).await;
    config.frontdb.sources =
        vec![crate::frontdb::filing_source("deploy-filings", crate::frontdb::POSTGRES, &table, Some(&rejects))];
    config.frontdb.tables = vec![govex_sinks::down_table::DownTableConfig {
        name: "deploy-filings".into(),
        department: "land-registry".into(),
        resource: "housing.contract-filing".into(),
        purpose: "不动产登记".into(),
        url: crate::frontdb::POSTGRES.into(),
        table: table.clone(),
        columns: [("filing_number".to_owned(), "filing_no".to_owned())].into(),
        connections: 1,
    }];
    let node = govex::node::start(config).await.unwrap();

    let exposition = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    let exposed = exposed_names(&exposition);
    assert!(exposed.contains("govex_intake_records_total"), "{exposition}");

    let service_monitor = repo_file("charts/govex/templates/monitoring.yaml");
    for label in TARGET_LABELS {
        assert!(service_monitor.contains(&format!("targetLabel: {label}")), "the ServiceMonitor does not add {label}");
    }
    for file in ["charts/govex/files/dashboard.json", "charts/govex/files/alerts.yaml", "charts/tests/alerts_test.yaml"]
    {
        let text = repo_file(file);
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} queries only {used:?}");
        let missing: Vec<&String> = used.difference(&exposed).collect();
        assert!(missing.is_empty(), "{file} queries metrics no node exposes: {missing:?}\nexposed: {exposed:?}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_example_records_pass_the_intake_checks() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let intake = node.intake().unwrap();
    let records = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/records");
    let mut checked = 0;
    for entry in std::fs::read_dir(&records).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (department, record) = name.trim_end_matches(".json").split_once('.').unwrap();
        let body = std::fs::read(&path).unwrap();
        let result = intake.check(department.parse().unwrap(), record, &body, &CheckContext::now());
        assert!(result.is_ok(), "{name}: {:?}", result.err());
        checked += 1;
    }
    assert_eq!(checked, 6, "one example per record type");
    node.shutdown().await.unwrap();
}
