//! `govex schema lint`: the house rules for schemas, beyond what Avro itself requires.
//!
//! Names: topics `gov.<department>.<record>.v<major>`, namespace
//! `cn.gov.exchange.<department>`, records PascalCase, fields snake_case, enum symbols
//! UPPER_SNAKE. Docs: every record, field and enum says what it is in Chinese and English.
//! Types: money is `decimal(18, 2)` bytes, instants (`*_at`) are `timestamp-millis`, dates
//! (`valid_*`, `*_date`) are `date`. Personal data: fields that hold identity numbers, names
//! of people or account numbers are listed in the catalogue's `personal_fields`.

use apache_avro::{schema::RecordSchema, Schema};
use serde::Serialize;

use crate::catalog::{has_field, Catalog};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file or topic.
    pub file: String,
    /// Where in the schema (`Registration.fields.area_m2`).
    pub location: String,
    /// The rule's short name.
    pub rule: &'static str,
    /// What to change.
    pub message: String,
}

/// Lints one schema file (`topic` is its file stem) against the house rules and `catalog`.
pub fn lint(topic: &str, text: &str, catalog: Option<&Catalog>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut push = |location: String, rule: &'static str, message: String| {
        findings.push(Finding { file: format!("{topic}.avsc"), location, rule, message });
    };
    let parts: Vec<&str> = topic.split('.').collect();
    let department = match parts.as_slice() {
        ["gov", department, record, version]
            if is_kebab(department)
                && is_kebab(record)
                && version.strip_prefix('v').is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Some(department.replace('-', "_"))
        }
        _ => {
            push(String::new(), "topic-name", format!("file name {topic} is not gov.<department>.<record>.v<major>"));
            None
        }
    };
    let schema = match Schema::parse_str(text) {
        Ok(schema) => schema,
        Err(e) => {
            push(String::new(), "avro", format!("not a valid Avro schema: {e}"));
            return findings;
        }
    };
    let Schema::Record(record) = &schema else {
        push(String::new(), "top-level-record", "the top-level schema must be a record".into());
        return findings;
    };
    if let Some(department) = department {
        let expected = format!("cn.gov.exchange.{department}");
        let namespace = record.name.namespace().map(str::to_owned).unwrap_or_default();
        if namespace != expected {
            push(
                record.name.name().to_owned(),
                "namespace",
                format!("namespace is '{namespace}', expected '{expected}'"),
            );
        }
    }
    let personal = catalog.and_then(|c| c.by_topic(topic)).map(|r| r.personal_fields.clone());
    if catalog.is_some() && personal.is_none() {
        push(String::new(), "catalogued", format!("topic {topic} has no [[resource]] in catalog.toml"));
    }
    let mut walker = Walker {
        findings: Vec::new(),
        personal: personal.unwrap_or_default(),
        checked_personal: catalog.is_some(),
        schema: &schema,
    };
    walker.record(record, "");
    for (location, rule, message) in walker.findings {
        push(location, rule, message);
    }
    findings
}

