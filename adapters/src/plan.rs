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
    schema::{Name, RecordField, RecordSchema, Schema},
    types::Value as Avro,
    Decimal,
};
use serde_json::Value;

use crate::{
    common::{parse_decimal, shortest_be, CheckContext, Checks},
    validation::Violation,
};

/// A cross-field rule: reads the record's mapped fields (by Avro name, with the pointer each
/// came from) and records its violations.
pub type Rule = fn(&Fields<'_>, &mut Checks);

/// The mapped fields of one record, for rules: borrowed from the record being built.
pub struct Fields<'a> {
    values: &'a [(String, Avro)],
    steps: &'a [Step],
    all_steps: &'a std::collections::HashMap<Name, Vec<Step>>,
}

impl<'a> Fields<'a> {
    /// A field's input pointer and mapped value.
    pub fn get(&self, name: &str) -> Option<(&'a str, &'a Avro)> {
        let index = self.steps.iter().position(|s| s.name == name)?;
        Some((self.steps[index].from.as_str(), &self.values.get(index)?.1))
    }

    /// An enum field's symbol.
    pub fn symbol(&self, name: &str) -> Option<&'a str> {
        let index = self.steps.iter().position(|s| s.name == name)?;
        match &self.values.get(index)?.1 {
            Avro::Enum(symbol, _) => self.steps[index].symbols.get(*symbol as usize).map(String::as_str),
            _ => None,
        }
    }

    /// An array of records: its input pointer and each item's fields.
    pub fn items(&self, name: &str) -> Option<(&'a str, Vec<Fields<'a>>)> {
        let index = self.steps.iter().position(|s| s.name == name)?;
        let steps = self.all_steps.get(self.steps[index].items.as_ref()?)?;
        let Avro::Array(items) = &self.values.get(index)?.1 else { return None };
        let fields = items
            .iter()
            .filter_map(|item| match item {
                Avro::Record(values) => Some(Fields { values, steps, all_steps: self.all_steps }),
                _ => None,
            })
            .collect();
        Some((self.steps[index].from.as_str(), fields))
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
        Avro::Decimal(_) | Avro::Bytes(_) => {
            let bytes = match value {
                Avro::Bytes(bytes) => bytes.clone(),
                Avro::Decimal(decimal) => Vec::<u8>::try_from(decimal).ok()?,
                _ => return None,
            };
            let mut wide = [if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 }; 16];
            let n = bytes.len().min(16);
            wide[16 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
            Some(i128::from_be_bytes(wide))
        }
        Avro::Union(_, inner) => decimal_of(inner),
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

/// One field of a record, compiled once: where its value is in the input, and its checks.
pub struct Step {
    /// The field's name.
    name: String,
    /// For an array of records, the items' record.
    items: Option<Name>,
    /// For an enum (or an optional one), its symbols: the value holds only the index.
    symbols: Vec<String>,
    /// The input pointer, relative to the enclosing object (`/taxpayer/name`).
    from: String,
    /// `from`, split into its member names.
    segments: Vec<String>,
    /// Named checks, with their argument.
    checks: Vec<(checks::Check, Option<String>)>,
}

/// A record type, compiled from its annotated Avro schema.
pub struct Plan {
    schema: RecordSchema,
    /// The steps of every record schema in it (the top one and those in arrays), by name
    /// (looked up without making a full name's string per record).
    steps: std::collections::HashMap<Name, Vec<Step>>,
    key: usize,
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

/// Where a field's value is in the input: its `govex.from` pointer (by default
/// `/<field name>`) and the pointer's member names, unescaped (RFC 6901).
pub(crate) fn pointer_of(field: &RecordField) -> (String, Vec<String>) {
    let from = field
        .custom_attributes
        .get("govex.from")
        .and_then(Value::as_str)
        .map_or_else(|| format!("/{}", field.name), str::to_owned);
    let segments = from.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    (from, segments)
}

fn compile_steps(record: &RecordSchema, out: &mut std::collections::HashMap<Name, Vec<Step>>) -> Result<(), PlanError> {
    let mut steps = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let (from, segments) = pointer_of(field);
        let checks = checks::compile(field)?;
        let items = match &field.schema {
            Schema::Array(array) => match array.items.as_ref() {
                Schema::Record(inner) => Some(inner.name.clone()),
                _ => None,
            },
            _ => None,
        };
        let symbols = match &field.schema {
            Schema::Enum(e) => e.symbols.clone(),
            _ => Vec::new(),
        };
        steps.push(Step { name: field.name.clone(), items, symbols, from, segments, checks });
        // Every record inside the field, however deep (optional, in an array, in a map).
        let mut nested = vec![&field.schema];
        while let Some(schema) = nested.pop() {
            match schema {
                Schema::Record(inner) => compile_steps(inner, out)?,
                Schema::Array(array) => nested.push(&array.items),
                Schema::Map(map) => nested.push(&map.types),
                Schema::Union(union) => nested.extend(union.variants()),
                _ => {}
            }
        }
    }
    out.insert(record.name.clone(), steps);
    Ok(())
}

impl Plan {
    /// Compiles `schema`; a rule or check it names that does not exist is an error (a schema
    /// that cannot be used is refused, never half used).
    pub fn compile(schema: &Schema) -> Result<Self, PlanError> {
        let Schema::Record(record) = schema else { return Err(PlanError("not a record schema".into())) };
        let key_name = record
            .attributes
            .get("govex.key")
            .and_then(Value::as_str)
            .ok_or_else(|| PlanError(format!("{}: govex.key names no field", record.name.name())))?;
        let key = record
            .fields
            .iter()
            .position(|f| f.name == key_name)
            .ok_or_else(|| PlanError(format!("govex.key {key_name} is not a field")))?;
        if record.fields[key].schema != Schema::String || record.fields[key].default.is_some() {
            return Err(PlanError(format!("govex.key {key_name} must be a required string field")));
        }
        let known = known_rules();
        let mut rules = Vec::new();
        for name in record.attributes.get("govex.rules").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            rules.push(*known.get(name).ok_or_else(|| PlanError(format!("govex.rules: no rule is named '{name}'")))?);
        }
        let mut steps = std::collections::HashMap::new();
        compile_steps(record, &mut steps)?;
        Ok(Self { schema: record.clone(), steps, key, rules })
    }

    /// Maps `input` to the Avro record and its key, or lists every violation. The input's
    /// strings are moved into the record, not copied: what is left of `input` is not the
    /// input any more.
    pub fn map(&self, input: &mut Value, context: &CheckContext) -> Result<(String, Avro), Vec<Violation>> {
        let mut checks = Checks::default();
        let fields = self.map_record(&self.schema, input, "", context, &mut checks);
        let steps = &self.steps[&self.schema.name];
        let view = Fields { values: &fields, steps, all_steps: &self.steps };
        for rule in &self.rules {
            rule(&view, &mut checks);
        }
        if !checks.ok() {
            return Err(checks.violations);
        }
        let key = match &fields[self.key].1 {
            Avro::String(key) => key.clone(),
            _ => return Err(vec![Violation::new("", "key", "the record's key is not a string")]),
        };
        Ok((key, Avro::Record(fields)))
    }

    /// `value` with its records' field names filled in, for code that reads values by name
    /// or the generic Avro writer (the plan leaves them empty while it maps).
    pub fn named(&self, value: Avro) -> Avro {
        self.name_record(&self.schema, value)
    }

    fn name_record(&self, schema: &RecordSchema, value: Avro) -> Avro {
        let Avro::Record(fields) = value else { return value };
        let named = schema
            .fields
            .iter()
            .zip(fields)
            .map(|(field, (_, value))| (field.name.clone(), self.name_value(&field.schema, value)))
            .collect();
        Avro::Record(named)
    }

    fn name_value(&self, schema: &Schema, value: Avro) -> Avro {
        match (schema, value) {
            (Schema::Array(array), Avro::Array(items)) => {
                Avro::Array(items.into_iter().map(|item| self.name_value(&array.items, item)).collect())
            }
            (Schema::Record(inner), value) => self.name_record(inner, value),
            (Schema::Enum(e), Avro::Enum(index, _)) => {
                Avro::Enum(index, e.symbols.get(index as usize).cloned().unwrap_or_default())
            }
            (Schema::Decimal(_), Avro::Bytes(bytes)) => Avro::Decimal(Decimal::from(bytes)),
            (Schema::Union(union), Avro::Union(index, inner)) => match union.variants().get(index as usize) {
                Some(branch) => Avro::Union(index, Box::new(self.name_value(branch, *inner))),
                None => Avro::Union(index, inner),
            },
            (_, value) => value,
        }
    }

    fn map_record(
        &self,
        schema: &RecordSchema,
        input: &mut Value,
        base: &str,
        context: &CheckContext,
        checks: &mut Checks,
    ) -> Vec<(String, Avro)> {
        let steps = &self.steps[&schema.name];
        let mut out: Vec<(String, Avro)> = Vec::with_capacity(schema.fields.len());
        for (field, step) in schema.fields.iter().zip(steps) {
            let mut value = Some(&mut *input);
            for segment in &step.segments {
                value = value.and_then(|v| v.get_mut(segment.as_str()));
            }
            let mut value = value.filter(|v| !v.is_null());
            // An absent member takes the field's default, as if the department had sent it
            // (the contract allows only defaults a department could send).
            let mut default;
            if value.is_none() {
                if let Some(given) = field.default.as_ref().filter(|d| !d.is_null()) {
                    default = given.clone();
                    value = Some(&mut default);
                }
            }
            // The pointer is written out only where a violation needs it.
            let at = At { base, from: &step.from };
            let avro = self.map_value(&field.schema, value, &at, context, checks);
            let avro = match step.checks.is_empty() {
                true => avro,
                false => {
                    let siblings = Fields { values: &out, steps, all_steps: &self.steps };
                    checks::run(&step.checks, avro, &siblings, &at, context, checks)
                }
            };
            // Names are left empty (no allocation per field): the steps know them, and
            // `Plan::named` fills them in where a value leaves the plan's hands.
            out.push((String::new(), avro));
        }
        out
    }

    fn map_value(
        &self,
        schema: &Schema,
        value: Option<&mut Value>,
        at: &At<'_>,
        context: &CheckContext,
        checks: &mut Checks,
    ) -> Avro {
        let text = value.as_deref().and_then(Value::as_str);
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
                    Avro::Union(index as u32, Box::new(self.map_value(branch, value, at, context, checks)))
                }
            },
            // Moved out of the input: one allocation per string saved.
            Schema::String => Avro::String(match value {
                Some(Value::String(text)) => std::mem::take(text),
                _ => String::new(),
            }),
            // JSON Schema takes 5.0 as an integer; the contract bounds the range first.
            Schema::Int => Avro::Int(value.and_then(|v| integer(v)).unwrap_or_default() as i32),
            Schema::Long => Avro::Long(value.and_then(|v| integer(v)).unwrap_or_default()),
            Schema::Boolean => Avro::Boolean(value.and_then(|v| v.as_bool()).unwrap_or_default()),
            Schema::Double => Avro::Double(value.and_then(|v| v.as_f64()).unwrap_or_default()),
            Schema::Enum(e) => {
                let symbol = text.unwrap_or_default();
                let index = e.symbols.iter().position(|s| s == symbol).unwrap_or_default();
                // The symbol is left out (the steps know it; `Plan::named` fills it in).
                Avro::Enum(index as u32, String::new())
            }
            Schema::Decimal(d) => {
                let unscaled = match parse_decimal(text.unwrap_or_default(), d.scale as u32) {
                    Some(v) => v,
                    None => {
                        checks.fail(
                            &at.render(),
                            "amount-format",
                            format!("must be a non-negative amount with at most {} decimals", d.scale),
                        );
                        0
                    }
                };
                // Kept as its bytes (`Plan::named` makes it a decimal for the generic writer).
                Avro::Bytes(shortest_be(unscaled))
            }
            Schema::TimestampMillis => match chrono::DateTime::parse_from_rfc3339(text.unwrap_or_default()) {
                Ok(instant) => Avro::TimestampMillis(instant.timestamp_millis()),
                Err(_) => {
                    checks.fail(&at.render(), "time-format", "must be an RFC 3339 date-time with an offset");
                    Avro::TimestampMillis(0)
                }
            },
            Schema::Date => match chrono::NaiveDate::parse_from_str(text.unwrap_or_default(), "%Y-%m-%d") {
                Ok(date) => Avro::Date(govex_schemas::zone::epoch_days(date)),
                Err(_) => {
                    checks.fail(&at.render(), "date-format", "must be a real date YYYY-MM-DD");
                    Avro::Date(0)
                }
            },
            Schema::Array(array) => {
                let pointer = at.render();
                Avro::Array(
                    value
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(n, item)| {
                            let base = format!("{pointer}/{n}");
                            match array.items.as_ref() {
                                Schema::Record(record) => {
                                    Avro::Record(self.map_record(record, item, &base, context, checks))
                                }
                                other => {
                                    self.map_value(other, Some(item), &At { base: &base, from: "" }, context, checks)
                                }
                            }
                        })
                        .collect(),
                )
            }
            Schema::Map(_) => Avro::Map(
                value
                    .and_then(Value::as_object_mut)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(text) => std::mem::take(text),
                            _ => String::new(),
                        };
                        (k.clone(), Avro::String(text))
                    })
                    .collect(),
            ),
            Schema::Record(record) => {
                let pointer = at.render();
                let mut null = Value::Null;
                Avro::Record(self.map_record(record, value.unwrap_or(&mut null), &pointer, context, checks))
            }
            _ => Avro::Null,
        }
    }
}

