//! 政务服务平台 The government-service platform: e-licences it issues or changes (with
//! their status: suspensions, revocations), and case events (办件).
//!
//! Topics `gov.elicense.licence.v1` (keyed by licence id) and `gov.case.event.v1` (keyed by
//! case number). Domain checks: the licence identifier's check character, the holder's
//! identifier by kind, dates, the division; for case events the division and the time.

use chrono::NaiveDate;
use govex_bus::{identifiers, Department, Encoder};
use govex_schemas::records::{CaseEvent, CaseStage, Licence, LicenceStatus};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    common::{CheckContext, Checks, PartyInput},
    record::{map_record, Mapped, RecordSpec},
    validation::Violation,
};

/// The record types of the platform.
pub fn records() -> Vec<RecordSpec> {
    vec![
        RecordSpec {
            department: Department::Platform,
            record: "licence",
            topic: govex_schemas::records::topics::LICENCE,
            map: map_licence,
        },
        RecordSpec {
            department: Department::Platform,
            record: "case-event",
            topic: govex_schemas::records::topics::CASE_EVENT,
            map: map_case,
        },
    ]
}

#[derive(Deserialize)]
struct LicenceInput {
    licence_id: String,
    type_code: String,
    type_name: String,
    licence_number: String,
    issuer_code: String,
    issuer_name: String,
    holder: PartyInput,
    issued_at: String,
    valid_from: String,
    valid_until: Option<String>,
    status: LicenceStatus,
    surface: std::collections::BTreeMap<String, String>,
    previous_licence_id: Option<String>,
    content_hash: String,
    division: String,
}

/// `cn.gov.exchange.elicense.Licence`, field for field.
fn days(checks: &mut Checks, pointer: &str, text: &str) -> i32 {
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(date) => (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32,
        Err(_) => {
            checks.fail(pointer, "date-format", "must be a real date YYYY-MM-DD");
            0
        }
    }
}

/// The platform's cross-field rule for the schema-driven mapping (`govex.rules`:
/// `validity-order`): a licence is not valid until before it is valid from (checked when
/// both dates read).
pub fn validity_order_rule(fields: &crate::plan::Fields, checks: &mut Checks) {
    use apache_avro::types::Value as Avro;
    let (Some((from_at, Avro::Date(from))), Some((until_at, until))) =
        (fields.get("valid_from"), fields.get("valid_until"))
    else {
        return;
    };
    let until = match until {
        Avro::Union(_, inner) => match inner.as_ref() {
            Avro::Date(until) => *until,
            _ => return,
        },
        _ => return,
    };
    let read = |pointer: &str| checks.violations.iter().all(|v| v.pointer != pointer);
    if read(from_at) && read(until_at) && until < *from {
        checks.fail(until_at, "validity-order", "must not be before valid_from");
    }
}

fn map_licence(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: LicenceInput, checks: &mut Checks, context| {
        checks.identifier("/licence_id", identifiers::licence_id(&i.licence_id).map(drop), "e-licence identifier");
        if let Some(previous) = &i.previous_licence_id {
            checks.identifier(
                "/previous_licence_id",
                identifiers::licence_id(previous).map(drop),
                "e-licence identifier",
            );
        }
        i.holder.check("/holder", checks, context);
        let issued_at = checks.past_instant("/issued_at", &i.issued_at, context);
        let valid_from = days(checks, "/valid_from", &i.valid_from);
        let valid_until = i.valid_until.as_deref().map(|d| days(checks, "/valid_until", d));
        if valid_until.is_some_and(|until| until < valid_from) {
            checks.fail("/valid_until", "validity-order", "must not be before valid_from");
        }
        let division = checks.division("/division", &i.division);
        let key = i.licence_id.clone();
        let record = Licence {
            licence_id: i.licence_id,
            type_code: i.type_code,
            type_name: i.type_name,
            licence_number: i.licence_number,
            issuer_code: i.issuer_code,
            issuer_name: i.issuer_name,
            holder_identifier_type: i.holder.identifier_type,
            holder_identifier_number: i.holder.identifier_number,
            holder_name: i.holder.name,
            issued_at,
            valid_from,
            valid_until,
            status: i.status,
            surface: i.surface,
            previous_licence_id: i.previous_licence_id,
            content_hash: i.content_hash,
            division,
        };
        (key, record)
    })
}

#[derive(Deserialize)]
struct CaseInput {
    case_number: String,
    service_item_code: String,
    division: String,
    department: String,
    stage: CaseStage,
    promised_working_days: i32,
    occurred_at: String,
}

/// `cn.gov.exchange.case.CaseEvent`, field for field.
fn map_case(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: CaseInput, checks: &mut Checks, context| {
        let division = checks.division("/division", &i.division);
        let occurred_at = checks.past_instant("/occurred_at", &i.occurred_at, context);
        let key = i.case_number.clone();
        let record = CaseEvent {
            case_number: i.case_number,
            service_item_code: i.service_item_code,
            division,
            department: i.department,
            stage: i.stage,
            promised_working_days: i.promised_working_days,
            occurred_at,
        };
        (key, record)
    })
}
