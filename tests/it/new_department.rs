//! A fifth department added to a running node as data alone: its record type's schema
//! (`examples/departments/market-regulation/`), its catalogue entry and a token. No Rust, no
//! rebuild, no restart.

use std::{path::Path, process::Command, time::Duration};

use govex_http::auth::{hash_token, Role};
use govex_http::config::TokenConfig;
use serde_json::{json, Value};

use crate::support::{test_node_config, STEWARD_TOKEN};

const EXAMPLE: &str = "examples/departments/market-regulation";
const TOPIC: &str = "gov.market-regulation.business-licence.v1";
const TOKEN: &str = "test-token-of-market-regulation";

async fn post(api: &str, path: &str, body: &Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(format!("{api}{path}")).bearer_auth(TOKEN).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn catalogue_ids(api: &str) -> Vec<String> {
    let catalog: Value = reqwest::get(format!("{api}/catalog")).await.unwrap().json().await.unwrap();
    catalog["resource"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// Retries `f` every 50 ms until it is `Some` or 10 s passed.
async fn within_10s<T, F: std::future::Future<Output = Option<T>>>(what: &str, f: impl FnMut() -> F) -> T {
    crate::support::eventually(what, Duration::from_secs(10), f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_department_is_added_to_a_running_node_as_data_alone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    crate::steward::copy_dir(&repo.join("schemas"), &work.path().join("schemas"));
    let catalog_file = work.path().join("schemas/catalog.toml");
    let mut config = test_node_config(data.path());
    config.intake.schema_refresh_ms = 200;
    config.catalog_file = Some(catalog_file.clone());
    // The department's token: configuration, like every department's.
    config.intake.tokens.push(TokenConfig {
        department: "market-regulation".into(),
        sha256: hash_token(TOKEN),
        label: Some("market-regulation-core".into()),
        role: Role::Department,
    });
    // Readers: tax may see its personal fields (the entry's personal_data_readers), housing not.
    for department in ["tax", "housing"] {
        config.intake.tokens.push(TokenConfig::of(
            department,
            &format!("test-token-of-{department}"),
            Role::Department,
        ));
    }
    let partitions = config.bus.partitions;
    let node = govex::node::start(config).await.unwrap();
    let api = format!("http://{}", node.api_addr().unwrap());
    let registry = format!("http://{}", node.registry_addr.unwrap());
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join(EXAMPLE).join("business-licence.json")).unwrap())
            .unwrap();

    // Before: the node does not take its records.
    let (status, answer) = post(&api, "/v1/market-regulation/business-licence", &record).await;
    assert_eq!(status, 404, "{answer}");

    // The steward appends the catalogue entry first (the node refuses it while the registry
    // lacks its schema, and keeps trying), then adds the schema file and pushes.
    let mut catalogue = std::fs::read_to_string(&catalog_file).unwrap();
    catalogue.push('\n');
    catalogue.push_str(&std::fs::read_to_string(repo.join(EXAMPLE).join("catalog-entry.toml")).unwrap());
    std::fs::write(&catalog_file, catalogue).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!catalogue_ids(&api).await.contains(&"market-regulation.business-licence".to_owned()));
    std::fs::copy(
        repo.join(EXAMPLE).join(format!("{TOPIC}.avsc")),
        work.path().join(format!("schemas/avro/{TOPIC}.avsc")),
    )
    .unwrap();
    let lint = Command::new(env!("CARGO_BIN_EXE_govex")).args(["schema", "lint"]).current_dir(work.path()).output();
    let lint = lint.unwrap();
    let push = Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["schema", "push", "--registry", &registry])
        .env("GOVEX_REGISTRY__TOKEN", STEWARD_TOKEN)
        .current_dir(work.path())
        .output()
        .unwrap();
    let pushed = String::from_utf8_lossy(&push.stdout).into_owned();
    assert!(push.status.success(), "{pushed}{}", String::from_utf8_lossy(&push.stderr));
    assert!(pushed.lines().any(|l| l.starts_with(&format!("{TOPIC}-value")) && l.ends_with("registered")), "{pushed}");
    // Lint now sees the entry too.
    let lint_after =
        Command::new(env!("CARGO_BIN_EXE_govex")).args(["schema", "lint"]).current_dir(work.path()).output().unwrap();
    assert!(
        lint_after.status.success(),
        "{}\n(before the catalogue entry: {})",
        String::from_utf8_lossy(&lint_after.stdout),
        String::from_utf8_lossy(&lint.stdout)
    );

    // Its records are taken, with the shared named checks, and it is in the catalogue.
    let accepted = within_10s("the record type going live", || async {
        let (status, answer) = post(&api, "/v1/market-regulation/business-licence", &record).await;
        (status == 202).then_some(answer)
    })
    .await;
    assert_eq!(accepted["topic"], TOPIC);
    within_10s("the catalogue entry", || async {
        catalogue_ids(&api).await.contains(&"market-regulation.business-licence".to_owned()).then_some(())
    })
    .await;
    let mut bad = record.clone();
    bad["credit_code"] = json!("91110000600037341X");
    bad["legal_representative"]["citizen_id"] = json!("110105194912310021");
    bad["occurred_at"] = json!("2099-01-01T00:00:00+08:00");
    let (status, answer) = post(&api, "/v1/market-regulation/business-licence", &bad).await;
    assert_eq!(status, 422, "{answer}");
    let mut rules: Vec<(String, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["pointer"].as_str().unwrap().to_owned(), v["rule"].as_str().unwrap().to_owned()))
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            ("/credit_code".to_owned(), "credit-code-check".to_owned()),
            ("/legal_representative/citizen_id".to_owned(), "citizen-id-check".to_owned()),
            ("/occurred_at".to_owned(), "time-not-in-future".to_owned()),
        ]
    );
    assert!(!answer.to_string().contains("110105194912310021"), "the identifier is not echoed");
    // Another department cannot send its records.
    let other = reqwest::Client::new()
        .post(format!("{api}/v1/market-regulation/business-licence"))
        .bearer_auth(STEWARD_TOKEN)
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 403);

    // Departments the catalogue entitles read it from the shared view: unconditional, with
    // personal fields for the readers it names and masked for the others.
    let read = |department: &'static str, path: String| {
        let api = api.clone();
        async move {
            let response = reqwest::Client::new()
                .get(format!("{api}{path}"))
                .bearer_auth(format!("test-token-of-{department}"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let path =
        "/v1/resources/market-regulation.business-licence/records/91110000600037341L?purpose=企业开办联办".to_owned();
    let unmasked = within_10s("the record in the shared view", || async {
        let (status, body) = read("tax", path.clone()).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(unmasked["personal_data_masked"], false, "{unmasked}");
    assert_eq!(unmasked["record"]["legal_representative_citizen_id"], "11010519491231002X");
    assert_eq!(unmasked["record"]["enterprise_name"], "汉阴县月河农产品有限公司");
    let (status, masked) = read("housing", path.clone()).await;
    assert_eq!(status, 200, "{masked}");
    assert_eq!(masked["personal_data_masked"], true);
    assert!(!masked.to_string().contains("11010519491231002X"), "{masked}");
    assert_ne!(masked["record"]["legal_representative_name"], "李四");
    let (status, _) = read("housing", path.replace("?purpose=企业开办联办", "")).await;
    assert_eq!(status, 400, "a read states its purpose");
    // A resource not shared with the caller is refused before the store is read.
    let (status, body) =
        read("housing", "/v1/resources/provident-fund.event/records/610900000000001?purpose=x".into()).await;
    assert_eq!(status, 403, "{body}");
    // A key far longer than any identifier is refused before it is looked up or logged.
    let long = format!("/v1/resources/market-regulation.business-licence/records/{}?purpose=x", "9".repeat(300));
    let (status, body) = read("tax", long).await;
    assert_eq!((status, body["type"].as_str()), (400, Some("urn:govex:problem:key")), "{body}");

    // What was acknowledged is on its topic, and reads back through the registry's schema.
    assert_eq!(crate::support::records_in_topic(node.bus.bootstrap_servers(), TOPIC, partitions), 1);
    let mut collector = crate::support::collect(&node.bus, "read-new-department", &[TOPIC]);
    let message = collector.next().await;
    assert_eq!(message.key(), Some(b"91110000600037341L".as_slice()));
    let reader = node.registry.latest(&format!("{TOPIC}-value")).await.unwrap().1;
    let decoded =
        govex_bus::Decoder::new(node.registry.clone(), &reader).decode(message.payload().unwrap()).await.unwrap();
    let text = format!("{decoded:?}");
    assert!(text.contains("汉阴县月河农产品有限公司") && text.contains("ESTABLISHED"), "{text}");
    collector.stop().await;

    // A catalogue file far too big is refused unread, and the catalogue before it stays: this
    // one would drop the new entry if it were taken.
    let bundled = std::fs::read_to_string(repo.join("schemas/catalog.toml")).unwrap();
    let padding = "# padding\n".repeat(500_000);
    // Swapped in whole, as the kubelet swaps a ConfigMap's files: a file written in place
    // could be read half-written (the bundled text alone, valid and without the new entry).
    let swapped = catalog_file.with_extension("toml.new");
    std::fs::write(&swapped, format!("{bundled}{padding}")).unwrap();
    std::fs::rename(&swapped, &catalog_file).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(catalogue_ids(&api).await.contains(&"market-regulation.business-licence".to_owned()));
    node.shutdown().await.unwrap();
}
