//! Level bridges across three clusters: case events travel up, licences down, a two-way link
//! does not loop, and a bridge killed mid-stream and restarted loses nothing.

use std::{sync::Arc, time::Duration};

use govex_bus::{
    config::LinkConfig, embedded::EmbeddedBroker, envelope::Envelope, Bus, Department, Division, Encoder, Metrics,
    NodeConfig, Outgoing, RegistryClient,
};
use serde::Serialize;

use crate::{elicense, node::test_node_config, support};

const CASES: &str = "gov.case.event.v1";
const LICENCES: &str = "gov.elicense.licence.v1";

fn cluster() -> Arc<EmbeddedBroker> {
    let broker = Arc::new(EmbeddedBroker::start(3).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            broker.create_topic(&topic, 3, 3).unwrap();
        }
    }
    broker
}

fn config(dir: &std::path::Path, division: &str, broker: &EmbeddedBroker) -> NodeConfig {
    let mut config = test_node_config(dir);
    config.division = Division::parse(division).unwrap();
    config.bus.brokers = Some(broker.bootstrap_servers().to_owned());
    config
}

fn link(broker: &EmbeddedBroker, division: Option<&str>) -> LinkConfig {
    LinkConfig {
        division: division.map(|d| Division::parse(d).unwrap()),
        brokers: broker.bootstrap_servers().to_owned(),
        properties: Default::default(),
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
    let envelope = Envelope::new(Department::Platform, Division::parse(origin).unwrap(), "case-event");
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
    let mut city = config(dirs[0].path(), "610900", &city_broker);
    city.bridge.children = vec![link(&county_broker, Some("610921"))];
    city.bridge.down_topics = both_ways.clone();
    let mut county = config(dirs[1].path(), "610921", &county_broker);
    county.bridge.parent = Some(link(&city_broker, None));
    county.bridge.down_topics = both_ways;
    let city = govex::node::start(city).await.unwrap();
    let county = govex::node::start(county).await.unwrap();

    publish_case(&county.bus, &county.registry, "610921", 7).await;
    wait_for_records(&city_broker, CASES, 1).await;
    // The record comes back down to the county's bridge, which must drop it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = reqwest::get(format!("http://{}/metrics", county.ops_addr)).await.unwrap().text().await.unwrap();
        if metrics.contains(r#"govex_bridge_dropped_loop_records_total{link="down-from-610900"} 1"#) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the county never saw its record come back:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(support::records_in_topic(county_broker.bootstrap_servers(), CASES, 3), 1, "nothing came back");
    assert_eq!(support::records_in_topic(city_broker.bootstrap_servers(), CASES, 3), 1);
    county.shutdown().await.unwrap();
    city.shutdown().await.unwrap();
}
