//! The registry's storage and rules: subjects, versions, schema ids, compatibility levels and
//! modes, in one sled tree, with Confluent Schema Registry's semantics.
//!
//! Keys are prefixed so that every change is one atomic sled batch:
//!
//! | key                                    | value                                   |
//! |----------------------------------------|-----------------------------------------|
//! | `id/` + id (u32 BE)                    | schema text                             |
//! | `canon/` + identity (below)            | id (u32 BE)                             |
//! | `ver/` + subject + `\0` + version (BE) | id (u32 BE), then 1 if soft-deleted     |
//! | `cfg/` + subject (empty = global)      | compatibility level name                |
//! | `mode/` + subject (empty = global)     | mode name                               |
//! | `meta/next_id`                         | next free id (u32 BE)                   |
//! | `meta/identity`                        | how `canon/` keys are made (`3`)        |
//! | `meta/log_offset`                      | next offset of the registry's topic to apply (i64 BE) |
//!
//! Every write is a list of [`Change`]s. A registry on its own applies them to this tree; a
//! registry that is a view of its Kafka topic ([`crate::journal`]) writes them to the topic,
//! and every view applies them from there, record by record, through the same
//! [`Registry::apply`]. So a view rebuilt from the topic is the store its writer had.
//!
//! A schema's identity is its Parsing Canonical Form followed by its whole JSON in a
//! canonical form (object keys sorted, no spacing): as in Confluent's registry, two schemas
//! that differ in a default, a `doc` or a record type's contract (a named check, a rule, the
//! department that sends it) are different versions, while spacing and key order are not.
//! Stores written another way are re-indexed when opened (the index is derived from the
//! `id/` entries).
//!
//! Invariants: an id never changes meaning (a schema with the same identity always has the
//! same id, in every subject, even after deletes); a subject's version numbers only grow;
//! nothing is stored when a request is refused.

use std::{path::Path, sync::Arc};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::{
    compat::{self, Compatibility},
    journal::{Change, Journal, Record},
};

/// Errors of the registry. Each maps to one Confluent status and error code in
/// [`crate::http`]; the messages follow Confluent's.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The schema text is not a valid Avro schema.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// No subject of that name has a (live) version.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but not at that version.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// No schema has that id.
    #[error("Schema {0} not found")]
    SchemaNotFound(u32),
    /// The schema is not registered under the subject.
    #[error("Schema not found")]
    SchemaNotInSubject,
    /// A soft delete of a subject already soft-deleted.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject not soft-deleted first.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// A soft delete of a version already soft-deleted.
    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// A permanent delete of a version not soft-deleted first.
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },
    /// The subject has no compatibility level of its own.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    /// The subject has no mode of its own.
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotConfigured(String),
    /// The schema breaks the subject's compatibility level.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", reasons.join(", "))]
    Incompatible {
        /// The subject.
        subject: String,
        /// Every reason, with its version and location.
        reasons: Vec<String>,
    },
    /// A version that is neither a positive number nor `latest`/`-1`.
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// An unknown compatibility level.
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel(String),
    /// An unknown mode.
    #[error("Invalid mode. Valid values are READWRITE, READONLY and IMPORT")]
    InvalidMode(String),
    /// A write while the subject (or the registry) is read-only.
    #[error("Subject {0} is in read-only mode")]
    ReadOnly(String),
    /// A subject name the registry does not store: empty, or holding a control character
    /// (which would also break the store's key layout, where `\0` ends a subject).
    #[error("The specified subject is not valid: {0}")]
    InvalidSubject(&'static str),
    /// The sled store failed.
    #[error("Error in the backend data store (the schema registry's sled database): {0}")]
    Storage(#[from] sled::Error),
    /// The registry's Kafka topic did not take or deliver a change in time.
    #[error("Error in the backend data store (the schema registry's Kafka topic): {0}")]
    Log(String),
    /// The stored bytes are not what this code wrote.
    #[error("Error in the backend data store (the schema registry's sled database): corrupt entry: {0}")]
    Corrupt(String),
}

/// The on-disk format of govex's stores this build writes and reads. Raised when a store's
/// layout changes in a way an older build would misread; each store keeps the version it was
/// written with, and a build refuses a store newer than itself (a `helm rollback` onto an
/// older image, a backup restored into an older node) instead of reading it wrong.
pub const FORMAT_VERSION: u64 = 1;

/// The tree of every store that holds govex's own marks: its format version ([`FORMAT`]) and,
/// for a store a consumer group fills, that it was refilled ([`REFILLED`]).
pub const META_TREE: &str = "__govex";
/// The key of a store's format version in [`META_TREE`].
pub const FORMAT: &str = "format";
/// The key of the mark that a store's consumer group's offsets are its own, in [`META_TREE`].
pub const REFILLED: &str = "refilled";

/// The page cache of each sled database a process opens, in bytes (sled's own default is
/// 1 GiB per database, and it sizes itself from cgroup v1 only). Set once at start from
/// `storage.cache_mib`, before any store opens.
static CACHE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(64 << 20);

/// Sets the page cache of every sled database this process opens from now on.
pub fn set_cache_bytes(bytes: u64) {
    CACHE_BYTES.store(bytes.max(1 << 20), std::sync::atomic::Ordering::Relaxed);
}

/// The page cache each sled database gets (see [`set_cache_bytes`]).
pub fn cache_bytes() -> u64 {
    CACHE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Opens (or creates) a sled database in `dir`, the one way every govex store opens one:
/// with the configured cache, and with its format version checked (and written, when it has
/// none: a new store, or one from before versions were kept, which is version 1).
///
/// sled releases its file lock from a background thread after the last handle is dropped,
/// so a store reopened within one process (a node restarted in tests, `govex demo`,
/// `govex sink --rebuild`) may briefly find the lock held; the open is retried for up to 2 s.
pub fn open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    let db = open_sled_unchecked(dir)?;
    check_format(&db, dir)?;
    Ok(db)
}

/// As [`open_sled`], without the format check (a restore writes the backup's own format
/// entry, and refused a newer one before).
pub(crate) fn open_sled_unchecked(dir: &Path) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    let cache = cache_bytes();
    let db = loop {
        match sled::Config::new().path(dir).cache_capacity(cache).open() {
            Err(sled::Error::Io(e)) if attempts < 100 && e.to_string().contains("could not acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    Ok(db)
}

/// As [`open_sled`], for a store a consumer group fills: also whether the store must be
/// refilled from the start of its topics, because the group's committed offsets are not its
/// own. That is so for a store this process made (a new or lost volume), and for one made
/// before whose refill never finished (the process died first); a store is marked refilled
/// ([`mark_refilled`]) once its group was rewound. A store from before format versions was
/// filled by its group: it is marked at once.
pub fn open_sled_refillable(dir: &Path) -> Result<(sled::Db, bool), sled::Error> {
    let db = open_sled_unchecked(dir)?;
    // Whether the store had a format version before this open stamps one.
    let stamped = format_of(&db)?.is_some();
    check_format(&db, dir)?;
    let meta = db.open_tree(META_TREE)?;
    // An unstamped store with data is from before format versions; one without data was made
    // by a process that died before stamping it, and is refilled like a new one.
    let has_data = || -> Result<bool, sled::Error> {
        for name in db.tree_names() {
            if name.as_ref() != META_TREE.as_bytes() && !db.open_tree(&name)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let refill = match (db.was_recovered(), stamped, meta.get(REFILLED)?.is_some()) {
        (false, _, _) => true,
        (true, false, _) if !has_data()? => true,
        (true, false, _) => {
            meta.insert(REFILLED, &[1u8])?;
            meta.flush()?;
            false
        }
        (true, true, refilled) => !refilled,
    };
    Ok((db, refill))
}

/// Every entry of `tree` in order, as `tree.iter()` gives them, without sled's cache keeping
/// what the scan read (see [`Scan`]).
pub fn scan(tree: &sled::Tree) -> Scan {
    scan_range::<&[u8], _>(tree, ..)
}

/// The entries of `tree` in `range`, as `tree.range(range)` gives them (see [`Scan`]).
pub fn scan_range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(tree: &sled::Tree, range: R) -> Scan {
    Scan { entries: tree.range(range), tree: tree.clone(), read: 0 }
}

/// A read of many entries whose memory stays within the page cache.
///
/// sled 0.34 weighs its page cache in 256 shards, and a shard only once 64 reads of its pages
/// have queued up. A scan reads each page once, so nothing is evicted until some 16,000
/// pages were read, whatever `cache_capacity` says: a full read of a 587 MiB store peaked at
/// 457 MiB with a 16 MiB cache, and a 156 MiB one at 157 MiB with a 1 MiB cache. Reading the
/// current key again after every 64 KiB fills the queue of the shard that holds its page, which
/// is then weighed and evicted down to its share: the same reads peaked at 28 MiB, in the same
/// time. Every full read of a store (a backup, `govex store check`, counting at start, the use
/// log's chain) goes through this.
pub struct Scan {
    entries: sled::Iter,
    tree: sled::Tree,
    read: usize,
}

impl Scan {
    /// Bytes read between two weighings of the cache.
    const EVERY: usize = 64 << 10;
    /// sled's access queue per shard (`MAX_QUEUE_ITEMS` in its `lru.rs`).
    const QUEUE: usize = 64;
}

impl Iterator for Scan {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.entries.next()?;
        if let Ok((key, value)) = &item {
            self.read += key.len() + value.len();
            if self.read >= Self::EVERY {
                self.read = 0;
                weigh(&self.tree, key);
            }
        }
        Some(item)
    }
}

/// Has sled weigh the cache shard that holds `key`'s page now (see [`Scan`]): after a long
/// read or write, whose pages would otherwise stay in memory until their shards had queued
/// 64 reads each.
pub fn weigh(tree: &sled::Tree, key: &[u8]) {
    for _ in 0..Scan::QUEUE {
        if tree.get(key).is_err() {
            break;
        }
    }
}

/// Bytes a long read or write goes between two [`weigh`]s.
pub const WEIGH_EVERY: usize = Scan::EVERY;

/// Entries in `tree`, counted by a [`scan`] (sled's own `len` reads every page into the cache).
pub fn count(tree: &sled::Tree) -> Result<usize, sled::Error> {
    let mut n = 0;
    for entry in scan(tree) {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Marks the store in `db` refilled: its consumer group's offsets are its own from now on.
pub fn mark_refilled(db: &sled::Db) -> Result<(), sled::Error> {
    let meta = db.open_tree(META_TREE)?;
    meta.insert(REFILLED, &[1u8])?;
    meta.flush().map(drop)
}

/// Marks the store in `db` as needing a refill (`govex store refill`: after a volume snapshot
/// is restored, its stores are older than their groups' offsets). Whether it was marked.
pub fn clear_refilled(db: &sled::Db) -> Result<bool, sled::Error> {
    let meta = db.open_tree(META_TREE)?;
    let had = meta.remove(REFILLED)?.is_some();
    meta.flush()?;
    Ok(had)
}

/// Checks (and, on a store without one, writes) the format version of `db`.
fn check_format(db: &sled::Db, dir: &Path) -> Result<(), sled::Error> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT)? {
        Some(bytes) => {
            let found = <[u8; 8]>::try_from(bytes.as_ref()).map(u64::from_be_bytes).map_err(|_| {
                sled::Error::Unsupported(format!("the store in {} has an unreadable format version", dir.display()))
            })?;
            if found > FORMAT_VERSION {
                return Err(sled::Error::Unsupported(format!(
                    "the store in {} has format version {found}, and this govex reads up to version {FORMAT_VERSION}: \
                     it was written by a newer govex. Run that version (or newer), or restore a backup this version made",
                    dir.display()
                )));
            }
            Ok(())
        }
        None => {
            meta.insert(FORMAT, &FORMAT_VERSION.to_be_bytes())?;
            meta.flush().map(drop)
        }
    }
}

/// The format version of the store in `db`, as written (`govex store check`).
pub fn format_of(db: &sled::Db) -> Result<Option<u64>, sled::Error> {
    Ok(db.open_tree(META_TREE)?.get(FORMAT)?.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes))
}

/// Which version of a subject to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The highest live version (`latest` or `-1` in the REST API).
    Latest,
    /// One version number, starting at 1.
    Number(u32),
}

impl std::str::FromStr for VersionSelector {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" | "-1" => Ok(Self::Latest),
            other => match other.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(Self::Number(n)),
                _ => Err(RegistryError::InvalidVersion(other.to_owned())),
            },
        }
    }
}

