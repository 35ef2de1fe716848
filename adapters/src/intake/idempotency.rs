//! `Idempotency-Key`: a retried request with the same key gets the first answer and
//! publishes nothing new. Keys and answers are kept in sled for a configured window, so a
//! retry after a node restart is answered the same way.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

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
    /// When it was first given (ms since the epoch).
    pub stored_at_ms: u64,
}

/// The idempotency store.
pub struct IdempotencyStore {
    tree: sled::Tree,
    db: sled::Db,
    window: Duration,
    /// One lock per key being answered, so that concurrent retries wait for the first.
    in_progress: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl IdempotencyStore {
    /// Opens the store under `dir`.
    pub fn open(dir: &Path, window: Duration) -> Result<Self, sled::Error> {
        let db = govex_schemas::store::open_sled(dir)?;
        let tree = db.open_tree("idempotency")?;
        let store = Self { tree, db, window, in_progress: Mutex::default() };
        store.purge_expired()?;
        Ok(store)
    }

    /// The first answer to `key`, if it was given within the window.
    pub fn get(&self, key: &str) -> Option<StoredAnswer> {
        let bytes = self.tree.get(key).ok().flatten()?;
        let answer: StoredAnswer = serde_json::from_slice(&bytes).ok()?;
        (now_ms().saturating_sub(answer.stored_at_ms) <= self.window.as_millis() as u64).then_some(answer)
    }

    /// Remembers the answer to `key`; durable before it returns.
    pub fn put(&self, key: &str, status: u16, content_type: &str, body: &str) -> Result<(), sled::Error> {
        let answer = StoredAnswer {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
            stored_at_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        self.tree.insert(key, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Holds `key` until the guard is dropped: a concurrent request with the same key waits
    /// and then finds the first answer.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.in_progress.lock().entry(key.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    /// Forgets the lock of `key` once nobody waits on it.
    pub fn release(&self, key: &str) {
        let mut in_progress = self.in_progress.lock();
        if in_progress.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            in_progress.remove(key);
        }
    }

    /// Drops answers older than the window.
    pub fn purge_expired(&self) -> Result<usize, sled::Error> {
        let cutoff = now_ms().saturating_sub(self.window.as_millis() as u64);
        let mut removed = 0;
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let expired = serde_json::from_slice::<StoredAnswer>(&value).map_or(true, |a| a.stored_at_ms < cutoff);
            if expired {
                self.tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
