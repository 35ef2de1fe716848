//! No output of a node carries a field value: every error path is pushed with one known
//! citizen identity number, against a node running as a child process with debug logging,
//! and its answers, its stdout and stderr, its metrics and the dead-letter headers are all
//! searched for it.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use govex_adapters::samples::{citizen_id, sample};
use govex_bus::{
    config::BusConfig,
    envelope::Envelope,
    rdkafka::{
        consumer::{BaseConsumer, Consumer},
        message::{Headers, Message},
        ClientConfig,
    },
    Bus, Encoder, Metrics, Outgoing, RegistryClient,
};
use govex_schemas::{Department, Division};
use govex_sinks::elicense::{Status, TOPIC};
use serde_json::{json, Value};

use crate::{
    child::drain,
    elicense::{licence, licence_id},
};

/// The value after `label` on the node's start-up lines (`  API   http://...`).
async fn printed(stdout: &Arc<Mutex<Vec<u8>>>, label: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| l.trim_start().starts_with(label)) {
            return line.split_whitespace().last().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "the node did not print {label}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_log_metric_or_dead_letter_carries_a_personal_identifier() {
    let known = citizen_id(77);
    // A citizen identity number made only of digits, to send where a number does not belong.
    let digits = (0..1000).map(citizen_id).find(|id| !id.ends_with('X')).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let entries: String = [("tax", "department"), ("land-registry", "department"), ("platform", "steward")]
        .iter()
        .map(|(department, role)| {
            let hash = govex_http::auth::hash_token(&format!("leak-{department}-{role}"));
            format!("[[tokens]]\ndepartment = \"{department}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n")
        })
        .collect();
    std::fs::write(&tokens, entries).unwrap();
    let any = "127.0.0.1:0";
    let env = [
        ("GOVEX_DIVISION", "610921".to_owned()),
        ("GOVEX_DATA_DIR", dir.path().join("data").display().to_string()),
        ("GOVEX_INTAKE__TOKENS_FILE", tokens.display().to_string()),
        ("GOVEX_LISTEN__API", any.to_owned()),
        ("GOVEX_LISTEN__REGISTRY", any.to_owned()),
        ("GOVEX_LISTEN__OPS", any.to_owned()),
        // Every line, so that a leak at any level is found.
        ("RUST_LOG", "debug".to_owned()),
    ];
    let mut node = crate::child::govex(&["node"], &env).spawn().unwrap();
    let stdout = drain(node.stdout.take().unwrap());
    let stderr = drain(node.stderr.take().unwrap());
    let api = printed(&stdout, "API").await.trim_end_matches('/').to_owned();
    let bootstrap = printed(&stdout, "bus").await;
    let registry = printed(&stdout, "schema registry").await.trim_end_matches("/subjects").to_owned();
    let metrics_url = printed(&stdout, "metrics").await;

    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    let send = |request: reqwest::RequestBuilder| {
        let request = request.build().unwrap();
        let http = http.clone();
        async move {
            let response = http.execute(request).await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(status.is_client_error(), "an error path answered {status}: {text}");
            text
        }
    };
    let as_dept = |department: &str| format!("leak-{department}-department");

    // The intake: a schema violation, a domain violation, malformed JSON, a batch.
    let mut payment = sample("tax", "deed-tax-payment", 77).unwrap();
    payment["taxable_base"] = json!("not money");
    let url = format!("{api}/v1/tax/deed-tax-payment");
    answers.push(send(http.post(&url).bearer_auth(as_dept("tax")).json(&payment)).await);
    let mut payment = sample("tax", "deed-tax-payment", 77).unwrap();
    payment["tax_amount"] = json!("1.00");
    payment["taxpayer"]["identifier_number"] = json!(format!("{}0", &known[..17]));
    answers.push(send(http.post(&url).bearer_auth(as_dept("tax")).json(&payment)).await);
    let malformed = format!("{{\"taxpayer\": {{\"identifier_number\": \"{known}\"");
    let post_raw = |url: &str, body: String| {
        http.post(url).bearer_auth(as_dept("tax")).header("content-type", "application/json").body(body)
    };
    answers.push(send(post_raw(&url, malformed.clone())).await);
    let mut wrong_type = sample("tax", "deed-tax-payment", 77).unwrap();
    wrong_type["taxpayer"]["identifier_number"] = json!(digits.parse::<u64>().unwrap());
    answers.push(send(http.post(&url).bearer_auth(as_dept("tax")).json(&wrong_type)).await);
    let batch = format!("{}\n{malformed}\n", serde_json::to_string(&wrong_type).unwrap());
    let batch_answer = http
        .post(format!("{url}:batch"))
        .bearer_auth(as_dept("tax"))
        .header("content-type", "application/x-ndjson")
        .body(batch)
        .send()
        .await
        .unwrap();
    answers.push(batch_answer.text().await.unwrap());

    // The licence APIs: a caller not entitled presenting the identifier; wrong types.
    let id = licence_id("LK0001", 1);
    let verify = format!("{api}/v1/licences/{id}/verify");
    let fields = json!({"purpose": "核验", "fields": {"holder_identifier_number": known}});
    answers.push(send(http.post(&verify).bearer_auth(as_dept("tax")).json(&fields)).await);
    let numeric = format!("{{\"purpose\": \"核验\", \"fields\": {digits}}}");
    answers.push(send(post_raw(&verify, numeric)).await);
    let holders = format!("{api}/v1/holders/licences");
    answers.push(
        send(http.post(&holders).bearer_auth(as_dept("tax")).json(&json!({"holder": known, "purpose": "查"}))).await,
    );
    answers.push(send(post_raw(&holders, format!("{{\"holder\": {digits}, \"purpose\": \"查\"}}"))).await);
    answers
        .push(send(http.get(format!("{api}/v1/holders/{known}/licences?purpose=x")).bearer_auth(as_dept("tax"))).await);

    // The e-licence sink: records it cannot apply, each carrying the identifier.
    let bus_config = BusConfig { brokers: Some(bootstrap.clone()), ..BusConfig::default() };
    let bus = Bus::start(&bus_config, &Metrics::new()).unwrap();
    let client = RegistryClient::http_with_token(&registry, Some("leak-platform-steward"));
    let text = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).unwrap().text;
    let encoder = Encoder::register(&client, &format!("{TOPIC}-value"), text).await.unwrap();
    let not_issued = licence("LK0002", Status::Revoked, &known);
    let valid = encoder.encode(&licence("LK0003", Status::Valid, &known)).unwrap();
    let mut unknown_schema = valid.clone();
    unknown_schema[1..5].copy_from_slice(&9999u32.to_be_bytes());
    // A writer whose `valid_until` is a string: the record reads, and fails to resolve to the
    // store's schema, where apache-avro's message would print the whole record.
    let mut dated = licence("LK0004", Status::Valid, &known);
    dated.valid_until = Some(30_000);
    let bundled = apache_avro::Schema::parse_str(text).unwrap();
    let decoder = govex_bus::Decoder::new(client.clone(), &bundled);
    let mut value = decoder.decode(&encoder.encode(&dated).unwrap()).await.unwrap();
    let apache_avro::types::Value::Record(fields) = &mut value else { panic!("a record") };
    for (name, field) in fields.iter_mut() {
        if name == "valid_until" {
            *field = apache_avro::types::Value::Union(1, Box::new(apache_avro::types::Value::String(known.clone())));
        }
    }
    let date = r#"["null", {"type": "int", "logicalType": "date"}]"#;
    assert!(text.contains(date));
    // A writer's schema only, not a record type of its own (the registry refuses a second
    // subject declaring platform/licence).
    let mutant_text = text
        .replace(date, r#"["null", "string"]"#)
        .replace("  \"govex.department\": \"platform\",\n  \"govex.record\": \"licence\",\n", "");
    assert!(!mutant_text.contains("govex.record"));
    let mutant = Encoder::register(&client, "leak-mutant-value", &mutant_text).await.unwrap();
    let payloads = [
        encoder.encode(&not_issued).unwrap(),
        valid[..valid.len() - 70].to_vec(),
        [valid.as_slice(), known.as_bytes()].concat(),
        unknown_schema,
        mutant.encode_value(&value).unwrap(),
    ];
    let envelope = Envelope::new(Department::PLATFORM, Division::parse("610921").unwrap(), "licence");
    for payload in &payloads {
        bus.producer().publish(Outgoing::new(TOPIC, known.clone(), payload.clone(), &envelope)).await.unwrap();
    }
    // The identifier in a header where a department belongs.
    let mut wrong_header = Outgoing::new(TOPIC, known.clone(), valid.clone(), &envelope);
    let mut headers = govex_bus::rdkafka::message::OwnedHeaders::new();
    for header in envelope.to_headers().iter() {
        let value = match header.key {
            "govex-source-department" => known.as_bytes(),
            _ => header.value.unwrap_or_default(),
        };
        headers = headers.insert(govex_bus::rdkafka::message::Header { key: header.key, value: Some(value) });
    }
    wrong_header.headers = headers;
    bus.producer().publish(wrong_header).await.unwrap();
    let letters = payloads.len() + 1;
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "leak-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{TOPIC}.dlq")]).unwrap();
    let mut dead_letter_headers = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while dead_letter_headers.len() < letters {
        assert!(std::time::Instant::now() < deadline, "{} dead letters arrived", dead_letter_headers.len());
        let Some(message) = dlq.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        let headers: Vec<(String, String)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(headers.iter().any(|(k, _)| k == "__connect.errors.exception.message"), "{headers:?}");
        dead_letter_headers.push(headers);
    }
    let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("govex_elicense_records_total"), "the sink counted: {metrics}");

    Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.lock().unwrap()),
        String::from_utf8_lossy(&stderr.lock().unwrap())
    );
    assert!(logs.contains("DEBUG") || logs.contains("debug"), "debug logging ran");

    // The hidden part of the identifiers: birth date, sequence and check character.
    let secrets = [&known[6..], &digits[6..]];
    let outputs: Vec<(String, String)> = answers
        .iter()
        .map(|a| ("answer".to_owned(), a.clone()))
        // The error headers; the original record's own headers travel along unchanged, as its
        // value does (Kafka Connect's convention), and are the record, not an error.
        .chain(
            dead_letter_headers
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("__connect.errors."))
                .map(|(k, v)| (format!("dead-letter header {k}"), v.clone())),
        )
        .chain([("metrics".to_owned(), metrics), ("logs".to_owned(), logs)])
        .collect();
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} carries an identifier:\n{text}");
        }
    }
    let problems: Vec<Value> = answers.iter().filter_map(|a| serde_json::from_str(a).ok()).collect();
    assert!(problems.len() >= 9, "the answers are problem details: {answers:?}");
}
