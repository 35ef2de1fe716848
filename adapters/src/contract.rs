//! A department record type as data: everything the intake needs to take a record type comes
//! from one registered Avro schema and its `govex.*` annotations.
//!
//! - `govex.department` and `govex.record` (on the record) name who sends it and its name in
//!   URLs (`POST /v1/<department>/<record>`); a schema without them is not taken from
//!   departments (the use log, the audit anchors).
//! - The subject `<topic>-value` names the topic.
//! - The mapping and the named checks are the [`Plan`]'s.
//! - The input contract, the JSON Schema a department's system validates against, is derived
//!   here from the same schema: the shape from the fields and their `govex.from` pointers, the
//!   types from the Avro types, patterns from the named checks, descriptions from `doc`, and
//!   extra keywords from a field's `govex.json` (`maxLength`, `minItems`, ...).
//!
//! [`RecordType::compile`] is what the registry runs before it stores a version
//! ([`usable`]) and what every intake runs when it goes live on a version: a schema that
//! cannot be used is refused at push and never reaches an intake.

use std::sync::Arc;

use apache_avro::schema::{RecordField, RecordSchema, Schema};
use govex_schemas::Department;
use serde_json::{json, Map, Value};

use crate::{
    common::CheckContext,
    plan::{self, checks::Check, Plan},
    validation::{capped, JsonValidator, Violation},
};

/// The record-level annotation naming the sending department.
pub const DEPARTMENT: &str = "govex.department";
/// The record-level annotation naming the record type in URLs and headers.
pub const RECORD: &str = "govex.record";
/// The field-level annotation with extra JSON Schema keywords for its input.
pub const JSON: &str = "govex.json";

/// The JSON Schema keywords a field's `govex.json` may add: constraints and words for
/// people, nothing that changes the shape the Avro schema gives.
const EXTRA_KEYWORDS: [&str; 11] = [
    "title",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "minimum",
    "maximum",
    "examples",
    "format",
];

/// The longest string a field takes when its `govex.json` says nothing: the request limits
/// bound a body, this bounds one field, so a violation list stays readable.
const DEFAULT_MAX_LENGTH: u64 = 1000;

/// Why a record type's schema cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContractError(pub String);

/// A department record type, compiled from one registered version of its schema.
pub struct RecordType {
    /// The department that sends it.
    pub department: Department,
    /// Its name in URLs and headers (`deed-tax-payment`).
    pub record: String,
    /// The topic it is published to.
    pub topic: String,
    /// The registry's id of the schema version it encodes with.
    pub schema_id: u32,
    /// The subject's version number.
    pub version: u32,
    plan: Plan,
    input_schema: Arc<Value>,
    validator: JsonValidator,
}

