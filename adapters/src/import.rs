//! `govex import`: a department's file of records (NDJSON, or CSV in UTF-8 with or without
//! a BOM, or GBK) through the same checks as the HTTP intake, resumable, and made for the
//! fix-and-retry loop of a real export:
//!
//! - Rejected records are written, exactly as they were in the file, to a rejects file in the
//!   input's own format (`<file>.rejects.ndjson` or `<file>.rejects.csv`, with the header),
//!   so that it can be fixed and imported as it is; their violations go to
//!   `<file>.errors.ndjson` (line numbers, JSON pointers and rules, never values). The
//!   rejects file holds personal data: it is created readable by its owner only (0600).
//! - What was published is remembered by content, not by file: a ledger per folder and record
//!   type (`govex-import.<department>.<record>.published`) holds a hash of every record
//!   published from that folder. A rerun — of the same file, of the file after it was fixed,
//!   or of a fixed rejects file — publishes the records it has not published yet, and none
//!   twice.
//!   A record's hash is of its content (the JSON parsed and written canonically), so a
//!   re-export with other spacing or key order is the same record.
//! - A crash cannot double a batch: before a batch is sent the state file beside the ledger
//!   (`govex-import.<department>.<record>.state.json`) records the topic's high watermarks,
//!   and every record carries a `govex-import` header with its hash. The next run in the
//!   folder, of whatever file, reads the topic from those watermarks and adds what arrived to
//!   the ledger first. The state also remembers how many hashes the ledger held, so a ledger
//!   that lost lines is refused rather than taken as "nothing published yet".
//! - A rejects file a person edited is never overwritten: the state holds the hash of each
//!   rejects file as its run left it.
//! - The files an import writes are opened without following symbolic links.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use govex_bus::Bus;
use govex_schemas::Department;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    common::CheckContext,
    intake::{Intake, Rejection},
    validation::Violation,
};

/// The header carrying an imported record's content hash.
pub const IMPORT_HEADER: &str = "govex-import";

/// How the file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8, with or without a byte-order mark.
    Utf8,
    /// GBK (GB 2312 superset), common in exports of older department systems.
    Gbk,
}

/// What the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line.
    Ndjson,
    /// A header row of field paths (`taxpayer.name`, `buyers[0].name`), one record per row.
    Csv,
}

impl FileFormat {
    /// From the file name: `.csv` is CSV, anything else NDJSON.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Self::Csv,
            _ => Self::Ndjson,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

/// One import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The department the records come from.
    pub department: Department,
    /// The record type.
    pub record: String,
    /// The file.
    pub file: PathBuf,
    /// Its text encoding.
    pub encoding: TextEncoding,
    /// Its format.
    pub format: FileFormat,
    /// Lines sent together (and checkpointed together).
    pub batch_lines: usize,
}

impl ImportOptions {
    /// Where rejected records go, as they were in the file: `<file>.rejects.ndjson` or
    /// `<file>.rejects.csv` (UTF-8, whatever the input's encoding).
    pub fn reject_path(&self) -> PathBuf {
        with_suffix(&self.file, &format!(".rejects.{}", self.format.extension()))
    }

    /// Where the rejected records' violations go: `<file>.errors.ndjson`.
    pub fn errors_path(&self) -> PathBuf {
        with_suffix(&self.file, ".errors.ndjson")
    }

    /// The state of this folder's imports of this record type: the batch pending, progress,
    /// the ledger's size, the rejects files as written.
    pub fn state_path(&self) -> PathBuf {
        self.file.with_file_name(format!("govex-import.{}.{}.state.json", self.department, self.record))
    }

