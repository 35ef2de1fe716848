//! The registry's storage: subjects, versions and schema ids in one sled tree.
//!
//! Keys are prefixed so that every registration is one atomic sled batch:
//!
//! | key                                   | value                  |
//! |---------------------------------------|------------------------|
//! | `id/` + id (u32 BE)                   | schema text            |
//! | `canon/` + Parsing Canonical Form     | id (u32 BE)            |
//! | `ver/` + subject + `\0` + version (BE)| id (u32 BE)            |
//! | `meta/next_id`                        | next free id (u32 BE)  |
//!
//! Invariants: an id never changes meaning (a schema with the same canonical form always
//! gets the same id, in every subject), and a version number is never reused in a subject.

use std::{path::Path, sync::Arc};

use apache_avro::Schema;
use std::sync::Mutex;

/// Errors of the registry store. Each maps to one Confluent error code in [`crate::http`].
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The schema text is not a valid Avro schema.
    #[error("invalid avro schema: {0}")]
    InvalidSchema(String),
    /// No subject of that name has any version.
    #[error("subject '{0}' not found")]
    SubjectNotFound(String),
    /// The subject exists but not at that version.
    #[error("version {version} of subject '{subject}' not found")]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: String,
    },
    /// No schema has that id.
    #[error("schema {0} not found")]
    SchemaNotFound(u32),
    /// The sled store failed.
    #[error("registry storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The stored bytes are not what this code wrote.
    #[error("registry storage is corrupt: {0}")]
    Corrupt(String),
}

/// Which version of a subject to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The highest version (`latest` or `-1` in the REST API).
    Latest,
    /// One version number, starting at 1.
    Number(u32),
}

impl std::str::FromStr for VersionSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" | "-1" => Ok(Self::Latest),
            other => match other.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Self::Number(n)),
                _ => Err(format!("'{other}' is not a version: expected 'latest', -1 or a number from 1")),
            },
        }
    }
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// The schema registry store. Cheap to clone; clones share the same sled database.
#[derive(Clone)]
pub struct Registry {
    tree: sled::Tree,
    db: sled::Db,
    /// Registrations read, then write, several keys; one writer at a time keeps ids dense
    /// and versions gap-free.
    write_lock: Arc<Mutex<()>>,
}

const NEXT_ID: &[u8] = b"meta/next_id";

impl Registry {
    /// Opens (or creates) the registry under `dir`.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        // sled releases its file lock from a background thread after the last handle is
        // dropped; a restart within one process (tests, `govex demo`) may briefly find it held.
        let mut attempts = 0;
        let db = loop {
            match sled::open(dir) {
                Err(sled::Error::Io(e)) if attempts < 100 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        Self::with_db(db)
    }

    /// Uses the `registry` tree of an already open sled database.
    pub fn with_db(db: sled::Db) -> Result<Self, RegistryError> {
        let tree = db.open_tree("registry")?;
        Ok(Self { tree, db, write_lock: Arc::new(Mutex::new(())) })
    }

    /// Registers `schema_text` under `subject` and returns its id.
    ///
    /// Registering a schema the subject already has (same Parsing Canonical Form) returns
    /// the existing id and adds no version; a schema known under another subject keeps its
    /// id. Compatibility rules are not checked here.
    pub fn register(&self, subject: &str, schema_text: &str) -> Result<u32, RegistryError> {
        let schema = Schema::parse_str(schema_text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let canonical = schema.canonical_form();
        let _guard = self.write_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

        let known_id = self.tree.get(canon_key(&canonical))?.map(|v| read_u32(&v)).transpose()?;
        let versions = self.versions_with_ids(subject)?;
        if let Some(id) = known_id {
            if versions.iter().any(|(_, existing)| *existing == id) {
                return Ok(id);
            }
        }

        let mut batch = sled::Batch::default();
        let id = match known_id {
            Some(id) => id,
            None => {
                let next = self.tree.get(NEXT_ID)?.map(|v| read_u32(&v)).transpose()?.unwrap_or(1);
                batch.insert(NEXT_ID, &(next + 1).to_be_bytes());
                batch.insert(id_key(next), schema_text.as_bytes());
                batch.insert(canon_key(&canonical), &next.to_be_bytes());
                next
            }
        };
        let version = versions.last().map_or(1, |(v, _)| v + 1);
        batch.insert(version_key(subject, version), &id.to_be_bytes());
        self.tree.apply_batch(batch)?;
        // A registration is acknowledged to the caller; it must survive a crash.
        self.db.flush()?;
        tracing::info!(subject, id, version, "schema registered");
        Ok(id)
    }

    /// The schema text with this id.
    pub fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let bytes = self.tree.get(id_key(id))?.ok_or(RegistryError::SchemaNotFound(id))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))
    }

    /// Every subject with at least one version, sorted.
    pub fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let mut subjects: Vec<String> = Vec::new();
        for entry in self.tree.scan_prefix(b"ver/") {
            let (key, _) = entry?;
            let rest = &key[4..];
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| RegistryError::Corrupt("version key without separator".into()))?;
            let subject = String::from_utf8(rest[..end].to_vec()).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            if subjects.last() != Some(&subject) {
                subjects.push(subject);
            }
        }
        Ok(subjects)
    }

    /// The version numbers of `subject`, ascending.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let versions = self.versions_with_ids(subject)?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions.into_iter().map(|(v, _)| v).collect())
    }

    /// One version of `subject`.
    pub fn version(&self, subject: &str, selector: VersionSelector) -> Result<SubjectVersion, RegistryError> {
        let versions = self.versions_with_ids(subject)?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let found = match selector {
            VersionSelector::Latest => versions.last().copied(),
            VersionSelector::Number(n) => versions.iter().find(|(v, _)| *v == n).copied(),
        };
        let (version, id) = found.ok_or_else(|| RegistryError::VersionNotFound {
            subject: subject.to_owned(),
            version: match selector {
                VersionSelector::Latest => "latest".into(),
                VersionSelector::Number(n) => n.to_string(),
            },
        })?;
        Ok(SubjectVersion { subject: subject.to_owned(), id, version, schema: self.schema_by_id(id)? })
    }

    fn versions_with_ids(&self, subject: &str) -> Result<Vec<(u32, u32)>, RegistryError> {
        let mut prefix = b"ver/".to_vec();
        prefix.extend_from_slice(subject.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            out.push((read_u32(&key[prefix.len()..])?, read_u32(&value)?));
        }
        Ok(out)
    }
}

