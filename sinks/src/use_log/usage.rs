//! Usage statistics: reads, verifications and dossier views counted per resource, reading
//! department, purpose category and action.
//!
//! The counts come from the use log itself (every such read is an entry before it is
//! answered), counted as entries are appended and recounted from the whole chain when the log
//! is opened: they survive a restart and never disagree with the log. Labels are bounded: a
//! resource is a catalogue id (a read of an unknown one is refused before it is logged), a
//! department is a configured token's, and a purpose, free text, is reduced to one of a few
//! [`CATEGORIES`].

use std::collections::BTreeMap;

use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::Serialize;

use super::AuditEntry;

/// The purpose categories and the words that put a stated purpose in one: the first whose
/// word the purpose contains. Anything else is `other`.
pub const CATEGORIES: &[(&str, &[&str])] = &[
    ("verification", &["核验", "验证", "核实", "查验", "核查"]),
    ("review", &["审核", "审批", "并联", "审查", "受理"]),
    ("taxation", &["征收", "契税", "完税", "纳税", "税务"]),
    ("provident-fund", &["公积金", "提取", "贷款"]),
    ("registration", &["登记", "转移", "抵押", "过户"]),
];

/// The category of a stated purpose.
pub fn category(purpose: &str) -> &'static str {
    CATEGORIES.iter().find(|(_, words)| words.iter().any(|w| purpose.contains(w))).map_or("other", |(name, _)| name)
}

/// The resource a use-log entry is a read of, for the actions that are usage: a licence read,
/// verification or holder look-up (`elicense.licence`), a dossier (`dossier`), a record of a
/// catalogued resource (its id, the subject's first part). Listing uses, subscriptions and
/// objections are the governance of sharing, not sharing, and are not counted.
fn resource_of(entry: &AuditEntry) -> Option<&str> {
    match entry.action.as_str() {
        "get" | "verify" | "holder" => Some("elicense.licence"),
        "dossier" => Some("dossier"),
        "resource" => entry.subject.split_once('/').map(|(id, _)| id),
        _ => None,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct UsageLabels {
    resource: String,
    department: String,
    category: String,
    action: String,
}

/// One row of the statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The resource read (a catalogue id, or `dossier`).
    pub resource: String,
    /// The department that read (with ` (auditor)` for an auditor's reads).
    pub department: String,
    /// The purpose category.
    pub category: String,
    /// The action (`get`, `verify`, `holder`, `dossier`, `resource`).
    pub action: String,
    /// How many.
    pub count: u64,
}

/// The counts, and `govex_usage_total` beside them.
#[derive(Default)]
pub struct Usage {
    counts: Mutex<BTreeMap<UsageLabels, u64>>,
    family: Family<UsageLabels, Counter>,
    /// The last sequence number in the log when it was opened: entries up to it are counted
    /// by a pass over the chain, those after it as they are appended.
    past: std::sync::atomic::AtomicU64,
}

impl Usage {
    pub(super) fn set_past(&self, seq: u64) {
        self.past.store(seq, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn past(&self) -> u64 {
        self.past.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts `entry` if it is usage.
    pub fn count(&self, entry: &AuditEntry) {
        let Some(resource) = resource_of(entry) else { return };
        let labels = UsageLabels {
            resource: resource.to_owned(),
            department: entry.caller.clone(),
            category: category(&entry.purpose).to_owned(),
            action: entry.action.clone(),
        };
        self.family.get_or_create(&labels).inc();
        *self.counts.lock().entry(labels).or_default() += 1;
    }

    /// Every row, by resource, department, category and action.
    pub fn rows(&self) -> Vec<UsageRow> {
        let counts = self.counts.lock();
        counts
            .iter()
            .map(|(l, count)| UsageRow {
                resource: l.resource.clone(),
                department: l.department.clone(),
                category: l.category.clone(),
                action: l.action.clone(),
                count: *count,
            })
            .collect()
    }

    /// Registers `govex_usage_total` (the counts so far included).
    pub fn register(&self, metrics: &govex_bus::Metrics) {
        metrics.register(|r| {
            r.register(
                "usage",
                "Reads of shared data by resource, reading department, purpose category and action",
                self.family.clone(),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_fall_in_bounded_categories() {
        assert_eq!(category("购房提取核验"), "verification", "the first category whose word it holds");
        assert_eq!(category("不动产转移登记并联审核"), "review");
        assert_eq!(category("契税征收"), "taxation");
        assert_eq!(category("公积金贷款审查前置"), "review");
        assert_eq!(category("住房公积金提取"), "provident-fund");
        assert_eq!(category("抵押登记"), "registration");
        assert_eq!(category("随便看看"), "other");
        assert_eq!(category(""), "other");
    }
}