    /// The ledger of what was published from this folder, for this record type.
    pub fn ledger_path(&self) -> PathBuf {
        self.file.with_file_name(format!("govex-import.{}.{}.published", self.department, self.record))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Records in the file.
    pub total: usize,
    /// Published in this run.
    pub published: usize,
    /// Rejected in this run.
    pub rejected: usize,
    /// Published before (by an earlier run, from this file or another of the folder), or the
    /// same record twice in the file.
    pub skipped: usize,
    /// Rejections by rule.
    pub rejected_by_rule: BTreeMap<String, usize>,
    /// Whether the run stopped early (interrupted).
    pub interrupted: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// Why an import could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or decoded.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file the import must not touch or trust as it is.
    #[error("{path}: {reason}")]
    Refused {
        /// The file.
        path: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Another import of the same record type runs in this folder.
    #[error("another import of {0} records is running in this folder (its ledger is locked); wait for it")]
    Busy(String),
    /// The bus failed; the import can be rerun.
    #[error("the bus failed: {0}; rerun the same command to resume")]
    Bus(String),
}

/// The state of a folder's imports of one record type (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Hashes the ledger held when the state was last written.
    published: usize,
    /// A batch that was being sent when the state was written.
    pending: Option<PendingBatch>,
    /// The file being imported, and the line through which this run has handled it (for a
    /// person or a test watching progress).
    file: String,
    done_through: usize,
    /// Each rejects file (by name) as its run wrote it so far.
    rejects: BTreeMap<String, Written>,
}

/// What an import wrote to a rejects file: its first `len` bytes hash to `sha256`. Written
/// before the file is cut and after every batch, so that whatever moment a crash picks, the
/// file still starts with what the state says: only a person's edit makes it differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Written {
    len: u64,
    sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingBatch {
    file: String,
    first_line: usize,
    last_line: usize,
    /// High watermarks of the topic's partitions before the batch was sent.
    watermarks: BTreeMap<i32, i64>,
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> ImportError + '_ {
    move |e| ImportError::File { path: path.display().to_string(), reason: e.to_string() }
}

/// Opens `path` for writing without following a symbolic link: a link planted where an
/// import writes (its rejects, say) must not make it write personal data elsewhere.
fn open_no_follow(path: &Path, options: &mut OpenOptions) -> Result<File, ImportError> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    options.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => ImportError::Refused {
            path: path.display().to_string(),
            reason: "is a symbolic link; an import writes only to a file of its own".into(),
        },
        _ => file_error(path)(e),
    })
}

fn read_state(path: &Path) -> Result<State, ImportError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ImportError::File { path: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(file_error(path)(e)),
    }
}

fn write_state(path: &Path, state: &State) -> Result<(), ImportError> {
    let fail = file_error(path);
    let temporary = with_suffix(path, ".tmp");
    let mut file = open_no_follow(&temporary, OpenOptions::new().create(true).truncate(true).write(true))?;
    let text = serde_json::to_vec_pretty(state)
        .map_err(|e| ImportError::File { path: path.display().to_string(), reason: e.to_string() })?;
    file.write_all(&text).map_err(&fail)?;
    file.sync_all().map_err(&fail)?;
    // Rename is atomic (and replaces a link, not its target): a crash leaves the old state
    // or the new one, never half.
    std::fs::rename(&temporary, path).map_err(fail)
}

/// A file for personal data: created (or cut to nothing) readable and writable by its owner
/// only, never through a symbolic link.
fn private_file(path: &Path) -> Result<File, ImportError> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = open_no_follow(path, &mut options)?;
    // An existing file keeps its mode on open: narrow it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(file_error(path))?;
    }
    Ok(file)
}

fn sha256_hex(bytes: &[u8]) -> String {
    govex_bus::hex(&Sha256::digest(bytes))
}

/// One record of a file: its line, its text as it was in the file, and its JSON body or why
/// the row could not be read.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// 1-based line of the file where it starts (for CSV, the header is line 1).
    pub line: usize,
    /// Its text in the file, without the line end (a CSV row with quoted line breaks spans
    /// several lines).
    pub raw: String,
    /// The JSON body, or why the row could not be read.
    pub body: Result<Vec<u8>, String>,
}

