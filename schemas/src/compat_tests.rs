//! Golden tests of the resolution rules, and a differential test against apache-avro's reader.

use apache_avro::{
    reader::datum::GenericDatumReader,
    schema::{InnerDecimalSchema, UuidSchema},
    types::Value,
    writer::datum::GenericDatumWriter,
    Schema,
};

use super::*;
use IncompatibilityKind as K;

/// A record `R` in namespace `t` with the given fields (JSON array body).
fn rec(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#)
}

/// One golden case: name, reader, writer, expected (kind, location) pairs (empty = compatible).
type Case = (&'static str, String, String, Vec<(IncompatibilityKind, &'static str)>);

fn cases() -> Vec<Case> {
    let int = r#"{"name":"a","type":"int"}"#;
    vec![
        ("identical", rec(int), rec(int), vec![]),
        ("reader adds a field with a default", rec(&format!(r#"{int},{{"name":"b","type":"string","default":"x"}}"#)), rec(int), vec![]),
        ("reader adds a field without a default", rec(&format!(r#"{int},{{"name":"b","type":"string"}}"#)), rec(int), vec![(K::ReaderFieldMissingDefaultValue, "/fields/1")]),
        ("reader drops a field", rec(int), rec(&format!(r#"{int},{{"name":"b","type":"string"}}"#)), vec![]),
        ("int to long", rec(r#"{"name":"a","type":"long"}"#), rec(int), vec![]),
        ("int to float", rec(r#"{"name":"a","type":"float"}"#), rec(int), vec![]),
        ("int to double", rec(r#"{"name":"a","type":"double"}"#), rec(int), vec![]),
        ("long to float", rec(r#"{"name":"a","type":"float"}"#), rec(r#"{"name":"a","type":"long"}"#), vec![]),
        ("long to double", rec(r#"{"name":"a","type":"double"}"#), rec(r#"{"name":"a","type":"long"}"#), vec![]),
        ("float to double", rec(r#"{"name":"a","type":"double"}"#), rec(r#"{"name":"a","type":"float"}"#), vec![]),
        ("long to int is no promotion", rec(int), rec(r#"{"name":"a","type":"long"}"#), vec![(K::TypeMismatch, "/fields/0/type")]),
        ("double to float is no promotion", rec(r#"{"name":"a","type":"float"}"#), rec(r#"{"name":"a","type":"double"}"#), vec![(K::TypeMismatch, "/fields/0/type")]),
        ("string to bytes", rec(r#"{"name":"a","type":"bytes"}"#), rec(r#"{"name":"a","type":"string"}"#), vec![]),
        ("bytes to string", rec(r#"{"name":"a","type":"string"}"#), rec(r#"{"name":"a","type":"bytes"}"#), vec![]),
        ("string to int", rec(int), rec(r#"{"name":"a","type":"string"}"#), vec![(K::TypeMismatch, "/fields/0/type")]),
        (
            "enum symbol added by the reader",
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X","Y","Z"]}}"#),
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X","Y"]}}"#),
            vec![],
        ),
        (
            "enum symbol removed, no default",
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X"]}}"#),
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X","Y"]}}"#),
            vec![(K::MissingEnumSymbols, "/fields/0/type/symbols")],
        ),
        (
            "enum symbol removed, with an enum default",
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X","OTHER"],"default":"OTHER"}}"#),
            rec(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["X","Y","OTHER"],"default":"OTHER"}}"#),
            vec![],
        ),
        ("union branch added by the reader", rec(r#"{"name":"a","type":["null","string","int"]}"#), rec(r#"{"name":"a","type":["null","string"]}"#), vec![]),
        ("union branch removed by the reader", rec(r#"{"name":"a","type":["null","string"]}"#), rec(r#"{"name":"a","type":["null","string","int"]}"#), vec![(K::MissingUnionBranch, "/fields/0/type")]),
        ("a plain type read by a union", rec(r#"{"name":"a","type":["null","long"]}"#), rec(int), vec![]),
        ("a union read by a plain type", rec(r#"{"name":"a","type":"string"}"#), rec(r#"{"name":"a","type":["null","string"]}"#), vec![(K::TypeMismatch, "/fields/0/type")]),
        (
            "record renamed with an alias",
            r#"{"type":"record","name":"S","namespace":"t","aliases":["R"],"fields":[{"name":"a","type":"int"}]}"#.into(),
            rec(int),
            vec![],
        ),
        ("record renamed without an alias", r#"{"type":"record","name":"S","namespace":"t","fields":[{"name":"a","type":"int"}]}"#.into(), rec(int), vec![(K::NameMismatch, "/name")]),
        ("field renamed with an alias", rec(r#"{"name":"b","type":"int","aliases":["a"]}"#), rec(int), vec![]),
        ("field renamed without an alias", rec(r#"{"name":"b","type":"int"}"#), rec(int), vec![(K::ReaderFieldMissingDefaultValue, "/fields/0")]),
        (
            "fixed sizes differ",
            rec(r#"{"name":"a","type":{"type":"fixed","name":"F","size":16}}"#),
            rec(r#"{"name":"a","type":{"type":"fixed","name":"F","size":8}}"#),
            vec![(K::FixedSizeMismatch, "/fields/0/type/size")],
        ),
        (
            "fixed sizes equal",
            rec(r#"{"name":"a","type":{"type":"fixed","name":"F","size":8}}"#),
            rec(r#"{"name":"a","type":{"type":"fixed","name":"F","size":8}}"#),
            vec![],
        ),
        (
            "decimal scale changed",
            rec(r#"{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":3}}"#),
            rec(r#"{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}}"#),
            vec![(K::DecimalMismatch, "/fields/0/type")],
        ),
        (
            "decimal unchanged",
            rec(r#"{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}}"#),
            rec(r#"{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}}"#),
            vec![],
        ),
        (
            "nested record gains a field without a default",
            rec(r#"{"name":"a","type":{"type":"record","name":"In","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}}"#),
            rec(r#"{"name":"a","type":{"type":"record","name":"In","fields":[{"name":"x","type":"int"}]}}"#),
            vec![(K::ReaderFieldMissingDefaultValue, "/fields/0/type/fields/1")],
        ),
        (
            "array of records gains a field without a default",
            rec(r#"{"name":"a","type":{"type":"array","items":{"type":"record","name":"In","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}}}"#),
            rec(r#"{"name":"a","type":{"type":"array","items":{"type":"record","name":"In","fields":[{"name":"x","type":"int"}]}}}"#),
            vec![(K::ReaderFieldMissingDefaultValue, "/fields/0/type/items/fields/1")],
        ),
        (
            "map of records gains a field with a default",
            rec(r#"{"name":"a","type":{"type":"map","values":{"type":"record","name":"In","fields":[{"name":"x","type":"int"},{"name":"y","type":"int","default":0}]}}}"#),
            rec(r#"{"name":"a","type":{"type":"map","values":{"type":"record","name":"In","fields":[{"name":"x","type":"int"}]}}}"#),
            vec![],
        ),
        (
            "map of records with a promoted field",
            rec(r#"{"name":"a","type":{"type":"map","values":{"type":"record","name":"In","fields":[{"name":"x","type":"int"}]}}}"#),
            rec(r#"{"name":"a","type":{"type":"map","values":{"type":"record","name":"In","fields":[{"name":"x","type":"long"}]}}}"#),
            vec![(K::TypeMismatch, "/fields/0/type/values/fields/0/type")],
        ),
        (
            "recursive list gains a field with a default",
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"]},{"name":"w","type":"long","default":7}]}"#.into(),
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#.into(),
            vec![],
        ),
        (
            "recursive list gains a field without a default",
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"]},{"name":"w","type":"long"}]}"#.into(),
            r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}"#.into(),
            vec![(K::ReaderFieldMissingDefaultValue, "/fields/2")],
        ),
        ("timestamp read as plain long is refused (strict)", rec(r#"{"name":"a","type":"long"}"#), rec(r#"{"name":"a","type":{"type":"long","logicalType":"timestamp-millis"}}"#), vec![(K::TypeMismatch, "/fields/0/type")]),
        ("date unchanged", rec(r#"{"name":"a","type":{"type":"int","logicalType":"date"}}"#), rec(r#"{"name":"a","type":{"type":"int","logicalType":"date"}}"#), vec![]),
        ("uuid unchanged", rec(r#"{"name":"a","type":{"type":"string","logicalType":"uuid"}}"#), rec(r#"{"name":"a","type":{"type":"string","logicalType":"uuid"}}"#), vec![]),
    ]
}

#[test]
fn golden_resolution_rules() {
    for (name, reader, writer, expected) in cases() {
        let reader = Schema::parse_str(&reader).unwrap_or_else(|e| panic!("{name}: reader: {e}"));
        let writer = Schema::parse_str(&writer).unwrap_or_else(|e| panic!("{name}: writer: {e}"));
        let found: Vec<(IncompatibilityKind, String)> =
            can_read(&reader, &writer).into_iter().map(|i| (i.kind, i.location)).collect();
        let expected: Vec<(IncompatibilityKind, String)> =
            expected.into_iter().map(|(k, l)| (k, l.to_owned())).collect();
        assert_eq!(found, expected, "{name}");
    }
}

#[test]
fn messages_name_the_problem() {
    let reader = Schema::parse_str(&rec(r#"{"name":"a","type":["null","string"]}"#)).unwrap();
    let writer = Schema::parse_str(&rec(r#"{"name":"a","type":["null","string","int"]}"#)).unwrap();
    let found = can_read(&reader, &writer);
    assert_eq!(found[0].to_string(), "MISSING_UNION_BRANCH at /fields/0/type: writer union branch 2: no branch of the reader's union can read the writer's int");
}

#[test]
fn levels_check_the_latest_or_every_version() {
    let v1 = Schema::parse_str(&rec(r#"{"name":"a","type":"int"}"#)).unwrap();
    let v2 = Schema::parse_str(&rec(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":1}"#)).unwrap();
    // v3 needs b, which v2 has and v1 lacks: backward against v2 only.
    let v3 = Schema::parse_str(&rec(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#)).unwrap();
    let existing = vec![(1, v1), (2, v2)];
    assert!(check(Compatibility::Backward, &v3, &existing).is_empty());
    let transitive = check(Compatibility::BackwardTransitive, &v3, &existing);
    assert_eq!(transitive.len(), 1);
    assert_eq!(transitive[0].0, 1);
    assert!(check(Compatibility::Forward, &v3, &existing).is_empty(), "v2 reads v3's data");
    assert!(check(Compatibility::None, &v3, &existing).is_empty());
    assert_eq!(check(Compatibility::FullTransitive, &v3, &existing).len(), 1);
    assert_eq!("FULL_TRANSITIVE".parse(), Ok(Compatibility::FullTransitive));
    assert!("full".parse::<Compatibility>().is_err());
}

/// A valid datum of `schema`; `variant` picks union branches, enum symbols and values, so
/// several variants together cover every branch.
fn sample(schema: &Schema, names: &HashMap<String, &Schema>, variant: usize, depth: usize) -> Value {
    match schema {
        Schema::Ref { name } => sample(names[&name.fullname(None)], names, variant, depth),
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(variant.is_multiple_of(2)),
        Schema::Int => Value::Int(variant as i32 * 7 - 3),
        Schema::Long => Value::Long(variant as i64 * 1_000_003 - 5),
        Schema::Float => Value::Float(variant as f32 + 0.5),
        Schema::Double => Value::Double(variant as f64 - 0.25),
        Schema::Bytes => Value::Bytes(vec![1, 2, variant as u8]),
        Schema::String => Value::String(format!("不动产-{variant}")),
        Schema::Array(a) => Value::Array((0..2).map(|i| sample(&a.items, names, variant + i, depth + 1)).collect()),
        Schema::Map(m) => {
            Value::Map((0..2).map(|i| (format!("k{i}"), sample(&m.types, names, variant + i, depth + 1))).collect())
        }
        Schema::Union(u) => {
            let variants = u.variants();
            // Deep in a recursive type, end the recursion through the null branch.
            let index = match variants.iter().position(|v| matches!(v, Schema::Null)) {
                Some(null) if depth > 3 => null,
                _ => variant % variants.len(),
            };
            Value::Union(index as u32, Box::new(sample(&variants[index], names, variant, depth + 1)))
        }
        Schema::Record(r) => Value::Record(
            r.fields.iter().map(|f| (f.name.clone(), sample(&f.schema, names, variant, depth + 1))).collect(),
        ),
        Schema::Enum(e) => {
            let index = variant % e.symbols.len();
            Value::Enum(index as u32, e.symbols[index].clone())
        }
        Schema::Fixed(f) => Value::Fixed(f.size, vec![variant as u8; f.size]),
        Schema::Decimal(d) => match &d.inner {
            // apache-avro 0.22 refuses to resolve a bytes decimal whose encoding is shorter than
            // its precision could need, so the sample uses the full 8 bytes of precision 18.
            InnerDecimalSchema::Bytes => {
                Value::Decimal(apache_avro::Decimal::from(vec![0, 0, 0, 0, 0, 0, 0x01, variant as u8]))
            }
            InnerDecimalSchema::Fixed(f) => Value::Decimal(apache_avro::Decimal::from(vec![0; f.size])),
        },
        Schema::Date => Value::Date(19_000 + variant as i32),
        Schema::TimestampMillis => Value::TimestampMillis(1_790_000_000_000 + variant as i64),
        Schema::Uuid(UuidSchema::String) => Value::Uuid(apache_avro::Uuid::from_u128(variant as u128 + 1)),
        other => panic!("sample() does not cover {other:?}"),
    }
}

#[test]
fn differential_every_compatible_pair_reads_back_with_apache_avro() {
    let mut checked = 0;
    for (name, reader_text, writer_text, expected) in cases() {
        if !expected.is_empty() {
            continue;
        }
        let reader = Schema::parse_str(&reader_text).unwrap();
        let writer = Schema::parse_str(&writer_text).unwrap();
        assert!(can_read(&reader, &writer).is_empty(), "{name}");
        let writer_names = named_types(&writer);
        let aliased = apply_reader_aliases(&reader, &writer);
        let datum_writer = GenericDatumWriter::builder(&writer).build().unwrap();
        let datum_reader = GenericDatumReader::builder(&aliased).reader_schema(&reader).build().unwrap();
        for variant in 0..6 {
            let value = sample(&writer, &writer_names, variant, 0);
            let bytes = datum_writer.write_value_to_vec(value.clone()).unwrap_or_else(|e| panic!("{name}: write: {e}"));
            let mut cursor = std::io::Cursor::new(&bytes);
            datum_reader
                .read_value(&mut cursor)
                .unwrap_or_else(|e| panic!("{name} (variant {variant}): {e}\nwriter value: {value:?}"));
            assert_eq!(cursor.position() as usize, bytes.len(), "{name}: the whole datum is read");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} compatible pairs");
}
