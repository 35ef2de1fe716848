//! A real third-party client: Confluent's Python client (`confluent-kafka` with its
//! schema-registry and Avro extras) against a running govex node. It decodes what govex
//! published, and govex decodes what it published.

use std::{path::Path, process::Command};

use apache_avro::{
    types::Value::{self, *},
    Decimal, Schema,
};
use govex_bus::{envelope::Envelope, Decoder, Encoder, Outgoing};
use govex_http::auth::{hash_token, Role};
use govex_http::config::TokenConfig;
use govex_schemas::Department;
use govex_schemas::Division;

use crate::support::test_node_config;

const TOPIC: &str = "gov.tax.deed-tax-payment.v1";

fn schema_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/avro/gov.tax.deed-tax-payment.v1.avsc")
}

/// The unscaled value of an Avro decimal.
fn unscaled(value: &Value) -> i128 {
    let Decimal(decimal) = value else { panic!("not a decimal: {value:?}") };
    let bytes = Vec::<u8>::try_from(decimal).unwrap();
    let mut wide = [if bytes[0] & 0x80 != 0 { 0xff } else { 0 }; 16];
    wide[16 - bytes.len()..].copy_from_slice(&bytes);
    i128::from_be_bytes(wide)
}

fn decimal(unscaled: i128) -> Value {
    let bytes = unscaled.to_be_bytes();
    // The shortest two's-complement form, as other writers use.
    let skip =
        bytes.windows(2).take_while(|w| (w[0] == 0 && w[1] & 0x80 == 0) || (w[0] == 0xff && w[1] & 0x80 != 0)).count();
    Decimal(Decimal::from(bytes[skip..].to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_python_client_and_govex_read_each_others_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_node_config(dir.path());
    let (steward, department) = ("test-token-of-a-steward", "test-token-of-tax");
    for (token, department, role) in [(steward, "platform", Role::Steward), (department, "tax", Role::Department)] {
        config.intake.tokens.push(TokenConfig {
            department: department.into(),
            sha256: hash_token(token),
            label: None,
            role,
        });
    }
    let node = govex::node::start(config).await.unwrap();
    let registry_url = format!("http://{}", node.registry_addr.unwrap());
    let schema_text = std::fs::read_to_string(schema_file()).unwrap();
    let encoder = Encoder::register(&node.registry, &format!("{TOPIC}-value"), &schema_text).await.unwrap();

    // govex publishes one payment.
    let payment = Record(vec![
        ("voucher_number".into(), String("GX-0001".into())),
        ("taxpayer_identifier_type".into(), Enum(0, "CITIZEN_ID".into())),
        ("taxpayer_identifier_number".into(), String("11010519491231002X".into())),
        ("taxpayer_name".into(), String("张三".into())),
        ("property_unit_number".into(), String("610921001001GB00001F00010001".into())),
        ("taxable_base".into(), decimal(100_000_000)),
        ("tax_rate".into(), decimal(300)),
        ("tax_amount".into(), decimal(3_000_000)),
        ("paid_at".into(), TimestampMillis(1_795_000_000_000)),
        ("tax_authority".into(), String("11100000000013338W".into())),
        ("division".into(), String("610921".into())),
    ]);
    let envelope = Envelope::new(Department::TAX, Division::parse("610921").unwrap(), "deed-tax-payment");
    node.bus
        .producer()
        .publish(Outgoing::new(
            TOPIC,
            "610921001001GB00001F00010001",
            encoder.encode_value(&payment).unwrap(),
            &envelope,
        ))
        .await
        .unwrap();

    // Confluent's client reads it and answers with a record of its own.
    let bootstrap = node.bus.bootstrap_servers().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/confluent_client.py"))
            .args(["--bootstrap", &bootstrap, "--registry", &registry_url, "--topic", TOPIC, "--key", "from-python"])
            .args(["--steward-token", steward, "--department-token", department])
            .arg("--schema-file")
            .arg(schema_file())
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = std::string::String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        std::string::String::from_utf8_lossy(&output.stderr)
    );
    let got = stdout.lines().find_map(|l| l.strip_prefix("GOT ")).expect("the python client printed the record");
    let got: serde_json::Value = serde_json::from_str(got).unwrap();
    assert_eq!(got["key"], "610921001001GB00001F00010001");
    assert_eq!(got["value"]["voucher_number"], "GX-0001");
    assert_eq!(got["value"]["taxpayer_identifier_type"], "CITIZEN_ID");
    assert_eq!(got["value"]["taxpayer_name"], "张三");
    assert_eq!(got["value"]["taxable_base"], "1000000.00");
    assert_eq!(got["value"]["tax_rate"], "0.0300");
    assert_eq!(got["value"]["tax_amount"], "30000.00");
    assert_eq!(got["value"]["paid_at"], 1_795_000_000_000i64);
    assert_eq!(got["headers"]["govex-event-id"], envelope.event_id.to_string());
    assert!(stdout.contains("SENT"), "{stdout}");
    // Confluent's test_compatibility sends `?normalize=False&verbose=True`.
    assert!(stdout.contains("COMPATIBLE verbose=False True"), "{stdout}");
    assert!(stdout.contains("COMPATIBLE verbose=True True"), "{stdout}");
    // Registry writes need a steward: Confluent's client gets Confluent's codes.
    assert!(stdout.contains("REFUSED anonymous 401 40101"), "{stdout}");
    assert!(stdout.contains("REFUSED department 403 40301"), "{stdout}");

    // govex reads the Python client's record, by the id the Python client registered.
    let mut collector = crate::support::collect(&node.bus, "read-python", &[TOPIC]);
    let from_python = loop {
        let message = collector.next().await;
        if message.key() == Some(b"from-python".as_slice()) {
            break message;
        }
    };
    collector.stop().await;
    let decoder = Decoder::new(node.registry.clone(), &Schema::parse_str(&schema_text).unwrap());
    let Record(fields) = decoder.decode(from_python.payload().unwrap()).await.unwrap() else { panic!("a record") };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(field("voucher_number"), String("PY-0001".into()));
    assert_eq!(field("taxpayer_identifier_type"), Enum(1, "CREDIT_CODE".into()));
    assert_eq!(field("taxpayer_name"), String("汉阴县示范置业有限公司".into()));
    assert_eq!(unscaled(&field("taxable_base")), 85_000_000);
    assert_eq!(unscaled(&field("tax_rate")), 300);
    assert_eq!(unscaled(&field("tax_amount")), 2_550_000);
    assert_eq!(field("paid_at"), TimestampMillis(1_795_140_000_000));
    node.shutdown().await.unwrap();
}
