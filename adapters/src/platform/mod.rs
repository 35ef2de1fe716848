//! 政务服务平台 The government-service platform: the rules of the e-licences it issues that
//! a schema cannot say alone.
//!
//! The record types themselves are data (`schemas/avro/gov.elicense.licence.v1.avsc`,
//! `gov.case.event.v1.avsc`); this folder holds the rule `validity-order`: a licence is not
//! valid until before it is valid from.

use crate::common::Checks;

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