/// A JSON number as an integer, where it is one (`5` or `5.0`, within i64).
fn integer(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value.as_f64().filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64).map(|f| f as i64)
    })
}

/// Writes a mapped record in Avro's binary encoding after the Confluent header (`schema_id`),
/// without the generic writer's walk of the schema: the plan built the value from the
/// schema, so it fits it.
pub fn encode(schema_id: u32, value: &Avro, out: &mut Vec<u8>) {
    govex_bus::codec::write_header(out, schema_id);
    write_value(value, out);
}

fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

fn write_value(value: &Avro, out: &mut Vec<u8>) {
    match value {
        Avro::Null => {}
        Avro::Boolean(b) => out.push(u8::from(*b)),
        Avro::Int(n) | Avro::Date(n) => write_long(i64::from(*n), out),
        Avro::Long(n) | Avro::TimestampMillis(n) => write_long(*n, out),
        Avro::Double(x) => out.extend_from_slice(&x.to_le_bytes()),
        Avro::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
        Avro::String(s) => write_bytes(s.as_bytes(), out),
        Avro::Bytes(b) => write_bytes(b, out),
        Avro::Decimal(d) => write_bytes(&Vec::<u8>::try_from(d).unwrap_or_default(), out),
        Avro::Enum(index, _) => write_long(i64::from(*index), out),
        Avro::Union(index, inner) => {
            write_long(i64::from(*index), out);
            write_value(inner, out);
        }
        Avro::Array(items) => {
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for item in items {
                    write_value(item, out);
                }
            }
            out.push(0);
        }
        Avro::Map(entries) => {
            if !entries.is_empty() {
                write_long(entries.len() as i64, out);
                // In key order: the same record is always the same bytes (a value tree keeps
                // a map in a HashMap, whose order differs from run to run).
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (key, item) in sorted {
                    write_bytes(key.as_bytes(), out);
                    write_value(item, out);
                }
            }
            out.push(0);
        }
        Avro::Record(fields) => {
            for (_, field) in fields {
                write_value(field, out);
            }
        }
        // The plan makes none of the other kinds.
        _ => {}
    }
}

