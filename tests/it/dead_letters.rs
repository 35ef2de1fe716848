//! Dead letters for people: a steward sees what the e-licence store refused (revocations of
//! licences it has not received), with personal fields masked; a replay before the cause is
//! fixed is refused again; once the licences arrive, a replay of everything applies each
//! revocation exactly once, and a second replay applies nothing. A reader that did not refuse
//! the records never sees a replay.

use std::{process::Command, time::Duration};

use govex_bus::{envelope::Envelope, Encoder, Outgoing};
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
    let (code, printed) = dlq(&api, &["replay", "--all"]);
    assert_eq!(code, 0, "{printed}");
    assert!(printed.contains(&format!("{N} replayed, 1 skipped")), "{printed}");
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