struct Walker<'a> {
    findings: Vec<(String, &'static str, String)>,
    personal: Vec<String>,
    checked_personal: bool,
    schema: &'a Schema,
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_snake(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_pascal(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_upper_snake(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether a doc says something in Chinese and in English.
fn bilingual(doc: Option<&String>) -> bool {
    doc.is_some_and(|d| {
        d.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
            && d.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 3
    })
}

fn non_null(schema: &Schema) -> &Schema {
    match schema {
        Schema::Union(u) => u.variants().iter().find(|v| !matches!(v, Schema::Null)).unwrap_or(schema),
        other => other,
    }
}

impl Walker<'_> {
    fn record(&mut self, record: &RecordSchema, prefix: &str) {
        let name = record.name.name().to_owned();
        if !is_pascal(&name) {
            self.findings.push((name.clone(), "record-name", format!("record name {name} is not PascalCase")));
        }
        if !bilingual(record.doc.as_ref()) {
            self.findings.push((name.clone(), "doc", format!("record {name} needs a doc in Chinese and English")));
        }
        for field in &record.fields {
            let location = format!("{name}.fields.{}", field.name);
            let path = if prefix.is_empty() { field.name.clone() } else { format!("{prefix}.{}", field.name) };
            if !is_snake(&field.name) {
                self.findings.push((location.clone(), "field-name", format!("field {} is not snake_case", field.name)));
            }
            if !bilingual(field.doc.as_ref()) {
                self.findings.push((
                    location.clone(),
                    "doc",
                    format!("field {} needs a doc in Chinese and English", field.name),
                ));
            }
            self.types(&field.name, &location, non_null(&field.schema));
            let personal_name = ["identifier_number", "citizen_id", "account_number", "holder_name", "taxpayer_name"]
                .iter()
                .any(|p| field.name.ends_with(p))
                || (field.name == "name" && record.fields.iter().any(|f| f.name == "identifier_number"));
            if self.checked_personal && personal_name && !self.personal.contains(&path) {
                self.findings.push((
                    location.clone(),
                    "personal-data",
                    format!("field {path} holds personal data: list it in catalog.toml personal_fields"),
                ));
            }
            if self.checked_personal && self.personal.contains(&path) && !has_field(self.schema, &path) {
                self.findings.push((
                    location.clone(),
                    "personal-data",
                    format!("catalogued personal field {path} does not exist"),
                ));
            }
            match non_null(&field.schema) {
                Schema::Record(inner) => self.record(inner, &path),
                Schema::Array(array) => {
                    if let Schema::Record(inner) = non_null(&array.items) {
                        self.record(inner, &format!("{path}[]"));
                    }
                }
                Schema::Enum(e) => {
                    if !bilingual(e.doc.as_ref()) {
                        self.findings.push((
                            location.clone(),
                            "doc",
                            format!("enum {} needs a doc in Chinese and English", e.name.name()),
                        ));
                    }
                    for symbol in e.symbols.iter().filter(|s| !is_upper_snake(s)) {
                        self.findings.push((
                            location.clone(),
                            "enum-symbol",
                            format!("enum symbol {symbol} is not UPPER_SNAKE"),
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    fn types(&mut self, field: &str, location: &str, schema: &Schema) {
        let money = ["price", "amount", "base"].iter().any(|m| field.ends_with(m));
        if money {
            match schema {
                Schema::Decimal(d) if d.precision == 18 && d.scale == 2 => {}
                _ => self.findings.push((
                    location.to_owned(),
                    "money",
                    format!("money field {field} must be decimal bytes with precision 18 and scale 2"),
                )),
            }
        }
        if field.ends_with("_at") && !matches!(schema, Schema::TimestampMillis) {
            self.findings.push((
                location.to_owned(),
                "instant",
                format!("instant field {field} must be long with logicalType timestamp-millis"),
            ));
        }
        if (field.starts_with("valid_") || field.ends_with("_date")) && !matches!(schema, Schema::Date) {
            self.findings.push((
                location.to_owned(),
                "date",
                format!("date field {field} must be int with logicalType date"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundled::bundled_schemas;

    #[test]
    fn the_bundled_schemas_pass_the_house_rules() {
        let catalog = Catalog::bundled().unwrap();
        for schema in bundled_schemas() {
            let findings = lint(schema.topic, schema.text, Some(&catalog));
            assert!(findings.is_empty(), "{}: {findings:#?}", schema.topic);
        }
    }

    #[test]
    fn each_rule_catches_its_mistake() {
        let text = r#"{"type":"record","name":"bad_record","namespace":"cn.gov.exchange.other","doc":"only English here","fields":[
            {"name":"TotalPrice","type":"double","doc":"总价 total price"},
            {"name":"total_price","type":"double","doc":"总价 total price"},
            {"name":"paid_at","type":"long","doc":"缴款时间 paid at"},
            {"name":"valid_from","type":"string","doc":"起始 valid from"},
            {"name":"holder_citizen_id","type":"string"},
            {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["ok","FINE"],"doc":"种类 kind"},"doc":"种类 kind"}]}"#;
        let catalog = Catalog::bundled().unwrap();
        let rules: Vec<&str> =
            lint("gov.tax.deed-tax-payment.v1", text, Some(&catalog)).iter().map(|f| f.rule).collect();
        for rule in [
            "namespace",
            "record-name",
            "doc",
            "field-name",
            "money",
            "instant",
            "date",
            "personal-data",
            "enum-symbol",
        ] {
            assert!(rules.contains(&rule), "{rule} not reported: {rules:?}");
        }
        assert_eq!(lint("gov.Tax.x", text, None)[0].rule, "topic-name");
    }
}
