//! Pieces every department's mapping uses: money and instants parsed from strings, parties
//! and their identifiers, and the context checks run in.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::{identifiers, validation::Violation};

/// What checks compare against: the time of the request.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext {
    /// Now, in UTC.
    pub now: DateTime<Utc>,
}

impl CheckContext {
    /// A context for checks made now.
    pub fn now() -> Self {
        Self { now: Utc::now() }
    }

    /// Today's date, in China Standard Time (UTC+8), for birth dates.
    pub fn today(&self) -> NaiveDate {
        (self.now + chrono::Duration::hours(8)).date_naive()
    }
}

/// Collects violations while a record is checked.
#[derive(Debug, Default)]
pub struct Checks {
    /// Violations so far.
    pub violations: Vec<Violation>,
}

impl Checks {
    /// Records a violation of `rule` at `pointer`.
    pub fn fail(&mut self, pointer: &str, rule: &str, message: impl Into<String>) {
        self.violations.push(Violation::new(pointer, rule, message));
    }

    /// Runs an identifier check, recording its rule on failure.
    pub fn identifier(&mut self, pointer: &str, result: Result<(), &'static str>, what: &str) {
        if let Err(rule) = result {
            self.fail(pointer, rule, format!("is not a valid {what} ({rule})"));
        }
    }

    /// A division code that exists; returns the current code (a retired code maps to its
    /// successor).
    pub fn division(&mut self, pointer: &str, code: &str) -> String {
        match identifiers::division(code) {
            Ok(current) => current,
            Err(rule) => {
                self.fail(pointer, rule, "is not a GB/T 2260 division code in force");
                code.to_owned()
            }
        }
    }

    /// An amount with at most `scale` decimals, non-negative; returns it scaled to an integer.
    pub fn decimal(&mut self, pointer: &str, text: &str, scale: u32) -> i128 {
        match parse_decimal(text, scale) {
            Some(value) => value,
            None => {
                self.fail(
                    pointer,
                    "amount-format",
                    format!("must be a non-negative amount with at most {scale} decimals"),
                );
                0
            }
        }
    }

    /// [`Checks::decimal`], `None` when it failed (for cross-field rules that need the value).
    pub fn decimal_opt(&mut self, pointer: &str, text: &str, scale: u32) -> Option<i128> {
        let before = self.violations.len();
        let value = self.decimal(pointer, text, scale);
        (self.violations.len() == before).then_some(value)
    }

    /// An RFC 3339 instant not in the future (a minute of clock skew allowed); returns
    /// milliseconds since the Unix epoch.
    pub fn past_instant(&mut self, pointer: &str, text: &str, context: &CheckContext) -> i64 {
        match DateTime::parse_from_rfc3339(text) {
            Ok(instant) if instant.with_timezone(&Utc) > context.now + chrono::Duration::minutes(1) => {
                self.fail(pointer, "time-not-in-future", "must not be in the future");
                0
            }
            Ok(instant) => instant.timestamp_millis(),
            Err(_) => {
                self.fail(pointer, "time-format", "must be an RFC 3339 date-time with an offset");
                0
            }
        }
    }

    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Parses a non-negative decimal with at most `scale` decimals into an integer scaled by
/// `10^scale` ("123.4" with scale 2 → 12340).
pub fn parse_decimal(text: &str, scale: u32) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > scale as usize
        || (text.contains('.') && fraction.is_empty())
    {
        return None;
    }
    if whole.len() > 1 && whole.starts_with('0') || whole.len() > 20 {
        return None;
    }
    let mut value: i128 = whole.parse().ok()?;
    for i in 0..scale as usize {
        value = value * 10 + fraction.as_bytes().get(i).map_or(0, |b| i128::from(b - b'0'));
    }
    Some(value)
}

/// An Avro `decimal` (bytes) value: the unscaled integer, written as the shortest
/// big-endian two's complement, as the specification and other writers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvroDecimal(pub i128);

impl Serialize for AvroDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&shortest_be(self.0))
    }
}

/// The shortest big-endian two's complement of `value`: how Avro writers write a decimal's
/// unscaled value.
pub fn shortest_be(value: i128) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let redundant = bytes
        .windows(2)
        .take_while(|w| (w[0] == 0x00 && w[1] & 0x80 == 0) || (w[0] == 0xff && w[1] & 0x80 != 0))
        .count();
    bytes[redundant..].to_vec()
}

/// Kinds of identity document, shared by every department's schema (declared once, with the
/// schemas).
pub use govex_schemas::records::IdentifierType;

/// A party as departments send it.
#[derive(Debug, Clone, Deserialize)]
pub struct PartyInput {
    /// Kind of document.
    pub identifier_type: IdentifierType,
    /// Document number (personal data).
    pub identifier_number: String,
    /// Name (personal data).
    pub name: String,
}

impl PartyInput {
    /// Checks the identifier by its kind.
    pub fn check(&self, pointer: &str, checks: &mut Checks, context: &CheckContext) {
        let at = format!("{pointer}/identifier_number");
        match self.identifier_type {
            IdentifierType::CitizenId => checks.identifier(
                &at,
                identifiers::citizen_id(&self.identifier_number, context.today()),
                "citizen identity number",
            ),
            IdentifierType::CreditCode => {
                checks.identifier(&at, identifiers::credit_code(&self.identifier_number), "unified social credit code")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("123.45", 2), Some(12345));
        assert_eq!(parse_decimal("123.4", 2), Some(12340));
        assert_eq!(parse_decimal("0", 2), Some(0));
        assert_eq!(parse_decimal("0.0300", 4), Some(300));
        for bad in ["-1", "1.234", "01", "1.", ".5", "1e3", "", "1,000"] {
            assert_eq!(parse_decimal(bad, 2), None, "{bad}");
        }
    }

    #[test]
    fn decimals_serialize_in_the_shortest_form() {
        let encode = |v: i128| {
            let schema =
                apache_avro::Schema::parse_str(r#"{"type":"bytes","logicalType":"decimal","precision":18,"scale":2}"#)
                    .unwrap();
            apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                .build()
                .unwrap()
                .write_ser_to_vec(&AvroDecimal(v))
                .unwrap()
        };
        assert_eq!(encode(12345), vec![4, 0x30, 0x39], "length 2 (zig-zag 4), then 0x3039");
        assert_eq!(encode(-12345), vec![4, 0xcf, 0xc7]);
        assert_eq!(encode(128), vec![4, 0x00, 0x80], "a leading zero keeps it positive");
        assert_eq!(encode(0), vec![2, 0x00]);
    }

    #[test]
    fn instants_in_the_future_are_refused() {
        let context =
            CheckContext { now: DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z").unwrap().with_timezone(&Utc) };
        let mut checks = Checks::default();
        assert_eq!(checks.past_instant("/t", "2026-11-27T08:00:00+08:00", &context), 1_795_737_600_000);
        assert!(checks.ok());
        checks.past_instant("/t", "2026-11-28T00:00:00Z", &context);
        checks.past_instant("/u", "yesterday", &context);
        let rules: Vec<&str> = checks.violations.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(rules, ["time-not-in-future", "time-format"]);
    }
}
