//! Personal data, tried the way a department without rights would try it: no answer may
//! depend on a personal field the caller is not entitled to, masks show the division or the
//! surname only, reads are purposed, logged and rate-limited, and each department sees only
//! its own uses of a licence.

use std::time::Duration;

use govex_sinks::elicense::{LicenceStore, Status};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    elicense::{licence, licence_id, publish},
    support::token,
};

const HOLDER: &str = "61092119800101123X";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, who: &str, purpose: &str) -> reqwest::Response {
        let request = self.http.get(format!("{}{path}", self.base)).bearer_auth(token(who));
        request.query(&[("purpose", purpose)]).send().await.unwrap()
    }

    async fn post(&self, path: &str, who: &str, body: Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(token(who)).json(&body).send().await.unwrap()
    }

    /// Waits until the sink has applied the licence `id`.
    async fn wait_for(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.get(&format!("/v1/licences/{id}"), "land-registry", "等待入库").await.status() != StatusCode::OK
        {
            assert!(tokio::time::Instant::now() < deadline, "the sink did not apply {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A licence with a holder's name and identifier printed on its surface too.
fn printed_licence(serial: &str) -> crate::elicense::LicenceOut {
    let mut record = licence(serial, Status::Valid, HOLDER);
    record.holder_name = "欧阳小明".into();
    record.surface.insert("权利人".into(), "欧阳小明".into());
    record.surface.insert("证件号码".into(), HOLDER.into());
    // The same, as an issuer might spell it: traditional characters, a trailing space, English.
    record.surface.insert("權利人".into(), "欧阳小明".into());
    record.surface.insert("证件号码 ".into(), HOLDER.into());
    record.surface.insert("holder".into(), HOLDER.into());
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_not_entitled_learns_nothing_about_a_holder() {
    let (_dir, node) = crate::intake::intake_node().await;
    let id = licence_id("PD0001", 1);
    publish(&node.bus, &node.registry, &[printed_licence("PD0001")]).await;
    let api = Api { base: format!("http://{}", node.api_addr().unwrap()), http: reqwest::Client::new() };
    api.wait_for(&id).await;

    // The mask: the division only, and the surname only, for every personal field.
    let seen: Value = api.get(&format!("/v1/licences/{id}"), "tax", "契税核验").await.json().await.unwrap();
    assert_eq!(seen["holder"]["identifier_number"], "610921************", "{seen}");
    assert_eq!(seen["holder"]["name"], "欧**");
    assert_eq!(seen["surface"]["证件号码"], "610921************");
    assert_eq!(seen["surface"]["权利人"], "************");
    assert_eq!(seen["surface"]["權利人"], "************", "every surface key but the public ones");
    assert_eq!(seen["surface"]["证件号码 "], "610921************");
    assert_eq!(seen["surface"]["holder"], "610921************");
    assert_eq!(seen["surface"]["坐落"], "汉阴县城关镇", "fields that are not personal show");
    assert_eq!(seen["content_hash"], Value::Null, "a hash over personal data is a way to test guesses");
    for part in ["19800101", "123X", "小明"] {
        assert!(!seen.to_string().contains(part), "{part} shows in {seen}");
    }

    // Verify: presenting a personal field is refused before the store is read, naming the
    // field and the rule, and the refusal is the same whether the guess is right or wrong.
    let verify_path = format!("/v1/licences/{id}/verify");
    let verify = |fields: Value| api.post(&verify_path, "tax", json!({"purpose": "契税核验", "fields": fields}));
    let mut refusals = Vec::new();
    for fields in [
        json!({"holder_identifier_number": HOLDER}),
        json!({"holder_identifier_number": "61092119800101000X"}),
        json!({"holder_name": "欧阳小明"}),
        json!({"证件号码": HOLDER}),
        json!({"权利人": "欧阳小明", "坐落": "汉阴县城关镇"}),
        json!({"權利人": "欧阳小明"}),
        json!({"holder": {"identifier_number": HOLDER, "name": "欧阳小明"}}),
    ] {
        let response = verify(fields.clone()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{fields}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:govex:problem:personal-data");
        assert_eq!(problem["errors"][0]["rule"], "personal-data-not-entitled");
        let named = fields.as_object().unwrap().keys().find(|k| *k != "坐落").unwrap();
        assert_eq!(problem["errors"][0]["pointer"], format!("/fields/{named}"), "{problem}");
        assert_eq!(problem["errors"].as_array().unwrap().len(), 1, "only the personal field is named: {problem}");
        refusals.push(problem);
    }
    assert_eq!(refusals[0], refusals[1], "a right and a wrong guess get the same answer");
    // Names that are neither the licence's fields nor public surface keys are refused alike,
    // so a misspelt or invented key is no way round it either.
    let answer = |fields: Value| async move { verify(fields).await.json::<Value>().await.unwrap() };
    let right = answer(json!({"Holder_Name": "欧阳小明"})).await;
    let wrong = answer(json!({"Holder_Name": "王五"})).await;
    assert_eq!(right["type"], "urn:govex:problem:personal-data");
    assert_eq!(right, wrong);
    assert_eq!(answer(json!({"坐落": "汉阴县城关镇"})).await["result"], "valid", "public fields still verify");
    assert_eq!(answer(json!({"licence_number": "x"})).await["result"], "mismatch", "the licence's own fields too");

    // The entitled land registry verifies the holder.
    let response = api
        .post(
            &format!("/v1/licences/{id}/verify"),
            "land-registry",
            json!({"purpose": "转移登记核验", "fields": {"holder_identifier_number": HOLDER, "权利人": "欧阳小明"}}),
        )
        .await;
    assert_eq!(response.json::<Value>().await.unwrap()["result"], "valid");

    // A holder look-up is itself personal data: refused to tax in both forms, whether or not
    // the holder has licences; served to the land registry with the identifier in the body.
    for holder in [HOLDER, "61092119800101000X"] {
        let by_path = api.get(&format!("/v1/holders/{holder}/licences"), "tax", "查询").await;
        assert_eq!(by_path.status(), StatusCode::FORBIDDEN);
        let by_body = api.post("/v1/holders/licences", "tax", json!({"holder": holder, "purpose": "查询"})).await;
        assert_eq!(by_body.status(), StatusCode::FORBIDDEN);
        let problem: Value = by_body.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], "/holder");
        assert!(!problem.to_string().contains(holder));
    }
    let listed: Value = api
        .post(
            "/v1/holders/licences",
            "land-registry",
            json!({"holder": HOLDER, "purpose": "名下证照", "type": "11100000000013338W011"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["licences"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["licences"][0]["holder"]["identifier_number"], HOLDER);

    // Each department sees its own uses; the owner (platform) and an auditor see all.
    let uses = |who: &'static str| {
        let path = format!("/v1/licences/{id}/uses");
        let api = &api;
        async move {
            let body: Value = api.get(&path, who, "审计").await.json().await.unwrap();
            body["uses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["caller"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let seen_by_tax = uses("tax").await;
    assert!(!seen_by_tax.is_empty() && seen_by_tax.iter().all(|c| c == "tax"), "{seen_by_tax:?}");
    for who in ["platform", "auditor"] {
        let all = uses(who).await;
        assert!(all.iter().any(|c| c == "tax") && all.iter().any(|c| c == "land-registry"), "{who}: {all:?}");
    }
    // A department's own entries come without their place in the chain (no sequence numbers
    // or hashes to count or test others' reads by); an auditor's read is not its department's.
    let own: Value = api.get(&format!("/v1/licences/{id}/uses"), "tax", "审计").await.json().await.unwrap();
    for entry in own["uses"].as_array().unwrap() {
        assert!(
            entry.get("seq").is_none() && entry.get("hash").is_none() && entry.get("prev_hash").is_none(),
            "{entry}"
        );
    }
    let land_registry = uses("land-registry").await;
    assert!(land_registry.iter().all(|c| c == "land-registry"), "{land_registry:?}");
    assert!(uses("platform").await.iter().any(|c| c == "land-registry (auditor)"), "the auditor's reads are its own");
    // An auditor's token reads the log and nothing else.
    assert_eq!(api.get(&format!("/v1/licences/{id}"), "auditor", "审计").await.status(), StatusCode::FORBIDDEN);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dossier_reads_state_a_purpose_and_land_in_the_use_log() {
    let (dir, node) = crate::intake::intake_node().await;
    let api = Api { base: format!("http://{}", node.api_addr().unwrap()), http: reqwest::Client::new() };
    let filing = govex_adapters::samples::sample("housing", "contract-filing", 7).unwrap();
    assert_eq!(api.post("/v1/housing/contract-filing", "housing", filing).await.status(), StatusCode::ACCEPTED);
    let unit = govex_adapters::samples::property_unit_number(7);
    let path = format!("/v1/dossiers/{unit}");

    let unpurposed =
        api.http.get(format!("{}{path}", api.base)).bearer_auth(token("land-registry")).send().await.unwrap();
    assert_eq!(unpurposed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unpurposed.json::<Value>().await.unwrap()["errors"][0]["rule"], "purpose-required");
    let dossier: Value = crate::support::eventually("the dossier filling", Duration::from_secs(60), || async {
        let response = api.get(&path, "land-registry", "并联审核").await;
        match response.status() == StatusCode::OK {
            true => Some(response.json().await.unwrap()),
            false => None,
        }
    })
    .await;
    let buyers = &dossier["parts"]["contract_filing"]["record"]["buyers"];
    assert_eq!(buyers[0]["identifier_number"], govex_adapters::samples::citizen_id(7), "entitled: unmasked");
    // Provident fund reads the filing without personal data: names show the surname only.
    let masked: Value = api.get(&path, "provident-fund", "贷款审核").await.json().await.unwrap();
    let buyer = &masked["parts"]["contract_filing"]["record"]["buyers"][0];
    assert!(buyer["identifier_number"].as_str().unwrap().ends_with("************"), "{buyer}");
    assert_eq!(buyer["name"].as_str().unwrap().chars().count(), 3, "surname and **: {buyer}");
    // The licence use-log route lists uses of licences only: not who read a dossier.
    for who in ["platform", "auditor"] {
        let listed: Value = api.get(&format!("/v1/licences/{unit}/uses"), who, "审计").await.json().await.unwrap();
        assert_eq!(listed["uses"], json!([]), "{who}: {listed}");
    }
    node.shutdown().await.unwrap();

    let store = LicenceStore::open(&dir.path().join("elicense")).unwrap();
    let log = store.use_log().uses_of(&unit).unwrap();
    let reads: Vec<(&str, &str, &str)> =
        log.iter().map(|e| (e.caller.as_str(), e.purpose.as_str(), e.action.as_str())).collect();
    assert!(reads.contains(&("land-registry", "并联审核", "dossier")), "{reads:?}");
    assert!(reads.contains(&("provident-fund", "贷款审核", "dossier")), "{reads:?}");
    assert!(!reads.iter().any(|r| r.1.is_empty()), "no read without a purpose is logged or served");
    assert_eq!(store.use_log().verify_chain().unwrap().1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_rate_limited_per_token_with_retry_after() {
    let (_dir, node) = crate::intake::intake_node_with(|config| {
        config.api.reads_per_second = 1;
        config.api.read_burst = 3;
    })
    .await;
    let api = Api { base: format!("http://{}", node.api_addr().unwrap()), http: reqwest::Client::new() };
    let path = format!("/v1/licences/{}", licence_id("RL0001", 1));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(api.get(&path, "tax", "核验").await.status());
    }
    // The burst of 3 answers (404: no such licence), then the limit; a token of its own has
    // a budget of its own.
    assert_eq!(&statuses[..3], [StatusCode::NOT_FOUND; 3]);
    assert!(statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let limited = api.post(&format!("{path}/verify"), "tax", json!({"purpose": "核验"})).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.json::<Value>().await.unwrap()["type"], "urn:govex:problem:rate-limited");
    assert_eq!(api.get(&path, "housing", "核验").await.status(), StatusCode::NOT_FOUND);
    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("govex_api_rate_limited_requests_total{api=\"licences\"}"), "{metrics}");
    assert!(metrics.contains("govex_api_read_limit_per_second 1"), "{metrics}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_caller_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, node) = crate::intake::intake_node().await;
    for path in ["/v1/licences/x/verify", "/v1/holders/licences"] {
        let mut stream = tokio::net::TcpStream::connect(node.api_addr().unwrap()).await.unwrap();
        // Two megabytes announced, a few bytes sent: the answer must not wait for the rest.
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n{{\"purpose\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(read.is_ok(), "{path}: the node waited for the body of a request without a token");
        assert_eq!(answer, "HTTP/1.1 401", "{path}");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_flooding_clients_cannot_hold_a_node() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, node) = crate::intake::intake_node_with(|config| {
        config.listen.max_connections = 8;
        config.listen.header_read_timeout_secs = 1;
        config.listen.body_timeout_secs = 1;
    })
    .await;
    let api = node.api_addr().unwrap();
    // Eight connections that never finish their headers take every API connection.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(api).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        slow.push(stream);
    }
    // Nothing outside shows that the node has accepted them; give its accept loop a moment,
    // so that the ninth is the one over the limit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A ninth is closed at once, without an answer; the ops port answers all the same.
    let mut ninth = tokio::net::TcpStream::connect(api).await.unwrap();
    let _ = ninth.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), ninth.read(&mut buffer)).await.expect("closed, not held");
    assert!(matches!(read, Ok(0) | Err(_)), "the ninth connection was served: {read:?}");
    let health = reqwest::get(format!("http://{}/healthz", node.ops_addr)).await.unwrap();
    assert_eq!(health.status(), 200);
    // The slow ones are closed once their second is up, and the API answers again.
    for stream in &mut slow {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
        let read = read.expect("a client too slow to send its headers is closed");
        // hyper answers 408 Request Timeout, or just closes.
        assert!(matches!(read, Ok(0) | Err(_)) || buffer.starts_with(b"HTTP/1.1 408"), "{read:?}");
    }
    drop(slow);
    // A client that sends its headers and then trickles (or stops sending) its body is cut off
    // too, with a token (the API) and without one (the registry's open reads).
    let trickles = [
        (api, "POST /v1/licences/x/verify", "authorization: Bearer test-token-of-tax\r\n"),
        (node.registry_addr.unwrap(), "POST /subjects/gov.case.event.v1-value", ""),
    ];
    for (addr, request, authorization) in trickles {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{request} HTTP/1.1\r\nhost: x\r\n{authorization}content-type: application/json\r\ncontent-length: 100000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{request}: a paused body held the connection");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 4"),
            "{request}: {answer}"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(format!("http://{api}/")).await {
            Ok(answer) if answer.status() == 200 => break,
            other => assert!(tokio::time::Instant::now() < deadline, "the API did not recover: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await.unwrap();
}
