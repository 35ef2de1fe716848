//! The node as a whole: start-up failures, its registry over HTTP, its ops endpoints.

use apache_avro::Schema;
use govex_bus::RegistryClient;

use crate::support::{permit, test_node_config, PERMIT_SCHEMA, STEWARD_TOKEN};

#[tokio::test]
async fn a_node_serves_its_registry_to_a_remote_codec_and_reports_ready() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    assert!(node.topics.contains(&"gov.case.event.v1".to_owned()));
    let base = format!("http://{}", node.registry_addr.unwrap());

    let http = reqwest::Client::new();
    let subjects: Vec<String> = http.get(format!("{base}/subjects")).send().await.unwrap().json().await.unwrap();
    assert!(subjects.contains(&"gov.case.event.v1-value".to_owned()), "{subjects:?}");

    // A codec in another process would use this client: encode, then decode by id over HTTP.
    let remote = RegistryClient::http_with_token(&base, Some(STEWARD_TOKEN));
    let encoder = govex_bus::Encoder::register(&remote, "gov.test.permit.v1-value", PERMIT_SCHEMA).await.unwrap();
    let again = govex_bus::Encoder::register(&remote, "gov.test.permit.v1-value", PERMIT_SCHEMA).await.unwrap();
    assert_eq!(encoder.schema_id(), again.schema_id(), "registering twice returns the same id");
    let decoder = govex_bus::Decoder::new(RegistryClient::http(&base), &Schema::parse_str(PERMIT_SCHEMA).unwrap());
    let decoded: crate::support::TestPermit =
        decoder.decode_into(&encoder.encode(&permit("k", 3)).unwrap()).await.unwrap();
    assert_eq!(decoded, permit("k", 3));
    let mut unknown = encoder.encode(&permit("k", 3)).unwrap();
    unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
    let error = decoder.decode(&unknown).await.unwrap_err();
    assert!(matches!(error, govex_bus::CodecError::UnknownSchemaId(999)), "{error:?}");

    let latest = http.get(format!("{base}/subjects/gov.test.permit.v1-value/versions/latest")).send().await.unwrap();
    assert_eq!(latest.headers()["content-type"], "application/vnd.schemaregistry.v1+json");
    let body: serde_json::Value = latest.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], encoder.schema_id());
    let missing = http.get(format!("{base}/schemas/ids/999")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error_code"], 40403);

    let ops = format!("http://{}", node.ops_addr);
    assert_eq!(http.get(format!("{ops}/healthz")).send().await.unwrap().status(), 200);
    crate::support::wait_ready(&format!("{ops}/readyz")).await;
    let metrics = http.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("govex_bus_producer_in_flight_records"), "{metrics}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_registry_keeps_its_schemas_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let id = node.registry.register("gov.test.keep.v1-value", PERMIT_SCHEMA).await.unwrap();
    node.shutdown().await.unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    assert_eq!(node.registry.latest("gov.test.keep.v1-value").await.unwrap().0, id);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_up_fails_fast_on_a_taken_port_or_an_unwritable_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_node_config(dir.path());
    config.listen.ops = taken.local_addr().unwrap();
    let error = govex::node::start(config).await.err().expect("a taken port is refused");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("cannot listen on {} for the ops endpoints", taken.local_addr().unwrap())),
        "{message}"
    );
    assert!(message.contains("another process holds this port"), "{message}");

    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let error = govex::node::start(test_node_config(&file)).await.err().expect("a file as data directory is refused");
    assert!(
        format!("{error:#}").contains(&format!("data_dir {} cannot be used: {0} is not a directory", file.display())),
        "{error:#}"
    );
}

#[tokio::test]
async fn the_catalogue_is_served_and_its_owners_are_departments() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let catalog: serde_json::Value =
        reqwest::get(format!("http://{}/catalog", node.api_addr().unwrap())).await.unwrap().json().await.unwrap();
    let resources = catalog["resource"].as_array().unwrap();
    assert_eq!(resources.len(), govex_schemas::bundled_schemas().count());
    for resource in resources {
        let owner = resource["owner"].as_str().unwrap();
        assert!(owner.parse::<govex_schemas::Department>().is_ok(), "owner {owner} is a department");
        for subscriber in resource["subscribers"].as_array().unwrap() {
            assert!(subscriber.as_str().unwrap().parse::<govex_schemas::Department>().is_ok(), "{subscriber}");
        }
        assert!(node.topics.contains(&resource["topic"].as_str().unwrap().to_owned()));
    }
    let tax = resources.iter().find(|r| r["id"] == "tax.deed-tax-payment").unwrap();
    assert_eq!(tax["sharing"], "conditional");
    assert_eq!(tax["personal_fields"], serde_json::json!(["taxpayer_identifier_number", "taxpayer_name"]));
    node.shutdown().await.unwrap();
}
