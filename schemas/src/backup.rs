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
        names.sort_by_key(|n| n.as_ref() != b"__govex");
        for tree_name in names {
            let tree = db.open_tree(&tree_name).map_err(io::Error::other)?;
            out.write_all(b"T")?;
            write_bytes(&mut out, &tree_name)?;
            for entry in crate::store::scan(&tree) {
                if stopped() {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "the node is stopping"));
                }
                let (key, value) = entry.map_err(io::Error::other)?;
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
    out.out.flush()?;
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

/// Restores the backup at `path` into `data_dir`, which must hold none of its stores: reads
/// the whole file first (nothing is written from a damaged one), then writes each store,
/// marks the stores a consumer group fills to be refilled from their topics, and flushes.
pub fn restore(path: &Path, data_dir: &Path) -> Result<(Header, Summary), BackupError> {
    let open = || std::fs::File::open(path).map(io::BufReader::new);
    let (header, _) = read(open()?, |_| Ok(()))?;
    for name in &header.stores {
        let dir = data_dir.join(name);
        if dir.join("db").exists() || dir.join("conf").exists() {
            return Err(BackupError::Occupied(dir.display().to_string()));
        }
    }
    let failed = |store: &str| {
        let store = store.to_owned();
        move |source| BackupError::Store { store, source }
    };
    let mut current: Option<(String, sled::Db, Option<sled::Tree>, sled::Batch, usize)> = None;
    let finish =
        |current: Option<(String, sled::Db, Option<sled::Tree>, sled::Batch, usize)>| -> Result<(), BackupError> {
            let Some((name, db, tree, batch, _)) = current else { return Ok(()) };
            if let Some(tree) = tree {
                tree.apply_batch(batch).map_err(failed(&name))?;
            }
            if REFILLED.contains(&name.as_str()) {
                crate::store::clear_refilled(&db).map_err(failed(&name))?;
            }
            db.flush().map_err(failed(&name))?;
            Ok(())
        };
    let (_, summary) = read(open()?, |item| {
        match item {
            Item::Store(name) => {
                finish(current.take())?;
                let dir = data_dir.join(name);
                std::fs::create_dir_all(&dir)?;
                // Opened without the format check: the backup's own format entry is written
                // below, and [`read`] refused a newer one.
                let db = sled::Config::new()
                    .path(&dir)
                    .cache_capacity(crate::store::cache_bytes())
                    .open()
                    .map_err(failed(name))?;
                current = Some((name.to_owned(), db, None, sled::Batch::default(), 0));
            }
            Item::Tree(tree_name) => {
                let Some((name, db, tree, batch, pending)) = current.as_mut() else { unreachable!("read checks") };
                if let Some(tree) = tree.take() {
                    tree.apply_batch(std::mem::take(batch)).map_err(failed(name))?;
                }
                *tree = Some(db.open_tree(tree_name).map_err(failed(name))?);
                *pending = 0;
            }
            Item::Entry(key, value) => {
                let Some((name, _, Some(tree), batch, pending)) = current.as_mut() else { unreachable!("read checks") };
                batch.insert(key, value);
                *pending += key.len() + value.len();
                // Batches of a few MiB: memory stays bounded whatever the store's size.
                if *pending > 4 << 20 {
                    tree.apply_batch(std::mem::take(batch)).map_err(failed(name))?;
                    *pending = 0;
                }
            }
        }
        Ok(())
    })?;
    finish(current.take())?;
    Ok((header, summary))
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
        let (read_header, summary) = restore(&file, to.path()).unwrap();
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
        assert!(matches!(restore(&file, to.path()), Err(BackupError::Occupied(_))));
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
            let error = restore(&file, to.path()).unwrap_err();
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
