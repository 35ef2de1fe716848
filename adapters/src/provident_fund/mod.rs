//! 住房公积金 Housing provident fund: the rules of account events that a schema cannot say
//! alone.
//!
//! The record type itself is data: `schemas/avro/gov.provident-fund.event.v1.avsc` names its
//! checks and this folder's rule `licence-for-withdrawal`: a purchase withdrawal names the
//! e-licence of the certificate it relies on.

use crate::common::Checks;

/// The provident fund's cross-field rule for the schema-driven mapping (`govex.rules`:
/// `licence-for-withdrawal`): a purchase withdrawal names the e-licence it relies on.
pub fn licence_for_withdrawal_rule(fields: &crate::plan::Fields, checks: &mut Checks) {
    use crate::plan::is_absent;
    let withdrawal = fields.symbol("event_type") == Some("PURCHASE_WITHDRAWAL");
    if let (true, Some((pointer, licence))) = (withdrawal, fields.get("licence_id")) {
        if is_absent(licence) {
            checks.fail(
                pointer,
                "licence-required",
                "a purchase withdrawal names the e-licence of the certificate it relies on",
            );
        }
    }
}
