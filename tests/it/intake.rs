//! Department intake over HTTP: every record type end to end, every domain rule, auth,
//! problem details, batches, idempotent retries, and arbitrary input.

use std::collections::HashMap;

use apache_avro::Schema;
use govex::config::NodeConfig;
use govex_adapters::{
    common::CheckContext,
    identifiers,
    intake::{auth::hash_token, Rejection},
    samples::sample,
};
use govex_bus::Decoder;
use govex_http::config::Role;
use govex_http::config::TokenConfig;
use govex_schemas::Department;
use serde_json::{json, Value};

use crate::support::{records_in_topic, test_node_config, token};

const RECORDS: [(&str, &str, &str); 4] = [
    ("land-registry", "registration", "gov.land-registry.registration.v1"),
    ("housing", "contract-filing", "gov.housing.contract-filing.v1"),
    ("tax", "deed-tax-payment", "gov.tax.deed-tax-payment.v1"),
    ("provident-fund", "event", "gov.provident-fund.event.v1"),
];

/// A node with [`intake_config`], in a directory of its own that lives as long as it is kept.
pub async fn intake_node() -> (tempfile::TempDir, govex::node::RunningNode) {
    intake_node_with(|_| {}).await
}

/// A node with [`intake_config`] as `change` leaves it.
pub async fn intake_node_with(change: impl FnOnce(&mut NodeConfig)) -> (tempfile::TempDir, govex::node::RunningNode) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = intake_config(dir.path());
    change(&mut config);
    (dir, govex::node::start(config).await.unwrap())
}

pub fn intake_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = test_node_config(dir);
    // The four departments, the platform, and a steward's and an auditor's token.
    let departments = RECORDS.iter().map(|(department, _, _)| (*department, *department, Role::Department));
    config.intake.tokens = departments
        .chain([
            ("platform", "platform", Role::Department),
            ("platform", "steward", Role::Steward),
            ("land-registry", "auditor", Role::Auditor),
        ])
        .map(|(department, name, role)| TokenConfig {
            department: department.into(),
            sha256: hash_token(&token(name)),
            label: None,
            role,
        })
        .collect();
    config.intake.max_body_bytes = 64 * 1024;
    config.intake.max_batch_lines = 100;
    config
}

async fn post(
    node: &govex::node::RunningNode,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
    key: Option<&str>,
) -> (u16, Value, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", node.api_addr().unwrap()))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_department_record_is_accepted_once_the_broker_has_it_and_reads_back() {
    let (_dir, node) = intake_node().await;
    let mut sent = HashMap::new();
    for (department, record, topic) in RECORDS {
        let body = sample(department, record, 7).unwrap();
        let (status, answer, _) = post(
            &node,
            &format!("/v1/{department}/{record}"),
            Some(&token(department)),
            "application/json",
            body.to_string(),
            None,
        )
        .await;
        assert_eq!(status, 202, "{department}/{record}: {answer}");
        assert_eq!(answer["topic"], topic);
        let offset = answer["offset"].as_i64().unwrap();
        assert!(offset >= 0 && answer["partition"].as_i64().unwrap() >= 0, "{answer}");
        assert!(answer["event_id"].as_str().unwrap().len() == 36);
        sent.insert(topic.to_owned(), (body, answer));
    }

    // Read each topic back and decode with the bundled schema.
    let topics: Vec<&str> = RECORDS.iter().map(|r| r.2).collect();
    let mut collector = crate::support::collect(&node.bus, "intake-check", &topics);
    let mut seen = 0;
    while seen < RECORDS.len() {
        let message = collector.next().await;
        let (body, answer) = &sent[message.topic()];
        assert_eq!(message.offset(), answer["offset"].as_i64().unwrap());
        let envelope = message.envelope().unwrap();
        assert_eq!(envelope.event_id.to_string(), answer["event_id"].as_str().unwrap());
        assert_eq!(envelope.origin_division, node.config.division);
        let schema = govex_schemas::bundled_schemas().find(|s| s.topic == message.topic()).unwrap();
        let decoder = Decoder::new(node.registry.clone(), &Schema::parse_str(schema.text).unwrap());
        let apache_avro::types::Value::Record(fields) = decoder.decode(message.payload().unwrap()).await.unwrap()
        else {
            panic!()
        };
        let division = fields.iter().find(|(n, _)| n == "division").unwrap();
        assert_eq!(division.1, apache_avro::types::Value::String(body["division"].as_str().unwrap().to_owned()));
        seen += 1;
    }
    collector.stop().await;
    node.shutdown().await.unwrap();
}

