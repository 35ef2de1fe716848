//! The envelope: the Kafka headers every govex record carries (brief §4), with typed accessors.
//!
//! Values stay in the Confluent wire format; everything a router, a sink or an auditor needs
//! without decoding the value travels here.

use std::{fmt, str::FromStr};

use rdkafka::message::{Header, Headers, OwnedHeaders};
use uuid::Uuid;

use govex_schemas::{domain::DivisionError, Department, Division};

/// Header names. Lower-case and prefixed, so they never clash with other tools' headers;
/// `traceparent` keeps its W3C name so tracing tools recognise it.
pub mod header {
    /// The event id, a UUIDv7 in its hyphenated text form; the idempotency key of sinks.
    pub const EVENT_ID: &str = "govex-event-id";
    /// The department whose system produced the record.
    pub const SOURCE_DEPARTMENT: &str = "govex-source-department";
    /// The division of the node where the record entered the exchange.
    pub const ORIGIN_DIVISION: &str = "govex-origin-division";
    /// The record type, e.g. `registration` or `licence`.
    pub const RECORD_TYPE: &str = "govex-record-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Divisions already visited by a forwarded record, comma-separated, oldest first.
    pub const HOP_TRAIL: &str = "govex-hop-trail";
}

/// A W3C trace context (`traceparent`): version 00, trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id, never all zero.
    pub trace_id: [u8; 16],
    /// 8-byte id of the span that sent the record, never all zero.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Starts a new trace.
    pub fn new_root() -> Self {
        // One 128-bit draw for the trace id; the span id takes the random tail of a second.
        let trace_id = Uuid::new_v4().into_bytes();
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&Uuid::new_v4().into_bytes()[8..]);
        parent_id[7] |= 1; // never all zero
        Self { trace_id, parent_id, flags: 1 }
    }

    /// The same trace, continued by a new span (a bridge hop, a sink's write).
    pub fn child(&self) -> Self {
        let mut next = Self::new_root();
        next.trace_id = self.trace_id;
        next.flags = self.flags;
        next
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

/// Lower-case hex of `bytes` (hashes, ids, fingerprints): the one hex writer of the workspace.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Lower-case hex without a `format!` per byte: envelopes are made once per record.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &self.parent_id);
        text.push('-');
        push_hex(&mut text, &[self.flags]);
        f.write_str(&text)
    }
}

impl FromStr for TraceParent {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || EnvelopeError::Invalid {
            header: header::TRACEPARENT,
            reason: "expected 00-<32 hex>-<16 hex>-<2 hex>".into(),
        };
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace, parent, flags] = parts.as_slice() else { return Err(invalid()) };
        if *version != "00" {
            return Err(invalid());
        }
        let trace_id = unhex::<16>(trace).filter(|t| t != &[0; 16]).ok_or_else(invalid)?;
        let parent_id = unhex::<8>(parent).filter(|p| p != &[0; 8]).ok_or_else(invalid)?;
        let [flags] = unhex::<1>(flags).ok_or_else(invalid)?;
        Ok(Self { trace_id, parent_id, flags })
    }
}

/// A missing or malformed header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("header {0} is missing")]
    Missing(&'static str),
    /// A header is present but its value is not valid.
    #[error("header {header} is invalid: {reason}")]
    Invalid {
        /// The header.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl crate::dlq::Refusal for EnvelopeError {
    fn class(&self) -> &'static str {
        "envelope"
    }
}

/// The headers of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id of this event (UUIDv7, time-ordered); sinks deduplicate on it.
    pub event_id: Uuid,
    /// Department whose system produced the record.
    pub source_department: Department,
    /// Division where the record entered the exchange.
    pub origin_division: Division,
    /// What kind of record the value holds (`registration`, `licence`, `case-event`, ...).
    pub record_type: String,
    /// Trace context, continued across hops.
    pub traceparent: TraceParent,
    /// Divisions a bridge already forwarded this record through, oldest first.
    pub hop_trail: Vec<Division>,
}