/// Where a value came from, written out only when a violation names it.
struct At<'a> {
    base: &'a str,
    from: &'a str,
}

impl At<'_> {
    fn render(&self) -> String {
        format!("{}{}", self.base, self.from)
    }
}

/// The named field checks: the vocabulary stewards use in `govex.checks`.
pub mod checks {
    use apache_avro::{schema::RecordField, types::Value as Avro};

    use super::PlanError;
    use crate::{
        common::{CheckContext, Checks},
        identifiers,
    };

    /// A named check.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Check {
        /// `gb11643-citizen-id`.
        CitizenId,
        /// `gb32100-credit-code`.
        CreditCode,
        /// `gbt2260-division` (a retired code becomes its successor).
        Division,
        /// `licence-id`.
        LicenceId,
        /// `property-unit-number`.
        PropertyUnitNumber,
        /// `past-instant`.
        PastInstant,
        /// `identifier-by-kind(<enum field>)`: a citizen id or a credit code by the kind.
        IdentifierByKind,
    }

    /// Every check a field may name (an argument in parentheses where it takes one).
    pub const NAMES: [(&str, Check); 7] = [
        ("gb11643-citizen-id", Check::CitizenId),
        ("gb32100-credit-code", Check::CreditCode),
        ("gbt2260-division", Check::Division),
        ("licence-id", Check::LicenceId),
        ("property-unit-number", Check::PropertyUnitNumber),
        ("past-instant", Check::PastInstant),
        ("identifier-by-kind", Check::IdentifierByKind),
    ];

    /// A field's checks, or the error naming one that does not exist.
    pub(crate) fn compile(field: &RecordField) -> Result<Vec<(Check, Option<String>)>, PlanError> {
        let list = field.custom_attributes.get("govex.checks").and_then(serde_json::Value::as_array);
        let mut out = Vec::new();
        for check in list.into_iter().flatten().filter_map(serde_json::Value::as_str) {
            let (name, argument) = match check.split_once('(') {
                Some((name, argument)) => (name, Some(argument.trim_end_matches(')').to_owned())),
                None => (check, None),
            };
            let found = NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
            let check = found
                .ok_or_else(|| PlanError(format!("field {}: govex.checks: no check is named '{name}'", field.name)))?;
            out.push((check, argument));
        }
        Ok(out)
    }

    /// Runs a field's checks on its mapped value, which it returns, normalised where a check
    /// normalises it (a retired division code becomes its successor).
    pub(super) fn run(
        named: &[(Check, Option<String>)],
        value: Avro,
        siblings: &super::Fields<'_>,
        at: &super::At<'_>,
        context: &CheckContext,
        checks: &mut Checks,
    ) -> Avro {
        let text = match &value {
            Avro::String(s) => Some(s.as_str()),
            Avro::Union(_, inner) => match inner.as_ref() {
                Avro::String(s) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        };
        let mut replaced = None;
        // The pointer is written out only for a violation: most values pass.
        let outcome = |checks: &mut Checks, result: Result<(), &'static str>, what: &str| {
            if let Err(rule) = result {
                checks.fail(&at.render(), rule, format!("is not a valid {what} ({rule})"));
            }
        };
        for (check, argument) in named {
            match (check, text) {
                (Check::CitizenId, Some(t)) => {
                    outcome(checks, identifiers::citizen_id(t, context.today()), "citizen identity number")
                }
                (Check::CreditCode, Some(t)) => {
                    outcome(checks, identifiers::credit_code(t), "unified social credit code")
                }
                (Check::LicenceId, Some(t)) => {
                    outcome(checks, identifiers::licence_id(t).map(drop), "e-licence identifier")
                }
                (Check::PropertyUnitNumber, Some(t)) => {
                    outcome(checks, identifiers::property_unit_number(t), "property unit number")
                }
                (Check::Division, Some(t)) => match identifiers::division(t) {
                    // Only a retired code is replaced (by its successor).
                    Ok(current) if current != t => replaced = Some(Avro::String(current)),
                    Ok(_) => {}
                    Err(rule) => checks.fail(&at.render(), rule, "is not a GB/T 2260 division code in force"),
                },
                (Check::IdentifierByKind, Some(t)) => {
                    let kind = argument.as_deref().and_then(|a| siblings.symbol(a));
                    match kind {
                        Some("CITIZEN_ID") => {
                            outcome(checks, identifiers::citizen_id(t, context.today()), "citizen identity number")
                        }
                        Some("CREDIT_CODE") => {
                            outcome(checks, identifiers::credit_code(t), "unified social credit code")
                        }
                        _ => {}
                    }
                }
                (Check::PastInstant, _) => {
                    if let Avro::TimestampMillis(ms) = value {
                        if ms > (context.now + chrono::Duration::minutes(1)).timestamp_millis() {
                            checks.fail(&at.render(), "time-not-in-future", "must not be in the future");
                        }
                    }
                }
                _ => {}
            }
        }
        match (replaced, value) {
            (Some(current), Avro::Union(branch, _)) => Avro::Union(branch, Box::new(current)),
            (Some(current), _) => current,
            (None, value) => value,
        }
    }
}