/// A file's records, and for CSV its header row as it was.
#[derive(Debug)]
pub struct FileRecords {
    /// The CSV header row (`None` for NDJSON).
    pub header: Option<String>,
    /// The records.
    pub records: Vec<FileRecord>,
}

/// Reads the file's records.
pub fn read_records(options: &ImportOptions) -> Result<FileRecords, ImportError> {
    let path = options.file.display().to_string();
    let bytes =
        std::fs::read(&options.file).map_err(|e| ImportError::File { path: path.clone(), reason: e.to_string() })?;
    let text = match options.encoding {
        TextEncoding::Utf8 => {
            let without_bom = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
            String::from_utf8(without_bom.to_vec()).map_err(|e| ImportError::File {
                path: path.clone(),
                reason: format!("not UTF-8 at byte {} (use --gbk for GBK files)", e.utf8_error().valid_up_to()),
            })?
        }
        TextEncoding::Gbk => {
            let (text, _, had_errors) = encoding_rs::GBK.decode(&bytes);
            if had_errors {
                return Err(ImportError::File { path, reason: "not valid GBK".into() });
            }
            text.into_owned()
        }
    };
    match options.format {
        FileFormat::Ndjson => Ok(FileRecords {
            header: None,
            records: text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(i, line)| FileRecord { line: i + 1, raw: line.to_owned(), body: Ok(line.as_bytes().to_vec()) })
                .collect(),
        }),
        FileFormat::Csv => csv_records(&text).map_err(|reason| ImportError::File { path, reason }),
    }
}

/// CSV rows as JSON objects: column names are field paths (`a.b`, `list[0].c`); empty
/// cells are absent fields. Each row keeps its text as it was, for the rejects file.
fn csv_records(text: &str) -> Result<FileRecords, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().map_err(|e| format!("CSV header: {e}"))?.iter().map(str::to_owned).collect();
    let mut rows = Vec::new();
    // Line numbers are counted here: with CRLF line ends the reader puts a row's start at the
    // previous row's line feed, one line early.
    let (mut counted_to, mut lines_before) = (0usize, 0usize);
    for row in reader.records() {
        let row = row.map_err(|e| format!("CSV: {e}"))?;
        let mut start = row.position().map_or(0, |p| p.byte() as usize);
        while text.as_bytes().get(start).is_some_and(|b| *b == b'\r' || *b == b'\n') {
            start += 1;
        }
        lines_before += text.as_bytes()[counted_to.min(start)..start].iter().filter(|b| **b == b'\n').count();
        counted_to = counted_to.max(start);
        let line = lines_before + 1;
        let body = if row.len() != headers.len() {
            Err(format!("the row has {} cells, the header {}", row.len(), headers.len()))
        } else {
            let mut object = Value::Object(Map::new());
            for (header, cell) in headers.iter().zip(row.iter()) {
                if !cell.is_empty() {
                    set_path(&mut object, header, Value::String(cell.to_owned()));
                }
            }
            Ok(object.to_string().into_bytes())
        };
        rows.push((line, start, body));
    }
    // A row's text runs from its start to the next row's (blank lines and the line end cut).
    let ends: Vec<usize> = rows.iter().skip(1).map(|(_, start, _)| *start).chain([text.len()]).collect();
    let raw = |from: usize, to: usize| text.get(from..to).unwrap_or_default().trim_end_matches(['\r', '\n']).to_owned();
    let header_end = rows.first().map_or(text.len(), |(_, start, _)| *start);
    let header = raw(0, header_end).lines().next().unwrap_or_default().to_owned();
    let records = rows
        .into_iter()
        .zip(ends)
        .map(|((line, start, body), end)| FileRecord { line, raw: raw(start, end), body })
        .collect();
    Ok(FileRecords { header: Some(header), records })
}

