//! The registry is a view of its compacted topic: several processes serve from views of
//! their own, an intake that only follows the topic takes a pushed version live, a registry
//! that lost its volume is rebuilt from the topic with every id keeping its meaning, and a
//! registry whose Kafka is gone keeps answering reads and refuses writes with the reason.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use govex::config::Component;
use govex::config::NodeConfig;
use govex_bus::embedded::EmbeddedBroker;
use govex_schemas::journal::TOPIC;
use serde_json::{json, Value};

use crate::{intake::intake_config, support::STEWARD_TOKEN};

const SUBJECT: &str = "gov.housing.contract-filing.v1-value";
const REMARK: &str =
    r#"{"name": "remark", "type": ["null", "string"], "default": null, "govex.json": {"maxLength": 200}}"#;

/// A shared cluster with the topics an operator's cluster would have (the mock cluster has
/// no CreateTopics).
fn shared_broker() -> EmbeddedBroker {
    let broker = EmbeddedBroker::start(1).unwrap();
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
            broker.create_topic(&topic, 3, 1).unwrap();
        }
    }
    broker
}

fn process(dir: &Path, bootstrap: &str, components: &[Component]) -> NodeConfig {
    let mut config = intake_config(dir);
    config.division = govex_schemas::Division::parse("610921").unwrap();
    config.bus.brokers = Some(bootstrap.to_owned());
    config.bus.replication_factor = 1;
    config.components = components.to_vec();
    config.intake.schema_refresh_ms = 200;
    config
}