/// The value of a Confluent wire-format payload written with `schema` (tests read back what
/// the plan wrote with apache-avro's reader).
#[cfg(test)]
pub(crate) fn read_wire(schema: &Schema, wire: &[u8]) -> apache_avro::types::Value {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .unwrap()
        .read_value(&mut &wire[5..])
        .unwrap()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use govex_bus::Encoder;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::samples::sample;

    /// One invalid case: the member set (added where the sample leaves it out) and the
    /// violations (pointer, rule) the plan must report.
    type Case<'a> = (&'a str, Value, &'a [(&'a str, &'a str)]);

    /// The plan of `topic` maps 20 samples of `department`/`record` to the bytes whose
    /// SHA-256 is `digest`, with the generic Avro writer agreeing with its own, and reports
    /// exactly the violations each case lists.
    ///
    /// The digests and the violations were taken when the plan replaced the hand-written
    /// mappings, after tests held the two byte for byte and violation for violation: they
    /// pin what department systems already rely on.
    fn holds_to_its_contract(topic: &str, department: &str, record: &str, digest: &str, cases: &[Case<'_>]) {
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == topic).unwrap().text;
        let schema = Schema::parse_str(text).unwrap();
        let plan = Plan::compile(&schema).unwrap();
        let encoder = Encoder::new(7, &schema).unwrap();
        let context = CheckContext::now();
        let mut all = Sha256::new();
        for n in 0..20 {
            let input = sample(department, record, n).unwrap();
            let (key, value) = plan.map(&mut input.clone(), &context).unwrap();
            let generic = encoder.encode_value(&plan.named(value.clone())).unwrap();
            let mut own = Vec::new();
            encode(encoder.schema_id(), &value, &mut own);
            // Byte for byte, except where a map's entries come in another order (Avro gives
            // a map no order; apache-avro's value tree keeps one in a HashMap): then the
            // same values.
            if own != generic {
                assert_eq!(read_wire(&schema, &own), read_wire(&schema, &generic), "{record} {n}: the record");
                assert!(text.contains("\"map\""), "{record} {n}: only a map may differ in its bytes");
            }
            all.update(key.as_bytes());
            all.update([0]);
            all.update(&own);
        }
        assert_eq!(govex_bus::hex(&all.finalize()), digest, "{record}: the bytes of 20 samples changed");
        for (pointer, value, expected) in cases {
            let mut input = sample(department, record, 1).unwrap();
            match input.pointer_mut(pointer) {
                Some(member) => *member = value.clone(),
                None => {
                    let (parent, name) = pointer.rsplit_once('/').unwrap();
                    input.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(name.to_owned(), value.clone());
                }
            }
            let found: BTreeSet<(String, String)> = plan
                .map(&mut input, &context)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.pointer, v.rule))
                .collect();
            let expected: BTreeSet<(String, String)> =
                expected.iter().map(|(p, r)| ((*p).to_owned(), (*r).to_owned())).collect();
            assert!(!expected.is_empty(), "{record} {pointer}: the case is invalid");
            assert_eq!(found, expected, "{record} {pointer} = {value}");
        }
    }

    #[test]
    fn deed_tax_payments_map_from_their_schema() {
        holds_to_its_contract(
            "gov.tax.deed-tax-payment.v1",
            "tax",
            "deed-tax-payment",
            "421dc2b28ef2e4e028fbe808c5853a5b8cad453ce2dee20ebcd482fb9e57631a",
            &[
                (
                    "/taxpayer/identifier_number",
                    json!("110105194912310021"),
                    &[("/taxpayer/identifier_number", "citizen-id-check")],
                ),
                (
                    "/taxpayer/identifier_number",
                    json!("61090219800101001"),
                    &[("/taxpayer/identifier_number", "citizen-id-shape")],
                ),
                (
                    "/property_unit_number",
                    json!("610921001001GB00001F0000000"),
                    &[("/property_unit_number", "property-unit-number-shape")],
                ),
                ("/tax_authority", json!("11100000000013338X"), &[("/tax_authority", "credit-code-check")]),
                ("/division", json!("610999"), &[("/division", "division-exists")]),
                ("/taxable_base", json!("1.001"), &[("/taxable_base", "amount-format")]),
                ("/tax_rate", json!("1.5"), &[("/tax_rate", "tax-rate-range")]),
                ("/tax_amount", json!("1.00"), &[("/tax_amount", "deed-tax-amount")]),
                ("/paid_at", json!("2099-01-01T00:00:00+08:00"), &[("/paid_at", "time-not-in-future")]),
                ("/paid_at", json!("yesterday"), &[("/paid_at", "time-format")]),
            ],
        );
    }

    #[test]
    fn contract_filings_map_from_their_schema() {
        holds_to_its_contract(
            "gov.housing.contract-filing.v1",
            "housing",
            "contract-filing",
            "b580dbf69eadc39ea171b8aa257857a0f901f2d63ec039df353186d4843ef8f0",
            &[
                (
                    "/buyers/0/identifier_number",
                    json!("110105194912310021"),
                    &[("/buyers/0/identifier_number", "citizen-id-check")],
                ),
                (
                    "/buyers/0/identifier_type",
                    json!("CREDIT_CODE"),
                    &[("/buyers/0/identifier_number", "credit-code-organisation-check")],
                ),
                ("/seller_credit_code", json!("91110000600037341X"), &[("/seller_credit_code", "credit-code-check")]),
                (
                    "/property_unit_number",
                    json!("610999001001GB00001F00000001"),
                    &[("/property_unit_number", "property-unit-number-division")],
                ),
                ("/total_price", json!("-1"), &[("/total_price", "amount-format")]),
                ("/area_m2", json!("98.765"), &[("/area_m2", "amount-format")]),
                ("/filed_at", json!("2099-01-01T00:00:00Z"), &[("/filed_at", "time-not-in-future")]),
                ("/division", json!("619999"), &[("/division", "division-exists")]),
            ],
        );
    }

    #[test]
    fn registrations_map_from_their_schema() {
        let mut shared = sample("land-registry", "registration", 2).unwrap();
        let holder = shared["right_holders"][0].clone();
        shared["right_holders"] = json!([holder.clone(), holder]);
        holds_to_its_contract(
            "gov.land-registry.registration.v1",
            "land-registry",
            "registration",
            "cce02933f500664088b3226d48ed370c01c0219aad9a6d3a3d391054d5c5c7f5",
            &[
                (
                    "/right_holders/0/identifier_number",
                    json!("110105194912310021"),
                    &[("/right_holders/0/identifier_number", "citizen-id-check")],
                ),
                (
                    "/right_holders/0/co_ownership",
                    json!("SHARED"),
                    &[("/right_holders/0/share_percent", "share-required")],
                ),
                (
                    "/right_holders/0",
                    json!({"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SOLE", "share_percent": "50.00"}),
                    &[("/right_holders/0/share_percent", "share-only-when-shared")],
                ),
                (
                    "/right_holders",
                    json!([
                        {"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SHARED", "share_percent": "60.00"},
                        {"identifier_type": "PASSPORT", "identifier_number": "E12345678", "name": "乙", "co_ownership": "SHARED", "share_percent": "30.00"},
                    ]),
                    &[("/right_holders", "shares-total")],
                ),
                (
                    "/right_holders",
                    json!([
                        {"identifier_type": "CITIZEN_ID", "identifier_number": "11010519491231002X", "name": "甲", "co_ownership": "SHARED", "share_percent": "60.001"},
                        {"identifier_type": "PASSPORT", "identifier_number": "E12345678", "name": "乙", "co_ownership": "SHARED", "share_percent": "40.00"},
                    ]),
                    &[("/right_holders/0/share_percent", "amount-format")],
                ),
                (
                    "/registering_authority",
                    json!("11430000006122244X"),
                    &[("/registering_authority", "credit-code-check")],
                ),
                ("/registered_at", json!("2099-01-01T00:00:00Z"), &[("/registered_at", "time-not-in-future")]),
                ("/area_m2", json!("1e3"), &[("/area_m2", "amount-format")]),
            ],
        );
    }

    #[test]
    fn provident_fund_events_map_from_their_schema() {
        holds_to_its_contract(
            "gov.provident-fund.event.v1",
            "provident-fund",
            "event",
            "35cfe1c8f777ac90fadaf68a4af538ac2cc10b041b043df8ecf3739174f102a0",
            &[
                ("/holder_citizen_id", json!("110105194912310021"), &[("/holder_citizen_id", "citizen-id-check")]),
                (
                    "/employer_credit_code",
                    json!("91110000600037341X"),
                    &[("/employer_credit_code", "credit-code-check")],
                ),
                ("/licence_id", json!(null), &[("/licence_id", "licence-required")]),
                ("/amount", json!("12.345"), &[("/amount", "amount-format")]),
                ("/occurred_at", json!("not a time"), &[("/occurred_at", "time-format")]),
                ("/division", json!("610999"), &[("/division", "division-exists")]),
            ],
        );
    }

    #[test]
    fn licences_and_case_events_map_from_their_schemas() {
        holds_to_its_contract(
            "gov.elicense.licence.v1",
            "platform",
            "licence",
            "9025c848d0e1ccf0cecc469a3843d80a6e9ac5fc6970f2058251aa82efd0ee50",
            &[
                (
                    "/licence_id",
                    json!("1.2.156.3005.2.11100000000013338W011.610921.SN1.001.Z"),
                    &[("/licence_id", "licence-id-check")],
                ),
                (
                    "/holder/identifier_number",
                    json!("110105194912310021"),
                    &[("/holder/identifier_number", "citizen-id-check")],
                ),
                ("/issued_at", json!("2099-01-01T00:00:00Z"), &[("/issued_at", "time-not-in-future")]),
                ("/valid_from", json!("2026-02-30"), &[("/valid_from", "date-format")]),
                ("/valid_until", json!("2000-01-01"), &[("/valid_until", "validity-order")]),
                ("/previous_licence_id", json!("1.2.156"), &[("/previous_licence_id", "licence-id-prefix")]),
                ("/division", json!("610999"), &[("/division", "division-exists")]),
            ],
        );
        holds_to_its_contract(
            "gov.case.event.v1",
            "platform",
            "case-event",
            "2b1ffe13e9cd447f0f3082949c0e3caa520e0aea923e0328d6dc96729c2a841c",
            &[
                ("/division", json!("610999"), &[("/division", "division-exists")]),
                ("/occurred_at", json!("2099-01-01T00:00:00Z"), &[("/occurred_at", "time-not-in-future")]),
            ],
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
