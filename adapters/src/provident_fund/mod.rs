//! 住房公积金 Housing provident fund: account events.
//!
//! Topic `gov.provident-fund.event.v1`, keyed by account number so that one account's
//! events stay in order. Domain checks: the holder's citizen identity number, the
//! employer's credit code, the amount, event time not in the future, the division, and for
//! a purchase withdrawal the e-licence identifier of the certificate it relies on.

use govex_bus::{Department, Encoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    common::{AvroDecimal, CheckContext, Checks},
    identifiers,
    record::{map_record, Mapped, RecordSpec},
    validation::Violation,
};

/// The record types of this department.
pub fn records() -> Vec<RecordSpec> {
    vec![RecordSpec {
        department: Department::ProvidentFund,
        record: "event",
        topic: govex_schemas::records::topics::PROVIDENT_FUND_EVENT,
        map,
    }]
}

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum AccountEventType {
    Deposit,
    PurchaseWithdrawal,
    LoanApplication,
    LoanApproval,
    Repayment,
}

#[derive(Deserialize)]
struct Input {
    event_type: AccountEventType,
    business_number: String,
    account_number: String,
    holder_citizen_id: String,
    holder_name: String,
    employer_credit_code: Option<String>,
    amount: String,
    occurred_at: String,
    licence_id: Option<String>,
    division: String,
}

/// `cn.gov.exchange.provident_fund.AccountEvent`, field for field.
#[derive(Serialize)]
struct AccountEvent {
    event_type: AccountEventType,
    business_number: String,
    account_number: String,
    holder_citizen_id: String,
    holder_name: String,
    employer_credit_code: Option<String>,
    amount: AvroDecimal,
    occurred_at: i64,
    licence_id: Option<String>,
    division: String,
}

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

fn map(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: Input, checks: &mut Checks, context| {
        checks.identifier(
            "/holder_citizen_id",
            identifiers::citizen_id(&i.holder_citizen_id, context.today()),
            "citizen identity number",
        );
        if let Some(employer) = &i.employer_credit_code {
            checks.identifier(
                "/employer_credit_code",
                identifiers::credit_code(employer),
                "unified social credit code",
            );
        }
        match (&i.licence_id, i.event_type) {
            (Some(licence), _) => {
                checks.identifier("/licence_id", identifiers::licence_id(licence).map(drop), "e-licence identifier")
            }
            (None, AccountEventType::PurchaseWithdrawal) => checks.fail(
                "/licence_id",
                "licence-required",
                "a purchase withdrawal names the e-licence of the certificate it relies on",
            ),
            (None, _) => {}
        }
        let amount = checks.decimal("/amount", &i.amount, 2);
        let occurred_at = checks.past_instant("/occurred_at", &i.occurred_at, context);
        let division = checks.division("/division", &i.division);
        let key = i.account_number.clone();
        let record = AccountEvent {
            event_type: i.event_type,
            business_number: i.business_number,
            account_number: i.account_number,
            holder_citizen_id: i.holder_citizen_id,
            holder_name: i.holder_name,
            employer_credit_code: i.employer_credit_code,
            amount: AvroDecimal(amount),
            occurred_at,
            licence_id: i.licence_id,
            division,
        };
        (key, record)
    })
}
