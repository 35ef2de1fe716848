//! Record types as data (issue 14, first step): a record type's mapping from department JSON
//! to Avro is read from its Avro schema and the schema's `govex.*` annotations, not written
//! as a pair of Rust structs. Not yet the intake's path: `tests` hold it byte for byte and
//! violation for violation to the hand-written mappings it is to replace.
//!
//! The annotations (custom attributes, which Avro readers ignore):
//! - on a field, `"govex.from"`: the JSON pointer of its value in the input, relative to the
//!   enclosing object (the record, or an array's item); by default `/<field name>`;
//! - on a field, `"govex.checks"`: named checks (the vocabulary is Rust, in [`checks`]), such
//!   as `"gb32100-credit-code"` or `"identifier-by-kind(taxpayer_identifier_type)"`;
//! - on the record, `"govex.key"`: the field whose value keys the Kafka record;
//! - on the record, `"govex.rules"`: cross-field rules by name, each department's own
//!   (`deed-tax-amount` is the tax folder's).
//!
//! The types do the rest: a decimal is read from a string with at most its scale of
//! decimals (`amount-format`), a `timestamp-millis` from RFC 3339 (`time-format`), a `date`
//! from `YYYY-MM-DD` (`date-format`), an enum from its symbols, a `["null", T]` union from an
//! absent or null value or a `T`.

use std::collections::BTreeMap;

use apache_avro::{
    schema::{RecordSchema, Schema},
    types::Value as Avro,
    Decimal,
};
use serde_json::Value;

use crate::{
    common::{parse_decimal, CheckContext, Checks},
    validation::Violation,
};

/// A cross-field rule: reads the record's mapped fields (by Avro name, with the pointer each
/// came from) and records its violations.
pub type Rule = fn(&Fields, &mut Checks);

/// The mapped fields of one record, for rules.
#[derive(Debug, Default)]
pub struct Fields {
    values: BTreeMap<String, (String, Avro)>,
}

impl Fields {
    /// A field's input pointer and mapped value.
    pub fn get(&self, name: &str) -> Option<(&str, &Avro)> {
        self.values.get(name).map(|(pointer, value)| (pointer.as_str(), value))
    }

    /// A decimal field's pointer and unscaled value.
    pub fn decimal(&self, name: &str) -> Option<(&str, i128)> {
        let (pointer, value) = self.get(name)?;
        Some((pointer, decimal_of(value)?))
    }
}

/// The unscaled value of a decimal (or of an optional one that is present).
pub fn decimal_of(value: &Avro) -> Option<i128> {
    match value {
        Avro::Decimal(decimal) => {
            let bytes = Vec::<u8>::try_from(decimal).ok()?;
            let mut wide = [if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 16];
            let n = bytes.len().min(16);
            wide[16 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
            Some(i128::from_be_bytes(wide))
        }
        Avro::Union(_, inner) => decimal_of(inner),
        _ => None,
    }
}

/// The symbol of an enum value.
pub fn symbol_of(value: &Avro) -> Option<&str> {
    match value {
        Avro::Enum(_, symbol) => Some(symbol),
        _ => None,
    }
}

/// Whether an optional value is absent.
pub fn is_absent(value: &Avro) -> bool {
    matches!(value, Avro::Union(_, inner) if **inner == Avro::Null)
}

/// Errors in a record type's annotations: the schema cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(String);

/// A record type, compiled from its annotated Avro schema.
pub struct Plan {
    schema: RecordSchema,
    key: String,
    rules: Vec<Rule>,
}

/// The rules a record type may name, by name; each department folder adds its own.
pub fn known_rules() -> BTreeMap<&'static str, Rule> {
    let mut rules: BTreeMap<&'static str, Rule> = BTreeMap::new();
    rules.insert("deed-tax-amount", crate::tax::deed_tax_amount_rule);
    rules.insert("co-ownership-shares", crate::land_registry::co_ownership_shares_rule);
    rules.insert("licence-for-withdrawal", crate::provident_fund::licence_for_withdrawal_rule);
    rules.insert("validity-order", crate::platform::validity_order_rule);
    rules
}

