//! The e-licence store in sled: licences by identifier, holder, and type and issuer; the
//! applied event ids; and the hash-chained use log.
//!
//! Trees (one sled database under `data_dir/elicense`):
//!
//! | tree       | key                                  | value                    |
//! |------------|--------------------------------------|--------------------------|
//! | `licences` | licence id                           | [`StoredLicence`] (JSON) |
//! | `holders`  | holder id `\0` licence id            | empty                    |
//! | `types`    | type code `\0` issuer `\0` licence id | empty                    |
//! | `events`   | event id (16 bytes)                  | empty                    |
//! | `audit`    | sequence (u64 BE)                    | [`AuditEntry`] (JSON)    |
//! | `uses`     | licence id `\0` sequence (u64 BE)    | empty                    |
//!
//! A licence and its index entries and event id are written in one transaction, so a crash
//! leaves a record applied or not applied, never half.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use uuid::Uuid;

/// Licence status codes (01 valid … 99 other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// 01 有效.
    Valid,
    /// 02 暂停.
    Suspended,
    /// 03 撤回.
    Withdrawn,
    /// 04 注销.
    Cancelled,
    /// 05 过期.
    Expired,
    /// 06 转出.
    Transferred,
    /// 07 吊销.
    Revoked,
    /// 99 其他.
    Other,
}

impl Status {
    /// The national status code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Valid => "01",
            Self::Suspended => "02",
            Self::Withdrawn => "03",
            Self::Cancelled => "04",
            Self::Expired => "05",
            Self::Transferred => "06",
            Self::Revoked => "07",
            Self::Other => "99",
        }
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    ///
    /// A licence is issued valid; a valid one may be suspended, withdrawn, cancelled,
    /// expired, transferred out or revoked; a suspended one may be reinstated or ended in any
    /// of those ways; the ends are final. A renewal or change is a new identifier, not a
    /// transition.
    pub fn may_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Valid, Suspended | Withdrawn | Cancelled | Expired | Transferred | Revoked | Other)
                | (Suspended, Valid | Withdrawn | Cancelled | Expired | Transferred | Revoked | Other)
                | (Other, Valid | Suspended | Withdrawn | Cancelled | Expired | Transferred | Revoked)
        )
    }
}

/// A licence as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLicence {
    /// Identifier.
    pub licence_id: String,
    /// Version (from the identifier).
    pub version: u16,
    /// Type code.
    pub type_code: String,
    /// Type name.
    pub type_name: String,
    /// Number as printed.
    pub licence_number: String,
    /// Issuer code.
    pub issuer_code: String,
    /// Issuer name.
    pub issuer_name: String,
    /// Holder's kind of document.
    pub holder_identifier_type: String,
    /// Holder's document number (personal data).
    pub holder_identifier_number: String,
    /// Holder's name (personal data).
    pub holder_name: String,
    /// Issue time, ms since the epoch.
    pub issued_at: i64,
    /// First day of validity, days since the epoch.
    pub valid_from: i32,
    /// Last day of validity, days since the epoch.
    pub valid_until: Option<i32>,
    /// Status.
    pub status: Status,
    /// Surface fields.
    pub surface: std::collections::BTreeMap<String, String>,
    /// The identifier this one renews or changes.
    pub previous_licence_id: Option<String>,
    /// The identifier that renewed or changed this one.
    pub superseded_by: Option<String>,
    /// SHA-256 of the content, hex.
    pub content_hash: String,
    /// Issuing division.
    pub division: String,
    /// Event id of the last record applied.
    pub last_event_id: Uuid,
    /// Event time (ms) of the last record applied; older records never overwrite newer ones.
    pub last_event_ms: u64,
}

/// One use of a licence, in the append-only, hash-chained use log.
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
    /// What was done: `get`, `verify`, `holder`, `uses`.
    pub action: String,
    /// The licence concerned (or the masked holder for holder look-ups).
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

/// What applying a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored as a new licence.
    Inserted,
    /// Stored over the licence's earlier state.
    Updated,
    /// Already applied (same event id).
    Duplicate,
    /// Older than what the store holds.
    Stale,
}

