//! Case statistics (办件统计): consumes `gov.case.event.v1` — at the province, the case events
//! every county sent up — and counts completed cases per division, on time or late, against
//! the promised working days (`govex_case_completed_total{division, on_time}`).
//!
//! A case is counted once, by its case number, however many COMPLETED events it has (a
//! department that sends one twice, a retry with new event ids). A COMPLETED with no
//! ACCEPTED before it cannot be timed: it is counted apart, as incomplete data
//! (`govex_case_completed_without_acceptance_total{division}`), not as on time.

pub mod component;

use std::path::Path;

use apache_avro::Schema;
use chrono::{Datelike, Duration as Days, NaiveDate, Weekday};
use govex_bus::{consumer::HandlerError, CodecError, Decoder, Incoming, Metrics, RegistryClient};
use govex_schemas::records::{CaseEvent, CaseStage as Stage};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// What case statistics are counted from: the platform's case events.
pub const TOPIC: &str = govex_schemas::records::topics::CASE_EVENT;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompletedLabels {
    division: String,
    on_time: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DivisionLabels {
    division: String,
}

/// Working days (Monday to Friday) from `start` to `end`, not counting the start day.
pub fn working_days(start: NaiveDate, end: NaiveDate) -> i64 {
    let mut days = 0;
    let mut day = start;
    while day < end {
        day += Days::days(1);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            days += 1;
        }
    }
    days
}

fn china_date(ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000).map(|t| t.date_naive()).unwrap_or_default()
}

/// Counts completed cases.
pub struct CaseStats {
    accepted: sled::Tree,
    /// Cases already counted (division `\0` case number).
    completed_cases: sled::Tree,
    events: sled::Tree,
    db: sled::Db,
    /// To be refilled from the start of its topic (see [`crate::sink::Sink::fresh`]): counted
    /// once per case by its stored state, so a refill counts nothing twice.
    fresh: bool,
    decoder: Decoder,
    completed: Family<CompletedLabels, Counter>,
    without_acceptance: Family<DivisionLabels, Counter>,
}

impl CaseStats {
    /// Its sled database (for backups).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens the state (acceptance times) under `dir` and registers the counter.
    pub fn open(dir: &Path, registry: RegistryClient, metrics: &Metrics) -> Result<Self, sled::Error> {
        let (db, fresh) = govex_schemas::store::open_sled_refillable(dir)?;
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == TOPIC).map(|s| s.text).unwrap_or_default();
        let schema =
            Schema::parse_str(text).unwrap_or_else(|e| unreachable!("the bundled case schema parses (tested): {e}"));
        let completed = Family::<CompletedLabels, Counter>::default();
        let without_acceptance = Family::<DivisionLabels, Counter>::default();
        metrics.register(|r| {
            r.register("case_completed", "Completed cases per division, on time or late", completed.clone());
            r.register(
                "case_completed_without_acceptance",
                "Cases completed with no acceptance event before: incomplete data, not timed",
                without_acceptance.clone(),
            );
        });
        Ok(Self {
            accepted: db.open_tree("accepted")?,
            completed_cases: db.open_tree("completed")?,
            without_acceptance,
            events: db.open_tree("events")?,
            db,
            fresh,
            decoder: Decoder::new(registry, &schema),
            completed,
        })
    }

    /// Applies one case event; durable after the next [`flush`](crate::sink::Sink::flush).
    pub async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let Some(envelope) = message.envelope().ok() else { return Ok(()) };
        if self.events.contains_key(envelope.event_id.as_bytes()).map_err(|e| HandlerError::Retry(e.to_string()))? {
            return Ok(());
        }
        let event: CaseEvent = match self.decoder.decode_into(message.payload().unwrap_or_default()).await {
            Ok(event) => event,
            Err(CodecError::Registry(e)) => return Err(HandlerError::Retry(e.to_string())),
            Err(e) => {
                tracing::warn!(
                    class = govex_bus::dlq::Refusal::class(&e),
                    "a case event could not be read; not counted"
                );
                return Ok(());
            }
        };
        let key = format!("{}\0{}", event.division, event.case_number);
        match event.stage {
            Stage::Accepted => {
                self.accepted
                    .insert(key.as_bytes(), &event.occurred_at.to_be_bytes())
                    .map_err(|e| HandlerError::Retry(e.to_string()))?;
            }
            Stage::Completed => {
                let retry = |e: sled::Error| HandlerError::Retry(e.to_string());
                // Counted once per case: the first COMPLETED marks it.
                let first = self.completed_cases.insert(key.as_bytes(), &[]).map_err(retry)?.is_none();
                let accepted = self.accepted.get(key.as_bytes()).map_err(retry)?;
                let accepted_ms = accepted.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(i64::from_be_bytes);
                match (first, accepted_ms) {
                    (false, _) => {}
                    (true, None) => {
                        self.without_acceptance.get_or_create(&DivisionLabels { division: event.division }).inc();
                    }
                    (true, Some(accepted_ms)) => {
                        let taken = working_days(china_date(accepted_ms), china_date(event.occurred_at));
                        let on_time = taken <= i64::from(event.promised_working_days);
                        self.completed
                            .get_or_create(&CompletedLabels { division: event.division, on_time: on_time.to_string() })
                            .inc();
                    }
                }
            }
            _ => {}
        }
        self.events.insert(envelope.event_id.as_bytes(), &[]).map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(())
    }
}

impl crate::sink::Sink for CaseStats {
    const NAME: &'static str = "cases";
    // One lane: a case's acceptance is counted before its completion.
    const LANES: crate::sink::Lanes = crate::sink::Lanes { lanes: 1, lane_capacity: 256 };
    // Statistics are derived: a record they cannot count is counted as skipped, not kept.
    const DEAD_LETTERS: Option<&'static str> = None;

    fn fresh(&self) -> bool {
        self.fresh
    }

    fn refilled(&self) -> Result<(), sled::Error> {
        govex_schemas::store::mark_refilled(&self.db)
    }

    fn topics(&self, _: &govex_schemas::Catalog) -> Vec<String> {
        vec![TOPIC.into()]
    }

    async fn apply(&self, record: &Incoming) -> Result<(), HandlerError> {
        self.handle(record).await
    }

    async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_days_skip_weekends() {
        let friday = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(working_days(friday, friday), 0);
        assert_eq!(working_days(friday, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()), 1, "Friday to Monday");
        assert_eq!(working_days(friday, NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()), 5);
    }
}