impl Plan {
    /// Compiles `schema`; a rule or check it names that does not exist is an error (a schema
    /// that cannot be used is refused, never half used).
    pub fn compile(schema: &Schema) -> Result<Self, PlanError> {
        let Schema::Record(record) = schema else { return Err(PlanError("not a record schema".into())) };
        let key = record
            .attributes
            .get("govex.key")
            .and_then(Value::as_str)
            .ok_or_else(|| PlanError(format!("{}: govex.key names no field", record.name.name())))?
            .to_owned();
        if !record.fields.iter().any(|f| f.name == key) {
            return Err(PlanError(format!("govex.key {key} is not a field")));
        }
        let known = known_rules();
        let mut rules = Vec::new();
        for name in record.attributes.get("govex.rules").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            rules.push(*known.get(name).ok_or_else(|| PlanError(format!("govex.rules: no rule is named '{name}'")))?);
        }
        checks::validate_names(record)?;
        Ok(Self { schema: record.clone(), key, rules })
    }

    /// Maps `input` to the Avro record and its key, or lists every violation.
    pub fn map(&self, input: &Value, context: &CheckContext) -> Result<(String, Avro), Vec<Violation>> {
        let mut checks = Checks::default();
        let mut fields = Fields::default();
        let record = map_record(&self.schema, input, "", context, &mut checks, Some(&mut fields));
        for rule in &self.rules {
            rule(&fields, &mut checks);
        }
        if !checks.ok() {
            return Err(checks.violations);
        }
        let key = match fields.values.get(&self.key) {
            Some((_, Avro::String(key))) => key.clone(),
            _ => return Err(vec![Violation::new("", "key", "the record's key is not a string")]),
        };
        Ok((key, record))
    }
}

fn map_record(
    schema: &RecordSchema,
    input: &Value,
    base: &str,
    context: &CheckContext,
    checks: &mut Checks,
    mut top: Option<&mut Fields>,
) -> Avro {
    let mut out = Vec::with_capacity(schema.fields.len());
    let mut mapped: BTreeMap<&str, Avro> = BTreeMap::new();
    for field in &schema.fields {
        let from = field
            .custom_attributes
            .get("govex.from")
            .and_then(Value::as_str)
            .map_or_else(|| format!("/{}", field.name), str::to_owned);
        let pointer = format!("{base}{from}");
        let value = input.pointer(&from).filter(|v| !v.is_null());
        let avro = map_value(&field.schema, value, &pointer, context, checks);
        let avro = checks::run(field, &avro, &mapped, &pointer, context, checks).unwrap_or(avro);
        mapped.insert(field.name.as_str(), avro.clone());
        if let Some(fields) = top.as_deref_mut() {
            fields.values.insert(field.name.clone(), (pointer, avro.clone()));
        }
        out.push((field.name.clone(), avro));
    }
    Avro::Record(out)
}

fn map_value(
    schema: &Schema,
    value: Option<&Value>,
    pointer: &str,
    context: &CheckContext,
    checks: &mut Checks,
) -> Avro {
    let text = value.and_then(Value::as_str);
    match schema {
        Schema::Union(union) => match value {
            None => Avro::Union(0, Box::new(Avro::Null)),
            Some(_) => {
                let (index, branch) = union
                    .variants()
                    .iter()
                    .enumerate()
                    .find(|(_, s)| **s != Schema::Null)
                    .unwrap_or((0, &Schema::Null));
                Avro::Union(index as u32, Box::new(map_value(branch, value, pointer, context, checks)))
            }
        },
        Schema::String => Avro::String(text.unwrap_or_default().to_owned()),
        Schema::Int => Avro::Int(value.and_then(Value::as_i64).unwrap_or_default() as i32),
        Schema::Long => Avro::Long(value.and_then(Value::as_i64).unwrap_or_default()),
        Schema::Boolean => Avro::Boolean(value.and_then(Value::as_bool).unwrap_or_default()),
        Schema::Double => Avro::Double(value.and_then(Value::as_f64).unwrap_or_default()),
        Schema::Enum(e) => {
            let symbol = text.unwrap_or_default();
            let index = e.symbols.iter().position(|s| s == symbol).unwrap_or_default();
            Avro::Enum(index as u32, e.symbols.get(index).cloned().unwrap_or_default())
        }
        Schema::Decimal(d) => {
            let unscaled = match parse_decimal(text.unwrap_or_default(), d.scale as u32) {
                Some(v) => v,
                None => {
                    checks.fail(
                        pointer,
                        "amount-format",
                        format!("must be a non-negative amount with at most {} decimals", d.scale),
                    );
                    0
                }
            };
            Avro::Decimal(Decimal::from(shortest_be(unscaled)))
        }
        Schema::TimestampMillis => match chrono::DateTime::parse_from_rfc3339(text.unwrap_or_default()) {
            Ok(instant) => Avro::TimestampMillis(instant.timestamp_millis()),
            Err(_) => {
                checks.fail(pointer, "time-format", "must be an RFC 3339 date-time with an offset");
                Avro::TimestampMillis(0)
            }
        },
        Schema::Date => match chrono::NaiveDate::parse_from_str(text.unwrap_or_default(), "%Y-%m-%d") {
            Ok(date) => Avro::Date((date - chrono::NaiveDate::default()).num_days() as i32),
            Err(_) => {
                checks.fail(pointer, "date-format", "must be a real date YYYY-MM-DD");
                Avro::Date(0)
            }
        },
        Schema::Array(array) => Avro::Array(
            value
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(n, item)| {
                    let at = format!("{pointer}/{n}");
                    match array.items.as_ref() {
                        Schema::Record(record) => map_record(record, item, &at, context, checks, None),
                        other => map_value(other, Some(item), &at, context, checks),
                    }
                })
                .collect(),
        ),
        Schema::Map(_) => Avro::Map(
            value
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Avro::String(v.as_str().unwrap_or_default().to_owned())))
                .collect(),
        ),
        Schema::Record(record) => map_record(record, value.unwrap_or(&Value::Null), pointer, context, checks, None),
        _ => Avro::Null,
    }
}

