//! One node split into processes the way the Helm chart deploys it: the registry alone, the
//! intake alone (started before the registry answers, as pods may be), and the stores alone,
//! sharing one external bus (the stores follow the registry's topic instead of calling it). A licence accepted by the intake process becomes readable in the
//! store process; each process serves only its own routes.

use std::{path::Path, time::Duration};

use govex::config::Component;
use govex::config::NodeConfig;
use govex_adapters::{intake::auth::hash_token, samples::sample};
use govex_bus::embedded::EmbeddedBroker;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::test_node_config;

fn process_config(dir: &Path, bootstrap: &str, components: &[Component], registry: Option<String>) -> NodeConfig {
    let mut config = test_node_config(dir);
    config.division = govex_schemas::Division::parse("610921").unwrap();
    config.bus.brokers = Some(bootstrap.to_owned());
    config.bus.replication_factor = 1;
    config.components = components.to_vec();
    config.registry.url = registry;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_split_into_registry_intake_and_store_processes_works_as_one() {
    let broker = EmbeddedBroker::start(1).unwrap();
    // The mock cluster has no CreateTopics; an operator's cluster would have the topics too.
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
            broker.create_topic(&topic, 3, 1).unwrap();
        }
    }
    let bootstrap = broker.bootstrap_servers().to_owned();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let registry_addr = crate::support::reserved_addr();
    let registry_url = format!("http://{registry_addr}");

    // The stores read their tokens from a tokens file, as from a mounted Secret.
    let tokens_file = dirs[2].path().join("tokens.toml");
    std::fs::write(
        &tokens_file,
        format!(
            "[[tokens]]\ndepartment = \"land-registry\"\nsha256 = \"{}\"\n",
            hash_token("test-token-of-land-registry")
        ),
    )
    .unwrap();

    // The intake starts first and waits for the registry it is pointed at.
    let mut intake_config = process_config(dirs[0].path(), &bootstrap, &[Component::Intake], Some(registry_url));
    intake_config.intake.tokens =
        vec![govex_http::config::TokenConfig::of("platform", "test-token-of-platform", Default::default())];
    let intake_start = tokio::spawn(govex::node::start(intake_config));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!intake_start.is_finished(), "the intake did not wait for the registry");

    let mut registry_config = process_config(dirs[1].path(), &bootstrap, &[Component::Registry], None);
    registry_config.listen.registry = registry_addr;
    let registry = govex::node::start(registry_config).await.unwrap();
    assert!(registry.api_addr().is_err(), "a registry-only process serves no API");
    let intake = intake_start.await.unwrap().unwrap();

    // The stores name no registry: they follow the registry's topic on the shared bus.
    let mut store_config =
        process_config(dirs[2].path(), &bootstrap, &[Component::Elicense, Component::Dossier, Component::Cases], None);
    store_config.intake.tokens_file = Some(tokens_file);
    let store = govex::node::start(store_config).await.unwrap();

    let http = reqwest::Client::new();
    let record = sample("platform", "licence", 7).unwrap();
    let licence_id = record["licence_id"].as_str().unwrap().to_owned();
    let accepted = http
        .post(format!("http://{}/v1/platform/licence", intake.api_addr().unwrap()))
        .bearer_auth("test-token-of-platform")
        .json(&record)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED, "{:?}", accepted.text().await);

    let store_base = format!("http://{}", store.api_addr().unwrap());
    let licence: Value =
        crate::support::eventually("the store process seeing the licence", Duration::from_secs(60), || {
            let request = http.get(format!("{store_base}/v1/licences/{licence_id}")).query(&[("purpose", "核验")]);
            async move {
                let response = request.bearer_auth("test-token-of-land-registry").send().await.unwrap();
                match response.status() == StatusCode::OK {
                    true => Some(response.json().await.unwrap()),
                    false => None,
                }
            }
        })
        .await;
    assert_eq!(licence["licence_id"], licence_id.as_str());

    // Each process serves only its own routes.
    let on_intake = http
        .get(format!("http://{}/v1/licences/{licence_id}?purpose=x", intake.api_addr().unwrap()))
        .bearer_auth("test-token-of-land-registry")
        .send()
        .await
        .unwrap();
    assert!(not_served(on_intake.status()), "the intake process answered a licence read with {}", on_intake.status());
    let on_store = crate::support::post(&format!("{store_base}/v1/platform/licence"), "platform", &record).await;
    assert!(not_served(on_store.status()), "the store process answered an intake request with {}", on_store.status());
    let about: Value = http.get(format!("{store_base}/")).send().await.unwrap().json().await.unwrap();
    assert_eq!(about["components"], serde_json::json!(["elicense", "dossier", "cases"]));

    store.shutdown().await.unwrap();
    intake.shutdown().await.unwrap();
    registry.shutdown().await.unwrap();
}

/// 404, or 405 where another component's route has the same shape with another method
/// (`POST /v1/{department}/{record}` and `GET /v1/licences/{id}`).
fn not_served(status: StatusCode) -> bool {
    matches!(status, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
}

#[tokio::test]
async fn a_process_without_the_registry_must_be_told_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_node_config(dir.path());
    config.components = vec![Component::Intake];
    let error = govex::node::start(config).await.err().unwrap();
    // On the embedded bus no other process could share the registry's topic.
    assert!(format!("{error:#}").contains("registry.url must name the registry"), "{error:#}");
    assert!(format!("{error:#}").contains("bus.brokers"), "{error:#}");
    let mut both = test_node_config(dir.path());
    both.components = vec![Component::Registry];
    both.registry.url = Some("http://registry:8081".into());
    let error = govex::node::start(both).await.err().unwrap();
    assert!(format!("{error:#}").contains("not both"), "{error:#}");
}

/// A component that cannot start stops the ones started before it: the e-licence store's
/// sink and use-log tasks end and its database is closed again (sled locks its files while one
/// is open, so opening it here would fail if anything still held it).
#[tokio::test]
async fn a_component_that_cannot_start_stops_every_one_started_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The dossier's store cannot be opened where a file is in the way; the e-licence
    // component, before it in start-up order, has started by then.
    std::fs::write(data.join("dossier"), b"not a directory").unwrap();
    let mut config = test_node_config(&data);
    config.components = vec![Component::Registry, Component::Elicense, Component::Dossier];
    let error = match govex::node::start(config).await {
        Ok(_) => panic!("a node whose dossier store cannot be opened started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("the dossier component cannot start") && error.contains("dossier store"), "{error}");
    assert!(data.join("elicense").is_dir(), "the e-licence component had started: {error}");
    let reopened = govex_sinks::elicense::LicenceStore::open(&data.join("elicense"));
    assert!(reopened.is_ok(), "something still holds the e-licence store: {:?}", reopened.err());
}