/// Sets `a.b[0].c` in `root`, creating objects and arrays on the way.
pub(crate) fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        let last = i == steps.len() - 1;
        let (name, index) = match step.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*step, None),
        };
        let Value::Object(map) = node else { return };
        let entry = map.entry(name.to_owned()).or_insert(Value::Null);
        node = match index {
            None if last => {
                *entry = value;
                return;
            }
            None => {
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                entry
            }
            Some(index) => {
                if !entry.is_array() {
                    *entry = Value::Array(Vec::new());
                }
                let Value::Array(items) = entry else { return };
                while items.len() <= index {
                    items.push(Value::Object(Map::new()));
                }
                if last {
                    items[index] = value;
                    return;
                }
                &mut items[index]
            }
        };
    }
}

/// Progress callbacks, so the command line can draw a bar and tests can watch.
pub trait Progress: Send {
    /// `done` of `total` records are handled.
    fn advance(&mut self, done: usize, total: usize);
}

impl Progress for () {
    fn advance(&mut self, _done: usize, _total: usize) {}
}

/// The content hash of a record: what the ledger and the `govex-import` header hold. The
/// JSON is parsed and written canonically (keys sorted, no spaces), so that the same record
/// with other spacing or key order is the same record.
fn content_hash(department: Department, record: &str, input: &Value) -> String {
    let mut hash = Sha256::new();
    hash.update(department.as_str().as_bytes());
    hash.update([0]);
    hash.update(record.as_bytes());
    hash.update([0]);
    hash.update(input.to_string().as_bytes());
    govex_bus::hex(&hash.finalize()[..16])
}

/// The ledger: the hashes of what was published, one per line, appended and synced after
/// every batch; locked while an import runs.
struct Ledger {
    file: File,
    path: PathBuf,
    published: HashSet<String>,
}

impl Ledger {
    fn open(path: &Path, what: &str) -> Result<Self, ImportError> {
        let fail = file_error(path);
        let file = open_no_follow(path, OpenOptions::new().create(true).append(true).read(true))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(ImportError::Busy(what.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
        }
        let text = std::fs::read_to_string(path).map_err(&fail)?;
        let mut published = HashSet::new();
        let mut unreadable = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            if line.len() == 32 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                published.insert(line.to_owned());
            } else {
                unreadable += 1;
            }
        }
        // One line cut short by a crash is expected (its batch was pending, and the topic
        // says what arrived); more is damage worth a word.
        if unreadable > 1 {
            tracing::warn!(
                ledger = %path.display(),
                unreadable,
                "lines of the import ledger are not hashes and are ignored: records they stood for would be published again"
            );
        }
        Ok(Self { file, path: path.to_path_buf(), published })
    }

    fn record(&mut self, hashes: &[String]) -> Result<(), ImportError> {
        if hashes.is_empty() {
            return Ok(());
        }
        // A torn last line from an earlier crash would swallow the first hash: start clean.
        let mut text = String::with_capacity(hashes.len() * 33 + 1);
        text.push('\n');
        for hash in hashes {
            text.push_str(hash);
            text.push('\n');
        }
        let fail = file_error(&self.path);
        self.file.write_all(text.as_bytes()).map_err(&fail)?;
        self.file.sync_data().map_err(&fail)?;
        self.published.extend(hashes.iter().cloned());
        Ok(())
    }
}

/// Refuses to overwrite a rejects file that is not as its run left it: a person may have
/// fixed records in it.
fn check_rejects_untouched(path: &Path, state: &State) -> Result<(), ImportError> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(ImportError::Refused {
            path: path.display().to_string(),
            reason: "is a symbolic link; an import writes only to a file of its own".into(),
        });
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(file_error(path)(e)),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(written) = state.rejects.get(&name) {
        let prefix = usize::try_from(written.len).ok().and_then(|len| bytes.get(..len));
        if prefix.is_some_and(|prefix| sha256_hex(prefix) == written.sha256) {
            return Ok(());
        }
    }
    Err(ImportError::Refused {
        path: path.display().to_string(),
        reason: "changed since an import wrote it (fixed records, perhaps): import it, or move it away, before \
                 importing this file again"
            .into(),
    })
}

