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

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;

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

/// One use of personal data (a licence, a holder's licences, a dossier), in the
/// append-only, hash-chained use log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the entry before (64 zeros for the first).
    pub prev_hash: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The calling department.
    pub caller: String,
    /// The stated purpose (用证事由).
    pub purpose: String,
    /// What was done: `get`, `verify`, `holder`, `uses`, `dossier`.
    pub action: String,
    /// The licence or property unit concerned (the masked holder for a holder look-up that
    /// found nothing).
    pub subject: String,
    /// The outcome (`found`, `not_found`, `valid`, `revoked`, ...).
    pub result: String,
    /// SHA-256 over every field above, with `prev_hash`.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.seq.to_string().as_str(),
            &self.prev_hash,
            &self.at_ms.to_string(),
            &self.caller,
            &self.purpose,
            &self.action,
            &self.subject,
            &self.result,
        ] {
            // Length-prefixed, so that no two different entries hash the same bytes.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A chain check that found a broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The first entry whose hash or link does not hold.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// The topic every use-log entry is published to before its read is answered.
pub const USE_LOG_TOPIC: &str = govex_schemas::records::topics::USE_LOG;
/// The compacted topic of the chains' heads, one per use log.
pub const ANCHOR_TOPIC: &str = govex_schemas::records::topics::ANCHOR;

/// An entry as it travels on [`USE_LOG_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntryRecord {
    writer: String,
    seq: i64,
    prev_hash: String,
    at_ms: i64,
    caller: String,
    purpose: String,
    action: String,
    subject: String,
    result: String,
    hash: String,
}

impl EntryRecord {
    fn new(writer: &str, e: &AuditEntry) -> Self {
        Self {
            writer: writer.to_owned(),
            seq: e.seq as i64,
            prev_hash: e.prev_hash.clone(),
            at_ms: e.at_ms as i64,
            caller: e.caller.clone(),
            purpose: e.purpose.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            result: e.result.clone(),
            hash: e.hash.clone(),
        }
    }

    fn entry(self) -> AuditEntry {
        AuditEntry {
            seq: self.seq as u64,
            prev_hash: self.prev_hash,
            at_ms: self.at_ms as u64,
            caller: self.caller,
            purpose: self.purpose,
            action: self.action,
            subject: self.subject,
            result: self.result,
            hash: self.hash,
        }
    }
}

/// The head of a use log at one moment, as [`ANCHOR_TOPIC`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The use log.
    pub writer: String,
    /// The head's sequence number.
    pub seq: i64,
    /// The head's hash.
    pub hash: String,
    /// When the head entry was written.
    pub at_ms: i64,
    /// When the anchor was published.
    pub anchored_at_ms: i64,
}

fn schema_text(topic: &str) -> &'static str {
    govex_schemas::bundled_schemas().find(|s| s.topic == topic).map(|s| s.text).unwrap_or_default()
}

use govex_schemas::zone::now_ms;

fn io_error(message: String) -> sled::Error {
    sled::Error::Io(std::io::Error::other(message))
}

/// Where a use log is replicated: the node's producer and the two topics' encoders.
pub struct Replication {
    producer: govex_bus::Producer,
    writer: String,
    origin: govex_schemas::Division,
    entries: govex_bus::Encoder,
    anchors: govex_bus::Encoder,
    /// One publisher at a time: concurrent readers share one round of acknowledgements.
    publishing: tokio::sync::Mutex<()>,
}

impl Replication {
    /// Replication of the use log named `writer` to `bus`, with the topics' schemas
    /// registered in `registry`.
    ///
    /// It has a producer of its own that sends at once (`linger.ms` 0): every entry holds
    /// up a read's answer, where the node's producer lingers to fill batches. Its metrics
    /// are not exported (the node's producer's are).
    pub async fn new(
        bus: &govex_bus::Bus,
        registry: &govex_bus::RegistryClient,
        writer: String,
        origin: govex_schemas::Division,
    ) -> Result<Self, ReplicationError> {
        let config = govex_bus::config::BusConfig { linger_ms: 0, ..bus.config().clone() };
        let producer = govex_bus::Producer::new(&config, bus.bootstrap_servers(), &govex_bus::Metrics::new())
            .map_err(govex_bus::BusError::Client)?;
        let entries =
            govex_bus::Encoder::register(registry, &format!("{USE_LOG_TOPIC}-value"), schema_text(USE_LOG_TOPIC))
                .await?;
        let anchors =
            govex_bus::Encoder::register(registry, &format!("{ANCHOR_TOPIC}-value"), schema_text(ANCHOR_TOPIC)).await?;
        Ok(Self { producer, writer, origin, entries, anchors, publishing: Default::default() })
    }