impl Envelope {
    /// A new event entering the exchange here, with a fresh UUIDv7 and a new trace.
    pub fn new(source_department: Department, origin_division: Division, record_type: impl Into<String>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            source_department,
            origin_division,
            record_type: record_type.into(),
            traceparent: TraceParent::new_root(),
            hop_trail: Vec::new(),
        }
    }

    /// Whether the record already passed through `division`.
    pub fn has_visited(&self, division: Division) -> bool {
        self.hop_trail.contains(&division)
    }

    /// The event time encoded in the UUIDv7, in milliseconds since the Unix epoch.
    pub fn event_time_millis(&self) -> Option<u64> {
        self.event_id.get_timestamp().map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
    }

    /// The Kafka headers for this envelope.
    pub fn to_headers(&self) -> OwnedHeaders {
        let event_id = self.event_id.hyphenated().to_string();
        let traceparent = self.traceparent.to_string();
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header { key: header::EVENT_ID, value: Some(event_id.as_bytes()) })
            .insert(Header { key: header::SOURCE_DEPARTMENT, value: Some(self.source_department.as_str().as_bytes()) })
            .insert(Header { key: header::ORIGIN_DIVISION, value: Some(self.origin_division.as_str().as_bytes()) })
            .insert(Header { key: header::RECORD_TYPE, value: Some(self.record_type.as_bytes()) })
            .insert(Header { key: header::TRACEPARENT, value: Some(traceparent.as_bytes()) });
        if self.hop_trail.is_empty() {
            return headers;
        }
        let trail = self.hop_trail.iter().map(Division::as_str).collect::<Vec<_>>().join(",");
        headers.insert(Header { key: header::HOP_TRAIL, value: Some(trail.as_bytes()) })
    }

    /// Reads the envelope of a consumed record; a record without headers has none.
    pub fn from_message(message: &impl rdkafka::message::Message) -> Result<Self, EnvelopeError> {
        Self::from_headers(message.headers().ok_or(EnvelopeError::Missing(header::EVENT_ID))?)
    }

    /// Reads the envelope from a record's headers.
    pub fn from_headers(headers: &impl Headers) -> Result<Self, EnvelopeError> {
        let text = |name: &'static str| -> Result<Option<&str>, EnvelopeError> {
            match headers.iter().find(|h| h.key == name) {
                None => Ok(None),
                Some(h) => std::str::from_utf8(h.value.unwrap_or_default())
                    .map(Some)
                    .map_err(|_| EnvelopeError::Invalid { header: name, reason: "not UTF-8".into() }),
            }
        };
        let required = |name: &'static str| text(name)?.ok_or(EnvelopeError::Missing(name));
        let division = |name: &'static str, value: &str| {
            Division::parse(value)
                .map_err(|e: DivisionError| EnvelopeError::Invalid { header: name, reason: e.to_string() })
        };
        let event_id = Uuid::parse_str(required(header::EVENT_ID)?)
            .map_err(|e| EnvelopeError::Invalid { header: header::EVENT_ID, reason: e.to_string() })?;
        // The sinks order a key's events by the time in the id: an id without one cannot be
        // placed, and is refused here rather than taken for the oldest event.
        if event_id.get_version_num() != 7 {
            return Err(EnvelopeError::Invalid {
                header: header::EVENT_ID,
                reason: format!("version {} UUID; a UUIDv7 (time-ordered) is required", event_id.get_version_num()),
            });
        }
        let hop_trail = match text(header::HOP_TRAIL)? {
            None | Some("") => Vec::new(),
            Some(trail) => trail.split(',').map(|d| division(header::HOP_TRAIL, d)).collect::<Result<_, _>>()?,
        };
        Ok(Self {
            event_id,
            source_department: Department::parse(required(header::SOURCE_DEPARTMENT)?)
                .map_err(|e| EnvelopeError::Invalid { header: header::SOURCE_DEPARTMENT, reason: e.to_string() })?,
            origin_division: division(header::ORIGIN_DIVISION, required(header::ORIGIN_DIVISION)?)?,
            record_type: required(header::RECORD_TYPE)?.to_owned(),
            traceparent: required(header::TRACEPARENT)?.parse()?,
            hop_trail,
        })
    }
}

/// A record whose Kafka key is its natural business key (licence id, property unit number,
/// case number), so that every version of one thing lands in one partition, in order.
pub trait NaturalKey {
    /// The key bytes.
    fn natural_key(&self) -> &str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_and_without_a_trail() {
        let mut envelope = Envelope::new(Department::TAX, Division::parse("610921").unwrap(), "deed-tax-payment");
        let back = Envelope::from_headers(&envelope.to_headers()).unwrap();
        assert_eq!(back, envelope);
        envelope.hop_trail = vec![Division::parse("610921").unwrap(), Division::parse("610900").unwrap()];
        let back = Envelope::from_headers(&envelope.to_headers()).unwrap();
        assert_eq!(back, envelope);
        assert!(back.has_visited(Division::parse("610900").unwrap()));
        assert!(back.event_time_millis().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn an_event_id_without_a_time_is_refused_not_taken_for_the_oldest() {
        let mut envelope = Envelope::new(Department::TAX, Division::parse("610921").unwrap(), "deed-tax-payment");
        envelope.event_id = Uuid::new_v4();
        let refused = Envelope::from_headers(&envelope.to_headers()).unwrap_err();
        assert!(
            matches!(&refused, EnvelopeError::Invalid { header: header::EVENT_ID, reason } if reason.contains("UUIDv7")),
            "{refused}"
        );
    }

    #[test]
    fn traceparent_follows_w3c() {
        let parsed: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
        assert_eq!(parsed.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.parent_id, parsed.parent_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_header_is_named() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: header::EVENT_ID, value: Some(Uuid::now_v7().to_string().as_bytes()) });
        assert_eq!(Envelope::from_headers(&headers).unwrap_err(), EnvelopeError::Missing(header::SOURCE_DEPARTMENT));
    }
}
