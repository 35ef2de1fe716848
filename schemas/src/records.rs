//! The typed views of records that Rust code needs, each declared once, beside the schema it
//! mirrors: the e-licence (the store's lifecycle runs on its status), the case event (case
//! statistics count its stages) and the identity-document kinds every department's schema
//! shares; and the topics code names. Everything else a sink shows
//! passes through as data.
//!
//! A test holds each view to its Avro schema: the same fields, in the same order, and the
//! same enum symbols, so that a schema change that the code must follow fails the build's
//! tests instead of a decode in production.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The topics code names, each once; a test holds each to the catalogue. A record type no
/// code needs by name (a department's new one) has no constant: it is data.
pub mod topics {
    /// E-licences (the store, the bridges' down-route).
    pub const LICENCE: &str = "gov.elicense.licence.v1";
    /// Case events (case statistics, the bridges' up-route).
    pub const CASE_EVENT: &str = "gov.case.event.v1";
    /// The use log's replicated entries.
    pub const USE_LOG: &str = "gov.audit.use-log.v1";
    /// The use log's anchors.
    pub const ANCHOR: &str = "gov.audit.anchor.v1";
    /// Sale contract filings (the dossier).
    pub const CONTRACT_FILING: &str = "gov.housing.contract-filing.v1";
    /// Deed-tax payments (the dossier).
    pub const DEED_TAX_PAYMENT: &str = "gov.tax.deed-tax-payment.v1";
    /// Registrations (the dossier).
    pub const REGISTRATION: &str = "gov.land-registry.registration.v1";
    /// Provident-fund events.
    pub const PROVIDENT_FUND_EVENT: &str = "gov.provident-fund.event.v1";

    /// Every one of them.
    pub const ALL: [&str; 8] =
        [LICENCE, CASE_EVENT, USE_LOG, ANCHOR, CONTRACT_FILING, DEED_TAX_PAYMENT, REGISTRATION, PROVIDENT_FUND_EVENT];
}

/// The topic of e-licences.
pub const LICENCE_TOPIC: &str = topics::LICENCE;

/// Kinds of identity document (the `IdentifierType` enum of every department's schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdentifierType {
    /// 居民身份证.
    CitizenId,
    /// 统一社会信用代码.
    CreditCode,
    /// 护照.
    Passport,
    /// 港澳居民来往内地通行证.
    HkMacaoPermit,
    /// 台湾居民来往大陆通行证.
    TaiwanPermit,
    /// 其他.
    Other,
}

/// Licence status (`LicenceStatus` of `gov.elicense.licence.v1`), with its national code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenceStatus {
    /// 01 有效.
    Valid,
    /// 02 暂停.
    Suspended,
    /// 03 撤回.
    Withdrawn,
    /// 04 注销.
    Cancelled,
    /// 05 过期.
    Expired,
    /// 06 转出.
    Transferred,
    /// 07 吊销.
    Revoked,
    /// 99 其他.
    Other,
}

impl LicenceStatus {
    /// The national status code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Valid => "01",
            Self::Suspended => "02",
            Self::Withdrawn => "03",
            Self::Cancelled => "04",
            Self::Expired => "05",
            Self::Transferred => "06",
            Self::Revoked => "07",
            Self::Other => "99",
        }
    }
}

/// `cn.gov.exchange.elicense.Licence` (`gov.elicense.licence.v1`), field for field: what the
/// platform publishes, the e-licence sink reads and the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    /// Identifier (`1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>`).
    pub licence_id: String,
    /// Type code.
    pub type_code: String,
    /// Type name.
    pub type_name: String,
    /// Number as printed.
    pub licence_number: String,
    /// Issuer code.
    pub issuer_code: String,
    /// Issuer name.
    pub issuer_name: String,
    /// Holder's kind of document.
    pub holder_identifier_type: IdentifierType,
    /// Holder's document number (personal data).
    pub holder_identifier_number: String,
    /// Holder's name (personal data).
    pub holder_name: String,
    /// Issue time, ms since the epoch.
    pub issued_at: i64,
    /// First day of validity, days since the epoch.
    pub valid_from: i32,
    /// Last day of validity, days since the epoch; `None` when valid indefinitely.
    pub valid_until: Option<i32>,
    /// Status.
    pub status: LicenceStatus,
    /// Surface fields (printed on the licence).
    pub surface: BTreeMap<String, String>,
    /// The identifier this one renews or changes.
    pub previous_licence_id: Option<String>,
    /// SHA-256 of the content, hex.
    pub content_hash: String,
    /// Issuing division.
    pub division: String,
}

impl Licence {
    /// A valid real-estate certificate of Hanyin county (610921) with id `licence_id`: the one
    /// sample licence tests, benchmarks and the demo start from.
    pub fn example(licence_id: impl Into<String>) -> Self {
        Self {
            licence_id: licence_id.into(),
            type_code: "11100000000013338W011".into(),
            type_name: "不动产权证书".into(),
            licence_number: "陕(2026)汉阴县不动产权第0000001号".into(),
            issuer_code: "11430000006122244L".into(),
            issuer_name: "汉阴县不动产登记中心".into(),
            holder_identifier_type: IdentifierType::CitizenId,
            holder_identifier_number: "11010519491231002X".into(),
            holder_name: "王小明".into(),
            issued_at: 1_790_000_000_000,
            valid_from: 20_000,
            valid_until: None,
            status: LicenceStatus::Valid,
            surface: [("坐落".to_owned(), "汉阴县城关镇".to_owned())].into(),
            previous_licence_id: None,
            content_hash: "ab".repeat(32),
            division: "610921".into(),
        }
    }
}

