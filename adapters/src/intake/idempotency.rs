//! `Idempotency-Key` (IETF draft `draft-ietf-httpapi-idempotency-key-header`): a retried
//! request with the same key gets the first answer and publishes nothing new.
//!
//! A key is written as *pending*, with a fingerprint of the body and the time it was first
//! seen, before anything of its request is enqueued; the answer replaces it once given. So:
//! - a retry while the first request is still publishing waits for it and gets its answer
//!   (publishing runs in a task of its own, which a client that hangs up does not cancel);
//! - a retry that finds the key pending after a crash publishes again with the same event
//!   ids (derived from the key and the line, see `EventIds`), which the sinks drop;
//! - a retry with another body is refused (422), as the draft says.
//!
//! Keys are kept in sled for a configured window, so a retry after a node restart is
//! answered the same way; expired keys are purged as new ones are written (a time index
//! makes that a range scan). Every call that touches the disk is blocking and is made off the
//! async workers by the caller (`spawn_blocking`).

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// An answer given once, to be given again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: String,
}

/// What the store holds for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// SHA-256 of the request body (hex): the same key with another body is refused.
    pub fingerprint: String,
    /// When the key was first seen (ms since the epoch); event ids derive their time from it.
    pub first_seen_ms: u64,
    /// The answer, once given; `None` while the request is (or was, before a crash) pending.
    pub answer: Option<StoredAnswer>,
}

/// The idempotency store. Cheap to clone.
#[derive(Clone)]
pub struct IdempotencyStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// scoped key → `KeyRecord` (JSON).
    keys: sled::Tree,
    /// first-seen ms (big-endian) ++ scoped key → (): what the purge walks.
    by_time: sled::Tree,
    db: sled::Db,
    window: Duration,
    /// One lock per key being answered, so that concurrent retries wait for the first.
    in_progress: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Milliseconds since the Unix epoch.
pub use govex_schemas::zone::now_ms;

fn time_key(first_seen_ms: u64, key: &str) -> Vec<u8> {
    let mut index = first_seen_ms.to_be_bytes().to_vec();
    index.extend_from_slice(key.as_bytes());
    index
}

impl IdempotencyStore {
    /// Its sled database (for backups).
    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Opens the store under `dir` and drops keys older than the window.
    pub fn open(dir: &Path, window: Duration) -> Result<Self, sled::Error> {
        let db = govex_schemas::store::open_sled(dir)?;
        let keys = db.open_tree("idempotency-keys")?;
        let by_time = db.open_tree("idempotency-by-time")?;
        // Answers of the earlier format (before keys were recorded as pending) carry no
        // fingerprint; they are dropped rather than replayed to a body they cannot be
        // compared with.
        db.drop_tree("idempotency")?;
        let store = Self { inner: Arc::new(Inner { keys, by_time, db, window, in_progress: Mutex::default() }) };
        store.purge_expired()?;
        Ok(store)
    }

    /// What is recorded for `key`, if it was first seen within the window.
    pub fn get(&self, key: &str) -> Result<Option<KeyRecord>, sled::Error> {
        let Some(bytes) = self.inner.keys.get(key)? else { return Ok(None) };
        let Ok(record) = serde_json::from_slice::<KeyRecord>(&bytes) else { return Ok(None) };
        let fresh = now_ms().saturating_sub(record.first_seen_ms) <= self.window_ms();
        Ok(fresh.then_some(record))
    }

    fn window_ms(&self) -> u64 {
        self.inner.window.as_millis() as u64
    }

    /// Records `key` as pending (no answer yet); durable before it returns. Expired keys are
    /// purged on the way.
    pub fn put_pending(&self, key: &str, fingerprint: &str, first_seen_ms: u64) -> Result<(), sled::Error> {
        self.write(key, &KeyRecord { fingerprint: fingerprint.to_owned(), first_seen_ms, answer: None })
    }

    /// Records the answer to `key`; durable before it returns.
    pub fn put_answer(&self, key: &str, record: &KeyRecord, answer: StoredAnswer) -> Result<(), sled::Error> {
        self.write(key, &KeyRecord { answer: Some(answer), ..record.clone() })
    }

