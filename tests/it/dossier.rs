//! The parallel-review dossier: what housing and tax sent about a property unit is there for
//! the land registry clerk, as far as the catalogue lets each department see it.

use std::time::Duration;

use govex_adapters::samples::{property_unit_number, sample};
use serde_json::Value;

use crate::support::token;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dossier_gathers_every_department_and_honours_sharing_classes() {
    let (_dir, node) = crate::intake::intake_node().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", node.api_addr().unwrap());
    for (department, record) in
        [("housing", "contract-filing"), ("tax", "deed-tax-payment"), ("land-registry", "registration")]
    {
        let response = http
            .post(format!("{base}/v1/{department}/{record}"))
            .bearer_auth(token(department))
            .json(&sample(department, record, 42).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
    let unit = property_unit_number(42);
    let dossier = |department: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/v1/dossiers/{unit}"));
        async move {
            let request = http.get(url).query(&[("purpose", "并联审核")]).bearer_auth(token(department));
            request.send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let clerk = crate::support::eventually_saw("the dossier filling", Duration::from_secs(60), || async {
        let view = dossier("land-registry").await;
        match view["parts"].as_object().is_some_and(|p| p.len() == 3) {
            true => Ok(view),
            false => Err(view.to_string()),
        }
    })
    .await;
    let parts = &clerk["parts"];
    assert_eq!(parts["contract_filing"]["source_department"], "housing");
    assert_eq!(parts["contract_filing"]["record"]["total_price"], "568000.00");
    // Times come back in the node's zone (Asia/Shanghai by default), as the department sent them.
    assert_eq!(parts["contract_filing"]["record"]["filed_at"], "2026-11-18T09:30:00+08:00");
    assert_eq!(parts["contract_filing"]["personal_data_masked"], false, "land registry may see the buyers");
    assert_eq!(
        parts["contract_filing"]["record"]["buyers"][0]["identifier_number"],
        govex_adapters::samples::citizen_id(42)
    );
    assert_eq!(parts["deed_tax_payment"]["record"]["tax_amount"], "8520.00");
    assert_eq!(parts["deed_tax_payment"]["record"]["tax_rate"], "0.0150");
    assert_eq!(parts["registration"]["record"]["registration_type"], "TRANSFER");

    // Housing: the tax payment is not shared with it; the registration is, without personal data.
    let housing = dossier("housing").await;
    assert!(
        housing["parts"]["deed_tax_payment"]["withheld"].as_str().unwrap().contains("not shared with housing"),
        "{housing}"
    );
    assert_eq!(housing["parts"]["registration"]["personal_data_masked"], true);
    let holder = housing["parts"]["registration"]["record"]["right_holders"][0]["identifier_number"].as_str().unwrap();
    assert!(holder.contains("****"), "{holder}");
    assert!(
        !housing["parts"]["registration"].to_string().contains(&govex_adapters::samples::citizen_id(42)),
        "{housing}"
    );
    assert_eq!(housing["parts"]["contract_filing"]["personal_data_masked"], false, "housing owns its filings");
    // A unit where tax holds nothing reads the same for housing: the withheld kind says
    // nothing about whether a record of it exists.
    let filing_only = sample("housing", "contract-filing", 43).unwrap();
    let response =
        http.post(format!("{base}/v1/housing/contract-filing")).bearer_auth(token("housing")).json(&filing_only).send();
    assert_eq!(response.await.unwrap().status(), 202);
    let other_unit = property_unit_number(43);
    let other = crate::support::eventually_saw("the second filing arriving", Duration::from_secs(60), || {
        let request = http.get(format!("{base}/v1/dossiers/{other_unit}")).query(&[("purpose", "并联审核")]);
        async move {
            let view: Value = request.bearer_auth(token("housing")).send().await.unwrap().json().await.unwrap();
            match view["parts"]["contract_filing"].is_object() {
                true => Ok(view),
                false => Err(view.to_string()),
            }
        }
    })
    .await;
    assert_eq!(other["parts"]["deed_tax_payment"], housing["parts"]["deed_tax_payment"], "{other}");

    let missing = http
        .get(format!("{base}/v1/dossiers/610921001001GB99999F99999999"))
        .query(&[("purpose", "并联审核")])
        .bearer_auth(token("tax"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    node.shutdown().await.unwrap();
}

/// A steward's v2 with a new optional field: a record written with it reaches the dossier
/// with the field, although this node's reader schema is v1 (views carry what they do not
/// know). The record is mapped by the schema-driven plan from the annotated v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_added_in_a_newer_version_reaches_the_dossier() {
    use govex_adapters::{common::CheckContext, plan::Plan};
    use govex_bus::{producer::Outgoing, Encoder, Envelope};
    use govex_schemas::Department;
    use govex_schemas::Division;

    let (_dir, node) = crate::intake::intake_node().await;
    let topic = "gov.housing.contract-filing.v1";
    let v1 = govex_schemas::bundled_schemas().find(|s| s.topic == topic).unwrap().text;
    let remark = r#"{"name": "remark", "type": ["null", "string"], "default": null, "doc": "备注。A remark."}"#;
    let v2 = v1.replacen(r#"{"name": "division""#, &format!(r#"{remark}, {{"name": "division""#), 1);
    assert_ne!(v1, v2);
    let encoder = Encoder::register(&node.registry, &format!("{topic}-value"), &v2).await.unwrap();
    let plan = Plan::compile(&apache_avro::Schema::parse_str(&v2).unwrap()).unwrap();
    let mut input = sample("housing", "contract-filing", 77).unwrap();
    input["remark"] = Value::String("一次性付款".into());
    let (key, value) = plan.map(&mut input.clone(), &CheckContext::now()).unwrap();
    let envelope = Envelope::new(Department::HOUSING, Division::parse("610921").unwrap(), "contract-filing");
    let outgoing = Outgoing::new(topic, key.into_bytes(), encoder.encode_value(&plan.named(value)).unwrap(), &envelope);
    node.bus.producer().publish(outgoing).await.unwrap();

    let url = format!("http://{}/v1/dossiers/{}", node.api_addr().unwrap(), property_unit_number(77));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request =
            reqwest::Client::new().get(&url).query(&[("purpose", "并联审核")]).bearer_auth(token("land-registry"));
        let view: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(record) = view["parts"]["contract_filing"]["record"].as_object() {
            assert_eq!(record["remark"], "一次性付款", "{view}");
            assert_eq!(record["total_price"], "568000.00");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the dossier did not fill: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await.unwrap();
}
