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
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore, ServerConfig,
    },
    TlsAcceptor,
};
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
    /// How long a client may take to send a request's headers (and a TLS handshake), and
    /// how long it may pause while sending a body; a connection that is slower is closed.
    pub header_read_timeout: Duration,
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

/// Serves `router` on `listener` until `stop`, over TLS when `acceptor` is given, within
/// `limits`; connections in progress finish on `tracker`.
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    limits: ServeLimits,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let router = router.layer(axum::middleware::from_fn_with_state(limits.header_read_timeout, bound_body_pauses));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
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
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake too slow");
                            return;
                        }
                    };
                    serve_connection(TokioIo::new(tls), router, limits, stop, peer).await;
                }
                None => serve_connection(TokioIo::new(tcp), router, limits, stop, peer).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router, limits: ServeLimits, stop: CancellationToken, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
