//! librdkafka's log lines and errors, collapsed and rate-limited: a broker that cannot be
//! reached makes every client repeat the same error several times a second, which buried
//! the one line a user needed (`govex import` printed about 80 of them in 10 s). Every
//! govex client uses [`LogContext`] (or delegates to it), so the same message is shown once
//! per [`WINDOW`], and the next one says how many like it were left out.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{config::RDKafkaLogLevel, error::KafkaError, ClientContext};

/// How long the same message stays quiet after it was shown.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Distinct messages remembered at once; past it the memory starts again (librdkafka's
/// messages are few, but nothing here may grow without bound).
const MAX_REMEMBERED: usize = 1024;

struct Seen {
    shown_at: Instant,
    left_out: u64,
}

static SEEN: LazyLock<Mutex<HashMap<String, Seen>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The client context of every govex Kafka client: librdkafka's own logging, collapsed.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self::error(&error, reason);
    }
}

/// Metadata readers and scans are consumers with no rebalance of their own to watch.
impl rdkafka::consumer::ConsumerContext for LogContext {}

/// A librdkafka log line, shown unless the same one was shown within [`WINDOW`].
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let Some(suffix) = admit(&format!("{fac} {message}"), Instant::now()) else { return };
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}{suffix}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}{suffix}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}{suffix}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}{suffix}"),
    }
}

/// A librdkafka client error, shown unless the same one was shown within [`WINDOW`].
pub fn error(error: &KafkaError, reason: &str) {
    // The end of a partition is what a read to the end asks to be told (`enable.partition.eof`):
    // librdkafka reports it through the error callback, but nothing is wrong.
    if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
        return;
    }
    if let Some(suffix) = admit(&format!("{error}: {reason}"), Instant::now()) {
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}{suffix}");
    }
}

/// Whether govex's own line about a client error (`message`) is shown now, and with what
/// suffix: the same rule as librdkafka's lines (a consumer reports every failed fetch).
pub fn collapsed(message: &str) -> Option<String> {
    admit(message, Instant::now())
}

/// Whether a message is shown now, and with what suffix: `None` when the same message (its
/// digits aside: times, counts, ports) was shown less than [`WINDOW`] ago.
fn admit(message: &str, now: Instant) -> Option<String> {
    let key = shape(message);
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&key) {
        seen.clear();
    }
    match seen.get_mut(&key) {
        Some(entry) if now.duration_since(entry.shown_at) < WINDOW => {
            entry.left_out += 1;
            None
        }
        Some(entry) => {
            let left_out = std::mem::take(&mut entry.left_out);
            entry.shown_at = now;
            Some(match left_out {
                0 => String::new(),
                n => format!(" ({n} more like this in the last {} s were not shown)", WINDOW.as_secs()),
            })
        }
        None => {
            seen.insert(key, Seen { shown_at: now, left_out: 0 });
            Some(String::new())
        }
    }
}

/// A message with every run of digits made one `#`: "after 3ms" and "after 12ms", or one
/// broker's port and another's, are the same message.
fn shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    // librdkafka's own count of what it held back is part of the message, not of its shape.
    out.replace(", # identical error(s) suppressed", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_message_shows_once_per_window_then_counts_what_was_left_out() {
        let start = Instant::now();
        let message =
            |ms: u32| format!("test-shape 127.0.0.1:1/bootstrap: Connect failed (after {ms}ms in state CONNECT)");
        assert_eq!(admit(&message(0), start).as_deref(), Some(""));
        for ms in 1..80 {
            assert_eq!(admit(&message(ms), start + Duration::from_millis(u64::from(ms) * 100)), None);
        }
        assert_eq!(admit("test-shape another message", start).as_deref(), Some(""), "another message shows");
        let later = admit(&message(3), start + WINDOW + Duration::from_secs(1)).unwrap();
        assert!(later.contains("79 more like this"), "{later}");
        assert_eq!(admit(&message(4), start + WINDOW + Duration::from_secs(2)), None);
        let own_count = "test-shape Connect failed (after 0ms in state CONNECT, 1 identical error(s) suppressed)";
        assert_eq!(admit("test-shape Connect failed (after 0ms in state CONNECT)", start).as_deref(), Some(""));
        assert_eq!(admit(own_count, start), None, "librdkafka's own count does not make it another message");
    }
}
