//! What every governance record shares: a compacted topic that is the record (each change a
//! record's whole new state under its id, so compaction keeps the latest), and in each process
//! a view in sled that applies a state only when it is newer than what it holds. Reading the
//! topic again, or a write that is applied at once and read back from the topic, changes
//! nothing.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use serde::{de::DeserializeOwned, Serialize};

/// A record the governance topics carry.
pub trait Governed: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static {
    /// Its topic: one partition, compacted, kept for ever.
    const TOPIC: &'static str;
    /// Its tree in the governance database.
    const TREE: &'static str;
    /// Its id (a UUIDv7: ids sort in the order records were made).
    fn id(&self) -> &str;
    /// 1 when made, one more at each change.
    fn version(&self) -> u64;
}

/// A process's view of one governance topic, in sled, with every record also in memory (a
/// node has hundreds or thousands, not millions): a read's check costs a map lookup.
pub struct View<T> {
    tree: sled::Tree,
    meta: sled::Tree,
    db: sled::Db,
    all: Arc<RwLock<BTreeMap<String, T>>>,
    /// One reader of the topic at a time: two would apply the same records (harmless) and
    /// could set the offset back (not).
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl<T> Clone for View<T> {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
            meta: self.meta.clone(),
            db: self.db.clone(),
            all: self.all.clone(),
            reading: self.reading.clone(),
        }
    }
}

impl<T: Governed> View<T> {
    /// The view of `T` in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let tree = db.open_tree(T::TREE)?;
        let mut all = BTreeMap::new();
        for item in govex_schemas::store::scan(&tree) {
            let (_, bytes) = item?;
            let record: T = serde_json::from_slice(&bytes)
                .map_err(|e| sled::Error::Unsupported(format!("a stored {} record does not read: {e}", T::TREE)))?;
            all.insert(record.id().to_owned(), record);
        }
        let all = Arc::new(RwLock::new(all));
        Ok(Self { meta: db.open_tree("meta")?, tree, db: db.clone(), all, reading: Default::default() })
    }

    /// Applies `record` unless the view holds its id at the same or a newer version; whether
    /// it changed the view. Durable after [`Self::flush`].
    ///
    /// Records are applied in the topic's order (see [`catch_up`]), so of two changes made
    /// from the same version by two processes, the first on the topic is the one every view
    /// keeps: the topic decides, and a writer learns whether its change won by reading it back.
    pub fn apply(&self, record: &T) -> Result<bool, sled::Error> {
        let mut all = self.all.write().unwrap_or_else(PoisonError::into_inner);
        if all.get(record.id()).is_some_and(|held| held.version() >= record.version()) {
            return Ok(false);
        }
        let value = serde_json::to_vec(record)
            .map_err(|e| sled::Error::Unsupported(format!("a {} record could not be serialized: {e}", T::TREE)))?;
        self.tree.insert(record.id().as_bytes(), value)?;
        all.insert(record.id().to_owned(), record.clone());
        Ok(true)
    }

    /// Makes every apply so far durable.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(drop)
    }

    fn offset_key() -> String {
        format!("next_offset:{}", T::TOPIC)
    }

    /// The offset after the last record of the topic the view has applied.
    pub fn next_offset(&self) -> Result<i64, sled::Error> {
        let held = self.meta.get(Self::offset_key())?;
        Ok(held.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map_or(0, i64::from_be_bytes))
    }

    /// Notes that the view has applied the topic up to `next` (exclusive).
    pub fn set_next_offset(&self, next: i64) -> Result<(), sled::Error> {
        self.meta.insert(Self::offset_key(), &next.to_be_bytes()).map(drop)
    }

    /// One record.
    pub fn get(&self, id: &str) -> Option<T> {
        self.all.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// Every record `select` keeps, oldest first.
    pub fn list(&self, select: impl Fn(&T) -> bool) -> Vec<T> {
        self.all.read().unwrap_or_else(PoisonError::into_inner).values().filter(|r| select(r)).cloned().collect()
    }
}

/// Applies what `T`'s topic holds past the view's offset; how many records it read.
pub async fn catch_up<T: Governed>(bus: &govex_bus::Bus, view: &View<T>) -> Result<u64, String> {
    let _one = view.reading.lock().await;
    let next = view.next_offset().map_err(|e| e.to_string())?;
    // Followed every 2 s in every process: ask for the end first, and make a reader only when
    // there is something past what the view holds.
    let end = bus.high_watermarks(T::TOPIC).await.map_err(|e| e.to_string())?.get(&0).copied().unwrap_or(0);
    if end <= next {
        return Ok(0);
    }
    let from = BTreeMap::from([(0, next)]);
    let mut records = bus.read_to_end(T::TOPIC, &from).await.map_err(|e| e.to_string())?;
    let (mut read, mut next) = (0, None);
    while let Some(record) = records.recv().await {
        let record = record.map_err(|e| e.to_string())?;
        read += 1;
        next = Some(record.offset() + 1);
        match serde_json::from_slice::<T>(record.payload().unwrap_or_default()) {
            Ok(governed) => {
                view.apply(&governed).map_err(|e| e.to_string())?;
            }
            // Only this node's governance routes write the topic; a record they did not write
            // is reported, not applied.
            Err(e) => {
                tracing::error!(topic = T::TOPIC, offset = record.offset(), error = %e, "a governance record does not read")
            }
        }
    }
    if let Some(next) = next {
        view.set_next_offset(next).map_err(|e| e.to_string())?;
        view.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(read)
}

/// A topic that ends before what the view has applied lost its records (the embedded bus
/// keeps nothing across a restart; a topic deleted and made again): the view, which survived,
/// writes every record back, and reads the topic again from its start.
pub async fn restore_topic<T: Governed>(
    bus: &govex_bus::Bus,
    view: &View<T>,
    division: govex_schemas::Division,
) -> Result<(), String> {
    let end = bus.high_watermarks(T::TOPIC).await.map_err(|e| e.to_string())?.get(&0).copied().unwrap_or(0);
    let applied = view.next_offset().map_err(|e| e.to_string())?;
    if end >= applied {
        return Ok(());
    }
    let held = view.list(|_| true);
    tracing::warn!(
        topic = T::TOPIC,
        end,
        applied,
        records = held.len(),
        "a governance topic lost records; writing the view back"
    );
    let mut records = Vec::with_capacity(held.len());
    for governed in held {
        records.push(outgoing(govex_schemas::Department::PLATFORM, division, &governed)?);
    }
    for delivery in bus.producer().publish_all(records).await {
        delivery.map_err(|e| e.to_string())?;
    }
    view.set_next_offset(0).map_err(|e| e.to_string())
}

/// `record` as the message that carries it, from `department`.
pub fn outgoing<T: Governed>(
    department: govex_schemas::Department,
    division: govex_schemas::Division,
    record: &T,
) -> Result<govex_bus::Outgoing, String> {
    let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let envelope = govex_bus::envelope::Envelope::new(department, division, T::TREE);
    Ok(govex_bus::Outgoing::new(T::TOPIC, record.id().to_owned(), payload, &envelope))
}