/// Refuses a ledger that holds fewer records than the last import left: it lost lines, and
/// what they stood for would be published again.
fn check_ledger_kept(ledger: &Ledger, ledger_path: &Path, state: &State, state_path: &Path) -> Result<(), ImportError> {
    if ledger.published.len() >= state.published {
        return Ok(());
    }
    Err(ImportError::Refused {
        path: ledger_path.display().to_string(),
        reason: format!(
            "holds {} records, but the last import left {}: it lost lines, and what they stood for would be \
             published again. Restore it, or delete {} to import as if nothing had been published",
            ledger.published.len(),
            state.published,
            state_path.display()
        ),
    })
}

/// A batch was being sent when an import stopped (of this file or another of the folder):
/// what of it arrived on `topic` (read from its watermarks) is recorded as published.
async fn record_what_arrived(
    bus: &Bus,
    topic: &str,
    pending: &PendingBatch,
    ledger: &mut Ledger,
) -> Result<(), ImportError> {
    let arrived: Vec<String> = bus
        .scan_header(topic, &pending.watermarks, IMPORT_HEADER)
        .await
        .map_err(|e| ImportError::Bus(e.to_string()))?
        .into_iter()
        .filter(|h| h.len() == 32 && !ledger.published.contains(h))
        .collect();
    tracing::info!(
        arrived = arrived.len(),
        file = pending.file,
        first = pending.first_line,
        last = pending.last_line,
        "an interrupted batch: what arrived is recorded as published"
    );
    ledger.record(&arrived)
}

/// The rejects file (refused records as they were written, to fix and import again) and its
/// errors file (one JSON line per refused record, naming its line in both files), with the
/// length and hash of what was written, so that a rerun can tell whether a person edited it.
struct Rejects<'a> {
    rejects: File,
    errors: File,
    rejects_path: &'a Path,
    errors_path: &'a Path,
    written: Sha256,
    written_len: u64,
    /// Lines in the rejects file so far (a CSV record may span several).
    lines: usize,
}

impl<'a> Rejects<'a> {
    /// What the rejects file holds right after [`Rejects::create`]: the header, if any.
    fn header_only(header: Option<&str>) -> Written {
        let header_line = header.map(|h| format!("{h}\n")).unwrap_or_default();
        Written { len: header_line.len() as u64, sha256: govex_bus::hex(&Sha256::digest(header_line.as_bytes())) }
    }

    /// Creates both files; the rejects file is imported as it is once fixed, so for CSV it
    /// starts with the header.
    fn create(rejects_path: &'a Path, errors_path: &'a Path, header: Option<&str>) -> Result<Self, ImportError> {
        let header_line = header.map(|h| format!("{h}\n")).unwrap_or_default();
        let mut rejects = private_file(rejects_path)?;
        rejects.write_all(header_line.as_bytes()).map_err(file_error(rejects_path))?;
        let mut written = Sha256::new();
        written.update(header_line.as_bytes());
        Ok(Self {
            rejects,
            errors: private_file(errors_path)?,
            rejects_path,
            errors_path,
            written,
            written_len: header_line.len() as u64,
            lines: usize::from(header.is_some()),
        })
    }

    /// Writes a refused record and its violations.
    fn write(&mut self, record: &FileRecord, violations: &[Violation]) -> Result<(), ImportError> {
        let rejects_line = self.lines + 1;
        let line = format!("{}\n", record.raw);
        self.rejects.write_all(line.as_bytes()).map_err(file_error(self.rejects_path))?;
        self.written.update(line.as_bytes());
        self.written_len += line.len() as u64;
        self.lines += record.raw.lines().count().max(1);
        let entry = serde_json::json!({ "line": record.line, "rejects_line": rejects_line, "errors": violations });
        writeln!(self.errors, "{entry}").map_err(file_error(self.errors_path))
    }

