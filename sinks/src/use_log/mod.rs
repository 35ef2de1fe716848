//! The use log (用证/用数记录): every read of personal data, whichever API served it
//! (licences, holders, verifications, use-log reads, dossiers), with the caller, the stated
//! purpose and the outcome, in an append-only chain where each entry holds the hash of the
//! one before, so that `govex audit verify` finds an entry altered, removed or inserted.
//!
//! It lives in the e-licence store's sled database (`data_dir/elicense`), trees:
//!
//! | tree    | key                                  | value                 |
//! |---------|--------------------------------------|-----------------------|
//! | `audit` | sequence (u64 BE)                    | [`AuditEntry`] (JSON) |
//! | `uses`  | subject `\0` sequence (u64 BE)       | empty                 |
//!
//! An entry is on disk before the read it records is answered, and, once the node replicates
//! its log ([`UseLog::replicate`]), on the Kafka topic `gov.audit.use-log.v1` too: losing
//! the volume loses no answered use, and a node that starts on an empty or older volume
//! restores its chain from the topic ([`UseLog::restore`]). The chain's head is anchored in
//! the compacted `gov.audit.anchor.v1` regularly and at shutdown (and forwarded to the parent
//! level by the bridge), so that a rolled-back, truncated or rewritten log is found by
//! `govex audit verify` ([`compare`]).

pub mod chain;
pub mod replication;
pub mod usage;

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use sled::Transactional;

pub use chain::{compare, Anchor, AuditEntry, BrokenLink};
use replication::EntryRecord;
pub use replication::{replicated, Replication, ReplicationError, ANCHOR_TOPIC, USE_LOG_TOPIC};

use crate::flush::GroupFlush;

/// The use log outside the node's disk: every entry is published to `gov.audit.use-log.v1`
/// before the read it records is answered, and the chain's head to the compacted
/// `gov.audit.anchor.v1` regularly and at shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The name of this process's use log in the topics: stable across restarts and lost
    /// volumes (a StatefulSet pod's name), different for every e-licence replica. Default:
    /// `<division>-<HOSTNAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Seconds between anchors of the chain's head.
    #[serde(default = "default_anchor_interval_secs")]
    pub anchor_interval_secs: u64,
}

fn default_anchor_interval_secs() -> u64 {
    30
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { writer: None, anchor_interval_secs: default_anchor_interval_secs() }
    }
}

impl AuditConfig {
    /// The name of this process's use log (see [`AuditConfig::writer`]).
    pub fn writer(&self, division: govex_schemas::Division) -> String {
        self.writer.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into());
            format!("{division}-{host}")
        })
    }
}

/// The most characters a stated purpose may have.
pub const MAX_PURPOSE_CHARS: usize = 200;

/// What a use of personal data was: the route that answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseAction {
    /// A licence read (`GET /v1/licences/{id}`).
    Get,
    /// A holder's licences listed (one entry per licence shown).
    Holder,
    /// A licence verified.
    Verify,
    /// A licence's uses listed.
    Uses,
    /// A property unit's dossier read.
    Dossier,
    /// A record of a catalogued resource read from the shared view.
    Resource,
    /// A subscription filed, decided or revoked (the result is its new state).
    Subscription,
    /// An objection raised or resolved (the result is its new outcome).
    Objection,
    /// A dead letter shown to a steward or put back (`shown`, `replayed`).
    DeadLetter,
    /// A backup of the node's stores taken by an operator (`GET /v1/backup`): every record
    /// the process keeps, read at once.
    Backup,
}

impl UseAction {
    /// The name the log's entries carry (and the chain hashes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Holder => "holder",
            Self::Verify => "verify",
            Self::Uses => "uses",
            Self::Dossier => "dossier",
            Self::Resource => "resource",
            Self::Subscription => "subscription",
            Self::Objection => "objection",
            Self::DeadLetter => "dead-letter",
            Self::Backup => "backup",
        }
    }
}

/// One use to log: who, why, what, of which subject (a licence id, a masked holder, a unit),
/// and what the answer was (`found`, `not_found`, a verdict, `listed`).
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    /// The caller's department.
    pub caller: &'a str,
    /// The purpose the caller stated.
    pub purpose: &'a str,
    /// The route.
    pub action: UseAction,
    /// What was read.
    pub subject: &'a str,
    /// The answer.
    pub result: &'a str,
}

