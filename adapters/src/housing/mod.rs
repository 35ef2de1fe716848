//! 房管 Housing administration: sale contract filings (网签备案).
//!
//! Topic `gov.housing.contract-filing.v1`, keyed by property unit number. Domain checks:
//! every buyer's identifier by kind, the seller's credit code, the property unit number, the
//! division, price and area with at most 2 decimals, filing time not in the future.

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
        department: Department::Housing,
        record: "contract-filing",
        topic: govex_schemas::records::topics::CONTRACT_FILING,
        map,
    }]
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum FilingStatus {
    Filed,
    Changed,
    Cancelled,
}

#[derive(Deserialize)]
struct Input {
    filing_number: String,
    contract_number: String,
    project_name: String,
    building: String,
    unit: String,
    room: String,
    property_unit_number: String,
    buyers: Vec<PartyInput>,
    seller_credit_code: String,
    total_price: String,
    area_m2: String,
    filed_at: String,
    status: FilingStatus,
    division: String,
}

#[derive(Serialize)]
struct Buyer {
    identifier_type: IdentifierType,
    identifier_number: String,
    name: String,
}

/// `cn.gov.exchange.housing.ContractFiling`, field for field.
#[derive(Serialize)]
struct ContractFiling {
    filing_number: String,
    contract_number: String,
    project_name: String,
    building: String,
    unit: String,
    room: String,
    property_unit_number: String,
    buyers: Vec<Buyer>,
    seller_credit_code: String,
    total_price: AvroDecimal,
    area_m2: AvroDecimal,
    filed_at: i64,
    status: FilingStatus,
    division: String,
}

fn map(input: &Value, context: &CheckContext, encoder: &Encoder) -> Result<Mapped, Vec<Violation>> {
    map_record(input, context, encoder, |i: Input, checks: &mut Checks, context| {
        for (n, buyer) in i.buyers.iter().enumerate() {
            buyer.check(&format!("/buyers/{n}"), checks, context);
        }
        checks.identifier(
            "/property_unit_number",
            identifiers::property_unit_number(&i.property_unit_number),
            "property unit number",
        );
        checks.identifier(
            "/seller_credit_code",
            identifiers::credit_code(&i.seller_credit_code),
            "unified social credit code",
        );
        let division = checks.division("/division", &i.division);
        let total_price = checks.decimal("/total_price", &i.total_price, 2);
        let area = checks.decimal("/area_m2", &i.area_m2, 2);
        let filed_at = checks.past_instant("/filed_at", &i.filed_at, context);
        let key = i.property_unit_number.clone();
        let record = ContractFiling {
            filing_number: i.filing_number,
            contract_number: i.contract_number,
            project_name: i.project_name,
            building: i.building,
            unit: i.unit,
            room: i.room,
            property_unit_number: i.property_unit_number,
            buyers: i
                .buyers
                .into_iter()
                .map(|b| Buyer {
                    identifier_type: b.identifier_type,
                    identifier_number: b.identifier_number,
                    name: b.name,
                })
                .collect(),
            seller_credit_code: i.seller_credit_code,
            total_price: AvroDecimal(total_price),
            area_m2: AvroDecimal(area),
            filed_at,
            status: i.status,
            division,
        };
        (key, record)
    })
}