/// The shortest big-endian two's complement of `value`, as Avro writers write decimals.
fn shortest_be(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let redundant = bytes
        .windows(2)
        .take_while(|w| (w[0] == 0x00 && w[1] & 0x80 == 0) || (w[0] == 0xff && w[1] & 0x80 != 0))
        .count();
    bytes[redundant..].to_vec()
}

/// The named field checks: the vocabulary stewards use in `govex.checks`.
pub mod checks {
    use std::collections::BTreeMap;

    use apache_avro::{schema::RecordField, types::Value as Avro};

    use super::PlanError;
    use crate::{
        common::{CheckContext, Checks},
        identifiers,
    };

    /// Every check a field may name (an argument in parentheses where it takes one).
    pub const NAMES: [&str; 7] = [
        "gb11643-citizen-id",
        "gb32100-credit-code",
        "gbt2260-division",
        "licence-id",
        "property-unit-number",
        "past-instant",
        "identifier-by-kind",
    ];

    fn named(field: &RecordField) -> Vec<(String, Option<String>)> {
        let list = field.custom_attributes.get("govex.checks").and_then(serde_json::Value::as_array);
        list.into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .map(|check| match check.split_once('(') {
                Some((name, argument)) => (name.to_owned(), Some(argument.trim_end_matches(')').to_owned())),
                None => (check.to_owned(), None),
            })
            .collect()
    }

