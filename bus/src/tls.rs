//! TLS, and optionally mutual TLS, for the department-facing API and the schema registry.
//!
//! `axum::serve` speaks plain HTTP; here each accepted connection goes through a rustls
//! handshake first and is then served by hyper with the same router. With a client CA,
//! a department system must present a certificate that chains to it; the handshake fails
//! otherwise, before any request is read.

use std::{path::Path, sync::Arc};

use axum::Router;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::TcpListener;
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

/// Serves `router` over TLS on `listener` until `stop`; connections in progress finish on
/// `tracker`.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let (acceptor, router, stop) = (acceptor.clone(), router.clone(), stop.clone());
        tracker.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
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
        });
    }
}