/// A registry mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Reads and writes.
    Readwrite,
    /// Reads only: registrations and deletes are refused.
    Readonly,
    /// Accepted for compatibility with Confluent's API; behaves like READWRITE.
    Import,
}

impl Mode {
    /// The name in Confluent's API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Readwrite => "READWRITE",
            Self::Readonly => "READONLY",
            Self::Import => "IMPORT",
        }
    }
}

/// A setting a subject may have of its own, with a global default: the compatibility level
/// (`/config`) and the mode (`/mode`).
pub trait Setting: Copy + std::str::FromStr + Send + 'static {
    /// Its keys' prefix in the store (and the journal's key kind).
    const PREFIX: &'static str;
    /// What applies where neither the subject nor the registry sets one.
    const DEFAULT: Self;
    /// Its name, as stored and answered.
    fn as_str(self) -> &'static str;
    /// The error for a subject that has none of its own.
    fn not_configured(subject: &str) -> RegistryError;
}

impl Setting for Compatibility {
    const PREFIX: &'static str = "cfg/";
    const DEFAULT: Self = DEFAULT_COMPATIBILITY;
    fn as_str(self) -> &'static str {
        Compatibility::as_str(self)
    }
    fn not_configured(subject: &str) -> RegistryError {
        RegistryError::SubjectCompatibilityNotConfigured(subject.to_owned())
    }
}

impl Setting for Mode {
    const PREFIX: &'static str = "mode/";
    const DEFAULT: Self = Mode::Readwrite;
    fn as_str(self) -> &'static str {
        Mode::as_str(self)
    }
    fn not_configured(subject: &str) -> RegistryError {
        RegistryError::SubjectModeNotConfigured(subject.to_owned())
    }
}

impl std::str::FromStr for Mode {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "READWRITE" => Ok(Self::Readwrite),
            "READONLY" => Ok(Self::Readonly),
            "IMPORT" => Ok(Self::Import),
            other => Err(RegistryError::InvalidMode(other.to_owned())),
        }
    }
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The global schema id.
    pub id: u32,
    /// The version within the subject, from 1.
    pub version: u32,
    /// The schema text as first registered.
    pub schema: String,
}

/// A version entry: its number, schema id and whether it is soft-deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VersionEntry {
    version: u32,
    id: u32,
    deleted: bool,
}

/// The registry's default compatibility level, as Confluent's.
pub const DEFAULT_COMPATIBILITY: Compatibility = Compatibility::Backward;

/// The schema registry. Cheap to clone; clones share the same sled database.
#[derive(Clone)]
pub struct Registry {
    tree: sled::Tree,
    db: sled::Db,
    /// Changes read, then write, several keys; one writer at a time keeps ids dense and
    /// versions gap-free.
    write_lock: Arc<parking_lot::Mutex<()>>,
    /// What else a new version must satisfy to be stored (the node's: a department record
    /// type must compile into a contract), so a schema that cannot be used is refused at
    /// push and never reaches an intake.
    contract: Option<ContractCheck>,
    /// The topic this registry is a view of, when it is one: writes go there first.
    journal: Option<Arc<dyn Journal>>,
}

/// A check of a new version beyond compatibility: given the subject, the schema text and every
/// version of every subject, soft-deleted ones included (subject, text, whether it is the
/// subject's latest live version), `Err` says why it cannot be used.
pub type ContractCheck = Arc<dyn Fn(&str, &str, &[(String, String, bool)]) -> Result<(), String> + Send + Sync>;

