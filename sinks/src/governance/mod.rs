//! Sharing governance: who may read a resource beyond what the catalogue says, decided by the
//! resource's owner on a department's request (申请/审核), with deadlines in China's working
//! days.
//!
//! [`subscription`] is the record and the view; [`api`] the routes departments file, answer
//! and revoke through; [`access`] the one rule every read of a catalogued resource goes by:
//! the catalogue's `subscribers` and `personal_data_readers` are the starting set, and an
//! approved, running subscription adds to it.

pub mod api;
pub mod component;
pub mod dead_letters;
pub mod objection;
pub mod subscription;
pub mod view;

use std::path::PathBuf;

use chrono::NaiveDate;
use govex_schemas::Resource;
use serde::{Deserialize, Serialize};

pub use objection::{Objection, Objections, Outcome};
pub use subscription::{Grant, State, Subscription, Subscriptions, TOPIC};

/// `[governance]`: how requests are answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// Working days an owner has to answer a request (10 under 国发〔2016〕51号; a province
    /// may set fewer).
    pub answer_within_working_days: u32,
    /// A calendar file adding years (or correcting them) to the bundled State Council
    /// schedule, in the shape of `schemas/data/cn-working-days.toml`.
    pub calendar_file: Option<PathBuf>,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        Self { answer_within_working_days: 10, calendar_file: None }
    }
}

impl GovernanceConfig {
    /// The working-day calendar: the bundled years, and the operator's file if one is named.
    pub fn calendar(&self) -> Result<govex_schemas::calendar::WorkingCalendar, String> {
        use govex_schemas::calendar::WorkingCalendar;
        match &self.calendar_file {
            None => Ok(WorkingCalendar::bundled()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("governance.calendar_file {}: {e}", path.display()))?;
                WorkingCalendar::bundled_with(&text)
                    .map_err(|e| format!("governance.calendar_file {}: {e}", path.display()))
            }
        }
    }
}

/// What a caller may do with one resource's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// It may read the records.
    pub read: bool,
    /// It may see every personal field unmasked (the owner, the catalogue's readers).
    pub all_personal: bool,
    /// The personal fields its running subscriptions name.
    pub granted_fields: Vec<String>,
}

impl Access {
    /// Whether the personal field at `path` (one of the resource's `personal_fields`) is shown.
    pub fn sees(&self, path: &str) -> bool {
        self.all_personal || self.granted_fields.iter().any(|f| f == path)
    }

    /// Whether some personal field is masked for it.
    pub fn masks_any(&self, resource: &Resource) -> bool {
        resource.personal_fields.iter().any(|path| !self.sees(path))
    }
}

/// What `caller` may do with `resource` on `today`, for a read stating `purpose` (`None`: any):
/// the catalogue's starting set, and what the approved, running subscriptions in `view` for
/// that purpose add. A resource that is not shared is read by its owner only, whatever a
/// subscription says (none can be filed for it).
pub fn access(
    resource: &Resource,
    caller: &str,
    view: Option<&Subscriptions>,
    today: NaiveDate,
    purpose: Option<&str>,
) -> Access {
    let not_shared = resource.sharing == govex_schemas::catalog::Sharing::NotShared;
    let grant = view.filter(|_| !not_shared).and_then(|v| v.grant(caller, &resource.id, today, purpose));
    Access {
        read: resource.may_read(caller) || grant.is_some(),
        all_personal: resource.may_see_personal_data(caller),
        granted_fields: grant.map(|g| g.fields).unwrap_or_default(),
    }
}

/// Today, as China's calendar has it.
pub fn today() -> NaiveDate {
    govex_schemas::zone::china_date(chrono::Utc::now())
}
