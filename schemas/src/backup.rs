//! Backups of a node's sled stores: `GET /v1/backup` streams one from a running node,
//! `govex backup` saves it, `govex restore` writes it into an empty data directory.
//!
//! The topics give most stores back after a lost volume (see [`crate::store`]'s refill), but
//! not all: a shared view keeps department records for longer than their topics do
//! (`bus.retention_ms`, 30 days by default), and the intake's idempotency keys, the
//! front-end sources' watermarks and the case statistics' state live on the volume alone. A
//! whole cluster lost takes the topics too.
//!
//! # The file
//!
//! Integers are big-endian. The file starts with `GOVEXBAK` and the file version (u32), then
//! a JSON [`Header`] (u32 length first), then frames, each a tag byte:
//!
//! | tag | then                                   |
//! |-----|----------------------------------------|
//! | `S` | a store: u16 length, its name          |
//! | `T` | a tree of that store: u32 length, name |
//! | `E` | an entry: u32 length, key, u32 length, value |
//! | `Z` | the end: u64 entries in all, then the SHA-256 of every byte before the digest |
//!
//! A file cut short, or changed anywhere, fails its digest; [`read`] is run over the whole
//! file before [`restore`] writes anything.
//!
//! # Consistency
//!
//! sled has no snapshots: a backup of a running node reads each tree as it is when read,
//! while the node goes on writing. What makes the result whole is the restore: every store a
//! consumer group fills is restored to be refilled from the start of its topics (applying a
//! record twice changes nothing, by event id), so a record that came during the backup, or
//! after it, comes back from its topic while that still holds it; the use log takes the
//! entries it lacks from its topic ([`crate::store`] says how each store comes back).

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    path::Path,
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of a backup.
pub const MAGIC: &[u8; 8] = b"GOVEXBAK";
/// The version of the file layout above.
pub const FILE_VERSION: u32 = 1;
/// The stores a node keeps, by the name of their directory under `data_dir`: a backup holds
/// these and no other (a name is a path on restore).
pub const STORES: &[&str] = &["registry", "elicense", "dossier", "governance", "cases", "intake", "frontdb"];
/// The stores a consumer group fills: restored to be refilled from the start of their topics.
pub const REFILLED: &[&str] = &["elicense", "dossier", "cases"];
/// The longest key and value a backup may hold (a larger length is a damaged or hostile file,
/// refused before anything that large is allocated).
pub const MAX_KEY: u32 = 1 << 16;
/// See [`MAX_KEY`]: the largest value any govex store writes is far below this.
pub const MAX_VALUE: u32 = 64 << 20;

/// What a backup says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The stores' format version ([`crate::store::FORMAT_VERSION`]) of the govex that took it.
    pub format: u64,
    /// The division of the node it was taken from.
    pub division: String,
    /// When it was taken (ms since the epoch).
    pub taken_at_ms: u64,
    /// The stores it holds, in order.
    pub stores: Vec<String>,
}

/// What a backup held, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entries per store.
    pub stores: BTreeMap<String, u64>,
    /// Entries in all.
    pub entries: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Why a backup cannot be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not a backup, is damaged or was cut short.
    #[error("not a whole govex backup: {0}")]
    Damaged(String),
    /// A whole backup this node does not take (another division's, one read from a pipe).
    #[error("{0}")]
    Refused(String),
    /// Taken by a newer govex.
    #[error("the backup holds stores of format version {found}, and this govex reads up to version {ours}: restore it with that version (or newer)")]
    Newer {
        /// The backup's.
        found: u64,
        /// This build's.
        ours: u64,
    },
    /// The data directory already holds a store the backup would write.
    #[error("{0} already holds a store: restore into an empty data directory (move the old one aside first)")]
    Occupied(String),
    /// A store failed.
    #[error("the store {store} cannot be written: {source}")]
    Store {
        /// Its name.
        store: String,
        /// The cause.
        source: sled::Error,
    },
}

