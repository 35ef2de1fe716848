//! Violations and the JSON Schema check of department inputs.
//!
//! A violation names the field (a JSON pointer into the request body) and the rule it
//! breaks; its message never contains the value, so a personal identifier is never echoed.

use serde::Serialize;
use serde_json::Value;

/// One broken rule in one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer of the field (`/taxpayer/identifier_number`); empty for the whole body.
    pub pointer: String,
    /// The rule's stable name (`required`, `pattern`, `citizen-id-check`, ...).
    pub rule: String,
    /// A sentence for people, without the field's value.
    pub message: String,
}

impl Violation {
    /// A violation of `rule` at `pointer`.
    pub fn new(pointer: impl Into<String>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), rule: rule.into(), message: message.into() }
    }
}

/// A compiled JSON Schema (draft 2020-12).
pub struct JsonValidator {
    validator: jsonschema::Validator,
}

/// The most violations listed for one record: a record with hundreds of unknown fields must
/// not make an answer hundreds of times its size. The last one says that more were left out.
pub const MAX_VIOLATIONS: usize = 10;

/// `violations`, cut to [`MAX_VIOLATIONS`] with a last one saying how many were left out.
pub fn capped(mut violations: Vec<Violation>) -> Vec<Violation> {
    if violations.len() > MAX_VIOLATIONS {
        let left_out = violations.len() - (MAX_VIOLATIONS - 1);
        violations.truncate(MAX_VIOLATIONS - 1);
        violations.push(Violation::new("", "more-violations", format!("{left_out} more violations are not listed")));
        // Truncating keeps the capacity: hundreds of slots per rejected line, kept until the
        // batch is answered.
        violations.shrink_to_fit();
    }
    violations
}

/// The longest member name a pointer shows in full: a caller's name can be of any length,
/// and ten violations must not make an answer megabytes long.
const MAX_SEGMENT_CHARS: usize = 64;

/// A member name as a JSON pointer segment (RFC 6901: `~` is `~0`, `/` is `~1`), cut to
/// [`MAX_SEGMENT_CHARS`] characters with `…` after.
fn pointer_segment(name: &str) -> String {
    let mut segment: String =
        name.chars().take(MAX_SEGMENT_CHARS).collect::<String>().replace('~', "~0").replace('/', "~1");
    if name.chars().count() > MAX_SEGMENT_CHARS {
        segment.push('…');
    }
    segment
}

impl JsonValidator {
    /// Compiles `schema_text`; a bundled schema that does not compile is a build defect.
    pub fn new(schema_text: &str) -> Result<Self, String> {
        let schema: Value = serde_json::from_str(schema_text).map_err(|e| e.to_string())?;
        let validator = jsonschema::draft202012::options().build(&schema).map_err(|e| e.to_string())?;
        Ok(Self { validator })
    }

    /// Every violation of the schema, each with its pointer and rule.
    pub fn check(&self, instance: &Value) -> Vec<Violation> {
        use jsonschema::error::ValidationErrorKind as K;
        // Most records are valid: the boolean check stops at nothing and tracks no paths.
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Collected lazily, and no further than a little past the cap: `capped` says more
        // were left out without knowing how many beyond it.
        for error in self.validator.iter_errors(instance) {
            if out.len() > 4 * MAX_VIOLATIONS {
                break;
            }
            let pointer = error.instance_path().as_str().to_owned();
            let (rule, message) = match error.kind() {
                K::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    out.push(Violation::new(
                        format!("{pointer}/{}", pointer_segment(name)),
                        "required",
                        format!("'{name}' is required"),
                    ));
                    continue;
                }
                K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
                    for name in unexpected {
                        out.push(Violation::new(
                            format!("{pointer}/{}", pointer_segment(name)),
                            "unknown-property",
                            // The name is the caller's: the pointer shows where, the message
                            // does not repeat it.
                            "is not a field of this record",
                        ));
                    }
                    continue;
                }
                K::Type { kind } => {
                    ("type", format!("must be of type {kind:?}").replace("Single(", "").replace(')', "").to_lowercase())
                }
                K::Pattern { pattern } => ("pattern", format!("does not have the required form ({pattern})")),
                K::Enum { options } => ("enum", format!("must be one of {options}")),
                K::Constant { expected_value } => ("const", format!("must be {expected_value}")),
                K::MinLength { limit } => ("min-length", format!("must have at least {limit} characters")),
                K::MaxLength { limit } => ("max-length", format!("must have at most {limit} characters")),
                K::MinItems { limit } => ("min-items", format!("must have at least {limit} items")),
                K::MaxItems { limit } => ("max-items", format!("must have at most {limit} items")),
                K::Format { format } => ("format", format!("must be a valid {format}")),
                other => (
                    "schema",
                    format!("breaks the schema rule {:?}", std::mem::discriminant(other)).replace("Discriminant", ""),
                ),
            };
            out.push(Violation::new(pointer, rule, message));
        }
        capped(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_errors_name_pointer_and_rule_but_not_the_value() {
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == "gov.tax.deed-tax-payment.v1").unwrap().text;
        let apache_avro::Schema::Record(record) = apache_avro::Schema::parse_str(text).unwrap() else { panic!() };
        let validator = JsonValidator::new(&crate::contract::input_schema(&record).unwrap().to_string()).unwrap();
        let bad = json!({
            "voucher_number": "V1",
            "taxpayer": {"identifier_type": "CITIZEN_ID", "identifier_number": "61090219800101123", "name": "张三"},
            "property_unit_number": "610921001001GB00001F00010001",
            "taxable_base": "100.5.0", "tax_rate": "0.03", "tax_amount": "3.02",
            "paid_at": "2026-01-01T00:00:00+08:00", "tax_authority": "11100000000013338W", "division": "610921",
            "extra": 1
        });
        let violations = validator.check(&bad);
        let pairs: Vec<(&str, &str)> = violations.iter().map(|v| (v.pointer.as_str(), v.rule.as_str())).collect();
        assert!(pairs.contains(&("/taxpayer/identifier_number", "pattern")), "{pairs:?}");
        assert!(pairs.contains(&("/taxable_base", "pattern")), "{pairs:?}");
        assert!(pairs.contains(&("/extra", "unknown-property")), "{pairs:?}");
        for v in &violations {
            assert!(!v.message.contains("61090219800101123"), "the identifier is echoed: {v:?}");
        }
        let mut odd = crate::samples::sample("tax", "deed-tax-payment", 1).unwrap();
        odd["a/b~c"] = json!(1);
        odd["x".repeat(1000)] = json!(2);
        let odd = validator.check(&odd);
        let pointers: Vec<&str> = odd.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/a~1b~0c"), "{pointers:?}");
        assert!(pointers.iter().any(|p| p.chars().count() == 1 + 64 + 1 && p.ends_with('…')), "{pointers:?}");
        assert!(odd.iter().all(|v| !v.message.contains("a/b")), "the caller's names are not echoed");
        let missing = validator.check(&json!({}));
        assert!(missing.iter().any(|v| v.pointer == "/voucher_number" && v.rule == "required"));
    }
}
