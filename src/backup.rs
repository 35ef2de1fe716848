//! Backups of a running node: `GET /v1/backup` streams the stores this process keeps (the
//! file layout is [`govex_schemas::backup`]'s), `govex backup` saves one from a node, and
//! `govex restore` writes one into an empty data directory with the node stopped.
//!
//! A backup holds every record the process keeps, personal data included: only an
//! operator's token may take one, it states its purpose as every read of personal data does,
//! and it lands in the use log before its first byte is sent. One runs at a time per
//! process; a client that stops reading for [`STALL`] loses it (the node's memory holds one
//! chunk of it, never the whole).

use std::{
    io::{self, Write},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use govex_http::{
    auth::Tokens,
    config::Role,
    problem::{problem, Refused},
    Context,
};
use govex_schemas::backup::{self, Header, OpenStores};
use govex_sinks::use_log::{stated_purpose, Use, UseAction, UseLog};
use serde::Deserialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// The routes this module serves.
pub const ROUTES: &[&str] = &["GET /v1/backup"];
/// How long the node waits for a client that stopped reading before it drops the backup.
pub const STALL: Duration = Duration::from_secs(60);
/// The media type of a backup.
pub const MEDIA_TYPE: &str = "application/vnd.govex.backup";
/// The size of one chunk sent (and of what the node holds of a backup at a time, with the
/// channel's few chunks).
const CHUNK: usize = 256 << 10;

struct BackupApi {
    stores: OpenStores,
    tokens: Tokens,
    division: String,
    use_log: Option<UseLog>,
    one_at_a_time: Arc<Semaphore>,
    stop: CancellationToken,
}

/// The backup route over the stores `cx` opened, logged in `use_log` where the process keeps
/// one (a process without one keeps no personal data: the intake's keys, the sources'
/// watermarks, the registry).
pub fn router(cx: &Context, use_log: Option<UseLog>) -> Router {
    let api = BackupApi {
        stores: cx.stores.clone(),
        tokens: cx.tokens.clone(),
        division: cx.division.to_string(),
        use_log,
        one_at_a_time: Arc::new(Semaphore::new(1)),
        stop: cx.stop.clone(),
    };
    Router::new().route("/v1/backup", get(take)).with_state(Arc::new(api))
}

#[derive(Deserialize)]
struct BackupQuery {
    purpose: Option<String>,
}

/// `GET /v1/backup?purpose=`: the stores of this process, as one backup file.
async fn take(
    State(api): State<Arc<BackupApi>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Refused> {
    // axum answers HEAD with the GET route: that would log (and take) a backup no one reads.
    if method != Method::GET {
        return Err(Refused::from(StatusCode::METHOD_NOT_ALLOWED.into_response()));
    }
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let api = &api;
    let caller = api.tokens.authorize_read(authorization, &[Role::Operator], "backup")?;
    let by = match caller.label {
        Some(label) => format!("{} · {label} (operator)", caller.department),
        None => format!("{} (operator)", caller.department),
    };
    // The query is read only once the caller is known: a stranger learns nothing from it.
    let query: BackupQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).map_err(|_| {
        Refused::from(problem(
            StatusCode::BAD_REQUEST,
            "query",
            "The query string cannot be read",
            "give purpose once, and nothing else",
            serde_json::Value::Null,
        ))
    })?;
    let purpose = stated_purpose(query.purpose.as_deref())?;
    let Ok(permit) = api.one_at_a_time.clone().try_acquire_owned() else {
        return Err(Refused::from(problem(
            StatusCode::CONFLICT,
            "backup-running",
            "A backup is running",
            "this process is sending a backup already; take the next one when it ends",
            serde_json::Value::Null,
        )));
    };
    let stores = api.stores.list();
    let names: Vec<String> = stores.iter().map(|(name, _)| (*name).to_owned()).collect();
    let subject = format!("stores {}", names.join(","));
    if let Some(use_log) = &api.use_log {
        let entry =
            Use { caller: &by, purpose: &purpose, action: UseAction::Backup, subject: &subject, result: "taken" };
        if let Err(e) = use_log.log_use(entry).await {
            tracing::error!(error = %e, "a backup was refused: its use could not be logged");
            return Err(Refused::from(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "use-log",
                "The use log cannot record this backup",
                "a backup is taken only once its use is logged; try again",
                serde_json::Value::Null,
            )));
        }
    }
    tracing::info!(by = %by, stores = %subject, "a backup is being taken");
    let taken_at_ms = govex_schemas::zone::now_ms();
    let header = Header {
        format: govex_schemas::store::FORMAT_VERSION,
        division: api.division.clone(),
        taken_at_ms,
        stores: names,
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(4);
    let stop = api.stop.clone();
    let runtime = tokio::runtime::Handle::current();
    // Set before the writer lets go of the channel when the backup did not end whole: the
    // body then ends in an error (the connection is cut), never as a short file that a
    // client could take for a whole one.
    let cut_off = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cut = cut_off.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = ChunkWriter { buffer: Vec::with_capacity(CHUNK), sender, runtime, stop };
        // Asked between entries: a client gone, or the node stopping, ends the read of the stores.
        let (watched, stopping) = (out.sender.clone(), out.stop.clone());
        let stopped = move || stopping.is_cancelled() || watched.is_closed();
        let written = backup::write(&mut out, &header, &stores, &stopped).and_then(|summary| {
            out.flush()?;
            Ok(summary)
        });
        match written {
            Ok(summary) => tracing::info!(entries = summary.entries, bytes = summary.bytes, "the backup was sent"),
            Err(e) => {
                tracing::warn!(error = %e, "a backup was cut off");
                cut.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let stream = futures::stream::unfold((receiver, cut_off), |(mut receiver, cut_off)| async move {
        match receiver.recv().await {
            Some(chunk) => Some((Ok(chunk), (receiver, cut_off))),
            None if cut_off.swap(false, std::sync::atomic::Ordering::SeqCst) => {
                Some((Err(io::Error::other("the backup was cut off")), (receiver, cut_off)))
            }
            None => None,
        }
    });
    let name = format!("attachment; filename=\"govex-{}-{taken_at_ms}.govexbak\"", api.division);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, MEDIA_TYPE.to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Sends what is written in chunks, waiting at most [`STALL`] for the client to take each,
/// and not past the node's shutdown.
struct ChunkWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Bytes>,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        let (sender, stop) = (&self.sender, &self.stop);
        self.runtime.block_on(async {
            tokio::select! {
                sent = sender.send_timeout(chunk, STALL) => sent.map_err(|e| match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => {
                        io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading the backup")
                    }
                    mpsc::error::SendTimeoutError::Closed(_) => {
                        io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
                    }
                }),
                () = stop.cancelled() => Err(io::Error::new(io::ErrorKind::Interrupted, "the node is stopping")),
            }
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `govex backup`: takes a backup from the node at `url` with an operator's `token`, and
/// keeps it at `out` once it is whole (checked as it comes: a backup cut off on the way is
/// never left where a restore would take it).
/// `ca_cert` is the PEM of the CA that signed the node's API certificate (its API over TLS).
pub async fn save(
    url: &str,
    token: &str,
    purpose: &str,
    out: &Path,
    ca_cert: Option<&Path>,
) -> Result<backup::Summary> {
    // Checked before anything is asked of the node: a backup is a read of every record it
    // keeps, logged, and must not be taken to be thrown away.
    if out.exists() {
        bail!("{} exists: a backup never overwrites a file", out.display());
    }
    if out.as_os_str().to_string_lossy().ends_with('/') || out.file_name().is_none() {
        bail!("--out {}: name a file, not a folder", out.display());
    }
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!("--out {}: the folder {} does not exist", out.display(), folder.display());
    }
    let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("--ca-cert {} cannot be read", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert {} holds no PEM certificate", path.display()))?
        {
            client = client.add_root_certificate(certificate);
        }
    }
    let client = client.build()?;
    let url = format!("{}/v1/backup", url.trim_end_matches('/'));
    let mut response = client
        .get(&url)
        .bearer_auth(token)
        .query(&[("purpose", purpose)])
        .send()
        .await
        .with_context(|| format!("{url} cannot be reached"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.chars().take(500).collect::<String>());
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    // Read and written by its owner only: it holds every record the pod keeps.
    let created = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)
    };
    let mut file =
        std::io::BufWriter::new(created.with_context(|| format!("{} cannot be written", partial.display()))?);
    let received = async {
        while let Some(chunk) =
            tokio::time::timeout(STALL, response.chunk()).await.context("the node stopped sending")??
        {
            file.write_all(&chunk)?;
        }
        file.flush()?;
        file.get_ref().sync_all()?;
        anyhow::Ok(())
    }
    .await;
    let checked = received.and_then(|()| {
        let input = std::io::BufReader::new(std::fs::File::open(&partial)?);
        let (_, summary) = backup::read(input, |_| Ok(()))?;
        anyhow::Ok(summary)
    });
    let kept = checked.and_then(|summary| {
        std::fs::rename(&partial, out).with_context(|| format!("{} cannot be kept", out.display()))?;
        Ok(summary)
    });
    match kept {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.context("the backup did not arrive whole; nothing was kept"))
        }
    }
}

/// `govex restore`: writes the backup at `file` into `data_dir` for the node of `division`
/// (the node stopped, its stores gone). Prints what it wrote.
pub fn restore(file: &Path, data_dir: &Path, division: &str) -> Result<()> {
    let (header, summary) = backup::restore(file, data_dir, division)
        .map_err(|e| anyhow::anyhow!("{} cannot be restored: {e}", file.display()))?;
    println!(
        "restored a backup of division {} taken at {} (ms since the epoch) into {}",
        header.division,
        header.taken_at_ms,
        data_dir.display()
    );
    for (store, entries) in &summary.stores {
        let refill = match backup::REFILLED.contains(&store.as_str()) {
            true => "; refills from the start of its topics at the next start",
            false => "",
        };
        println!("  {store}: {entries} entries{refill}");
    }
    Ok(())
}
