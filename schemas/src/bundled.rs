//! The Avro schemas compiled into the binary, one per topic.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// One bundled schema: the topic it describes and its JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledSchema {
    /// The topic whose values this schema describes (the file stem).
    pub topic: &'static str,
    /// The schema's JSON text.
    pub text: &'static str,
}

impl BundledSchema {
    /// The registry subject under Confluent's TopicNameStrategy: `<topic>-value`.
    pub fn subject(&self) -> String {
        value_subject(self.topic)
    }
}

/// The TopicNameStrategy subject for the values of `topic`.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// One bundled JSON Schema of a department-facing input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledJsonSchema {
    /// The department folder, e.g. `tax`.
    pub department: &'static str,
    /// The record and major version, e.g. `deed-tax-payment.v1`.
    pub record: &'static str,
    /// The JSON Schema text (draft 2020-12).
    pub text: &'static str,
}

/// Every bundled JSON Schema, in path order.
pub fn bundled_json_schemas() -> impl Iterator<Item = BundledJsonSchema> {
    BUNDLED_JSON.iter().map(|(department, record, text)| BundledJsonSchema { department, record, text })
}

/// Every bundled schema, in file-name order.
pub fn bundled_schemas() -> impl Iterator<Item = BundledSchema> {
    BUNDLED_AVRO.iter().map(|(topic, text)| BundledSchema { topic, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_json_schema_is_draft_2020_12_with_bilingual_titles() {
        let mut seen = 0;
        for json in bundled_json_schemas() {
            let value: serde_json::Value =
                serde_json::from_str(json.text).unwrap_or_else(|e| panic!("{}/{}: {e}", json.department, json.record));
            assert_eq!(value["$schema"], "https://json-schema.org/draft/2020-12/schema", "{}", json.record);
            for key in ["title", "description"] {
                let text = value[key].as_str().unwrap_or_default();
                assert!(
                    text.chars().any(|c| c > '\u{2e80}') && text.chars().any(|c| c.is_ascii_alphabetic()),
                    "{}: {key} must be in Chinese and English",
                    json.record
                );
            }
            seen += 1;
        }
        // Four departments' inputs and the platform's two (licences, case events); the
        // adapters check at start that each has its Avro schema.
        assert_eq!(seen, 6, "one JSON Schema per input");
    }

    #[test]
    fn every_bundled_schema_parses_and_names_a_govex_topic() {
        let mut seen = 0;
        for schema in bundled_schemas() {
            apache_avro::Schema::parse_str(schema.text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", schema.topic));
            assert!(schema.topic.starts_with("gov."), "{}", schema.topic);
            assert!(schema.subject().ends_with("-value"));
            seen += 1;
        }
        assert!(seen > 0, "no schema was bundled");
    }
}