    fn outgoing(&self, topic: &str, key: String, payload: Vec<u8>, record_type: &str) -> govex_bus::Outgoing {
        let envelope = govex_bus::Envelope::new(govex_schemas::Department::PLATFORM, self.origin, record_type);
        govex_bus::Outgoing::new(topic, key, payload, &envelope)
    }
}

/// Why the use log cannot be replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The topics' schemas could not be registered.
    #[error("the use-log topics' schemas cannot be registered: {0}")]
    Schema(#[from] govex_bus::CodecError),
    /// The producer could not be made.
    #[error("the use log's producer cannot be created: {0}")]
    Client(#[from] govex_bus::BusError),
}

/// The key of entry `seq` of `writer` on [`USE_LOG_TOPIC`]: one per entry, so that
/// compaction keeps every one.
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
}

impl UseLog {
    /// The use log in `db`, flushed through `group_flush` (the one of `db`).
    pub fn open(db: &sled::Db, group_flush: Arc<GroupFlush>) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            audit: db.open_tree("audit")?,
            uses: db.open_tree("uses")?,
            meta: db.open_tree("audit-meta")?,
            replication: Default::default(),
            audit_lock: Default::default(),
            group_flush,
        })
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
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.group_flush.flush().await?;
        if let Some(replication) = self.replication.get() {
            self.publish_pending(replication).await?;
        }
        Ok(())
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
    /// and `govex audit verify` must look at it. Returns how many entries were restored.
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
                        head.as_ref().map_or((1, "0".repeat(64)), |h| (h.seq + 1, h.hash.clone()));
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
                    head = Some(entry.clone());
                    restored += 1;
                }
            }
        }
        if let Some(last) = replicated.last() {
            if last.seq > self.published()? {
                self.meta.insert("published", &last.seq.to_be_bytes())?;
            }
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
            None => (1, "0".repeat(64)),
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

    /// Walks the whole chain; the first entry whose hash or link does not hold.
    pub fn verify_chain(&self) -> Result<(u64, Option<BrokenLink>), sled::Error> {
        let mut previous_hash = "0".repeat(64);
        let mut expected_seq = 1;
        for item in self.audit.iter() {
            let (key, bytes) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(&bytes) else {
                return Ok((expected_seq - 1, Some(BrokenLink { seq, reason: "the entry does not parse".into() })));
            };
            let broken = |reason: String| Ok((expected_seq - 1, Some(BrokenLink { seq, reason })));
            if seq != expected_seq || entry.seq != seq {
                return broken(format!(
                    "expected entry {expected_seq}, found {seq} (an entry was removed or inserted)"
                ));
            }
            if entry.prev_hash != previous_hash {
                return broken("its link to the entry before does not match".into());
            }
            if entry.compute_hash() != entry.hash {
                return broken("its content does not match its hash (the entry was altered)".into());
            }
            previous_hash = entry.hash;
            expected_seq += 1;
        }
        Ok((expected_seq - 1, None))
    }

    /// What is wrong with a chain given as entries (a replicated copy): its first broken
    /// link, if any.
    pub fn chain_findings(entries: &[AuditEntry]) -> Vec<String> {
        let mut previous = "0".repeat(64);
        for (i, entry) in entries.iter().enumerate() {
            let expected = i as u64 + 1;
            let reason = if entry.seq != expected {
                Some(format!("expected entry {expected}, found {}", entry.seq))
            } else if entry.prev_hash != previous {
                Some("its link to the entry before does not match".to_owned())
            } else if entry.compute_hash() != entry.hash {
                Some("its content does not match its hash".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return vec![format!("BROKEN at replicated entry {}: {reason}", entry.seq)];
            }
            previous = entry.hash.clone();
        }
        Vec::new()
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
        for entry in other.audit.iter() {
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

/// This use log's entries on [`USE_LOG_TOPIC`], in order (each sequence number once), and
/// its latest anchor on [`ANCHOR_TOPIC`], read from the beginning to the end offsets.
pub async fn replicated(
    bus: &govex_bus::Bus,
    registry: &govex_bus::RegistryClient,
    writer: &str,
) -> Result<(Vec<AuditEntry>, Option<Anchor>), String> {
    let parse = |topic: &str| {
        apache_avro::Schema::parse_str(schema_text(topic)).map_err(|e| format!("the bundled schema of {topic}: {e}"))
    };
    let entries_decoder = govex_bus::Decoder::new(registry.clone(), &parse(USE_LOG_TOPIC)?);
    let anchors_decoder = govex_bus::Decoder::new(registry.clone(), &parse(ANCHOR_TOPIC)?);
    let prefix = format!("{writer}\0");
    let mut entries = std::collections::BTreeMap::new();
    let mut records = bus.read_to_end(USE_LOG_TOPIC, &Default::default()).await.map_err(|e| e.to_string())?;
    while let Some(message) = records.recv().await {
        let message = message.map_err(|e| e.to_string())?;
        if !message.key().is_some_and(|k| k.starts_with(prefix.as_bytes())) {
            continue;
        }
        let record: EntryRecord =
            entries_decoder.decode_into(message.payload().unwrap_or_default()).await.map_err(|e| {
                format!("{USE_LOG_TOPIC} partition {} offset {}: {e}", message.partition(), message.offset())
            })?;
        entries.insert(record.seq, record.entry());
    }
    let mut anchor = None;
    let mut records = bus.read_to_end(ANCHOR_TOPIC, &Default::default()).await.map_err(|e| e.to_string())?;
    while let Some(message) = records.recv().await {
        let message = message.map_err(|e| e.to_string())?;
        if message.key() != Some(writer.as_bytes()) {
            continue;
        }
        // One key, one partition: the last read is the latest.
        let record: Anchor = anchors_decoder.decode_into(message.payload().unwrap_or_default()).await.map_err(|e| {
            format!("{ANCHOR_TOPIC} partition {} offset {}: {e}", message.partition(), message.offset())
        })?;
        anchor = Some(record);
    }
    Ok((entries.into_values().collect(), anchor))
}

/// What comparing a chain on disk with its replicated copy and its anchor found; empty when
/// they agree. Each finding names the entry and what happened to it.
pub fn compare(local: &[AuditEntry], replicated: &[AuditEntry], anchor: Option<&Anchor>) -> Vec<String> {
    let mut findings = Vec::new();
    let local_head = local.last().map_or(0, |e| e.seq);
    let by_seq: std::collections::HashMap<u64, &AuditEntry> = local.iter().map(|e| (e.seq, e)).collect();
    if let Some(rewritten) = replicated.iter().find(|r| by_seq.get(&r.seq).is_some_and(|l| l.hash != r.hash)) {
        findings.push(format!(
            "REWRITTEN: entry {} on disk differs from its replicated copy (and so may every entry after it)",
            rewritten.seq
        ));
    }
    let replicated_head = replicated.last().map_or(0, |e| e.seq);
    if replicated_head > local_head {
        findings.push(format!(
            "TRUNCATED or ROLLED BACK: the disk ends at entry {local_head}; the replicated log holds entries up to {replicated_head} ({} missing)",
            replicated_head - local_head
        ));
    }
    if let Some(anchor) = anchor {
        let anchored = anchor.seq as u64;
        match by_seq.get(&anchored) {
            None if anchored > local_head => findings.push(format!(
                "ROLLED BACK: the anchor published at {} ms names entry {anchored}; the disk ends at entry {local_head}",
                anchor.anchored_at_ms
            )),
            Some(entry) if entry.hash != anchor.hash => {
                findings.push(format!("REWRITTEN: entry {anchored} on disk does not carry the anchored hash"))
            }
            _ => {}
        }
    }
    findings
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
    Ok(purpose.to_owned())
}

/// The 400 answer for a missing or too long purpose.
pub fn purpose_problem(rule: &str, message: &str) -> axum::response::Response {
    let errors = serde_json::json!([{ "pointer": "/purpose", "rule": rule, "message": message }]);
    let title = if rule == "purpose-too-long" { "Purpose too long" } else { "Purpose required" };
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
        assert!(UseLog::chain_findings(&rewritten).is_empty(), "intact by itself");
        let findings = compare(&rewritten, &all, Some(&anchor));
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings[0].starts_with("REWRITTEN: entry 3 on disk"), "{findings:?}");
        assert!(findings[1].starts_with("REWRITTEN: entry 6 on disk does not carry the anchored hash"), "{findings:?}");
    }

    #[test]
    fn a_replicated_chain_is_walked_like_the_one_on_disk() {
        let (_dir, log) = log_of(4);
        let all = log.entries().unwrap();
        assert!(UseLog::chain_findings(&all).is_empty());
        let mut gap = all.clone();
        gap.remove(1);
        assert_eq!(UseLog::chain_findings(&gap), ["BROKEN at replicated entry 3: expected entry 2, found 3"]);
        let mut altered = all.clone();
        altered[2].result = "revoked".into();
        assert_eq!(
            UseLog::chain_findings(&altered),
            ["BROKEN at replicated entry 3: its content does not match its hash"]
        );
        let mut relinked = all.clone();
        relinked[3].prev_hash = "0".repeat(64);
        relinked[3].hash = relinked[3].compute_hash();
        assert_eq!(
            UseLog::chain_findings(&relinked),
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
    }
}
