//! Pieces every department's mapping uses: money and instants parsed from strings, parties
//! and their identifiers, and the context checks run in.

use chrono::{DateTime, NaiveDate, Utc};

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
        govex_schemas::zone::china_date(self.now)
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
    fn decimals_are_written_in_the_shortest_form() {
        assert_eq!(shortest_be(12345), vec![0x30, 0x39]);
        assert_eq!(shortest_be(-12345), vec![0xcf, 0xc7]);
        assert_eq!(shortest_be(128), vec![0x00, 0x80], "a leading zero keeps it positive");
        assert_eq!(shortest_be(0), vec![0x00]);
        assert_eq!(shortest_be(-1), vec![0xff]);
    }
}