/// The intake route of deed-tax payments, which most of the HTTP tests send.
const TAX_PAYMENTS: &str = "/v1/tax/deed-tax-payment";

/// The rule cases, one a line: department, record, the JSON pointer to change, the rule
/// expected (`rule@pointer` where it is expected at another pointer than the one changed),
/// and the new value (JSON; `null` removes the field).
const RULE_CASES: &str = r#"
tax             deed-tax-payment  /taxpayer/identifier_number     citizen-id-check                               "110105194912310021"
provident-fund  event             /holder_citizen_id              citizen-id-birth-date                          $future_citizen
housing         contract-filing   /seller_credit_code             credit-code-check                              "91110000600037341M"
housing         contract-filing   /seller_credit_code             credit-code-organisation-check                 "91110000600037351L"
tax             deed-tax-payment  /division                       division-exists                                "610999"
land-registry   registration      /division                       division-province                              "990921"
provident-fund  event             /licence_id                     licence-id-check                               "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.V"
provident-fund  event             /licence_id                     licence-required                               null
housing         contract-filing   /property_unit_number           property-unit-number-division                  "610999001001GB00001F00010001"
housing         contract-filing   /property_unit_number           pattern                                        "610921001001GB00001F0001"
tax             deed-tax-payment  /paid_at                        time-not-in-future                             "2099-01-01T00:00:00+08:00"
housing         contract-filing   /total_price                    pattern                                        "-1.00"
housing         contract-filing   /area_m2                        pattern                                        "98.765"
tax             deed-tax-payment  /tax_amount                     deed-tax-amount                                "8520.01"
land-registry   registration      /right_holders/0/co_ownership   share-required@/right_holders/0/share_percent  "SHARED"
land-registry   registration      /right_holders/0/share_percent  share-only-when-shared                         "50.00"
land-registry   registration      /registration_type              enum                                           "GIFT"
tax             deed-tax-payment  /voucher_number                 required                                       null
"#;

/// [`RULE_CASES`] as (department, record, pointer to change, new value, expected pointer and rule).
fn rule_cases() -> Vec<(&'static str, &'static str, &'static str, Value, &'static str, &'static str)> {
    // A citizen identity number, right but for a birth date in the future.
    let future_citizen = {
        let body = "61090220990101001";
        let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = body.bytes().zip(weights).map(|(b, w)| u32::from(b - b'0') * w).sum();
        let check = (12 - sum % 11) % 11;
        format!("{body}{}", if check == 10 { 'X' } else { char::from(b'0' + check as u8) })
    };
    let cases = RULE_CASES.lines().filter(|line| !line.trim().is_empty());
    cases
        .map(|line| {
            let columns: Vec<&'static str> = line.split_whitespace().collect();
            let value = match columns[4] {
                "$future_citizen" => json!(future_citizen),
                value => serde_json::from_str(value).unwrap_or_else(|e| panic!("{line}: {e}")),
            };
            let (rule, expected_at) = columns[3].split_once('@').unwrap_or((columns[3], columns[2]));
            (columns[0], columns[1], columns[2], value, expected_at, rule)
        })
        .collect()
}

fn set(body: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = body.pointer_mut(parent).unwrap();
    match (target, value) {
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), value) => {
            map.insert(key.to_owned(), value);
        }
        (Value::Array(items), value) => items[key.parse::<usize>().unwrap()] = value,
        _ => panic!("{pointer}"),
    }
}