const NEXT_ID: &[u8] = b"meta/next_id";
const IDENTITY: &[u8] = b"meta/identity";
const IDENTITY_VERSION: &[u8] = b"3";
const LOG_OFFSET: &[u8] = b"meta/log_offset";
const LOG_LAST: &[u8] = b"meta/log_last";
/// How long a write waits for the one before it.
const WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Registry {
    /// Its sled database (for backups).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Opens (or creates) the registry under `dir`.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        Self::with_db(open_sled(dir)?)
    }

    /// Uses the `registry` tree of an already open sled database.
    pub fn with_db(db: sled::Db) -> Result<Self, RegistryError> {
        let tree = db.open_tree("registry")?;
        let registry =
            Self { tree, db, write_lock: Arc::new(parking_lot::Mutex::new(())), contract: None, journal: None };
        registry.reindex()?;
        Ok(registry)
    }

    /// A registry in memory only: a view of the registry's topic for a process that has no
    /// volume of its own, rebuilt from the topic at every start.
    pub fn temporary() -> Result<Self, RegistryError> {
        Self::with_db(sled::Config::new().temporary(true).open()?)
    }

    /// This registry as a view of its topic: every write goes to `journal` and is applied
    /// from there (see [`crate::journal`]).
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The next offset of the registry's topic this view has to apply (`None`: it has
    /// applied none).
    pub fn log_offset(&self) -> Result<Option<i64>, RegistryError> {
        self.tree
            .get(LOG_OFFSET)?
            .map(|v| {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| RegistryError::Corrupt("log offset".into()))?;
                Ok(i64::from_be_bytes(bytes))
            })
            .transpose()
    }

    /// Applies one record of the registry's topic, at `offset`, and remembers the offset
    /// with it (one sled batch, so a crash cannot apply a record without its offset).
    /// A record this code cannot read is skipped with a warning: the view stays usable, and
    /// the writer never writes one.
    ///
    /// A record that would give a schema id another schema, or a version another schema id
    /// (two writers at once, or a producer that is not the registry), is skipped too: an id
    /// and a version never change meaning in a view. The change the view keeps instead is
    /// returned, for the writer to put back on the topic (so that compaction, which keeps the
    /// last record of a key, keeps the view's).
    pub fn apply_record(&self, offset: i64, key: &[u8], value: Option<&[u8]>) -> Result<Option<Change>, RegistryError> {
        let mut batch = sled::Batch::default();
        let kept = match Change::decode(key, value) {
            Ok(change) => self.apply(&change, &mut batch)?,
            Err(e) => {
                tracing::warn!(offset, error = %e, "registry topic: a record is skipped");
                None
            }
        };
        if let Some(kept) = &kept {
            tracing::error!(
                offset,
                kept = %String::from_utf8_lossy(&kept.encode().0),
                "registry topic: a record would change what an id or a version means (two registry writers, or a producer that is not the registry?); it is skipped"
            );
        }
        batch.insert(LOG_OFFSET, &(offset + 1).to_be_bytes());
        batch.insert(LOG_LAST, encode_record(key, value));
        self.tree.apply_batch(batch)?;
        Ok(kept)
    }

    /// The last record this view applied (key, value), to tell its topic from another one
    /// with as many records (a topic deleted and filled again).
    pub fn last_record(&self) -> Result<Option<Record>, RegistryError> {
        self.tree.get(LOG_LAST)?.map(|bytes| decode_record(&bytes)).transpose()
    }

    /// Takes the write lock, waiting at most as long as one write may take: a caller behind
    /// a write that waits for an unreachable topic is answered, not queued for ever.
    fn lock_writes(&self) -> Result<parking_lot::MutexGuard<'_, ()>, RegistryError> {
        self.write_lock.try_lock_for(WRITE_WAIT).ok_or_else(|| {
            RegistryError::Log(format!("another write has been in progress for {} s; retry", WRITE_WAIT.as_secs()))
        })
    }

    /// Forgets which records of the topic were applied, so that the topic is read again
    /// from its start (after the writer wrote the whole state to a topic that lost it).
    pub fn reset_log_offset(&self) -> Result<(), RegistryError> {
        let mut batch = sled::Batch::default();
        batch.remove(LOG_OFFSET);
        batch.remove(LOG_LAST);
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Makes what was applied survive a crash of this process.
    pub fn flush(&self) -> Result<(), RegistryError> {
        self.db.flush()?;
        Ok(())
    }

    /// The whole state as changes: what the writer puts back on a topic that lost it (the
    /// embedded bus keeps nothing across restarts; a topic may be deleted by mistake).
    pub fn state(&self) -> Result<Vec<Change>, RegistryError> {
        let mut changes = Vec::new();
        for entry in self.tree.scan_prefix(b"id/") {
            let (key, text) = entry?;
            let text = String::from_utf8(text.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            changes.push(Change::Schema { id: read_u32(&key[3..])?, text });
        }
        for entry in self.tree.scan_prefix(b"ver/") {
            let (key, value) = entry?;
            let (subject, version) = split_version_key(&key)?;
            let (id, deleted) = read_version_value(&value)?;
            changes.push(Change::Version { subject, version, id, deleted });
        }
        for (prefix, compatibility) in [("cfg/", true), ("mode/", false)] {
            for entry in self.tree.scan_prefix(prefix.as_bytes()) {
                let (key, value) = entry?;
                let subject = String::from_utf8(key[prefix.len()..].to_vec())
                    .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                let value = Some(String::from_utf8(value.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))?);
                changes.push(match compatibility {
                    true => Change::Compatibility { subject, level: value },
                    false => Change::Mode { subject, mode: value },
                });
            }
        }
        Ok(changes)
    }

    /// Adds what `change` does to the tree to `batch`. Each change sets (or removes) the
    /// state of one key, whatever came before, so applying a compacted topic gives the same
    /// store as applying every record; only the identity index is derived, and it keeps the
    /// lowest id of an identity, whatever order the ids arrive in.
    fn apply(&self, change: &Change, batch: &mut sled::Batch) -> Result<Option<Change>, RegistryError> {
        match change {
            Change::Schema { id, text } => {
                let schema = match parse(text) {
                    Ok(schema) => schema,
                    Err(e) => {
                        tracing::warn!(id, error = %e, "registry topic: schema is not valid Avro; skipped");
                        return Ok(None);
                    }
                };
                if let Some(previous) = self.tree.get(id_key(*id))? {
                    // An id keeps the schema it first had: the first record wins.
                    return Ok((previous.as_ref() != text.as_bytes())
                        .then(|| Change::Schema { id: *id, text: String::from_utf8_lossy(&previous).into_owned() }));
                }
                // The writer hands out ids one after another: an id far past the next one is
                // not the registry's, and would use up the ids left.
                let next = self.tree.get(NEXT_ID)?.map(|v| read_u32(&v)).transpose()?.unwrap_or(1);
                if *id > next.saturating_add(MAX_ID_GAP) {
                    tracing::warn!(id, next, "registry topic: a schema id far past the next one is skipped");
                    return Ok(None);
                }
                batch.insert(id_key(*id), text.as_bytes());
                let canon = canon_key(&identity(&schema, text));
                match self.tree.get(&canon)?.map(|v| read_u32(&v)).transpose()? {
                    Some(known) if known <= *id => {}
                    _ => batch.insert(canon, &id.to_be_bytes()),
                }
                // Ids are at most i32::MAX (Confluent's ids are Java ints; decode refuses more).
                if *id >= next {
                    batch.insert(NEXT_ID, &id.saturating_add(1).to_be_bytes());
                }
            }
            Change::Version { subject, version, id, deleted } => {
                // A version keeps its schema id until it is deleted for good: a soft delete
                // changes only the flag.
                if let Some(current) = self.tree.get(version_key(subject, *version))? {
                    let (current_id, current_deleted) = read_version_value(&current)?;
                    if current_id != *id {
                        return Ok(Some(Change::Version {
                            subject: subject.clone(),
                            version: *version,
                            id: current_id,
                            deleted: current_deleted,
                        }));
                    }
                }
                batch.insert(version_key(subject, *version), version_value(*id, *deleted).as_slice())
            }
            Change::Purge { subject, version } => {
                // The registry deletes a version for good only once it is soft-deleted.
                if let Some(current) = self.tree.get(version_key(subject, *version))? {
                    let (id, deleted) = read_version_value(&current)?;
                    if !deleted {
                        return Ok(Some(Change::Version { subject: subject.clone(), version: *version, id, deleted }));
                    }
                }
                batch.remove(version_key(subject, *version))
            }
            Change::Compatibility { subject, level } => match level {
                Some(level) => batch.insert(subject_key("cfg/", subject), level.as_bytes()),
                None => batch.remove(subject_key("cfg/", subject)),
            },
            Change::Mode { subject, mode } => match mode {
                Some(mode) => batch.insert(subject_key("mode/", subject), mode.as_bytes()),
                None => batch.remove(subject_key("mode/", subject)),
            },
        }
        Ok(None)
    }

    /// Waits (up to the journal's bound) until this view has applied everything its topic
    /// holds now: a read replica answers a write it forwarded only then, so that the caller
    /// reads its write there.
    pub fn caught_up(&self) -> Result<(), RegistryError> {
        self.catch_up()
    }

    /// Before a write decides anything: a view first applies whatever its topic holds.
    fn catch_up(&self) -> Result<(), RegistryError> {
        match &self.journal {
            Some(journal) => journal.catch_up().map_err(RegistryError::Log),
            None => Ok(()),
        }
    }

    /// This registry, refusing new versions that `check` refuses.
    pub fn with_contract_check(mut self, check: ContractCheck) -> Self {
        self.contract = Some(check);
        self
    }

    /// Rebuilds the identity index from the stored schemas when it was made another way
    /// (before annotations counted): the lowest id keeps an identity two schemas now share.
    fn reindex(&self) -> Result<(), RegistryError> {
        if self.tree.get(IDENTITY)?.as_deref() == Some(IDENTITY_VERSION) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for entry in self.tree.scan_prefix(b"canon/") {
            batch.remove(entry?.0);
        }
        let mut seen = std::collections::HashSet::new();
        for entry in self.tree.scan_prefix(b"id/") {
            let (key, text) = entry?;
            let text = String::from_utf8(text.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            let canonical = identity(&parse(&text)?, &text);
            if seen.insert(canonical.clone()) {
                batch.insert(canon_key(&canonical), &key[3..]);
            }
        }
        batch.insert(IDENTITY, IDENTITY_VERSION);
        self.commit(batch)
    }

    fn commit(&self, batch: sled::Batch) -> Result<(), RegistryError> {
        self.tree.apply_batch(batch)?;
        // Every change is acknowledged to a caller; it must survive a crash.
        self.db.flush()?;
        Ok(())
    }

    /// After a write lost a race for a schema id (another writer's schema has it), the
    /// versions it wrote for that id would name the other schema: they are deleted for good
    /// (soft, then for good, as the registry always does), so that nothing of the refused
    /// write stays registered.
    fn undo_half(&self, changes: &[Change]) -> Result<(), RegistryError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let mut undo = Vec::new();
        for change in changes {
            let Change::Version { subject, version, id, .. } = change else { continue };
            let mut lost = false;
            for wrote in changes {
                if let Change::Schema { id: schema_id, text } = wrote {
                    lost |= schema_id == id && self.tree.get(id_key(*id))?.as_deref() != Some(text.as_bytes());
                }
            }
            let landed = self.tree.get(version_key(subject, *version))?.map(|v| read_version_value(&v)).transpose()?;
            if lost && landed.is_some_and(|(landed_id, _)| landed_id == *id) {
                undo.push(Change::Version { subject: subject.clone(), version: *version, id: *id, deleted: true });
                undo.push(Change::Purge { subject: subject.clone(), version: *version });
            }
        }
        if !undo.is_empty() {
            tracing::warn!(
                versions = undo.len() / 2,
                "a write lost a race for its schema id: its versions are deleted"
            );
            journal.append(&undo).map_err(RegistryError::Log)?;
        }
        Ok(())
    }

    /// Makes `changes` happen: on the topic first when this registry is a view of one (the
    /// journal returns once this view applied them), else in the tree as one batch.
    fn write(&self, changes: &[Change]) -> Result<(), RegistryError> {
        if let Some(journal) = &self.journal {
            journal.append(changes).map_err(RegistryError::Log)?;
            // What was acknowledged must be what the view holds: a record another writer put
            // first (two registry processes on one topic) kept the id or version, and this
            // write did not happen.
            for change in changes {
                let held = match change {
                    Change::Schema { id, text } => self.tree.get(id_key(*id))?.as_deref() == Some(text.as_bytes()),
                    Change::Version { subject, version, id, deleted } => {
                        self.tree.get(version_key(subject, *version))?.as_deref()
                            == Some(version_value(*id, *deleted).as_slice())
                    }
                    _ => true,
                };
                if !held {
                    self.undo_half(changes)?;
                    return Err(RegistryError::Log(format!(
                        "another writer of {} took what this change needed ({:?}); nothing was registered, retry",
                        crate::journal::TOPIC,
                        String::from_utf8_lossy(&change.encode().0)
                    )));
                }
            }
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for change in changes {
            // Decided on this store under the write lock: nothing can be in the way.
            let _ = self.apply(change, &mut batch)?;
        }
        self.commit(batch)
    }

    /// Registers `schema_text` under `subject` and returns its id.
    ///
    /// A schema the subject already has live (same Parsing Canonical Form) returns the
    /// existing id and adds no version; a schema known elsewhere keeps its id. A new version
    /// must satisfy the subject's compatibility level against its live versions.
    pub fn register(&self, subject: &str, schema_text: &str) -> Result<u32, RegistryError> {
        check_subject(subject)?;
        let schema = parse(schema_text)?;
        let canonical = identity(&schema, schema_text);
        let _guard = self.lock_writes()?;
        self.catch_up()?;
        let known_id = self.tree.get(canon_key(&canonical))?.map(|v| read_u32(&v)).transpose()?;
        let entries = self.entries(subject)?;
        if let Some(id) = known_id {
            if entries.iter().any(|e| !e.deleted && e.id == id) {
                return Ok(id);
            }
        }
        if self.effective_setting::<Mode>(subject)? == Mode::Readonly {
            return Err(RegistryError::ReadOnly(subject.to_owned()));
        }
        let level = self.effective_setting::<Compatibility>(subject)?;
        let existing = self.live_schemas(&entries)?;
        let problems = compat::check(level, &schema, &existing);
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                reasons: problems
                    .iter()
                    .map(|(version, i)| {
                        format!("{{oldSchemaVersion: {version}, {i}, compatibility: '{}'}}", level.as_str())
                    })
                    .collect(),
            });
        }

        if let Some(check) = &self.contract {
            let history = self.every_version()?;
            check(subject, schema_text, &history)
                .map_err(|reason| RegistryError::InvalidSchema(format!("the record type cannot be used: {reason}")))?;
        }
        let mut changes = Vec::new();
        let id = match known_id {
            Some(id) => id,
            None => {
                let next = self.tree.get(NEXT_ID)?.map(|v| read_u32(&v)).transpose()?.unwrap_or(1);
                if next > MAX_ID {
                    return Err(RegistryError::InvalidSchema(format!(
                        "no schema id is left (the highest is {MAX_ID})"
                    )));
                }
                changes.push(Change::Schema { id: next, text: schema_text.to_owned() });
                next
            }
        };
        let version = entries.last().map_or(1, |e| e.version.saturating_add(1));
        if version > MAX_ID {
            return Err(RegistryError::InvalidVersion(version.to_string()));
        }
        changes.push(Change::Version { subject: subject.to_owned(), version, id, deleted: false });
        self.write(&changes)?;
        tracing::info!(subject, id, version, "schema registered");
        Ok(id)
    }

    /// Every reason `schema_text` could not be registered under `subject` next to `selector`
    /// (or, with `None`, next to every live version its level covers); empty when it could.
    pub fn test_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        schema_text: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let schema = parse(schema_text)?;
        let level = self.effective_setting::<Compatibility>(subject)?;
        let existing = match selector {
            None => {
                let entries = self.entries(subject)?;
                self.live_schemas(&entries)?
            }
            Some(selector) => {
                let found = self.version(subject, selector, false)?;
                vec![(found.version, parse(&found.schema)?)]
            }
        };
        Ok(compat::check(level, &schema, &existing)
            .iter()
            .map(|(version, i)| format!("version {version}: {i}"))
            .collect())
    }

    /// The version and text of `schema_text` if the subject has it live.
    pub fn lookup(&self, subject: &str, schema_text: &str, deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let canonical = identity(&parse(schema_text)?, schema_text);
        let entries = self.entries(subject)?;
        if !entries.iter().any(|e| deleted || !e.deleted) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let id = self.tree.get(canon_key(&canonical))?.map(|v| read_u32(&v)).transpose()?;
        let entry = entries
            .iter()
            .rev()
            .find(|e| Some(e.id) == id && (deleted || !e.deleted))
            .ok_or(RegistryError::SchemaNotInSubject)?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            id: entry.id,
            version: entry.version,
            schema: self.schema_by_id(entry.id)?,
        })
    }

    /// The schema text with this id (soft-deleted versions keep their schemas readable).
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let bytes = self.tree.get(id_key(id))?.ok_or(RegistryError::SchemaNotFound(id))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))
    }

    /// The (subject, version) pairs that use schema `id`.
    pub fn subject_versions_of(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema_by_id(id)?;
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"ver/") {
            let (key, value) = entry?;
            let (subject, version) = split_version_key(&key)?;
            let (entry_id, is_deleted) = read_version_value(&value)?;
            if entry_id == id && (deleted || !is_deleted) {
                out.push((subject, version));
            }
        }
        Ok(out)
    }

    /// Every subject with at least one live version (or any version, with `deleted`), sorted.
    pub fn subjects(&self, deleted: bool) -> Result<Vec<String>, RegistryError> {
        let mut subjects: Vec<String> = Vec::new();
        for entry in self.tree.scan_prefix(b"ver/") {
            let (key, value) = entry?;
            let (subject, _) = split_version_key(&key)?;
            let (_, is_deleted) = read_version_value(&value)?;
            if (deleted || !is_deleted) && subjects.last() != Some(&subject) {
                subjects.push(subject);
            }
        }
        Ok(subjects)
    }

    /// The version numbers of `subject`, ascending.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let versions: Vec<u32> =
            self.entries(subject)?.into_iter().filter(|e| deleted || !e.deleted).map(|e| e.version).collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// One version of `subject`; soft-deleted versions only with `deleted`.
    pub fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let entries: Vec<VersionEntry> = self.entries(subject)?.into_iter().filter(|e| deleted || !e.deleted).collect();
        if entries.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let found = match selector {
            VersionSelector::Latest => entries.last(),
            VersionSelector::Number(n) => entries.iter().find(|e| e.version == n),
        };
        let entry = found.ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: match selector {
                VersionSelector::Latest => "latest".into(),
                VersionSelector::Number(n) => n.to_string(),
            },
        })?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            id: entry.id,
            version: entry.version,
            schema: self.schema_by_id(entry.id)?,
        })
    }

    /// Deletes every version of `subject`: soft first, then, with `permanent`, for good.
    /// Returns the versions deleted.
    pub fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let _guard = self.lock_writes()?;
        self.catch_up()?;
        let entries = self.entries(subject)?;
        if entries.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        if self.effective_setting::<Mode>(subject)? == Mode::Readonly {
            return Err(RegistryError::ReadOnly(subject.to_owned()));
        }
        let all_deleted = entries.iter().all(|e| e.deleted);
        let mut changes = Vec::new();
        let versions: Vec<u32> = entries.iter().map(|e| e.version).collect();
        let subject_owned = || subject.to_owned();
        if permanent {
            if !all_deleted {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            for e in &entries {
                changes.push(Change::Purge { subject: subject_owned(), version: e.version });
            }
            if self.subject_setting::<Compatibility>(subject)?.is_some() {
                changes.push(Change::Compatibility { subject: subject_owned(), level: None });
            }
            if self.subject_setting::<Mode>(subject)?.is_some() {
                changes.push(Change::Mode { subject: subject_owned(), mode: None });
            }
        } else {
            if all_deleted {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
            }
            for e in entries.iter().filter(|e| !e.deleted) {
                changes.push(Change::Version { subject: subject_owned(), version: e.version, id: e.id, deleted: true });
            }
        }
        self.write(&changes)?;
        tracing::info!(subject, permanent, "subject deleted");
        Ok(if permanent { versions } else { entries.iter().filter(|e| !e.deleted).map(|e| e.version).collect() })
    }

    /// Deletes one version: soft first, then, with `permanent`, for good.
    pub fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        let _guard = self.lock_writes()?;
        self.catch_up()?;
        let entries = self.entries(subject)?;
        if entries.is_empty() || (!permanent && entries.iter().all(|e| e.deleted)) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        if self.effective_setting::<Mode>(subject)? == Mode::Readonly {
            return Err(RegistryError::ReadOnly(subject.to_owned()));
        }
        let entry = match selector {
            VersionSelector::Latest if permanent => entries.last(),
            VersionSelector::Latest => entries.iter().rev().find(|e| !e.deleted),
            VersionSelector::Number(n) => entries.iter().find(|e| e.version == n),
        }
        .copied()
        .ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: format!("{selector:?}"),
        })?;
        let change = match (permanent, entry.deleted) {
            (false, true) => {
                return Err(RegistryError::VersionSoftDeleted { subject: subject.to_owned(), version: entry.version })
            }
            (true, false) => {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version: entry.version,
                })
            }
            (false, false) => {
                Change::Version { subject: subject.to_owned(), version: entry.version, id: entry.id, deleted: true }
            }
            (true, true) => Change::Purge { subject: subject.to_owned(), version: entry.version },
        };
        self.write(&[change])?;
        Ok(entry.version)
    }

    /// The subject's own `S` (`None`: the global one applies).
    pub fn subject_setting<S: Setting>(&self, subject: &str) -> Result<Option<S>, RegistryError> {
        self.read_setting(S::PREFIX, subject)
    }

    /// The global `S`.
    pub fn global_setting<S: Setting>(&self) -> Result<S, RegistryError> {
        Ok(self.read_setting(S::PREFIX, "")?.unwrap_or(S::DEFAULT))
    }

    /// The `S` that applies to `subject`: its own, or the global one.
    pub fn effective_setting<S: Setting>(&self, subject: &str) -> Result<S, RegistryError> {
        match self.subject_setting(subject)? {
            Some(value) => Ok(value),
            None => self.global_setting(),
        }
    }

    /// Sets the `S` of `subject`, or the global one when `subject` is `None`.
    pub fn set_setting<S: Setting>(&self, subject: Option<&str>, value: S) -> Result<(), RegistryError> {
        subject.map(check_subject).transpose()?;
        self.write_setting(S::PREFIX, subject.unwrap_or(""), Some(value.as_str()))
    }

    /// Removes the subject's own `S`; returns the one it had.
    pub fn delete_setting<S: Setting>(&self, subject: &str) -> Result<S, RegistryError> {
        let previous = self.subject_setting(subject)?.ok_or_else(|| S::not_configured(subject))?;
        self.write_setting(S::PREFIX, subject, None)?;
        Ok(previous)
    }

    fn read_setting<T: std::str::FromStr>(&self, prefix: &str, subject: &str) -> Result<Option<T>, RegistryError> {
        match self.tree.get(subject_key(prefix, subject))? {
            None => Ok(None),
            Some(bytes) => {
                let text = std::str::from_utf8(&bytes).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
                text.parse()
                    .map(Some)
                    .map_err(|_| RegistryError::Corrupt(format!("setting {prefix}{subject} = {text}")))
            }
        }
    }

    fn write_setting(&self, prefix: &str, subject: &str, value: Option<&str>) -> Result<(), RegistryError> {
        let (subject, value) = (subject.to_owned(), value.map(str::to_owned));
        let change = match prefix {
            "cfg/" => Change::Compatibility { subject, level: value },
            _ => Change::Mode { subject, mode: value },
        };
        let _guard = self.lock_writes()?;
        self.write(&[change])
    }

    fn entries(&self, subject: &str) -> Result<Vec<VersionEntry>, RegistryError> {
        let mut prefix = b"ver/".to_vec();
        prefix.extend_from_slice(subject.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            // A longer key belongs to another subject that merely starts with this one and a
            // `\0` (only a store written before subjects were checked can hold one).
            if key.len() != prefix.len() + 4 {
                continue;
            }
            let (id, deleted) = read_version_value(&value)?;
            out.push(VersionEntry { version: read_u32(&key[prefix.len()..])?, id, deleted });
        }
        Ok(out)
    }

    /// Every version of every subject, soft-deleted ones included, with whether it is the
    /// subject's latest live one: for the contract check (registrations are rare; a registry
    /// holds hundreds of versions at most).
    fn every_version(&self) -> Result<Vec<(String, String, bool)>, RegistryError> {
        let mut out = Vec::new();
        for subject in self.subjects(true)? {
            let entries = self.entries(&subject)?;
            let latest = entries.iter().rev().find(|e| !e.deleted).map(|e| e.version);
            for entry in &entries {
                // A version whose schema this view never got (a record not from the
                // registry) says nothing about what a new version may be.
                match self.schema_by_id(entry.id) {
                    Ok(text) => out.push((subject.clone(), text, Some(entry.version) == latest)),
                    Err(RegistryError::SchemaNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    fn live_schemas(&self, entries: &[VersionEntry]) -> Result<Vec<(u32, Schema)>, RegistryError> {
        entries.iter().filter(|e| !e.deleted).map(|e| Ok((e.version, parse(&self.schema_by_id(e.id)?)?))).collect()
    }
}

/// Refuses a subject name that is empty or holds a control character. Every write that
/// creates a key for a subject checks it first.
pub fn check_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.trim().is_empty() {
        return Err(RegistryError::InvalidSubject("it is empty"));
    }
    // A Kafka topic name has at most 249 characters; `-value` and a little more fit.
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(RegistryError::InvalidSubject("it is longer than 255 bytes"));
    }
    if subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject("it contains a control character"));
    }
    // Characters that show nothing, or reorder what is shown, make two subjects look alike.
    let invisible = |c: char| {
        matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
        )
    };
    if subject.chars().any(invisible) {
        return Err(RegistryError::InvalidSubject("it contains an invisible or direction-changing character"));
    }
    Ok(())
}

