//! Objections (数据异议): a department that reads a record says a field of it is wrong; the
//! record is shown as disputed wherever it is shown until the owner resolves the objection,
//! as `corrected` (naming the record that corrects it) or `rejected` (with a reason).
//!
//! They live in the compacted topic [`TOPIC`], with a view in each process ([`Objections`],
//! see [`super::view`]).

use serde::{Deserialize, Serialize};

/// The topic objections live in: one partition, compacted, kept for ever.
pub use govex_schemas::catalog::OBJECTION_TOPIC as TOPIC;

/// Where an objection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Raised, waiting for the owner: the record is disputed.
    Open,
    /// The owner sent a correcting record.
    Corrected,
    /// The owner holds the record right, with a reason.
    Rejected,
}

impl Outcome {
    /// The name the API, the log and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Corrected => "corrected",
            Self::Rejected => "rejected",
        }
    }
}

/// One objection, as the topic and the view hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objection {
    /// Its id (a UUIDv7).
    pub id: String,
    /// The catalogue resource the record is of.
    pub resource: String,
    /// The record's key.
    pub key: String,
    /// A JSON pointer to the field objected to (`/total_price`, `/buyers/0/name`).
    pub pointer: String,
    /// Why the field is wrong.
    pub reason: String,
    /// The department that objected.
    pub raised_by: String,
    /// The department that owns the resource and resolves.
    pub owner: String,
    /// The event id of the record as it was objected to.
    pub objected_event_id: String,
    /// When it was raised (ms since the epoch).
    pub raised_at_ms: u64,
    /// Where it is.
    pub outcome: Outcome,
    /// For `corrected`: the event id of the record that corrects it.
    #[serde(default)]
    pub correcting_event_id: Option<String>,
    /// The owner's word on it.
    #[serde(default)]
    pub resolution: Option<String>,
    /// When it was resolved (ms since the epoch).
    #[serde(default)]
    pub resolved_at_ms: Option<u64>,
    /// 1 when raised, one more at each change.
    pub version: u64,
}

impl super::view::Governed for Objection {
    const TOPIC: &'static str = TOPIC;
    const TREE: &'static str = "objections";

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// A process's view of the objection topic.
pub type Objections = super::view::View<Objection>;

impl Objections {
    /// The open objections to record `key` of `resource`, as a reader is shown them: which
    /// field, since when, and the objection's id (the reason stays between the two departments).
    pub fn disputes(&self, resource: &str, key: &str) -> Vec<serde_json::Value> {
        self.list(|o| o.outcome == Outcome::Open && o.resource == resource && o.key == key)
            .into_iter()
            .map(|o| serde_json::json!({ "objection": o.id, "pointer": o.pointer, "raised_at_ms": o.raised_at_ms }))
            .collect()
    }
}
