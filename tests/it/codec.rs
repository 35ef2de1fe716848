//! The Confluent wire format through a real broker, and the codec's errors.

use apache_avro::Schema;
use govex_bus::{
    codec::{parse_frame, CodecError},
    envelope::Envelope,
    Decoder, Encoder, Outgoing,
};
use govex_schemas::Department;
use govex_schemas::Division;

use crate::support::{self, permit, TestPermit, PERMIT_SCHEMA};

#[tokio::test]
async fn a_published_record_is_consumed_and_decoded_to_an_equal_value_with_every_header() {
    let test = support::test_bus(support::bus_config());
    let (_dir, _registry, client) = support::local_registry();
    let topic = "gov.test.permit.v1";
    test.broker.create_topic(topic, 3, 3).unwrap();
    let encoder = Encoder::register(&client, "gov.test.permit.v1-value", PERMIT_SCHEMA).await.unwrap();

    let mut sent = Vec::new();
    let mut records = Vec::new();
    for seq in 0..20 {
        let value = permit(&format!("6109210010{seq:02}"), seq);
        let mut envelope = Envelope::new(Department::HOUSING, Division::parse("610921").unwrap(), "permit");
        if seq % 2 == 1 {
            envelope.hop_trail = vec![Division::parse("610921").unwrap()];
        }
        records.push(Outgoing::new(topic, value.key.clone(), encoder.encode(&value).unwrap(), &envelope));
        sent.push((envelope, value));
    }
    for result in test.bus.producer().publish_all(records).await {
        result.expect("delivered");
    }

    let mut collector = support::collect(&test.bus, "roundtrip", &[topic]);
    let decoder = Decoder::new(client.clone(), &Schema::parse_str(PERMIT_SCHEMA).unwrap());
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let message = collector.next().await;
        let envelope = message.envelope().unwrap();
        let value: TestPermit = decoder.decode_into(message.payload().unwrap()).await.unwrap();
        assert_eq!(message.key(), Some(value.key.as_bytes()), "the key is the natural key");
        received.push((envelope, value));
    }
    collector.stop().await;
    received.sort_by_key(|(_, v)| v.seq);
    assert_eq!(received, sent);
}

#[tokio::test]
async fn the_serde_writer_is_byte_identical_to_apache_avros_value_path() {
    let (_dir, _registry, client) = support::local_registry();
    let encoder = Encoder::register(&client, "t-value", PERMIT_SCHEMA).await.unwrap();
    for seq in 0..50 {
        let mut value = permit("k", seq);
        // apache-avro's `Value` keeps maps in a HashMap, so with two or more entries its
        // byte order is arbitrary; one entry keeps the comparison exact.
        value.surface.retain(|k, _| k == "坐落");
        let via_serde = encoder.encode(&value).unwrap();
        let avro_value = apache_avro::to_value(&value).unwrap().resolve(encoder.schema()).unwrap();
        let via_value = encoder.encode_value(&avro_value).unwrap();
        assert_eq!(via_serde, via_value, "seq {seq}");
        assert_eq!(parse_frame(&via_serde).unwrap().0, encoder.schema_id());
    }
}

#[tokio::test]
async fn decoding_errors_are_distinct_and_clear() {
    let (_dir, _registry, client) = support::local_registry();
    let encoder = Encoder::register(&client, "t-value", PERMIT_SCHEMA).await.unwrap();
    let decoder = Decoder::new(client, encoder.schema());
    let good = encoder.encode(&permit("k", 7)).unwrap();

    let mut wrong_magic = good.clone();
    wrong_magic[0] = 0x7b;
    let error = decoder.decode(&wrong_magic).await.unwrap_err();
    assert!(matches!(error, CodecError::WrongMagicByte { found: 0x7b }), "{error:?}");
    assert_eq!(error.to_string(), "wrong magic byte 0x7b: expected 0x00 (Confluent wire format)");

    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&4242u32.to_be_bytes());
    let error = decoder.decode(&unknown).await.unwrap_err();
    assert!(matches!(error, CodecError::UnknownSchemaId(4242)), "{error:?}");
    assert_eq!(error.to_string(), "schema id 4242 is not known to the registry");

    let error = decoder.decode(&good[..good.len() - 3]).await.unwrap_err();
    assert!(matches!(error, CodecError::Truncated { .. }), "{error:?}");
    assert!(error.to_string().starts_with("avro datum truncated"), "{error}");

    let error = decoder.decode(&good[..3]).await.unwrap_err();
    assert!(matches!(error, CodecError::TooShort { len: 3 }), "{error:?}");

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[1, 2]);
    let error = decoder.decode(&trailing).await.unwrap_err();
    assert!(matches!(error, CodecError::TrailingBytes { count: 2, .. }), "{error:?}");

    assert_eq!(decoder.decode_into::<TestPermit>(&good).await.unwrap(), permit("k", 7));
}

