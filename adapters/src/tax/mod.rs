//! 税务 Tax: deed-tax payments (契税完税).
//!
//! Topic `gov.tax.deed-tax-payment.v1`, keyed by property unit number. Domain checks: the
//! taxpayer's identifier by kind, the property unit number, the tax authority's credit
//! code, the division, money with at most 2 decimals and the rate with at most 4, payment
//! time not in the future, and deed tax = taxable base × rate, rounded half up to the cent.

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
        department: Department::Tax,
        record: "deed-tax-payment",
        topic: govex_schemas::records::topics::DEED_TAX_PAYMENT,
        map,
    }]
}

#[derive(Deserialize)]
struct Input {
    voucher_number: String,
    taxpayer: PartyInput,
    property_unit_number: String,
    taxable_base: String,
    tax_rate: String,
    tax_amount: String,
    paid_at: String,
    tax_authority: String,
    division: String,
}

/// `cn.gov.exchange.tax.DeedTaxPayment`, field for field.
#[derive(Serialize)]
struct DeedTaxPayment {
    voucher_number: String,
    taxpayer_identifier_type: IdentifierType,
    taxpayer_identifier_number: String,
    taxpayer_name: String,
    property_unit_number: String,
    taxable_base: AvroDecimal,
    tax_rate: AvroDecimal,
    tax_amount: AvroDecimal,
    paid_at: i64,
    tax_authority: String,
    division: String,
}

/// Deed tax in cents for a base in cents and a rate in ten-thousandths, rounded half up.
pub fn deed_tax_cents(base_cents: i128, rate_e4: i128) -> i128 {
    (base_cents * rate_e4 + 5_000) / 10_000
}

fn map(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: Input, checks: &mut Checks, context| {
        i.taxpayer.check("/taxpayer", checks, context);
        checks.identifier(
            "/property_unit_number",
            identifiers::property_unit_number(&i.property_unit_number),
            "property unit number",
        );
        checks.identifier("/tax_authority", identifiers::credit_code(&i.tax_authority), "unified social credit code");
        let division = checks.division("/division", &i.division);
        let base = checks.decimal_opt("/taxable_base", &i.taxable_base, 2);
        let rate = checks.decimal_opt("/tax_rate", &i.tax_rate, 4);
        let amount = checks.decimal_opt("/tax_amount", &i.tax_amount, 2);
        let rate_in_range = rate.is_none_or(|rate| rate <= 10_000);
        if !rate_in_range {
            checks.fail("/tax_rate", "tax-rate-range", "must be between 0 and 1");
        }
        // The amount is checked whenever the three numbers read, whatever else failed (a bad
        // identifier must not hide a wrong amount until the next round).
        let (base, rate, amount) = (base.unwrap_or(0), rate.unwrap_or(0), amount.unwrap_or(0));
        let numbers_read = checks
            .violations
            .iter()
            .all(|v| !matches!(v.pointer.as_str(), "/taxable_base" | "/tax_rate" | "/tax_amount"));
        if numbers_read && rate_in_range && amount != deed_tax_cents(base, rate) {
            let expected = deed_tax_cents(base, rate);
            checks.fail(
                "/tax_amount",
                "deed-tax-amount",
                format!("must equal taxable_base × tax_rate to the cent ({}.{:02})", expected / 100, expected % 100),
            );
        }
        let paid_at = checks.past_instant("/paid_at", &i.paid_at, context);
        let key = i.property_unit_number.clone();
        let record = DeedTaxPayment {
            voucher_number: i.voucher_number,
            taxpayer_identifier_type: i.taxpayer.identifier_type,
            taxpayer_identifier_number: i.taxpayer.identifier_number,
            taxpayer_name: i.taxpayer.name,
            property_unit_number: i.property_unit_number,
            taxable_base: AvroDecimal(base),
            tax_rate: AvroDecimal(rate),
            tax_amount: AvroDecimal(amount),
            paid_at,
            tax_authority: i.tax_authority,
            division,
        };
        (key, record)
    })
}

/// The tax folder's cross-field rule for the schema-driven mapping (`govex.rules`:
/// `deed-tax-amount`): the rate at most 1, and the amount equal to base × rate to the cent,
/// checked whenever the three numbers read.
pub fn deed_tax_amount_rule(fields: &crate::plan::Fields, checks: &mut Checks) {
    let read = |name: &str, checks: &Checks| {
        fields.decimal(name).filter(|(pointer, _)| checks.violations.iter().all(|v| v.pointer != *pointer))
    };
    let (base, rate, amount) = (read("taxable_base", checks), read("tax_rate", checks), read("tax_amount", checks));
    if let Some((pointer, rate)) = rate {
        if rate > 10_000 {
            checks.fail(pointer, "tax-rate-range", "must be between 0 and 1");
            return;
        }
    }
    if let (Some((_, base)), Some((_, rate)), Some((pointer, amount))) = (base, rate, amount) {
        let expected = deed_tax_cents(base, rate);
        if amount != expected {
            checks.fail(
                pointer,
                "deed-tax-amount",
                format!("must equal taxable_base × tax_rate to the cent ({}.{:02})", expected / 100, expected % 100),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deed_tax_rounds_half_up_to_the_cent() {
        assert_eq!(deed_tax_cents(100_000_000, 300), 3_000_000, "1,000,000.00 × 3%");
        assert_eq!(deed_tax_cents(12_345, 150), 185, "123.45 × 1.5% = 1.851750 → 1.85");
        assert_eq!(deed_tax_cents(10_000, 125), 125, "100.00 × 1.25% = 1.25");
        assert_eq!(deed_tax_cents(333, 150), 5, "3.33 × 1.5% = 0.04995 → 0.05");
    }
}
