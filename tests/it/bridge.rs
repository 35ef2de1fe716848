//! Level bridges across three clusters: case events travel up, licences down, a two-way link
//! does not loop, and a bridge killed mid-stream and restarted loses nothing.

use std::{sync::Arc, time::Duration};

use govex::config::NodeConfig;
use govex_bus::{embedded::EmbeddedBroker, envelope::Envelope, Bus, Encoder, Metrics, Outgoing, RegistryClient};
use govex_schemas::Department;
use govex_schemas::Division;
use govex_sinks::level_bridge::config::LinkConfig;
use serde::Serialize;

use crate::{elicense, support, support::test_node_config};

const CASES: &str = "gov.case.event.v1";
const LICENCES: &str = "gov.elicense.licence.v1";
const MARKET: &str = "gov.market-regulation.business-licence.v1";

/// One level's cluster, and where its node's registry will listen (chosen before any node
/// starts: a bridge needs its neighbour's registry to translate schema ids).
pub struct Cluster {
    broker: Arc<EmbeddedBroker>,
    registry: std::net::SocketAddr,
}

impl std::ops::Deref for Cluster {
    type Target = Arc<EmbeddedBroker>;

    fn deref(&self) -> &Self::Target {
        &self.broker
    }
}

fn cluster() -> Cluster {
    let broker = Arc::new(EmbeddedBroker::start(3).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            broker.create_topic(&topic, 3, 3).unwrap();
        }
    }
    // The fifth department's topics, as an operator makes them on a cluster where the node
    // may not create topics (the mock cluster has no CreateTopics).
    for topic in [MARKET, &format!("{MARKET}.dlq")] {
        broker.create_topic(topic, 3, 3).unwrap();
    }
    let registry = support::reserved_addr();
    Cluster { broker, registry }
}

fn config(dir: &std::path::Path, division: &str, cluster: &Cluster) -> NodeConfig {
    let mut config = test_node_config(dir);
    config.division = Division::parse(division).unwrap();
    config.bus.brokers = Some(cluster.bootstrap_servers().to_owned());
    config.listen.registry = cluster.registry;
    config
}

/// A city (610900) and a county (610921) node, on `city` and `county`, linked to each other.
fn city_and_county(dirs: &[tempfile::TempDir], city: &Cluster, county: &Cluster) -> (NodeConfig, NodeConfig) {
    let mut city_config = config(dirs[0].path(), "610900", city);
    city_config.bridge.children = vec![link(county, Some("610921"))];
    let mut county_config = config(dirs[1].path(), "610921", county);
    county_config.bridge.parent = Some(link(city, None));
    (city_config, county_config)
}

/// Starts `city` and `county`, the county taking records from `department`'s system (its token
/// is [`support::token`]).
async fn start_with_county_token(
    city: NodeConfig,
    mut county: NodeConfig,
    department: &str,
) -> (govex::node::RunningNode, govex::node::RunningNode) {
    let role = govex_http::auth::Role::Department;
    county.intake.tokens.push(govex_http::config::TokenConfig::of(department, &support::token(department), role));
    (govex::node::start(city).await.unwrap(), govex::node::start(county).await.unwrap())
}

