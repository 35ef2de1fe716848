//! `govex import`: a department's file of records (NDJSON, or CSV in UTF-8 with or without
//! a BOM, or GBK) through the same checks as the HTTP intake, with rejected lines written
//! to a reject file, and resumable: a rerun after an interruption publishes only what was
//! not yet published, even after a crash.
//!
//! Resumption works from a checkpoint next to the file (`<file>.govex-checkpoint.json`),
//! written and synced around every batch. Before a batch is sent the checkpoint records it
//! as pending, with the topic's high watermarks; every record carries a `govex-import`
//! header naming the file's fingerprint and its line. A rerun that finds a pending batch
//! reads the topic from those watermarks and skips the lines that already arrived.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use govex_bus::{Bus, Department};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    common::CheckContext,
    intake::{Intake, Rejection},
    validation::Violation,
};

/// The header naming an imported record's file and line.
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
    /// Where rejected lines go: `<file>.rejects.ndjson`.
    pub fn reject_path(&self) -> PathBuf {
        with_suffix(&self.file, ".rejects.ndjson")
    }

    /// Where the checkpoint is kept.
    pub fn checkpoint_path(&self) -> PathBuf {
        with_suffix(&self.file, ".govex-checkpoint.json")
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
    /// Already handled by an earlier run.
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
    /// The checkpoint belongs to another file or record type.
    #[error("checkpoint {path} belongs to {what}; delete it to import this file from the start")]
    ForeignCheckpoint {
        /// The checkpoint.
        path: String,
        /// What it belongs to.
        what: String,
    },
    /// The bus failed; the import can be rerun.
    #[error("the bus failed: {0}; rerun the same command to resume")]
    Bus(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    fingerprint: String,
    department: String,
    record: String,
    /// Every line up to and including this one is published or rejected.
    done_through: usize,
    /// Length of the reject file once those lines were handled.
    reject_bytes: u64,
    /// A batch that was being sent when the checkpoint was written.
    pending: Option<PendingBatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingBatch {
    first_line: usize,
    last_line: usize,
    /// High watermarks of the topic's partitions before the batch was sent.
    watermarks: BTreeMap<i32, i64>,
}

fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), ImportError> {
    let fail = |e: std::io::Error| ImportError::File { path: path.display().to_string(), reason: e.to_string() };
    let temporary = with_suffix(path, ".tmp");
    let mut file = File::create(&temporary).map_err(fail)?;
    file.write_all(&serde_json::to_vec_pretty(checkpoint).unwrap_or_default()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    // Rename is atomic: a crash leaves the old checkpoint or the new one, never half.
    std::fs::rename(&temporary, path).map_err(fail)
}

/// One record of a file: its line, and its JSON body or why the row could not be read.
pub type FileRecord = (usize, Result<Vec<u8>, String>);

/// Reads the file into (line number, JSON body) records; line numbers are 1-based lines of
/// the file (for CSV, the header is line 1).
pub fn read_records(options: &ImportOptions) -> Result<(String, Vec<FileRecord>), ImportError> {
    let path = options.file.display().to_string();
    let bytes =
        std::fs::read(&options.file).map_err(|e| ImportError::File { path: path.clone(), reason: e.to_string() })?;
    let fingerprint: String = Sha256::digest(&bytes).iter().take(8).map(|b| format!("{b:02x}")).collect();
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
    let records = match options.format {
        FileFormat::Ndjson => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| (i + 1, Ok(line.as_bytes().to_vec())))
            .collect(),
        FileFormat::Csv => csv_records(&text).map_err(|reason| ImportError::File { path, reason })?,
    };
    Ok((fingerprint, records))
}

/// CSV rows as JSON objects: column names are field paths (`a.b`, `list[0].c`); empty
/// cells are absent fields.
fn csv_records(text: &str) -> Result<Vec<FileRecord>, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> =
        reader.headers().map_err(|e| format!("CSV header: {e}"))?.iter().map(str::to_owned).collect();
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("CSV: {e}"))?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        if row.len() != headers.len() {
            out.push((line, Err(format!("the row has {} cells, the header {}", row.len(), headers.len()))));
            continue;
        }
        let mut object = Value::Object(Map::new());
        for (header, cell) in headers.iter().zip(row.iter()) {
            if !cell.is_empty() {
                set_path(&mut object, header, Value::String(cell.to_owned()));
            }
        }
        out.push((line, Ok(object.to_string().into_bytes())));
    }
    Ok(out)
}

