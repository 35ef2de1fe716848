//! 不动产登记 Real-estate registration: the rules of registrations that a schema cannot say
//! alone.
//!
//! The record type itself is data: `schemas/avro/gov.land-registry.registration.v1.avsc`
//! names its checks and this folder's rule `co-ownership-shares`: a share for each holder in
//! shares and none for others, the shares adding up to 100 %.

use crate::common::Checks;

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