fn link(cluster: &Cluster, division: Option<&str>) -> LinkConfig {
    LinkConfig {
        division: division.map(|d| Division::parse(d).unwrap()),
        ..LinkConfig::new(cluster.bootstrap_servers(), format!("http://{}", cluster.registry))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Stage {
    Completed,
}

#[derive(Serialize)]
struct CaseEvent {
    case_number: String,
    service_item_code: String,
    division: String,
    department: String,
    stage: Stage,
    promised_working_days: i32,
    occurred_at: i64,
}

async fn publish_case(bus: &Bus, registry: &RegistryClient, origin: &str, n: u32) -> Envelope {
    let text = govex_schemas::bundled_schemas().find(|s| s.topic == CASES).unwrap().text;
    let encoder = Encoder::register(registry, &format!("{CASES}-value"), text).await.unwrap();
    let case = CaseEvent {
        case_number: format!("BJ-{origin}-{n:06}"),
        service_item_code: "610000-BDCDJ-ZYDJ".into(),
        division: origin.into(),
        department: "land-registry".into(),
        stage: Stage::Completed,
        promised_working_days: 5,
        occurred_at: 1_795_000_000_000,
    };
    let envelope = Envelope::new(Department::PLATFORM, Division::parse(origin).unwrap(), "case-event");
    bus.producer()
        .publish(Outgoing::new(CASES, case.case_number.clone(), encoder.encode(&case).unwrap(), &envelope))
        .await
        .unwrap();
    envelope
}

async fn wait_for_records(broker: &EmbeddedBroker, topic: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count = support::records_in_topic(broker.bootstrap_servers(), topic, 3);
        if count >= expected {
            assert_eq!(count, expected, "{topic}: more records than sent");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{topic}: {count} of {expected} records arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn trails(broker: &Arc<EmbeddedBroker>, topic: &str) -> Vec<String> {
    let bus = Bus::on_embedded(&support::bus_config(), broker.clone(), &Metrics::new()).unwrap();
    bus.scan_header(topic, &Default::default(), "govex-hop-trail").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_events_travel_up_and_licences_down_across_three_clusters() {
    let (province_broker, city_broker, county_broker) = (cluster(), cluster(), cluster());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut province = config(dirs[0].path(), "610000", &province_broker);
    province.bridge.children = vec![link(&city_broker, Some("610900"))];
    let mut city = config(dirs[1].path(), "610900", &city_broker);
    city.bridge.parent = Some(link(&province_broker, None));
    city.bridge.children = vec![link(&county_broker, Some("610921"))];
    let mut county = config(dirs[2].path(), "610921", &county_broker);
    county.bridge.parent = Some(link(&city_broker, None));
    let province = govex::node::start(province).await.unwrap();
    let city = govex::node::start(city).await.unwrap();
    let county = govex::node::start(county).await.unwrap();

    let sent = publish_case(&county.bus, &county.registry, "610921", 1).await;
    wait_for_records(&city_broker, CASES, 1).await;
    wait_for_records(&province_broker, CASES, 1).await;
    assert_eq!(trails(&province_broker, CASES).await, vec!["610921,610900,610000"]);
    let ids = province.bus.scan_header(CASES, &Default::default(), "govex-event-id").await.unwrap();
    assert_eq!(ids, vec![sent.event_id.to_string()], "the event id travels unchanged");

    let licence = elicense::licence("UP0001", govex_sinks::elicense::Status::Valid, "11010519491231002X");
    elicense::publish_from(&province.bus, &province.registry, &[licence], "610000").await;
    wait_for_records(&city_broker, LICENCES, 1).await;
    wait_for_records(&county_broker, LICENCES, 1).await;
    assert_eq!(trails(&county_broker, LICENCES).await, vec!["610000,610900,610921"]);
    // Nothing travels the wrong way.
    assert_eq!(support::records_in_topic(county_broker.bootstrap_servers(), CASES, 3), 1);
    assert_eq!(support::records_in_topic(province_broker.bootstrap_servers(), LICENCES, 3), 1);

    let metrics = reqwest::get(format!("http://{}/metrics", city.ops_addr)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"govex_bridge_forwarded_records_total{link="up-from-610921",topic="gov.case.event.v1"} 1"#),
        "{metrics}"
    );
    for link in ["up-from-610921", "down-from-610000"] {
        assert!(
            metrics.contains(&format!(r#"govex_bridge_hop_latency_seconds_count{{link="{link}"}} 1"#)),
            "{metrics}"
        );
    }
    for node in [county, city, province] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_city_county_link_does_not_loop() {
    let (city_broker, county_broker) = (cluster(), cluster());
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let both_ways = vec![CASES.to_owned()];
    let (mut city, mut county) = city_and_county(&dirs, &city_broker, &county_broker);
    city.bridge.down_topics = both_ways.clone();
    county.bridge.down_topics = both_ways;
    let city = govex::node::start(city).await.unwrap();
    let county = govex::node::start(county).await.unwrap();

    publish_case(&county.bus, &county.registry, "610921", 7).await;
    wait_for_records(&city_broker, CASES, 1).await;
    // The record comes back down to the county's bridge, which must drop it.
    let ops = county.ops_addr;
    support::eventually_saw("the county seeing its record come back", Duration::from_secs(60), || async move {
        let metrics = reqwest::get(format!("http://{ops}/metrics")).await.unwrap().text().await.unwrap();
        match metrics.contains(r#"govex_bridge_dropped_loop_records_total{link="down-from-610900"} 1"#) {
            true => Ok(()),
            false => Err(metrics),
        }
    })
    .await;
    assert_eq!(support::records_in_topic(county_broker.bootstrap_servers(), CASES, 3), 1, "nothing came back");
    assert_eq!(support::records_in_topic(city_broker.bootstrap_servers(), CASES, 3), 1);
    county.shutdown().await.unwrap();
    city.shutdown().await.unwrap();
}

/// The schema id of every value on `topic`.
async fn schema_ids(bus: &Bus, topic: &str) -> Vec<u32> {
    let mut records = bus.read_to_end(topic, &Default::default()).await.unwrap();
    let mut ids = Vec::new();
    while let Some(message) = records.recv().await {
        let payload = message.unwrap().payload().unwrap().to_vec();
        ids.push(u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_ids_are_translated_between_registries_and_what_cannot_be_forwarded_is_dead_lettered() {
    let (city_broker, county_broker) = (cluster(), cluster());
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // The county's registry holds another schema first: the same id means different schemas
    // at the two levels.
    {
        let registry = govex_schemas::Registry::open(&dirs[1].path().join("registry")).unwrap();
        let other = r#"{"type":"record","name":"Other","namespace":"cn.gov.exchange.test","fields":[{"name":"x","type":"long"}]}"#;
        registry.register("a-steward-subject-value", other).unwrap();
    }
    let (city, mut county) = city_and_county(&dirs, &city_broker, &county_broker);
    county.audit.anchor_interval_secs = 1;
    let (city, county) = start_with_county_token(city, county, "tax").await;

    let licence = elicense::licence("TR0001", govex_sinks::elicense::Status::Valid, "11010519491231002X");
    elicense::publish_from(&city.bus, &city.registry, &[licence], "610900").await;
    wait_for_records(&county_broker, LICENCES, 1).await;
    let (city_ids, county_ids) = (schema_ids(&city.bus, LICENCES).await, schema_ids(&county.bus, LICENCES).await);
    let (county_licence_id, _) = county.registry.latest(&format!("{LICENCES}-value")).await.unwrap();
    assert_ne!(city_ids, county_ids, "the registries' ids differ");
    assert_eq!(county_ids, vec![county_licence_id], "the forwarded value names the county's id of its schema");
    // The county's store reads it with the county's registry.
    let ops = county.ops_addr;
    support::eventually_saw("the county applying the licence", Duration::from_secs(60), || async move {
        let metrics = reqwest::get(format!("http://{ops}/metrics")).await.unwrap().text().await.unwrap();
        match metrics.contains("govex_elicense_store_licences 1") {
            true => Ok(()),
            false => Err(metrics),
        }
    })
    .await;

    // A use at the county is anchored there, and the anchor travels up to the city.
    let verified = reqwest::Client::new()
        .post(format!("http://{}/v1/licences/x/verify", county.api_addr().unwrap()))
        .bearer_auth(support::token("tax"))
        .json(&serde_json::json!({ "purpose": "契税征收核验" }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    crate::support::until("no county anchor reached the city", Duration::from_secs(60), || {
        support::records_in_topic(city_broker.bootstrap_servers(), "gov.audit.anchor.v1", 3) > 0
    })
    .await;

    // A record without an envelope goes to the county's dead-letter topic with its reason.
    let bare = Outgoing {
        topic: LICENCES.into(),
        key: b"bare".to_vec(),
        payload: vec![0, 0, 0, 0, 1],
        headers: Default::default(),
    };
    city.bus.producer().publish(bare).await.unwrap();
    let dlq = format!("{LICENCES}.dlq");
    wait_for_records(&county_broker, &dlq, 1).await;
    let stages = county.bus.scan_header(&dlq, &Default::default(), "__connect.errors.stage").await.unwrap();
    assert_eq!(stages, vec!["envelope"]);

    // A child's record whose origin is not under the child goes to the city's dead-letter
    // topic, not up.
    publish_case(&county.bus, &county.registry, "610102", 3).await;
    wait_for_records(&city_broker, &format!("{CASES}.dlq"), 1).await;
    let stages =
        city.bus.scan_header(&format!("{CASES}.dlq"), &Default::default(), "__connect.errors.stage").await.unwrap();
    assert_eq!(stages, vec!["origin"]);
    // The classes keep the names tools that read `.dlq` topics filter on.
    let header = "__connect.errors.exception.class.name";
    let classes = city.bus.scan_header(&format!("{CASES}.dlq"), &Default::default(), header).await.unwrap();
    assert_eq!(classes, vec!["origin-outside-child"]);
    assert_eq!(support::records_in_topic(city_broker.bootstrap_servers(), CASES, 3), 0);
    county.shutdown().await.unwrap();
    city.shutdown().await.unwrap();
}

/// A record type onboarded as data travels up too: the city's catalogue says the market
/// regulation bureau's business-licence events flow up, and the city's bridge pulls them from
/// the county without any bridge setting naming the topic, once the catalogue entry is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_type_added_as_data_is_carried_up_when_the_catalogue_says_it_flows_up() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = repo.join("examples/departments/market-regulation");
    let schema = std::fs::read_to_string(example.join(format!("{MARKET}.avsc"))).unwrap();
    let entry = std::fs::read_to_string(example.join("catalog-entry.toml")).unwrap();
    assert!(entry.contains(r#"flows = ["up"]"#), "the example entry travels up: {entry}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example.join("business-licence.json")).unwrap()).unwrap();

    let (city_broker, county_broker) = (cluster(), cluster());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let catalog_file = dirs[2].path().join("catalog.toml");
    std::fs::write(&catalog_file, std::fs::read_to_string(repo.join("schemas/catalog.toml")).unwrap()).unwrap();
    let (mut city, mut county) = city_and_county(&dirs, &city_broker, &county_broker);
    city.catalog_file = Some(catalog_file.clone());
    city.intake.schema_refresh_ms = 200;
    county.intake.schema_refresh_ms = 200;
    let (city, county) = start_with_county_token(city, county, "market-regulation").await;

    // Stewards onboard the record type at both levels, and the city's catalogue lists it.
    let http = reqwest::Client::new();
    for node in [&city, &county] {
        let pushed = http
            .post(format!("http://{}/subjects/{MARKET}-value/versions", node.registry_addr.unwrap()))
            .bearer_auth(crate::support::STEWARD_TOKEN)
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .unwrap();
        assert_eq!(pushed.status(), 200, "{}", pushed.text().await.unwrap());
    }
    let mut catalogue = std::fs::read_to_string(&catalog_file).unwrap();
    catalogue.push('\n');
    catalogue.push_str(&entry);
    std::fs::write(&catalog_file, catalogue).unwrap();

    let county_api = format!("http://{}", county.api_addr().unwrap());
    support::eventually("the county taking the record", Duration::from_secs(20), || async {
        let answer =
            support::post(&format!("{county_api}/v1/market-regulation/business-licence"), "market-regulation", &record)
                .await;
        (answer.status() == 202).then_some(())
    })
    .await;
    wait_for_records(&city_broker, MARKET, 1).await;
    assert_eq!(trails(&city_broker, MARKET).await, vec!["610921,610900"]);
    // Nothing came down: the county has exactly the one it took.
    assert_eq!(support::records_in_topic(county_broker.bootstrap_servers(), MARKET, 3), 1);
    for node in [county, city] {
        node.shutdown().await.unwrap();
    }
}