/// The bundled contract-filing schema with `fields` added before `division`.
fn with_fields(fields: &[&str]) -> String {
    let text = govex_schemas::bundled_schemas().find(|s| s.subject() == SUBJECT).unwrap().text.to_owned();
    let added: String = fields.iter().map(|f| format!("{f},\n    ")).collect();
    let edited = text.replacen(r#"{"name": "division""#, &format!("{added}{{\"name\": \"division\""), 1);
    assert_ne!(edited, text);
    edited
}

async fn register(registry: &str, subject: &str, schema: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{registry}/subjects/{subject}/versions"))
        .bearer_auth(STEWARD_TOKEN)
        .json(&json!({ "schema": schema }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Every id the registry serves and the text behind it, and every subject's versions with
/// their ids: what must survive the loss of a volume.
async fn contents(registry: &str) -> (BTreeMap<u32, String>, BTreeMap<String, Vec<(u32, u32)>>) {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(format!("{registry}{path}")).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut ids = BTreeMap::new();
    let mut subjects = BTreeMap::new();
    for subject in get("/subjects".into()).await.as_array().unwrap() {
        let subject = subject.as_str().unwrap().to_owned();
        let mut versions = Vec::new();
        for version in get(format!("/subjects/{subject}/versions")).await.as_array().unwrap() {
            let found = get(format!("/subjects/{subject}/versions/{version}")).await;
            let id = found["id"].as_u64().unwrap() as u32;
            ids.insert(id, found["schema"].as_str().unwrap().to_owned());
            versions.push((version.as_u64().unwrap() as u32, id));
        }
        subjects.insert(subject, versions);
    }
    (ids, subjects)
}

async fn submit(api: &str, record: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{api}/v1/housing/contract-filing"))
        .bearer_auth(crate::support::token("housing"))
        .json(record)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Submits until the answer is `want` (a version going live), for at most 10 s.
async fn until_status(api: &str, record: &Value, want: u16) -> Value {
    crate::support::eventually(&format!("an answer {want}"), Duration::from_secs(10), || async {
        let (status, answer) = submit(api, record).await;
        (status == want).then_some(answer)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_follows_the_registry_topic_and_a_lost_registry_volume_is_rebuilt_from_it() {
    let broker = shared_broker();
    let bootstrap = broker.bootstrap_servers().to_owned();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let registry = govex::node::start(process(dirs[0].path(), &bootstrap, &[Component::Registry])).await.unwrap();
    let registry_url = format!("http://{}", registry.registry_addr.unwrap());
    // The intake names no registry: it follows the registry's topic into a view of its own.
    let intake = govex::node::start(process(dirs[1].path(), &bootstrap, &[Component::Intake])).await.unwrap();
    let api = format!("http://{}", intake.api_addr().unwrap());

    let mut record = govex_adapters::samples::sample("housing", "contract-filing", 1).unwrap();
    record["remark"] = json!("二手房网签");
    let (status, answer) = submit(&api, &record).await;
    assert_eq!(status, 422, "{answer}");

    // Pushed to the registry process; live in the intake process, which never calls it.
    let (status, answer) = register(&registry_url, SUBJECT, &with_fields(&[REMARK])).await;
    assert_eq!(status, 200, "{answer}");
    let answer = until_status(&api, &record, 202).await;
    assert!(answer["event_id"].is_string(), "{answer}");

    // The registry's writes are on its topic: one schema record per id and one version
    // record per version (seeding sets no levels), nothing else.
    let before = contents(&registry_url).await;
    let on_topic = crate::support::records_in_topic(&bootstrap, TOPIC, 1);
    let versions: usize = before.1.values().map(Vec::len).sum();
    assert_eq!(on_topic as usize, before.0.len() + versions, "records on {TOPIC}");

    // The volume is lost: a registry on an empty data directory reads the topic back.
    registry.shutdown().await.unwrap();
    std::fs::remove_dir_all(dirs[0].path().join("registry")).unwrap();
    let mut config = process(dirs[0].path(), &bootstrap, &[Component::Registry]);
    config.listen.registry = SocketAddr::from(([127, 0, 0, 1], 0));
    let rebuilt = govex::node::start(config).await.unwrap();
    let rebuilt_url = format!("http://{}", rebuilt.registry_addr.unwrap());
    let after = contents(&rebuilt_url).await;
    assert_eq!(after, before, "the rebuilt registry serves every id and version as before");
    // Seeding found every bundled subject there and wrote nothing.
    assert_eq!(crate::support::records_in_topic(&bootstrap, TOPIC, 1), on_topic);

    // The rebuilt registry takes the next version, with the next id, and the intake follows.
    let note = r#"{"name": "note", "type": ["null", "string"], "default": null}"#;
    let (status, answer) = register(&rebuilt_url, SUBJECT, &with_fields(&[REMARK, note])).await;
    assert_eq!(status, 200, "{answer}");
    let new_id = answer["id"].as_u64().unwrap() as u32;
    assert_eq!(new_id, before.0.keys().max().unwrap() + 1, "ids continue after the highest one");
    record["note"] = json!("补录");
    until_status(&api, &record, 202).await;

    // A third process follows too; it takes no writes, and says where they go.
    let reader = govex::node::start(process(dirs[2].path(), &bootstrap, &[Component::Elicense])).await.unwrap();
    let refused = reader.registry.register("gov.someone-value", r#"{"type":"string"}"#).await.unwrap_err();
    assert!(refused.to_string().contains("takes no writes"), "{refused}");
    assert_eq!(reader.registry.schema_text_by_id(new_id).await.unwrap(), with_fields(&[REMARK, note]));

    reader.shutdown().await.unwrap();
    intake.shutdown().await.unwrap();
    rebuilt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_whose_kafka_is_gone_answers_reads_and_refuses_writes_with_the_reason() {
    let broker = shared_broker();
    let dir = tempfile::tempdir().unwrap();
    let registry =
        govex::node::start(process(dir.path(), broker.bootstrap_servers(), &[Component::Registry])).await.unwrap();
    let url = format!("http://{}", registry.registry_addr.unwrap());
    let before = contents(&url).await;
    broker.broker_down(1).unwrap();

    let after = contents(&url).await;
    assert_eq!(after, before, "reads are served from the view");
    let started = std::time::Instant::now();
    let (status, answer) = register(&url, SUBJECT, &with_fields(&[REMARK])).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error_code"], 50002);
    assert!(answer["message"].as_str().unwrap().contains(TOPIC), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(30), "the write was bounded: {:?}", started.elapsed());
    // Nothing was stored: the refused version is nowhere.
    assert_eq!(contents(&url).await, before);

    broker.broker_up(1).unwrap();
    registry.shutdown().await.unwrap();
}

/// Records the registry did not write (a second writer, or anyone else producing to its
/// topic) cannot change what an id or a version means, cannot stop the registry, and what the
/// views kept is put back on the topic, so that compaction keeps it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_registry_did_not_write_change_no_ids_meaning_and_stop_nothing() {
    use govex_bus::rdkafka::{
        config::ClientConfig,
        producer::{BaseProducer, BaseRecord, Producer},
    };
    let broker = std::sync::Arc::new(shared_broker());
    let dir = tempfile::tempdir().unwrap();
    let registry =
        govex::node::start(process(dir.path(), broker.bootstrap_servers(), &[Component::Registry])).await.unwrap();
    let url = format!("http://{}", registry.registry_addr.unwrap());
    let original = r#"{"type":"record","name":"Mine","fields":[{"name":"a","type":"int"}]}"#;
    let (status, answer) = register(&url, "mine", original).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_u64().unwrap();

    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap_servers()).create().unwrap();
    let hijack = r#"{"type":"record","name":"Hijacked","fields":[{"name":"b","type":"string"}]}"#;
    let records = [
        (format!(r#"{{"kind":"schema","id":{id}}}"#), Some(json!({ "schema": hijack }).to_string())),
        (r#"{"kind":"schema","id":4294967295}"#.to_owned(), Some(json!({ "schema": hijack }).to_string())),
        (r#"{"kind":"version","subject":"mine","version":1}"#.to_owned(), Some(r#"{"id":999,"deleted":false}"#.into())),
        (
            r#"{"kind":"version","subject":"ghost","version":1}"#.to_owned(),
            Some(r#"{"id":999,"deleted":false}"#.into()),
        ),
        (r#"{"kind":"mode","subject":""}"#.to_owned(), Some(r#"{"mode":"BOGUS"}"#.into())),
    ];
    for (key, value) in &records {
        let mut record = BaseRecord::<String, String>::to(TOPIC).key(key).partition(0);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // The registry still serves what it acknowledged, and takes the next push.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let next = loop {
        let (status, answer) = register(&url, "theirs", r#"{"type":"record","name":"Theirs","fields":[]}"#).await;
        if status == 200 {
            break answer["id"].as_u64().unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "pushes stay refused: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(next, id + 1);
    let http = reqwest::Client::new();
    let by_id: Value = http.get(format!("{url}/schemas/ids/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(by_id["schema"], original);
    let mine: Value = http.get(format!("{url}/subjects/mine/versions/1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["id"].as_u64(), Some(id), "{mine}");
    let mode: Value = http.get(format!("{url}/mode")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mode["mode"], "READWRITE");

    // The last record of each hijacked key is the registry's again: compaction keeps it.
    let bus =
        govex_bus::Bus::on_embedded(&crate::support::bus_config(), broker.clone(), &govex_bus::Metrics::new()).unwrap();
    let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut read = bus.read_to_end(TOPIC, &Default::default()).await.unwrap();
    while let Some(message) = read.recv().await {
        let message = message.unwrap();
        last.insert(message.key().unwrap_or_default().to_vec(), message.payload().map(<[u8]>::to_vec));
    }
    let value_of =
        |key: &str| last.get(key.as_bytes()).cloned().flatten().map(|v| serde_json::from_slice::<Value>(&v).unwrap());
    assert_eq!(value_of(&format!(r#"{{"kind":"schema","id":{id}}}"#)), Some(json!({ "schema": original })));
    assert_eq!(
        value_of(r#"{"kind":"version","subject":"mine","version":1}"#),
        Some(json!({ "id": id, "deleted": false }))
    );
    registry.shutdown().await.unwrap();
}

/// A registry started on a topic that is not the one it read (deleted and filled again with
/// more records than it had applied) tells them apart by its last record and does not start,
/// saying what to do; on an empty topic it writes its state back, and a process following
/// that topic sees every schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_on_a_replaced_topic_refuses_and_on_an_empty_one_writes_its_state_back() {
    use govex_bus::rdkafka::{
        config::ClientConfig,
        producer::{BaseProducer, BaseRecord, Producer},
    };
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = shared_broker();
    let registry =
        govex::node::start(process(dirs[0].path(), first.bootstrap_servers(), &[Component::Registry])).await.unwrap();
    let url = format!("http://{}", registry.registry_addr.unwrap());
    let (status, answer) = register(&url, SUBJECT, &with_fields(&[REMARK])).await;
    assert_eq!(status, 200, "{answer}");
    let before = contents(&url).await;
    let applied = crate::support::records_in_topic(first.bootstrap_servers(), TOPIC, 1);
    registry.shutdown().await.unwrap();
    drop(first);

    // Another cluster, whose topic of that name holds more records than were applied, none
    // of them the registry's.
    let second = shared_broker();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", second.bootstrap_servers()).create().unwrap();
    for n in 0..applied + 10 {
        let key = format!(r#"{{"kind":"compatibility","subject":"junk{n}"}}"#);
        let record = BaseRecord::<String, str>::to(TOPIC).key(&key).payload(r#"{"compatibilityLevel":"NONE"}"#);
        producer.send(record.partition(0)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut config = process(dirs[0].path(), second.bootstrap_servers(), &[Component::Registry]);
    config.listen.registry = SocketAddr::from(([127, 0, 0, 1], 0));
    let refused = format!("{:#}", govex::node::start(config).await.err().unwrap());
    assert!(refused.contains("records this registry did not read"), "{refused}");
    assert!(refused.contains("its last record is not where it was"), "{refused}");
    assert!(refused.contains("move the registry's store"), "{refused}");

    // An empty topic of that name: the registry writes its state back.
    let third = shared_broker();
    let mut config = process(dirs[0].path(), third.bootstrap_servers(), &[Component::Registry]);
    config.listen.registry = SocketAddr::from(([127, 0, 0, 1], 0));
    let registry = govex::node::start(config).await.unwrap();
    let url = format!("http://{}", registry.registry_addr.unwrap());
    let (ids, subjects) = contents(&url).await;
    assert_eq!(ids, before.0);
    assert!(before.1.iter().all(|(s, v)| subjects.get(s) == Some(v)), "{subjects:?}");

    // A follower on the new cluster takes the pushed version live.
    let intake =
        govex::node::start(process(dirs[1].path(), third.bootstrap_servers(), &[Component::Intake])).await.unwrap();
    let mut record = govex_adapters::samples::sample("housing", "contract-filing", 2).unwrap();
    record["remark"] = json!("换到新集群");
    until_status(&format!("http://{}", intake.api_addr().unwrap()), &record, 202).await;
    intake.shutdown().await.unwrap();
    registry.shutdown().await.unwrap();
}

/// Several registry replicas serve: a read replica answers from its own view of the topic
/// and forwards writes to the writer, answering them once its view has them; with the
/// writer gone it still serves reads, and a write says where forwarding failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_serves_its_view_and_forwards_writes_to_the_writer() {
    let broker = shared_broker();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let writer =
        govex::node::start(process(dirs[0].path(), broker.bootstrap_servers(), &[Component::Registry])).await.unwrap();
    let writer_url = format!("http://{}", writer.registry_addr.unwrap());
    let mut config = process(dirs[1].path(), broker.bootstrap_servers(), &[Component::Registry]);
    config.registry.writer_url = Some(writer_url.clone());
    let replica = govex::node::start(config).await.unwrap();
    let replica_url = format!("http://{}", replica.registry_addr.unwrap());
    assert!(!dirs[1].path().join("registry").exists(), "a read replica keeps no registry store on disk");
    assert_eq!(contents(&replica_url).await, contents(&writer_url).await);

    // A push through the replica is the writer's, and readable on the replica at once.
    let (status, answer) = register(&replica_url, SUBJECT, &with_fields(&[REMARK])).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_u64().unwrap();
    let http = reqwest::Client::new();
    for url in [&replica_url, &writer_url] {
        let latest: Value =
            http.get(format!("{url}/subjects/{SUBJECT}/versions/latest")).send().await.unwrap().json().await.unwrap();
        assert_eq!(latest["id"].as_u64(), Some(id), "{url}: {latest}");
    }
    // The writer decides: an incompatible push through the replica is refused with its rule,
    // and one without a steward's token is refused by the writer's access rule.
    let breaking = with_fields(&[r#"{"name": "floor", "type": "int"}"#]);
    let (status, answer) = register(&replica_url, SUBJECT, &breaking).await;
    assert_eq!((status, answer["error_code"].as_u64()), (409, Some(409)), "{answer}");
    let anonymous = http
        .post(format!("{replica_url}/subjects/{SUBJECT}/versions"))
        .json(&json!({ "schema": breaking }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    writer.shutdown().await.unwrap();
    let versions: Value =
        http.get(format!("{replica_url}/subjects/{SUBJECT}/versions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(versions, json!([1, 2]));
    let (status, answer) = register(
        &replica_url,
        SUBJECT,
        &with_fields(&[REMARK, r#"{"name": "x", "type": ["null", "string"], "default": null}"#]),
    )
    .await;
    assert_eq!((status, answer["error_code"].as_u64()), (503, Some(50003)), "{answer}");
    replica.shutdown().await.unwrap();
}