/// Sets `a.b[0].c` in `root`, creating objects and arrays on the way.
fn set_path(root: &mut Value, path: &str, value: Value) {
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

/// Imports the file, resuming from its checkpoint. Stops after the current batch when
/// `interrupt` is cancelled.
pub async fn run_import(
    intake: Arc<Intake>,
    bus: &Bus,
    options: &ImportOptions,
    interrupt: CancellationToken,
    progress: &mut dyn Progress,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let (fingerprint, records) = read_records(options)?;
    let topic = intake
        .record_types()
        .into_iter()
        .find(|(d, r, _)| *d == options.department && *r == options.record)
        .map(|(_, _, t)| t)
        .ok_or_else(|| ImportError::File {
            path: options.file.display().to_string(),
            reason: format!("{} does not send '{}' records", options.department, options.record),
        })?;
    let checkpoint_path = options.checkpoint_path();
    let mut checkpoint = match std::fs::read(&checkpoint_path) {
        Ok(bytes) => {
            let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| ImportError::File {
                path: checkpoint_path.display().to_string(),
                reason: e.to_string(),
            })?;
            if checkpoint.fingerprint != fingerprint
                || checkpoint.department != options.department.as_str()
                || checkpoint.record != options.record
            {
                return Err(ImportError::ForeignCheckpoint {
                    path: checkpoint_path.display().to_string(),
                    what: format!(
                        "another file or record type ({}/{}, fingerprint {})",
                        checkpoint.department, checkpoint.record, checkpoint.fingerprint
                    ),
                });
            }
            checkpoint
        }
        Err(_) => Checkpoint {
            fingerprint: fingerprint.clone(),
            department: options.department.to_string(),
            record: options.record.clone(),
            done_through: 0,
            reject_bytes: 0,
            pending: None,
        },
    };

    let reject_path = options.reject_path();
    let fail = |e: std::io::Error| ImportError::File { path: reject_path.display().to_string(), reason: e.to_string() };
    let mut rejects = OpenOptions::new().create(true).truncate(false).write(true).open(&reject_path).map_err(fail)?;
    // Lines rejected after the last checkpoint are rejected again below: cut them off.
    rejects.set_len(checkpoint.reject_bytes).map_err(fail)?;
    rejects.seek(SeekFrom::End(0)).map_err(fail)?;

    let mut already_published: HashSet<usize> = HashSet::new();
    if let Some(pending) = &checkpoint.pending {
        let prefix = format!("{fingerprint}:");
        for value in bus
            .scan_header(topic, &pending.watermarks, IMPORT_HEADER)
            .await
            .map_err(|e| ImportError::Bus(e.to_string()))?
        {
            if let Some(line) = value.strip_prefix(&prefix).and_then(|l| l.parse().ok()) {
                already_published.insert(line);
            }
        }
        tracing::info!(
            lines = already_published.len(),
            first = pending.first_line,
            last = pending.last_line,
            "resuming an interrupted batch"
        );
    }

    let mut summary = ImportSummary { total: records.len(), ..ImportSummary::default() };
    let todo: Vec<&FileRecord> = records.iter().filter(|(line, _)| *line > checkpoint.done_through).collect();
    summary.skipped = records.len() - todo.len();
    progress.advance(summary.skipped, summary.total);
    let context = CheckContext::now();
    for batch in todo.chunks(options.batch_lines.max(1)) {
        if interrupt.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let first_line = batch[0].0;
        let last_line = batch[batch.len() - 1].0;
        let watermarks = bus.high_watermarks(topic).await.map_err(|e| ImportError::Bus(e.to_string()))?;
        checkpoint.pending = Some(PendingBatch { first_line, last_line, watermarks });
        write_checkpoint(&checkpoint_path, &checkpoint)?;

        let mut deliveries = Vec::new();
        let mut rejected_lines = Vec::new();
        for (line, body) in batch {
            if already_published.contains(line) {
                summary.skipped += 1;
                continue;
            }
            let checked = match body {
                Ok(body) => intake.check(options.department, &options.record, body, &context),
                Err(reason) => Err(Rejection::Invalid(vec![Violation::new("", "csv-row", reason.clone())])),
            };
            match checked {
                Ok(checked) => {
                    let outgoing = checked.outgoing.with_header(IMPORT_HEADER, &format!("{fingerprint}:{line}"));
                    deliveries.push(bus.producer().enqueue(outgoing).await);
                }
                Err(rejection) => rejected_lines.push((*line, body, rejection)),
            }
        }
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|e| ImportError::Bus(e.to_string()))?;
            summary.published += 1;
        }
        for (line, body, rejection) in rejected_lines {
            let errors = match &rejection {
                Rejection::Invalid(violations) => violations.clone(),
                Rejection::Malformed(detail) => vec![Violation::new("", "malformed-json", detail.clone())],
                Rejection::Unavailable(detail) => vec![Violation::new("", "unavailable", detail.clone())],
            };
            for violation in &errors {
                *summary.rejected_by_rule.entry(violation.rule.clone()).or_default() += 1;
            }
            let original = match body {
                Ok(bytes) => serde_json::from_slice::<Value>(bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
                Err(_) => Value::Null,
            };
            let entry = serde_json::json!({ "line": line, "errors": errors, "record": original });
            writeln!(rejects, "{entry}").map_err(fail)?;
            summary.rejected += 1;
        }
        rejects.sync_data().map_err(fail)?;
        checkpoint.done_through = last_line;
        checkpoint.reject_bytes = rejects.stream_position().map_err(fail)?;
        checkpoint.pending = None;
        write_checkpoint(&checkpoint_path, &checkpoint)?;
        already_published.clear();
        progress.advance(summary.skipped + summary.published + summary.rejected, summary.total);
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
        let value: Value = serde_json::from_slice(records[0].1.as_ref().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"voucher_number": "V1", "taxpayer": {"name": "张三"}, "buyers": [{"name": "a"}, {"name": "b"}]})
        );
        assert_eq!(records[0].0, 2, "line 2 of the file");
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
                department: Department::Tax,
                record: "x".into(),
                format: FileFormat::from_path(&file),
                file,
                encoding,
                batch_lines: 10,
            };
            let (_, records) = read_records(&options).unwrap();
            assert_eq!(records[0].1.as_ref().unwrap(), "{\"name\":\"张三\"}".as_bytes());
        }
        let options = ImportOptions {
            department: Department::Tax,
            record: "x".into(),
            format: FileFormat::Csv,
            file: gbk,
            encoding: TextEncoding::Utf8,
            batch_lines: 10,
        };
        assert!(read_records(&options).unwrap_err().to_string().contains("use --gbk"));
    }
}