/// The highest schema id and version number: Confluent's are Java ints.
pub const MAX_ID: u32 = i32::MAX as u32;

/// How far past the next id a view takes a schema id from the topic. Ids are handed out one
/// after another; a compacted topic may bring a few out of order (records put back after a
/// conflict), never thousands.
const MAX_ID_GAP: u32 = 10_000;

/// The longest subject name the registry stores.
pub const MAX_SUBJECT_BYTES: usize = 255;

fn parse(text: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

fn id_key(id: u32) -> Vec<u8> {
    [b"id/".as_slice(), &id.to_be_bytes()].concat()
}

/// A schema's identity: its Parsing Canonical Form, then the whole text as canonical JSON
/// (keys sorted), which keeps what the canonical form leaves out: defaults, docs and the
/// `govex.*` annotations.
fn identity(schema: &Schema, text: &str) -> String {
    let mut identity = schema.canonical_form();
    // The text parsed as a schema, so it is JSON; a bare type name ("string") is JSON too.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        identity.push('\0');
        canonical_json(&value, &mut identity);
    }
    identity
}

/// `value` as JSON with object keys sorted, whatever order the text had them in.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort();
            out.push('{');
            for (n, key) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&members[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn canon_key(canonical: &str) -> Vec<u8> {
    [b"canon/".as_slice(), canonical.as_bytes()].concat()
}

fn subject_key(prefix: &str, subject: &str) -> Vec<u8> {
    [prefix.as_bytes(), subject.as_bytes()].concat()
}

fn version_key(subject: &str, version: u32) -> Vec<u8> {
    [b"ver/".as_slice(), subject.as_bytes(), &[0], &version.to_be_bytes()].concat()
}

fn version_value(id: u32, deleted: bool) -> Vec<u8> {
    let mut value = id.to_be_bytes().to_vec();
    if deleted {
        value.push(1);
    }
    value
}

fn read_version_value(bytes: &[u8]) -> Result<(u32, bool), RegistryError> {
    match bytes.len() {
        4 => Ok((read_u32(bytes)?, false)),
        5 => Ok((read_u32(&bytes[..4])?, bytes[4] == 1)),
        n => Err(RegistryError::Corrupt(format!("version entry of {n} bytes"))),
    }
}

fn split_version_key(key: &[u8]) -> Result<(String, u32), RegistryError> {
    // `ver/` subject `\0` version (4 bytes BE): the version's bytes may hold zeros, so the
    // separator is found from the end.
    let rest = &key[4..];
    if rest.len() < 5 || rest[rest.len() - 5] != 0 {
        return Err(RegistryError::Corrupt("version key without separator".into()));
    }
    let (subject, version) = rest.split_at(rest.len() - 5);
    let subject = String::from_utf8(subject.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
    Ok((subject, read_u32(&version[1..])?))
}

/// A record as `meta/log_last` keeps it: the key's length (u32 BE), the key, then 1 and the
/// value, or 0 for a tombstone.
fn encode_record(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut out = (key.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(key);
    match value {
        Some(value) => {
            out.push(1);
            out.extend_from_slice(value);
        }
        None => out.push(0),
    }
    out
}

fn decode_record(bytes: &[u8]) -> Result<Record, RegistryError> {
    let corrupt = || RegistryError::Corrupt("the last applied record".into());
    let length = read_u32(bytes.get(..4).ok_or_else(corrupt)?)? as usize;
    let key = bytes.get(4..4 + length).ok_or_else(corrupt)?.to_vec();
    match bytes.get(4 + length) {
        Some(1) => Ok((key, Some(bytes[5 + length..].to_vec()))),
        Some(0) => Ok((key, None)),
        _ => Err(corrupt()),
    }
}

fn read_u32(bytes: &[u8]) -> Result<u32, RegistryError> {
    let array: [u8; 4] =
        bytes.try_into().map_err(|_| RegistryError::Corrupt(format!("expected 4 bytes, found {}", bytes.len())))?;
    Ok(u32::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V1_SPACED: &str = r#"{ "name": "R",  "type": "record", "fields": [ {"type": "int", "name": "a"} ] }"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    const V3_BREAKS: &str =
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"c","type":"string"}]}"#;

    #[test]
    fn a_store_keeps_its_format_version_and_a_newer_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_sled(dir.path()).unwrap();
            assert_eq!(format_of(&db).unwrap(), Some(FORMAT_VERSION), "a new store is stamped");
            db.insert("data", "kept").unwrap();
            // As a newer govex would leave it.
            db.open_tree("__govex").unwrap().insert("format", &(FORMAT_VERSION + 1).to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let error = open_sled(dir.path()).unwrap_err().to_string();
        assert!(error.contains(&format!("format version {}", FORMAT_VERSION + 1)), "{error}");
        assert!(error.contains(&dir.path().display().to_string()) && error.contains("newer govex"), "{error}");
        {
            // Put back, it opens, its data untouched.
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("__govex").unwrap().insert("format", &FORMAT_VERSION.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let db = open_sled(dir.path()).unwrap();
        assert_eq!(db.get("data").unwrap().as_deref(), Some(&b"kept"[..]));
    }

    #[test]
    fn a_store_refills_until_its_refill_is_marked_and_an_old_store_never() {
        let reopen = |dir: &Path| {
            // sled lets go of its lock from a thread of its own: open_sled waits for it.
            open_sled_refillable(dir).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let (db, refill) = reopen(dir.path());
        assert!(refill, "a new store refills");
        drop(db);
        // The process died before its group was rewound: the next start refills still.
        let (db, refill) = reopen(dir.path());
        assert!(refill, "a refill that never finished is done again");
        mark_refilled(&db).unwrap();
        drop(db);
        let (db, refill) = reopen(dir.path());
        assert!(!refill, "a refilled store resumes from its group's offsets");
        // `govex store refill` (a snapshot restored): the next start refills.
        assert!(clear_refilled(&db).unwrap());
        drop(db);
        assert!(reopen(dir.path()).1);

        // A store from before format versions was filled by its group: never refilled.
        let old = tempfile::tempdir().unwrap();
        {
            let db = sled::open(old.path()).unwrap();
            db.insert("data", "kept").unwrap();
            db.flush().unwrap();
        }
        let (db, refill) = reopen(old.path());
        assert!(!refill, "an old store's offsets are its own");
        drop(db);
        assert!(!reopen(old.path()).1, "and stay so");

        // Unstamped and empty: a process died between sled's first flush and the stamp.
        let cut = tempfile::tempdir().unwrap();
        {
            let db = sled::open(cut.path()).unwrap();
            db.open_tree("licences").unwrap();
            db.flush().unwrap();
        }
        assert!(reopen(cut.path()).1, "a store that never held data refills");
    }

    fn open() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        (dir, registry)
    }

    /// What a registry serves: every subject's versions with ids and texts (soft-deleted
    /// ones too), every id's text, the levels and modes, and the next id.
    #[allow(clippy::type_complexity)]
    fn served(r: &Registry) -> (Vec<(String, u32, u32, String, bool)>, Vec<(u32, String)>, Vec<String>, u32) {
        let mut versions = Vec::new();
        for subject in r.subjects(true).unwrap() {
            let live = r.versions(&subject, false).unwrap_or_default();
            for v in r.versions(&subject, true).unwrap() {
                let found = r.version(&subject, VersionSelector::Number(v), true).unwrap();
                versions.push((subject.clone(), v, found.id, found.schema, !live.contains(&v)));
            }
        }
        let ids = (1..20).filter_map(|id| r.schema_by_id(id).ok().map(|t| (id, t))).collect();
        let mut settings = vec![
            r.global_setting::<Compatibility>().unwrap().as_str().to_owned(),
            r.global_setting::<Mode>().unwrap().as_str().to_owned(),
        ];
        for subject in r.subjects(true).unwrap() {
            settings.push(format!(
                "{subject}: {:?} {:?}",
                r.subject_setting::<Compatibility>(&subject).unwrap(),
                r.subject_setting::<Mode>(&subject).unwrap()
            ));
        }
        let next = r.tree.get(NEXT_ID).unwrap().map(|v| read_u32(&v).unwrap()).unwrap_or(1);
        (versions, ids, settings, next)
    }

    /// A registry with a bit of everything: shared ids, a soft delete, a purge, levels, modes.
    fn busy() -> (tempfile::TempDir, Registry) {
        let (dir, r) = open();
        r.register("a", V1).unwrap();
        r.register("b", V1).unwrap();
        r.register("a", V2).unwrap();
        r.register("c", r#"{"type":"string"}"#).unwrap();
        r.delete_version("c", VersionSelector::Number(1), false).unwrap();
        r.register("d", r#"{"type":"long"}"#).unwrap();
        r.delete_subject("d", false).unwrap();
        r.delete_subject("d", true).unwrap();
        r.set_setting(Some("a"), Compatibility::Full).unwrap();
        r.set_setting(None, Compatibility::None).unwrap();
        r.set_setting(Some("b"), Mode::Readonly).unwrap();
        (dir, r)
    }

    #[test]
    fn a_view_that_applies_a_registrys_state_serves_what_it_serves() {
        let (_dir, r) = busy();
        let view = Registry::temporary().unwrap();
        for (offset, change) in r.state().unwrap().iter().enumerate() {
            let (key, value) = change.encode();
            view.apply_record(offset as i64, &key, value.as_deref()).unwrap();
        }
        assert_eq!(served(&view), served(&r));
        assert_eq!(view.log_offset().unwrap(), Some(r.state().unwrap().len() as i64));
        let last = r.state().unwrap().last().unwrap().encode();
        assert_eq!(view.last_record().unwrap(), Some(last));
        // The purged subject's schema keeps its id: an id never loses its meaning.
        assert_eq!(view.schema_by_id(4).unwrap(), r#"{"type":"long"}"#);
        view.reset_log_offset().unwrap();
        assert_eq!(view.log_offset().unwrap(), None);
        assert_eq!(view.last_record().unwrap(), None);
        view.apply_record(0, b"k", None).unwrap();
        assert_eq!(view.last_record().unwrap(), Some((b"k".to_vec(), None)));
    }

    #[test]
    fn a_view_of_the_compacted_log_equals_a_view_of_every_record() {
        // Every change as the writer made it, then only the last record of each key, in
        // order: what compaction leaves.
        let (_dir, r) = open();
        let journal = Arc::new(Recorder::default());
        let r = r.with_journal(journal.clone());
        *journal.view.lock().unwrap() = Some(r.clone());
        r.register("a", V1).unwrap();
        r.register("a", V2).unwrap();
        r.delete_version("a", VersionSelector::Number(1), false).unwrap();
        r.delete_version("a", VersionSelector::Number(1), true).unwrap();
        r.set_setting(Some("a"), Mode::Readonly).unwrap();
        r.delete_setting::<Mode>("a").unwrap();
        r.set_setting(None, Compatibility::Forward).unwrap();
        *journal.view.lock().unwrap() = None;
        let records = journal.records.lock().unwrap().clone();
        let full = Registry::temporary().unwrap();
        for (offset, (key, value)) in records.iter().enumerate() {
            full.apply_record(offset as i64, key, value.as_deref()).unwrap();
        }
        let compacted = Registry::temporary().unwrap();
        for (offset, (key, value)) in records.iter().enumerate() {
            if records[offset + 1..].iter().all(|(later, _)| later != key) {
                compacted.apply_record(offset as i64, key, value.as_deref()).unwrap();
            }
        }
        assert_eq!(served(&full), served(&r));
        assert_eq!(served(&compacted), served(&r));
        assert_eq!(r.versions("a", true).unwrap(), [2]);
    }

    #[test]
    fn ids_arriving_out_of_order_keep_the_lowest_for_an_identity_and_the_next_id_past_all() {
        let view = Registry::temporary().unwrap();
        let put = |offset: i64, change: Change| {
            let (key, value) = change.encode();
            view.apply_record(offset, &key, value.as_deref()).unwrap();
        };
        put(0, Change::Schema { id: 5, text: V1.into() });
        put(1, Change::Schema { id: 2, text: V1_SPACED.into() });
        put(2, Change::Version { subject: "s".into(), version: 1, id: 2, deleted: false });
        // The same identity under two ids (only two writers at once could do it): a lookup
        // finds the lowest, and a new id goes past every one seen.
        assert_eq!(view.lookup("s", V1, false).unwrap().id, 2);
        assert_eq!(view.tree.get(NEXT_ID).unwrap().map(|v| read_u32(&v).unwrap()), Some(6));
        // A schema that is not Avro, and a record that is not a change, are skipped and
        // counted as applied.
        put(3, Change::Schema { id: 9, text: "not a schema".into() });
        view.apply_record(4, b"garbage", None).unwrap();
        assert!(matches!(view.schema_by_id(9), Err(RegistryError::SchemaNotFound(9))));
        assert_eq!(view.log_offset().unwrap(), Some(5));
        // A later record giving an id another text is skipped, and the view says what it
        // kept, for the writer to put back.
        let (key, value) = Change::Schema { id: 5, text: V2.into() }.encode();
        let kept = view.apply_record(5, &key, value.as_deref()).unwrap();
        assert_eq!(kept, Some(Change::Schema { id: 5, text: V1.into() }));
        assert_eq!(view.schema_by_id(5).unwrap(), V1);
        let v2_identity = canon_key(&identity(&parse(V2).unwrap(), V2));
        assert_eq!(view.tree.get(v2_identity).unwrap(), None);
        // A higher id with a known identity never takes it over.
        put(6, Change::Schema { id: 7, text: V1.into() });
        assert_eq!(view.lookup("s", V1, false).unwrap().id, 2);
        // A version keeps its id (a soft delete changes only the flag); a version record
        // pointing at another id is skipped, and a record's numbers stay in Java's int range.
        let (key, value) = Change::Version { subject: "s".into(), version: 1, id: 7, deleted: false }.encode();
        assert_eq!(
            view.apply_record(7, &key, value.as_deref()).unwrap(),
            Some(Change::Version { subject: "s".into(), version: 1, id: 2, deleted: false })
        );
        put(8, Change::Version { subject: "s".into(), version: 1, id: 2, deleted: true });
        assert_eq!(view.versions("s", true).unwrap(), [1]);
        assert!(view.versions("s", false).is_err());
        put(9, Change::Schema { id: u32::MAX, text: V2.into() });
        put(10, Change::Version { subject: "s".into(), version: u32::MAX, id: 2, deleted: false });
        assert_eq!(view.tree.get(NEXT_ID).unwrap().map(|v| read_u32(&v).unwrap()), Some(8));
        assert_eq!(view.versions("s", true).unwrap(), [1]);
        assert_eq!(view.log_offset().unwrap(), Some(11));
    }

    #[test]
    fn a_write_that_loses_its_schema_id_to_another_writer_leaves_nothing_registered() {
        /// A journal whose topic already got another writer's schema under the next id.
        struct Raced(Mutex<Option<Registry>>, Mutex<i64>);
        impl Journal for Raced {
            fn catch_up(&self) -> Result<(), String> {
                Ok(())
            }
            fn append(&self, changes: &[Change]) -> Result<(), String> {
                let view = self.0.lock().unwrap().clone().unwrap();
                let mut offset = self.1.lock().unwrap();
                let theirs = Change::Schema { id: 1, text: V2.into() };
                for change in std::iter::once(&theirs).chain(changes) {
                    let (key, value) = change.encode();
                    view.apply_record(*offset, &key, value.as_deref()).map_err(|e| e.to_string())?;
                    *offset += 1;
                }
                Ok(())
            }
        }
        let (_dir, r) = open();
        let journal = Arc::new(Raced(Mutex::new(None), Mutex::new(0)));
        let view = r.with_journal(journal.clone());
        *journal.0.lock().unwrap() = Some(view.clone());
        let refused = view.register("a", V1).unwrap_err();
        assert!(matches!(&refused, RegistryError::Log(m) if m.contains("another writer")), "{refused}");
        *journal.0.lock().unwrap() = None;
        // Version 1 of `a` would have named the other writer's schema: it is gone.
        assert!(view.subjects(true).unwrap().is_empty(), "{:?}", view.subjects(true));
        assert_eq!(view.schema_by_id(1).unwrap(), V2);
    }

    #[test]
    fn records_the_registry_never_writes_are_skipped() {
        let view = Registry::temporary().unwrap();
        let put = |offset: i64, change: Change| {
            let (key, value) = change.encode();
            view.apply_record(offset, &key, value.as_deref()).unwrap()
        };
        put(0, Change::Schema { id: 1, text: V1.into() });
        put(1, Change::Version { subject: "s".into(), version: 1, id: 1, deleted: false });
        // A tombstone for a live version: the registry deletes for good only soft-deleted ones.
        let kept = put(2, Change::Purge { subject: "s".into(), version: 1 });
        assert_eq!(kept, Some(Change::Version { subject: "s".into(), version: 1, id: 1, deleted: false }));
        assert_eq!(view.versions("s", false).unwrap(), [1]);
        // An id far past the next one would use up the ids left.
        put(3, Change::Schema { id: MAX_ID, text: V2.into() });
        assert!(view.schema_by_id(MAX_ID).is_err());
        assert_eq!(view.tree.get(NEXT_ID).unwrap().map(|v| read_u32(&v).unwrap()), Some(2));
        // A key spelled otherwise than the registry spells it.
        view.apply_record(4, br#"{"id":1,"kind":"schema"}"#, Some(br#"{"schema":"\"string\""}"#)).unwrap();
        assert_eq!(view.schema_by_id(1).unwrap(), V1);
        assert_eq!(view.log_offset().unwrap(), Some(5));
    }

    #[test]
    fn a_version_whose_schema_never_came_does_not_block_registrations() {
        let view = Registry::temporary().unwrap();
        let (key, value) = Change::Version { subject: "ghost".into(), version: 1, id: 999, deleted: false }.encode();
        view.apply_record(0, &key, value.as_deref()).unwrap();
        let check: ContractCheck = Arc::new(|_: &str, _: &str, _: &[(String, String, bool)]| Ok(()));
        let view = view.with_contract_check(check);
        assert_eq!(view.register("a", V1).unwrap(), 1);
    }

    #[test]
    fn a_view_decides_a_write_only_once_it_has_caught_up() {
        struct Behind;
        impl Journal for Behind {
            fn catch_up(&self) -> Result<(), String> {
                Err("the view applied up to offset 3 of 9".into())
            }
            fn append(&self, _: &[Change]) -> Result<(), String> {
                Ok(())
            }
        }
        let (_dir, r) = open();
        let view = r.clone().with_journal(Arc::new(Behind));
        for refused in [view.register("a", V1).map(|_| ()), view.delete_subject("a", false).map(|_| ())] {
            assert!(matches!(&refused, Err(RegistryError::Log(m)) if m.contains("offset 3 of 9")), "{refused:?}");
        }
        assert!(r.subjects(true).unwrap().is_empty());
    }

    #[test]
    fn a_view_that_takes_no_writes_stores_nothing_when_its_journal_refuses() {
        struct Refusing;
        impl Journal for Refusing {
            fn catch_up(&self) -> Result<(), String> {
                Ok(())
            }
            fn append(&self, _: &[Change]) -> Result<(), String> {
                Err("this process follows the topic and takes no writes".into())
            }
        }
        let (_dir, r) = open();
        r.register("a", V1).unwrap();
        let view = r.clone().with_journal(Arc::new(Refusing));
        // A schema the subject has is found without a write.
        assert_eq!(view.register("a", V1).unwrap(), 1);
        let refused = view.register("a", V2).unwrap_err();
        assert!(matches!(&refused, RegistryError::Log(m) if m.contains("takes no writes")), "{refused}");
        assert!(view.set_setting(None, Mode::Readonly).is_err());
        assert_eq!(r.versions("a", false).unwrap(), [1]);
        assert_eq!(r.global_setting::<Mode>().unwrap(), Mode::Readwrite);
    }

    /// A journal that records each change as the topic would carry it and applies it to the
    /// view, as the Kafka journal does (the change lands in the view only from the record).
    #[derive(Default)]
    struct Recorder {
        records: Mutex<Vec<Record>>,
        view: Mutex<Option<Registry>>,
    }

    impl Journal for Recorder {
        fn catch_up(&self) -> Result<(), String> {
            Ok(())
        }
        fn append(&self, changes: &[Change]) -> Result<(), String> {
            let view = self.view.lock().unwrap().clone().ok_or("no view")?;
            let mut records = self.records.lock().unwrap();
            for change in changes {
                let (key, value) = change.encode();
                view.apply_record(records.len() as i64, &key, value.as_deref()).map_err(|e| e.to_string())?;
                records.push((key, value));
            }
            Ok(())
        }
    }

    #[test]
    fn ids_are_stable_across_subjects_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, again) = {
            let registry = Registry::open(dir.path()).unwrap();
            let a = registry.register("t-value", V1).unwrap();
            let again = registry.register("t-value", V1_SPACED).unwrap();
            let b = registry.register("t-value", V2).unwrap();
            (a, b, again)
        };
        assert_eq!(a, again, "same canonical form must give the same id");
        assert_ne!(a, b);
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.versions("t-value", false).unwrap(), vec![1, 2]);
        assert_eq!(registry.register("other-value", V1).unwrap(), a);
        assert_eq!(registry.version("other-value", VersionSelector::Latest, false).unwrap().version, 1);
        let latest = registry.version("t-value", VersionSelector::Latest, false).unwrap();
        assert_eq!((latest.id, latest.version), (b, 2));
        assert_eq!(registry.subjects(false).unwrap(), vec!["other-value", "t-value"]);
        assert_eq!(
            registry.subject_versions_of(a, false).unwrap(),
            vec![("other-value".into(), 1), ("t-value".into(), 1)]
        );
    }

    #[test]
    fn a_changed_contract_default_or_doc_is_a_new_version_and_key_order_is_not() {
        let (_dir, registry) = open();
        let annotated = |checks: &str, json: &str| {
            format!(
                r#"{{"type":"record","name":"R","govex.key":"a","fields":[{{"name":"a","type":"string","govex.checks":[{checks}],"govex.json":{json}}}]}}"#
            )
        };
        let first =
            registry.register("t-value", &annotated(r#""licence-id""#, r#"{"maxLength":9,"title":"x"}"#)).unwrap();
        let reordered = annotated(r#""licence-id""#, r#"{"title":"x","maxLength":9}"#);
        assert_eq!(registry.register("t-value", &reordered).unwrap(), first, "key order is not identity");
        let other = registry.register("t-value", &annotated(r#""gbt2260-division""#, r#"{"maxLength":9,"title":"x"}"#));
        assert_ne!(other.unwrap(), first, "another check is another version");
        assert_eq!(registry.versions("t-value", false).unwrap(), vec![1, 2]);
        assert_eq!(registry.register("u-value", V1).unwrap(), registry.register("v-value", V1_SPACED).unwrap());
        let documented = V1.replace(r#""name":"R","#, r#""name":"R","doc":"记录。A record.","#);
        assert_ne!(registry.register("u-value", &documented).unwrap(), registry.register("u-value", V1).unwrap());
        let defaulted = V2.replace(r#""default":"""#, r#""default":"x""#);
        assert_ne!(registry.register("w-value", V2).unwrap(), registry.register("w-value", &defaulted).unwrap());
    }

    #[test]
    fn a_store_indexed_the_old_way_is_reindexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"type":"record","name":"R","govex.key":"a","fields":[{"name":"a","type":"string"}]}"#;
        let id = {
            let registry = Registry::open(dir.path()).unwrap();
            let id = registry.register("t-value", text).unwrap();
            // As a store written before annotations counted holds it.
            let canonical = parse(text).unwrap().canonical_form();
            registry.tree.remove(canon_key(&identity(&parse(text).unwrap(), text))).unwrap();
            registry.tree.insert(canon_key(&canonical), &id.to_be_bytes()).unwrap();
            registry.tree.remove(IDENTITY).unwrap();
            id
        };
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.register("t-value", text).unwrap(), id, "the same schema keeps its id");
        assert_eq!(registry.versions("t-value", false).unwrap(), vec![1], "and adds no version");
    }

    #[test]
    fn a_contract_check_refuses_before_anything_is_stored() {
        let (_dir, registry) = open();
        let registry = registry.with_contract_check(Arc::new(|_, text: &str, _: &[(String, String, bool)]| match text
            .contains("\"b\"")
        {
            true => Err("field b: no".into()),
            false => Ok(()),
        }));
        registry.register("t-value", V1).unwrap();
        let refused = registry.register("t-value", V2).unwrap_err().to_string();
        assert!(refused.contains("the record type cannot be used: field b: no"), "{refused}");
        assert_eq!(registry.versions("t-value", false).unwrap(), vec![1]);
        assert!(registry.schema_by_id(2).is_err(), "no id was taken");
    }

    #[test]
    fn lookups_of_missing_things_say_what_is_missing() {
        let (_dir, registry) = open();
        assert!(matches!(registry.schema_by_id(7), Err(RegistryError::SchemaNotFound(7))));
        assert!(matches!(
            registry.version("nope", VersionSelector::Latest, false),
            Err(RegistryError::SubjectNotFound(_))
        ));
        registry.register("s", V1).unwrap();
        assert!(matches!(
            registry.version("s", VersionSelector::Number(3), false),
            Err(RegistryError::VersionNotFound { .. })
        ));
        assert!(matches!(registry.register("s", "{not json"), Err(RegistryError::InvalidSchema(_))));
        assert!(matches!(registry.lookup("s", V2, false), Err(RegistryError::SchemaNotInSubject)));
        assert_eq!(registry.lookup("s", V1_SPACED, false).unwrap().version, 1);
    }

    #[test]
    fn incompatible_and_read_only_registrations_store_nothing() {
        let (_dir, registry) = open();
        registry.register("s", V1).unwrap();
        registry.register("s", V2).unwrap();
        let error = registry.register("s", V3_BREAKS).unwrap_err();
        let RegistryError::Incompatible { reasons, .. } = &error else { panic!("{error:?}") };
        assert!(reasons[0].contains("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1"), "{reasons:?}");
        assert_eq!(registry.versions("s", false).unwrap(), vec![1, 2]);
        assert!(registry.schema_by_id(3).is_err(), "no id was taken");

        registry.set_setting(Some("s"), Compatibility::None).unwrap();
        registry.set_setting(Some("s"), Mode::Readonly).unwrap();
        assert!(matches!(registry.register("s", V3_BREAKS), Err(RegistryError::ReadOnly(_))));
        assert_eq!(registry.delete_setting::<Mode>("s").unwrap(), Mode::Readonly);
        assert_eq!(registry.register("s", V3_BREAKS).unwrap(), 3);
        assert_eq!(registry.delete_setting::<Compatibility>("s").unwrap(), Compatibility::None);
        assert!(matches!(
            registry.delete_setting::<Compatibility>("s"),
            Err(RegistryError::SubjectCompatibilityNotConfigured(_))
        ));
    }

    #[test]
    fn deletes_follow_confluents_soft_then_permanent_rules() {
        let (_dir, registry) = open();
        registry.register("s", V1).unwrap();
        let v2 = registry.register("s", V2).unwrap();
        assert!(matches!(
            registry.delete_version("s", VersionSelector::Number(2), true),
            Err(RegistryError::VersionNotSoftDeleted { .. })
        ));
        assert_eq!(registry.delete_version("s", VersionSelector::Number(2), false).unwrap(), 2);
        assert!(matches!(
            registry.delete_version("s", VersionSelector::Number(2), false),
            Err(RegistryError::VersionSoftDeleted { .. })
        ));
        assert_eq!(registry.versions("s", false).unwrap(), vec![1]);
        assert_eq!(registry.versions("s", true).unwrap(), vec![1, 2]);
        assert_eq!(registry.schema_by_id(v2).unwrap(), V2, "a soft-deleted version's schema stays readable by id");
        assert!(matches!(registry.delete_subject("s", true), Err(RegistryError::SubjectNotSoftDeleted(_))));
        assert_eq!(registry.delete_subject("s", false).unwrap(), vec![1]);
        assert!(matches!(registry.delete_subject("s", false), Err(RegistryError::SubjectSoftDeleted(_))));
        assert!(registry.subjects(false).unwrap().is_empty());
        assert_eq!(registry.subjects(true).unwrap(), vec!["s"]);
        assert_eq!(registry.delete_subject("s", true).unwrap(), vec![1, 2]);
        assert!(registry.subjects(true).unwrap().is_empty());
        // Registering again reuses the id and starts the subject afresh.
        assert_eq!(registry.register("s", V2).unwrap(), v2);
        assert_eq!(registry.versions("s", false).unwrap(), vec![1]);
    }

    #[test]
    fn control_characters_in_subjects_are_refused_and_cannot_corrupt_a_neighbour() {
        let (_dir, registry) = open();
        registry.register("t-value", V1).unwrap();
        let long = "a".repeat(MAX_SUBJECT_BYTES + 1);
        for subject in [
            "t-value\0x",
            "t-value\nx",
            "",
            "  ",
            "t\u{202E}eulav",
            "t\u{200B}-value",
            "t\u{061C}-value",
            "\u{3164}",
            "t\u{E0041}",
            long.as_str(),
        ] {
            assert!(matches!(registry.register(subject, V2), Err(RegistryError::InvalidSubject(_))), "{subject:?}");
            assert!(matches!(
                registry.set_setting(Some(subject), Compatibility::None),
                Err(RegistryError::InvalidSubject(_))
            ));
        }
        // A store written before subjects were checked may hold such a key: its neighbour
        // and the subject list still read.
        let mut batch = sled::Batch::default();
        batch.insert(version_key("t-value\0x", 1), &1u32.to_be_bytes());
        registry.commit(batch).unwrap();
        assert_eq!(registry.versions("t-value", false).unwrap(), [1]);
        assert!(registry.subjects(false).unwrap().contains(&"t-value".to_owned()));
        assert_eq!(split_version_key(&version_key("a\0b", 256)).unwrap(), ("a\0b".to_owned(), 256));
    }

    #[test]
    fn version_selectors_parse_like_confluent() {
        assert!(matches!("latest".parse(), Ok(VersionSelector::Latest)));
        assert!(matches!("-1".parse(), Ok(VersionSelector::Latest)));
        assert!(matches!("4".parse(), Ok(VersionSelector::Number(4))));
        assert!(matches!("0".parse::<VersionSelector>(), Err(RegistryError::InvalidVersion(_))));
        assert!(matches!("x".parse::<VersionSelector>(), Err(RegistryError::InvalidVersion(_))));
    }
}