fn id_key(id: u32) -> Vec<u8> {
    [b"id/".as_slice(), &id.to_be_bytes()].concat()
}

fn canon_key(canonical: &str) -> Vec<u8> {
    [b"canon/".as_slice(), canonical.as_bytes()].concat()
}

fn version_key(subject: &str, version: u32) -> Vec<u8> {
    [b"ver/".as_slice(), subject.as_bytes(), &[0], &version.to_be_bytes()].concat()
}

fn read_u32(bytes: &[u8]) -> Result<u32, RegistryError> {
    let array: [u8; 4] =
        bytes.try_into().map_err(|_| RegistryError::Corrupt(format!("expected 4 bytes, found {}", bytes.len())))?;
    Ok(u32::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V1_SPACED: &str = r#"{ "type": "record", "name": "R", "doc": "same canonical form", "fields": [ {"name": "a", "type": "int"} ] }"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;

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
        assert_eq!(registry.versions("t-value").unwrap(), vec![1, 2]);
        assert_eq!(registry.register("other-value", V1).unwrap(), a);
        assert_eq!(registry.version("other-value", VersionSelector::Latest).unwrap().version, 1);
        let latest = registry.version("t-value", VersionSelector::Latest).unwrap();
        assert_eq!((latest.id, latest.version), (b, 2));
        assert_eq!(registry.subjects().unwrap(), vec!["other-value", "t-value"]);
    }

    #[test]
    fn lookups_of_missing_things_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert!(matches!(registry.schema_by_id(7), Err(RegistryError::SchemaNotFound(7))));
        assert!(matches!(registry.version("nope", VersionSelector::Latest), Err(RegistryError::SubjectNotFound(_))));
        registry.register("s", V1).unwrap();
        assert!(matches!(
            registry.version("s", VersionSelector::Number(3)),
            Err(RegistryError::VersionNotFound { .. })
        ));
        assert!(matches!(registry.register("s", "{not json"), Err(RegistryError::InvalidSchema(_))));
    }

    #[test]
    fn version_selectors_parse_like_confluent() {
        assert_eq!("latest".parse(), Ok(VersionSelector::Latest));
        assert_eq!("-1".parse(), Ok(VersionSelector::Latest));
        assert_eq!("4".parse(), Ok(VersionSelector::Number(4)));
        assert!("0".parse::<VersionSelector>().is_err());
        assert!("x".parse::<VersionSelector>().is_err());
    }
}