impl std::fmt::Debug for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordType")
            .field("department", &self.department)
            .field("record", &self.record)
            .field("topic", &self.topic)
            .field("schema_id", &self.schema_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The department and record names a schema declares, checked for form but not learnt: the
/// registry runs this on every push, refused or not.
fn names(schema: &Schema) -> Result<Option<(String, String)>, ContractError> {
    let Schema::Record(record) = schema else { return Ok(None) };
    match (record.attributes.get(DEPARTMENT), record.attributes.get(RECORD)) {
        (None, None) => Ok(None),
        (Some(Value::String(department)), Some(Value::String(name))) => {
            for (annotation, value) in [(DEPARTMENT, department), (RECORD, name)] {
                if !Department::valid_name(value) {
                    return Err(ContractError(format!(
                        "{annotation}: not a name (lower-case letters, digits and single hyphens, starting with a letter, at most {} characters)",
                        Department::MAX_NAME_LEN
                    )));
                }
            }
            Ok(Some((department.clone(), name.clone())))
        }
        _ => Err(ContractError(format!("a department record type names both {DEPARTMENT} and {RECORD}, as strings"))),
    }
}

/// The department and record name a schema declares, if it is a department record type.
pub fn declared(schema: &Schema) -> Result<Option<(Department, String)>, ContractError> {
    let Some((department, record)) = names(schema)? else { return Ok(None) };
    let department = Department::parse(&department).map_err(|e| ContractError(format!("{DEPARTMENT}: {e}")))?;
    Ok(Some((department, record)))
}

/// The topic of a `<topic>-value` subject.
pub fn topic_of(subject: &str) -> Option<&str> {
    subject.strip_suffix("-value").filter(|t| !t.is_empty())
}

/// Whether `schema_text`, pushed under `subject`, can be used, given every version of every
/// subject (`history`: subject, text, whether it is the subject's latest live version;
/// soft-deleted versions included). A schema that declares a department record type must
/// compile into a plan and an input contract. No push may take a record type or a topic from
/// the department that has it: a subject that ever carried a record type carries that one for
/// good (a version without the annotations would hand the topic to the next push), and one
/// record type has one live subject. The registry asks before it stores a version; nothing
/// is learnt from a refused push.
pub fn usable(subject: &str, schema_text: &str, history: &[(String, String, bool)]) -> Result<(), ContractError> {
    let schema = Schema::parse_str(schema_text).map_err(|e| ContractError(e.to_string()))?;
    let declared = names(&schema)?;
    let names_of = |text: &str| Schema::parse_str(text).ok().and_then(|s| names(&s).ok().flatten());
    for (other, text, latest) in history {
        let Some((d, r)) = names_of(text) else { continue };
        match &declared {
            None if other == subject => {
                return Err(ContractError(format!(
                "{subject} carries {d}/{r}; a version without {DEPARTMENT} and {RECORD} would take its topic from it"
            )))
            }
            Some((department, record)) if other == subject && (&d != department || &r != record) => {
                return Err(ContractError(format!(
                    "{subject} carries {d}/{r}; a new version cannot give its topic to {department}/{record}"
                )))
            }
            Some((department, record)) if other != subject && *latest && &d == department && &r == record => {
                return Err(ContractError(format!("{department}/{record} is already declared by {other}")))
            }
            _ => {}
        }
    }
    let Some(_) = declared else { return Ok(()) };
    let Some(topic) = topic_of(subject) else {
        return Err(ContractError(format!(
            "a department record type is registered under its topic's value subject (<topic>-value), not '{subject}'"
        )));
    };
    // The audit topics hold the use log and its anchors, which only the node writes: no
    // department may be given a route into them.
    if topic.starts_with("gov.audit.") || topic.ends_with(".dlq") {
        return Err(ContractError(format!("{topic} is the node's own topic; a department record type cannot use it")));
    }
    compile_parts(&schema, None).map(drop)
}

/// The plan, the input contract (with `id` as its `$id`) and its validator of a record
/// type's schema.
fn compile_parts(schema: &Schema, id: Option<String>) -> Result<(Plan, Value, JsonValidator), ContractError> {
    let plan = Plan::compile(schema).map_err(|e| ContractError(e.to_string()))?;
    let Schema::Record(root) = schema else { return Err(ContractError("not a record schema".into())) };
    let mut input = input_schema(root)?;
    if let Some(id) = id {
        input["$id"] = json!(id);
    }
    let validator = JsonValidator::new(&input.to_string())
        .map_err(|e| ContractError(format!("the derived input contract does not compile: {e}")))?;
    Ok((plan, input, validator))
}

impl RecordType {
    /// Compiles version `version` (schema id `schema_id`) of `subject`; `None` when the schema
    /// is not a department record type.
    pub fn compile(
        subject: &str,
        schema_id: u32,
        version: u32,
        schema_text: &str,
    ) -> Result<Option<Self>, ContractError> {
        let schema = Schema::parse_str(schema_text).map_err(|e| ContractError(e.to_string()))?;
        if declared(&schema)?.is_none() {
            return Ok(None);
        }
        Self::from_schema(subject, schema_id, version, &schema).map(Some)
    }

    fn from_schema(subject: &str, schema_id: u32, version: u32, schema: &Schema) -> Result<Self, ContractError> {
        let topic = topic_of(subject)
            .ok_or_else(|| ContractError(format!("'{subject}' is not a topic's value subject")))?
            .to_owned();
        let (department, record) =
            declared(schema)?.ok_or_else(|| ContractError("not a department record type".into()))?;
        let (plan, input, validator) =
            compile_parts(schema, Some(format!("urn:govex:{department}:{record}:{version}")))?;
        Ok(Self { department, record, topic, schema_id, version, plan, input_schema: Arc::new(input), validator })
    }

    /// The input contract: the JSON Schema a department's record must satisfy.
    pub fn input_schema(&self) -> &Arc<Value> {
        &self.input_schema
    }

    /// Checks `input` against the input contract and the named checks and rules, and maps
    /// it: the key and the Avro value, or every violation (the JSON Schema's and the
    /// domain's, a field named once).
    pub fn check(&self, mut input: Value, context: &CheckContext) -> Result<(String, Vec<u8>), Vec<Violation>> {
        if !input.is_object() {
            return Err(vec![Violation::new("", "type", "the body must be a JSON object")]);
        }
        let schema_violations = self.validator.check(&input);
        // The domain checks run even when the JSON Schema failed: a sender fixes everything in
        // one round. A field the schema already refused is not reported twice.
        // The plan moves the input's strings into the record: it is not read after this.
        match self.plan.map(&mut input, context) {
            Ok((key, value)) if schema_violations.is_empty() => {
                let mut payload = Vec::with_capacity(256);
                plan::encode(self.schema_id, &value, &mut payload);
                Ok((key, payload))
            }
            Ok(_) => Err(schema_violations),
            Err(domain) => {
                let mut violations = schema_violations;
                for violation in domain {
                    if !violations.iter().any(|v| v.pointer == violation.pointer) {
                        violations.push(violation);
                    }
                }
                Err(capped(violations))
            }
        }
    }
}

/// One object of the input: its properties and which of them are required, built up field by
/// field from the `govex.from` pointers.
#[derive(Default)]
struct Node {
    properties: Map<String, Value>,
    children: Vec<(String, Node)>,
    required: Vec<String>,
    /// `if`/`then` pairs (an identifier whose rule depends on a kind field beside it).
    all_of: Vec<Value>,
    description: Option<String>,
}

impl Node {
    fn child(&mut self, name: &str) -> &mut Node {
        let index = match self.children.iter().position(|(n, _)| n == name) {
            Some(index) => index,
            None => {
                self.children.push((name.to_owned(), Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[index].1
    }

    fn require(&mut self, name: &str) {
        if !self.required.iter().any(|r| r == name) {
            self.required.push(name.to_owned());
        }
    }

    fn into_schema(self) -> Value {
        let mut properties = self.properties;
        for (name, child) in self.children {
            properties.insert(name, child.into_schema());
        }
        let required = self.required;
        let mut schema = json!({"type": "object", "additionalProperties": false, "properties": properties});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        if let Some(description) = self.description {
            schema["description"] = json!(description);
        }
        if !self.all_of.is_empty() {
            schema["allOf"] = Value::Array(self.all_of);
        }
        schema
    }
}

/// The JSON Schema (draft 2020-12) of a record's input, derived from its Avro schema.
pub fn input_schema(record: &RecordSchema) -> Result<Value, ContractError> {
    let mut root = object_of(record)?;
    let as_object = root.as_object_mut().expect("object_of makes an object");
    as_object.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
    Ok(root)
}

fn object_of(record: &RecordSchema) -> Result<Value, ContractError> {
    let mut root = Node { description: record.doc.clone(), ..Node::default() };
    let mut taken: Vec<Vec<String>> = Vec::new();
    for field in &record.fields {
        let (from, segments) = plan::pointer_of(field);
        let Some((leaf, parents)) = segments.split_last() else {
            return Err(ContractError(format!("field {}: govex.from must point to a member", field.name)));
        };
        // One member feeds one field: two fields on one member (or on a member and what is
        // inside it) would each get half of it.
        if let Some(other) = taken.iter().find(|t| t.starts_with(&segments) || segments.starts_with(t)) {
            return Err(ContractError(format!(
                "field {}: govex.from {from} overlaps another field's /{}",
                field.name,
                other.join("/")
            )));
        }
        taken.push(segments.clone());
        check_default(field)?;
        let optional = is_optional(field);
        let mut node = &mut root;
        for parent in parents {
            if !optional {
                node.require(parent);
            }
            node = node.child(parent);
        }
        if !optional {
            node.require(leaf);
        }
        node.properties.insert(leaf.clone(), field_schema(field)?);
        // An identifier checked by the kind beside it gets the kind's pattern in the input
        // contract too, so a department's own validator catches it before sending.
        let named = plan::checks::compile(field).map_err(|e| ContractError(e.to_string()))?;
        for (_, kind_field) in named.iter().filter(|(check, _)| *check == Check::IdentifierByKind) {
            let kind_field = kind_field.as_deref().unwrap_or_default();
            let kind_member = match record.fields.iter().find(|f| f.name == kind_field) {
                Some(kind) => plan::pointer_of(kind).1.pop().unwrap_or_default(),
                None => kind_field.to_owned(),
            };
            for (kind, check) in [("CITIZEN_ID", Check::CitizenId), ("CREDIT_CODE", Check::CreditCode)] {
                node.all_of.push(json!({
                    "if": {"properties": {kind_member.clone(): {"const": kind}}, "required": [kind_member.clone()]},
                    "then": {"properties": {leaf.clone(): {"pattern": pattern_of(check)}}}
                }));
            }
        }
    }
    Ok(root.into_schema())
}

/// A field's default must be one a department could have sent: the plan takes it as if it
/// had been.
fn check_default(field: &RecordField) -> Result<(), ContractError> {
    let Some(default) = &field.default else { return Ok(()) };
    let fits = match (&field.schema, default) {
        (_, Value::Null) => matches!(&field.schema, Schema::Union(_)),
        (Schema::String, Value::String(_)) | (Schema::Boolean, Value::Bool(_)) => true,
        (Schema::Enum(e), Value::String(symbol)) => e.symbols.contains(symbol),
        (Schema::Int | Schema::Long, Value::Number(n)) => n.is_i64(),
        (Schema::Double, Value::Number(_)) => true,
        (Schema::Array(_), Value::Array(items)) => items.is_empty(),
        (Schema::Map(_), Value::Object(members)) => members.is_empty(),
        _ => false,
    };
    match fits {
        true => Ok(()),
        false => Err(ContractError(format!(
            "field {}: its default cannot be taken as a department's value; make it [\"null\", T] with default null",
            field.name
        ))),
    }
}

/// The most symbols an enum may have: each check of a value looks through them.
const MAX_SYMBOLS: usize = 1000;

/// The most items an array takes and members a map takes, unless `govex.json` says otherwise.
const DEFAULT_MAX_ITEMS: u64 = 1000;

fn is_optional(field: &RecordField) -> bool {
    field.default.is_some() || matches!(&field.schema, Schema::Union(union) if union.variants().contains(&Schema::Null))
}

/// The pattern a named check's values have (the check itself also verifies check digits).
fn pattern_of(check: Check) -> Option<&'static str> {
    Some(match check {
        Check::CitizenId => r"^[1-9][0-9]{5}(18|19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9X]$",
        Check::CreditCode => "^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$",
        Check::Division => "^[1-9][0-9]{5}$",
        Check::PropertyUnitNumber => "^[0-9]{6}[0-9]{6}[A-Z]{2}[0-9]{5}[A-Z][0-9]{8}$",
        Check::LicenceId => r"^1\.2\.156\.3005\.2\.[0-9A-Z]+\.[0-9A-Z]+\.[0-9A-Za-z]+\.[0-9]{3}\.[0-9A-Z]$",
        Check::PastInstant | Check::IdentifierByKind => return None,
    })
}

fn field_schema(field: &RecordField) -> Result<Value, ContractError> {
    let mut schema = type_schema(&field.schema, &field.name)?;
    let object = schema.as_object_mut().expect("type_schema makes objects");
    if let Some(doc) = &field.doc {
        object.insert("description".into(), json!(doc));
    }
    for (check, _) in plan::checks::compile(field).map_err(|e| ContractError(e.to_string()))? {
        if let Some(pattern) = pattern_of(check) {
            object.insert("pattern".into(), json!(pattern));
        }
    }
    match field.custom_attributes.get(JSON) {
        None => {}
        Some(Value::Object(extra)) => {
            for (keyword, value) in extra {
                if !EXTRA_KEYWORDS.contains(&keyword.as_str()) {
                    return Err(ContractError(format!(
                        "field {}: {JSON}: '{keyword}' is not one of {}",
                        field.name,
                        EXTRA_KEYWORDS.join(", ")
                    )));
                }
                object.insert(keyword.clone(), value.clone());
            }
        }
        Some(_) => return Err(ContractError(format!("field {}: {JSON} must be an object of keywords", field.name))),
    }
    Ok(schema)
}

fn type_schema(schema: &Schema, name: &str) -> Result<Value, ContractError> {
    Ok(match schema {
        Schema::String => json!({"type": "string", "minLength": 1, "maxLength": DEFAULT_MAX_LENGTH}),
        Schema::Boolean => json!({"type": "boolean"}),
        Schema::Int => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        Schema::Long => json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
        Schema::Double => json!({"type": "number"}),
        Schema::Enum(e) if e.symbols.len() > MAX_SYMBOLS => {
            return Err(ContractError(format!("field {name}: an enum of more than {MAX_SYMBOLS} symbols")))
        }
        Schema::Enum(e) => json!({"type": "string", "enum": e.symbols}),
        Schema::Decimal(d) => {
            let whole = d.precision.saturating_sub(d.scale).max(1);
            let fraction = match d.scale {
                0 => String::new(),
                scale => format!(r"(\.[0-9]{{1,{scale}}})?"),
            };
            json!({"type": "string", "pattern": format!("^(0|[1-9][0-9]{{0,{}}}){fraction}$", whole - 1)})
        }
        Schema::TimestampMillis => json!({"type": "string", "format": "date-time"}),
        Schema::Date => json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}),
        Schema::Array(array) => {
            json!({"type": "array", "maxItems": DEFAULT_MAX_ITEMS, "items": type_schema(&array.items, name)?})
        }
        Schema::Map(map) if *map.types == Schema::String => json!({
            "type": "object",
            "maxProperties": DEFAULT_MAX_ITEMS,
            "additionalProperties": type_schema(&map.types, name)?
        }),
        Schema::Map(_) => return Err(ContractError(format!("field {name}: only a map of strings can be taken from JSON"))),
        Schema::Ref { name: named } => {
            return Err(ContractError(format!(
                "field {name}: the named type {} is used a second time by name; declare it inline (a record type's schema names each type once)",
                named.fullname(None)
            )))
        }
        Schema::Record(inner) => object_of(inner)?,
        Schema::Union(union) => {
            let branches: Vec<&Schema> = union.variants().iter().filter(|s| **s != Schema::Null).collect();
            let [branch] = branches.as_slice() else {
                return Err(ContractError(format!(
                    "field {name}: only a union of null and one type can be taken from JSON"
                )));
            };
            let mut inner = type_schema(branch, name)?;
            // Null is taken where the field is optional, as if it were left out.
            match inner.get_mut("type") {
                Some(Value::String(t)) => {
                    let t = t.clone();
                    inner["type"] = json!([t, "null"]);
                }
                _ => return Ok(json!({"anyOf": [{"type": "null"}, inner]})),
            }
            if let Some(Value::Array(symbols)) = inner.get_mut("enum") {
                symbols.push(Value::Null);
            }
            inner
        }
        other => {
            return Err(ContractError(format!(
                "field {name}: an Avro {:?} cannot be taken from JSON",
                apache_avro::schema::SchemaKind::from(other)
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(fields: &str, extra: &str) -> String {
        format!(
            r#"{{"type": "record", "name": "R", "govex.key": "a", "govex.department": "market-regulation", "govex.record": "r"{extra}, "fields": [{fields}]}}"#
        )
    }

    #[test]
    fn the_input_contract_follows_the_pointers_types_and_annotations() {
        let text = schema_of(
            r#"{"name": "a", "type": "string", "govex.checks": ["gb32100-credit-code"]},
               {"name": "b", "govex.from": "/p/name", "type": "string", "govex.json": {"maxLength": 9}},
               {"name": "c", "govex.from": "/p/note", "type": ["null", "string"], "default": null},
               {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
               {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}}"#,
            "",
        );
        let record = RecordType::compile("gov.mr.r.v1-value", 9, 3, &text).unwrap().unwrap();
        assert_eq!(
            (record.department.as_str(), record.record.as_str(), record.topic.as_str()),
            ("market-regulation", "r", "gov.mr.r.v1")
        );
        let contract = record.input_schema();
        assert_eq!(contract["required"], json!(["a", "p", "d", "e"]), "{contract}");
        assert_eq!(contract["properties"]["p"]["required"], json!(["name"]), "the optional member is not required");
        assert_eq!(contract["properties"]["p"]["additionalProperties"], json!(false));
        assert_eq!(contract["properties"]["p"]["properties"]["name"]["maxLength"], 9);
        assert_eq!(contract["properties"]["p"]["properties"]["note"]["type"], json!(["string", "null"]));
        assert_eq!(contract["properties"]["d"]["pattern"], r"^(0|[1-9][0-9]{0,3})(\.[0-9]{1,2})?$");
        assert!(contract["properties"]["a"]["pattern"].as_str().unwrap().starts_with("^[0-9A-HJ-NPQRTUWXY]"));
        assert_eq!(contract["$id"], "urn:govex:market-regulation:r:3");
        let ok = json!({"a": "91110000600037341L", "p": {"name": "n", "note": null}, "d": "1234.5", "e": "Y"});
        let (key, payload) = record.check(ok, &CheckContext::now()).unwrap();
        assert_eq!(key, "91110000600037341L");
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 9], "the Confluent header carries the version's schema id");
        let bad = json!({"a": "91110000600037341X", "p": {"name": "far too long", "x": 1}, "d": "12345.5", "e": "Z"});
        let mut found: Vec<(String, String)> =
            record.check(bad, &CheckContext::now()).unwrap_err().into_iter().map(|v| (v.pointer, v.rule)).collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("/a", "credit-code-check"),
                ("/d", "pattern"),
                ("/e", "enum"),
                ("/p/name", "max-length"),
                ("/p/x", "unknown-property")
            ]
            .map(|(p, r)| (p.to_owned(), r.to_owned()))
        );
    }

    #[test]
    fn a_contract_that_cannot_be_used_is_refused_with_the_reason() {
        let field = r#"{"name": "a", "type": "string"}"#;
        for (text, subject, expected) in [
            (
                schema_of(r#"{"name": "a", "type": "string", "govex.json": {"$ref": "x"}}"#, ""),
                "t-value",
                "'$ref' is not one of",
            ),
            (schema_of(r#"{"name": "a", "type": "string", "govex.json": 5}"#, ""), "t-value", "must be an object"),
            (
                schema_of(r#"{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "string", "long"]}"#, ""),
                "t-value",
                "only a union of null and one type",
            ),
            (
                schema_of(r#"{"name": "a", "type": "string", "govex.checks": ["nope"]}"#, ""),
                "t-value",
                "no check is named 'nope'",
            ),
            (schema_of(field, ""), "t-key", "value subject"),
            (schema_of(field, ""), "gov.audit.use-log.v1-value", "the node's own topic"),
            (schema_of(field, ""), "gov.tax.x.v1.dlq-value", "the node's own topic"),
            (schema_of(field, "").replace("market-regulation", "Market Regulation"), "t-value", "govex.department"),
            (schema_of(field, "").replace(r#", "govex.record": "r""#, ""), "t-value", "names both"),
        ] {
            let error = usable(subject, &text, &[]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expected), "{subject} {text}: {error}");
        }
        // A schema that is not a department record type is not a contract: nothing to refuse.
        assert!(usable("anything", r#"{"type": "record", "name": "R", "fields": []}"#, &[]).is_ok());
    }

    #[test]
    fn what_the_plan_cannot_write_faithfully_is_refused_at_push() {
        let key = r#"{"name": "a", "type": "string"}"#;
        for (fields, expected) in [
            (r#"{"name": "f", "type": "float"}"#, "cannot be taken from JSON"),
            (
                r#"{"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}"#,
                "cannot be taken from JSON",
            ),
            (r#"{"name": "m", "type": {"type": "map", "values": "int"}}"#, "only a map of strings"),
            (r#"{"name": "b", "govex.from": "/a", "type": "string"}"#, "overlaps another field's /a"),
            (r#"{"name": "b", "govex.from": "/a/x", "type": "string"}"#, "overlaps another field's /a"),
            (
                r#"{"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}, "default": "\u0000"}"#,
                "its default cannot be taken",
            ),
            (
                r#"{"name": "day", "type": {"type": "int", "logicalType": "date"}, "default": 0}"#,
                "its default cannot be taken",
            ),
            (
                r#"{"name": "r", "type": {"type": "record", "name": "In", "fields": [{"name": "z", "type": "string"}]}}, {"name": "s", "type": "In"}"#,
                "used a second time by name",
            ),
        ] {
            let text = schema_of(&format!("{key}, {fields}"), "");
            let error = usable("t-value", &text, &[]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expected), "{fields}: {error}");
        }
        let symbols: Vec<String> = (0..1001).map(|n| format!("\"S{n}\"")).collect();
        let big = format!(
            r#"{key}, {{"name": "e", "type": {{"type": "enum", "name": "E", "symbols": [{}]}}}}"#,
            symbols.join(",")
        );
        assert!(usable("t-value", &schema_of(&big, ""), &[])
            .unwrap_err()
            .to_string()
            .contains("more than 1000 symbols"));
        for not_a_key in [r#"["null", "string"]"#, r#""long""#] {
            let text = schema_of(&format!(r#"{{"name": "a", "type": {not_a_key}}}"#), "");
            assert!(usable("t-value", &text, &[]).unwrap_err().to_string().contains("must be a required string"));
        }
    }

    #[test]
    fn optional_records_defaults_and_whole_floats_are_written_as_sent() {
        let text = schema_of(
            r#"{"name": "a", "type": "string"},
               {"name": "opt", "type": ["null", {"type": "record", "name": "Opt", "fields": [{"name": "z", "type": "string", "govex.checks": ["gbt2260-division"]}]}], "default": null},
               {"name": "n", "type": "int"},
               {"name": "l", "type": "long"},
               {"name": "s", "type": "string", "default": "DEFAULT"},
               {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}, "default": "Y"},
               {"name": "list", "type": {"type": "array", "items": "string"}, "default": []},
               {"name": "count", "type": "int", "default": 3},
               {"name": "ratio", "type": "double", "default": 1.5},
               {"name": "extra", "type": {"type": "map", "values": "string"}, "default": {}},
               {"name": "note", "govex.from": "/memo/text", "type": ["null", "string"], "default": null}"#,
            "",
        );
        let record = RecordType::compile("t-value", 1, 1, &text).unwrap().unwrap();
        let schema = Schema::parse_str(&text).unwrap();
        let read = |payload: &[u8]| crate::plan::read_wire(&schema, payload);
        let (_, payload) =
            record.check(json!({"a": "k", "opt": {"z": "610921"}, "n": 5.0, "l": 7}), &CheckContext::now()).unwrap();
        let shown = format!("{:?}", read(&payload));
        for part in [
            "Int(5)",
            "Long(7)",
            "String(\"610921\")",
            "String(\"DEFAULT\")",
            "Enum(1, \"Y\")",
            "Array([])",
            "Int(3)",
            "Double(1.5)",
            "Map({})",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        // An object whose every member is optional is optional itself; one with a required
        // member is required.
        let contract = record.input_schema();
        assert!(!contract["required"].as_array().unwrap().contains(&json!("memo")), "{contract}");
        assert!(contract["required"].as_array().unwrap().contains(&json!("n")), "{contract}");
        let (_, payload) = record.check(json!({"a": "k", "n": 1, "l": 1}), &CheckContext::now()).unwrap();
        assert!(format!("{:?}", read(&payload)).contains("Union(0, Null)"), "an absent optional record is null");
        let bad = record.check(json!({"a": "k", "opt": {"z": "619999"}, "n": 1, "l": 1e19}), &CheckContext::now());
        let rules: Vec<(String, String)> = bad.unwrap_err().into_iter().map(|v| (v.pointer, v.rule)).collect();
        assert!(rules.contains(&("/opt/z".into(), "division-exists".into())), "{rules:?}");
        assert!(rules.contains(&("/l".into(), "schema".into())) || rules.iter().any(|(p, _)| p == "/l"), "{rules:?}");
    }

    #[test]
    fn a_push_cannot_take_a_record_type_or_a_topic_from_its_department() {
        let field = r#"{"name": "a", "type": "string"}"#;
        let mine = schema_of(field, "");
        let latest = vec![("gov.mr.r.v1-value".to_owned(), mine.clone(), true)];
        // The same record type under another subject (a steward's copy that would shadow it).
        let copy = usable("aaa.steal-value", &mine, &latest).unwrap_err().to_string();
        assert!(copy.contains("market-regulation/r is already declared by gov.mr.r.v1-value"), "{copy}");
        // The subject's topic given to another department by a compatible new version.
        let taken = mine.replace(r#""govex.department": "market-regulation""#, r#""govex.department": "housing""#);
        let error = usable("gov.mr.r.v1-value", &taken, &latest).unwrap_err().to_string();
        assert!(error.contains("cannot give its topic to housing/r"), "{error}");
        // A new version by the same department is fine; so is a new record type.
        assert!(usable("gov.mr.r.v1-value", &mine, &latest).is_ok());
        let other = mine.replace(r#""govex.record": "r""#, r#""govex.record": "s""#);
        assert!(usable("gov.mr.s.v1-value", &other, &latest).is_ok());
        // Nor in two steps: a version without the annotations first, then another department.
        let plain = mine.replace(r#", "govex.department": "market-regulation", "govex.record": "r""#, "");
        assert!(!plain.contains("govex.department"));
        let error = usable("gov.mr.r.v1-value", &plain, &latest).unwrap_err().to_string();
        assert!(error.contains("a version without govex.department and govex.record would take its topic"), "{error}");
        // A soft-deleted version still says whose the topic is.
        let deleted = vec![("gov.mr.r.v1-value".to_owned(), mine.clone(), false)];
        assert!(usable("gov.mr.r.v1-value", &taken, &deleted).is_err());
        // A plain schema under a subject that never carried a record type is none of this.
        assert!(usable("other-value", &plain, &latest).is_ok());
    }

    #[test]
    fn a_refused_push_learns_no_name() {
        // Thousands of refused pushes with new names leave the department names untouched.
        for n in 0..5000 {
            let text = schema_of(r#"{"name": "a", "type": "string", "govex.checks": ["nope"]}"#, "")
                .replace("market-regulation", &format!("dept-{n}"));
            assert!(usable("t-value", &text, &[]).is_err());
        }
        assert!(Department::known("dept-4999").is_none());
        assert!(Department::parse("ecology").is_ok(), "the interner still has room");
    }
}
