//! The operations HTTP server: `/metrics`, `/healthz` (the process is alive) and `/readyz`
//! (the brokers and the registry answer), plus binding with errors that say what to fix.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::net::TcpListener;

use crate::{bus::Bus, metrics::Metrics, registry_client::RegistryClient};

/// What `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    /// The bus whose brokers must answer; none for a process that does not use the bus (a
    /// registry on its own must stay ready while Kafka is down, or every other process
    /// loses its registry too).
    pub bus: Option<Bus>,
    /// The registry that must answer.
    pub registry: RegistryClient,
}

#[derive(Clone)]
struct OpsState {
    metrics: Metrics,
    readiness: Readiness,
}

/// The ops routes.
pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(OpsState { metrics, readiness })
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
async fn metrics_handler(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode_text())
            .into_response()
    }
}

async fn ready_handler(State(state): State<OpsState>) -> Response {
    let bus_check = async {
        match &state.readiness.bus {
            Some(bus) => bus.check_reachable(Duration::from_secs(2)).await,
            None => Ok(()),
        }
    };
    let (bus, registry) = tokio::join!(bus_check, state.readiness.registry.check_reachable());
    let mut problems = Vec::new();
    if let Err(e) = bus {
        problems.push(format!("bus: {e}"));
    }
    if let Err(e) = registry {
        problems.push(format!("registry: {e}"));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", problems.join("\n"))).into_response()
    }
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {purpose}: {error}{}", hint(error))]
pub struct BindError {
    /// What the listener was for (`API`, `schema registry`, `ops endpoints`).
    pub purpose: String,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The operating system's answer.
    pub error: std::io::Error,
}

fn hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process holds this port: stop it or choose another port in [listen])"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: choose a higher port in [listen])",
        _ => "",
    }
}

/// Binds `addr`, failing with a message that names the purpose and what to do.
pub async fn bind(purpose: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|error| BindError { purpose: purpose.to_owned(), addr, error })
}
