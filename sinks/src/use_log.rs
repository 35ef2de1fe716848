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
//! An entry is on disk before the read it records is answered.

use std::{path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;

use crate::flush::GroupFlush;

/// The most characters a stated purpose may have.
pub const MAX_PURPOSE_CHARS: usize = 200;

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

/// The hash-chained use log. Cheap to clone.
#[derive(Clone)]
pub struct UseLog {
    db: sled::Db,
    audit: sled::Tree,
    uses: sled::Tree,
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

    /// Makes every entry so far durable.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.group_flush.flush().await
    }

    /// Appends one use to the chain and returns once it is on disk: the API answers only
    /// after this, so a use that was answered is never lost to a crash. Concurrent callers
    /// share one flush ([`GroupFlush`](crate::flush::GroupFlush)).
    pub async fn log_use(
        &self,
        caller: &str,
        purpose: &str,
        action: &str,
        subject: &str,
        result: &str,
    ) -> Result<AuditEntry, sled::Error> {
        let entry = self.record_use(caller, purpose, action, subject, result)?;
        self.flush().await?;
        Ok(entry)
    }

    /// Appends one use to the chain and returns it (written, not yet flushed: see
    /// [`LicenceStore::log_use`]).
    pub fn record_use(
        &self,
        caller: &str,
        purpose: &str,
        action: &str,
        subject: &str,
        result: &str,
    ) -> Result<AuditEntry, sled::Error> {
        let _guard = self.audit_lock.lock();
        let (seq, prev_hash) = match self.audit.last()? {
            Some((_, bytes)) => {
                let last: AuditEntry =
                    serde_json::from_slice(&bytes).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
                (last.seq + 1, last.hash)
            }
            None => (1, "0".repeat(64)),
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
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
        let value = serde_json::to_vec(&entry).unwrap_or_default();
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
        self.db.flush()?;
        Ok(copied)
    }

    /// The raw audit tree, for tools that must show or (in tests) tamper with entries.
    pub fn audit_tree(&self) -> &sled::Tree {
        &self.audit
    }
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
    govex_bus::problem::problem(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_with_the_use_log_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = UseLog::open_dir(dir.path()).unwrap();
        for n in 0..5 {
            store.record_use("provident-fund", "购房提取核验", "verify", &format!("L{n}"), "valid").unwrap();
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
            log.record_use("tax", "核验", "verify", subject, "valid").unwrap();
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
            log.record_use("tax", "核验", "verify", &format!("L{n}"), "valid").unwrap();
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
            log.record_use("tax", "核验", "verify", &format!("L{n}"), "valid").unwrap();
        }
        log.audit_tree().insert(3u64.to_be_bytes(), b"not json".as_slice()).unwrap();
        let (intact, broken) = log.verify_chain().unwrap();
        let broken = broken.unwrap();
        assert_eq!((intact, broken.seq), (2, 3));
        assert_eq!(broken.reason, "the entry does not parse");
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
