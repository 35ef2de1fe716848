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

/// Every bundled schema, in file-name order.
pub fn bundled_schemas() -> impl Iterator<Item = BundledSchema> {
    BUNDLED_AVRO.iter().map(|(topic, text)| BundledSchema { topic, text })
}

#[cfg(test)]
mod tests {
    use super::*;

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
