//! The time zone times are shown to people in: API answers (`issued_at`, a dossier's record
//! times), the demo and the command line. Inputs keep whatever offset they came with, and
//! the Avro records hold instants (milliseconds since the epoch), so only the rendering
//! changes. Default `Asia/Shanghai`: every division govex serves is on China Standard Time.
//!
//! Zones are fixed offsets: the names accepted are those of China's zones (none has daylight
//! saving time now), `UTC`, and `+HH:MM` / `-HH:MM`. A zone with daylight saving time would
//! need the tz database, which no user of this exchange has needed.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Named zones and their offsets in seconds.
const NAMED: [(&str, i32); 7] = [
    ("Asia/Shanghai", 8 * 3600),
    ("Asia/Chongqing", 8 * 3600),
    ("Asia/Urumqi", 6 * 3600),
    ("Asia/Hong_Kong", 8 * 3600),
    ("Asia/Macau", 8 * 3600),
    ("Asia/Taipei", 8 * 3600),
    ("UTC", 0),
];

/// Now, in milliseconds since the Unix epoch (0 on a clock set before 1970): the one clock
/// reading the stores, the use log and the bridges take.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The date in China Standard Time (UTC+8) at `instant`: the day a birth date or a licence's
/// validity is judged by, whatever zone the node displays times in.
pub fn china_date(instant: DateTime<Utc>) -> NaiveDate {
    (instant + chrono::Duration::hours(8)).date_naive()
}

/// A date as Avro's `date` holds it: days since 1970-01-01.
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// The date `days` after 1970-01-01 (`None` out of chrono's range).
pub fn epoch_date(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(i64::from(days)))
}

/// A time zone for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone {
    name: String,
    offset: FixedOffset,
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::parse("Asia/Shanghai").unwrap_or_else(|_| unreachable!("Asia/Shanghai is a named zone"))
    }
}

impl TimeZone {
    /// `Asia/Shanghai`, `UTC`, `+08:00`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some((name, seconds)) = NAMED.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
            let offset = FixedOffset::east_opt(*seconds).ok_or("offset out of range")?;
            return Ok(Self { name: (*name).to_owned(), offset });
        }
        let offset: Option<FixedOffset> = (|| {
            let (sign, rest) = match text.as_bytes().first()? {
                b'+' => (1, &text[1..]),
                b'-' => (-1, &text[1..]),
                _ => return None,
            };
            // Exactly HH:MM, two digits each (`parse` would take `-1` or `000`).
            let bytes = rest.as_bytes();
            let two_digits = |s: &[u8]| s.len() == 2 && s.iter().all(u8::is_ascii_digit);
            if bytes.len() != 5 || bytes[2] != b':' || !two_digits(&bytes[..2]) || !two_digits(&bytes[3..]) {
                return None;
            }
            let (hours, minutes): (i32, i32) = (rest[..2].parse().ok()?, rest[3..].parse().ok()?);
            if hours > 14 || minutes > 59 {
                return None;
            }
            FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
        })();
        match offset {
            Some(offset) => Ok(Self { name: text.to_owned(), offset }),
            None => Err(format!(
                "'{text}' is not a time zone this node knows: use {}, or an offset such as +08:00",
                NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// The offset.
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    /// An instant (ms since the epoch) as RFC 3339 in this zone: `2026-11-24T16:00:00+08:00`.
    pub fn rfc3339(&self, ms: i64) -> Option<String> {
        DateTime::from_timestamp_millis(ms)
            .map(|t| t.with_timezone(&self.offset).to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl TryFrom<String> for TimeZone {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> String {
        zone.name
    }
}

impl std::fmt::Display for TimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_epoch_days_and_the_day_is_chinas() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        assert_eq!(epoch_days(date), 20_789);
        assert_eq!(epoch_date(20_789), Some(date));
        assert_eq!(epoch_date(0), NaiveDate::from_ymd_opt(1970, 1, 1));
        assert_eq!(epoch_date(i32::MAX), None);
        // 17:00 UTC is already the next day in China.
        let evening = DateTime::parse_from_rfc3339("2026-12-01T17:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(china_date(evening), date);
        assert!(now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn instants_render_in_the_zone() {
        let shanghai = TimeZone::default();
        assert_eq!(shanghai.rfc3339(1_795_737_600_000).unwrap(), "2026-11-27T08:00:00+08:00");
        assert_eq!(TimeZone::parse("utc").unwrap().rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(TimeZone::parse("-03:30").unwrap().rfc3339(0).unwrap(), "1969-12-31T20:30:00-03:30");
        for bad in ["Europe/Berlin", "+8", "+25:00", "08:00", "", "+-1:00", "+08:-1", "+1:000", "+08:60", "Z"] {
            assert!(TimeZone::parse(bad).is_err(), "{bad}");
        }
    }
}