use govex_schemas::zone::now_ms;

fn io_error(message: String) -> sled::Error {
    sled::Error::Io(std::io::Error::other(message))
}

fn entry_key(writer: &str, seq: u64) -> String {
    format!("{writer}\0{seq:020}")
}

/// The hash-chained use log. Cheap to clone.
#[derive(Clone)]
pub struct UseLog {
    db: sled::Db,
    audit: sled::Tree,
    uses: sled::Tree,
    /// `published`: the last sequence number the topic acknowledged.
    meta: sled::Tree,
    replication: Arc<std::sync::OnceLock<Arc<Replication>>>,
    /// Appends to the chain are serialised: each needs the hash of the one before.
    audit_lock: Arc<parking_lot::Mutex<()>>,
    /// Concurrent readers share fsyncs (with the store whose database holds the log).
    group_flush: Arc<GroupFlush>,
    /// The reads counted by resource, department and purpose (from the entries themselves).
    usage: Arc<usage::Usage>,
}

impl UseLog {
    /// The use log in `db`, flushed through `group_flush` (the one of `db`).
    pub fn open(db: &sled::Db, group_flush: Arc<GroupFlush>) -> Result<Self, sled::Error> {
        let log = Self {
            db: db.clone(),
            audit: db.open_tree("audit")?,
            uses: db.open_tree("uses")?,
            meta: db.open_tree("audit-meta")?,
            replication: Default::default(),
            audit_lock: Default::default(),
            group_flush,
            usage: Default::default(),
        };
        // Entries appended from now on are counted as they come; those already here, by
        // `count_past_usage`, which a node runs in the background (a tool opening the log
        // for a check should not read the whole chain for statistics it never shows).
        log.usage.set_past(log.head()?.map_or(0, |head| head.seq));
        Ok(log)
    }

    /// The reads this log holds, counted (see [`usage`]).
    pub fn usage(&self) -> &usage::Usage {
        &self.usage
    }

    /// Counts the entries that were in the log when it was opened, one at a time (the chain
    /// may be long); the counts are complete when this returns.
    pub fn count_past_usage(&self) -> Result<(), sled::Error> {
        for item in govex_schemas::store::scan_range(&self.audit, ..=self.usage.past().to_be_bytes()) {
            let (_, bytes) = item?;
            let entry: AuditEntry = serde_json::from_slice(&bytes).map_err(|e| io_error(e.to_string()))?;
            self.usage.count(&entry);
        }
        Ok(())
    }

    /// The use log in the sled database at `dir` (for tools and tests; a node opens it with
    /// its e-licence store).
    pub fn open_dir(dir: &Path) -> Result<Self, sled::Error> {
        let db = govex_schemas::store::open_sled(dir)?;
        let group_flush = Arc::new(GroupFlush::new(db.clone()));
        Self::open(&db, group_flush)
    }

