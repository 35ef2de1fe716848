//! Working days as China counts them: Monday to Friday, less the public holidays, plus the
//! weekend days that become working days (调休上班), as the State Council publishes them each
//! November for the year after.
//!
//! The schedule is data, not a rule: no formula gives next year's days. The published years
//! ship in `schemas/data/cn-working-days.toml`; an operator adds a year (or corrects one)
//! with a file of the same shape, without a rebuild. A date in a year neither holds is an
//! error that says so ([`CalendarError::Unpublished`]), never a guess: a due date counted
//! over an unknown holiday would be wrong by a week.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;

/// The bundled schedule.
const BUNDLED: &str = include_str!("../../data/cn-working-days.toml");

/// Why a calendar cannot be read or cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The file is not the calendar's shape; names the year and the entry where it can.
    #[error("working-day calendar: {0}")]
    Invalid(String),
    /// A date in a year no calendar holds.
    #[error(
        "no published working-day schedule for {0}: govex does not guess holidays; add the year \
         to the file named by governance.calendar_file (the shape of schemas/data/cn-working-days.toml)"
    )]
    Unpublished(i32),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    year: Vec<YearEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearEntry {
    year: i32,
    /// The notice the days come from (shown to operators; not used in counting).
    #[serde(default)]
    notice: String,
    holidays: Vec<String>,
    #[serde(default)]
    working_weekends: Vec<String>,
}

/// One year's schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Year {
    notice: String,
    holidays: BTreeSet<NaiveDate>,
    working_weekends: BTreeSet<NaiveDate>,
}

/// The working-day calendar: the years it holds and their days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkingCalendar {
    years: BTreeMap<i32, Year>,
}

/// How far [`WorkingCalendar::add_working_days`] counts: a deadline is days or weeks, and a
/// count of a million would walk calendar years that cannot exist.
pub const MAX_WORKING_DAYS: u32 = 3_650;

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

impl WorkingCalendar {
    /// The years the State Council has published, as govex ships them.
    pub fn bundled() -> Self {
        Self::parse(BUNDLED).unwrap_or_else(|e| unreachable!("the bundled calendar parses (tested): {e}"))
    }

    /// The bundled years, with `operator`'s file (the shape of the bundled one) added: a year
    /// it holds replaces the bundled one.
    pub fn bundled_with(operator: &str) -> Result<Self, CalendarError> {
        let mut calendar = Self::bundled();
        calendar.years.extend(Self::parse(operator)?.years);
        Ok(calendar)
    }

