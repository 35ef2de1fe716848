//! The e-licence store end to end: licences published on the topic become readable and
//! verifiable over HTTP; uses are logged; personal data is masked by the catalogue; a
//! rebuild from the topic equals the live store; a sink killed mid-stream and restarted
//! neither loses nor duplicates anything.

use std::time::Duration;

use govex_bus::{envelope::Envelope, Encoder, Outgoing, RegistryClient};
use govex_schemas::identifiers::mod37_36_check;
use govex_schemas::Department;
use govex_schemas::Division;
use govex_sinks::elicense::{sink, LicenceStore, Status, TOPIC};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    intake::intake_config,
    support::{self, token},
};

/// A valid licence identifier for `serial` and `version`.
pub fn licence_id(serial: &str, version: u16) -> String {
    let body = format!("11100000000013338W011{}{serial}{version:03}", "11430000006122244L");
    format!(
        "1.2.156.3005.2.11100000000013338W011.11430000006122244L.{serial}.{version:03}.{}",
        mod37_36_check(&body).unwrap()
    )
}

/// A licence as the platform publishes it (the one declaration, in `govex_schemas`).
pub type LicenceOut = govex_schemas::records::Licence;

pub fn licence(serial: &str, status: Status, holder: &str) -> LicenceOut {
    LicenceOut {
        licence_id: licence_id(serial, 1),
        type_code: "11100000000013338W011".into(),
        type_name: "不动产权证书".into(),
        licence_number: format!("陕(2026)汉阴县不动产权第{serial}号"),
        issuer_code: "11430000006122244L".into(),
        issuer_name: "汉阴县不动产登记中心".into(),
        holder_identifier_type: govex_schemas::records::IdentifierType::CitizenId,
        holder_identifier_number: holder.into(),
        holder_name: "王小明".into(),
        issued_at: 1_790_000_000_000,
        valid_from: 20_000,
        valid_until: None,
        status,
        surface: [("坐落".to_owned(), "汉阴县城关镇".to_owned())].into(),
        previous_licence_id: None,
        content_hash: "ab".repeat(32),
        division: "610921".into(),
    }
}

/// Publishes licence records in order, as the platform would.
pub async fn publish(bus: &govex_bus::Bus, registry: &RegistryClient, records: &[LicenceOut]) {
    publish_from(bus, registry, records, "610921").await;
}

