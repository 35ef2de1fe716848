//! Subscriptions (共享申请): a department's request to read a conditional resource, its
//! owner's decision, and what an approved one grants while it runs.
//!
//! They live in the compacted topic [`TOPIC`], with a view in each process
//! ([`Subscriptions`], see [`super::view`]).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The topic subscriptions live in: one partition, compacted, kept for ever.
pub use govex_schemas::catalog::SUBSCRIPTION_TOPIC as TOPIC;

/// Where a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Filed, waiting for the owner.
    Pending,
    /// Approved (perhaps narrowed): grants reads until `granted_until`.
    Approved,
    /// Rejected by the owner, with a reason.
    Rejected,
    /// Revoked by the owner after approval: grants nothing from that moment.
    Revoked,
}

impl State {
    /// The name the API and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }
}

/// One subscription, as the topic and the view hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its id (a UUIDv7).
    pub id: String,
    /// The catalogue resource it is for.
    pub resource: String,
    /// The department that asked.
    pub consumer: String,
    /// The department that owns the resource and decides.
    pub owner: String,
    /// The purpose the consumer stated.
    pub purpose: String,
    /// The personal fields asked for (paths of the resource's `personal_fields`).
    pub fields: Vec<String>,
    /// The last day asked for.
    pub until: NaiveDate,
    /// The day it was filed (China's calendar day).
    pub filed_on: NaiveDate,
    /// The day the owner must have answered by, in working days from `filed_on`.
    pub due: NaiveDate,
    /// Where it is.
    pub state: State,
    /// The personal fields granted (a subset of `fields`).
    #[serde(default)]
    pub granted_fields: Vec<String>,
    /// The last day granted (no later than `until`).
    #[serde(default)]
    pub granted_until: Option<NaiveDate>,
    /// The day the owner decided (approved or rejected).
    #[serde(default)]
    pub decided_on: Option<NaiveDate>,
    /// The owner's reason, for a rejection, a narrowing or a revocation.
    #[serde(default)]
    pub reason: Option<String>,
    /// 1 when filed, one more at each change.
    pub version: u64,
}

impl Subscription {
    /// Whether it lets `consumer` read `resource` on `today`: approved, and `today` within the
    /// period granted. Revocation and expiry end it at once: nothing is cached past this check.
    pub fn covers(&self, consumer: &str, resource: &str, today: NaiveDate) -> bool {
        self.state == State::Approved
            && self.consumer == consumer
            && self.resource == resource
            && self.granted_until.is_some_and(|until| today <= until)
    }

    /// Whether the owner answered it by its due day (按期办结); `None` while it waits.
    pub fn answered_on_time(&self) -> Option<bool> {
        self.decided_on.map(|decided| decided <= self.due)
    }

    /// Whether it is still waiting for an answer after its due day.
    pub fn is_overdue(&self, today: NaiveDate) -> bool {
        self.state == State::Pending && today > self.due
    }
}

/// What a consumer's running subscriptions to one resource grant it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The personal fields it may see unmasked.
    pub fields: Vec<String>,
}

impl super::view::Governed for Subscription {
    const TOPIC: &'static str = TOPIC;
    const TREE: &'static str = "subscriptions";

    fn id(&self) -> &str {
        &self.id
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// A process's view of the subscription topic.
pub type Subscriptions = super::view::View<Subscription>;

impl Subscriptions {
    /// What `consumer`'s subscriptions to `resource` grant on `today` for a read stating
    /// `purpose` (`None`: for any purpose); `None` when none covers it. A subscription is
    /// approved for the purpose it was asked for (审核 is of a purpose): a read stating another
    /// is not covered by it.
    pub fn grant(&self, consumer: &str, resource: &str, today: NaiveDate, purpose: Option<&str>) -> Option<Grant> {
        let covering =
            self.list(|s| s.covers(consumer, resource, today) && purpose.is_none_or(|p| p.trim() == s.purpose));
        if covering.is_empty() {
            return None;
        }
        let mut fields: Vec<String> = covering.into_iter().flat_map(|s| s.granted_fields).collect();
        fields.sort();
        fields.dedup();
        Some(Grant { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn filed(id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            resource: "housing.contract-filing".into(),
            consumer: "tax".into(),
            owner: "housing".into(),
            purpose: "契税征收".into(),
            fields: vec!["buyers[].name".into()],
            until: d("2026-12-31"),
            filed_on: d("2026-09-28"),
            due: d("2026-10-16"),
            state: State::Pending,
            granted_fields: vec![],
            granted_until: None,
            decided_on: None,
            reason: None,
            version: 1,
        }
    }

    #[test]
    fn only_an_approved_running_subscription_grants_and_an_older_state_never_replaces_a_newer() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let view = Subscriptions::open(&db).unwrap();
        let pending = filed("s1");
        assert!(view.apply(&pending).unwrap());
        assert_eq!(view.grant("tax", "housing.contract-filing", d("2026-10-01"), None), None);
        assert!(pending.is_overdue(d("2026-10-17")) && !pending.is_overdue(d("2026-10-16")));

        let approved = Subscription {
            state: State::Approved,
            granted_fields: vec![],
            granted_until: Some(d("2026-11-30")),
            version: 2,
            ..pending.clone()
        };
        assert!(view.apply(&approved).unwrap());
        assert_eq!(pending.answered_on_time(), None);
        let answered = |day| Subscription { decided_on: Some(d(day)), ..approved.clone() }.answered_on_time();
        assert_eq!((answered("2026-10-16"), answered("2026-10-19")), (Some(true), Some(false)), "due 16 October");
        assert!(!view.apply(&pending).unwrap(), "the older state is not applied again");
        assert_eq!(
            view.grant("tax", "housing.contract-filing", d("2026-11-30"), Some("契税征收")),
            Some(Grant::default())
        );
        assert_eq!(
            view.grant("tax", "housing.contract-filing", d("2026-11-30"), Some("别的用途")),
            None,
            "another purpose"
        );
        assert_eq!(view.grant("tax", "housing.contract-filing", d("2026-12-01"), None), None, "expired");
        assert_eq!(view.grant("land-registry", "housing.contract-filing", d("2026-11-01"), None), None);
        assert_eq!(view.grant("tax", "tax.deed-tax-payment", d("2026-11-01"), None), None);

        let revoked = Subscription { state: State::Revoked, version: 3, ..approved.clone() };
        view.apply(&revoked).unwrap();
        assert_eq!(view.grant("tax", "housing.contract-filing", d("2026-11-01"), None), None, "revoked");
        drop((view, db));
        let reopened = Subscriptions::open(&govex_schemas::store::open_sled(dir.path()).unwrap()).unwrap();
        assert_eq!(reopened.get("s1"), Some(revoked));
    }
}