    fn write(&self, key: &str, record: &KeyRecord) -> Result<(), sled::Error> {
        self.purge_expired()?;
        // A record of strings and numbers always serializes; if it ever did not, nothing
        // (no empty value) is stored and the caller sees a storage error.
        let bytes = serde_json::to_vec(record)
            .map_err(|e| sled::Error::Unsupported(format!("an idempotency record does not serialize: {e}")))?;
        self.inner.by_time.insert(time_key(record.first_seen_ms, key), &[])?;
        self.inner.keys.insert(key, bytes)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Holds `key` until the guard is dropped: a concurrent request with the same key waits
    /// and then finds the first answer.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.inner.in_progress.lock().entry(key.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    /// Forgets the lock of `key` once nobody waits on it.
    pub fn release(&self, key: &str) {
        let mut in_progress = self.inner.in_progress.lock();
        if in_progress.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            in_progress.remove(key);
        }
    }

    /// Drops keys first seen before the window; returns how many.
    pub fn purge_expired(&self) -> Result<usize, sled::Error> {
        let cutoff = now_ms().saturating_sub(self.window_ms());
        let mut removed = 0;
        for entry in self.inner.by_time.range(..cutoff.to_be_bytes().to_vec()) {
            let (index, _) = entry?;
            let key = &index[8..];
            // A key seen again later is indexed again under its new time; only the entry
            // whose time matches is the key's own.
            let current = self
                .inner
                .keys
                .get(key)?
                .and_then(|bytes| serde_json::from_slice::<KeyRecord>(&bytes).ok())
                .map(|r| r.first_seen_ms);
            if current.is_none_or(|seen| seen < cutoff) {
                self.inner.keys.remove(key)?;
                removed += 1;
            }
            self.inner.by_time.remove(index)?;
        }
        Ok(removed)
    }

    /// Keys held, answered or pending (for tests and the purge's metrics).
    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_key_keeps_its_time_and_fingerprint_when_answered_and_expired_keys_go_as_new_ones_come() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdempotencyStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let long_ago = now_ms() - 120_000;
        store.put_pending("old", "f0", long_ago).unwrap();
        assert_eq!(store.get("old").unwrap(), None, "outside the window");
        store.put_pending("k", "f1", now_ms()).unwrap();
        assert_eq!(store.len(), 1, "writing a key purged the expired one");
        let pending = store.get("k").unwrap().unwrap();
        assert_eq!(pending.answer, None);
        let answer = StoredAnswer { status: 200, content_type: "application/json".into(), body: "{}".into() };
        store.put_answer("k", &pending, answer.clone()).unwrap();
        let done = store.get("k").unwrap().unwrap();
        assert_eq!(
            (done.fingerprint.as_str(), done.first_seen_ms, done.answer),
            ("f1", pending.first_seen_ms, Some(answer))
        );
        drop(store);
        let store = IdempotencyStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(store.get("k").unwrap().unwrap().answer.is_some(), "answers survive a restart");
        assert!(!store.is_empty());
        // The purge counts what it drops, and keeps what is fresh.
        store.put_pending("k2", "f2", now_ms()).unwrap();
        assert_eq!(store.len(), 2);
        let old = [("old-1", long_ago), ("old-2", long_ago + 1)];
        for (key, at) in old {
            store
                .inner
                .keys
                .insert(
                    key,
                    serde_json::to_vec(&KeyRecord { fingerprint: "f".into(), first_seen_ms: at, answer: None })
                        .unwrap(),
                )
                .unwrap();
            store.inner.by_time.insert(time_key(at, key), &[]).unwrap();
        }
        assert_eq!(store.purge_expired().unwrap(), 2);
        assert_eq!(store.len(), 2);
        let empty = IdempotencyStore::open(&dir.path().join("empty"), Duration::from_secs(60)).unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_lock_is_forgotten_once_nobody_waits_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdempotencyStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let first = store.lock("k").await;
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                let guard = store.lock("k").await;
                drop(guard);
                store.release("k");
            })
        };
        tokio::task::yield_now().await;
        drop(first);
        store.release("k");
        assert_eq!(store.inner.in_progress.lock().len(), 1, "kept while another request waits on it");
        waiting.await.unwrap();
        assert!(store.inner.in_progress.lock().is_empty(), "no lock is kept for a key nobody answers");
    }
}