/// The sled databases a process's components opened, by store name: what a backup of the
/// running process reads. Each component adds its own when it opens it.
#[derive(Clone, Default)]
pub struct OpenStores(Arc<parking_lot::Mutex<BTreeMap<&'static str, sled::Db>>>);

impl OpenStores {
    /// Adds the store `name` (one of [`STORES`]).
    pub fn add(&self, name: &'static str, db: &sled::Db) {
        debug_assert!(STORES.contains(&name), "{name} is not a known store");
        self.0.lock().insert(name, db.clone());
    }

    /// The stores, in [`STORES`] order.
    pub fn list(&self) -> Vec<(&'static str, sled::Db)> {
        let open = self.0.lock();
        STORES.iter().filter_map(|name| open.get(name).map(|db| (*name, db.clone()))).collect()
    }

    /// Forgets them all (at shutdown, so that the databases close).
    pub fn clear(&self) {
        self.0.lock().clear();
    }
}

/// Writes a backup to `out`: the header, then every tree of every store, then the digest.
/// `stopped` is asked between entries; a backup stopped part way is left without its end, so
/// no restore takes it.
pub fn write<W: Write>(
    out: W,
    header: &Header,
    stores: &[(&'static str, sled::Db)],
    stopped: &dyn Fn() -> bool,
) -> io::Result<Summary> {
    let mut out = Hashing { out, hasher: Sha256::new() };
    out.write_all(MAGIC)?;
    out.write_all(&FILE_VERSION.to_be_bytes())?;
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    out.write_all(&(header.len() as u32).to_be_bytes())?;
    out.write_all(&header)?;
    let mut summary = Summary::default();
    for (name, db) in stores {
        out.write_all(b"S")?;
        out.write_all(&(name.len() as u16).to_be_bytes())?;
        out.write_all(name.as_bytes())?;
        let mut entries = 0u64;
        let mut names = db.tree_names();
        // The format version first, so a reader meets it before any data.
        names.sort_by_key(|n| n.as_ref() != crate::store::META_TREE.as_bytes());
        for tree_name in names {
            let tree = db.open_tree(&tree_name).map_err(io::Error::other)?;
            out.write_all(b"T")?;
            write_bytes(&mut out, &tree_name)?;
            for entry in crate::store::scan(&tree) {
                if stopped() {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "the node is stopping"));
                }
                let (key, value) = entry.map_err(io::Error::other)?;
                // A backup a restore would refuse is not taken at all.
                if key.len() > MAX_KEY as usize || value.len() > MAX_VALUE as usize {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "an entry of {name} ({} bytes of key, {} of value) is larger than a backup holds",
                            key.len(),
                            value.len()
                        ),
                    ));
                }
                out.write_all(b"E")?;
                write_bytes(&mut out, &key)?;
                write_bytes(&mut out, &value)?;
                entries += 1;
                summary.bytes += (key.len() + value.len()) as u64;
            }
        }
        summary.entries += entries;
        summary.stores.insert((*name).to_owned(), entries);
    }
    out.write_all(b"Z")?;
    out.write_all(&summary.entries.to_be_bytes())?;
    let digest = out.hasher.finalize_reset();
    out.out.write_all(&digest)?;
    out.flush()?;
    Ok(summary)
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(bytes)
}

struct Hashing<W> {
    out: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

struct Hashed<R> {
    input: R,
    hasher: Sha256,
}

impl<R: Read> Hashed<R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackupError::Damaged(format!("it ends inside {what}: cut short")),
            _ => BackupError::Io(e),
        })?;
        self.hasher.update(&*buf);
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        let mut b = [0; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_be_bytes(b))
    }

    fn bytes(&mut self, max: u32, what: &str) -> Result<Vec<u8>, BackupError> {
        let len = self.u32(what)?;
        if len > max {
            return Err(BackupError::Damaged(format!("{what} of {len} bytes, more than any store holds ({max})")));
        }
        let mut buf = vec![0; len as usize];
        self.exact(&mut buf, what)?;
        Ok(buf)
    }
}