    /// Makes every entry so far durable: on disk, and on the use-log topic once the log is
    /// replicated. A read is answered only after this.
    ///
    /// The disk and the topic are written side by side: a copy of each is what makes an
    /// entry durable, neither depends on the other, and waiting for one before starting the
    /// other put an fsync and a broker round trip end to end in every answer.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        let replicated = async {
            match self.replication.get() {
                Some(replication) => self.publish_pending(replication).await,
                None => Ok(()),
            }
        };
        let (on_disk, on_topic) = tokio::join!(self.group_flush.flush(), replicated);
        on_disk.and(on_topic)
    }

    /// Replicates this log from now on: every flush publishes the entries not yet on the
    /// topic and waits for the broker.
    pub fn replicate(&self, replication: Arc<Replication>) {
        let _ = self.replication.set(replication);
    }

    /// The last sequence number the topic acknowledged.
    fn published(&self) -> Result<u64, sled::Error> {
        Ok(self.meta.get("published")?.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map_or(0, u64::from_be_bytes))
    }

    /// The chain's head (its last entry).
    pub fn head(&self) -> Result<Option<AuditEntry>, sled::Error> {
        Ok(self.audit.last()?.and_then(|(_, bytes)| serde_json::from_slice(&bytes).ok()))
    }

    async fn publish_pending(&self, replication: &Replication) -> Result<(), sled::Error> {
        let _one_at_a_time = replication.publishing.lock().await;
        let published = self.published()?;
        let mut pending = Vec::new();
        let mut last = published;
        for item in self.audit.range((published + 1).to_be_bytes()..) {
            let (_, bytes) = item?;
            let entry: AuditEntry = serde_json::from_slice(&bytes).map_err(|e| io_error(e.to_string()))?;
            let payload = replication
                .entries
                .encode(&EntryRecord::new(&replication.writer, &entry))
                .map_err(|e| io_error(e.to_string()))?;
            let key = entry_key(&replication.writer, entry.seq);
            pending.push(
                replication.producer.enqueue(replication.outgoing(USE_LOG_TOPIC, key, payload, "use-log-entry")).await,
            );
            last = entry.seq;
        }
        for delivery in futures::future::join_all(pending).await {
            delivery.map_err(|e| io_error(format!("the use log could not be replicated: {e}")))?;
        }
        if last > published {
            // Not flushed on its own: after a crash the entries are published again, under the
            // same keys, and a restore takes each sequence number once.
            self.meta.insert("published", &last.to_be_bytes())?;
        }
        Ok(())
    }

    /// Publishes the chain's head to [`ANCHOR_TOPIC`] and waits for the broker; `None` when
    /// the log is empty or not replicated.
    pub async fn anchor(&self) -> Result<Option<Anchor>, sled::Error> {
        let (Some(replication), Some(head)) = (self.replication.get(), self.head()?) else { return Ok(None) };
        // Only a head that is on the use-log topic is anchored.
        self.publish_pending(replication).await?;
        let anchor = Anchor {
            writer: replication.writer.clone(),
            seq: head.seq as i64,
            hash: head.hash,
            at_ms: head.at_ms as i64,
            anchored_at_ms: now_ms() as i64,
        };
        let payload = replication.anchors.encode(&anchor).map_err(|e| io_error(e.to_string()))?;
        let outgoing = replication.outgoing(ANCHOR_TOPIC, replication.writer.clone(), payload, "use-log-anchor");
        replication
            .producer
            .publish(outgoing)
            .await
            .map_err(|e| io_error(format!("the anchor could not be published: {e}")))?;
        Ok(Some(anchor))
    }

    /// Brings the chain on disk up to `replicated` (this log's entries from the topic, in
    /// order): entries the disk lacks (a lost or rolled-back volume) are written back. An
    /// entry the disk holds with another hash, or a gap, is refused: the log was rewritten
    /// and `govex audit verify` must look at it. Entries the topic lacks are written back to it
    /// by the next flush. Returns how many entries were restored.
    pub fn restore(&self, replicated: &[AuditEntry]) -> Result<u64, RestoreError> {
        let _guard = self.audit_lock.lock();
        let mut head = self.head()?;
        let mut restored = 0;
        for entry in replicated {
            match self.audit.get(entry.seq.to_be_bytes())? {
                Some(bytes) => {
                    let local: AuditEntry = serde_json::from_slice(&bytes).map_err(|e| io_error(e.to_string()))?;
                    if local.hash != entry.hash {
                        return Err(RestoreError::Contradiction { seq: entry.seq });
                    }
                }
                None => {
                    let (expected_seq, expected_prev) =
                        head.as_ref().map_or((1, chain::GENESIS.to_owned()), |h| (h.seq + 1, h.hash.clone()));
                    if entry.seq != expected_seq
                        || entry.prev_hash != expected_prev
                        || entry.compute_hash() != entry.hash
                    {
                        return Err(RestoreError::Contradiction { seq: entry.seq });
                    }
                    let use_key = [entry.subject.as_bytes(), &[0], &entry.seq.to_be_bytes()].concat();
                    let value = to_json(entry)?;
                    self.audit.insert(entry.seq.to_be_bytes(), value)?;
                    self.uses.insert(use_key, &[])?;
                    self.usage.count(entry);
                    head = Some(entry.clone());
                    restored += 1;
                }
            }
        }
        let on_topic = replicated.last().map_or(0, |last| last.seq);
        let published = self.published()?;
        if on_topic != published {
            // More on the topic: the disk is older (a lost volume, a backup restored). Less: the
            // topic lost entries it had taken (a cluster lost, a backup restored onto a new
            // one); the next flush writes them back (the topic keeps each sequence number once).
            if on_topic < published {
                tracing::warn!(published, on_topic, "the use-log topic lacks entries it took; writing them back");
            }
            self.meta.insert("published", &on_topic.to_be_bytes())?;
        }
        self.db.flush()?;
        Ok(restored)
    }

    /// Appends one use to the chain and returns once it is on disk: the API answers only
    /// after this, so a use that was answered is never lost to a crash. Concurrent callers
    /// share one flush ([`GroupFlush`](crate::flush::GroupFlush)).
    pub async fn log_use(&self, used: Use<'_>) -> Result<AuditEntry, sled::Error> {
        let entry = self.record_use(used)?;
        self.flush().await?;
        Ok(entry)
    }

    /// Appends one use to the chain and returns it (written, not yet flushed: see
    /// [`LicenceStore::log_use`]).
    pub fn record_use(&self, used: Use<'_>) -> Result<AuditEntry, sled::Error> {
        let Use { caller, purpose, action, subject, result } = used;
        let action = action.as_str();
        let _guard = self.audit_lock.lock();
        let (seq, prev_hash) = match self.audit.last()? {
            Some((_, bytes)) => {
                let last: AuditEntry =
                    serde_json::from_slice(&bytes).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
                (last.seq + 1, last.hash)
            }
            None => (1, chain::GENESIS.to_owned()),
        };
        let at_ms = now_ms();
        let mut entry = AuditEntry {
            seq,
            prev_hash,
            at_ms,
            caller: caller.to_owned(),
            purpose: purpose.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            result: result.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let value = to_json(&entry)?;
        let use_key = [subject.as_bytes(), &[0], &seq.to_be_bytes()].concat();
        (&self.audit, &self.uses)
            .transaction(|(audit, uses)| {
                audit.insert(&seq.to_be_bytes(), value.as_slice())?;
                uses.insert(use_key.as_slice(), &[])?;
                Ok(())
            })
            .map_err(crate::elicense::store::sled_error)?;
        self.usage.count(&entry);
        Ok(entry)
    }

    /// The uses of one licence, oldest first.
    pub fn uses_of(&self, licence_id: &str) -> Result<Vec<AuditEntry>, sled::Error> {
        let mut prefix = licence_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.uses.scan_prefix(&prefix) {
            let (key, _) = entry?;
            if let Some(bytes) = self.audit.get(&key[prefix.len()..])? {
                if let Ok(entry) = serde_json::from_slice(&bytes) {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// Walks the whole chain on disk: how many entries hold, and the first whose hash or link
    /// does not.
    pub fn verify_chain(&self) -> Result<(u64, Option<BrokenLink>), sled::Error> {
        chain::walk(govex_schemas::store::scan(&self.audit).map(|item| {
            let (key, bytes) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            Ok((seq, serde_json::from_slice::<AuditEntry>(&bytes).ok()))
        }))
    }

    /// Every entry on disk, in order (for comparing with the replicated copy).
    pub fn entries(&self) -> Result<Vec<AuditEntry>, sled::Error> {
        self.audit
            .iter()
            .values()
            .map(|v| v.map(|b| serde_json::from_slice(&b).map_err(|e| io_error(e.to_string())))?)
            .collect()
    }

    /// Copies the use log of `other` into this store (a rebuilt store keeps the log: it is
    /// not in the topic, so it cannot be rebuilt).
    pub fn copy_use_log_from(&self, other: &UseLog) -> Result<u64, sled::Error> {
        let mut copied = 0;
        for entry in govex_schemas::store::scan(&other.audit) {
            let (key, value) = entry?;
            self.audit.insert(key, value)?;
            copied += 1;
        }
        for entry in other.uses.iter() {
            let (key, value) = entry?;
            self.uses.insert(key, value)?;
        }
        if let Some(published) = other.meta.get("published")? {
            self.meta.insert("published", published)?;
        }
        self.db.flush()?;
        Ok(copied)
    }

    /// The raw audit tree, for tools that must show or (in tests) tamper with entries.
    pub fn audit_tree(&self) -> &sled::Tree {
        &self.audit
    }
}

/// Why a chain could not be brought up to its replicated copy.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The disk and the topic disagree at an entry.
    #[error("the use log on disk contradicts its copy on {USE_LOG_TOPIC} at entry {seq}: it was rolled back and rewritten, or the topic holds another node's log under this name; run govex audit verify")]
    Contradiction {
        /// The entry.
        seq: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sled::Error),
}

/// The stated purpose of a read (用证事由/用数事由), checked: present, not blank, at most
/// [`MAX_PURPOSE_CHARS`] characters. The error is the violation to answer with.
pub fn checked_purpose(purpose: Option<&str>) -> Result<String, (&'static str, String)> {
    let purpose = purpose.map(str::trim).unwrap_or_default();
    // A purpose of nothing visible (zero-width spaces, control characters) states nothing.
    let invisible = |c: char| c.is_whitespace() || c.is_control() || is_format_character(c);
    if purpose.chars().all(invisible) {
        return Err(("purpose-required", "state the purpose of the use (用证事由)".to_owned()));
    }
    if purpose.chars().count() > MAX_PURPOSE_CHARS {
        return Err(("purpose-too-long", format!("at most {MAX_PURPOSE_CHARS} characters")));
    }
    // A purpose is written into the use log and shown to auditors and owners: one line of
    // text, with nothing that could rewrite a terminal or forge a second log line.
    if purpose.chars().any(char::is_control) {
        return Err(("purpose-control-characters", "one line of text, without control characters".to_owned()));
    }
    Ok(purpose.to_owned())
}

/// The stated purpose, checked, or the 400 answer that names the rule.
pub fn stated_purpose(purpose: Option<&str>) -> Result<String, govex_http::problem::Refused> {
    checked_purpose(purpose).map_err(|(rule, message)| purpose_problem(rule, &message).into())
}

/// What a read of personal data carries besides its path: the caller's bearer token, the
/// purpose it states (`?purpose=`) and the licence API's `?type=` filter. Nothing is checked
/// here: each route checks in its own order (a resource the caller may not read is refused
/// before its purpose is looked at).
#[derive(Deserialize)]
pub struct ReadRequest {
    /// The `Authorization` header, if it is text.
    #[serde(skip)]
    pub authorization: Option<String>,
    /// `?purpose=`.
    pub purpose: Option<String>,
    /// `?type=`: a licence type code.
    #[serde(rename = "type")]
    pub type_code: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReadRequest {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let axum::extract::Query(mut read) = axum::extract::Query::<ReadRequest>::from_request_parts(parts, state)
            .await
            .map_err(|e| e.into_response())?;
        let authorization = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        read.authorization = authorization.map(str::to_owned);
        Ok(read)
    }
}

/// The 400 answer for a missing, too long or multi-line purpose.
pub fn purpose_problem(rule: &str, message: &str) -> axum::response::Response {
    let errors = serde_json::json!([{ "pointer": "/purpose", "rule": rule, "message": message }]);
    let title = match rule {
        "purpose-too-long" => "Purpose too long",
        "purpose-control-characters" => "Purpose not one line of text",
        _ => "Purpose required",
    };
    govex_http::problem::problem(
        axum::http::StatusCode::BAD_REQUEST,
        "purpose",
        title,
        "every use of personal data states its purpose",
        errors,
    )
}

/// Unicode format characters that show nothing: zero-width spaces and joiners, direction
/// marks and overrides, the byte-order mark.
pub fn is_format_character(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// An entry as the store keeps it. Serializing a struct of strings and numbers does not fail;
/// if it ever did, the write fails and nothing (no empty value) is stored.
fn to_json(entry: &AuditEntry) -> Result<Vec<u8>, sled::Error> {
    serde_json::to_vec(entry).map_err(|e| sled::Error::Unsupported(format!("a use-log entry does not serialize: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A use to log, as the tests make them.
    fn used<'a>(caller: &'a str, purpose: &'a str, action: UseAction, subject: &'a str, result: &'a str) -> Use<'a> {
        Use { caller, purpose, action, subject, result }
    }

    #[test]
    fn tampering_with_the_use_log_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = UseLog::open_dir(dir.path()).unwrap();
        for n in 0..5 {
            store
                .record_use(used("provident-fund", "购房提取核验", UseAction::Verify, &format!("L{n}"), "valid"))
                .unwrap();
        }
        assert_eq!(store.verify_chain().unwrap(), (5, None));
        // Change the purpose of entry 3 without fixing its hash.
        let key = 3u64.to_be_bytes();
        let mut entry: AuditEntry = serde_json::from_slice(&store.audit_tree().get(key).unwrap().unwrap()).unwrap();
        entry.purpose = "另有用途".into();
        store.audit_tree().insert(key, serde_json::to_vec(&entry).unwrap()).unwrap();
        let (intact, broken) = store.verify_chain().unwrap();
        assert_eq!(intact, 2);
        assert_eq!(broken.unwrap().seq, 3);
        // Recomputing its hash moves the break to the next link.
        entry.hash = entry.compute_hash();
        store.audit_tree().insert(key, serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(store.verify_chain().unwrap().1.unwrap().seq, 4);
        // Removing an entry is found too.
        store.audit_tree().remove(2u64.to_be_bytes()).unwrap();
        assert_eq!(store.verify_chain().unwrap().1.unwrap().seq, 3);
    }

    #[test]
    fn uses_are_listed_by_subject_and_a_copy_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = UseLog::open_dir(&dir.path().join("a")).unwrap();
        for subject in ["L1", "L2", "L1"] {
            log.record_use(Use {
                caller: "tax", purpose: "核验", action: UseAction::Verify, subject, result: "valid"
            })
            .unwrap();
        }
        let seqs: Vec<u64> = log.uses_of("L1").unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert!(log.uses_of("L").unwrap().is_empty(), "a prefix of a subject is not the subject");
        let copy = UseLog::open_dir(&dir.path().join("b")).unwrap();
        assert_eq!(copy.copy_use_log_from(&log).unwrap(), 3);
        assert_eq!(copy.verify_chain().unwrap(), (3, None));
        assert_eq!(copy.uses_of("L2").unwrap().len(), 1);
    }

    #[test]
    fn an_entry_that_does_not_parse_or_is_renumbered_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = UseLog::open_dir(dir.path()).unwrap();
        for n in 0..4 {
            log.record_use(used("tax", "核验", UseAction::Verify, &format!("L{n}"), "valid")).unwrap();
        }
        // Entry 2 claims to be entry 5, with a hash that fits its content.
        let key = 2u64.to_be_bytes();
        let mut entry: AuditEntry = serde_json::from_slice(&log.audit_tree().get(key).unwrap().unwrap()).unwrap();
        entry.seq = 5;
        entry.hash = entry.compute_hash();
        log.audit_tree().insert(key, serde_json::to_vec(&entry).unwrap()).unwrap();
        let (intact, broken) = log.verify_chain().unwrap();
        assert_eq!((intact, broken.unwrap().seq), (1, 2));
        // Entry 3 is not an entry at all.
        let dir = tempfile::tempdir().unwrap();
        let log = UseLog::open_dir(dir.path()).unwrap();
        for n in 0..4 {
            log.record_use(used("tax", "核验", UseAction::Verify, &format!("L{n}"), "valid")).unwrap();
        }
        log.audit_tree().insert(3u64.to_be_bytes(), b"not json".as_slice()).unwrap();
        let (intact, broken) = log.verify_chain().unwrap();
        let broken = broken.unwrap();
        assert_eq!((intact, broken.seq), (2, 3));
        assert_eq!(broken.reason, "the entry does not parse");
    }

    /// A log of `n` uses in a fresh directory.
    fn log_of(n: usize) -> (tempfile::TempDir, UseLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = UseLog::open_dir(dir.path()).unwrap();
        for i in 0..n {
            log.record_use(used("tax", "契税征收核验", UseAction::Verify, &format!("L{i}"), "valid")).unwrap();
        }
        (dir, log)
    }

    fn anchor_at(entry: &AuditEntry) -> Anchor {
        Anchor { writer: "w".into(), seq: entry.seq as i64, hash: entry.hash.clone(), at_ms: 0, anchored_at_ms: 0 }
    }

    #[test]
    fn a_chain_that_agrees_with_its_copy_and_anchor_has_no_findings_and_each_fault_is_named() {
        let (_dir, log) = log_of(6);
        let all = log.entries().unwrap();
        let anchor = anchor_at(&all[5]);
        assert!(compare(&all, &all, Some(&anchor)).is_empty());
        assert!(compare(&all[..4], &all[..4], Some(&anchor_at(&all[3]))).is_empty(), "an older anchor is fine");
        // Rolled back to 4 entries: the copy and the anchor both say so.
        let findings = compare(&all[..4], &all, Some(&anchor));
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(
            findings[0].starts_with("TRUNCATED or ROLLED BACK: the disk ends at entry 4")
                && findings[0].contains("(2 missing)")
        );
        assert!(findings[1].contains("names entry 6; the disk ends at entry 4"), "{findings:?}");
        // Only the anchor (the copy lost): still found.
        assert_eq!(compare(&all[..4], &[], Some(&anchor)).len(), 1);
        // Rewritten with fresh hashes from entry 3 on.
        let mut rewritten = all.clone();
        let mut previous = rewritten[1].hash.clone();
        for entry in &mut rewritten[2..] {
            entry.purpose = "另有用途".into();
            entry.prev_hash = previous.clone();
            entry.hash = entry.compute_hash();
            previous = entry.hash.clone();
        }
        assert!(chain::findings(&rewritten).is_empty(), "intact by itself");
        let findings = compare(&rewritten, &all, Some(&anchor));
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings[0].starts_with("REWRITTEN: entry 3 on disk"), "{findings:?}");
        assert!(findings[1].starts_with("REWRITTEN: entry 6 on disk does not carry the anchored hash"), "{findings:?}");
        // An entry removed from the middle of the disk is the walk's finding, not a rollback:
        // the anchor names an entry before the disk's head.
        let gap: Vec<AuditEntry> = all.iter().filter(|e| e.seq != 3).cloned().collect();
        assert!(compare(&gap, &[], Some(&anchor_at(&all[2]))).is_empty(), "the anchor's entry is older than the head");
    }

    #[test]
    fn a_replicated_chain_is_walked_like_the_one_on_disk() {
        let (_dir, log) = log_of(4);
        let all = log.entries().unwrap();
        assert!(chain::findings(&all).is_empty());
        let mut gap = all.clone();
        gap.remove(1);
        assert_eq!(
            chain::findings(&gap),
            ["BROKEN at replicated entry 3: expected entry 2, found 3 (an entry was removed or inserted)"]
        );
        let mut altered = all.clone();
        altered[2].result = "revoked".into();
        assert_eq!(
            chain::findings(&altered),
            ["BROKEN at replicated entry 3: its content does not match its hash (the entry was altered)"]
        );
        let mut relinked = all.clone();
        relinked[3].prev_hash = "0".repeat(64);
        relinked[3].hash = relinked[3].compute_hash();
        assert_eq!(
            chain::findings(&relinked),
            ["BROKEN at replicated entry 4: its link to the entry before does not match"]
        );
    }

    #[test]
    fn a_restore_fills_what_the_disk_lacks_and_refuses_a_contradiction() {
        let (_dir, full) = log_of(5);
        let replicated = full.entries().unwrap();
        // An empty disk, an older disk: both brought up to the copy, uses index included.
        let (_empty_dir, empty) = log_of(0);
        assert_eq!(empty.restore(&replicated).unwrap(), 5);
        assert_eq!(empty.entries().unwrap(), replicated);
        assert_eq!(empty.uses_of("L4").unwrap().len(), 1);
        assert_eq!(empty.restore(&replicated).unwrap(), 0, "a second restore changes nothing");
        let older = UseLog::open_dir(_empty_dir.path().join("older").as_path()).unwrap();
        older.restore(&replicated[..2]).unwrap();
        assert_eq!(older.restore(&replicated).unwrap(), 3);
        assert_eq!(older.verify_chain().unwrap(), (5, None));
        // A disk that went its own way: refused, naming the entry, and left as it was.
        let (_other_dir, other) = log_of(0);
        other.record_use(used("housing", "另有用途", UseAction::Get, "L0", "found")).unwrap();
        let refused = other.restore(&replicated).unwrap_err();
        assert!(matches!(refused, RestoreError::Contradiction { seq: 1 }), "{refused}");
        assert_eq!(other.entries().unwrap().len(), 1);
        // A copy with a gap or a forged entry past the disk's head is refused too.
        assert_eq!(empty.published().unwrap(), 5, "what came from the topic is not published again");
        let (_gap_dir, gap) = log_of(0);
        assert!(matches!(gap.restore(&replicated[1..]), Err(RestoreError::Contradiction { seq: 2 })));
        // Renumbered, but linked and hashed as if it belonged there.
        let mut renumbered = replicated[1].clone();
        renumbered.seq = 3;
        renumbered.hash = renumbered.compute_hash();
        let (_one_dir, one) = log_of(0);
        one.restore(&replicated[..1]).unwrap();
        assert!(matches!(one.restore(&[renumbered]), Err(RestoreError::Contradiction { seq: 3 })));
        let mut forged = replicated.clone();
        forged[4].subject = "L9".into();
        let (_forged_dir, target) = log_of(0);
        assert!(matches!(target.restore(&forged), Err(RestoreError::Contradiction { seq: 5 })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replicated_log_publishes_each_entry_once_and_reads_back_whole() {
        let broker = std::sync::Arc::new(govex_bus::embedded::EmbeddedBroker::start(1).unwrap());
        for topic in [USE_LOG_TOPIC, ANCHOR_TOPIC] {
            broker.create_topic(topic, 3, 1).unwrap();
        }
        let config = govex_bus::config::BusConfig { linger_ms: 0, ..Default::default() };
        let bus = govex_bus::Bus::on_embedded(&config, broker, &govex_bus::Metrics::new()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let registry = govex_bus::RegistryClient::local(govex_schemas::Registry::open(&dir.path().join("r")).unwrap());
        let division = govex_schemas::Division::parse("610921").unwrap();
        let replication = Replication::new(&bus, &registry, "w-1".into(), division).await.unwrap();
        let (_log_dir, log) = log_of(0);
        log.replicate(Arc::new(replication));
        for i in 0..3 {
            log.log_use(used("tax", "契税征收核验", UseAction::Verify, &format!("L{i}"), "valid")).await.unwrap();
        }
        log.record_use(used("tax", "契税征收核验", UseAction::Holder, "L9", "found")).unwrap();
        log.flush().await.unwrap();
        log.flush().await.unwrap();
        let anchor = log.anchor().await.unwrap().unwrap();
        let (copy, anchored) = replicated(&bus, &registry, "w-1").await.unwrap();
        assert_eq!(copy, log.entries().unwrap(), "every entry, in order");
        assert_eq!(anchored, Some(anchor.clone()));
        assert_eq!((anchor.seq, anchor.hash.as_str()), (4, copy[3].hash.as_str()));
        let on_topic: i64 = bus.high_watermarks(USE_LOG_TOPIC).await.unwrap().values().sum();
        assert_eq!(on_topic, 4, "each entry published once, however many flushes");
        assert_eq!(log.published().unwrap(), 4);
        let (others, none) = replicated(&bus, &registry, "w-2").await.unwrap();
        assert!(others.is_empty() && none.is_none(), "another writer's log is apart");
    }

    #[test]
    fn purposes_are_required_and_bounded() {
        assert_eq!(checked_purpose(None).unwrap_err().0, "purpose-required");
        assert_eq!(checked_purpose(Some("  ")).unwrap_err().0, "purpose-required");
        assert_eq!(checked_purpose(Some("\u{200B}\0")).unwrap_err().0, "purpose-required", "nothing visible");
        assert_eq!(checked_purpose(Some(" 购房提取 ")).unwrap(), "购房提取");
        let longest = "长".repeat(MAX_PURPOSE_CHARS);
        assert_eq!(checked_purpose(Some(&longest)).unwrap(), longest, "200 characters, not bytes");
        assert_eq!(checked_purpose(Some(&format!("{longest}长"))).unwrap_err().0, "purpose-too-long");
        assert_eq!(checked_purpose(Some("核验\n伪造的第二行")).unwrap_err().0, "purpose-control-characters");
        assert_eq!(checked_purpose(Some("核验\u{1b}[2J")).unwrap_err().0, "purpose-control-characters");
    }
}
