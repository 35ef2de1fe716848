//! One valid input per record type, as a department system would send it. Used by the
//! tests, the benchmark and `govex demo`; each varies with `n` so that many distinct
//! records can be made.

use serde_json::{json, Value};

/// A valid citizen identity number for sequence `n` (born 1980-01-01 in Hanbin, 610902).
pub fn citizen_id(n: u32) -> String {
    let body = format!("61090219800101{:03}", n % 1000);
    // Seventeen digits always have a check character.
    let check = govex_schemas::identifiers::citizen_id_check(&body).unwrap_or('0');
    format!("{body}{check}")
}

/// A valid property unit number in Hanyin county for sequence `n`.
pub fn property_unit_number(n: u32) -> String {
    format!("610921001001GB{:05}F{:08}", n % 100_000, n)
}

/// A valid input of `department`/`record`, or `None` for an unknown pair.
pub fn sample(department: &str, record: &str, n: u32) -> Option<Value> {
    let unit = property_unit_number(n);
    let person = json!({"identifier_type": "CITIZEN_ID", "identifier_number": citizen_id(n), "name": "王小明"});
    Some(match (department, record) {
        ("land-registry", "registration") => json!({
            "registration_number": format!("DJ-610921-{n:08}"),
            "registration_type": "TRANSFER",
            "property_unit_number": unit,
            "location": "汉阴县城关镇月河新城3幢2单元1201室",
            "right_holders": [{"identifier_type": "CITIZEN_ID", "identifier_number": citizen_id(n), "name": "王小明", "co_ownership": "SOLE"}],
            "right_type": "STATE_LAND_USE_AND_HOUSE",
            "use": "RESIDENTIAL",
            "area_m2": "98.76",
            "certificate_number": format!("陕(2026)汉阴县不动产权第{n:07}号"),
            "registered_at": "2026-11-20T10:00:00+08:00",
            "registering_authority": "11430000006122244L",
            "division": "610921"
        }),
        ("housing", "contract-filing") => json!({
            "filing_number": format!("WQBA-610921-{n:08}"),
            "contract_number": format!("HT2026{n:010}"),
            "project_name": "汉阴县月河新城三期",
            "building": "3",
            "unit": "2",
            "room": "1201",
            "property_unit_number": unit,
            "buyers": [person],
            "seller_credit_code": "91110000600037341L",
            "total_price": "568000.00",
            "area_m2": "98.76",
            "filed_at": "2026-11-18T09:30:00+08:00",
            "status": "FILED",
            "division": "610921"
        }),
        ("tax", "deed-tax-payment") => json!({
            "voucher_number": format!("WS-610921-{n:08}"),
            "taxpayer": person,
            "property_unit_number": unit,
            "taxable_base": "568000.00",
            "tax_rate": "0.0150",
            "tax_amount": "8520.00",
            "paid_at": "2026-11-19T15:00:00+08:00",
            "tax_authority": "11100000000013338W",
            "division": "610921"
        }),
        ("provident-fund", "event") => json!({
            "event_type": "PURCHASE_WITHDRAWAL",
            "business_number": format!("GJJ-610900-{n:08}"),
            "account_number": format!("6109000{n:08}"),
            "holder_citizen_id": citizen_id(n),
            "holder_name": "王小明",
            "employer_credit_code": "91110000600037341L",
            "amount": "120000.00",
            "occurred_at": "2026-11-21T11:00:00+08:00",
            "licence_id": "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U",
            "division": "610900"
        }),
        ("platform", "licence") => {
            let serial = format!("SN{n:08}");
            let body = format!("11100000000013338W011{}{serial}001", "11430000006122244L");
            let check = govex_schemas::identifiers::mod37_36_check(&body).unwrap_or('0');
            json!({
                "licence_id": format!("1.2.156.3005.2.11100000000013338W011.11430000006122244L.{serial}.001.{check}"),
                "type_code": "11100000000013338W011",
                "type_name": "不动产权证书",
                "licence_number": format!("陕(2026)汉阴县不动产权第{n:07}号"),
                "issuer_code": "11430000006122244L",
                "issuer_name": "汉阴县不动产登记中心",
                "holder": person,
                "issued_at": "2026-11-20T10:30:00+08:00",
                "valid_from": "2026-11-20",
                "status": "VALID",
                "surface": {"坐落": "汉阴县城关镇月河新城3幢2单元1201室", "面积": "98.76"},
                "content_hash": format!("{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
                "division": "610921"
            })
        }
        ("platform", "case-event") => json!({
            "case_number": format!("BJ-610921-{n:08}"),
            "service_item_code": "610000-BDCDJ-ZYDJ",
            "division": "610921",
            "department": "land-registry",
            "stage": "ACCEPTED",
            "promised_working_days": 5,
            "occurred_at": "2026-11-20T09:00:00+08:00"
        }),
        _ => return None,
    })
}