/// Why a record cannot be applied (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The identifier's check character or shape is wrong.
    #[error("licence identifier invalid ({0})")]
    InvalidIdentifier(&'static str),
    /// The lifecycle does not allow this change.
    #[error("lifecycle: {from:?} cannot become {to:?}")]
    Lifecycle {
        /// Stored status.
        from: Status,
        /// Requested status.
        to: Status,
    },
    /// A first record that is not an issue.
    #[error("a licence is issued VALID; the first record is {0:?}")]
    NotIssued(Status),
    /// Content changed without a new identifier.
    #[error("content changed without a new licence version")]
    ContentChanged,
}

impl ApplyError {
    /// A short class for metrics and dead letters.
    pub fn class(&self) -> &'static str {
        match self {
            Self::InvalidIdentifier(_) => "invalid_identifier",
            Self::Lifecycle { .. } => "lifecycle",
            Self::NotIssued(_) => "not_issued",
            Self::ContentChanged => "content_changed",
        }
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

/// The e-licence store. Cheap to clone.
#[derive(Clone)]
pub struct LicenceStore {
    db: sled::Db,
    licences: sled::Tree,
    holders: sled::Tree,
    types: sled::Tree,
    events: sled::Tree,
    audit: sled::Tree,
    uses: sled::Tree,
    /// Appends to the chain are serialised: each needs the hash of the one before.
    audit_lock: std::sync::Arc<parking_lot::Mutex<()>>,
    /// Concurrent lanes share fsyncs.
    group_flush: std::sync::Arc<crate::flush::GroupFlush>,
}

fn sled_error(e: sled::transaction::TransactionError<()>) -> sled::Error {
    match e {
        sled::transaction::TransactionError::Storage(e) => e,
        sled::transaction::TransactionError::Abort(()) => sled::Error::Unsupported("transaction aborted".into()),
    }
}

impl LicenceStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        let db = govex_schemas::store::open_sled(dir)?;
        Ok(Self {
            licences: db.open_tree("licences")?,
            holders: db.open_tree("holders")?,
            types: db.open_tree("types")?,
            events: db.open_tree("events")?,
            audit: db.open_tree("audit")?,
            uses: db.open_tree("uses")?,
            group_flush: std::sync::Arc::new(crate::flush::GroupFlush::new(db.clone())),
            db,
            audit_lock: Default::default(),
        })
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.group_flush.flush().await
    }

    /// A licence by identifier.
    pub fn get(&self, licence_id: &str) -> Result<Option<StoredLicence>, sled::Error> {
        Ok(self.licences.get(licence_id)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// A holder's licences, optionally of one type.
    pub fn by_holder(&self, holder: &str, type_code: Option<&str>) -> Result<Vec<StoredLicence>, sled::Error> {
        let mut prefix = holder.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.holders.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(licence) = self.get(&id)? {
                if type_code.is_none_or(|t| t == licence.type_code) {
                    out.push(licence);
                }
            }
        }
        Ok(out)
    }

    /// Licences of a type and issuer.
    pub fn by_type_and_issuer(&self, type_code: &str, issuer: &str) -> Result<Vec<StoredLicence>, sled::Error> {
        let prefix = format!("{type_code}\0{issuer}\0");
        let mut out = Vec::new();
        for entry in self.types.scan_prefix(prefix.as_bytes()) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some(licence) = self.get(&id)? {
                out.push(licence);
            }
        }
        Ok(out)
    }

    /// Number of licences.
    pub fn len(&self) -> usize {
        self.licences.len()
    }

    /// Whether the store holds no licence.
    pub fn is_empty(&self) -> bool {
        self.licences.is_empty()
    }

    /// Every licence, in identifier order (for rebuild comparisons and exports).
    pub fn all(&self) -> Result<Vec<StoredLicence>, sled::Error> {
        self.licences
            .iter()
            .values()
            .map(|v| {
                v.map(|bytes| {
                    serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| unreachable!("the store writes only StoredLicence JSON"))
                })
            })
            .collect()
    }

    /// Applies one licence record carried by event `event_id` at `event_ms`.
    pub fn apply(&self, incoming: StoredLicence, event_id: Uuid) -> Result<Result<Applied, ApplyError>, sled::Error> {
        if self.events.contains_key(event_id.as_bytes())? {
            return Ok(Ok(Applied::Duplicate));
        }
        if let Err(rule) = govex_bus::identifiers::licence_id(&incoming.licence_id) {
            return Ok(Err(ApplyError::InvalidIdentifier(rule)));
        }
        let existing = self.get(&incoming.licence_id)?;
        let mut to_store = incoming.clone();
        match &existing {
            None if incoming.status != Status::Valid => return Ok(Err(ApplyError::NotIssued(incoming.status))),
            None => {}
            Some(current) if incoming.last_event_ms < current.last_event_ms => {
                // An older record arriving late: remember its event, change nothing.
                self.events.insert(event_id.as_bytes(), &[])?;
                return Ok(Ok(Applied::Stale));
            }
            Some(current) => {
                if current.content_hash != incoming.content_hash {
                    return Ok(Err(ApplyError::ContentChanged));
                }
                if current.status == incoming.status {
                    self.events.insert(event_id.as_bytes(), &[])?;
                    return Ok(Ok(Applied::Duplicate));
                }
                if !current.status.may_become(incoming.status) {
                    return Ok(Err(ApplyError::Lifecycle { from: current.status, to: incoming.status }));
                }
                to_store.superseded_by = current.superseded_by.clone();
            }
        }
        let previous = match &incoming.previous_licence_id {
            Some(previous_id) if existing.is_none() => self.get(previous_id)?,
            _ => None,
        };
        let value = serde_json::to_vec(&to_store).unwrap_or_default();
        let holder_key = format!("{}\0{}", to_store.holder_identifier_number, to_store.licence_id);
        let type_key = format!("{}\0{}\0{}", to_store.type_code, to_store.issuer_code, to_store.licence_id);
        (&self.licences, &self.holders, &self.types, &self.events)
            .transaction(|(licences, holders, types, events)| {
                licences.insert(to_store.licence_id.as_bytes(), value.as_slice())?;
                holders.insert(holder_key.as_bytes(), &[])?;
                types.insert(type_key.as_bytes(), &[])?;
                events.insert(event_id.as_bytes(), &[])?;
                if let Some(previous) = &previous {
                    let mut previous = previous.clone();
                    previous.superseded_by = Some(to_store.licence_id.clone());
                    licences
                        .insert(previous.licence_id.as_bytes(), serde_json::to_vec(&previous).unwrap_or_default())?;
                }
                Ok(())
            })
            .map_err(sled_error)?;
        Ok(Ok(if existing.is_some() { Applied::Updated } else { Applied::Inserted }))
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
            .map_err(sled_error)?;
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
    pub fn copy_use_log_from(&self, other: &LicenceStore) -> Result<u64, sled::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn licence_id(serial: &str, version: u16) -> String {
        let body = format!("11100000000013338W011{}{serial}{version:03}", "11430000006122244L");
        let check = govex_bus::identifiers::mod37_36_check(&body).unwrap();
        format!("1.2.156.3005.2.11100000000013338W011.11430000006122244L.{serial}.{version:03}.{check}")
    }

    fn licence(id: &str, status: Status, event_ms: u64) -> StoredLicence {
        StoredLicence {
            licence_id: id.to_owned(),
            version: 1,
            type_code: "11100000000013338W011".into(),
            type_name: "不动产权证书".into(),
            licence_number: "陕(2026)汉阴县不动产权第0000001号".into(),
            issuer_code: "11430000006122244L".into(),
            issuer_name: "汉阴县不动产登记中心".into(),
            holder_identifier_type: "CITIZEN_ID".into(),
            holder_identifier_number: "11010519491231002X".into(),
            holder_name: "王小明".into(),
            issued_at: 1_790_000_000_000,
            valid_from: 20_000,
            valid_until: None,
            status,
            surface: Default::default(),
            previous_licence_id: None,
            superseded_by: None,
            content_hash: "ab".repeat(32),
            division: "610921".into(),
            last_event_id: Uuid::now_v7(),
            last_event_ms: event_ms,
        }
    }

    #[test]
    fn the_lifecycle_allows_and_refuses_transitions() {
        use Status::*;
        for (from, to, allowed) in [
            (Valid, Suspended, true),
            (Valid, Revoked, true),
            (Valid, Expired, true),
            (Valid, Transferred, true),
            (Suspended, Valid, true),
            (Suspended, Cancelled, true),
            (Revoked, Valid, false),
            (Cancelled, Suspended, false),
            (Expired, Valid, false),
            (Withdrawn, Valid, false),
            (Transferred, Valid, false),
        ] {
            assert_eq!(from.may_become(to), allowed, "{from:?} -> {to:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let store = LicenceStore::open(dir.path()).unwrap();
        let id = licence_id("SN0001", 1);
        assert_eq!(
            store.apply(licence(&id, Suspended, 1), Uuid::now_v7()).unwrap(),
            Err(ApplyError::NotIssued(Suspended))
        );
        assert_eq!(store.apply(licence(&id, Valid, 10), Uuid::now_v7()).unwrap(), Ok(Applied::Inserted));
        assert_eq!(store.apply(licence(&id, Revoked, 20), Uuid::now_v7()).unwrap(), Ok(Applied::Updated));
        assert_eq!(
            store.apply(licence(&id, Valid, 30), Uuid::now_v7()).unwrap(),
            Err(ApplyError::Lifecycle { from: Revoked, to: Valid })
        );
        let mut changed = licence(&id, Revoked, 40);
        changed.content_hash = "cd".repeat(32);
        assert_eq!(store.apply(changed, Uuid::now_v7()).unwrap(), Err(ApplyError::ContentChanged));
        let bad = licence(&id.replace("SN0001", "SN0002"), Valid, 1);
        assert_eq!(store.apply(bad, Uuid::now_v7()).unwrap(), Err(ApplyError::InvalidIdentifier("licence-id-check")));
        assert_eq!(store.get(&id).unwrap().unwrap().status, Revoked);
    }

    #[test]
    fn older_records_and_duplicates_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LicenceStore::open(dir.path()).unwrap();
        let id = licence_id("SN0003", 1);
        let issued = Uuid::now_v7();
        assert_eq!(store.apply(licence(&id, Status::Valid, 10), issued).unwrap(), Ok(Applied::Inserted));
        assert_eq!(store.apply(licence(&id, Status::Suspended, 30), Uuid::now_v7()).unwrap(), Ok(Applied::Updated));
        // The reinstatement happened before the suspension but arrives after it.
        assert_eq!(store.apply(licence(&id, Status::Valid, 20), Uuid::now_v7()).unwrap(), Ok(Applied::Stale));
        assert_eq!(store.get(&id).unwrap().unwrap().status, Status::Suspended);
        assert_eq!(store.apply(licence(&id, Status::Valid, 10), issued).unwrap(), Ok(Applied::Duplicate));
        assert_eq!(store.get(&id).unwrap().unwrap().status, Status::Suspended);
    }

    #[test]
    fn a_renewal_links_to_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LicenceStore::open(dir.path()).unwrap();
        let first = licence_id("SN0004", 1);
        let second = licence_id("SN0004", 2);
        store.apply(licence(&first, Status::Valid, 10), Uuid::now_v7()).unwrap().unwrap();
        let mut renewal = licence(&second, Status::Valid, 20);
        renewal.previous_licence_id = Some(first.clone());
        store.apply(renewal, Uuid::now_v7()).unwrap().unwrap();
        assert_eq!(store.get(&first).unwrap().unwrap().superseded_by.as_deref(), Some(second.as_str()));
        assert_eq!(store.by_holder("11010519491231002X", None).unwrap().len(), 2);
        assert_eq!(store.by_type_and_issuer("11100000000013338W011", "11430000006122244L").unwrap().len(), 2);
    }

    #[test]
    fn tampering_with_the_use_log_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LicenceStore::open(dir.path()).unwrap();
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
}
