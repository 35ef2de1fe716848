//! Dead letters for people: a steward sees what the e-licence store refused (revocations of
//! licences it has not received), with personal fields masked; a replay before the cause is
//! fixed is refused again; once the licences arrive, a replay of everything applies each
//! revocation exactly once, and a second replay applies nothing. A reader that did not refuse
//! the records never sees a replay.

use std::{process::Command, time::Duration};

use govex_bus::{envelope::Envelope, Encoder, Outgoing, RegistryClient};
use govex_schemas::{Department, Division};
use govex_sinks::elicense::{Status, TOPIC};
use serde_json::Value;

use crate::{
    elicense::{licence, licence_id, LicenceOut},
    support::{self, token},
};

const N: usize = 12;
const HOLDER: &str = "11010519491231002X";

/// Publishes `records`, each with its own envelope, as a county's platform would.
async fn publish(node: &govex::node::RunningNode, records: &[(LicenceOut, Envelope)]) {
    let text = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).unwrap().text;
    let encoder = Encoder::register(&node.registry, &format!("{TOPIC}-value"), text).await.unwrap();
    for (record, envelope) in records {
        let outgoing = Outgoing::new(TOPIC, record.licence_id.clone(), encoder.encode(record).unwrap(), envelope);
        node.bus.producer().publish(outgoing).await.unwrap();
    }
}

/// `govex dlq <args>` against the node, as a steward; its exit code and what it printed.
fn dlq(api: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_govex"))
        .arg("dlq")
        .args(args)
        .args(["--api", api])
        .env("GOVEX_TOKEN", token("steward"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), printed)
}