/// One thing a backup holds, in order.
pub enum Item<'a> {
    /// A store begins.
    Store(&'a str),
    /// A tree of the current store begins.
    Tree(&'a [u8]),
    /// An entry of the current tree.
    Entry(&'a [u8], &'a [u8]),
}

/// Reads a whole backup, handing each item to `visit`, and checks its end and digest. An
/// error from `visit` stops the read.
pub fn read<R: Read>(
    input: R,
    mut visit: impl FnMut(Item<'_>) -> Result<(), BackupError>,
) -> Result<(Header, Summary), BackupError> {
    let mut input = Hashed { input, hasher: Sha256::new() };
    let mut magic = [0; 8];
    input.exact(&mut magic, "its first bytes")?;
    if &magic != MAGIC {
        return Err(BackupError::Damaged("it does not start as a govex backup does".into()));
    }
    let version = input.u32("its version")?;
    if version != FILE_VERSION {
        return Err(BackupError::Damaged(format!("file version {version}; this govex reads version {FILE_VERSION}")));
    }
    let header = input.bytes(1 << 20, "its header")?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| BackupError::Damaged(format!("its header: {e}")))?;
    if header.format > crate::store::FORMAT_VERSION {
        return Err(BackupError::Newer { found: header.format, ours: crate::store::FORMAT_VERSION });
    }
    let mut summary = Summary::default();
    let mut store: Option<String> = None;
    let mut in_tree = false;
    loop {
        let mut tag = [0; 1];
        input.exact(&mut tag, "a frame")?;
        match &tag {
            b"S" => {
                let mut len = [0; 2];
                input.exact(&mut len, "a store's name")?;
                let mut name = vec![0; u16::from_be_bytes(len) as usize];
                input.exact(&mut name, "a store's name")?;
                let name = String::from_utf8(name)
                    .ok()
                    .filter(|n| STORES.contains(&n.as_str()) && !summary.stores.contains_key(n))
                    .ok_or_else(|| BackupError::Damaged("a store that is not one of a node's, or one twice".into()))?;
                visit(Item::Store(&name))?;
                summary.stores.insert(name.clone(), 0);
                store = Some(name);
                in_tree = false;
            }
            b"T" => {
                let Some(_) = &store else { return Err(BackupError::Damaged("a tree outside any store".into())) };
                let name = input.bytes(MAX_KEY, "a tree's name")?;
                visit(Item::Tree(&name))?;
                in_tree = true;
            }
            b"E" => {
                let Some(name) = store.as_ref().filter(|_| in_tree) else {
                    return Err(BackupError::Damaged("an entry outside any tree".into()));
                };
                let key = input.bytes(MAX_KEY, "a key")?;
                let value = input.bytes(MAX_VALUE, "a value")?;
                visit(Item::Entry(&key, &value))?;
                summary.entries += 1;
                summary.bytes += (key.len() + value.len()) as u64;
                *summary.stores.entry(name.clone()).or_default() += 1;
            }
            b"Z" => {
                let mut count = [0; 8];
                input.exact(&mut count, "its end")?;
                let digest = input.hasher.finalize_reset();
                let mut stated = [0; 32];
                input
                    .input
                    .read_exact(&mut stated)
                    .map_err(|_| BackupError::Damaged("its digest is cut short".into()))?;
                if stated[..] != digest[..] {
                    return Err(BackupError::Damaged("its digest does not match: changed or damaged".into()));
                }
                if u64::from_be_bytes(count) != summary.entries {
                    return Err(BackupError::Damaged("its entry count does not match".into()));
                }
                if input.input.read(&mut [0; 1])? != 0 {
                    return Err(BackupError::Damaged("bytes after its end".into()));
                }
                return Ok((header, summary));
            }
            _ => return Err(BackupError::Damaged(format!("an unknown frame ({:#04x})", tag[0]))),
        }
    }
}

/// The file a restore leaves in the data directory while it runs: a node refuses to start
/// beside it (see [`check_no_restore_cut_short`]), and the next restore takes up where it was.
pub const RESTORING: &str = "RESTORING";
/// Where a restore writes the stores before it moves them into place.
const STAGING: &str = ".restore-staging";

/// Refuses a data directory where a restore was cut short (killed, the disk full): its stores
/// are partly written, and a node started on them would take them for whole ones.
pub fn check_no_restore_cut_short(data_dir: &Path) -> Result<(), String> {
    let marker = data_dir.join(RESTORING);
    match std::fs::read_to_string(&marker) {
        Ok(from) => Err(format!(
            "a restore into {} was cut short (of {}): run govex restore again, which starts it over, before the node starts",
            data_dir.display(),
            from.lines().next().unwrap_or("a backup")
        )),
        Err(_) => Ok(()),
    }
}

/// Restores the backup at `path` into `data_dir`, for the node of `division`, which must hold
/// none of its stores.
///
/// Nothing is written from a file that does not read whole, was taken by a newer govex or on
/// another division's node, or whose stores are not the ones its header names. The stores
/// are written into a staging folder and moved into place at the end, with [`RESTORING`]
/// naming the backup meanwhile: a restore cut short (killed, the disk full) leaves no store
/// that looks whole, a node refuses to start beside it, and running the restore again
/// starts it over. The stores a consumer group fills are restored to be refilled from the
/// start of their topics (their `refilled` mark is never written).
pub fn restore(path: &Path, data_dir: &Path, division: &str) -> Result<(Header, Summary), BackupError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(BackupError::Refused(format!(
            "{} is not a file (a restore reads it twice: first whole, then to write it); copy it to a file first",
            path.display()
        )));
    }
    let open = || std::fs::File::open(path).map(io::BufReader::new);
    let mut framed = Vec::new();
    let (header, _) = read(open()?, |item| {
        if let Item::Store(name) = item {
            framed.push(name.to_owned());
        }
        Ok(())
    })?;
    if framed != header.stores {
        return Err(BackupError::Damaged(format!(
            "its header names the stores {:?} and it holds {framed:?}",
            header.stores
        )));
    }
    if header.division != division {
        return Err(BackupError::Refused(format!(
            "it was taken on the node of division {}, and this node is division {division}: restore it on its own node",
            header.division
        )));
    }
    // A restore cut short before: its marker names the stores it may have moved into place,
    // which are its own and are taken away, with its staging folder, before starting over.
    let marker = data_dir.join(RESTORING);
    if let Ok(text) = std::fs::read_to_string(&marker) {
        for name in text.lines().skip(1).filter(|name| STORES.contains(name)) {
            let dir = data_dir.join(name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    for name in &header.stores {
        let dir = data_dir.join(name);
        if dir.join("db").exists() || dir.join("conf").exists() {
            return Err(BackupError::Occupied(dir.display().to_string()));
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let staging = data_dir.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let marker_text =
        std::iter::once(path.display().to_string()).chain(header.stores.iter().cloned()).collect::<Vec<_>>();
    std::fs::write(&marker, marker_text.join("\n") + "\n")?;
    sync_dir(data_dir)?;

    let mut current: Option<Restoring> = None;
    let (_, summary) = read(open()?, |item| {
        match item {
            Item::Store(name) => {
                if let Some(done) = current.take() {
                    done.finish()?;
                }
                current = Some(Restoring::open(&staging, name)?);
            }
            Item::Tree(name) => current.as_mut().unwrap_or_else(|| unreachable!("read checks")).tree(name)?,
            Item::Entry(key, value) => {
                current.as_mut().unwrap_or_else(|| unreachable!("read checks")).insert(key, value)?
            }
        }
        Ok(())
    })?;
    if let Some(done) = current.take() {
        done.finish()?;
    }
    // sled releases a database's files from a background thread once its last handle went:
    // wait for them before moving the folders.
    std::thread::sleep(std::time::Duration::from_millis(100));
    for name in &header.stores {
        std::fs::rename(staging.join(name), data_dir.join(name))?;
    }
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::remove_file(&marker)?;
    sync_dir(data_dir)?;
    Ok((header, summary))
}

/// One store of a restore being written (into the staging folder).
struct Restoring {
    name: String,
    db: sled::Db,
    tree: Option<sled::Tree>,
    batch: sled::Batch,
    /// Bytes in `batch`.
    pending: usize,
    /// Batches applied.
    applied: u64,
}

impl Restoring {
    fn open(staging: &Path, name: &str) -> Result<Self, BackupError> {
        let dir = staging.join(name);
        std::fs::create_dir_all(&dir)?;
        let db = crate::store::open_sled_unchecked(&dir)
            .map_err(|source| BackupError::Store { store: name.to_owned(), source })?;
        Ok(Self { name: name.to_owned(), db, tree: None, batch: sled::Batch::default(), pending: 0, applied: 0 })
    }

    fn failed(&self) -> impl FnOnce(sled::Error) -> BackupError + '_ {
        |source| BackupError::Store { store: self.name.clone(), source }
    }

    /// Applies what the batch holds to the tree being written.
    fn apply(&mut self) -> Result<(), BackupError> {
        if let Some(tree) = &self.tree {
            tree.apply_batch(std::mem::take(&mut self.batch)).map_err(self.failed())?;
        }
        self.pending = 0;
        Ok(())
    }

    fn tree(&mut self, name: &[u8]) -> Result<(), BackupError> {
        self.apply()?;
        self.tree = Some(self.db.open_tree(name).map_err(self.failed())?);
        Ok(())
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        // A store a consumer group fills is refilled on top of the backup: the mark that its
        // group's offsets are its own is not restored.
        let meta = self.tree.as_ref().is_some_and(|t| t.name() == crate::store::META_TREE.as_bytes());
        if meta && key == crate::store::REFILLED.as_bytes() && REFILLED.contains(&self.name.as_str()) {
            return Ok(());
        }
        self.batch.insert(key, value);
        self.pending += key.len() + value.len();
        // Small batches, each followed by a weighing of the cache: sled keeps what it writes
        // as it keeps what it reads (see `store::Scan`), and a restore of a 157 MiB store
        // peaked at 283 MiB with 4 MiB batches and no weighing.
        if self.pending >= crate::store::WEIGH_EVERY {
            self.apply()?;
            if let Some(tree) = &self.tree {
                crate::store::weigh(tree, key);
            }
            self.applied += 1;
            if self.applied.is_multiple_of(128) {
                self.db.flush().map_err(self.failed())?;
            }
        }
        Ok(())
    }

    /// Writes what is left and makes the store durable.
    fn finish(mut self) -> Result<(), BackupError> {
        self.apply()?;
        self.db.flush().map_err(self.failed())?;
        Ok(())
    }
}

/// Makes the names in `dir` durable (a rename, a new file).
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, entries: u32) -> sled::Db {
        let db = crate::store::open_sled(dir).unwrap();
        let tree = db.open_tree("records").unwrap();
        for i in 0..entries {
            tree.insert(i.to_be_bytes(), format!("record {i}").as_bytes()).unwrap();
        }
        crate::store::mark_refilled(&db).unwrap();
        db
    }

    fn header() -> Header {
        Header { format: crate::store::FORMAT_VERSION, division: "320102".into(), taken_at_ms: 0, stores: vec![] }
    }

    #[test]
    fn a_backup_restores_every_entry_and_marks_group_filled_stores_for_a_refill() {
        let from = tempfile::tempdir().unwrap();
        let stores = vec![
            ("dossier", store(&from.path().join("dossier"), 500)),
            ("intake", store(&from.path().join("intake"), 7)),
        ];
        let mut header = header();
        header.stores = stores.iter().map(|(n, _)| n.to_string()).collect();
        let file = from.path().join("backup");
        let written = write(std::fs::File::create(&file).unwrap(), &header, &stores, &|| false).unwrap();
        assert_eq!(written.stores["dossier"], 500 + 2, "the entries and the format and refill marks");
        drop(stores);

        let to = tempfile::tempdir().unwrap();
        let (read_header, summary) = restore(&file, to.path(), "320102").unwrap();
        assert_eq!((read_header, summary.entries), (header, written.entries));
        let (dossier, refill) = crate::store::open_sled_refillable(&to.path().join("dossier")).unwrap();
        assert!(refill, "a group-filled store is refilled from its topics after a restore");
        let records = dossier.open_tree("records").unwrap();
        assert_eq!(records.len(), 500);
        assert_eq!(records.get(499u32.to_be_bytes()).unwrap().unwrap().as_ref(), b"record 499");
        let (intake, refill) = crate::store::open_sled_refillable(&to.path().join("intake")).unwrap();
        assert!(!refill, "a store no group fills keeps its mark");
        assert_eq!(intake.open_tree("records").unwrap().len(), 7);

        // A second restore into the same directory overwrites nothing.
        drop((dossier, intake));
        assert!(matches!(restore(&file, to.path(), "320102"), Err(BackupError::Occupied(_))));
        // Nor does one into another division's node.
        let other = tempfile::tempdir().unwrap();
        let error = restore(&file, other.path(), "610900").unwrap_err();
        assert!(error.to_string().contains("division 320102"), "{error}");
        assert!(!other.path().join(RESTORING).exists() && !other.path().join("dossier").exists());
    }

    #[test]
    fn a_restore_cut_short_is_refused_by_a_node_and_started_over_by_the_next_restore() {
        let from = tempfile::tempdir().unwrap();
        let stores = vec![
            ("dossier", store(&from.path().join("dossier"), 300)),
            ("intake", store(&from.path().join("intake"), 3)),
        ];
        let mut header = header();
        header.stores = stores.iter().map(|(n, _)| n.to_string()).collect();
        let file = from.path().join("backup");
        write(std::fs::File::create(&file).unwrap(), &header, &stores, &|| false).unwrap();
        drop(stores);
        // What a restore killed while it moved its stores into place leaves: its marker, one
        // store moved (whole, but without the other), the other still staged.
        let to = tempfile::tempdir().unwrap();
        restore(&file, to.path(), "320102").unwrap();
        std::fs::create_dir_all(to.path().join(STAGING)).unwrap();
        std::fs::rename(to.path().join("intake"), to.path().join(STAGING).join("intake")).unwrap();
        std::fs::write(to.path().join(RESTORING), format!("{}\ndossier\nintake\n", file.display())).unwrap();
        let refused = check_no_restore_cut_short(to.path()).unwrap_err();
        assert!(refused.contains("cut short") && refused.contains("govex restore again"), "{refused}");
        // The next restore takes away what the first one moved, and starts over.
        let (_, summary) = restore(&file, to.path(), "320102").unwrap();
        assert_eq!(summary.stores["dossier"], 302);
        assert!(check_no_restore_cut_short(to.path()).is_ok());
        assert!(!to.path().join(STAGING).exists());
        let (dossier, refill) = crate::store::open_sled_refillable(&to.path().join("dossier")).unwrap();
        assert!(refill && dossier.open_tree("records").unwrap().len() == 300);
        // A store a restore did not write is not taken away by the next one.
        drop(dossier);
        std::fs::write(to.path().join(RESTORING), format!("{}\n", file.display())).unwrap();
        assert!(matches!(restore(&file, to.path(), "320102"), Err(BackupError::Occupied(_))));
    }

    #[test]
    fn a_backup_holds_each_store_in_order_with_its_format_first_and_counts_its_bytes() {
        let from = tempfile::tempdir().unwrap();
        let open = OpenStores::default();
        // Added out of order: listed in `STORES` order, and gone once cleared.
        open.add("intake", &store(&from.path().join("intake"), 2));
        open.add("dossier", &store(&from.path().join("dossier"), 5));
        let stores = open.list();
        assert_eq!(stores.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["dossier", "intake"]);
        let mut header = header();
        header.stores = vec!["dossier".into(), "intake".into()];
        let mut bytes = Vec::new();
        let written = write(&mut bytes, &header, &stores, &|| false).unwrap();
        let mut items = Vec::new();
        let (_, read_back) = read(bytes.as_slice(), |item| {
            items.push(match item {
                Item::Store(name) => format!("S {name}"),
                Item::Tree(name) => format!("T {}", String::from_utf8_lossy(name)),
                Item::Entry(..) => "E".to_owned(),
            });
            Ok(())
        })
        .unwrap();
        // The format version is met before any data of its store.
        let first_trees: Vec<&String> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| *i > 0 && items[i - 1].starts_with("S "))
            .map(|(_, t)| t)
            .collect();
        assert_eq!(first_trees, ["T __govex", "T __govex"], "{items:?}");
        // Keys are 4 bytes, values "record N"; each store's format (8) and refill mark (1).
        let expected: u64 = (0..5u32).chain(0..2).map(|i| 4 + format!("record {i}").len() as u64).sum::<u64>()
            + 2 * ("format".len() + 8 + "refilled".len() + 1) as u64;
        assert_eq!((written.bytes, read_back.bytes), (expected, expected));
        open.clear();
        assert!(open.list().is_empty());
    }

    #[test]
    fn a_key_of_the_longest_length_reads_and_one_byte_more_is_refused() {
        let from = tempfile::tempdir().unwrap();
        let db = crate::store::open_sled(&from.path().join("dossier")).unwrap();
        let tree = db.open_tree("records").unwrap();
        tree.insert(vec![7u8; MAX_KEY as usize], b"v").unwrap();
        let mut header = header();
        header.stores = vec!["dossier".into()];
        let mut bytes = Vec::new();
        write(&mut bytes, &header, &[("dossier", db.clone())], &|| false).unwrap();
        assert!(read(bytes.as_slice(), |_| Ok(())).is_ok());
        // The same file with the key one byte longer (its digest made again): refused.
        let frame = [b"E".as_slice(), &MAX_KEY.to_be_bytes(), &[7u8]].concat();
        let at = bytes.windows(frame.len()).position(|w| w == frame).unwrap();
        let longer = [
            &bytes[..at],
            b"E",
            &(MAX_KEY + 1).to_be_bytes(),
            &vec![7u8; MAX_KEY as usize + 1],
            &bytes[at + 5 + MAX_KEY as usize..bytes.len() - 32],
        ]
        .concat();
        let longer = [longer.clone(), Sha256::digest(&longer).to_vec()].concat();
        let error = read(longer.as_slice(), |_| Ok(())).map(drop).unwrap_err();
        assert!(error.to_string().contains("more than any store holds"), "{error}");
        // And a store holding such a key gives no backup at all, rather than one no restore takes.
        tree.clear().unwrap();
        tree.insert(vec![7u8; MAX_KEY as usize + 1], b"v").unwrap();
        let error = write(&mut Vec::new(), &header, &[("dossier", db)], &|| false).unwrap_err();
        assert!(error.to_string().contains("larger than a backup holds"), "{error}");
    }

    #[test]
    fn a_data_directory_with_any_part_of_a_store_is_not_written_into() {
        let from = tempfile::tempdir().unwrap();
        let stores = vec![("dossier", store(&from.path().join("dossier"), 3))];
        let mut header = header();
        header.stores = vec!["dossier".into()];
        let file = from.path().join("backup");
        write(std::fs::File::create(&file).unwrap(), &header, &stores, &|| false).unwrap();
        for part in ["db", "conf"] {
            let to = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(to.path().join("dossier")).unwrap();
            std::fs::write(to.path().join("dossier").join(part), b"x").unwrap();
            assert!(matches!(restore(&file, to.path(), "320102"), Err(BackupError::Occupied(_))), "{part}");
        }
    }

    #[test]
    fn a_backup_whose_stores_are_not_the_ones_its_header_names_is_refused() {
        let from = tempfile::tempdir().unwrap();
        let stores = vec![("elicense", store(&from.path().join("elicense"), 3))];
        // A header naming no store, over a frame that writes one: a data directory that holds
        // that store would be written into, were only the header checked.
        let mut bytes = Vec::new();
        write(&mut bytes, &header(), &stores, &|| false).unwrap();
        let to = tempfile::tempdir().unwrap();
        let file = to.path().join("backup");
        std::fs::write(&file, &bytes).unwrap();
        let error = restore(&file, to.path(), "320102").unwrap_err();
        assert!(error.to_string().contains("its header names the stores []"), "{error}");
        assert!(!to.path().join("elicense").exists());
    }

    #[test]
    fn a_damaged_or_cut_short_backup_writes_nothing() {
        let from = tempfile::tempdir().unwrap();
        let stores = vec![("dossier", store(&from.path().join("dossier"), 50))];
        let mut header = header();
        header.stores = vec!["dossier".into()];
        let mut bytes = Vec::new();
        write(&mut bytes, &header, &stores, &|| false).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("cut short", bytes[..bytes.len() - 40].to_vec()),
            ("one byte changed", {
                let mut b = bytes.clone();
                let middle = b.len() / 2;
                b[middle] ^= 1;
                b
            }),
            ("bytes after its end", [bytes.as_slice(), b"x"].concat()),
            ("not a backup", b"PK\x03\x04 a zip file".to_vec()),
        ];
        for (case, damaged) in cases {
            let to = tempfile::tempdir().unwrap();
            let file = to.path().join("backup");
            std::fs::write(&file, &damaged).unwrap();
            let error = restore(&file, to.path(), "320102").unwrap_err();
            assert!(matches!(error, BackupError::Damaged(_)), "{case}: {error}");
            assert!(!to.path().join("dossier").exists(), "{case}: nothing written");
        }
        // A store name that is a path is refused, however the digest reads.
        let mut hostile = Vec::new();
        header.stores = vec!["../etc".into()];
        write(&mut hostile, &header, &[], &|| false).unwrap();
        let patched = {
            let mut out = Hashing { out: Vec::new(), hasher: Sha256::new() };
            out.write_all(&hostile[..hostile.len() - 32 - 9]).unwrap();
            out.write_all(b"S\x00\x06../etc").unwrap();
            out.write_all(b"Z").unwrap();
            out.write_all(&0u64.to_be_bytes()).unwrap();
            let digest = out.hasher.finalize_reset();
            [out.out, digest.to_vec()].concat()
        };
        let error = read(patched.as_slice(), |_| Ok(())).map(drop).unwrap_err();
        assert!(error.to_string().contains("not one of a node's"), "{error}");
        // A newer govex's backup is refused by name.
        let mut newer = Vec::new();
        header.stores = vec![];
        header.format = crate::store::FORMAT_VERSION + 1;
        write(&mut newer, &header, &[], &|| false).unwrap();
        let error = read(newer.as_slice(), |_| Ok(())).map(drop).unwrap_err();
        assert!(matches!(error, BackupError::Newer { .. }), "{error}");
    }
}