    /// Reads a calendar file, checking that every date is in the year it is listed under, that
    /// a working weekend day is a Saturday or Sunday, and that no day is both.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let file: File = toml::from_str(text).map_err(|e| CalendarError::Invalid(e.message().to_owned()))?;
        let mut years = BTreeMap::new();
        for entry in file.year {
            let y = entry.year;
            let invalid = |what: String| CalendarError::Invalid(format!("year {y}: {what}"));
            let date = |text: &str| {
                let day = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .map_err(|_| invalid(format!("{text:?} is not a date (YYYY-MM-DD)")))?;
                if day.year() != y {
                    return Err(invalid(format!("{text} is not in {y}")));
                }
                Ok(day)
            };
            let mut year = Year { notice: entry.notice, ..Year::default() };
            for item in &entry.holidays {
                let (first, last) = match item.split_once("..") {
                    Some((first, last)) => (date(first)?, date(last)?),
                    None => (date(item)?, date(item)?),
                };
                if last < first {
                    return Err(invalid(format!("the range {item} ends before it starts")));
                }
                year.holidays.extend(first.iter_days().take_while(|d| *d <= last));
            }
            for item in &entry.working_weekends {
                let day = date(item)?;
                if !is_weekend(day) {
                    return Err(invalid(format!("{item} is a {}, not a weekend day", day.weekday())));
                }
                if year.holidays.contains(&day) {
                    return Err(invalid(format!("{item} is listed both as a holiday and as a working day")));
                }
                year.working_weekends.insert(day);
            }
            if years.insert(y, year).is_some() {
                return Err(invalid("listed twice".into()));
            }
        }
        Ok(Self { years })
    }

    /// The years it can count in.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.keys().copied()
    }

    /// The notice a year's days come from.
    pub fn notice(&self, year: i32) -> Option<&str> {
        self.years.get(&year).map(|y| y.notice.as_str())
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        let year = self.years.get(&date.year()).ok_or(CalendarError::Unpublished(date.year()))?;
        Ok(if is_weekend(date) { year.working_weekends.contains(&date) } else { !year.holidays.contains(&date) })
    }

    /// The `n`-th working day after `start` (`start` itself not counted, as a deadline of
    /// "10 working days" from the day a request is filed is counted); `start` when `n` is 0.
    /// Refuses a count beyond [`MAX_WORKING_DAYS`] and any day in an unpublished year.
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        if n > MAX_WORKING_DAYS {
            return Err(CalendarError::Invalid(format!("{n} working days is more than {MAX_WORKING_DAYS}")));
        }
        let mut day = start;
        let mut left = n;
        while left > 0 {
            day = day.succ_opt().ok_or(CalendarError::Unpublished(day.year()))?;
            if self.is_working_day(day)? {
                left -= 1;
            }
        }
        Ok(day)
    }

    /// Working days after `from` up to and including `to` (0 when `to` is not after `from`).
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<u32, CalendarError> {
        let mut count = 0;
        for day in from.iter_days().skip(1).take_while(|d| *d <= to) {
            count += u32::from(self.is_working_day(day)?);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    /// Ten working days from the Monday before National Day 2026: the holiday (1–7 October)
    /// is skipped, the Saturday after it (10 October) is a working day, the Sunday is not.
    #[test]
    fn ten_working_days_across_national_day_2026() {
        let calendar = WorkingCalendar::bundled();
        assert_eq!(calendar.add_working_days(d("2026-09-28"), 10).unwrap(), d("2026-10-16"));
        assert!(calendar.is_working_day(d("2026-10-10")).unwrap(), "调休: Saturday 10 October is worked");
        assert!(calendar.is_working_day(d("2026-09-20")).unwrap(), "调休: Sunday 20 September is worked");
        assert!(!calendar.is_working_day(d("2026-10-05")).unwrap());
        assert!(!calendar.is_working_day(d("2026-10-11")).unwrap());
        // Filed on the last working day before the holiday: the first working day counted is 8 October.
        assert_eq!(calendar.add_working_days(d("2026-09-30"), 1).unwrap(), d("2026-10-08"));
        assert_eq!(calendar.working_days_between(d("2026-09-30"), d("2026-10-16")).unwrap(), 8);
    }

    /// Spring Festival 2026: off 15–23 February, worked Saturdays 14 and 28 February.
    #[test]
    fn ten_working_days_across_spring_festival_2026() {
        let calendar = WorkingCalendar::bundled();
        assert_eq!(calendar.add_working_days(d("2026-02-12"), 10).unwrap(), d("2026-03-04"));
        assert_eq!(calendar.add_working_days(d("2026-02-13"), 1).unwrap(), d("2026-02-14"));
        assert_eq!(calendar.add_working_days(d("2026-02-14"), 1).unwrap(), d("2026-02-24"));
        // 2025's National Day and Mid-Autumn were one eight-day holiday, Saturday 11 October worked.
        assert_eq!(calendar.add_working_days(d("2025-09-30"), 2).unwrap(), d("2025-10-10"));
        assert_eq!(calendar.add_working_days(d("2025-09-30"), 3).unwrap(), d("2025-10-11"));
    }

    #[test]
    fn a_year_nobody_published_is_refused_not_guessed_and_an_operator_can_add_it() {
        let calendar = WorkingCalendar::bundled();
        assert_eq!(calendar.is_working_day(d("2027-03-01")), Err(CalendarError::Unpublished(2027)));
        // Counting from December 2026 runs into 2027.
        assert_eq!(calendar.add_working_days(d("2026-12-24"), 10), Err(CalendarError::Unpublished(2027)));
        assert!(CalendarError::Unpublished(2027).to_string().contains("governance.calendar_file"));

        let extended = WorkingCalendar::bundled_with(
            "[[year]]\nyear = 2027\nnotice = \"operator\"\nholidays = [\"2027-01-01\"]\nworking_weekends = []\n",
        )
        .unwrap();
        assert_eq!(extended.add_working_days(d("2026-12-31"), 1).unwrap(), d("2027-01-04"));
        assert_eq!(extended.years().collect::<Vec<_>>(), [2025, 2026, 2027]);
    }

    #[test]
    fn a_calendar_file_with_a_mistake_names_the_year_and_the_entry() {
        for (text, says) in [
            ("[[year]]\nyear = 2027\nholidays = [\"2026-10-01\"]\n", "year 2027: 2026-10-01 is not in 2027"),
            ("[[year]]\nyear = 2027\nholidays = [\"2027-02-30\"]\n", "year 2027: \"2027-02-30\" is not a date"),
            ("[[year]]\nyear = 2027\nholidays = [\"2027-02-10..2027-02-01\"]\n", "ends before it starts"),
            (
                "[[year]]\nyear = 2027\nholidays = []\nworking_weekends = [\"2027-01-04\"]\n",
                "is a Mon, not a weekend day",
            ),
            (
                "[[year]]\nyear = 2027\nholidays = [\"2027-01-02\"]\nworking_weekends = [\"2027-01-02\"]\n",
                "both as a holiday and as a working day",
            ),
            ("[[year]]\nyear = 2027\nholidays = []\n[[year]]\nyear = 2027\nholidays = []\n", "year 2027: listed twice"),
            ("[[year]]\nyear = 2027\nholiday = []\n", "unknown field"),
        ] {
            let error = WorkingCalendar::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert_eq!(
            WorkingCalendar::bundled().add_working_days(d("2026-01-05"), MAX_WORKING_DAYS + 1).unwrap_err(),
            CalendarError::Invalid(format!("{} working days is more than {MAX_WORKING_DAYS}", MAX_WORKING_DAYS + 1))
        );
    }
}