#[tokio::test]
async fn every_domain_rule_passes_the_sample_and_fails_its_case() {
    let (_dir, node) = intake_node().await;
    let context = CheckContext::now();
    for (department, record, _) in RECORDS {
        let body = sample(department, record, 1).unwrap();
        let department: Department = department.parse().unwrap();
        assert!(
            node.intake().unwrap().check(department, record, body.to_string().as_bytes(), &context).is_ok(),
            "{department}/{record} sample"
        );
    }
    // Two holders in shares must add up to 100 %.
    let mut shared = sample("land-registry", "registration", 2).unwrap();
    let holder = shared["right_holders"][0].clone();
    shared["right_holders"] = json!([holder.clone(), holder]);
    for (i, share) in ["60.00", "40.00"].iter().enumerate() {
        shared["right_holders"][i]["co_ownership"] = json!("SHARED");
        shared["right_holders"][i]["share_percent"] = json!(share);
    }
    assert!(node
        .intake()
        .unwrap()
        .check(Department::LAND_REGISTRY, "registration", shared.to_string().as_bytes(), &context)
        .is_ok());
    shared["right_holders"][1]["share_percent"] = json!("30.00");
    let Err(Rejection::Invalid(violations)) = node.intake().unwrap().check(
        Department::LAND_REGISTRY,
        "registration",
        shared.to_string().as_bytes(),
        &context,
    ) else {
        panic!()
    };
    assert_eq!((violations[0].pointer.as_str(), violations[0].rule.as_str()), ("/right_holders", "shares-total"));

    for (department, record, pointer, value, expected_pointer, expected_rule) in rule_cases() {
        let mut body = sample(department, record, 1).unwrap();
        set(&mut body, pointer, value);
        let result =
            node.intake().unwrap().check(department.parse().unwrap(), record, body.to_string().as_bytes(), &context);
        let Err(Rejection::Invalid(violations)) = result else {
            panic!("{department}/{record} {pointer}: expected {expected_rule}, got {:?}", result.map(|c| c.envelope))
        };
        assert!(
            violations.iter().any(|v| v.pointer == expected_pointer && v.rule == expected_rule),
            "{department}/{record} {pointer}: expected {expected_rule} at {expected_pointer}, got {violations:?}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_content_type_size_and_problem_details() {
    let (_dir, node) = intake_node().await;
    let body = sample("tax", "deed-tax-payment", 3).unwrap().to_string();
    let path = TAX_PAYMENTS;

    let (status, problem, content) = post(&node, path, None, "application/json", body.clone(), None).await;
    assert_eq!((status, content.as_str()), (401, "application/problem+json"));
    assert_eq!(problem["status"], 401);
    assert_eq!(post(&node, path, Some("not-a-token"), "application/json", body.clone(), None).await.0, 401);
    let (status, problem, _) = post(&node, path, Some(&token("housing")), "application/json", body.clone(), None).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        post(&node, "/v1/tax/unknown-record", Some(&token("tax")), "application/json", body.clone(), None).await.0,
        404
    );
    assert_eq!(post(&node, path, Some(&token("tax")), "text/plain", body.clone(), None).await.0, 415);
    let (status, problem, _) =
        post(&node, path, Some(&token("tax")), "application/json", "{\"voucher_number\": ", None).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "urn:govex:problem:malformed-json");
    let huge = format!("{{\"voucher_number\": \"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(post(&node, path, Some(&token("tax")), "application/json", huge, None).await.0, 413);

    // 422 lists every violation with pointer and rule, and never echoes the identifier.
    let mut bad = sample("tax", "deed-tax-payment", 3).unwrap();
    bad["taxpayer"]["identifier_number"] = json!("110105194912310021");
    bad["division"] = json!("610999");
    bad["tax_amount"] = json!("1.00");
    let (status, problem, content) =
        post(&node, path, Some(&token("tax")), "application/json; charset=utf-8", bad.to_string(), None).await;
    assert_eq!((status, content.as_str()), (422, "application/problem+json"), "{problem}");
    let errors = problem["errors"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> =
        errors.iter().map(|e| (e["pointer"].as_str().unwrap(), e["rule"].as_str().unwrap())).collect();
    assert!(pairs.contains(&("/taxpayer/identifier_number", "citizen-id-check")), "{pairs:?}");
    assert!(pairs.contains(&("/division", "division-exists")), "{pairs:?}");
    assert!(!problem.to_string().contains("110105194912310021"), "identifier echoed: {problem}");
    assert_eq!(
        records_in_topic(node.bus.bootstrap_servers(), "gov.tax.deed-tax-payment.v1", 3),
        0,
        "nothing invalid was published"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"govex_intake_records_total{department="tax",record="deed-tax-payment",outcome="rejected",reason="citizen-id-check"} 1"#), "{metrics}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_line_by_line_and_publishes_only_the_valid_lines() {
    let (_dir, node) = intake_node().await;
    let mut lines = Vec::new();
    for n in 0..10u32 {
        let mut body = sample("housing", "contract-filing", n).unwrap();
        if n.is_multiple_of(3) {
            body["seller_credit_code"] = json!("91110000600037341M");
        }
        lines.push(body.to_string());
    }
    lines.insert(5, "{not json".to_owned());
    let (status, answer, _) = post(
        &node,
        "/v1/housing/contract-filing:batch",
        Some(&token("housing")),
        "application/x-ndjson",
        lines.join("\n") + "\n",
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(6), Some(5)), "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 11);
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["errors"][0]["rule"], "credit-code-check");
    assert_eq!(results[1]["status"], "accepted");
    assert_eq!(results[5]["errors"][0]["rule"], "malformed-json");
    assert_eq!(records_in_topic(node.bus.bootstrap_servers(), "gov.housing.contract-filing.v1", 3), 6);
    // application/json-seq (RFC 7464): RS before each record.
    let seq: String =
        (20..23u32).map(|n| format!("\x1e{}\n", sample("housing", "contract-filing", n).unwrap())).collect();
    let (status, answer, _) =
        post(&node, "/v1/housing/contract-filing:batch", Some(&token("housing")), "application/json-seq", seq, None)
            .await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(3)), "{answer}");
    let too_many = vec![sample("housing", "contract-filing", 1).unwrap().to_string(); 101].join("\n");
    assert_eq!(
        post(
            &node,
            "/v1/housing/contract-filing:batch",
            Some(&token("housing")),
            "application/x-ndjson",
            too_many,
            None
        )
        .await
        .0,
        413
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_publishes_nothing() {
    let (dir, node) = intake_node().await;
    let body = sample("tax", "deed-tax-payment", 9).unwrap().to_string();
    let path = TAX_PAYMENTS;
    let first = post(&node, path, Some(&token("tax")), "application/json", body.clone(), Some("req-0001")).await;
    assert_eq!(first.0, 202);
    // Concurrent retries wait for the first answer instead of publishing again.
    let tax = token("tax");
    let (a, b) = tokio::join!(
        post(&node, path, Some(&tax), "application/json", body.clone(), Some("req-0001")),
        post(&node, path, Some(&tax), "application/json", body.clone(), Some("req-0001"))
    );
    assert_eq!(a.1, first.1);
    assert_eq!(b.1, first.1);
    let other = post(&node, path, Some(&token("tax")), "application/json", body.clone(), Some("req-0002")).await;
    assert_ne!(other.1["event_id"], first.1["event_id"]);
    assert_eq!(records_in_topic(node.bus.bootstrap_servers(), "gov.tax.deed-tax-payment.v1", 3), 2);

    // The key survives a restart.
    node.shutdown().await.unwrap();
    let node = govex::node::start(intake_config(dir.path())).await.unwrap();
    let again = post(&node, path, Some(&token("tax")), "application/json", body, Some("req-0001")).await;
    assert_eq!(again.1, first.1);
    node.shutdown().await.unwrap();
}

/// A small deterministic generator, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64 % 100_000),
        3 => json!(
            ["", "0", "-1", "1.005", "610921", "610999", "2099-01-01T00:00:00Z", "11010519491231002X", "X", "不动产"]
                [rng.below(10)]
        ),
        4 => json!(String::from_utf8_lossy(&(0..rng.below(40)).map(|_| rng.next() as u8).collect::<Vec<_>>())),
        5 => json!(1.5e300),
        6 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => Value::Object((0..rng.below(4)).map(|i| (format!("k{i}"), random_value(rng, depth + 1))).collect()),
    }
}