/// `govex_elicense_records_total` by outcome and reason, from the node's metrics.
async fn records_counted(node: &govex::node::RunningNode, outcome: &str, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    let series = format!("govex_elicense_records_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_fix_applies_each_dead_letter_once_and_a_second_replay_nothing() {
    let (dir, node) = crate::intake::intake_node().await;
    let api = format!("http://{}", node.api_addr().unwrap());
    let http = reqwest::Client::new();
    // A reader of the licence topic that refuses nothing: it must see each record once.
    let mut other = support::collect(&node.bus, "another-reader", &[TOPIC]);
    let origin = Division::parse("610921").unwrap();
    let serials: Vec<String> = (0..N).map(|n| format!("DL{n:04}")).collect();
    // The issues happened first (their event ids are older) but reach this node last, as
    // they would from a county whose link was down.
    let issues: Vec<_> = serials
        .iter()
        .map(|s| (licence(s, Status::Valid, HOLDER), Envelope::new(Department::PLATFORM, origin, "licence")))
        .collect();
    let revocations: Vec<_> = serials
        .iter()
        .map(|s| (licence(s, Status::Revoked, HOLDER), Envelope::new(Department::PLATFORM, origin, "licence")))
        .collect();
    publish(&node, &revocations).await;

    let list = |query: &'static str, who: &'static str| {
        let request = http.get(format!("{api}/v1/dead-letters{query}")).bearer_auth(token(who));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    support::eventually_saw("every revocation dead-lettered", Duration::from_secs(60), || async {
        match list("?state=open", "steward").await {
            (200, body) if body["total"] == N => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // A department sees no dead letters; an auditor may look.
    assert_eq!(list("", "housing").await.0, 403);
    assert_eq!(list("", "auditor").await.0, 200);
    // Bad input names the rule.
    let (status, body) = list("?topic=gov.nothing.v1", "steward").await;
    assert_eq!((status, body["errors"][0]["rule"].as_str()), (422, Some("topic-unknown")), "{body}");

    let (_, listed) = list("?state=open&limit=500", "steward").await;
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), N);
    for letter in letters {
        assert_eq!(letter["component"], "elicense-store");
        assert_eq!(letter["stage"], "apply");
        assert_eq!(letter["class"], "not_issued");
        assert_eq!(letter["from"]["topic"], TOPIC);
        assert!(letter["replayed"].is_null());
    }
    let first = letters[0]["id"].as_str().unwrap().to_owned();

    // `govex dlq show`: the record, its personal fields masked; the holder never in full.
    let (code, shown) = dlq(&api, &["show", &first]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("not_issued") && shown.contains("holder_identifier_number"), "{shown}");
    assert!(!shown.contains(HOLDER) && !shown.contains("王小明"), "personal data shown: {shown}");
    let (code, listed_text) = dlq(&api, &["list", "--topic", TOPIC]);
    assert_eq!(code, 0, "{listed_text}");
    assert!(listed_text.contains(&format!("{N} dead letters")), "{listed_text}");

    // Before the fix, a replay is refused again: a new dead letter that says which it was.
    let (code, printed) = dlq(&api, &["replay", &first]);
    assert_eq!(code, 0, "{printed}");
    support::eventually_saw("the replay refused again", Duration::from_secs(60), || async {
        match list("?state=open&limit=500", "steward").await {
            (200, body) if body["total"] == N => {
                let again = body["dead_letters"].as_array().unwrap().iter().any(|l| l["replay_of"] == first.as_str());
                if again {
                    Ok(())
                } else {
                    Err(format!("{body}"))
                }
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(records_counted(&node, "rejected", "not_issued").await, N as u64 + 1);

    // The fix: the licences arrive. Then every open dead letter goes back, once.
    publish(&node, &issues).await;
    support::eventually("the licences issued", Duration::from_secs(60), || async {
        (records_counted(&node, "applied", "").await == N as u64).then_some(())
    })
    .await;
    // Every open dead letter but the replay refused again (a sweep leaves those, or a cause
    // left unfixed would make it go round for ever); that one, named, goes back too.
    let (code, printed) = dlq(&api, &["replay", "--all"]);
    assert_eq!(code, 0, "{printed}");
    assert!(printed.contains(&format!("{} replayed, 2 skipped", N - 1)), "{printed}");
    let (_, open) = list("?state=open", "steward").await;
    let again = open["dead_letters"].as_array().unwrap();
    assert_eq!(again.len(), 1, "{open}");
    assert_eq!(again[0]["replay_of"], first.as_str());
    let (code, printed) = dlq(&api, &["replay", again[0]["id"].as_str().unwrap()]);
    assert!(code == 0 && printed.contains("1 replayed"), "{printed}");
    for serial in &serials {
        let url = format!("{api}/v1/licences/{}", licence_id(serial, 1));
        support::eventually_saw("the licence revoked", Duration::from_secs(60), || async {
            let response = http.get(&url).query(&[("purpose", "核验")]).bearer_auth(token("land-registry"));
            let body: Value = response.send().await.unwrap().json().await.unwrap();
            if body["status"] == "REVOKED" {
                Ok(())
            } else {
                Err(body.to_string())
            }
        })
        .await;
    }
    assert_eq!(records_counted(&node, "applied", "").await, 2 * N as u64, "each revocation applied once");
    let (_, open) = list("?state=open", "steward").await;
    assert_eq!(open["total"], 0, "{open}");

    // Everything again, on purpose: nothing applies twice, nothing is refused.
    let (code, printed) = dlq(&api, &["replay", "--all", "--again", "--json"]);
    assert_eq!(code, 0, "{printed}");
    let answer: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(answer["replayed"].as_array().unwrap().len(), N + 1);
    support::eventually("the second replay seen as duplicates", Duration::from_secs(60), || async {
        (records_counted(&node, "skipped", "duplicate").await == N as u64 + 1).then_some(())
    })
    .await;
    assert_eq!(records_counted(&node, "applied", "").await, 2 * N as u64);
    assert_eq!(records_counted(&node, "rejected", "not_issued").await, N as u64 + 1);
    let (_, all) = list("?limit=500", "steward").await;
    assert_eq!(all["total"], N + 1, "no new dead letters: {all}");
    assert!(all["dead_letters"].as_array().unwrap().iter().all(|l| l["replayed"]["times"].as_u64() >= Some(1)));

    // The other reader saw the 2N originals and none of the 2N + 2 replays.
    let mut seen = 0;
    while let Ok(record) = tokio::time::timeout(Duration::from_secs(3), other.next()).await {
        assert!(record.header(govex_bus::dlq::header::REPLAY_FOR).is_none(), "a replay reached another reader");
        seen += 1;
    }
    assert_eq!(seen, 2 * N);
    let stats = other.stop().await;
    assert_eq!(stats.passed_by, 2 * N as u64 + 2, "{stats:?}");

    // Every look and every replay is in the use log, by whom, with its result.
    let data_dir = dir.path().to_path_buf();
    node.shutdown().await.unwrap();
    let log = govex_sinks::use_log::UseLog::open_dir(&data_dir.join("elicense")).unwrap();
    let entries: Vec<_> = log.entries().unwrap().into_iter().filter(|e| e.action == "dead-letter").collect();
    let count = |result: &str| entries.iter().filter(|e| e.result == result).count();
    assert_eq!((count("shown"), count("replayed")), (1, 1 + N + (N + 1)), "{entries:?}");
    assert!(entries.iter().all(|e| e.caller.starts_with("platform")), "{entries:?}");
}

/// The node is killed (SIGKILL) while `govex dlq replay --all` is putting dead letters back,
/// started again, and asked again: every dead letter is put back, every licence ends revoked,
/// nothing is refused again, and the store holds each licence once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_replay_and_asked_again_puts_every_dead_letter_back_and_applies_each_once() {
    use crate::{
        child::{child_config, child_token, ChildBroker, ChildNode},
        faults::{event_ids, records_on},
    };
    const LICENCES: usize = 400;
    let broker = ChildBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = child_config(dir.path(), Some(&broker.bootstrap));
    let steward = child_token("steward");
    config.intake.tokens.push(govex_http::config::TokenConfig::of(
        "platform",
        &steward,
        govex_http::auth::Role::Steward,
    ));
    let mut node = ChildNode::start(dir.path(), &config).await;
    let registry = node.process.printed("schema registry").await.trim_end_matches("/subjects").to_owned();
    let (schema_id, schema) = RegistryClient::http(&registry).latest(&format!("{TOPIC}-value")).await.unwrap();
    let encoder = Encoder::new(schema_id, &schema).unwrap();
    let bus_config = govex_bus::config::BusConfig { brokers: Some(broker.bootstrap.clone()), ..support::bus_config() };
    let bus = govex_bus::Bus::start(&bus_config, &govex_bus::Metrics::new()).unwrap();
    let origin = Division::parse("610921").unwrap();
    let serials: Vec<String> = (0..LICENCES).map(|n| format!("KR{n:04}")).collect();
    let made = |status: Status| -> Vec<(LicenceOut, Envelope)> {
        serials
            .iter()
            .map(|s| (licence(s, status, HOLDER), Envelope::new(Department::PLATFORM, origin, "licence")))
            .collect()
    };
    let (issues, revocations) = (made(Status::Valid), made(Status::Revoked));
    let publish = |records: Vec<(LicenceOut, Envelope)>| {
        let outgoing: Vec<Outgoing> = records
            .iter()
            .map(|(r, e)| Outgoing::new(TOPIC, r.licence_id.clone(), encoder.encode(r).unwrap(), e))
            .collect();
        let producer = bus.producer().clone();
        async move {
            for delivered in producer.publish_all(outgoing).await {
                delivered.unwrap();
            }
        }
    };
    publish(revocations).await;
    let dead = format!("{TOPIC}.dlq");
    support::until("every revocation dead-lettered", Duration::from_secs(90), || {
        records_on(&broker.bootstrap, &dead) == LICENCES as i64
    })
    .await;
    publish(issues).await;
    support::eventually("the licences issued", Duration::from_secs(90), || async {
        (node.metric("govex_elicense_store_licences").await == LICENCES as f64).then_some(())
    })
    .await;

    // Kill the node once some replays are on the topic and before all are.
    let replaying = {
        let api = node.api.clone();
        let steward = steward.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_govex"))
                .args(["dlq", "replay", "--all", "--api", &api])
                .env("GOVEX_TOKEN", steward)
                .output()
                .unwrap()
        })
    };
    let before = 2 * LICENCES as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while records_on(&broker.bootstrap, TOPIC) <= before + 5 {
        assert!(std::time::Instant::now() < deadline, "no replay reached the topic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.process.kill9();
    let cut_short = replaying.await.unwrap();
    let put_back = records_on(&broker.bootstrap, TOPIC) - before;
    assert!(!cut_short.status.success() && put_back < LICENCES as i64, "the kill came too late: {put_back} put back");
    eprintln!("killed after {put_back} of {LICENCES} dead letters were put back");

    // Started again and asked again: the rest goes back.
    let node = ChildNode::start(dir.path(), &config).await;
    let mut rounds = 0;
    loop {
        let output = Command::new(env!("CARGO_BIN_EXE_govex"))
            .args(["dlq", "replay", "--all", "--api", &node.api])
            .env("GOVEX_TOKEN", &steward)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        rounds += 1;
        if output.status.success() {
            break;
        }
        assert!(rounds < 5 && output.status.code() == Some(2), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    }
    let http = reqwest::Client::new();
    let open = http
        .get(format!("{}/v1/dead-letters?state=open", node.api))
        .bearer_auth(&steward)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(open["total"], 0, "{open}");
    // Every dead letter's event id went back at least once; those the kill caught between the
    // replay and its record went back twice, which the store drops.
    let revocation_ids: std::collections::HashSet<String> = event_ids(&broker.bootstrap, &dead).into_iter().collect();
    let on_topic = event_ids(&broker.bootstrap, TOPIC);
    let replayed: std::collections::HashSet<&String> =
        on_topic.iter().filter(|id| revocation_ids.contains(*id)).collect();
    assert_eq!(replayed.len(), LICENCES, "every dead letter put back");
    // The store has read the topic to its end: then every licence must be revoked.
    support::eventually("the e-licence sink at the topic's end", Duration::from_secs(90), || async {
        let text = reqwest::get(format!("{}/metrics", node.ops)).await.ok()?.text().await.ok()?;
        let lags: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("govex_bus_consumer_lag_records{") && l.contains("-elicense\""))
            .filter(|l| l.contains(&format!("topic=\"{TOPIC}\"")) || !l.contains("topic="))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        let applied = node.metric("govex_elicense_records_total").await;
        (!lags.is_empty() && lags.iter().all(|lag| *lag == 0.0) && applied > 0.0).then_some(())
    })
    .await;
    assert_eq!(node.metric("govex_elicense_store_licences").await, LICENCES as f64, "each licence once");
    assert_eq!(records_on(&broker.bootstrap, &dead), LICENCES as i64, "nothing refused again");
    assert_eq!(node.metric("govex_elicense_records_total{outcome=\"rejected\"").await, 0.0);
    let mut node = node;
    node.process.terminate(Duration::from_secs(60)).await;
    let store = govex_sinks::elicense::LicenceStore::open(&config.data_dir.join("elicense")).unwrap();
    let all = store.all().unwrap();
    assert_eq!(all.len(), LICENCES, "each licence once");
    let revoked = all.iter().filter(|l| l.status == Status::Revoked).count();
    assert_eq!(revoked, LICENCES, "every revocation applied");
}
