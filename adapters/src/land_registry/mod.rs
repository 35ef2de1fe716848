//! 不动产登记 Real-estate registration: registrations entered in the register.
//!
//! Topic `gov.land-registry.registration.v1`, keyed by property unit number. Domain checks:
//! every right holder's identifier by kind, shares given exactly when co-ownership is in
//! shares and adding up to 100 %, the property unit number, the registering authority's
//! credit code, the division, area with at most 2 decimals, registration time not in the
//! future.

use govex_bus::{Department, Encoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    common::{AvroDecimal, CheckContext, Checks, IdentifierType, PartyInput},
    identifiers,
    record::{map_record, Mapped, RecordSpec},
    validation::Violation,
};

/// The record types of this department.
pub fn records() -> Vec<RecordSpec> {
    vec![RecordSpec {
        department: Department::LandRegistry,
        record: "registration",
        topic: govex_schemas::records::topics::REGISTRATION,
        map,
    }]
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum RegistrationType {
    First,
    Transfer,
    Change,
    Mortgage,
    Cancellation,
    Seizure,
    Objection,
}

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum CoOwnership {
    Sole,
    Joint,
    Shared,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum RightType {
    StateLandUse,
    StateLandUseAndHouse,
    HomesteadAndHouse,
    CollectiveLandUse,
    Mortgage,
    Easement,
    Other,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum PropertyUse {
    Residential,
    Commercial,
    Office,
    Industrial,
    Other,
}

#[derive(Deserialize)]
struct HolderInput {
    #[serde(flatten)]
    party: PartyInput,
    co_ownership: CoOwnership,
    share_percent: Option<String>,
}

#[derive(Deserialize)]
struct Input {
    registration_number: String,
    registration_type: RegistrationType,
    property_unit_number: String,
    location: String,
    right_holders: Vec<HolderInput>,
    right_type: RightType,
    #[serde(rename = "use")]
    property_use: PropertyUse,
    area_m2: String,
    certificate_number: Option<String>,
    registered_at: String,
    registering_authority: String,
    division: String,
}

#[derive(Serialize)]
struct RightHolder {
    identifier_type: IdentifierType,
    identifier_number: String,
    name: String,
    co_ownership: CoOwnership,
    share_percent: Option<AvroDecimal>,
}

/// `cn.gov.exchange.land_registry.Registration`, field for field.
#[derive(Serialize)]
struct Registration {
    registration_number: String,
    registration_type: RegistrationType,
    property_unit_number: String,
    location: String,
    right_holders: Vec<RightHolder>,
    right_type: RightType,
    #[serde(rename = "use")]
    property_use: PropertyUse,
    area_m2: AvroDecimal,
    certificate_number: Option<String>,
    registered_at: i64,
    registering_authority: String,
    division: String,
}

/// The land registry's cross-field rule for the schema-driven mapping (`govex.rules`:
/// `co-ownership-shares`): a share for each holder in shares and none for others, and the
/// shares adding up to 100.00 whenever they all read.
pub fn co_ownership_shares_rule(fields: &crate::plan::Fields, checks: &mut Checks) {
    use crate::plan::{decimal_of, is_absent};
    let Some((base, holders)) = fields.items("right_holders") else { return };
    let mut shared = false;
    let mut shares_read = true;
    let mut total = 0i128;
    for (n, holder) in holders.iter().enumerate() {
        let field = |name: &str| holder.get(name).map(|(_, v)| v);
        let at = format!("{base}/{n}/share_percent");
        let is_shared = holder.symbol("co_ownership") == Some("SHARED");
        let share = field("share_percent");
        let absent = share.is_none_or(is_absent);
        shared |= is_shared;
        match (is_shared, absent) {
            (true, true) => {
                shares_read = false;
                checks.fail(&at, "share-required", "is required when co-ownership is SHARED");
            }
            (false, false) => {
                shares_read = false;
                checks.fail(&at, "share-only-when-shared", "is given only when co-ownership is SHARED");
            }
            (true, false) => {
                let read = checks.violations.iter().all(|v| v.pointer != at);
                shares_read &= read;
                total += share.and_then(decimal_of).unwrap_or(0);
            }
            (false, true) => {}
        }
    }
    // Shares are kept in hundredths of a percent: 10 000 is 100.00 %.
    if shared && shares_read && total != 10_000 {
        checks.fail(base, "shares-total", "shares of co-ownership in shares must add up to 100.00");
    }
}

fn map(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: Input, checks: &mut Checks, context| {
        let mut holders = Vec::with_capacity(i.right_holders.len());
        let mut share_total = 0i128;
        // Whether every share read: the total is checked then, whatever else failed (a bad
        // identifier must not hide a wrong total until the next round).
        let mut shares_read = true;
        for (n, holder) in i.right_holders.into_iter().enumerate() {
            let at = format!("/right_holders/{n}");
            holder.party.check(&at, checks, context);
            let share = match (&holder.share_percent, holder.co_ownership) {
                (Some(text), CoOwnership::Shared) => {
                    let share = checks.decimal_opt(&format!("{at}/share_percent"), text, 2);
                    shares_read &= share.is_some();
                    share_total += share.unwrap_or(0);
                    Some(AvroDecimal(share.unwrap_or(0)))
                }
                (None, CoOwnership::Shared) => {
                    shares_read = false;
                    checks.fail(
                        &format!("{at}/share_percent"),
                        "share-required",
                        "is required when co-ownership is SHARED",
                    );
                    None
                }
                (Some(_), _) => {
                    shares_read = false;
                    checks.fail(
                        &format!("{at}/share_percent"),
                        "share-only-when-shared",
                        "is given only when co-ownership is SHARED",
                    );
                    None
                }
                (None, _) => None,
            };
            holders.push(RightHolder {
                identifier_type: holder.party.identifier_type,
                identifier_number: holder.party.identifier_number,
                name: holder.party.name,
                co_ownership: holder.co_ownership,
                share_percent: share,
            });
        }
        // Shares are kept in hundredths of a percent: 10 000 is 100.00 %.
        if holders.iter().any(|h| h.co_ownership == CoOwnership::Shared) && shares_read && share_total != 10_000 {
            checks.fail("/right_holders", "shares-total", "shares of co-ownership in shares must add up to 100.00");
        }
        checks.identifier(
            "/property_unit_number",
            identifiers::property_unit_number(&i.property_unit_number),
            "property unit number",
        );
        checks.identifier(
            "/registering_authority",
            identifiers::credit_code(&i.registering_authority),
            "unified social credit code",
        );
        let division = checks.division("/division", &i.division);
        let area = checks.decimal("/area_m2", &i.area_m2, 2);
        let registered_at = checks.past_instant("/registered_at", &i.registered_at, context);
        let key = i.property_unit_number.clone();
        let record = Registration {
            registration_number: i.registration_number,
            registration_type: i.registration_type,
            property_unit_number: i.property_unit_number,
            location: i.location,
            right_holders: holders,
            right_type: i.right_type,
            property_use: i.property_use,
            area_m2: AvroDecimal(area),
            certificate_number: i.certificate_number,
            registered_at,
            registering_authority: i.registering_authority,
            division,
        };
        (key, record)
    })
}