    /// Refuses a schema that names a check that does not exist.
    pub(super) fn validate_names(record: &apache_avro::schema::RecordSchema) -> Result<(), PlanError> {
        for field in &record.fields {
            for (name, _) in named(field) {
                if !NAMES.contains(&name.as_str()) {
                    return Err(PlanError(format!("field {}: govex.checks: no check is named '{name}'", field.name)));
                }
            }
            if let apache_avro::schema::Schema::Record(inner) = &field.schema {
                validate_names(inner)?;
            }
            if let apache_avro::schema::Schema::Array(array) = &field.schema {
                if let apache_avro::schema::Schema::Record(inner) = array.items.as_ref() {
                    validate_names(inner)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `field`'s checks on its mapped value; returns a replacement value where a check
    /// normalises it (a retired division code becomes its successor).
    pub(super) fn run(
        field: &RecordField,
        value: &Avro,
        siblings: &BTreeMap<&str, Avro>,
        pointer: &str,
        context: &CheckContext,
        checks: &mut Checks,
    ) -> Option<Avro> {
        let text = match value {
            Avro::String(s) => Some(s.as_str()),
            Avro::Union(_, inner) => match inner.as_ref() {
                Avro::String(s) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        };
        let mut replaced = None;
        for (name, argument) in named(field) {
            match (name.as_str(), text) {
                ("gb11643-citizen-id", Some(t)) => {
                    checks.identifier(pointer, identifiers::citizen_id(t, context.today()), "citizen identity number")
                }
                ("gb32100-credit-code", Some(t)) => {
                    checks.identifier(pointer, identifiers::credit_code(t), "unified social credit code")
                }
                ("licence-id", Some(t)) => {
                    checks.identifier(pointer, identifiers::licence_id(t).map(drop), "e-licence identifier")
                }
                ("property-unit-number", Some(t)) => {
                    checks.identifier(pointer, identifiers::property_unit_number(t), "property unit number")
                }
                ("gbt2260-division", Some(t)) => {
                    let current = checks.division(pointer, t);
                    replaced = Some(Avro::String(current));
                }
                ("identifier-by-kind", Some(t)) => {
                    let kind = argument.as_deref().and_then(|a| siblings.get(a));
                    match kind {
                        Some(Avro::Enum(_, symbol)) if symbol == "CITIZEN_ID" => checks.identifier(
                            pointer,
                            identifiers::citizen_id(t, context.today()),
                            "citizen identity number",
                        ),
                        Some(Avro::Enum(_, symbol)) if symbol == "CREDIT_CODE" => {
                            checks.identifier(pointer, identifiers::credit_code(t), "unified social credit code")
                        }
                        _ => {}
                    }
                }
                ("past-instant", _) => {
                    if let Avro::TimestampMillis(ms) = value {
                        if *ms > (context.now + chrono::Duration::minutes(1)).timestamp_millis() {
                            checks.fail(pointer, "time-not-in-future", "must not be in the future");
                        }
                    }
                }
                _ => {}
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use govex_bus::{Department, Encoder};
    use serde_json::json;

    use super::*;
    use crate::{record::RecordSpec, samples::sample};

    fn spec(department: Department, record: &str) -> RecordSpec {
        crate::all_records().into_iter().find(|r| r.department == department && r.record == record).unwrap()
    }

    /// The schema-driven mapping of a record type gives the hand-written one's bytes and key
    /// for valid records, and its violations (pointer and rule) for invalid ones.
    fn holds_to_the_hand_written_mapping(department: Department, record: &str, cases: &[(&str, Value)]) {
        let spec = spec(department, record);
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == spec.topic).unwrap().text;
        let schema = Schema::parse_str(text).unwrap();
        let plan = Plan::compile(&schema).unwrap();
        let encoder = Encoder::new(7, &schema).unwrap();
        let context = CheckContext::now();
        for n in 0..20 {
            let input = sample(department.as_str(), record, n).unwrap();
            let old = (spec.map)(&input, &context, &encoder).unwrap();
            let (key, value) = plan.map(&input, &context).unwrap();
            assert_eq!(key, old.key, "{record} {n}: the key");
            let new = encoder.encode_value(&value).unwrap();
            // Byte for byte, except where a map's entries come in another order (Avro gives a
            // map no order; apache-avro's value tree keeps one in a HashMap): then the same
            // values.
            if new != old.payload {
                let read = |bytes: &[u8]| {
                    apache_avro::reader::datum::GenericDatumReader::builder(&schema)
                        .build()
                        .unwrap()
                        .read_value(&mut &bytes[5..])
                        .unwrap()
                };
                assert_eq!(read(&new), read(&old.payload), "{record} {n}: the record");
                assert!(text.contains("\"map\""), "{record} {n}: only a map may differ in its bytes");
            }
        }
        for (pointer, value) in cases {
            let mut input = sample(department.as_str(), record, 1).unwrap();
            // Set the member, adding it where the sample leaves it out.
            match input.pointer_mut(pointer) {
                Some(member) => *member = value.clone(),
                None => {
                    let (parent, name) = pointer.rsplit_once('/').unwrap();
                    input.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(name.to_owned(), value.clone());
                }
            }
            let old: BTreeSet<(String, String)> = (spec.map)(&input, &context, &encoder)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.pointer, v.rule))
                .collect();
            let new: BTreeSet<(String, String)> =
                plan.map(&input, &context).err().unwrap_or_default().into_iter().map(|v| (v.pointer, v.rule)).collect();
            assert!(!old.is_empty(), "{record} {pointer}: the case is invalid");
            assert_eq!(new, old, "{record} {pointer} = {value}");
        }
    }

    #[test]
    fn deed_tax_payments_map_from_their_schema_as_by_hand() {
        holds_to_the_hand_written_mapping(
            Department::Tax,
            "deed-tax-payment",
            &[
                ("/taxpayer/identifier_number", json!("110105194912310021")),
                ("/taxpayer/identifier_number", json!("61090219800101001")),
                ("/property_unit_number", json!("610921001001GB00001F0000000")),
                ("/tax_authority", json!("11100000000013338X")),
                ("/division", json!("610999")),
                ("/taxable_base", json!("1.001")),
                ("/tax_rate", json!("1.5")),
                ("/tax_amount", json!("1.00")),
                ("/paid_at", json!("2099-01-01T00:00:00+08:00")),
                ("/paid_at", json!("yesterday")),
            ],
        );
    }

    #[test]
    fn contract_filings_map_from_their_schema_as_by_hand() {
        holds_to_the_hand_written_mapping(
            Department::Housing,
            "contract-filing",
            &[
                ("/buyers/0/identifier_number", json!("110105194912310021")),
                ("/buyers/0/identifier_type", json!("CREDIT_CODE")),
                ("/seller_credit_code", json!("91110000600037341X")),
                ("/property_unit_number", json!("610999001001GB00001F00000001")),
                ("/total_price", json!("-1")),
                ("/area_m2", json!("98.765")),
                ("/filed_at", json!("2099-01-01T00:00:00Z")),
                ("/division", json!("619999")),
            ],
        );
    }

    #[test]
    fn registrations_map_from_their_schema_as_by_hand() {
        let mut shared = sample("land-registry", "registration", 2).unwrap();
        let holder = shared["right_holders"][0].clone();
        shared["right_holders"] = json!([holder.clone(), holder]);
        holds_to_the_hand_written_mapping(
            Department::LandRegistry,
            "registration",
            &[
                ("/right_holders/0/identifier_number", json!("110105194912310021")),
                ("/right_holders/0/co_ownership", json!("SHARED")),
                (
                    "/right_holders/0",
                    json!({"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SOLE", "share_percent": "50.00"}),
                ),
                (
                    "/right_holders",
                    json!([
                        {"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SHARED", "share_percent": "60.00"},
                        {"identifier_type": "PASSPORT", "identifier_number": "E12345678", "name": "乙", "co_ownership": "SHARED", "share_percent": "30.00"},
                    ]),
                ),
                (
                    "/right_holders",
                    json!([
                        {"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SHARED", "share_percent": "60.001"},
                        {"identifier_type": "PASSPORT", "identifier_number": "E12345678", "name": "乙", "co_ownership": "SHARED", "share_percent": "40.00"},
                    ]),
                ),
                ("/registering_authority", json!("11430000006122244X")),
                ("/registered_at", json!("2099-01-01T00:00:00Z")),
                ("/area_m2", json!("1e3")),
            ],
        );
    }

    #[test]
    fn provident_fund_events_map_from_their_schema_as_by_hand() {
        holds_to_the_hand_written_mapping(
            Department::ProvidentFund,
            "event",
            &[
                ("/holder_citizen_id", json!("110105194912310021")),
                ("/employer_credit_code", json!("91110000600037341X")),
                ("/licence_id", json!(null)),
                ("/amount", json!("12.345")),
                ("/occurred_at", json!("not a time")),
                ("/division", json!("610999")),
            ],
        );
    }

    #[test]
    fn licences_and_case_events_map_from_their_schemas_as_by_hand() {
        holds_to_the_hand_written_mapping(
            Department::Platform,
            "licence",
            &[
                ("/licence_id", json!("1.2.156.3005.2.11100000000013338W011.610921.SN1.001.Z")),
                ("/holder/identifier_number", json!("110105194912310021")),
                ("/issued_at", json!("2099-01-01T00:00:00Z")),
                ("/valid_from", json!("2026-02-30")),
                ("/valid_until", json!("2000-01-01")),
                ("/previous_licence_id", json!("1.2.156")),
                ("/division", json!("610999")),
            ],
        );
        holds_to_the_hand_written_mapping(
            Department::Platform,
            "case-event",
            &[("/division", json!("610999")), ("/occurred_at", json!("2099-01-01T00:00:00Z"))],
        );
    }

    #[test]
    fn a_schema_naming_an_unknown_check_or_rule_is_refused() {
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == "gov.tax.deed-tax-payment.v1").unwrap().text;
        for (from, to, expected) in [
            ("gb32100-credit-code", "gb32100-credit-kode", "no check is named 'gb32100-credit-kode'"),
            ("\"deed-tax-amount\"", "\"deed-tax-amont\"", "no rule is named 'deed-tax-amont'"),
            ("\"govex.key\": \"property_unit_number\"", "\"govex.key\": \"unit\"", "govex.key unit is not a field"),
        ] {
            let schema = Schema::parse_str(&text.replace(from, to)).unwrap();
            let error = Plan::compile(&schema).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expected), "{error}");
        }
    }
}