    /// Both files on disk.
    fn sync(&self) -> Result<(), ImportError> {
        self.rejects.sync_data().map_err(file_error(self.rejects_path))?;
        self.errors.sync_data().map_err(file_error(self.errors_path))
    }

    /// What the rejects file holds so far, as the state records it.
    fn written(&self) -> Written {
        Written { len: self.written_len, sha256: govex_bus::hex(&self.written.clone().finalize()) }
    }
}

/// Imports the file: every record not yet published from this folder is checked and
/// published, the others skipped. Stops after the current batch when `interrupt` is
/// cancelled.
pub async fn run_import(
    intake: Arc<Intake>,
    bus: &Bus,
    options: &ImportOptions,
    interrupt: CancellationToken,
    progress: &mut dyn Progress,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let FileRecords { header, records } = read_records(options)?;
    let what = format!("{}/{}", options.department, options.record);
    let topic = intake
        .record_types()
        .into_iter()
        .find(|(d, r, _)| *d == options.department && *r == options.record)
        .map(|(_, _, t)| t)
        .ok_or_else(|| ImportError::File {
            path: options.file.display().to_string(),
            reason: format!("{} does not send '{}' records", options.department, options.record),
        })?;
    let (ledger_path, state_path) = (options.ledger_path(), options.state_path());
    let mut ledger = Ledger::open(&ledger_path, &what)?;
    let mut state = read_state(&state_path)?;
    check_ledger_kept(&ledger, &ledger_path, &state, &state_path)?;
    if let Some(pending) = state.pending.take() {
        record_what_arrived(bus, &topic, &pending, &mut ledger).await?;
    }
    state.published = ledger.published.len();
    state.file = options.file.display().to_string();
    state.done_through = 0;
    let (reject_path, errors_path) = (options.reject_path(), options.errors_path());
    let reject_name = reject_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    check_rejects_untouched(&reject_path, &state)?;
    // The state expects the new rejects file before it is made: a crash in between leaves a
    // file that does not match, which the next run refuses to overwrite unread.
    state.rejects.insert(reject_name.clone(), Rejects::header_only(header.as_deref()));
    write_state(&state_path, &state)?;
    let mut rejects = Rejects::create(&reject_path, &errors_path, header.as_deref())?;

    let mut summary = ImportSummary { total: records.len(), ..ImportSummary::default() };
    progress.advance(0, summary.total);
    let context = CheckContext::now();
    for batch in records.chunks(options.batch_lines.max(1)) {
        if interrupt.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let first_line = batch[0].line;
        let last_line = batch[batch.len() - 1].line;
        let watermarks = bus.high_watermarks(&topic).await.map_err(|e| ImportError::Bus(e.to_string()))?;
        state.pending = Some(PendingBatch { file: state.file.clone(), first_line, last_line, watermarks });
        write_state(&state_path, &state)?;

        let mut deliveries = Vec::new();
        let mut sent = Vec::new();
        let mut in_batch = HashSet::new();
        let mut rejected = Vec::new();
        for record in batch {
            // Parsed once: for its hash and for its checks.
            let parsed = match &record.body {
                Ok(body) => Intake::parse(body),
                Err(reason) => Err(Rejection::Invalid(vec![Violation::new("", "csv-row", reason.clone())])),
            };
            let checked = match parsed {
                Ok(input) => {
                    let hash = content_hash(options.department, &options.record, &input);
                    if ledger.published.contains(&hash) || !in_batch.insert(hash.clone()) {
                        summary.skipped += 1;
                        continue;
                    }
                    intake.check_parsed(options.department, &options.record, input, &context, None).map(|c| (c, hash))
                }
                Err(rejection) => Err(rejection),
            };
            match checked {
                Ok((checked, hash)) => {
                    let outgoing = checked.outgoing.with_header(IMPORT_HEADER, &hash);
                    deliveries.push(bus.producer().enqueue(outgoing).await);
                    sent.push(hash);
                }
                Err(rejection) => rejected.push((record, rejection)),
            }
        }
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|e| ImportError::Bus(e.to_string()))?;
            summary.published += 1;
        }
        ledger.record(&sent)?;
        for (record, rejection) in rejected {
            let violations = rejection.violations();
            for violation in &violations {
                *summary.rejected_by_rule.entry(violation.rule.clone()).or_default() += 1;
            }
            rejects.write(record, &violations)?;
            summary.rejected += 1;
        }
        rejects.sync()?;
        state.published = ledger.published.len();
        state.done_through = last_line;
        state.pending = None;
        state.rejects.insert(reject_name.clone(), rejects.written());
        write_state(&state_path, &state)?;
        progress.advance(summary.skipped + summary.published + summary.rejected, summary.total);
    }
    if summary.rejected == 0 && !summary.interrupted {
        let _ = std::fs::remove_file(&reject_path);
        let _ = std::fs::remove_file(&errors_path);
        state.rejects.remove(&reject_name);
        write_state(&state_path, &state)?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_are_field_paths() {
        let text = "voucher_number,taxpayer.name,buyers[0].name,buyers[1].name,empty\nV1,张三,a,b,\n";
        let records = csv_records(text).unwrap();
        assert_eq!(records.header.as_deref(), Some("voucher_number,taxpayer.name,buyers[0].name,buyers[1].name,empty"));
        let records = records.records;
        assert_eq!(records[0].raw, "V1,张三,a,b,");
        let value: Value = serde_json::from_slice(records[0].body.as_ref().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"voucher_number": "V1", "taxpayer": {"name": "张三"}, "buyers": [{"name": "a"}, {"name": "b"}]})
        );
        assert_eq!(records[0].line, 2, "line 2 of the file");
    }

    #[test]
    fn csv_rows_keep_their_lines_and_text_with_crlf_and_quoted_line_breaks() {
        for end in ["\n", "\r\n"] {
            let text = ["name,remark", "a,x", "b,\"two", "lines\"", "", "c,y", ""].join(end);
            let records = csv_records(&text).unwrap();
            assert_eq!(records.header.as_deref(), Some("name,remark"));
            let got: Vec<(usize, &str)> = records.records.iter().map(|r| (r.line, r.raw.as_str())).collect();
            let quoted = format!("b,\"two{end}lines\"");
            assert_eq!(got, [(2, "a,x"), (3, quoted.as_str()), (6, "c,y")], "line ends {end:?}");
        }
    }

    #[test]
    fn files_decode_from_utf8_with_a_bom_and_from_gbk() {
        let dir = tempfile::tempdir().unwrap();
        let utf8 = dir.path().join("a.csv");
        std::fs::write(&utf8, b"\xef\xbb\xbfname\n\xe5\xbc\xa0\xe4\xb8\x89\n").unwrap();
        let gbk = dir.path().join("b.csv");
        let (bytes, _, _) = encoding_rs::GBK.encode("name\n张三\n");
        std::fs::write(&gbk, &bytes).unwrap();
        for (file, encoding) in [(utf8, TextEncoding::Utf8), (gbk.clone(), TextEncoding::Gbk)] {
            let options = ImportOptions {
                department: Department::TAX,
                record: "x".into(),
                format: FileFormat::from_path(&file),
                file,
                encoding,
                batch_lines: 10,
            };
            let records = read_records(&options).unwrap().records;
            assert_eq!(records[0].body.as_ref().unwrap(), "{\"name\":\"张三\"}".as_bytes());
        }
        let options = ImportOptions {
            department: Department::TAX,
            record: "x".into(),
            format: FileFormat::Csv,
            file: gbk,
            encoding: TextEncoding::Utf8,
            batch_lines: 10,
        };
        assert!(read_records(&options).unwrap_err().to_string().contains("use --gbk"));
    }
}