/// Replaces, removes or adds one field somewhere in `value`.
fn mutate(value: &mut Value, rng: &mut Rng) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.below(4) != 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            match rng.below(4) {
                0 => {
                    map.remove(key);
                }
                1 => {
                    map.insert(key.clone(), random_value(rng, 0));
                }
                _ => mutate(map.get_mut(key).unwrap(), rng),
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            mutate(&mut items[i], rng);
        }
        other => *other = random_value(rng, 0),
    }
}

/// Independent of the intake's own code path: every identifier in an accepted record must
/// pass the identifier rules and every amount must parse.
fn assert_valid(department: &str, body: &Value) {
    let today = CheckContext::now().today();
    let check_party = |party: &Value| {
        if party["identifier_type"] == "CITIZEN_ID" {
            identifiers::citizen_id(party["identifier_number"].as_str().unwrap(), today).unwrap();
        }
        if party["identifier_type"] == "CREDIT_CODE" {
            identifiers::credit_code(party["identifier_number"].as_str().unwrap()).unwrap();
        }
    };
    match department {
        "tax" => check_party(&body["taxpayer"]),
        "housing" => body["buyers"].as_array().unwrap().iter().for_each(check_party),
        "land-registry" => body["right_holders"].as_array().unwrap().iter().for_each(check_party),
        _ => identifiers::citizen_id(body["holder_citizen_id"].as_str().unwrap(), today).unwrap(),
    }
    identifiers::division(body["division"].as_str().unwrap()).unwrap();
    for field in ["taxable_base", "tax_amount", "total_price", "area_m2", "amount"] {
        if let Some(amount) = body.get(field) {
            assert!(govex_adapters::common::parse_decimal(amount.as_str().unwrap(), 2).is_some(), "{field}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_json_and_bytes_never_panic_and_never_pass_an_invalid_record() {
    let (_dir, node) = intake_node().await;
    let context = CheckContext::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..4_000u32 {
        let (department, record, _) = RECORDS[round as usize % RECORDS.len()];
        let mut body = sample(department, record, round).unwrap();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut body, &mut rng);
        }
        if let Ok(checked) =
            node.intake().unwrap().check(department.parse().unwrap(), record, body.to_string().as_bytes(), &context)
        {
            assert_valid(department, &body);
            assert!(!checked.outgoing.payload.is_empty());
            accepted += 1;
        }
        // Raw bytes, sometimes almost JSON.
        let mut bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            bytes.splice(0..0, b"{\"division\":".iter().copied());
        }
        assert!(node.intake().unwrap().check(department.parse().unwrap(), record, &bytes, &context).is_err());
    }
    assert!(accepted > 0, "the mutations should leave some records valid");
    // And through the HTTP server: it answers every request and stays up.
    for _ in 0..200 {
        let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        let status = post(&node, TAX_PAYMENTS, Some(&token("tax")), "application/json", bytes, None).await.0;
        assert!(status == 400 || status == 422, "{status}");
    }
    assert_eq!(records_in_topic(node.bus.bootstrap_servers(), "gov.tax.deed-tax-payment.v1", 3), 0);
    node.shutdown().await.unwrap();
}