/// Case stage (`CaseStage` of `gov.case.event.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaseStage {
    /// 受理.
    Accepted,
    /// 审查中.
    InReview,
    /// 批准.
    Approved,
    /// 不予批准.
    Rejected,
    /// 办结.
    Completed,
    /// 中止.
    Suspended,
}

/// `cn.gov.exchange.case.CaseEvent` (`gov.case.event.v1`), field for field: what the platform
/// publishes and case statistics read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEvent {
    /// Case number, unique within the accepting division.
    pub case_number: String,
    /// Service-item code.
    pub service_item_code: String,
    /// Division where the case was accepted.
    pub division: String,
    /// Department handling the case.
    pub department: String,
    /// Stage reached by this event.
    pub stage: CaseStage,
    /// Promised completion time in working days.
    pub promised_working_days: i32,
    /// When the stage was reached, ms since the epoch.
    pub occurred_at: i64,
}

#[cfg(test)]
mod tests {
    use apache_avro::{types::Value, Schema};

    use super::*;

    fn schema(topic: &str) -> Schema {
        let text = crate::bundled_schemas().find(|s| s.topic == topic).unwrap().text;
        Schema::parse_str(text).unwrap()
    }

    /// `value` written with `schema` and read back.
    fn round_trip(schema: &Schema, value: &Value) -> Value {
        let mut bytes = Vec::new();
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_ref(&mut bytes, value)
            .unwrap();
        apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap()
    }

    fn licence() -> Licence {
        Licence {
            holder_identifier_number: "610902198001010019".into(),
            valid_until: Some(30_000),
            status: LicenceStatus::Suspended,
            previous_licence_id: Some("1.2.156.3005.2.11100000000013338W011.610921.SN0.001.0".into()),
            ..Licence::example("1.2.156.3005.2.11100000000013338W011.610921.SN1.001.0")
        }
    }

    /// The view has the schema's fields in the schema's order, and writes and reads back
    /// through it unchanged.
    #[test]
    fn the_licence_view_is_its_schema() {
        let schema = schema(LICENCE_TOPIC);
        let Schema::Record(record) = &schema else { panic!("a record") };
        let value = apache_avro::to_value(licence()).unwrap().resolve(&schema).unwrap();
        let Value::Record(fields) = &value else { panic!("a record value") };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let declared: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, declared, "Licence declares the schema's fields in its order");
        let back = round_trip(&schema, &value);
        assert_eq!(apache_avro::from_value::<Licence>(&back).unwrap(), licence());
    }

    #[test]
    fn the_case_event_view_is_its_schema() {
        let schema = schema(topics::CASE_EVENT);
        let Schema::Record(record) = &schema else { panic!("a record") };
        let event = CaseEvent {
            case_number: "C1".into(),
            service_item_code: "S1".into(),
            division: "610921".into(),
            department: "land-registry".into(),
            stage: CaseStage::InReview,
            promised_working_days: 5,
            occurred_at: 1_790_000_000_000,
        };
        let value = apache_avro::to_value(event.clone()).unwrap().resolve(&schema).unwrap();
        let Value::Record(fields) = &value else { panic!("a record value") };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let declared: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, declared, "CaseEvent declares the schema's fields in its order");
        let back = round_trip(&schema, &value);
        assert_eq!(apache_avro::from_value::<CaseEvent>(&back).unwrap(), event);
    }

    /// Every topic named in code is in the catalogue, with a bundled schema.
    #[test]
    fn the_topics_code_names_are_catalogued() {
        let catalog = crate::Catalog::bundled().unwrap();
        for topic in topics::ALL {
            assert!(catalog.by_topic(topic).is_some(), "{topic} is not in the catalogue");
            assert!(crate::bundled_schemas().any(|s| s.topic == topic), "{topic} has no schema");
        }
    }

    /// Every enum symbol of the schemas is a variant of the view, and back.
    #[test]
    fn the_enums_are_the_schemas_symbols() {
        let symbols = |topic: &str, field: &str| -> Vec<String> {
            let Schema::Record(record) = schema(topic) else { panic!() };
            let found = record.fields.into_iter().find(|f| f.name == field).unwrap();
            let Schema::Enum(e) = found.schema else { panic!("{field} is an enum") };
            e.symbols
        };
        let names = |values: Vec<serde_json::Value>| -> Vec<String> {
            values.into_iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        use IdentifierType as I;
        use LicenceStatus as S;
        let kinds = [I::CitizenId, I::CreditCode, I::Passport, I::HkMacaoPermit, I::TaiwanPermit, I::Other];
        let statuses =
            [S::Valid, S::Suspended, S::Withdrawn, S::Cancelled, S::Expired, S::Transferred, S::Revoked, S::Other];
        let kinds = names(kinds.iter().map(|k| serde_json::to_value(k).unwrap()).collect());
        let statuses = names(statuses.iter().map(|s| serde_json::to_value(s).unwrap()).collect());
        assert_eq!(statuses, symbols(LICENCE_TOPIC, "status"));
        assert_eq!(kinds, symbols(LICENCE_TOPIC, "holder_identifier_type"));
        assert_eq!(kinds, symbols(topics::DEED_TAX_PAYMENT, "taxpayer_identifier_type"));
        use CaseStage as C;
        let stages = [C::Accepted, C::InReview, C::Approved, C::Rejected, C::Completed, C::Suspended];
        let stages = names(stages.iter().map(|s| serde_json::to_value(s).unwrap()).collect());
        assert_eq!(stages, symbols(topics::CASE_EVENT, "stage"));
    }
}