/// Publishes licence records in order, as the platform of `origin` would.
pub async fn publish_from(bus: &govex_bus::Bus, registry: &RegistryClient, records: &[LicenceOut], origin: &str) {
    let text = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).unwrap().text;
    let encoder = Encoder::register(registry, &format!("{TOPIC}-value"), text).await.unwrap();
    for record in records {
        let envelope = Envelope::new(Department::PLATFORM, Division::parse(origin).unwrap(), "licence");
        let outgoing = Outgoing::new(TOPIC, record.licence_id.clone(), encoder.encode(record).unwrap(), &envelope);
        bus.producer().publish(outgoing).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licences_are_served_verified_masked_and_every_use_is_logged() {
    let (dir, node) = crate::intake::intake_node().await;
    let holder = "11010519491231002X";
    let mut expired = licence("SN0005", Status::Valid, holder);
    expired.valid_until = Some(20_100); // 2025-01-13: long past
    let mut changed_then_suspended = licence("SN0003", Status::Valid, holder);
    let records = vec![
        licence("SN0001", Status::Valid, holder),
        licence("SN0002", Status::Valid, holder),
        licence("SN0002", Status::Revoked, holder),
        changed_then_suspended.clone(),
        {
            changed_then_suspended.status = Status::Suspended;
            changed_then_suspended
        },
        licence("SN0004", Status::Valid, holder),
        licence("SN0004", Status::Expired, holder),
        expired,
        // Cannot be applied: a revoked licence does not become valid again.
        licence("SN0002", Status::Valid, holder),
    ];
    publish(&node.bus, &node.registry, &records).await;

    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    let get = |id: String, department: &str, purpose: &str| {
        http.get(format!("{base}/v1/licences/{id}"))
            .query(&[("purpose", purpose)])
            .bearer_auth(token(department))
            .send()
    };
    // Wait until the sink has applied everything (the last valid licence is SN0005).
    support::eventually("the sink applying the licences", Duration::from_secs(60), || async {
        let response = get(licence_id("SN0005", 1), "land-registry", "等待").await.unwrap();
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;

    // Masking: land registry is entitled to personal data, housing is not.
    let full: Value =
        get(licence_id("SN0001", 1), "land-registry", "办理转移登记").await.unwrap().json().await.unwrap();
    assert_eq!(full["holder"]["identifier_number"], holder);
    assert_eq!(full["status_code"], "01");
    let masked: Value = get(licence_id("SN0001", 1), "housing", "网签核验").await.unwrap().json().await.unwrap();
    assert_eq!(masked["holder"]["identifier_number"], "110105************");
    assert_eq!(masked["holder"]["name"], "王**");
    assert!(!masked.to_string().contains(holder));
    // Purpose is required, and at most 200 characters.
    let response = http
        .get(format!("{base}/v1/licences/{}", licence_id("SN0001", 1)))
        .bearer_auth(token("tax"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(get(licence_id("SN0001", 1), "tax", &"长".repeat(201)).await.unwrap().status(), 400);
    assert_eq!(http.get(format!("{base}/v1/licences/x?purpose=p")).send().await.unwrap().status(), 401);

    // Every verification outcome.
    let verify = |id: String, body: Value| {
        http.post(format!("{base}/v1/licences/{id}/verify")).bearer_auth(token("provident-fund")).json(&body).send()
    };
    let purpose = "购房提取：核验不动产权证书";
    let cases = [
        (licence_id("SN0001", 1), json!({"purpose": purpose, "content_hash": "ab".repeat(32)}), "valid"),
        (licence_id("SN0009", 1), json!({"purpose": purpose}), "not_found"),
        (licence_id("SN0001", 1), json!({"purpose": purpose, "content_hash": "cd".repeat(32)}), "mismatch"),
        (
            licence_id("SN0001", 1),
            json!({"purpose": purpose, "fields": {"holder_identifier_number": "61090219800101123X"}}),
            "mismatch",
        ),
        (
            licence_id("SN0001", 1),
            json!({"purpose": purpose, "fields": {"holder_identifier_number": holder, "坐落": "汉阴县城关镇"}}),
            "valid",
        ),
        (licence_id("SN0003", 1), json!({"purpose": purpose}), "suspended"),
        (licence_id("SN0002", 1), json!({"purpose": purpose}), "revoked"),
        (licence_id("SN0004", 1), json!({"purpose": purpose}), "expired"),
        (licence_id("SN0005", 1), json!({"purpose": purpose}), "expired"),
    ];
    for (id, body, expected) in cases {
        let answer: Value = verify(id.clone(), body.clone()).await.unwrap().json().await.unwrap();
        assert_eq!(answer["result"], expected, "{id} {body}: {answer}");
        assert!(!answer.to_string().contains("61090219800101123X"), "a presented identifier is echoed: {answer}");
    }

    // The use log of SN0001: the gets and verifications above, with their purposes.
    let uses: Value = http
        .get(format!("{base}/v1/licences/{}/uses", licence_id("SN0001", 1)))
        .query(&[("purpose", "审计")])
        .bearer_auth(token("platform-less"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    assert!(uses.get("uses").is_none(), "an unknown token reads nothing");
    // The licences' owner (the platform) sees every department's uses.
    let uses: Value = crate::support::json(
        http.get(format!("{base}/v1/licences/{}/uses", licence_id("SN0001", 1)))
            .query(&[("purpose", "审计")])
            .bearer_auth(token("platform")),
    )
    .await;
    let entries = uses["uses"].as_array().unwrap();
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e["caller"].as_str().unwrap(), e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("housing", "get", "found")), "{actions:?}");
    assert!(actions.contains(&("provident-fund", "verify", "mismatch")), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| a.1 == "verify").count(), 4);
    assert!(entries.iter().any(|e| e["purpose"] == purpose));

    // A holder's licences.
    let listed: Value = crate::support::json(
        http.get(format!("{base}/v1/holders/{holder}/licences"))
            .query(&[("purpose", "查询名下证照"), ("type", "11100000000013338W011")])
            .bearer_auth(token("land-registry")),
    )
    .await;
    assert_eq!(listed["licences"].as_array().unwrap().len(), 5);

    // The record the store could not apply went to the dead-letter topic.
    assert_eq!(support::records_in_topic(node.bus.bootstrap_servers(), &format!("{TOPIC}.dlq"), 3), 1);
    let metrics = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"govex_elicense_verifications_total{result="mismatch"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"govex_elicense_records_total{outcome="rejected",reason="lifecycle"} 1"#), "{metrics}");

    // A rebuild from the topic ends with the same content as the live store.
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let rebuilt = LicenceStore::open(rebuilt_dir.path()).unwrap();
    let read = sink::rebuild(rebuilt.clone(), &node.bus, node.registry.clone()).await.unwrap();
    assert_eq!(
        read,
        sink::Rebuilt { read: records.len() as u64, refused: 1, unreadable: 0 },
        "the record the live sink refused is refused again"
    );
    let live_dir = dir.path().join("elicense");
    node.shutdown().await.unwrap();
    let live = LicenceStore::open(&live_dir).unwrap();
    assert_eq!(rebuilt.all().unwrap(), live.all().unwrap());
    assert_eq!(live.use_log().verify_chain().unwrap().1, None, "the use log is intact");
}

#[test]
fn govex_audit_verify_names_the_first_broken_link() {
    let data = tempfile::tempdir().unwrap();
    {
        let store = LicenceStore::open(&data.path().join("elicense")).unwrap();
        for n in 0..4 {
            let subject = format!("L{n}");
            let used = govex_sinks::use_log::Use {
                caller: "tax",
                purpose: "契税征收核验",
                action: govex_sinks::use_log::UseAction::Verify,
                subject: &subject,
                result: "valid",
            };
            store.use_log().record_use(used).unwrap();
        }
    }
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
            .args(["audit", "verify"])
            .env("GOVEX_DATA_DIR", data.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let output = run();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "use log: 4 entries, hash chain intact");
    {
        let store = LicenceStore::open(&data.path().join("elicense")).unwrap();
        let key = 2u64.to_be_bytes();
        let mut entry: serde_json::Value =
            serde_json::from_slice(&store.use_log().audit_tree().get(key).unwrap().unwrap()).unwrap();
        entry["caller"] = json!("housing");
        store.use_log().audit_tree().insert(key, serde_json::to_vec(&entry).unwrap()).unwrap();
        store.use_log().audit_tree().flush().unwrap();
    }
    let output = run();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("use log BROKEN at entry 2: its content does not match its hash"), "{stdout}");
}

/// Fields a steward adds to the licence after this node was built are carried along by the
/// e-licence store, and masked by the catalogue's paths like every other field: a platform
/// sends a licence with `remark` and `holder_phone` (v2, pushed to the running node), the
/// catalogue names `holder_phone` personal, and the API shows both to the entitled, and
/// `remark` with `holder_phone` masked to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_a_newer_licence_schema_adds_are_carried_along_and_masked_by_the_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let catalog_file = dir.path().join("catalog.toml");
    let bundled = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/catalog.toml")).unwrap();
    std::fs::write(&catalog_file, &bundled).unwrap();
    let mut config = intake_config(dir.path());
    config.intake.schema_refresh_ms = 200;
    config.catalog_file = Some(catalog_file.clone());
    let node = govex::node::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());

    let v1 = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).unwrap().text;
    let added = r#"{"name": "remark", "type": ["null", "string"], "default": null},
    {"name": "holder_phone", "type": ["null", "string"], "default": null, "govex.json": {"pattern": "^1[0-9]{10}$"}},
    {"name": "division""#;
    let v2 = v1.replacen(r#"{"name": "division""#, added, 1);
    let pushed = http
        .post(format!("http://{}/subjects/{TOPIC}-value/versions", node.registry_addr.unwrap()))
        .bearer_auth(crate::support::STEWARD_TOKEN)
        .json(&json!({ "schema": v2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::OK, "{}", pushed.text().await.unwrap());
    let personal = r#"personal_fields = ["holder_identifier_number", "holder_name", "surface", "holder_phone"]"#;
    let edited =
        bundled.replacen(r#"personal_fields = ["holder_identifier_number", "holder_name", "surface"]"#, personal, 1);
    assert_ne!(edited, bundled);
    std::fs::write(&catalog_file, edited).unwrap();
    let within = Duration::from_secs(20);
    support::eventually("the catalogue naming holder_phone going live", within, || async {
        let catalogue = reqwest::get(format!("{base}/catalog")).await.unwrap().text().await.unwrap();
        catalogue.contains("holder_phone").then_some(())
    })
    .await;

    let mut record = govex_adapters::samples::sample("platform", "licence", 3).unwrap();
    record["remark"] = json!("换证补发");
    record["holder_phone"] = json!("13912345678");
    let id = record["licence_id"].as_str().unwrap().to_owned();
    support::eventually("v2 of the licence going live", within, || async {
        let answer =
            http.post(format!("{base}/v1/platform/licence")).bearer_auth(token("platform")).json(&record).send().await;
        (answer.unwrap().status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    let read = |department: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/v1/licences/{id}"));
        async move {
            let response =
                http.get(url).query(&[("purpose", "核验")]).bearer_auth(token(department)).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let full = support::eventually("the licence in the store", within, || async {
        let (status, body) = read("land-registry").await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(full["remark"], "换证补发", "{full}");
    assert_eq!(full["holder_phone"], "13912345678", "{full}");
    let (status, masked) = read("housing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(masked["remark"], "换证补发", "{masked}");
    assert!(masked["holder_phone"].is_string(), "{masked}");
    assert!(!masked.to_string().contains("12345678"), "{masked}");
    node.shutdown().await.unwrap();
}
