//! What every department record type provides, and the one way they are all mapped:
//! deserialize the (schema-valid) JSON, run the domain checks, build the Avro record, encode.

use govex_bus::{Department, Encoder};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::{
    common::{CheckContext, Checks},
    validation::Violation,
};

/// A record ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The natural key.
    pub key: String,
    /// The wire-format value.
    pub payload: Vec<u8>,
}

/// Maps one schema-valid input to its encoded Avro record, or lists every violation.
pub type MapFn = fn(&Value, &CheckContext, &Encoder) -> Result<Mapped, Vec<Violation>>;

/// One department record type.
#[derive(Clone, Copy)]
pub struct RecordSpec {
    /// The department that sends it.
    pub department: Department,
    /// The record's name in URLs and headers (`deed-tax-payment`).
    pub record: &'static str,
    /// The topic it is published to.
    pub topic: &'static str,
    /// Domain checks and mapping.
    pub map: MapFn,
}

impl RecordSpec {
    /// The JSON Schema file's record name (`deed-tax-payment.v1`), from the topic's version.
    pub fn json_schema_name(&self) -> String {
        let version = self.topic.rsplit('.').next().unwrap_or("v1");
        format!("{}.{version}", self.record)
    }
}

/// Deserializes `input` as `I`, lets `build` check it and produce the key and the Avro
/// record `O`, and encodes `O`.
pub fn map_record<I, O>(
    input: &Value,
    context: &CheckContext,
    encoder: &Encoder,
    build: impl FnOnce(I, &mut Checks, &CheckContext) -> (String, O),
) -> Result<Mapped, Vec<Violation>>
where
    I: DeserializeOwned,
    O: Serialize,
{
    // The JSON Schema has already passed, so a failure here is a mismatch between the JSON
    // Schema and the binding; say which field without its value.
    let parsed = I::deserialize(input).map_err(|e| {
        vec![Violation::new(
            "",
            "binding",
            format!("the record does not fit its binding: {}", e.to_string().split(':').next().unwrap_or("")),
        )]
    })?;
    let mut checks = Checks::default();
    let (key, record) = build(parsed, &mut checks, context);
    if !checks.ok() {
        return Err(checks.violations);
    }
    let payload = encoder.encode(&record).map_err(|e| {
        tracing::error!(class = e.class(), "a checked record does not fit its Avro schema");
        vec![Violation::new("", "encode", "the record does not fit its Avro schema")]
    })?;
    Ok(Mapped { key, payload })
}
