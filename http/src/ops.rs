//! The operations HTTP server: `/metrics`, `/healthz` (the process is alive) and `/readyz`
//! (the brokers and the registry answer), plus binding with errors that say what to fix.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::net::TcpListener;

use govex_bus::{Bus, Metrics, RegistryClient};

/// What `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    /// The bus whose brokers must answer and whose consumers must have caught up; none for a
    /// process that does not use the bus (a registry on its own must stay ready while Kafka
    /// is down, or every other process loses its registry too).
    pub bus: Option<Bus>,
    /// The registry that must answer.
    pub registry: RegistryClient,
    /// Parts that may be down without taking the node out of service (a department's
    /// front-end database): listed by `/readyz`, which still answers ready.
    pub degraded: Option<Degraded>,
    /// Consumer groups that may fall behind without taking the node out of service (a
    /// down-table whose department database is down): listed as degraded, not as a problem.
    pub optional_groups: Vec<String>,
}

/// What a part that may be down says about itself: one line per thing down.
pub type Degraded = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How often the readiness state is worked out again.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// The readiness state, worked out in the background ([`Readiness::watch`]): a `/readyz`
/// call reads it and costs no client, no connection and no wait.
#[derive(Clone)]
pub struct ReadyState {
    problems: Arc<parking_lot::Mutex<Vec<String>>>,
    degraded: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Readiness {
    /// Starts working out the state every second until `stop`: the brokers answer (asked on
    /// the producer's own client), the producer has no fatal error (logged once when it
    /// comes), every consumer of the bus has caught up with the end offsets seen at its
    /// start, and the registry answers.
    pub fn watch(self, stop: tokio_util::sync::CancellationToken) -> ReadyState {
        let state = ReadyState {
            problems: Arc::new(parking_lot::Mutex::new(vec!["starting".to_owned()])),
            degraded: Arc::default(),
        };
        let shared = state.clone();
        tokio::spawn(async move {
            let mut fatal_logged = false;
            let mut ticks = tokio::time::interval(READINESS_INTERVAL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let (problems, mut degraded) = self.problems(&mut fatal_logged).await;
                *shared.problems.lock() = problems;
                degraded.extend(self.degraded.as_ref().map(|d| d()).unwrap_or_default());
                *shared.degraded.lock() = degraded;
            }
        });
        state
    }

    /// What keeps the node from being ready, and what is degraded without that.
    async fn problems(&self, fatal_logged: &mut bool) -> (Vec<String>, Vec<String>) {
        let bus_check = async {
            match &self.bus {
                Some(bus) => bus.check_producer_reachable(Duration::from_secs(2)).await,
                None => Ok(()),
            }
        };
        let (bus, registry) = tokio::join!(bus_check, self.registry.check_reachable());
        let mut problems = Vec::new();
        let mut degraded = Vec::new();
        if let Err(e) = bus {
            problems.push(format!("bus: {e}"));
        }
        if let Some(bus) = &self.bus {
            if let Some(fatal) = bus.producer_fatal_error() {
                if !*fatal_logged {
                    tracing::error!(error = %fatal, "the producer failed fatally and delivers nothing more; restart the process");
                    *fatal_logged = true;
                }
                problems.push(format!("producer: fatal error {fatal}; restart the process"));
            }
            for group in bus.catch_up().behind() {
                let line = format!("consumer group {group}: not caught up with its partitions' end offsets yet");
                match self.optional_groups.contains(&group) {
                    true => degraded.push(line),
                    false => problems.push(line),
                }
            }
        }
        if let Err(e) = registry {
            problems.push(format!("registry: {e}"));
        }
        (problems, degraded)
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: Metrics,
    ready: ReadyState,
}

/// The ops routes.
pub fn router(metrics: Metrics, ready: ReadyState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(OpsState { metrics, ready })
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
    let problems = state.ready.problems.lock().clone();
    let degraded = state.ready.degraded.lock().clone();
    if problems.is_empty() && degraded.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else if problems.is_empty() {
        (StatusCode::OK, format!("ready\ndegraded: {}\n", degraded.join("\ndegraded: "))).into_response()
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
