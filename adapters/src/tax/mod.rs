//! 税务 Tax: the rules of deed-tax payments (契税完税) that a schema cannot say alone.
//!
//! The record type itself is data: `schemas/avro/gov.tax.deed-tax-payment.v1.avsc` names its
//! checks and this folder's rule `deed-tax-amount`: deed tax = taxable base × rate, rounded
//! half up to the cent, the rate at most 1.

use crate::common::Checks;

/// Deed tax in cents for a base in cents and a rate in ten-thousandths, rounded half up.
pub fn deed_tax_cents(base_cents: i128, rate_e4: i128) -> i128 {
    (base_cents * rate_e4 + 5_000) / 10_000
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