/// One round of fixes: an unknown field, a bad identifier and a wrong amount are all named
/// in the first answer, and the `:validate` forms say so without publishing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_violation_comes_in_one_answer_and_validate_publishes_nothing() {
    let (_dir, node) = intake_node().await;
    let path = TAX_PAYMENTS;
    let good = sample("tax", "deed-tax-payment", 3).unwrap();
    let mut bad = good.clone();
    bad["remark"] = json!("not a field");
    bad["taxpayer"]["identifier_number"] = json!("110105194912310021");
    bad["tax_amount"] = json!("1.00");
    let expected = [
        ("/remark", "unknown-property"),
        ("/taxpayer/identifier_number", "citizen-id-check"),
        ("/tax_amount", "deed-tax-amount"),
    ];
    let pairs = |problem: &Value| -> Vec<(String, String)> {
        problem["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{problem}"))
            .iter()
            .map(|e| (e["pointer"].as_str().unwrap().to_owned(), e["rule"].as_str().unwrap().to_owned()))
            .collect()
    };
    for route in [path.to_owned(), format!("{path}:validate")] {
        let (status, problem, _) =
            post(&node, &route, Some(&token("tax")), "application/json", bad.to_string(), None).await;
        assert_eq!(status, 422, "{route}: {problem}");
        let found = pairs(&problem);
        for (pointer, rule) in expected {
            assert!(
                found.contains(&(pointer.to_owned(), rule.to_owned())),
                "{route}: {rule} at {pointer} missing: {found:?}"
            );
        }
        assert!(!problem.to_string().contains("110105194912310021"), "identifier echoed: {problem}");
    }

    let (status, answer, _) =
        post(&node, &format!("{path}:validate"), Some(&token("tax")), "application/json", good.to_string(), None).await;
    assert_eq!((status, answer["valid"].clone()), (200, json!(true)), "{answer}");
    assert_eq!(answer["topic"], "gov.tax.deed-tax-payment.v1");
    let batch = format!("{good}\n{bad}\n");
    let (status, answer, _) =
        post(&node, &format!("{path}:batch:validate"), Some(&token("tax")), "application/x-ndjson", batch, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["valid"].as_i64(), answer["invalid"].as_i64()), (Some(1), Some(1)), "{answer}");
    assert_eq!(answer["results"][0]["status"], "valid");
    assert_eq!(answer["results"][1]["status"], "invalid");
    assert!(answer["results"][1]["errors"].as_array().unwrap().len() >= 3, "{answer}");
    // Validation is for the department's own records too: no token, no answer.
    let (status, _, _) =
        post(&node, &format!("{path}:validate"), None, "application/json", good.to_string(), None).await;
    assert_eq!(status, 401);
    let (status, _, _) =
        post(&node, &format!("{path}:validate"), Some(&token("housing")), "application/json", good.to_string(), None)
            .await;
    assert_eq!(status, 403);
    assert_eq!(
        records_in_topic(node.bus.bootstrap_servers(), "gov.tax.deed-tax-payment.v1", 3),
        0,
        "neither the invalid record nor a validated one was published"
    );
    node.shutdown().await.unwrap();
}

/// A path or method nobody serves is answered with problem details listing what is served,
/// on each of the three ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_problem_details_with_the_routes() {
    let (_dir, node) = intake_node().await;
    let client = reqwest::Client::new();
    let api = node.api_addr().unwrap();
    let registry = node.registry_addr.unwrap();
    for (request, status, listed) in [
        (client.get(format!("http://{api}/v2/nothing")), 404, "POST /v1/{department}/{record}:validate"),
        (client.put(format!("http://{api}/v1/licences/x")), 405, "GET /v1/licences/{id}"),
        (client.get(format!("http://{}/metric", node.ops_addr)), 404, "GET /metrics"),
        (client.get(format!("http://{registry}/subject")), 404, "GET /subjects"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().unwrap().contains(listed), "{problem}");
        assert!(problem["routes"].as_array().unwrap().iter().any(|r| r == listed), "{problem}");
    }
    node.shutdown().await.unwrap();
}
