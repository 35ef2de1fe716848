//! Sharing governance: a department asks for a conditional resource, its owner narrows and
//! approves the request, the reader sees what was granted and no more, and a revocation
//! ends it at once. Every step is in the hash-chained use log.

use std::time::Duration;

use govex_adapters::samples::{property_unit_number, sample};
use serde_json::{json, Value};

use crate::support::token;

const FILINGS: &str = "housing.contract-filing";

/// The bundled catalogue with tax neither a subscriber of housing's contract filings nor a
/// reader of their personal data: what it reads, a subscription must grant.
pub(crate) fn catalogue_without_tax() -> String {
    let bundled = include_str!("../../schemas/catalog.toml");
    let (before, after) = bundled.split_once("id = \"housing.contract-filing\"").unwrap();
    let after = after
        .replacen(
            r#"subscribers = ["land-registry", "tax", "provident-fund"]"#,
            r#"subscribers = ["land-registry"]"#,
            1,
        )
        .replacen(
            r#"personal_data_readers = ["land-registry", "tax"]"#,
            r#"personal_data_readers = ["land-registry"]"#,
            1,
        );
    format!("{before}id = \"housing.contract-filing\"{after}")
}

/// Years after the published ones, with no holiday: the test must not depend on the day it runs.
pub(crate) const LATER_YEARS: &str = "[[year]]\nyear = 2027\nholidays = []\n[[year]]\nyear = 2028\nholidays = []\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tax_asks_housing_narrows_and_approves_reads_are_masked_as_granted_and_a_revocation_ends_them() {
    let (dir, node) = crate::intake::intake_node_with(|config| {
        let catalogue = config.data_dir.join("catalog.toml");
        std::fs::write(&catalogue, catalogue_without_tax()).unwrap();
        config.catalog_file = Some(catalogue);
        let calendar = config.data_dir.join("calendar.toml");
        std::fs::write(&calendar, LATER_YEARS).unwrap();
        config.governance.calendar_file = Some(calendar);
    })
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    let filing = sample("housing", "contract-filing", 7).unwrap();
    let buyer_name = filing["buyers"][0]["name"].as_str().unwrap().to_owned();
    let buyer_id = filing["buyers"][0]["identifier_number"].as_str().unwrap().to_owned();
    let sent = http.post(format!("{base}/v1/housing/contract-filing")).bearer_auth(token("housing")).json(&filing);
    assert_eq!(sent.send().await.unwrap().status(), 202);
    let record_url = format!("{base}/v1/resources/{FILINGS}/records/{}", property_unit_number(7));
    let read = |department: &'static str| {
        let request = http.get(&record_url).query(&[("purpose", "契税征收核验")]).bearer_auth(token(department));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Land registry, a subscriber in the catalogue, sees the filing once it has arrived.
    crate::support::eventually_saw("the filing in the shared view", Duration::from_secs(60), || async {
        match read("land-registry").await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // 1. Before any request: refused.
    assert_eq!(read("tax").await.0, 403);

    // 2. Tax asks, naming the buyers' names.
    let today = govex_sinks::governance::today();
    let until = today + chrono::Days::new(90);
    let filed = http
        .post(format!("{base}/v1/subscriptions"))
        .bearer_auth(token("tax"))
        .json(&json!({"resource": FILINGS, "purpose": "契税征收核验", "fields": ["buyers[].name"], "until": until}))
        .send()
        .await
        .unwrap();
    assert_eq!(filed.status(), 201);
    let filed: Value = filed.json().await.unwrap();
    assert_eq!(filed["state"], "pending");
    let calendar = govex_schemas::calendar::WorkingCalendar::bundled_with(LATER_YEARS).unwrap();
    assert_eq!(filed["due"], json!(calendar.add_working_days(today, 10).unwrap()), "10 working days");
    let id = filed["id"].as_str().unwrap().to_owned();
    assert_eq!(read("tax").await.0, 403, "pending grants nothing");

    // A request that asks for a field that is not personal, or for a resource nobody shares,
    // is refused naming the field and the rule.
    for (body, pointer, rule) in [
        (
            json!({"resource": FILINGS, "purpose": "x", "fields": ["total_price"], "until": until}),
            "/fields",
            "field-not-personal",
        ),
        (
            json!({"resource": "provident-fund.event", "purpose": "x", "until": until}),
            "/resource",
            "resource-not-shared",
        ),
        (json!({"resource": FILINGS, "purpose": " ", "until": until}), "/purpose", "purpose-required"),
        (json!({"resource": FILINGS, "purpose": "x", "until": today}), "/until", "period"),
        (
            json!({"resource": "elicense.licence", "purpose": "x", "fields": ["holder_name"], "until": until}),
            "/resource",
            "resource-not-subscribable",
        ),
    ] {
        let answer =
            http.post(format!("{base}/v1/subscriptions")).bearer_auth(token("tax")).json(&body).send().await.unwrap();
        assert_eq!(answer.status(), 422);
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(
            (problem["errors"][0]["pointer"].as_str(), problem["errors"][0]["rule"].as_str()),
            (Some(pointer), Some(rule)),
            "{problem}"
        );
    }

    // A body past the routes' 16 KiB limit is refused before it is read as JSON.
    let huge = json!({"resource": FILINGS, "purpose": "x".repeat(20 * 1024), "until": until});
    let answer = http.post(format!("{base}/v1/subscriptions")).bearer_auth(token("tax")).json(&huge).send();
    assert_eq!(answer.await.unwrap().status(), 413);

    // 3. Housing sees it among those it must answer; tax cannot answer its own request, and
    //    a department it does not concern cannot see it at all.
    let pending: Value = http
        .get(format!("{base}/v1/subscriptions?as=owner&state=pending"))
        .bearer_auth(token("housing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["subscriptions"][0]["id"], id.as_str());
    assert_eq!(pending["subscriptions"][0]["overdue"], false);
    let decide = |department: &'static str, body: Value| {
        http.post(format!("{base}/v1/subscriptions/{id}/decision")).bearer_auth(token(department)).json(&body).send()
    };
    assert_eq!(decide("tax", json!({"decision": "approve"})).await.unwrap().status(), 403);
    let stranger = http.get(format!("{base}/v1/subscriptions/{id}")).bearer_auth(token("provident-fund")).send();
    assert_eq!(stranger.await.unwrap().status(), 404);
    // Narrowing without a reason is refused; granting a field not asked for is refused.
    let unexplained = decide("housing", json!({"decision": "approve", "fields": []})).await.unwrap();
    assert_eq!(unexplained.status(), 422);
    let widened =
        decide("housing", json!({"decision": "approve", "fields": ["buyers[].identifier_number"], "reason": "x"}));
    assert_eq!(widened.await.unwrap().status(), 422);

    // 4. Housing narrows it to no personal field and approves.
    let approved = decide("housing", json!({"decision": "approve", "fields": [], "reason": "核验契税无需买受人姓名"}))
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let approved: Value = approved.json().await.unwrap();
    assert_eq!(
        (approved["state"].as_str(), approved["granted_fields"].as_array().map(Vec::len)),
        (Some("approved"), Some(0))
    );
    assert_eq!(decide("housing", json!({"decision": "reject", "reason": "again"})).await.unwrap().status(), 409);
    // Answered the day it was filed: on time, in its own view and in the on-time rate.
    let shown = http.get(format!("{base}/v1/subscriptions/{id}")).bearer_auth(token("tax")).send();
    let shown: Value = shown.await.unwrap().json().await.unwrap();
    assert_eq!((shown["answered_on_time"].as_bool(), shown["running"].as_bool()), (Some(true), Some(true)));
    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    for line in [
        "govex_subscription_requests_answered{on_time=\"true\"} 1",
        "govex_subscription_requests_answered{on_time=\"false\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in the metrics");
    }

    // 5. Tax reads, with the buyers masked, for the purpose approved and no other.
    let other_purpose = http.get(&record_url).query(&[("purpose", "随便看看")]).bearer_auth(token("tax")).send();
    assert_eq!(other_purpose.await.unwrap().status(), 403);
    let (status, seen) = read("tax").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["personal_data_masked"], true);
    let text = seen.to_string();
    assert!(!text.contains(&buyer_name) && !text.contains(&buyer_id), "{text}");
    assert_eq!(seen["record"]["total_price"], filing["total_price"]);

    // 6. Housing revokes it: refused again at once.
    let revoked = http
        .post(format!("{base}/v1/subscriptions/{id}/revoke"))
        .bearer_auth(token("housing"))
        .json(&json!({"reason": "核验已完成"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(read("tax").await.0, 403);

    // 7. Every step is in the use log, whose chain holds.
    let data_dir = dir.path().to_path_buf();
    node.shutdown().await.unwrap();
    let log = govex_sinks::use_log::UseLog::open_dir(&data_dir.join("elicense")).unwrap();
    let subject = format!("subscription/{id} {FILINGS}");
    let steps: Vec<(String, String)> =
        log.entries().unwrap().into_iter().filter(|e| e.subject == subject).map(|e| (e.caller, e.result)).collect();
    let expected = [("tax", "pending"), ("housing", "approved"), ("housing", "revoked")];
    assert_eq!(steps, expected.map(|(c, r)| (c.to_owned(), r.to_owned())));
    let reads: Vec<String> = log
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.caller == "tax" && e.action == "resource")
        .map(|e| e.result)
        .collect();
    assert_eq!(reads, ["found"], "tax's one granted read is logged; the refused ones never reached the store");
    assert_eq!(log.verify_chain().unwrap().1, None, "the chain holds");
}

/// The subscription topic is the record; the view is rebuilt from it when its volume is lost,
/// and writes itself back when the topic lost its records (a new embedded bus, a topic made
/// again): either way the restarted node grants what it granted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_survives_a_lost_view_and_an_empty_topic() {
    let dir = tempfile::tempdir().unwrap();
    // Clusters of their own, outliving a node, with the topics made as an operator makes them
    // (the mock cluster has no CreateTopics).
    let cluster = || {
        let broker = std::sync::Arc::new(govex_bus::embedded::EmbeddedBroker::start(3).unwrap());
        for schema in govex_schemas::bundled_schemas() {
            for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
                broker.create_topic(&topic, 3, 3).unwrap();
            }
        }
        broker
    };
    let first_broker = cluster();
    let mut config = crate::intake::intake_config(dir.path());
    config.bus.brokers = Some(first_broker.bootstrap_servers().to_owned());
    let catalogue = dir.path().join("catalog.toml");
    std::fs::write(&catalogue, catalogue_without_tax()).unwrap();
    config.catalog_file = Some(catalogue);
    let calendar = dir.path().join("calendar.toml");
    std::fs::write(&calendar, LATER_YEARS).unwrap();
    config.governance.calendar_file = Some(calendar);
    let node = govex::node::start(config.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    let until = govex_sinks::governance::today() + chrono::Days::new(30);
    let body = json!({"resource": FILINGS, "purpose": "契税征收核验", "until": until});
    let filed = http.post(format!("{base}/v1/subscriptions")).bearer_auth(token("tax")).json(&body).send();
    let filed: Value = filed.await.unwrap().json().await.unwrap();
    let id = filed["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/v1/subscriptions/{id}/decision");
    let approved = http.post(url).bearer_auth(token("housing")).json(&json!({"decision": "approve"})).send();
    assert_eq!(approved.await.unwrap().status(), 200);
    node.shutdown().await.unwrap();

    let state_after_start = |config: govex::config::NodeConfig| {
        let id = id.clone();
        async move {
            let node = govex::node::start(config).await.unwrap();
            let url = format!("http://{}/v1/subscriptions/{id}", node.api_addr().unwrap());
            let answer = reqwest::Client::new().get(url).bearer_auth(token("tax")).send().await.unwrap();
            let state = answer.json::<Value>().await.unwrap()["state"].as_str().map(str::to_owned);
            node.shutdown().await.unwrap();
            state
        }
    };
    // The view's volume lost, the topic kept: the view is read back from the topic.
    std::fs::remove_dir_all(dir.path().join("governance")).unwrap();
    assert_eq!(state_after_start(config.clone()).await.as_deref(), Some("approved"));
    // A new cluster whose topic is empty, the volume kept: the view writes itself back, and a
    // third start, with the volume lost again, reads it from there.
    let second_broker = cluster();
    config.bus.brokers = Some(second_broker.bootstrap_servers().to_owned());
    assert_eq!(state_after_start(config.clone()).await.as_deref(), Some("approved"));
    std::fs::remove_dir_all(dir.path().join("governance")).unwrap();
    assert_eq!(state_after_start(config).await.as_deref(), Some("approved"));
}

/// Tax objects to the price of a contract filing it reads; every view of the record shows it
/// disputed until housing resolves the objection, which it can only mark corrected by naming
/// a newer record of that key that the shared view holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objection_flags_the_record_everywhere_until_its_owner_resolves_it() {
    let (dir, node) = crate::intake::intake_node().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    let unit = property_unit_number(8);
    let mut filing = sample("housing", "contract-filing", 8).unwrap();
    let send = |filing: Value| {
        http.post(format!("{base}/v1/housing/contract-filing")).bearer_auth(token("housing")).json(&filing).send()
    };
    assert_eq!(send(filing.clone()).await.unwrap().status(), 202);
    let record_url = format!("{base}/v1/resources/{FILINGS}/records/{unit}");
    let read = |department: &'static str| {
        let request = http.get(&record_url).query(&[("purpose", "契税征收核验")]).bearer_auth(token(department));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = crate::support::eventually_saw("the filing in the shared view", Duration::from_secs(60), || async {
        let seen = read("tax").await;
        if seen["event_id"].is_string() {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    assert_eq!(first["disputed"], json!([]));
    let dossier = || {
        let request = http
            .get(format!("{base}/v1/dossiers/{unit}"))
            .query(&[("purpose", "并联审核")])
            .bearer_auth(token("land-registry"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let raise = |department: &'static str, body: Value| {
        http.post(format!("{base}/v1/objections")).bearer_auth(token(department)).json(&body).send()
    };
    let objection =
        json!({"resource": FILINGS, "key": unit, "pointer": "/total_price", "reason": "合同价与完税价不符"});

    // Platform does not read housing's filings: it cannot object to one, nor learn whether it exists.
    assert_eq!(raise("platform", objection.clone()).await.unwrap().status(), 403);
    // A field the record does not have, a key no record has.
    let nowhere = json!({"resource": FILINGS, "key": unit, "pointer": "/no_such_field", "reason": "x"});
    assert_eq!(raise("tax", nowhere).await.unwrap().status(), 422);
    let unknown =
        json!({"resource": FILINGS, "key": "610921001001GB99999F99999999", "pointer": "/total_price", "reason": "x"});
    assert_eq!(raise("tax", unknown).await.unwrap().status(), 404);

    let raised = raise("tax", objection.clone()).await.unwrap();
    assert_eq!(raised.status(), 201);
    let raised: Value = raised.json().await.unwrap();
    let id = raised["id"].as_str().unwrap().to_owned();
    assert_eq!(raised["outcome"], "open");

    // Disputed wherever the record is shown, to every reader.
    let disputed =
        |view: &Value| view["disputed"].as_array().map(|d| d.iter().map(|x| x["pointer"].clone()).collect::<Vec<_>>());
    assert_eq!(disputed(&read("tax").await), Some(vec![json!("/total_price")]));
    assert_eq!(disputed(&read("land-registry").await), Some(vec![json!("/total_price")]));
    assert_eq!(disputed(&dossier().await["parts"]["contract_filing"]), Some(vec![json!("/total_price")]));
    // The owner finds it in its list.
    let owner_list: Value = http
        .get(format!("{base}/v1/objections?as=owner&outcome=open"))
        .bearer_auth(token("housing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owner_list["objections"][0]["id"], id.as_str());
    assert_eq!(owner_list["objections"][0]["reason"], "合同价与完税价不符");

    let resolve = |department: &'static str, body: Value| {
        http.post(format!("{base}/v1/objections/{id}/resolution")).bearer_auth(token(department)).json(&body).send()
    };
    // Only the owner resolves; "corrected" names a newer record the view holds, not the one objected to.
    assert_eq!(resolve("tax", json!({"outcome": "rejected", "reason": "x"})).await.unwrap().status(), 403);
    let premature = resolve("housing", json!({"outcome": "corrected", "correcting_event_id": first["event_id"]}));
    assert_eq!(premature.await.unwrap().status(), 422);
    assert_eq!(disputed(&read("tax").await), Some(vec![json!("/total_price")]), "still disputed");

    // Housing sends the corrected filing, then resolves the objection with it.
    filing["total_price"] = json!("598000.00");
    assert_eq!(send(filing).await.unwrap().status(), 202);
    let corrected = crate::support::eventually_saw("the corrected filing", Duration::from_secs(60), || async {
        let seen = read("tax").await;
        if seen["record"]["total_price"] == "598000.00" {
            Ok(seen)
        } else {
            Err(seen.to_string())
        }
    })
    .await;
    let body =
        json!({"outcome": "corrected", "correcting_event_id": corrected["event_id"], "reason": "已按完税价更正"});
    let resolved = resolve("housing", body).await.unwrap();
    assert_eq!(resolved.status(), 200);
    assert_eq!(resolved.json::<Value>().await.unwrap()["outcome"], "corrected");
    assert_eq!(read("tax").await["disputed"], json!([]));
    assert_eq!(dossier().await["parts"]["contract_filing"]["disputed"], json!([]));
    assert_eq!(resolve("housing", json!({"outcome": "rejected", "reason": "x"})).await.unwrap().status(), 409);

    // A second objection, rejected: a rejection gives its reason.
    let second: Value = raise("tax", objection).await.unwrap().json().await.unwrap();
    let url = format!("{base}/v1/objections/{}/resolution", second["id"].as_str().unwrap());
    let unexplained = http.post(&url).bearer_auth(token("housing")).json(&json!({"outcome": "rejected"})).send();
    assert_eq!(unexplained.await.unwrap().status(), 422);
    let rejected =
        http.post(&url).bearer_auth(token("housing")).json(&json!({"outcome": "rejected", "reason": "价格以备案为准"}));
    assert_eq!(rejected.send().await.unwrap().status(), 200);
    assert_eq!(read("tax").await["disputed"], json!([]));

    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    for line in [
        "govex_objections{state=\"open\"} 0",
        "govex_objections{state=\"corrected\"} 1",
        "govex_objections{state=\"rejected\"} 1",
        "govex_objection_resolution_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} not in the metrics");
    }

    let data_dir = dir.path().to_path_buf();
    node.shutdown().await.unwrap();
    let log = govex_sinks::use_log::UseLog::open_dir(&data_dir.join("elicense")).unwrap();
    let subject = format!("objection/{id} {FILINGS}/");
    let steps: Vec<(String, String)> = log
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.subject.starts_with(&subject))
        .map(|e| (e.caller, e.result))
        .collect();
    assert_eq!(steps, [("tax".to_owned(), "open".to_owned()), ("housing".to_owned(), "corrected".to_owned())]);
    let logged_keys: Vec<String> =
        log.entries().unwrap().into_iter().filter(|e| e.action == "objection").map(|e| e.subject).collect();
    assert!(logged_keys.iter().all(|s| !s.contains(&unit)), "keys are logged masked: {logged_keys:?}");
    // The failed look-ups are reads too: logged, with the key masked.
    let probes: Vec<String> = log
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "objection" && e.subject.starts_with(&format!("{FILINGS}/")))
        .map(|e| e.result)
        .collect();
    assert_eq!(probes, ["no_such_field", "not_found"]);
}

/// Two processes of one node answer the same request at once, one approving, one rejecting:
/// the topic decides. Exactly one answer is 200, the other 409, and both views end the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deciding_one_request_at_once_agree_on_the_first_on_the_topic() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let broker = std::sync::Arc::new(govex_bus::embedded::EmbeddedBroker::start(3).unwrap());
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), format!("{}.dlq", schema.topic)] {
            broker.create_topic(&topic, 3, 3).unwrap();
        }
    }
    let config = |dir: &std::path::Path| {
        let mut config = crate::intake::intake_config(dir);
        config.bus.brokers = Some(broker.bootstrap_servers().to_owned());
        let catalogue = dir.join("catalog.toml");
        std::fs::write(&catalogue, catalogue_without_tax()).unwrap();
        config.catalog_file = Some(catalogue);
        let calendar = dir.join("calendar.toml");
        std::fs::write(&calendar, LATER_YEARS).unwrap();
        config.governance.calendar_file = Some(calendar);
        config
    };
    let first = govex::node::start(config(dirs[0].path())).await.unwrap();
    let mut second_config = config(dirs[1].path());
    second_config.components = vec![govex::config::Component::Elicense, govex::config::Component::Dossier];
    // The second follows the registry's topic, which the first writes.
    let second = govex::node::start(second_config).await.unwrap();
    let (a, b) = (format!("http://{}", first.api_addr().unwrap()), format!("http://{}", second.api_addr().unwrap()));
    let http = reqwest::Client::new();
    let until = govex_sinks::governance::today() + chrono::Days::new(30);
    let body = json!({"resource": FILINGS, "purpose": "契税征收核验", "until": until});
    let filed = http.post(format!("{a}/v1/subscriptions")).bearer_auth(token("tax")).json(&body).send();
    let id = filed.await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let state_on = |base: String| {
        let (http, id) = (http.clone(), id.clone());
        async move {
            let answer =
                http.get(format!("{base}/v1/subscriptions/{id}")).bearer_auth(token("tax")).send().await.unwrap();
            answer.json::<Value>().await.unwrap()["state"].as_str().map(str::to_owned)
        }
    };
    crate::support::eventually_saw("the request on the second process", Duration::from_secs(30), || async {
        match state_on(b.clone()).await.as_deref() {
            Some("pending") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let decide = |base: &str, body: Value| {
        http.post(format!("{base}/v1/subscriptions/{id}/decision")).bearer_auth(token("housing")).json(&body).send()
    };
    let (approved, rejected) = tokio::join!(
        decide(&a, json!({"decision": "approve"})),
        decide(&b, json!({"decision": "reject", "reason": "不予共享"}))
    );
    let mut statuses = [approved.unwrap().status().as_u16(), rejected.unwrap().status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "one decision holds, the other is told it came second");
    let decided = crate::support::eventually_saw("both processes agreeing", Duration::from_secs(30), || async {
        let (on_a, on_b) = (state_on(a.clone()).await, state_on(b.clone()).await);
        match on_a == on_b && on_a.as_deref() != Some("pending") {
            true => Ok(on_a),
            false => Err(format!("{on_a:?} / {on_b:?}")),
        }
    })
    .await;
    assert!(matches!(decided.as_deref(), Some("approved" | "rejected")));
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}

/// Reads are counted per resource, reading department, purpose category and action, from the
/// use log: served as JSON to each department as far as it concerns it, and as metrics; a
/// restart counts them again from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_counted_by_resource_department_and_purpose_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::intake::intake_config(dir.path());
    let node = govex::node::start(config.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    let filing = sample("housing", "contract-filing", 9).unwrap();
    let sent = http.post(format!("{base}/v1/housing/contract-filing")).bearer_auth(token("housing")).json(&filing);
    assert_eq!(sent.send().await.unwrap().status(), 202);
    let unit = property_unit_number(9);
    let read = |department: &'static str, purpose: &'static str| {
        let url = format!("{base}/v1/resources/{FILINGS}/records/{unit}");
        let request = http.get(url).query(&[("purpose", purpose)]).bearer_auth(token(department));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    crate::support::eventually_saw("the filing in the shared view", Duration::from_secs(60), || async {
        match read("land-registry", "不动产转移登记审核").await {
            200 => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;
    assert_eq!(read("land-registry", "不动产转移登记审核").await, 200);
    assert_eq!(read("tax", "契税征收").await, 200);
    let dossier = http.get(format!("{base}/v1/dossiers/{unit}")).query(&[("purpose", "并联审核")]);
    assert_eq!(dossier.bearer_auth(token("land-registry")).send().await.unwrap().status(), 200);

    let usage = |base: String, who: &'static str| {
        let http = http.clone();
        async move {
            let answer = http.get(format!("{base}/v1/usage")).bearer_auth(token(who)).send().await.unwrap();
            let body: Value = answer.json().await.unwrap();
            let mut rows: Vec<(String, String, String, String, u64)> = body["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let text = |k: &str| r[k].as_str().unwrap().to_owned();
                    (
                        text("resource"),
                        text("department"),
                        text("category"),
                        text("action"),
                        r["count"].as_u64().unwrap(),
                    )
                })
                .collect();
            rows.sort();
            rows
        }
    };
    let row = |resource: &str, department: &str, category: &str, action: &str, count: u64| {
        (resource.to_owned(), department.to_owned(), category.to_owned(), action.to_owned(), count)
    };
    // Housing owns the filings: it sees who read them and why; not the land registry's dossier reads.
    let for_housing = usage(base.clone(), "housing").await;
    let polled = for_housing.iter().find(|r| r.1 == "land-registry").map(|r| r.4).unwrap();
    assert!(polled >= 2, "{for_housing:?}");
    assert_eq!(
        for_housing,
        [row(FILINGS, "land-registry", "review", "resource", polled), row(FILINGS, "tax", "taxation", "resource", 1)]
    );
    // Tax sees its own reads only.
    assert_eq!(usage(base.clone(), "tax").await, [row(FILINGS, "tax", "taxation", "resource", 1)]);
    // The auditor sees every row, the dossier's too.
    let all = usage(base.clone(), "auditor").await;
    assert!(all.contains(&row("dossier", "land-registry", "review", "dossier", 1)), "{all:?}");

    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    let line = format!(
        "govex_usage_total{{resource=\"{FILINGS}\",department=\"tax\",category=\"taxation\",action=\"resource\"}} 1"
    );
    assert!(metrics.contains(&line), "{line} not in the metrics");

    node.shutdown().await.unwrap();
    let node = govex::node::start(config).await.unwrap();
    let base = format!("http://{}", node.api_addr().unwrap());
    // Counted again from the log, in the background after the start.
    let expected = [row(FILINGS, "tax", "taxation", "resource", 1)];
    let recounted = crate::support::eventually_saw("the usage counted again", Duration::from_secs(30), || async {
        let rows = usage(base.clone(), "tax").await;
        if rows == expected {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    assert_eq!(recounted, expected, "counted again from the log");
    node.shutdown().await.unwrap();
}
