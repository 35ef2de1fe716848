//! Group commit for sled: many writers waiting for durability share one flush.
//!
//! A sink stores a record's offset only after its write is on disk. Flushing per record
//! costs one fsync each; here every caller that arrives while a flush is running waits for
//! the next one, which covers all of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shares `sled::Db::flush_async` among concurrent callers.
pub struct GroupFlush {
    db: sled::Db,
    requested: AtomicU64,
    /// The highest request number a completed flush covers; held while a flush runs.
    completed: tokio::sync::Mutex<u64>,
}

impl GroupFlush {
    /// Group commit for `db`.
    pub fn new(db: sled::Db) -> Self {
        Self { db, requested: AtomicU64::new(0), completed: tokio::sync::Mutex::new(0) }
    }

    /// Returns once every write made before the call is durable.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut completed = self.completed.lock().await;
        if *completed >= mine {
            // A flush that started after this call's writes has finished.
            return Ok(());
        }
        // Every request made so far is covered by a flush that starts now.
        let covers = self.requested.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        *completed = covers;
        Ok(())
    }
}
