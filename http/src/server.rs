//! The HTTP server of every listener: bounded connections and header time, and TLS (optionally
//! mutual) for the department-facing API and the schema registry.
//!
//! Every listener of a node is served here ([`serve`]), plain or through a rustls handshake,
//! within [`ServeLimits`]: a bounded number of connections and a bounded time to send a
//! request's headers (`axum::serve` has neither). With a client CA,
//! a department system must present a certificate that chains to it; the handshake fails
//! otherwise, before any request is read.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
/// The TLS acceptor a listener is served with ([`acceptor`] makes one).
pub use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::TlsConfig;

/// A TLS setting that cannot be used; `key` names the setting (`listen.tls`, ...).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    key: &'static str,
    message: String,
}

/// An error of `build_acceptor`, whose key `acceptor` fills in.
fn unusable(message: String) -> TlsError {
    TlsError { key: "", message }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unusable(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(unusable(format!("{}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

/// When the first certificate in the PEM file `path` (the one a listener serves) stops being
/// valid: its `notAfter`, in seconds since the epoch. For the expiry gauge and its alert.
pub fn certificate_expiry(path: &Path) -> Result<i64, String> {
    let certs = read_certs(path).map_err(|e| e.message)?;
    not_after(certs[0].as_ref()).ok_or_else(|| format!("{}: the certificate's validity does not read", path.display()))
}

/// `govex_tls_certificate_expiry_timestamp_seconds{listener}`: when the certificate each TLS
/// listener serves (`served`: listener, certificate file) expires, read once at start as the
/// listener reads it; for the chart's alert. Registered on every node, a series per TLS
/// listener.
pub fn certificate_expiry_gauges(metrics: &govex_bus::Metrics, served: &[(&'static str, &Path)]) {
    use prometheus_client::{
        encoding::EncodeLabelSet,
        metrics::{family::Family, gauge::Gauge},
    };
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Listener {
        listener: &'static str,
    }
    let expiry: Family<Listener, Gauge> = metrics.add(
        "tls_certificate_expiry_timestamp_seconds",
        "When the certificate a TLS listener serves expires, in seconds since the epoch",
        Family::default(),
    );
    for (listener, path) in served {
        match certificate_expiry(path) {
            Ok(at) => {
                expiry.get_or_create(&Listener { listener }).set(at);
            }
            Err(error) => tracing::warn!(listener, %error, "the certificate's expiry cannot be read"),
        }
    }
}

/// The `notAfter` of a DER certificate: Certificate → tbsCertificate → (version), serial,
/// signature, issuer, validity → notAfter (UTCTime or GeneralizedTime, in UTC).
fn not_after(der: &[u8]) -> Option<i64> {
    /// One DER element at the start of `input`: its tag, its content, and what follows it.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let octets = usize::from(first & 0x7f);
            if octets == 0 || octets > 4 || rest.len() < octets {
                return None;
            }
            let length = rest[..octets].iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
            (length, &rest[octets..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }
    let (_, certificate, _) = element(der)?;
    let (_, mut tbs, _) = element(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs)?.2; // the explicit version
    }
    for _ in 0..3 {
        tbs = element(tbs)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = element(tbs)?;
    let (_, _, rest) = element(validity)?; // notBefore
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| digits(rest.get(at..at + 2)?);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    // Days from the civil date (Howard Hinnant's algorithm), then seconds.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Builds the acceptor from the configured files; errors name `key`, the setting they came
/// from (`listen.tls`, `listen.registry_tls`).
pub fn acceptor(config: &TlsConfig, key: &'static str) -> Result<TlsAcceptor, TlsError> {
    build_acceptor(config).map_err(|e| TlsError { key, message: e.message })
}

fn build_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&config.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .map_err(|e| unusable(format!("{}: {e}", config.key_path.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?;
    let builder = match &config.client_ca_path {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_path)? {
                roots.add(cert).map_err(|e| unusable(format!("{}: {e}", ca_path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| unusable(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server =
        builder.with_single_cert(certs, key).map_err(|e| unusable(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// What one listener allows: a hostile or broken client must not hold the node's sockets,
/// memory or health checks.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; a connection over the limit is closed at once, so that a
    /// flood on one port leaves the others (and the health checks) answering.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; a slower one is closed.
    pub header_read_timeout: Duration,
    /// How long a client may pause while sending a body.
    pub body_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keep_alive_idle: Duration,
}

impl ServeLimits {
    /// The limits of a test or a tool: every timeout `timeout`.
    pub fn uniform(max_connections: usize, timeout: Duration) -> Self {
        Self {
            max_connections,
            header_read_timeout: timeout,
            body_timeout: timeout,
            tls_handshake_timeout: timeout,
            keep_alive_idle: timeout,
        }
    }
}

/// How a listener stops: `stop` ends accepting and lets each connection finish the request
/// it is serving (then closes it); `cut` drops every connection at once, for when the
/// shutdown grace period has run out.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// Stop accepting; finish requests in progress.
    pub stop: CancellationToken,
    /// Drop every connection now.
    pub cut: CancellationToken,
}

/// The error a request body gives when its client sent nothing for the allowed pause: a
/// client trickling a body must not hold a connection (and its buffer) for ever.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of the body for {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Whether reading a body failed because its client paused too long (`error` or one of its
/// sources is a [`BodyTimedOut`]).
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// A request body that fails with [`BodyTimedOut`] when no frame arrives for `pause`.
struct PausedBody {
    inner: axum::body::Body,
    pause: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for PausedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::{future::Future, task::Poll};
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.pause;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.pause))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body the pause limit of [`PausedBody`].
async fn bound_body_pauses(
    axum::extract::State(pause): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request = request.map(|inner| {
        let deadline = Box::pin(tokio::time::sleep(pause));
        axum::body::Body::new(PausedBody { inner, pause, deadline })
    });
    next.run(request).await
}

/// Serves `router` on `listener` until `stop.stop`, over TLS when `acceptor` is given,
/// within `limits`; connections in progress finish on `tracker` unless `stop.cut` comes
/// first.
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limits: ServeLimits,
    stop: Stop,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let router = router.layer(axum::middleware::from_fn_with_state(limits.body_timeout, bound_body_pauses));
    loop {
        let accepted = tokio::select! {
            _ = stop.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; connection closed");
            continue;
        };
        let (acceptor, router, stop) = (acceptor.clone(), router.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let cut = stop.cut.clone();
            let serving = async move {
                match acceptor {
                    Some(acceptor) => {
                        // A client that never finishes its handshake has sent no request:
                        // shutdown need not wait for it.
                        let handshake = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp));
                        let tls = tokio::select! {
                            _ = stop.stop.cancelled() => return,
                            handshake = handshake => match handshake {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake too slow");
                                    return;
                                }
                            },
                        };
                        serve_connection(TokioIo::new(tls), router, limits, stop.stop, peer).await;
                    }
                    None => serve_connection(TokioIo::new(tcp), router, limits, stop.stop, peer).await,
                }
            };
            tokio::select! {
                () = serving => {}
                _ = cut.cancelled() => tracing::debug!(%peer, "connection cut at the end of the shutdown grace period"),
            }
        });
    }
}

/// The time of a connection's last request activity, and how many of its requests are being
/// answered: what the keep-alive idle limit looks at.
#[derive(Default)]
struct Activity {
    active: std::sync::atomic::AtomicUsize,
    last: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock() = Some(tokio::time::Instant::now());
    }
}

async fn serve_connection<I>(io: I, router: Router, limits: ServeLimits, stop: CancellationToken, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering;
    let activity = Arc::new(Activity::default());
    activity.touch();
    let tracked = activity.clone();
    let service = tower::ServiceBuilder::new()
        .map_request(move |request| {
            tracked.active.fetch_add(1, Ordering::SeqCst);
            tracked.touch();
            request
        })
        .service(router);
    let tracked = activity.clone();
    let service = tower::ServiceExt::map_response(service, move |response| {
        tracked.active.fetch_sub(1, Ordering::SeqCst);
        tracked.touch();
        response
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let idle_check = async {
            let last = activity.last.lock().unwrap_or_else(tokio::time::Instant::now);
            tokio::time::sleep_until(last + limits.keep_alive_idle).await;
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = idle_check, if !stopping => {
                let last = activity.last.lock().unwrap_or_else(tokio::time::Instant::now);
                if activity.active.load(Ordering::SeqCst) == 0 && last.elapsed() >= limits.keep_alive_idle {
                    // Closes at once when no request is in progress.
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