#[tokio::test]
async fn a_reader_schema_with_a_new_defaulted_field_reads_old_records() {
    let (_dir, _registry, client) = support::local_registry();
    let writer = Encoder::register(&client, "t-value", PERMIT_SCHEMA).await.unwrap();
    let newer = PERMIT_SCHEMA.replacen(
        r#"{"name": "key", "type": "string"},"#,
        r#"{"name": "key", "type": "string"}, {"name": "channel", "type": "string", "default": "window"},"#,
        1,
    );
    let decoder = Decoder::new(client, &Schema::parse_str(&newer).unwrap());
    let value = decoder.decode(&writer.encode(&permit("k", 1)).unwrap()).await.unwrap();
    let apache_avro::types::Value::Record(fields) = value else { panic!("a record") };
    assert!(fields.contains(&("channel".to_owned(), apache_avro::types::Value::String("window".into()))));
}

/// A view that shows records as written reads a newer writer's extra field, and refuses a
/// writer whose schema does not resolve to its reader's (as `decode` does).
#[tokio::test]
async fn records_read_as_written_keep_what_the_reader_lacks_and_only_if_they_resolve() {
    let (_dir, _registry, client) = support::local_registry();
    let reader = Schema::parse_str(PERMIT_SCHEMA).unwrap();
    let newer = PERMIT_SCHEMA.replacen(
        r#"{"name": "key", "type": "string"},"#,
        r#"{"name": "key", "type": "string"}, {"name": "channel", "type": "string", "default": "window"},"#,
        1,
    );
    let writer = Encoder::register(&client, "newer-value", &newer).await.unwrap();
    let mut record = apache_avro::to_value(permit("k", 1)).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut record {
        let at = fields.iter().position(|(n, _)| n == "key").unwrap() + 1;
        fields.insert(at, ("channel".to_owned(), apache_avro::types::Value::String("online".into())));
    }
    let bytes = writer.encode_value(&record.resolve(writer.schema()).unwrap()).unwrap();
    let decoder = Decoder::new(client.clone(), &reader);
    let (value, _) = decoder.decode_as_written(&bytes).await.unwrap();
    let apache_avro::types::Value::Record(fields) = value else { panic!("a record") };
    assert!(fields.contains(&("channel".to_owned(), apache_avro::types::Value::String("online".into()))));

    // A writer whose `key` is an int cannot be read as the reader's string.
    let other = PERMIT_SCHEMA.replacen(r#"{"name": "key", "type": "string"}"#, r#"{"name": "key", "type": "int"}"#, 1);
    assert_ne!(other, PERMIT_SCHEMA);
    let writer = Encoder::register(&client, "other-value", &other).await.unwrap();
    let mut record = apache_avro::to_value(permit("k", 1)).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut record {
        fields.iter_mut().find(|(n, _)| n == "key").unwrap().1 = apache_avro::types::Value::Int(7);
    }
    let bytes = writer.encode_value(&record.resolve(writer.schema()).unwrap()).unwrap();
    let error = decoder.decode_as_written(&bytes).await.unwrap_err().to_string();
    assert!(error.contains("does not resolve to the reader's"), "{error}");
    assert!(decoder.decode(&bytes).await.is_err(), "decode refuses it too");
}

#[tokio::test]
async fn short_decimals_from_other_writers_resolve_to_a_newer_reader() {
    // Other writers (Confluent's, fastavro) encode decimals in the fewest bytes; apache-avro
    // alone would refuse to resolve those against decimal(18, 2).
    let (_dir, _registry, client) = support::local_registry();
    let writer_schema = r#"{"type":"record","name":"Payment","namespace":"cn.gov.exchange.tax","fields":[
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}}]}"#;
    let reader_schema = r#"{"type":"record","name":"Payment","namespace":"cn.gov.exchange.tax","fields":[
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}},
        {"name":"note","type":["null","string"],"default":null}]}"#;
    let encoder = Encoder::register(&client, "pay-value", writer_schema).await.unwrap();
    let short = apache_avro::types::Value::Record(vec![(
        "amount".into(),
        apache_avro::types::Value::Decimal(apache_avro::Decimal::from(vec![0x30, 0x39])),
    )]);
    let negative = apache_avro::types::Value::Record(vec![(
        "amount".into(),
        apache_avro::types::Value::Decimal(apache_avro::Decimal::from(vec![0xcf, 0xc7])),
    )]);
    let decoder = Decoder::new(client, &Schema::parse_str(reader_schema).unwrap());
    for (value, expected) in [(short, 12345i64), (negative, -12345)] {
        let decoded = decoder.decode(&encoder.encode_value(&value).unwrap()).await.unwrap();
        let apache_avro::types::Value::Record(fields) = decoded else { panic!("a record") };
        let apache_avro::types::Value::Decimal(amount) = &fields[0].1 else { panic!("a decimal: {fields:?}") };
        let bytes = Vec::<u8>::try_from(amount).unwrap();
        let mut wide = [if bytes[0] & 0x80 != 0 { 0xff } else { 0 }; 16];
        wide[16 - bytes.len()..].copy_from_slice(&bytes);
        assert_eq!(i128::from_be_bytes(wide), i128::from(expected));
        assert_eq!(
            fields[1],
            ("note".to_owned(), apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)))
        );
    }
}
